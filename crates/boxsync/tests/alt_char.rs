//! `-C ALTCHAR` and `dsync_alt_char`: the receiving side gives a mailbox whose name its store
//! cannot hold a repaired name (reference §1.6): a '.' inside a level becomes the alt char in
//! Maildir++, control characters become it everywhere, a reserved level gets a '_' in front,
//! and a name that still does not fit is named after the mailbox GUID. A rerun changes
//! nothing: the repaired name and the original compare equal on the repairing side.
//!
//! Dovecot 2.3.19 on the same stores: `doveadm backup` of a `LAYOUT=fs` Maildir with `a.b`,
//! `Work/x.y` and `ctl\x01x` into Maildir++ gives `a_b`, `Work/x_y` and `ctl_x` (checked in
//! [`backup_into_maildir_plus_plus_repairs_the_names_as_dovecot_does`]); a two-way
//! `doveadm sync` leaves the `LAYOUT=fs` side's names as they are, and a second run changes
//! nothing. With `dsync_alt_char=+` its second sync renames `a.b` to `a+b` on the `LAYOUT=fs`
//! side (its tie rule: the name that sorts first wins), then nothing more. boxsync's tie rule
//! is the master's name, so the `LAYOUT=fs` side keeps `a.b` when it is the master and takes
//! `a_b` once when it is not; either way the third sync is a no-op.

mod common;
mod support;

use common::imapd::{Imapd, run_boxsync as run_account};
use common::{Dir, boxsync, dovecot_or_skip, maildir, message};
use std::path::Path;
use std::process::Output;
use support::{assert_same_tree, code, describe, ok, tree_bytes};

/// `boxsync -o mail_location=LOCAL -o mail_fsync=never ARGS… DEST`.
fn run(local: &str, args: &[&str], dest: &str) -> Output {
    boxsync()
        .arg("-o")
        .arg(format!("mail_location={local}"))
        .args(["-o", "mail_fsync=never"])
        .args(args)
        .arg(dest)
        .output()
        .expect("run boxsync")
}

/// A Maildir folder directory under `root` (`""` for INBOX) holding message `n`, written the
/// way an MDA drops mail: no uidlist yet.
fn folder(root: &Path, dir: &str, n: usize) {
    let d = root.join(dir);
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let file = format!("17000000{n:02}.M{n}P1.boxsync-test");
    std::fs::write(d.join("new").join(file), message(n)).unwrap();
}

/// A `LAYOUT=fs` Maildir with the names Maildir++ cannot hold: `a.b`, `Work/x.y` and
/// `ctl\x01x` (stored in modified UTF-7, as Dovecot lists a folder made by another program),
/// one message each, and INBOX. Returns its location.
fn fs_source(root: &Path) -> String {
    folder(root, "", 1);
    folder(root, "a.b", 2);
    folder(root, "Work/x.y", 3);
    folder(root, "ctl&AAE-x", 4);
    format!("{}:LAYOUT=fs", maildir(root))
}

/// The messages in a Maildir folder directory.
fn mail_in(dir: &Path) -> usize {
    ["cur", "new"]
        .iter()
        .filter_map(|s| std::fs::read_dir(dir.join(s)).ok())
        .map(|entries| entries.count())
        .sum()
}

/// The Maildir++ folder directories of `root` (`.NAME`), sorted.
fn plus_plus_folders(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("cur").is_dir())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix('.').map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Runs `args` again and asserts that it exits 0 and changes neither store.
fn assert_rerun_changes_nothing(local: &str, args: &[&str], dest: &str, roots: [&Path; 2]) {
    let before = roots.map(tree_bytes);
    let out = run(local, args, dest);
    ok(&out, &format!("rerun of {args:?}"));
    for (root, before) in roots.iter().zip(&before) {
        assert_same_tree(
            before,
            &tree_bytes(root),
            &format!("{} after a rerun of {args:?}", root.display()),
        );
    }
}

#[test]
fn backup_into_maildir_plus_plus_repairs_the_names_as_dovecot_does() {
    let d = Dir::new();
    let src = fs_source(&d.join("src"));
    let dst = d.join("dst");
    ok(&run(&src, &["backup"], &maildir(&dst)), "backup");
    assert_eq!(plus_plus_folders(&dst), ["Work.x_y", "a_b", "ctl_x"]);
    for (folder, n) in [(".a_b", 1), (".Work.x_y", 1), (".ctl_x", 1), ("", 1)] {
        assert_eq!(mail_in(&dst.join(folder)), n, "mail in {folder:?}");
    }
    // The source keeps its names, and a rerun repairs the same way: nothing to do.
    assert!(d.join("src/a.b/cur").is_dir());
    assert_rerun_changes_nothing(&src, &["backup"], &maildir(&dst), [&d.join("src"), &dst]);

    let Some(dovecot) = dovecot_or_skip() else {
        return;
    };
    let ours = dovecot.mailbox_list(&maildir(&dst));
    assert_eq!(ours, ["INBOX", "Work", "Work/x_y", "a_b", "ctl_x"]);
    assert_eq!(dovecot.fetch(&maildir(&dst)).len(), 4);
    // Dovecot's own dsync, from the same source into an empty Maildir++, ends the same.
    let theirs = d.join("dovecot");
    let out = dovecot.sync(&src, &maildir(&theirs), &["backup"]);
    assert_eq!(code(&out), 0, "doveadm backup: {}", describe(&out));
    assert_eq!(dovecot.mailbox_list(&maildir(&theirs)), ours);
}

#[test]
fn dash_capital_c_and_the_setting_choose_the_alt_char() {
    let d = Dir::new();
    let src = fs_source(&d.join("src"));
    let (flag, setting) = (d.join("flag"), d.join("setting"));
    ok(&run(&src, &["backup", "-C", "+"], &maildir(&flag)), "-C +");
    assert_eq!(plus_plus_folders(&flag), ["Work.x+y", "a+b", "ctl+x"]);
    assert_rerun_changes_nothing(
        &src,
        &["backup", "-C", "+"],
        &maildir(&flag),
        [&d.join("src"), &flag],
    );
    ok(
        &run(
            &src,
            &["-o", "dsync_alt_char=+", "backup"],
            &maildir(&setting),
        ),
        "dsync_alt_char=+",
    );
    assert_eq!(plus_plus_folders(&setting), ["Work.x+y", "a+b", "ctl+x"]);
    // -C wins over the setting.
    let both = d.join("both");
    ok(
        &run(
            &src,
            &["-o", "dsync_alt_char=+", "backup", "-C", "~"],
            &maildir(&both),
        ),
        "-C over dsync_alt_char",
    );
    assert_eq!(plus_plus_folders(&both), ["Work.x~y", "a~b", "ctl~x"]);

    let Some(dovecot) = dovecot_or_skip() else {
        return;
    };
    assert_eq!(
        dovecot.mailbox_list(&maildir(&flag)),
        ["INBOX", "Work", "Work/x+y", "a+b", "ctl+x"]
    );
}

/// With `-R` the local store is the destination, so the master repairs, with its own `-C`.
#[test]
fn reverse_backup_repairs_on_the_local_side() {
    let d = Dir::new();
    let src_root = d.join("src");
    let src = fs_source(&src_root);
    let local = d.join("local");
    ok(&run(&maildir(&local), &["backup", "-R"], &src), "backup -R");
    assert_eq!(plus_plus_folders(&local), ["Work.x_y", "a_b", "ctl_x"]);
    assert_rerun_changes_nothing(
        &maildir(&local),
        &["backup", "-R"],
        &src,
        [&src_root, &local],
    );
    // Another alt char gives other names: the backup renames its mailboxes to them.
    ok(
        &run(&maildir(&local), &["backup", "-R", "-C", "+"], &src),
        "backup -R -C +",
    );
    assert_eq!(plus_plus_folders(&local), ["Work.x+y", "a+b", "ctl+x"]);
    assert_eq!(mail_in(&local.join(".a+b")), 1);
}

#[test]
fn invalid_alt_chars_are_refused_before_anything_is_opened() {
    let d = Dir::new();
    let src = fs_source(&d.join("src"));
    let dst = d.join("dst");
    for bad in ["", "ab", "/", ".", "\t"] {
        let out = run(&src, &["backup", "-C", bad], &maildir(&dst));
        assert_eq!(code(&out), 64, "-C {bad:?}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("alt char"),
            "-C {bad:?}: {}",
            describe(&out)
        );
    }
    let out = run(&src, &["-o", "dsync_alt_char=ab", "backup"], &maildir(&dst));
    assert_eq!(code(&out), 78, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dsync_alt_char"),
        "{}",
        describe(&out)
    );
    assert!(!dst.exists(), "a refused run created the destination");
}

/// Two-way, with either side as the master: the first sync creates the repaired names on the
/// Maildir++ side, and at most one more renames the `LAYOUT=fs` side's mailboxes to them
/// (when the Maildir++ side is the master, whose name wins the tie); after that a sync
/// changes nothing, and both sides hold the same mail.
#[test]
fn two_way_sync_converges() {
    for fs_is_master in [true, false] {
        let d = Dir::new();
        let fs_root = d.join("fs");
        let fs = fs_source(&fs_root);
        let pp_root = d.join("pp");
        let pp = maildir(&pp_root);
        let (local, dest) = if fs_is_master {
            (fs.as_str(), pp.as_str())
        } else {
            // The Maildir++ side must exist to be the local store of a sync.
            folder(&pp_root, "", 5);
            (pp.as_str(), fs.as_str())
        };
        ok(&run(local, &["sync"], dest), "first sync");
        assert_eq!(plus_plus_folders(&pp_root), ["Work.x_y", "a_b", "ctl_x"]);
        ok(&run(local, &["sync"], dest), "second sync");
        let fs_names = if fs_is_master {
            ["Work/x.y", "a.b", "ctl&AAE-x"]
        } else {
            ["Work/x_y", "a_b", "ctl_x"]
        };
        for name in fs_names {
            assert!(
                fs_root.join(name).join("cur").is_dir(),
                "{name} on the LAYOUT=fs side (master: {})",
                if fs_is_master {
                    "LAYOUT=fs"
                } else {
                    "Maildir++"
                }
            );
        }
        assert_rerun_changes_nothing(local, &["sync"], dest, [&fs_root, &pp_root]);
        for (fs_dir, pp_dir) in [
            ("", ""),
            (fs_names[1], ".a_b"),
            (fs_names[0], ".Work.x_y"),
            (fs_names[2], ".ctl_x"),
        ] {
            assert_eq!(
                mail_in(&fs_root.join(fs_dir)),
                mail_in(&pp_root.join(pp_dir)),
                "{fs_dir:?} and {pp_dir:?}"
            );
        }
    }
}

/// An mbox root holds '.' in a name, but neither control characters nor a level that looks
/// like a dotlock.
#[test]
fn backup_into_mbox_repairs_what_mbox_cannot_hold() {
    let d = Dir::new();
    let src_root = d.join("src");
    let src = fs_source(&src_root);
    folder(&src_root, "x.lock", 6);
    let dst = d.join("mbox");
    let dst_loc = format!("mbox:{}", dst.display());
    ok(&run(&src, &["backup"], &dst_loc), "backup into mbox");
    for file in ["a.b", "Work/x.y", "ctl_x", "x_lock"] {
        assert!(dst.join(file).is_file(), "{file} in {}", dst.display());
    }
    assert_rerun_changes_nothing(&src, &["backup"], &dst_loc, [&src_root, &dst]);
}

/// An IMAP server whose Maildirs use `LAYOUT=fs` holds `a.b`; a backup of the account into
/// Maildir++ names it `a_b`, and a second backup changes nothing.
#[test]
fn imap_folder_with_a_dot_backs_up_into_maildir_plus_plus() {
    let Some(im) = Imapd::start_layout_fs() else {
        return;
    };
    let dc = im.dovecot();
    let account = im.user_location("alice");
    dc.mailbox_create(&account, "a.b");
    dc.save(&account, "a.b", &message(1));
    dc.save(&account, "INBOX", &message(2));
    let alice = im.imapc_args("alice");
    let d = Dir::new();
    let idx = format!("imapc:{}", d.join("idx").display());
    let dst = d.join("dst");
    ok(
        &run_account(&idx, &alice, &["backup", &maildir(&dst)]),
        "IMAP → Maildir++",
    );
    assert_eq!(plus_plus_folders(&dst), ["a_b"]);
    assert_eq!(mail_in(&dst.join(".a_b")), 1);
    let before = tree_bytes(&dst);
    ok(
        &run_account(&idx, &alice, &["backup", &maildir(&dst)]),
        "rerun",
    );
    assert_same_tree(&before, &tree_bytes(&dst), "the Maildir++ after a rerun");
    assert_eq!(
        dc.mailbox_list(&maildir(&dst)),
        ["INBOX", "a_b"],
        "as Dovecot lists the copy"
    );
}
