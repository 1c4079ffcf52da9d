//! Broken and hostile input, through the real binary: a corrupt `dovecot-uidlist`, a message
//! file that cannot be read, a garbage `-s` state, flag letters nobody defined, folder names that
//! would leave the Maildir, and a corrupt SQLite index. Each must end in a clear message (or a
//! warning and a skipped folder), the right exit code, nothing lost, and an untouched source.

mod common;
mod support;

use common::{Dir, boxsync, maildir, message};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{
    Folder, Mail, assert_same_store, assert_same_tree, code, describe, folder_dir, read_maildir,
    tree_bytes, write_maildir,
};

/// `boxsync -o mail_location=LOCAL -o mail_fsync=never ARGS… OTHER`, locations given whole.
fn command(local: &str, args: &[&str], other: &str) -> Command {
    let mut cmd = boxsync();
    cmd.arg("-o")
        .arg(format!("mail_location={local}"))
        .args(["-o", "mail_fsync=never"])
        .args(args)
        .arg(other);
    cmd
}

fn run(local: &Path, args: &[&str], other: &Path) -> Output {
    command(&maildir(local), args, &maildir(other))
        .output()
        .expect("run boxsync")
}

fn run_ok(local: &Path, args: &[&str], other: &Path) -> Output {
    let out = run(local, args, other);
    assert_eq!(code(&out), 0, "boxsync {args:?}: {}", describe(&out));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// INBOX, Work and Lists with three, three and two messages.
fn source(root: &Path) {
    write_maildir(
        root,
        &[
            Folder::new(
                "INBOX",
                vec![
                    Mail::new(message(1), "S"),
                    Mail::new(message(2), "FS"),
                    Mail::new(message(3), ""),
                ],
            ),
            Folder::new(
                "Work",
                vec![
                    Mail::new(message(10), "Sa"),
                    Mail::new(message(11), ""),
                    Mail::new(message(12), "RS"),
                ],
            ),
            Folder::new(
                "Lists",
                vec![Mail::new(message(20), "S"), Mail::new(message(21), "")],
            ),
        ],
    );
}

/// Replaces line `n` (1-based) of a file.
fn replace_line(path: &Path, n: usize, with: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    lines[n - 1] = with;
    std::fs::write(path, format!("{}\n", lines.join("\n"))).expect("write");
}

/// Asserts the named mailboxes look the same in both stores.
fn assert_same_mailboxes(src: &Path, dst: &Path, names: &[&str]) {
    let (a, b) = (read_maildir(src), read_maildir(dst));
    for name in names {
        assert_eq!(
            a.mailboxes.get(*name),
            b.mailboxes.get(*name),
            "mailbox {name} differs"
        );
    }
}

// (a) A corrupt dovecot-uidlist.

#[test]
fn corrupt_uidlist_is_named_with_its_line_exits_65_and_the_other_folders_are_backed_up() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    source(&src);
    let uidlist = folder_dir(&src, "Work").join("dovecot-uidlist");
    let good = std::fs::read(&uidlist).unwrap();
    replace_line(&uidlist, 3, "2 this-record-is-broken");
    let before = tree_bytes(&src);

    let out = run(&src, &["backup"], &dst);
    assert_eq!(code(&out), 65, "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&uidlist.display().to_string()) && err.contains("line 3"),
        "the message should name the file and the line: {err}"
    );
    assert_same_mailboxes(&src, &dst, &["INBOX", "Lists"]);
    assert!(!read_maildir(&dst).mailboxes.contains_key("Work"));
    assert_same_tree(&before, &tree_bytes(&src), "the source");

    // Repaired, the next run converges and the one after has nothing to do.
    std::fs::write(&uidlist, good).unwrap();
    run_ok(&src, &["backup"], &dst);
    assert_same_store(&read_maildir(&src), &read_maildir(&dst));
    let settled = tree_bytes(&dst);
    run_ok(&src, &["backup"], &dst);
    assert_same_tree(&settled, &tree_bytes(&dst), "the destination on a rerun");
}

#[test]
fn corrupt_uidlist_does_not_delete_the_earlier_backup_of_that_folder() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    source(&src);
    run_ok(&src, &["backup"], &dst);
    let backed_up = read_maildir(&dst);
    let uidlist = folder_dir(&src, "Work").join("dovecot-uidlist");
    replace_line(&uidlist, 3, "2 this-record-is-broken");
    let out = run(&src, &["backup"], &dst);
    assert_eq!(code(&out), 65, "{}", describe(&out));
    assert_eq!(
        backed_up.mailboxes.get("Work"),
        read_maildir(&dst).mailboxes.get("Work"),
        "the backup of Work was lost"
    );
}

#[test]
fn corrupt_uidlist_in_a_two_way_sync_loses_nothing_and_converges_once_repaired() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    source(&a);
    run_ok(&a, &["sync"], &b);
    let uidlist = folder_dir(&a, "Work").join("dovecot-uidlist");
    let good = std::fs::read(&uidlist).unwrap();
    replace_line(&uidlist, 3, "2 this-record-is-broken");
    let (ta, tb) = (tree_bytes(&a), tree_bytes(&b));
    let out = run(&a, &["sync"], &b);
    assert!(![0, 2].contains(&code(&out)), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&uidlist.display().to_string()),
        "{}",
        describe(&out)
    );
    assert_same_tree(&ta, &tree_bytes(&a), "side A");
    assert_same_tree(&tb, &tree_bytes(&b), "side B");
    std::fs::write(&uidlist, good).unwrap();
    run_ok(&a, &["sync"], &b);
    assert_same_store(&read_maildir(&a), &read_maildir(&b));
    run_ok(&a, &["sync"], &b);
}

// (b) A message file that cannot be read.

/// Makes `cmd` run without the power to read what it may not. Root reads a mode-000 file
/// anyway, so as root the tool runs as `nobody` (65534) over trees given to that user.
/// `None` (with the reason on stderr) when that is impossible here.
fn unprivileged(trees: &[&Path]) -> Option<impl Fn(&mut Command) + use<>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    const NOBODY: u32 = 65_534;
    if root {
        for t in trees {
            chown_tree(t, NOBODY);
        }
        let probe = Command::new(env!("CARGO_BIN_EXE_boxsync"))
            .arg("--version")
            .uid(NOBODY)
            .gid(NOBODY)
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "skipping: running as root and cannot switch to uid {NOBODY} to test a mode-000 file"
            );
            return None;
        }
    }
    Some(move |cmd: &mut Command| {
        if root {
            cmd.uid(NOBODY).gid(NOBODY);
        }
    })
}

fn chown_tree(path: &Path, id: u32) {
    std::os::unix::fs::lchown(path, Some(id), Some(id)).expect("chown");
    if path.is_dir() {
        for e in std::fs::read_dir(path).expect("list") {
            chown_tree(&e.expect("list").path(), id);
        }
    }
}

/// The file of the message `message(n)` in `dir/cur`.
fn file_of(dir: &Path, n: usize) -> PathBuf {
    let want = message(n);
    std::fs::read_dir(dir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).is_ok_and(|b| b == want))
        .unwrap_or_else(|| panic!("message {n} not in {}", dir.display()))
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn unreadable_message_fails_the_run_without_changing_the_source_and_a_rerun_converges() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    source(&src);
    std::fs::create_dir(&dst).unwrap();
    let Some(drop_privileges) = unprivileged(&[&src, &dst]) else {
        return;
    };
    let victim = file_of(&folder_dir(&src, "Work"), 11);
    chmod(&victim, 0o000);
    let before = tree_bytes(&src);
    let backup = || {
        let mut cmd = command(&maildir(&src), &["backup"], &maildir(&dst));
        drop_privileges(&mut cmd);
        cmd.output().expect("run boxsync")
    };
    let out = backup();
    assert!(
        ![0, 2].contains(&code(&out)),
        "an unreadable message must fail the run: {}",
        describe(&out)
    );
    chmod(&victim, 0o644);
    assert_same_tree(&before, &tree_bytes(&src), "the source");
    let out = backup();
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_same_store(&read_maildir(&src), &read_maildir(&dst));
}

#[test]
fn unreadable_message_is_named_and_everything_else_is_backed_up() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    source(&src);
    std::fs::create_dir(&dst).unwrap();
    let Some(drop_privileges) = unprivileged(&[&src, &dst]) else {
        return;
    };
    let victim = file_of(&folder_dir(&src, "Work"), 11);
    chmod(&victim, 0o000);
    let mut cmd = command(&maildir(&src), &["backup"], &maildir(&dst));
    drop_privileges(&mut cmd);
    let out = cmd.output().expect("run boxsync");
    chmod(&victim, 0o644);
    assert!(
        [75, 77].contains(&code(&out)),
        "permission trouble: {}",
        describe(&out)
    );
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let base = name.split(':').next().unwrap();
    assert!(
        stderr(&out).contains(base),
        "name the file: {}",
        describe(&out)
    );
    assert_same_mailboxes(&src, &dst, &["INBOX", "Lists"]);
    let work = read_maildir(&dst).mailboxes.remove("Work").expect("Work");
    assert_eq!(
        work.messages.len(),
        2,
        "the readable Work messages: {work:?}"
    );
}

// (c) A garbage -s state.

/// The one line of stdout, checked to be a usable state.
fn printed_state(out: &Output) -> String {
    let text = String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout");
    let line = text.strip_suffix('\n').unwrap_or(&text);
    assert!(
        !line.is_empty() && !line.contains('\n'),
        "stdout should be one state line: {text:?}"
    );
    line.to_owned()
}

#[test]
fn garbage_state_warns_falls_back_to_a_full_sync_and_prints_a_valid_state() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    source(&src);
    let good = printed_state(&run_ok(&src, &["backup", "-s", ""], &dst));
    // A valid-looking state with one character changed: the checksum no longer matches.
    let mut flipped: Vec<char> = good.chars().collect();
    flipped[8] = if flipped[8] == 'A' { 'B' } else { 'A' };
    let flipped: String = flipped.into_iter().collect();
    for (i, garbage) in ["garbage!!", "AAAA", "QUJD", &flipped, "\u{e9}t\u{e9}"]
        .into_iter()
        .enumerate()
    {
        // Something for the fallback full sync to find.
        support::deliver(&src, "Lists", &message(100 + i), "");
        let out = run_ok(&src, &["backup", "-s", garbage], &dst);
        let err = stderr(&out);
        assert!(
            err.to_lowercase().contains("state"),
            "-s {garbage:?}: the warning should mention the state: {err}"
        );
        assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
        assert_same_store(&read_maildir(&src), &read_maildir(&dst));
        let state = printed_state(&out);
        // The new state is valid: used again, no warning, nothing to do, the same state.
        let again = run_ok(&src, &["backup", "-s", &state], &dst);
        assert!(again.stderr.is_empty(), "{}", describe(&again));
        assert_eq!(printed_state(&again), state);
    }
}

// (d) Flag letters nobody defined.

/// The flag letters of the file holding `message(n)` in `dir/cur`.
fn letters_of(dir: &Path, n: usize) -> String {
    let file = file_of(dir, n);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    name.split_once(":2,").map_or("", |(_, f)| f).to_owned()
}

/// A store whose only message is `message(1)` in INBOX with letters `SXz`: `X` is no flag and
/// `z` no keyword (`dovecot-keywords` defines only `a`).
fn odd_letters(root: &Path) {
    write_maildir(
        root,
        &[Folder::new("INBOX", vec![Mail::new(message(1), "SXz")])],
    );
}

/// Two-way syncs A (with the odd letters) to B, flags the message on B, and syncs back.
fn flag_change_from_the_other_side(d: &Dir) -> (PathBuf, PathBuf) {
    let (a, b) = (d.join("a"), d.join("b"));
    odd_letters(&a);
    run_ok(&a, &["sync"], &b);
    let file = file_of(&b, 1);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let (base, letters) = name.split_once(":2,").unwrap();
    let mut letters: Vec<char> = letters.chars().chain(['F']).collect();
    letters.sort_unstable();
    let flagged: String = letters.into_iter().collect();
    std::fs::rename(&file, b.join("cur").join(format!("{base}:2,{flagged}"))).unwrap();
    run_ok(&a, &["sync"], &b);
    run_ok(&a, &["sync"], &b);
    (a, b)
}

#[test]
fn unknown_flag_letters_survive_a_backup_and_a_flag_change() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    odd_letters(&src);
    let before = tree_bytes(&src);
    run_ok(&src, &["backup"], &dst);
    assert_same_tree(&before, &tree_bytes(&src), "the source");
    let copied = read_maildir(&dst);
    let flags = &copied.mailboxes["INBOX"].messages[&1].flags;
    assert!(flags.contains("\\Seen"), "{flags:?}");
    run_ok(&src, &["backup"], &dst);

    let (a, _b) = flag_change_from_the_other_side(&d);
    let letters = letters_of(&a, 1);
    assert!(
        letters.contains('F') && letters.contains('S') && letters.contains('X'),
        "the new flag is set and the unknown flag kept: {letters:?}"
    );
}

#[test]
fn undefined_keyword_letter_survives_a_flag_change() {
    let d = Dir::new();
    let (a, _b) = flag_change_from_the_other_side(&d);
    let letters = letters_of(&a, 1);
    assert!(letters.contains('z'), "{letters:?}");
}

// (e) Folder names that would leave the Maildir.

/// Every path under `dir` outside `except` (which may be absent).
fn paths_outside(dir: &Path, except: &[&Path]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            if except.iter().any(|x| path.starts_with(x)) {
                continue;
            }
            if path.is_dir() && !path.is_symlink() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A folder directory with one message, named in its `dovecot-uidlist` as Dovecot leaves it.
fn raw_folder(dir: &Path, n: usize) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let base = format!("{}.M1P1.raw", 1_700_000_000 + n);
    std::fs::write(dir.join("cur").join(format!("{base}:2,S")), message(n)).unwrap();
    std::fs::write(
        dir.join("dovecot-uidlist"),
        format!("3 V1700000000 N2 G{:032x}\n1 :{base}\n", 0xb0c5_0000 + n),
    )
    .unwrap();
}

/// Backs `src` up into `d/deep/dst` (LAYOUT as `dst_opts` says), asserting that nothing
/// appears outside the destination and that only `INBOX` and `ok` arrive.
fn backup_stays_inside(d: &Dir, src_loc: &str, dst_opts: &str, warned: &[&str]) {
    let dst = d.join("deep/dst");
    std::fs::create_dir(d.join("deep")).unwrap();
    let outside = |d: &Dir| paths_outside(d.path(), &[&dst]);
    let before = outside(d);
    let src_before = tree_bytes(&d.join("src"));
    let out = command(
        src_loc,
        &["backup"],
        &format!("{}{dst_opts}", maildir(&dst)),
    )
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let err = stderr(&out);
    for w in warned {
        assert!(err.contains(w), "no warning about {w:?}: {err}");
    }
    let mut after = outside(d);
    after.retain(|p| !support::is_index_file(&p.to_string_lossy()));
    let mut expected = before.clone();
    expected.retain(|p| !support::is_index_file(&p.to_string_lossy()));
    assert_eq!(
        after, expected,
        "paths appeared or vanished outside the destination"
    );
    assert_same_tree(&src_before, &tree_bytes(&d.join("src")), "the source");
    let got = folder_dirs(&dst);
    let ok = if dst_opts.contains("LAYOUT=fs") {
        "ok"
    } else {
        ".ok"
    };
    assert_eq!(got, [PathBuf::from(ok)], "folders in the destination");
}

#[test]
fn maildirpp_folders_with_escaping_names_are_skipped_with_a_warning() {
    let d = Dir::new();
    let src = d.join("src");
    raw_folder(&src, 1);
    raw_folder(&src.join(".ok"), 2);
    // `..evil` is Maildir++ for nothing (a leading separator); the others decode to names with
    // `/` (`&AC8-`), `..` (`&AC4-&AC4-`) or an empty level (`a..b`). (A control character is
    // no escape: such a folder is backed up under a repaired name, see below.)
    let hostile = [
        "..evil",
        ".foo&AC8-bar",
        ".&AC4-&AC4-",
        ".x.&AC4-&AC4-.y",
        ".a..b",
        ".&AC8-etc",
    ];
    for (i, h) in hostile.iter().enumerate() {
        raw_folder(&src.join(h), 10 + i);
    }
    let warned: Vec<&str> = hostile[1..].to_vec();
    for opts in ["", ":LAYOUT=fs"] {
        let d2 = Dir::new();
        let src2 = d2.join("src");
        copy_tree(&src, &src2);
        backup_stays_inside(&d2, &maildir(&src2), opts, &warned);
    }
}

#[test]
fn fs_layout_folders_with_escaping_names_are_skipped_with_a_warning() {
    let d = Dir::new();
    let src = d.join("src");
    raw_folder(&src, 1);
    raw_folder(&src.join("ok"), 2);
    let hostile = [
        "&AC4-&AC4-",
        "&AC4-&AC4-/&AC4-&AC4-/escaped",
        "foo&AC8-bar",
        "&AC8-etc",
    ];
    for (i, h) in hostile.iter().enumerate() {
        raw_folder(&src.join(h), 10 + i);
    }
    let warned = ["&AC4-&AC4-", "foo&AC8-bar", "&AC8-etc"];
    for opts in ["", ":LAYOUT=fs"] {
        let d2 = Dir::new();
        let src2 = d2.join("src");
        copy_tree(&src, &src2);
        backup_stays_inside(&d2, &format!("{}:LAYOUT=fs", maildir(&src2)), opts, &warned);
    }
}

/// A control character (here a line feed, `&AAo-`) in a folder's name is no escape: Dovecot
/// lists such a folder, so boxsync syncs it, and the destination names it with the alt char.
#[test]
fn fs_layout_folder_with_a_control_character_is_backed_up_under_a_repaired_name() {
    for (hostile, src_fs, dst_fs, repaired) in [
        ("&AAo-nl", true, false, "._nl"),
        ("&AAo-nl", true, true, "_nl"),
        (".&AAo-nl", false, true, "_nl"),
    ] {
        repaired_name(src_fs, hostile, dst_fs, repaired);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The folder directories (those with a `cur/`) under a store's root, relative to it.
fn folder_dirs(root: &Path) -> Vec<PathBuf> {
    let mut got = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            if !path.is_dir() {
                continue;
            }
            if path.join("cur").is_dir() {
                got.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
            stack.push(path);
        }
    }
    got.sort();
    got
}

/// Backs up a store with INBOX, a folder `ok` and a folder at `hostile` (a directory path in
/// the source's layout) whose name the destination's layout cannot hold as it is. The
/// destination must hold it at `repaired` (dsync's alt char repair), with its mail (none of
/// it in INBOX), the rest must be backed up, the source must stay as it was, and a rerun must
/// change nothing.
fn repaired_name(src_fs: bool, hostile: &str, dst_fs: bool, repaired: &str) {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    let layout = |fs: bool| if fs { ":LAYOUT=fs" } else { "" };
    let ok = |fs: bool| if fs { "ok" } else { ".ok" };
    raw_folder(&src, 1);
    raw_folder(&src.join(ok(src_fs)), 2);
    raw_folder(&src.join(hostile), 3);
    let src_before = tree_bytes(&src);
    let backup = || {
        command(
            &format!("{}{}", maildir(&src), layout(src_fs)),
            &["backup"],
            &format!("{}{}", maildir(&dst), layout(dst_fs)),
        )
        .output()
        .unwrap()
    };
    let out = backup();
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_same_tree(&src_before, &tree_bytes(&src), "the source");
    let mail_in = |dir: &Path| -> Vec<Vec<u8>> {
        ["cur", "new"]
            .iter()
            .flat_map(|s| std::fs::read_dir(dir.join(s)).unwrap())
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect()
    };
    assert_eq!(mail_in(&dst), vec![message(1)], "INBOX of the destination");
    assert_eq!(mail_in(&dst.join(repaired)), vec![message(3)], "{repaired}");
    let mut want = vec![PathBuf::from(ok(dst_fs)), PathBuf::from(repaired)];
    want.sort();
    assert_eq!(folder_dirs(&dst), want);
    let dst_before = tree_bytes(&dst);
    let out = backup();
    assert_eq!(code(&out), 0, "rerun: {}", describe(&out));
    assert_same_tree(
        &dst_before,
        &tree_bytes(&dst),
        "the destination after a rerun",
    );
}

/// Was a refusal with exit 65 ("contains '.', which Maildir++ uses as its separator", "cannot
/// be a directory name here"); now the names are repaired as Dovecot repairs them.
#[test]
fn names_a_destination_layout_cannot_hold_are_repaired() {
    repaired_name(false, ".cur", true, "_cur");
    repaired_name(true, "a.b", false, ".a_b");
    repaired_name(true, "Work/x.y", false, ".Work.x_y");
}

// (f) A corrupt SQLite index.

#[test]
fn corrupt_index_is_named_exits_65_and_loses_nothing() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    source(&src);
    run_ok(&src, &["backup"], &dst);
    support::deliver(&src, "Work", &message(13), "S");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for side in [&src, &dst] {
        let index = side.join("boxsync.index.sqlite");
        let good = std::fs::read(&index).unwrap();
        // No database at all, and a database whose pages after the header are overwritten.
        let mut torn = good.clone();
        for (i, b) in torn.iter_mut().enumerate().skip(100) {
            *b = garbage[i % garbage.len()];
        }
        for bad in [garbage.clone(), torn] {
            std::fs::write(&index, &bad).unwrap();
            let (ts, td) = (tree_bytes(&src), tree_bytes(&dst));
            let out = run(&src, &["backup"], &dst);
            assert_eq!(code(&out), 65, "{}", describe(&out));
            assert!(
                stderr(&out).contains(&index.display().to_string()),
                "the message should name {}: {}",
                index.display(),
                describe(&out)
            );
            assert_same_tree(&ts, &tree_bytes(&src), "the source");
            assert_same_tree(&td, &tree_bytes(&dst), "the destination");
            assert_eq!(
                std::fs::read(&index).unwrap(),
                bad,
                "the corrupt index should be left for the admin to look at"
            );
        }
        // As the message advises: delete it, and the next run rebuilds it from the files.
        std::fs::remove_file(&index).unwrap();
        run_ok(&src, &["backup"], &dst);
        assert_same_store(&read_maildir(&src), &read_maildir(&dst));
    }
}
