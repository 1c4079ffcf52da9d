//! The command line end to end, running the real binary: every flag of `backup` and `sync`,
//! the `-s` state on stdout, usage and configuration errors with doveadm's exit codes, and a
//! backup into a fresh directory that reads back identical (by the files, and as Dovecot sees it
//! when `doveadm` is installed).

mod common;
mod support;

use common::{Dir, boxsync, dovecot_or_skip, maildir, message};
use std::path::Path;
use std::process::Output;
use support::{
    Folder, Mail, assert_same_store, assert_same_tree, code, describe, read_maildir, tree_bytes,
    write_maildir,
};

/// `boxsync -o mail_location=maildir:LOCAL -o mail_fsync=never ARGS… maildir:OTHER`.
fn run(local: &Path, args: &[&str], other: &Path) -> Output {
    boxsync()
        .arg("-o")
        .arg(format!("mail_location={}", maildir(local)))
        .args(["-o", "mail_fsync=never"])
        .args(args)
        .arg(maildir(other))
        .output()
        .expect("run boxsync")
}

/// Runs and asserts exit 0.
fn run_ok(local: &Path, args: &[&str], other: &Path) -> Output {
    let out = run(local, args, other);
    assert_eq!(code(&out), 0, "boxsync {args:?}: {}", describe(&out));
    out
}

/// `boxsync ARGS…` exactly as given.
fn raw(args: &[&str]) -> Output {
    boxsync().args(args).output().expect("run boxsync")
}

/// A small store: INBOX, Work, Lists/rust and Spam, with flags and keywords, UID gaps and
/// one message still in `new/`.
fn small_source(root: &Path) {
    let mut inbox = Folder::new(
        "INBOX",
        vec![
            Mail::new(message(1), "S"),
            Mail::new(message(2), "FS"),
            Mail::new(message(3), ""),
            Mail {
                in_new: true,
                ..Mail::new(message(4), "")
            },
        ],
    );
    inbox.uid_step = 3;
    let mut work = Folder::new(
        "Work",
        vec![Mail::new(message(10), "RSa"), Mail::new(message(11), "b")],
    );
    work.uidvalidity = 1_600_000_000;
    work.first_uid = 40;
    let lists = Folder::new(
        "Lists/rust",
        vec![Mail::new(message(20), "S"), Mail::new(message(21), "DS")],
    );
    let spam = Folder::new("Spam", vec![Mail::new(message(30), "ST")]);
    write_maildir(root, &[inbox, work, lists, spam]);
}

fn mailbox_names(root: &Path) -> Vec<String> {
    read_maildir(root).mailboxes.into_keys().collect()
}

fn message_count(root: &Path, mailbox: &str) -> usize {
    read_maildir(root)
        .mailboxes
        .get(mailbox)
        .map_or(0, |m| m.messages.len())
}

#[test]
fn help_mentions_every_flag() {
    let top = raw(&["--help"]);
    assert_eq!(code(&top), 0, "{}", describe(&top));
    let top = String::from_utf8_lossy(&top.stdout).into_owned();
    for needle in [
        "-o",
        "-v",
        "-D",
        "sync",
        "backup",
        "mirror",
        "mail_location",
    ] {
        assert!(top.contains(needle), "--help lacks {needle:?}:\n{top}");
    }
    for (cmd, flags) in [
        ("sync", &["-1", "-f", "-R", "-s", "-m", "-x", "-o"][..]),
        ("backup", &["-f", "-R", "-s", "-m", "-x", "-o"][..]),
    ] {
        let out = raw(&[cmd, "--help"]);
        assert_eq!(code(&out), 0, "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for flag in flags {
            assert!(
                text.contains(&format!("{flag} ")),
                "{cmd} --help lacks {flag}:\n{text}"
            );
        }
        assert!(text.contains("DESTINATION"), "{text}");
    }
}

#[test]
fn usage_errors_exit_64() {
    let d = Dir::new();
    let src = d.join("src");
    small_source(&src);
    let loc = format!("mail_location={}", maildir(&src));
    let other = maildir(&d.join("dst"));
    let same = maildir(&src);
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["frobnicate"],
        vec!["-o", &loc, "backup"],
        vec!["-o", &loc, "backup", "-1", &other],
        vec!["-o", &loc, "backup", "-Z", &other],
        vec!["-o", &loc, "sync", &other, "extra"],
        vec!["-o", &loc, "backup", "-s"],
        vec!["-o", "noequals", "backup", &other],
        vec!["-o", &loc, "backup", "/no/format/prefix"],
        vec!["-o", &loc, "backup", "pop3c:/not/yet"],
        vec!["-o", &loc, "backup", "mbox:"],
        vec!["-o", &loc, "backup", "sdbox:/x:ALT=/y"],
        vec!["-o", &loc, "backup", "maildir:"],
        vec!["-o", &loc, "backup", "maildir:/x:BOGUS=1"],
        vec!["-o", "mail_location=nowhere", "backup", &other],
        vec!["-o", &loc, "backup", &same],
    ];
    for args in &cases {
        let out = raw(args);
        assert_eq!(code(&out), 64, "boxsync {args:?}: {}", describe(&out));
        assert!(!out.stderr.is_empty(), "boxsync {args:?} said nothing");
    }
    assert!(
        !d.join("dst").exists(),
        "a usage error created the destination"
    );
}

#[test]
fn missing_mail_location_exits_78() {
    let d = Dir::new();
    let out = raw(&["backup", &maildir(&d.join("dst"))]);
    assert_eq!(code(&out), 78, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mail_location"),
        "{}",
        describe(&out)
    );
    assert!(!d.join("dst").exists());
}

#[test]
fn unknown_setting_exits_78() {
    let d = Dir::new();
    let src = d.join("src");
    small_source(&src);
    let loc = format!("mail_location={}", maildir(&src));
    let dst = maildir(&d.join("dst"));
    for setting in ["mail_frobnicate=yes", "mail_fsync=sometimes"] {
        let out = raw(&["-o", &loc, "-o", setting, "backup", &dst]);
        assert_eq!(code(&out), 78, "-o {setting}: {}", describe(&out));
        let key = setting.split('=').next().unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(key),
            "the error should name {key}: {}",
            describe(&out)
        );
    }
    assert!(!d.join("dst").exists());
}

#[test]
fn missing_source_exits_68_and_creates_nothing() {
    let d = Dir::new();
    let absent = d.join("absent");
    let fresh = d.join("fresh");
    // (local, args, other): the source is always `absent`.
    let cases: [(&Path, &[&str], &Path); 4] = [
        (&absent, &["backup"], &fresh),
        (&fresh, &["backup", "-R"], &absent),
        (&absent, &["sync", "-1"], &fresh),
        (&fresh, &["sync", "-1", "-R"], &absent),
    ];
    for (local, args, other) in cases {
        let out = run(local, args, other);
        assert_eq!(code(&out), 68, "{args:?}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&absent.display().to_string()),
            "the error should name the missing source: {}",
            describe(&out)
        );
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
}

#[test]
fn backup_into_fresh_dir_is_identical() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    small_source(&src);
    let before = tree_bytes(&src);
    run_ok(&src, &["backup"], &dst);
    assert_same_store(&read_maildir(&src), &read_maildir(&dst));
    assert_same_tree(&before, &tree_bytes(&src), "the source");
    // Nothing left to do: the destination stays as it is.
    let dst_before = tree_bytes(&dst);
    run_ok(&src, &["backup"], &dst);
    assert_same_tree(&dst_before, &tree_bytes(&dst), "the destination on a rerun");
}

/// The same through Dovecot's eyes: a store Dovecot wrote, backed up by boxsync, fetched by
/// Dovecot from both sides.
#[test]
fn backup_into_fresh_dir_is_identical_as_dovecot_sees_it() {
    let Some(dc) = dovecot_or_skip() else { return };
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    let (sloc, dloc) = (maildir(&src), maildir(&dst));
    for n in 1..=4 {
        dc.save(&sloc, "INBOX", &message(n));
    }
    dc.mailbox_create(&sloc, "Archive/2024");
    dc.mailbox_create(&sloc, "Work");
    dc.mailbox_subscribe(&sloc, "Work");
    for n in 5..=7 {
        dc.save(&sloc, "Work", &message(n));
    }
    dc.save(&sloc, "Archive/2024", &message(8));
    dc.flags_add(&sloc, "INBOX", 1, "\\Seen");
    dc.flags_add(&sloc, "INBOX", 2, "\\Flagged \\Answered $Important");
    dc.flags_add(&sloc, "Work", 2, "\\Seen Project");
    dc.expunge(&sloc, "INBOX", 3);
    let src_rows = dc.fetch(&sloc);
    let src_status = dc.mailbox_status(&sloc);
    let src_subs = dc.subscriptions(&sloc);

    run_ok(&src, &["backup"], &dst);
    // Bytes by (mailbox, UID) from the files, before Dovecot touches the destination.
    let bodies = |v: &support::StoreView| -> Vec<(String, u32, Vec<u8>)> {
        v.mailboxes
            .iter()
            .flat_map(|(n, m)| {
                m.messages
                    .iter()
                    .map(move |(uid, msg)| (n.clone(), *uid, msg.body.clone()))
            })
            .collect()
    };
    let (src_view, dst_view) = (read_maildir(&src), read_maildir(&dst));
    assert_eq!(bodies(&src_view).len(), 7);
    assert!(
        bodies(&src_view) == bodies(&dst_view),
        "message bytes differ"
    );

    assert_eq!(src_rows, dc.fetch(&dloc), "messages as Dovecot sees them");
    assert_eq!(src_status, dc.mailbox_status(&dloc), "mailbox status");
    assert_eq!(src_subs, dc.subscriptions(&dloc), "subscriptions");
    let ids = |loc: &str| dc.fetch_fields(loc, "mailbox uid hdr.message-id", &["ALL"]);
    assert_eq!(ids(&sloc), ids(&dloc));
}

#[test]
fn backup_deletes_what_only_the_destination_has() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    small_source(&src);
    // An INBOX message above the source's UIDs, and a folder the source lacks.
    let mut inbox = Folder::new("INBOX", vec![Mail::new(message(99), "S")]);
    inbox.first_uid = 20;
    write_maildir(
        &dst,
        &[
            inbox,
            Folder::new("Extra", vec![Mail::new(message(98), "")]),
        ],
    );
    run_ok(&src, &["backup"], &dst);
    assert_same_store(&read_maildir(&src), &read_maildir(&dst));
    assert!(!dst.join(".Extra").exists());
}

/// Regression: backup renumbered source messages (UID 1 -> 5) around them, exit 2.
#[test]
fn backup_keeps_the_source_uids_over_destination_only_messages() {
    // The source's INBOX has UIDs 1, 4, 7 and 10; the destination's own message sits at UID 1
    // (same UID, other message) or UID 2 (between the source's).
    for uid in [1, 2] {
        let d = Dir::new();
        let (src, dst) = (d.join("src"), d.join("dst"));
        small_source(&src);
        let mut inbox = Folder::new("INBOX", vec![Mail::new(message(99), "S")]);
        inbox.first_uid = uid;
        write_maildir(&dst, &[inbox]);
        let out = run(&src, &["backup"], &dst);
        assert_eq!(
            code(&out),
            0,
            "destination message at UID {uid}: {}",
            describe(&out)
        );
        assert_same_store(&read_maildir(&src), &read_maildir(&dst));
    }
}

#[test]
fn backup_reverse_copies_the_destination_into_the_local_store() {
    let d = Dir::new();
    let (local, remote) = (d.join("local"), d.join("remote"));
    small_source(&remote);
    write_maildir(
        &local,
        &[Folder::new("Old", vec![Mail::new(message(50), "")])],
    );
    let before = tree_bytes(&remote);
    run_ok(&local, &["backup", "-R"], &remote);
    assert_same_store(&read_maildir(&remote), &read_maildir(&local));
    assert_same_tree(&before, &tree_bytes(&remote), "the -R source");
}

/// Two stores with a message each that the other lacks in INBOX, A with a folder B lacks, and
/// (with `b_only`) B with a folder A lacks.
fn diverged(a: &Path, b: &Path, b_only: bool) {
    write_maildir(
        a,
        &[
            Folder::new("INBOX", vec![Mail::new(message(1), "S")]),
            Folder::new("OnlyA", vec![Mail::new(message(2), "")]),
        ],
    );
    let mut inbox_b = Folder::new("INBOX", vec![Mail::new(message(3), "F")]);
    // The same UIDVALIDITY and GUID as A's INBOX: the same mailbox, changed on both sides.
    inbox_b.first_uid = 2;
    let mut folders = vec![inbox_b];
    if b_only {
        folders.push(Folder::new("OnlyB", vec![Mail::new(message(4), "a")]));
    }
    write_maildir(b, &folders);
}

/// The messages of a mailbox as text, sorted (the test messages are ASCII).
fn bodies_of(root: &Path, mailbox: &str) -> Vec<String> {
    let mut v: Vec<String> = read_maildir(root)
        .mailboxes
        .get(mailbox)
        .map(|m| {
            m.messages
                .values()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `message(n)` as text, for comparing with [`bodies_of`].
fn text(n: usize) -> String {
    String::from_utf8(message(n)).expect("ASCII")
}

/// Several `message(n)` as sorted text.
fn texts(ns: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = ns.iter().map(|&n| text(n)).collect();
    v.sort();
    v
}

fn check_two_way_merge(cmd: &str) {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    diverged(&a, &b, true);
    run_ok(&a, &[cmd], &b);
    let (va, vb) = (read_maildir(&a), read_maildir(&b));
    assert_same_store(&va, &vb);
    assert_eq!(bodies_of(&a, "INBOX"), texts(&[1, 3]));
    assert_eq!(bodies_of(&a, "OnlyA"), texts(&[2]));
    assert_eq!(bodies_of(&a, "OnlyB"), texts(&[4]));
    // Converged: a second run changes nothing on either side.
    let (ta, tb) = (tree_bytes(&a), tree_bytes(&b));
    run_ok(&a, &[cmd], &b);
    assert_same_tree(&ta, &tree_bytes(&a), "side A on a rerun");
    assert_same_tree(&tb, &tree_bytes(&b), "side B on a rerun");
}

#[test]
fn sync_merges_both_ways() {
    check_two_way_merge("sync");
}

#[test]
fn mirror_is_an_alias_of_sync() {
    check_two_way_merge("mirror");
}

#[test]
fn sync_one_way_merges_into_the_destination_and_never_changes_the_source() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    diverged(&a, &b, false);
    let before = tree_bytes(&a);
    run_ok(&a, &["sync", "-1"], &b);
    assert_same_tree(&before, &tree_bytes(&a), "the -1 source");
    assert_eq!(
        bodies_of(&b, "INBOX"),
        texts(&[1, 3]),
        "merged, not replaced"
    );
    assert_eq!(bodies_of(&b, "OnlyA"), texts(&[2]));
    // -1 -R: the other way, leaving B alone.
    support::deliver(&b, "INBOX", &message(5), "S");
    let before_b = tree_bytes(&b);
    run_ok(&a, &["sync", "-1", "-R"], &b);
    assert_same_tree(&before_b, &tree_bytes(&b), "the -1 -R source");
    assert_eq!(bodies_of(&a, "INBOX"), texts(&[1, 3, 5]));
}

/// Regression: "could not be opened on this side", exit 2 on every run.
#[test]
fn sync_one_way_keeps_a_mailbox_only_the_destination_has() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    diverged(&a, &b, true);
    let before = tree_bytes(&a);
    run_ok(&a, &["sync", "-1"], &b);
    assert_same_tree(&before, &tree_bytes(&a), "the -1 source");
    assert_eq!(bodies_of(&b, "OnlyB"), texts(&[4]), "-1 is not a backup");
    assert_eq!(bodies_of(&b, "OnlyA"), texts(&[2]));
    run_ok(&a, &["sync", "-1"], &b);
}

/// Regression: the INBOX GUID conflict renamed the root into itself (EINVAL), exit 75.
#[test]
fn sync_one_way_into_an_empty_maildir() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    small_source(&a);
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(b.join(sub)).unwrap();
    }
    run_ok(&a, &["sync", "-1"], &b);
    let (va, vb) = (read_maildir(&a), read_maildir(&b));
    for (name, mb) in &va.mailboxes {
        let bodies = |m: &support::MailboxView| {
            let mut v: Vec<Vec<u8>> = m.messages.values().map(|m| m.body.clone()).collect();
            v.sort();
            v
        };
        assert!(
            vb.mailboxes
                .get(name)
                .is_some_and(|b| bodies(b) == bodies(mb)),
            "{name} not copied"
        );
    }
}

#[test]
fn full_sync_gives_the_same_result_and_then_changes_nothing() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    small_source(&src);
    run_ok(&src, &["backup", "-f"], &dst);
    assert_same_store(&read_maildir(&src), &read_maildir(&dst));
    // A flag changed behind boxsync's back, found by a full sync.
    let cur = src.join(".Work/cur");
    let file = std::fs::read_dir(&cur)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(":2,b"))
        .expect("the Work message flagged `b`");
    std::fs::rename(
        &file,
        cur.join(format!("{}F", file.file_name().unwrap().to_string_lossy())),
    )
    .unwrap();
    run_ok(&src, &["backup", "-f"], &dst);
    assert_same_store(&read_maildir(&src), &read_maildir(&dst));
    let before = tree_bytes(&dst);
    run_ok(&src, &["backup", "-f"], &dst);
    assert_same_tree(&before, &tree_bytes(&dst), "the destination on a rerun");
}

/// The state is the only thing on stdout, one line of base64.
fn state_of(out: &Output) -> String {
    let text = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    let state = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("stdout is not one line: {text:?}"));
    assert!(
        !state.contains('\n'),
        "stdout has more than the state: {text:?}"
    );
    assert!(!state.is_empty(), "empty state: {}", describe(out));
    assert!(
        state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
        "not base64: {state:?}"
    );
    state.to_owned()
}

#[test]
fn state_empty_prints_only_a_state_and_a_rerun_gives_the_same_state() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    small_source(&src);
    for cmd in ["backup", "sync"] {
        let first = run_ok(&src, &[cmd, "-s", ""], &dst);
        assert!(first.stderr.is_empty(), "{}", describe(&first));
        let state = state_of(&first);
        assert_same_store(&read_maildir(&src), &read_maildir(&dst));
        let before = tree_bytes(&dst);
        let again = run_ok(&src, &[cmd, "-s", &state], &dst);
        assert!(again.stderr.is_empty(), "{}", describe(&again));
        assert_eq!(state_of(&again), state, "{cmd}: no changes, same state");
        assert_same_tree(&before, &tree_bytes(&dst), "the destination");
    }
}

#[test]
fn state_continues_after_a_change() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    small_source(&src);
    let state = state_of(&run_ok(&src, &["sync", "-s", ""], &dst));
    // New mail delivered into the source's INBOX by an MDA.
    std::fs::write(src.join("new/1800000000.M1P1.mda"), message(60)).unwrap();
    let next = state_of(&run_ok(&src, &["sync", "-s", &state], &dst));
    assert_ne!(next, state, "the state should move on");
    assert!(bodies_of(&dst, "INBOX").contains(&text(60)));
    assert_same_store(&read_maildir(&src), &read_maildir(&dst));
    assert_eq!(state_of(&run_ok(&src, &["sync", "-s", &next], &dst)), next);
}

#[test]
fn mailbox_flag_syncs_only_the_named_mailboxes() {
    let d = Dir::new();
    let src = d.join("src");
    small_source(&src);
    let dst = d.join("dst");
    run_ok(&src, &["backup", "-m", "Work"], &dst);
    assert_eq!(message_count(&dst, "Work"), 2);
    assert_eq!(message_count(&dst, "INBOX"), 0);
    assert!(!dst.join(".Lists.rust").exists());
    assert!(!dst.join(".Spam").exists());
    let dst2 = d.join("dst2");
    run_ok(&src, &["backup", "-m", "Lists*", "-m", "Sp?m"], &dst2);
    assert_eq!(message_count(&dst2, "Lists/rust"), 2);
    assert_eq!(message_count(&dst2, "Spam"), 1);
    assert_eq!(message_count(&dst2, "INBOX"), 0);
    assert!(!dst2.join(".Work").exists());
}

#[test]
fn exclude_flag_leaves_matching_mailboxes_alone() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    small_source(&src);
    run_ok(&src, &["backup", "-x", "Spam", "-x", "Lists*"], &dst);
    assert_eq!(mailbox_names(&dst), ["INBOX", "Work"]);
    assert_eq!(message_count(&dst, "INBOX"), 4);
    assert_eq!(message_count(&dst, "Work"), 2);
}

#[test]
fn exclude_flag_keeps_an_excluded_mailbox_of_the_destination() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    small_source(&src);
    run_ok(&src, &["backup", "-x", "Spam"], &dst);
    let mut spam = Folder::new("Spam", vec![Mail::new(message(77), "")]);
    spam.guid ^= 1;
    write_maildir(&dst, &[spam]);
    run_ok(&src, &["backup", "-x", "Spam"], &dst);
    assert_eq!(bodies_of(&dst, "Spam"), texts(&[77]));
}

#[test]
fn mailbox_flag_keeps_the_other_mailboxes_of_the_destination() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    small_source(&src);
    run_ok(&src, &["backup"], &dst);
    let before = read_maildir(&dst);
    std::fs::write(src.join(".Work/new/1800000000.M1P1.mda"), message(70)).unwrap();
    run_ok(&src, &["backup", "-m", "Work"], &dst);
    let after = read_maildir(&dst);
    assert_eq!(bodies_of(&dst, "Work"), texts(&[10, 11, 70]));
    for name in ["INBOX", "Lists/rust", "Spam"] {
        assert_eq!(
            before.mailboxes.get(name),
            after.mailboxes.get(name),
            "{name} changed"
        );
    }
}
