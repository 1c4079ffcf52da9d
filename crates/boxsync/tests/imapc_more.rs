//! More IMAP-account cases against a real Dovecot imapd on loopback: the account as the local
//! side, special-use mailboxes under other names, a UIDVALIDITY change on the server, many
//! folders, and a rerun without changes that sends no FETCH at all.

mod common;
mod support;

use common::imapd::{Imapd, run_boxsync as run, with_port};
use common::{Dir, maildir, message};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{
    Content, Folder, Mail, assert_same_content, code, content_of, describe, ok, read_maildir,
    tree_bytes,
};

/// Runs once more when the first run says "changed during the sync" (exit 2).
fn ok_within_two(local: &str, account: &[String], args: &[&str], what: &str) {
    let out = run(local, account, args);
    if code(&out) == 2 {
        ok(&run(local, account, args), what);
    } else {
        ok(&out, what);
    }
}

/// The Maildir behind a user's account.
fn account_root(im: &Imapd, user: &str) -> PathBuf {
    im.user_maildir(user)
}

/// What an IMAP client sees in a user's account. Dovecot writes an empty mailbox's uidlist
/// only when the mailbox is first opened, so every mailbox is opened first.
fn account_content(im: &Imapd, user: &str) -> Content {
    im.dovecot().mailbox_status(&im.user_location(user));
    content_of(&account_root(im, user))
}

/// Fills a user's account: folders with non-ASCII names and hierarchy, flags, keywords,
/// subscriptions, an expunge.
fn populate(im: &Imapd, user: &str) {
    let dc = im.dovecot();
    let loc = im.user_location(user);
    let folders = ["Work", "Work/Prøjekt", "Archiv/2024", "日本語"];
    for f in folders {
        dc.mailbox_create(&loc, f);
        dc.mailbox_subscribe(&loc, f);
    }
    for n in 1..=6 {
        dc.save(&loc, "INBOX", &message(n));
    }
    for n in 7..=10 {
        dc.save(&loc, "Work/Prøjekt", &message(n));
    }
    for n in 11..=12 {
        dc.save(&loc, "日本語", &message(n));
    }
    dc.save(&loc, "Archiv/2024", &message(13));
    dc.flags_add(&loc, "INBOX", 1, "\\Seen");
    dc.flags_add(&loc, "INBOX", 2, "\\Seen \\Flagged $Important");
    dc.flags_add(&loc, "INBOX", 3, "\\Answered Work");
    dc.flags_add(&loc, "Work/Prøjekt", 2, "\\Draft $Label1");
    dc.expunge(&loc, "INBOX", 4);
}

fn imapc(dir: &Dir, name: &str) -> String {
    format!("imapc:{}", dir.join(name).display())
}

#[test]
fn the_account_as_the_local_side_backs_up_into_a_maildir() {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    populate(&im, "alice");
    let d = Dir::new();
    let dest = d.join("Dest");
    let alice = im.imapc_args("alice");
    let idx = imapc(&d, "idx");
    ok(&run(&idx, &alice, &["backup", &maildir(&dest)]), "backup");
    assert_same_content(
        &content_of(&dest),
        &account_content(&im, "alice"),
        "the Maildir after a backup of the account",
    );
    // The account's own UIDs and UIDVALIDITYs, as when it is the remote side.
    let server = read_maildir(&account_root(&im, "alice"));
    let local = read_maildir(&dest);
    for (name, mb) in &server.mailboxes {
        let mine = &local.mailboxes[name];
        assert_eq!(mb.uidvalidity, mine.uidvalidity, "UIDVALIDITY of {name}");
        assert_eq!(
            mb.messages.keys().collect::<Vec<_>>(),
            mine.messages.keys().collect::<Vec<_>>(),
            "UIDs of {name}"
        );
    }
    let dc = im.dovecot();
    let mut subs = dc.subscriptions(&im.user_location("alice"));
    subs.sort();
    let mut local_subs = dc.subscriptions(&maildir(&dest));
    local_subs.sort();
    assert_eq!(subs, local_subs, "subscriptions");

    // A rerun changes nothing on either side; a change on the server then arrives.
    let before = tree_bytes(&dest);
    let server_rows = dc.fetch(&im.user_location("alice"));
    ok(&run(&idx, &alice, &["backup", &maildir(&dest)]), "rerun");
    support::assert_same_tree(&before, &tree_bytes(&dest), "the Maildir after a rerun");
    assert_eq!(server_rows, dc.fetch(&im.user_location("alice")));
    let loc = im.user_location("alice");
    dc.save(&loc, "Work", &message(30));
    dc.flags_add(&loc, "INBOX", 5, "\\Flagged");
    dc.expunge(&loc, "INBOX", 6);
    ok_within_two(&idx, &alice, &["backup", &maildir(&dest)], "after changes");
    assert_same_content(
        &content_of(&dest),
        &account_content(&im, "alice"),
        "the Maildir after changes on the server",
    );
}

/// Makes the imapd's `\Sent` mailbox `Sent Items` instead of `Sent`: rewrites the test
/// server's configuration (a file of this test's own temporary directory) and reloads
/// Dovecot, then waits until a new IMAP session sees it.
fn sent_is_sent_items(im: &Imapd) {
    let conf = im.dovecot().conf();
    let text = std::fs::read_to_string(conf).unwrap();
    let old = "mailbox Sent {";
    assert!(text.contains(old), "the harness config changed: {text}");
    std::fs::write(conf, text.replace(old, "mailbox \"Sent Items\" {")).unwrap();
    let out = std::process::Command::new("doveadm")
        .arg("-c")
        .arg(conf)
        .arg("reload")
        .output()
        .expect("doveadm reload");
    assert!(out.status.success(), "doveadm reload: {}", describe(&out));
    let dc = im.dovecot();
    let loc = im.user_location(&im.users()[0]);
    dc.mailbox_create(&loc, "Sent Items");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = im.login(&im.users()[0]);
        let lines = conn.ok("LIST \"\" \"Sent*\" RETURN (SPECIAL-USE)");
        if lines
            .iter()
            .any(|l| l.contains("\\Sent") && l.contains("Sent Items"))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Dovecot did not pick up the new special-use mailbox: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_sent_mailbox_of_another_name_is_sent_locally_and_back() {
    // The account's \Sent mailbox is "Sent Items": it becomes the Maildir's "Sent" (as
    // Dovecot's imapc shows it), and a push into another account whose \Sent mailbox is
    // "Sent Items" fills that one, not a new "Sent".
    let Some(im) = Imapd::start_with(&["alice", "bob"]) else {
        return;
    };
    sent_is_sent_items(&im);
    let dc = im.dovecot();
    let (aloc, bloc) = (im.user_location("alice"), im.user_location("bob"));
    dc.mailbox_subscribe(&aloc, "Sent Items");
    for n in 1..=3 {
        dc.save(&aloc, "Sent Items", &message(n));
    }
    dc.flags_add(&aloc, "Sent Items", 2, "\\Seen");
    dc.save(&aloc, "INBOX", &message(4));
    dc.mailbox_create(&bloc, "Sent Items");

    let d = Dir::new();
    let local = d.join("Maildir");
    let alice = im.imapc_args("alice");
    let idx_a = imapc(&d, "idx-a");
    ok(
        &run(&maildir(&local), &alice, &["backup", "-R", &idx_a]),
        "migrate",
    );
    let mine = content_of(&local);
    assert_eq!(
        mine.keys().collect::<Vec<_>>(),
        vec!["INBOX", "Sent"],
        "the local mailboxes"
    );
    let server = account_content(&im, "alice");
    assert_eq!(mine["Sent"], server["Sent Items"], "the Sent mailbox");
    assert_eq!(mine["INBOX"], server["INBOX"]);
    assert_eq!(
        dc.subscriptions(&maildir(&local)),
        vec!["Sent".to_owned()],
        "the subscription follows the mailbox"
    );
    // A rerun neither renames nor creates anything on the server.
    let before = tree_bytes(&local);
    ok(
        &run(&maildir(&local), &alice, &["backup", "-R", &idx_a]),
        "rerun of the migration",
    );
    support::assert_same_tree(&before, &tree_bytes(&local), "the Maildir after a rerun");
    assert_eq!(
        dc.mailbox_list(&aloc),
        vec!["INBOX".to_owned(), "Sent Items".to_owned()]
    );

    // Pushed into bob's account, the Maildir's "Sent" lands in bob's "Sent Items".
    let bob = im.imapc_args("bob");
    let idx_b = imapc(&d, "idx-b");
    ok_within_two(&maildir(&local), &bob, &["backup", &idx_b], "push");
    assert_eq!(
        dc.mailbox_list(&bloc),
        vec!["INBOX".to_owned(), "Sent Items".to_owned()],
        "bob's mailboxes after the push"
    );
    let bobs = account_content(&im, "bob");
    assert_eq!(bobs["Sent Items"], mine["Sent"], "bob's Sent Items");
    assert_eq!(bobs["INBOX"], mine["INBOX"], "bob's INBOX");
    let rows = dc.fetch(&bloc);
    ok(
        &run(&maildir(&local), &bob, &["backup", &idx_b]),
        "rerun of the push",
    );
    assert_eq!(rows, dc.fetch(&bloc), "the rerun changed bob's account");
}

/// (inode, mtime in ns, size) of every file in `cur/` and `new/` of a Maildir, by path.
fn message_files(root: &Path) -> BTreeMap<PathBuf, (u64, i64, u64)> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    for e in std::fs::read_dir(root).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir() {
            dirs.push(e.path());
        }
    }
    for dir in dirs {
        for sub in ["cur", "new"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let m = e.metadata().unwrap();
                out.insert(
                    e.path(),
                    (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.len()),
                );
            }
        }
    }
    out
}

/// Makes Dovecot forget the UIDs of `folder` (an ASCII prefix of its name) in a user's Maildir: its `dovecot-uidlist` and
/// index files go, so the next access numbers the messages again under a new UIDVALIDITY.
fn renumber_on_the_server(im: &Imapd, user: &str, folder: &str) {
    let root = account_root(im, user);
    // `folder` is the start of the name; the directory holds it in modified UTF-7.
    let dir = if folder == "INBOX" {
        root.clone()
    } else {
        let start = format!(".{}", folder.replace('/', "."));
        std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&start))
            })
            .unwrap_or_else(|| panic!("no directory {start}* in {}", root.display()))
    };
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mailbox_file = name == "dovecot-uidlist" || name.starts_with("dovecot.index");
        // The mailbox list index caches every mailbox's UIDVALIDITY.
        if mailbox_file || name.starts_with("dovecot.list.index") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    if dir != root {
        for e in std::fs::read_dir(&root).unwrap().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("dovecot.list.index")
            {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

fn uidvalidity_of(im: &Imapd, user: &str, mailbox: &str) -> u32 {
    im.dovecot()
        .mailbox_status(&im.user_location(user))
        .into_iter()
        .find(|r| r.0 == mailbox)
        .unwrap_or_else(|| panic!("no mailbox {mailbox}"))
        .1
}

#[test]
fn a_uidvalidity_change_on_the_server_is_recovered_without_downloading_again() {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    populate(&im, "alice");
    let d = Dir::new();
    let local = d.join("Maildir");
    let alice = im.imapc_args("alice");
    let idx = imapc(&d, "idx");
    ok(
        &run(&maildir(&local), &alice, &["backup", "-R", &idx]),
        "migrate",
    );
    let files = message_files(&local);
    let content = content_of(&local);
    let uidlists: Vec<(String, u32, Vec<u32>)> = read_maildir(&local)
        .mailboxes
        .into_iter()
        .map(|(n, mb)| (n, mb.uidvalidity, mb.messages.into_keys().collect()))
        .collect();

    let old = uidvalidity_of(&im, "alice", "INBOX");
    let old_work = uidvalidity_of(&im, "alice", "Work/Prøjekt");
    renumber_on_the_server(&im, "alice", "INBOX");
    renumber_on_the_server(&im, "alice", "Work/Pr");
    im.dovecot().prepare(&im.user_location("alice"));
    let new = uidvalidity_of(&im, "alice", "INBOX");
    assert_ne!(old, new, "Dovecot kept INBOX's UIDVALIDITY");
    assert_ne!(
        old_work,
        uidvalidity_of(&im, "alice", "Work/Prøjekt"),
        "Dovecot kept Work/Prøjekt's UIDVALIDITY"
    );
    // Same messages and flags on the server, under new UIDs.
    assert_same_content(
        &content,
        &account_content(&im, "alice"),
        "the account after renumbering",
    );

    let out = run(&maildir(&local), &alice, &["backup", "-R", &idx]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{err}");
    if code(&out) == 2 {
        ok(
            &run(&maildir(&local), &alice, &["backup", "-R", &idx]),
            "second run after the UIDVALIDITY change",
        );
    } else {
        ok(&out, "after the UIDVALIDITY change");
    }
    // The store saw the change and matched every message (the warning is the evidence that
    // the path under test ran at all).
    for (mailbox, count) in [("INBOX", 5), ("Work/Prøjekt", 4)] {
        assert!(
            err.contains(&format!(
                "UIDVALIDITY of {mailbox} changed on the server; {count} messages matched \
                 by their headers, 0 no longer there"
            )),
            "{mailbox}: {err}"
        );
    }
    assert_same_content(
        &content_of(&local),
        &content,
        "the Maildir after the UIDVALIDITY change",
    );
    let after: Vec<(String, u32, Vec<u32>)> = read_maildir(&local)
        .mailboxes
        .into_iter()
        .map(|(n, mb)| (n, mb.uidvalidity, mb.messages.into_keys().collect()))
        .collect();
    assert_eq!(uidlists, after, "local UIDVALIDITYs or UIDs changed");
    let now = message_files(&local);
    let rewritten: Vec<_> = files
        .iter()
        .filter(|(p, meta)| now.get(*p) != Some(meta))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        rewritten.is_empty(),
        "message files were rewritten or renamed (downloaded again?): {rewritten:#?}"
    );
    assert_eq!(files.len(), now.len(), "message files were added");

    // New mail after the change still arrives, once.
    im.dovecot()
        .save(&im.user_location("alice"), "INBOX", &message(50));
    ok_within_two(
        &maildir(&local),
        &alice,
        &["backup", "-R", &idx],
        "new mail after the change",
    );
    assert_same_content(
        &content_of(&local),
        &account_content(&im, "alice"),
        "the Maildir after new mail",
    );
}

#[test]
fn thirty_folders_migrate_and_push_back_equal() {
    let Some(im) = Imapd::start_with(&["alice", "bob"]) else {
        return;
    };
    // Written straight into alice's Maildir, as Dovecot would have left it (120 doveadm
    // calls would take longer than the test may).
    let mut folders = Vec::new();
    let mut n = 0;
    for i in 0..30 {
        let name = match i % 3 {
            0 => format!("Folder{i:02}"),
            1 => format!("Projects/P{i:02}"),
            _ => format!("Archive/{}/Month{i:02}", 2000 + i),
        };
        let mut mails = Vec::new();
        for j in 0..(1 + i % 4) {
            n += 1;
            let flags = ["", "S", "FS", "RSa"][j % 4];
            mails.push(Mail::new(message(n), flags));
        }
        let mut f = Folder::new(&name, mails);
        f.uidvalidity = 1_600_000_000 + i as u32;
        folders.push(f);
    }
    folders.push(Folder::new("INBOX", vec![Mail::new(message(999), "S")]));
    let root = account_root(&im, "alice");
    support::write_maildir(&root, &folders);
    im.dovecot().prepare(&im.user_location("alice"));
    let account = account_content(&im, "alice");
    assert_eq!(account.len(), 31, "{:?}", account.keys());

    let d = Dir::new();
    let local = d.join("Maildir");
    let alice = im.imapc_args("alice");
    ok(
        &run(
            &maildir(&local),
            &alice,
            &["backup", "-R", &imapc(&d, "idx-a")],
        ),
        "migrate",
    );
    let mine = content_of(&local);
    assert_same_content(&mine, &account, "the Maildir after migrating 30 folders");

    let bob = im.imapc_args("bob");
    let idx_b = imapc(&d, "idx-b");
    ok_within_two(&maildir(&local), &bob, &["backup", &idx_b], "push");
    // Dovecot lists the parents ("Projects", "Archive/2001"...) that exist only as hierarchy;
    // as in the Maildir, they hold nothing.
    let bobs = account_content(&im, "bob");
    let bobs: Content = bobs
        .into_iter()
        .filter(|(name, msgs)| mine.contains_key(name) || !msgs.is_empty())
        .collect();
    assert_same_content(&mine, &bobs, "bob's account after the push");
    let rows = im.dovecot().fetch(&im.user_location("bob"));
    ok(&run(&maildir(&local), &bob, &["backup", &idx_b]), "rerun");
    assert_eq!(rows, im.dovecot().fetch(&im.user_location("bob")));
}

/// A tcp proxy in front of the imapd that records every line the client sends.
struct RecordingProxy {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl RecordingProxy {
    fn start(target: u16) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = lines.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    break;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let log = log.clone();
                std::thread::spawn(move || pump(c2, s2, Some(&log)));
                std::thread::spawn(move || pump(server, client, None));
            }
        });
        RecordingProxy { port, lines }
    }

    /// The lines recorded so far, forgetting them.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, log: Option<&Mutex<Vec<String>>>) {
    let mut buf = [0u8; 16384];
    let mut partial = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(log) = log {
            partial.extend_from_slice(&buf[..n]);
            while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// The command names of recorded client lines (tag dropped), e.g. "UID FETCH", "LIST".
fn commands(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            let mut words = l.split(' ').skip(1);
            let first = words.next()?.to_ascii_uppercase();
            Some(if first == "UID" {
                format!("UID {}", words.next().unwrap_or("").to_ascii_uppercase())
            } else {
                first
            })
        })
        .collect()
}

#[test]
fn a_rerun_without_changes_sends_no_fetch() {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    populate(&im, "alice");
    let proxy = RecordingProxy::start(im.port());
    let d = Dir::new();
    let local = d.join("Maildir");
    let alice = with_port(&im.imapc_args("alice"), proxy.port);
    let idx = imapc(&d, "idx");
    ok(
        &run(&maildir(&local), &alice, &["backup", "-R", &idx]),
        "migrate",
    );
    let first = proxy.take();
    assert!(
        commands(&first).iter().any(|c| c == "UID FETCH"),
        "the proxy saw no FETCH in the first run: {first:#?}"
    );
    assert!(
        !commands(&first).iter().any(|c| c == "COMPRESS"),
        "COMPRESS hides the commands from the proxy: {first:#?}"
    );

    ok(
        &run(&maildir(&local), &alice, &["backup", "-R", &idx]),
        "rerun",
    );
    let second = proxy.take();
    let cmds = commands(&second);
    assert!(
        cmds.iter().any(|c| c == "LIST"),
        "the proxy saw no LIST: {second:#?}"
    );
    let bad: Vec<&String> = second
        .iter()
        .zip(&cmds)
        .filter(|(_, c)| {
            matches!(
                c.as_str(),
                "UID FETCH" | "FETCH" | "SELECT" | "EXAMINE" | "STATUS"
            )
        })
        .map(|(l, _)| l)
        .collect();
    assert!(
        bad.is_empty(),
        "a rerun without changes selected or fetched: {bad:#?}\nall: {second:#?}"
    );

    // One flag changed in one mailbox: that mailbox alone is selected again, and no body
    // is fetched.
    let loc = im.user_location("alice");
    im.dovecot().flags_add(&loc, "Work/Prøjekt", 1, "\\Flagged");
    ok(
        &run(&maildir(&local), &alice, &["backup", "-R", &idx]),
        "after a flag change",
    );
    let third = proxy.take();
    let selects: Vec<&String> = third
        .iter()
        .zip(commands(&third))
        .filter(|(_, c)| c == "SELECT" || c == "EXAMINE")
        .map(|(l, _)| l)
        .collect();
    assert_eq!(selects.len(), 1, "{third:#?}");
    assert!(selects[0].contains("Work/Pr"), "{selects:?}");
    assert!(
        !third.iter().any(|l| l.contains("BODY.PEEK[]")),
        "a body was fetched for a flag change: {third:#?}"
    );
    assert_same_content(
        &content_of(&local),
        &account_content(&im, "alice"),
        "after the flag change",
    );
}

#[test]
fn an_expunge_together_with_a_uidvalidity_change_reaches_the_other_side() {
    // Two-way sync: a message expunged on the server while the server also renumbered the
    // mailbox is gone, not resurrected from the Maildir.
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    populate(&im, "alice");
    let d = Dir::new();
    let local = d.join("Maildir");
    let alice = im.imapc_args("alice");
    let idx = imapc(&d, "idx");
    ok_within_two(&maildir(&local), &alice, &["sync", &idx], "first sync");
    let loc = im.user_location("alice");
    im.dovecot().expunge(&loc, "INBOX", 5);
    renumber_on_the_server(&im, "alice", "INBOX");
    im.dovecot().prepare(&loc);
    let server = account_content(&im, "alice");
    assert!(!server["INBOX"].iter().any(|(_, b)| *b == message(5)));
    ok_within_two(
        &maildir(&local),
        &alice,
        &["sync", &idx],
        "sync after the change",
    );
    let after = account_content(&im, "alice");
    assert_same_content(&content_of(&local), &after, "after the sync");
    assert!(
        !after["INBOX"].iter().any(|(_, b)| *b == message(5)),
        "the expunged message came back to the server"
    );
}

#[test]
fn changed_mailboxes_are_read_over_imapc_max_connections_at_once() {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    populate(&im, "alice");
    let account = account_content(&im, "alice");
    assert!(account.len() >= 4, "{:?}", account.keys());
    let proxy = RecordingProxy::start(im.port());
    let logins = |lines: &[String]| commands(lines).iter().filter(|c| *c == "LOGIN").count();
    for (connections, expected) in [(1usize, 2usize), (3, 5)] {
        let d = Dir::new();
        let local = d.join("Maildir");
        let mut alice = with_port(&im.imapc_args("alice"), proxy.port);
        alice.extend(["-o".into(), format!("imapc_max_connections={connections}")]);
        ok(
            &run(
                &maildir(&local),
                &alice,
                &["backup", "-R", &imapc(&d, "idx")],
            ),
            "migrate",
        );
        let lines = proxy.take();
        // The main connection, the body fetcher, and with more than one connection allowed,
        // that many readers of the changed mailboxes.
        assert_eq!(
            logins(&lines),
            expected,
            "{connections} connections: {lines:#?}"
        );
        assert_same_content(&content_of(&local), &account, "migrated");
    }
}
