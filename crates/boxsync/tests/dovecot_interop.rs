//! Real Dovecot and boxsync share Maildirs: Dovecot reads what boxsync wrote, boxsync carries
//! Dovecot's changes across, and on scripted two-way scenarios `boxsync sync` ends where
//! `doveadm sync` ends on copies of the same stores.

mod common;
mod support;

use common::{Dir, Dovecot, FetchRow, boxsync, dovecot_or_skip, maildir, message};
use support::copy_tree;

fn run_boxsync(a: &str, args: &[&str], b: &str) -> std::process::Output {
    let out = boxsync()
        .args([
            "-o",
            &format!("mail_location={a}"),
            "-o",
            "mail_fsync=never",
        ])
        .args(args)
        .arg(b)
        .output()
        .expect("run boxsync");
    assert!(
        out.status.code() == Some(0),
        "boxsync {args:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Mailbox names with their messages, without the mailboxes Dovecot lists only as parents.
fn view(dovecot: &Dovecot, loc: &str) -> Vec<FetchRow> {
    dovecot.fetch(loc)
}

fn mailbox_names(dovecot: &Dovecot, loc: &str) -> Vec<String> {
    let mut names: Vec<String> = dovecot
        .mailbox_status(loc)
        .into_iter()
        .map(|s| s.0)
        .collect();
    names.sort();
    names
}

/// A Dovecot-made store with folders, flags and keywords.
fn populate(dovecot: &Dovecot, loc: &str) {
    for n in 0..4 {
        dovecot.save(loc, "INBOX", &message(n));
    }
    dovecot.mailbox_create(loc, "Work/Prøjekt");
    dovecot.mailbox_subscribe(loc, "Work/Prøjekt");
    dovecot.save(loc, "Work/Prøjekt", &message(10));
    dovecot.save(loc, "Work/Prøjekt", &message(11));
    dovecot.flags_add(loc, "INBOX", 1, "\\Seen $Important");
    dovecot.flags_add(loc, "INBOX", 2, "\\Flagged");
    dovecot.flags_add(loc, "Work/Prøjekt", 2, "\\Answered \\Seen");
}

/// Dovecot, and two stores under one directory: `a` populated by Dovecot, `b` not there yet.
fn populated_pair() -> Option<(Dovecot, Dir, String, String)> {
    let dovecot = dovecot_or_skip()?;
    let dir = Dir::new();
    let (a, b) = (maildir(&dir.join("a")), maildir(&dir.join("b")));
    populate(&dovecot, &a);
    Some((dovecot, dir, a, b))
}

#[test]
fn dovecot_sees_what_boxsync_backed_up() {
    let Some((dovecot, _dir, a, b)) = populated_pair() else {
        return;
    };
    run_boxsync(&a, &["backup"], &b);
    assert_eq!(view(&dovecot, &b), view(&dovecot, &a));
    assert_eq!(mailbox_names(&dovecot, &b), mailbox_names(&dovecot, &a));
    assert_eq!(dovecot.subscriptions(&b), dovecot.subscriptions(&a));
    let status_a = dovecot.mailbox_status(&a);
    let status_b = dovecot.mailbox_status(&b);
    assert_eq!(status_b, status_a, "UIDVALIDITY and UIDNEXT are kept");
    // A rerun changes nothing.
    run_boxsync(&a, &["backup"], &b);
    assert_eq!(view(&dovecot, &b), view(&dovecot, &a));
}

#[test]
fn dovecot_changes_reach_the_other_side() {
    let Some((dovecot, _dir, a, b)) = populated_pair() else {
        return;
    };
    dovecot.mailbox_create(&a, "Old");
    dovecot.save(&a, "Old", &message(20));
    dovecot.mailbox_create(&a, "Gone");
    dovecot.save(&a, "Gone", &message(21));
    run_boxsync(&a, &["sync"], &b);
    assert_eq!(view(&dovecot, &b), view(&dovecot, &a));

    dovecot.save(&a, "INBOX", &message(5));
    dovecot.flags_add(&a, "INBOX", 3, "\\Seen Work");
    dovecot.flags_remove(&a, "INBOX", 1, "\\Seen");
    dovecot.expunge(&a, "INBOX", 2);
    dovecot.mailbox_rename(&a, "Old", "Renamed");
    dovecot.mailbox_delete(&a, "Gone");
    // And on the other side too.
    dovecot.save(&b, "Work/Prøjekt", &message(12));
    dovecot.flags_add(&b, "Work/Prøjekt", 1, "\\Flagged");
    run_boxsync(&a, &["sync"], &b);
    let after = view(&dovecot, &a);
    assert_eq!(view(&dovecot, &b), after);
    assert!(after.iter().any(|r| r.mailbox == "Renamed"), "{after:?}");
    assert!(
        !after
            .iter()
            .any(|r| r.mailbox == "Gone" || r.mailbox == "Old"),
        "{after:?}"
    );
    assert!(!after.iter().any(|r| r.mailbox == "INBOX" && r.uid == 2));
    let inbox3 = after
        .iter()
        .find(|r| r.mailbox == "INBOX" && r.uid == 3)
        .unwrap();
    assert_eq!(inbox3.flags, ["Work", "\\Seen"]);
    assert_eq!(
        after.iter().filter(|r| r.mailbox == "Work/Prøjekt").count(),
        3
    );
    assert_eq!(mailbox_names(&dovecot, &b), mailbox_names(&dovecot, &a));
}

/// Runs `doveadm sync` and `boxsync sync` on copies of the same two stores and compares.
struct Scenario {
    dovecot: Dovecot,
    dir: Dir,
}

impl Scenario {
    fn new() -> Option<Scenario> {
        let (dovecot, dir, a, b) = populated_pair()?;
        // Both sides start as Dovecot's own dsync leaves them.
        let out = dovecot.sync(&a, &b, &["backup"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // boxsync's first look: both sides agree, which it records as the base of later merges
        // (Dovecot's index holds the same history).
        run_boxsync(&a, &["sync"], &b);
        Some(Scenario { dovecot, dir })
    }

    fn a(&self) -> String {
        maildir(&self.dir.join("a"))
    }
    fn b(&self) -> String {
        maildir(&self.dir.join("b"))
    }

    /// Syncs copies with each tool and returns (dovecot's A, B, boxsync's A, B).
    fn compare(&self) -> [Vec<FetchRow>; 4] {
        copy_tree(&self.dir.join("a"), &self.dir.join("da"));
        copy_tree(&self.dir.join("b"), &self.dir.join("db"));
        let (da, db) = (maildir(&self.dir.join("da")), maildir(&self.dir.join("db")));
        let out = self.dovecot.sync(&da, &db, &["sync"]);
        assert!(
            out.status.success(),
            "doveadm sync: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        run_boxsync(&self.a(), &["sync"], &self.b());
        let r = [
            view(&self.dovecot, &da),
            view(&self.dovecot, &db),
            view(&self.dovecot, &self.a()),
            view(&self.dovecot, &self.b()),
        ];
        assert_eq!(r[0], r[1], "doveadm left the sides different");
        assert_eq!(r[2], r[3], "boxsync left the sides different");
        r
    }
}

#[test]
fn uid_conflict_renumbers_both_like_dovecot() {
    let Some(s) = Scenario::new() else { return };
    let (a, b) = (s.a(), s.b());
    s.dovecot.save(&a, "INBOX", &message(100));
    s.dovecot.save(&b, "INBOX", &message(200));
    let [dove, _, ours, _] = s.compare();
    assert_eq!(ours, dove);
    let inbox: Vec<u32> = ours
        .iter()
        .filter(|r| r.mailbox == "INBOX")
        .map(|r| r.uid)
        .collect();
    assert_eq!(inbox, [1, 2, 3, 4, 6, 7], "both UID 5s became 6 and 7");
}

#[test]
fn rename_on_one_side_while_mail_arrives_on_the_other() {
    let Some(s) = Scenario::new() else { return };
    let (a, b) = (s.a(), s.b());
    s.dovecot.mailbox_rename(&a, "Work/Prøjekt", "Work/Project");
    s.dovecot.save(&b, "Work/Prøjekt", &message(300));
    let [dove, _, ours, _] = s.compare();
    assert_eq!(ours, dove);
    assert!(
        ours.iter().filter(|r| r.mailbox == "Work/Project").count() == 3,
        "{ours:?}"
    );
}

#[test]
fn folder_deleted_on_one_side() {
    let Some(s) = Scenario::new() else { return };
    s.dovecot.mailbox_delete(&s.a(), "Work/Prøjekt");
    let [dove, _, ours, _] = s.compare();
    assert_eq!(ours, dove);
    assert!(!ours.iter().any(|r| r.mailbox.starts_with("Work/")));
}

#[test]
fn conflicting_flag_changes() {
    let Some(s) = Scenario::new() else { return };
    let (a, b) = (s.a(), s.b());
    // Different flags on each side merge; a flag removed on one side and untouched on the other
    // goes; keywords likewise.
    s.dovecot.flags_add(&a, "INBOX", 3, "\\Seen");
    s.dovecot.flags_add(&b, "INBOX", 3, "\\Flagged Todo");
    s.dovecot.flags_remove(&b, "INBOX", 1, "$Important");
    s.dovecot.flags_add(&a, "INBOX", 4, "\\Answered");
    s.dovecot.flags_add(&b, "INBOX", 4, "\\Deleted");
    let [dove, _, ours, _] = s.compare();
    assert_eq!(ours, dove);
}

// Mixed peers over the dsync wire protocol: boxsync's brain against Dovecot's.

/// boxsync runs the sync; Dovecot's `doveadm dsync-server` is the far end.
fn boxsync_with_dovecot_server(dovecot: &Dovecot, local: &str, remote: &str, args: &[&str]) {
    let out = run_with_dovecot_server(dovecot, local, remote, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "boxsync {args:?} with doveadm dsync-server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_with_dovecot_server(
    dovecot: &Dovecot,
    local: &str,
    remote: &str,
    args: &[&str],
) -> std::process::Output {
    dovecot.prepare(remote);
    boxsync()
        .args([
            "-o",
            &format!("mail_location={local}"),
            "-o",
            "mail_fsync=never",
        ])
        .args(args)
        .arg("doveadm")
        .arg("-c")
        .arg(dovecot.conf())
        .args(["-o", &format!("mail_location={remote}"), "dsync-server"])
        .env("USER", "boxsync")
        .env("HOME", dovecot.base().join("home"))
        .output()
        .expect("run boxsync")
}

#[test]
fn boxsync_syncs_with_a_real_dovecot_dsync_server() {
    let Some((dovecot, _dir, a, b)) = populated_pair() else {
        return;
    };
    boxsync_with_dovecot_server(&dovecot, &a, &b, &["sync"]);
    assert_eq!(view(&dovecot, &a), view(&dovecot, &b));
    assert_eq!(mailbox_names(&dovecot, &a), mailbox_names(&dovecot, &b));

    // New mail on both sides under the same UID, and a flag change: the conflict is solved
    // the way both brains agree on, and the flag crosses.
    dovecot.save(&a, "INBOX", &message(100));
    dovecot.save(&b, "INBOX", &message(200));
    dovecot.flags_add(&b, "INBOX", 3, "\\Answered");
    boxsync_with_dovecot_server(&dovecot, &a, &b, &["sync"]);
    let (va, vb) = (view(&dovecot, &a), view(&dovecot, &b));
    assert_eq!(va, vb);
    let inbox: Vec<u32> = va
        .iter()
        .filter(|r| r.mailbox == "INBOX")
        .map(|r| r.uid)
        .collect();
    assert_eq!(inbox, [1, 2, 3, 4, 6, 7], "both UID 5s became 6 and 7");
}

#[test]
fn dovecot_syncs_with_boxsync_as_its_dsync_server() {
    let Some((dovecot, _dir, a, b)) = populated_pair() else {
        return;
    };
    dovecot.prepare(&b);
    let server = format!(
        "{} -o mail_location={b} -o mail_fsync=never dsync-server",
        env!("CARGO_BIN_EXE_boxsync")
    );
    // Both fresh INBOXes have their own GUIDs. Dovecot keeps the higher one, but lets a
    // create on its never-opened INBOX take ours: then the first run ends with exit 2
    // ("Remote lost mailbox") and the next one agrees, as between two Dovecots.
    let mut runs = Vec::new();
    for _ in 0..3 {
        let out = dovecot
            .doveadm(&a)
            .args(["sync", &server])
            .output()
            .expect("run doveadm");
        let code = out.status.code();
        runs.push(String::from_utf8_lossy(&out.stderr).into_owned());
        if code == Some(0) {
            break;
        }
        assert_eq!(
            code,
            Some(2),
            "doveadm sync with boxsync dsync-server: {runs:?}"
        );
    }
    assert!(runs.len() < 3, "no convergence: {runs:?}");
    dovecot.prepare(&b);
    assert_eq!(view(&dovecot, &a), view(&dovecot, &b));
    assert_eq!(mailbox_names(&dovecot, &a), mailbox_names(&dovecot, &b));
}

#[test]
fn backup_with_a_dovecot_peer_is_refused_quickly_and_clearly() {
    let Some((dovecot, _dir, a, b)) = populated_pair() else {
        return;
    };
    dovecot.prepare(&b);
    let started = std::time::Instant::now();
    let out = run_with_dovecot_server(&dovecot, &a, &b, &["backup", "-T", "20"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("not supported yet"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}
