//! `--dry-run` from the command line: both trees untouched (bytes, mtimes, the set of paths,
//! boxsync's index included), a report of what would change, and that report's counts are
//! what the real run then does. Locally, with an IMAP account on a real Dovecot imapd on
//! either side (the account untouched, only read-only IMAP commands sent), and with a far
//! side over a command, tcp and a listener's `-S` (the far side's lines printed here); a far
//! side that cannot promise a dry run (Dovecot's dsync-server) stops the sync at the
//! handshakes with exit 64.

mod common;
mod support;

use common::imapd::{Imapd, with_port};
use common::{Dir, boxsync, dovecot_or_skip, maildir, message};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use support::{Folder, Mail, Rng, code, describe, ok, sized_message, write_maildir};

const BIN: &str = env!("CARGO_BIN_EXE_boxsync");

/// Every path under `root` with its bytes (files) and mtime.
fn snapshot(root: &std::path::Path) -> Vec<(String, Option<Vec<u8>>, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let bytes = meta.is_file().then(|| std::fs::read(e.path()).unwrap());
            out.push((rel, bytes, meta.modified().unwrap()));
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn store(root: &std::path::Path, first: usize, n: usize) {
    write_maildir(
        root,
        &[
            Folder::new(
                "INBOX",
                (first..first + n)
                    .map(|i| Mail::new(message(i), "S"))
                    .collect(),
            ),
            Folder::new("Work", vec![Mail::new(message(first + 100), "F")]),
        ],
    );
}

#[test]
fn dry_run_changes_nothing_and_reports_what_the_real_run_does() {
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    store(&src, 0, 5);
    ok(
        &boxsync()
            .args(["-o", &format!("mail_location={}", maildir(&src))])
            .args(["backup", &maildir(&dst)])
            .output()
            .unwrap(),
        "first backup",
    );
    // Changes on the source: two new messages in INBOX.
    support::deliver(&src, "INBOX", &message(51), "");
    support::deliver(&src, "INBOX", &message(52), "S");
    let before = (snapshot(&src), snapshot(&dst));
    let run = |extra: &[&str]| {
        boxsync()
            .args(["-o", &format!("mail_location={}", maildir(&src))])
            .args(extra)
            .args(["backup", &maildir(&dst)])
            .output()
            .unwrap()
    };
    let dry = boxsync()
        .args(["-o", &format!("mail_location={}", maildir(&src)), "-v"])
        .args(["backup", "--dry-run", &maildir(&dst)])
        .output()
        .unwrap();
    ok(&dry, "backup --dry-run");
    assert_eq!(
        (snapshot(&src), snapshot(&dst)),
        before,
        "a dry run touched a file"
    );
    let report = String::from_utf8_lossy(&dry.stdout);
    assert!(
        report.contains("would save 2 messages") && report.contains("into INBOX"),
        "{}",
        describe(&dry)
    );
    // The same counts as the real run.
    let real = run(&["-v"]);
    ok(&real, "the real backup");
    assert_same_counts(&dry, &real);
    assert!(
        summary(&real).starts_with("2 messages copied"),
        "{}",
        describe(&real)
    );
}

#[test]
fn dry_run_refuses_what_it_cannot_promise() {
    let d = Dir::new();
    store(&d.join("src"), 0, 1);
    let loc = format!("mail_location={}", maildir(&d.join("src")));
    let dbox = format!("sdbox:{}", d.join("dbox").display());
    for args in [
        vec!["backup", "--dry-run", "-s", "", "maildir:/tmp/x"],
        // A dbox is read only: as the destination the real run would refuse it too.
        vec!["backup", "--dry-run", &dbox],
    ] {
        let out = boxsync().args(["-o", &loc]).args(&args).output().unwrap();
        assert_eq!(code(&out), 64, "{args:?}: {}", describe(&out));
    }
    // A missing source is the real run's error, not an empty store whose mirror would delete
    // everything.
    let missing = format!("mail_location={}", maildir(&d.join("missing")));
    let dst = d.join("dst");
    write_maildir(
        &dst,
        &[Folder::new("INBOX", vec![Mail::new(message(1), "")])],
    );
    let out = boxsync()
        .args(["-o", &missing])
        .args(["backup", "--dry-run", &maildir(&dst)])
        .output()
        .unwrap();
    assert_eq!(code(&out), 68, "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("would"),
        "{}",
        describe(&out)
    );
}

/// The counts of the `-v` summary line: `N messages copied (SIZE), N expunged, N re-flagged`.
fn summary(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.contains("messages copied"))
        .map(|l| l.split(", ").skip(1).take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// The dry run's report counts what the real run then did.
fn assert_same_counts(dry: &Output, real: &Output) {
    assert_eq!(
        summary(dry),
        summary(real),
        "{}\n{}",
        describe(dry),
        describe(real)
    );
}

/// The `dry run: STORE: LINE` lines about the store whose description starts with `store`.
fn report_of(out: &Output, store: &str) -> Vec<String> {
    let prefix = format!("dry run: {store}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (_, line) = rest.split_once(" (dry run): ").unwrap_or(("", rest));
            line.to_owned()
        })
        .collect()
}

/// Asserts that `out` reports a line containing every part of `parts` about `store`.
fn assert_reports(out: &Output, store: &str, parts: &[&str]) {
    let lines = report_of(out, store);
    assert!(
        lines.iter().any(|l| parts.iter().all(|p| l.contains(p))),
        "no line with {parts:?} about {store}:\n{}",
        describe(out)
    );
}

/// Renames the first message file of `dir`'s `cur/` whose flags are `from` to flags `to`:
/// what a mail client's flag change does to a Maildir.
fn reflag(dir: &Path, from: &str, to: &str) {
    let suffix = format!(":2,{from}");
    let file = std::fs::read_dir(dir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(&suffix))
        .min()
        .unwrap_or_else(|| panic!("no message with flags {from:?} in {}", dir.display()));
    let name = file.to_string_lossy();
    let renamed = format!("{}:2,{to}", &name[..name.len() - suffix.len()]);
    std::fs::rename(&file, renamed).unwrap();
}

/// Removes the first message file of `dir`'s `cur/` whose flags are `flags`: an expunge by
/// another program.
fn remove_one(dir: &Path, flags: &str) {
    let suffix = format!(":2,{flags}");
    let file = std::fs::read_dir(dir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(&suffix))
        .min()
        .unwrap_or_else(|| panic!("no message with flags {flags:?} in {}", dir.display()));
    std::fs::remove_file(file).unwrap();
}

/// A message larger than what a link keeps in memory, so that receiving it over a wire
/// spools it to a file (which a dry run must not put into its store).
fn big_message(n: usize) -> Vec<u8> {
    sized_message(n, 100 * 1024, &mut Rng::new(n as u64))
}

// IMAP accounts on a real Dovecot imapd.

/// What an IMAP client sees of an account: every message (mailbox, UID, GUID, flags), every
/// mailbox's UIDVALIDITY, UIDNEXT and count (an APPEND undone by an EXPUNGE still moves
/// UIDNEXT), and the subscriptions.
type AccountView = (
    Vec<common::FetchRow>,
    Vec<(String, u32, u32, u32)>,
    Vec<String>,
);

fn account_view(im: &Imapd, user: &str) -> AccountView {
    let dc = im.dovecot();
    let loc = im.user_location(user);
    (
        dc.fetch(&loc),
        dc.mailbox_status(&loc),
        dc.subscriptions(&loc),
    )
}

/// A proxy in front of the imapd that records every command line boxsync sends.
struct RecordingProxy {
    port: u16,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    fn start(target: u16) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    break;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        RecordingProxy { port, sent }
    }

    /// The commands sent so far (`UID FETCH` as `UID FETCH`), in order.
    fn commands(&self) -> Vec<String> {
        let sent = self.sent.lock().unwrap();
        String::from_utf8_lossy(&sent)
            .split("\r\n")
            .filter_map(|line| {
                let mut words = line.split(' ');
                let tag = words.next()?;
                let command = words.next()?.to_ascii_uppercase();
                // Continuation data (a base64 SASL answer, a literal) is not a command.
                if tag.is_empty()
                    || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
                    || !command.bytes().all(|b| b.is_ascii_alphabetic())
                {
                    return None;
                }
                Some(match command.as_str() {
                    "UID" => format!("UID {}", words.next()?.to_ascii_uppercase()),
                    _ => command,
                })
            })
            .collect()
    }

    /// Asserts that only commands that change nothing on the server were sent, and some.
    fn assert_read_only(&self) {
        const READ_ONLY: &[&str] = &[
            "CAPABILITY",
            "LOGIN",
            "AUTHENTICATE",
            "STARTTLS",
            "ID",
            "ENABLE",
            "NAMESPACE",
            "LIST",
            "LSUB",
            "STATUS",
            "EXAMINE",
            "FETCH",
            "UID FETCH",
            "UID SEARCH",
            "SEARCH",
            "NOOP",
            "LOGOUT",
        ];
        let commands = self.commands();
        assert!(commands.iter().any(|c| c == "LIST"), "{commands:?}");
        let writes: Vec<&String> = commands
            .iter()
            .filter(|c| !READ_ONLY.contains(&c.as_str()))
            .collect();
        assert!(
            writes.is_empty(),
            "commands that may change the account: {writes:?}"
        );
    }
}

#[test]
fn dry_run_backup_into_an_imap_account_reads_it_and_changes_nothing() {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    let d = Dir::new();
    let src = d.join("src");
    store(&src, 0, 5);
    let idx = d.join("idx");
    let account = format!("imapc:{}", idx.display());
    let alice = im.imapc_args("alice");
    let run = |args: &[String], extra: &[&str]| {
        boxsync()
            .args(["-o", &format!("mail_location={}", maildir(&src))])
            .args(args)
            .args(extra)
            .arg(&account)
            .output()
            .unwrap()
    };
    ok(&run(&alice, &["backup"]), "first backup into the account");
    // Changes on the source: new mail (one large), a flag change, an expunge, a new folder;
    // and a message only the account has, which a backup removes.
    support::deliver(&src, "INBOX", &message(51), "");
    support::deliver(&src, "INBOX", &big_message(52), "S");
    reflag(&src, "S", "FS");
    remove_one(&src, "S");
    write_maildir(
        &src,
        &[Folder::new("Archive", vec![Mail::new(message(60), "")])],
    );
    im.dovecot()
        .save(&im.user_location("alice"), "Work", &message(70));

    let before = (account_view(&im, "alice"), snapshot(&src), snapshot(&idx));
    let proxy = RecordingProxy::start(im.port());
    let dry = run(
        &with_port(&alice, proxy.port),
        &["-v", "backup", "--dry-run"],
    );
    ok(&dry, "backup --dry-run into the account");
    assert_eq!(
        (account_view(&im, "alice"), snapshot(&src), snapshot(&idx)),
        before,
        "the dry run changed the account, the source or boxsync's index of the account"
    );
    proxy.assert_read_only();
    let imap = "imapc:alice@";
    assert_reports(&dry, imap, &["would create mailbox Archive"]);
    assert_reports(&dry, imap, &["would save 1 message", "into Archive"]);
    assert_reports(&dry, imap, &["would save 2 messages", "into INBOX"]);
    assert_reports(&dry, imap, &["would change flags of 1 message in INBOX"]);
    assert_reports(&dry, imap, &["would expunge 1 message from INBOX"]);
    assert_reports(&dry, imap, &["would expunge 1 message from Work"]);
    assert_eq!(
        report_of(&dry, &maildir(&src)),
        ["nothing would change"],
        "{}",
        describe(&dry)
    );

    // The real run does what the dry run said, and the account changes (so the comparison
    // above would have seen a change).
    let real = run(&alice, &["-v", "backup"]);
    ok(&real, "the real backup");
    assert_same_counts(&dry, &real);
    // (Over the wire the master counts its own expunges only, and the account is the slave.)
    assert!(
        summary(&real).starts_with("3 messages copied")
            && (common::wire_mode() || summary(&real).contains("2 expunged")),
        "{}",
        describe(&real)
    );
    assert_ne!(account_view(&im, "alice"), before.0);
    // Afterwards there is nothing left to do, and the dry run says so.
    let again = run(&alice, &["backup", "--dry-run"]);
    ok(&again, "a dry run after the backup");
    assert_eq!(
        report_of(&again, imap),
        ["nothing would change"],
        "{}",
        describe(&again)
    );
}

#[test]
fn dry_run_of_an_imap_account_into_a_maildir_changes_neither() {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    let dc = im.dovecot();
    let loc = im.user_location("alice");
    for n in 1..=3 {
        dc.save(&loc, "INBOX", &message(n));
    }
    dc.mailbox_create(&loc, "Work");
    dc.mailbox_subscribe(&loc, "Work");
    dc.save(&loc, "Work", &message(10));
    dc.flags_add(&loc, "INBOX", 1, "\\Seen");
    let d = Dir::new();
    let (local, idx) = (d.join("Maildir"), d.join("idx"));
    let account = format!("imapc:{}", idx.display());
    let alice = im.imapc_args("alice");
    let run = |args: &[String], extra: &[&str]| {
        boxsync()
            .args(["-o", &format!("mail_location={}", maildir(&local))])
            .args(args)
            .args(extra)
            .arg(&account)
            .output()
            .unwrap()
    };

    // Before the first migration: neither the Maildir nor boxsync's index appears.
    let proxy = RecordingProxy::start(im.port());
    let account_before = account_view(&im, "alice");
    let dry = run(
        &with_port(&alice, proxy.port),
        &["-v", "backup", "-R", "--dry-run"],
    );
    ok(&dry, "a dry run of the migration");
    assert!(!local.exists(), "the dry run created the Maildir");
    assert!(
        !idx.exists(),
        "the dry run created boxsync's index of the account"
    );
    assert_eq!(account_view(&im, "alice"), account_before);
    proxy.assert_read_only();
    let mine = maildir(&local);
    assert_reports(&dry, &mine, &["would create mailbox Work"]);
    assert_reports(&dry, &mine, &["would subscribe to Work"]);
    assert_reports(&dry, &mine, &["would save 3 messages", "into INBOX"]);
    assert_eq!(
        report_of(&dry, "imapc:alice@"),
        ["nothing would change"],
        "{}",
        describe(&dry)
    );
    let real = run(&alice, &["-v", "backup", "-R"]);
    ok(&real, "the migration");
    assert_same_counts(&dry, &real);
    assert!(
        summary(&real).starts_with("4 messages copied"),
        "{}",
        describe(&real)
    );

    // Changes on the server: new mail (one large), a flag change, an expunge.
    dc.save(&loc, "INBOX", &big_message(20));
    dc.flags_add(&loc, "INBOX", 2, "\\Flagged");
    dc.expunge(&loc, "INBOX", 3);
    let before = (snapshot(&local), snapshot(&idx), account_view(&im, "alice"));
    let proxy = RecordingProxy::start(im.port());
    let dry = run(
        &with_port(&alice, proxy.port),
        &["-v", "backup", "-R", "--dry-run"],
    );
    ok(&dry, "a dry run of the update");
    assert_eq!(
        (snapshot(&local), snapshot(&idx), account_view(&im, "alice")),
        before,
        "the dry run changed the Maildir, boxsync's index of the account, or the account"
    );
    proxy.assert_read_only();
    assert_reports(&dry, &mine, &["would save 1 message", "into INBOX"]);
    assert_reports(&dry, &mine, &["would change flags of 1 message in INBOX"]);
    assert_reports(&dry, &mine, &["would expunge 1 message from INBOX"]);
    let real = run(&alice, &["-v", "backup", "-R"]);
    ok(&real, "the update");
    assert_same_counts(&dry, &real);
    assert!(
        summary(&real).starts_with("1 messages copied")
            && summary(&real).contains("1 expunged")
            && summary(&real).contains("1 re-flagged"),
        "{}",
        describe(&real)
    );
    assert_ne!(
        snapshot(&local),
        before.0,
        "the real run changes the Maildir"
    );
}

// A far side over a command, tcp, and a listener's -S.

/// A source with mail in two folders, backed up for real into `far` by a dsync-server
/// command; then changed (new mail, one large, a flag change, an expunge) and given a
/// message of the far side's own, which a backup removes.
fn changed_pair(src: &Path, far: &Path) {
    store(src, 0, 5);
    ok(
        &boxsync()
            .args(["-o", &format!("mail_location={}", maildir(src))])
            .args(["backup", &server_cmd(far)])
            .output()
            .unwrap(),
        "first backup",
    );
    support::deliver(src, "INBOX", &message(51), "");
    support::deliver(src, "INBOX", &big_message(52), "S");
    reflag(src, "S", "FS");
    remove_one(src, "S");
    support::deliver(far, "Work", &message(80), "");
}

/// The report a backup of [`changed_pair`] gives about the far side.
fn assert_far_report(out: &Output, far: &Path) {
    let store = maildir(far);
    assert_reports(out, &store, &["would save 2 messages", "into INBOX"]);
    assert_reports(out, &store, &["would change flags of 1 message in INBOX"]);
    assert_reports(out, &store, &["would expunge 1 message from INBOX"]);
    assert_reports(out, &store, &["would expunge 1 message from Work"]);
}

fn server_cmd(root: &Path) -> String {
    format!(
        "{BIN} -o mail_location={} -o mail_fsync=never dsync-server",
        maildir(root)
    )
}

#[test]
fn dry_run_over_a_command_changes_neither_side_and_prints_the_far_sides_lines() {
    let d = Dir::new();
    let (src, far) = (d.join("src"), d.join("far"));
    changed_pair(&src, &far);
    let before = (snapshot(&src), snapshot(&far));
    let run = |extra: &[&str]| {
        boxsync()
            .args(["-o", &format!("mail_location={}", maildir(&src))])
            .args(["-v", "backup"])
            .args(extra)
            .arg(server_cmd(&far))
            .output()
            .unwrap()
    };
    let dry = run(&["--dry-run"]);
    ok(&dry, "backup --dry-run over a command");
    assert_eq!(
        (snapshot(&src), snapshot(&far)),
        before,
        "a dry run over a command touched a file"
    );
    assert_far_report(&dry, &far);
    assert_eq!(report_of(&dry, &maildir(&src)), ["nothing would change"]);
    let real = run(&[]);
    ok(&real, "the real backup over a command");
    assert_same_counts(&dry, &real);
    support::assert_same_store(&support::read_maildir(&src), &support::read_maildir(&far));
    // A second dry run finds nothing to do on either side.
    let again = run(&["--dry-run"]);
    ok(&again, "a dry run after the backup");
    assert_eq!(report_of(&again, &maildir(&far)), ["nothing would change"]);
}

#[test]
fn dry_run_reversed_over_a_command_reads_the_far_side_as_the_source() {
    let d = Dir::new();
    let (src, far) = (d.join("src"), d.join("far"));
    changed_pair(&src, &far);
    let before = (snapshot(&src), snapshot(&far));
    // -R: the far side is the source; this side would take its changes.
    let dry = boxsync()
        .args(["-o", &format!("mail_location={}", maildir(&src))])
        .args(["backup", "-R", "--dry-run"])
        .arg(server_cmd(&far))
        .output()
        .unwrap();
    ok(&dry, "backup -R --dry-run over a command");
    assert_eq!((snapshot(&src), snapshot(&far)), before);
    assert_reports(&dry, &maildir(&src), &["would save 1 message", "into Work"]);
    assert_eq!(report_of(&dry, &maildir(&far)), ["nothing would change"]);
}

/// A running `server --listen` for the users under `users`, killed on drop.
struct Listener {
    child: Child,
    port: u16,
}

impl Listener {
    fn start(users: &Path) -> Listener {
        Listener::start_at(users, "127.0.0.1:0")
    }

    fn start_at(users: &Path, listen: &str) -> Listener {
        let mut child = boxsync()
            .arg("-o")
            .arg(format!("mail_location=maildir:{}/%u", users.display()))
            .args(["-o", "mail_fsync=never", "-o", "doveadm_password=sekrit"])
            .args(["server", "--listen", listen])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the listener");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("the listener exited before listening")
                .unwrap();
            if let Some(addr) = line.split("listening on ").nth(1) {
                let addr = addr.split_whitespace().next().unwrap();
                break addr.rsplit(':').next().unwrap().parse().unwrap_or(0);
            }
        };
        // Keep reading its log, so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Listener { child, port }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dry_run_over_tcp_to_a_listener_changes_neither_side() {
    let d = Dir::new();
    let (src, users) = (d.join("src"), d.join("users"));
    let far = users.join("alice");
    changed_pair(&src, &far);
    let listener = Listener::start(&users);
    let dest = format!("tcp:127.0.0.1:{}", listener.port);
    let run = |user: &str, extra: &[&str]| {
        boxsync()
            .args(["-o", &format!("mail_location={}", maildir(&src))])
            .args(["-o", "doveadm_password=sekrit", "-v", "backup", "-u", user])
            .args(extra)
            .arg(&dest)
            .output()
            .unwrap()
    };
    let before = (snapshot(&src), snapshot(&users));
    let dry = run("alice", &["--dry-run"]);
    ok(&dry, "backup --dry-run over tcp");
    assert_eq!(
        (snapshot(&src), snapshot(&users)),
        before,
        "a dry run over tcp touched a file"
    );
    assert_far_report(&dry, &far);
    // A user the listener has no store for yet: nothing is created for it either.
    let dry_bob = run("bob", &["--dry-run"]);
    ok(&dry_bob, "backup --dry-run over tcp into a new store");
    assert!(!users.join("bob").exists(), "{}", describe(&dry_bob));
    assert_reports(
        &dry_bob,
        &maildir(&users.join("bob")),
        &["would create mailbox Work"],
    );
    assert_reports(
        &dry_bob,
        &maildir(&users.join("bob")),
        &["would save 6 messages", "into INBOX"],
    );

    let real = run("alice", &[]);
    ok(&real, "the real backup over tcp");
    assert_same_counts(&dry, &real);
    support::assert_same_store(&support::read_maildir(&src), &support::read_maildir(&far));
}

#[test]
fn dry_run_through_a_listener_with_dash_capital_s_stays_a_dry_run() {
    let d = Dir::new();
    let (users, replicas) = (d.join("users"), d.join("replicas"));
    let (src, far) = (users.join("alice"), replicas.join("alice"));
    changed_pair(&src, &far);
    let socket = d.join("boxsync.sock");
    let _server = Listener::start_at(&users, socket.to_str().unwrap());
    let replica = Listener::start(&replicas);
    let before = (snapshot(&users), snapshot(&replicas));
    // The client has no store: the listener syncs alice's store with the replica, and its
    // report (both stores') comes back on stdout.
    let out = boxsync()
        .args(["-o", "doveadm_password=sekrit", "backup", "--dry-run"])
        .args(["-S", socket.to_str().unwrap(), "-u", "alice"])
        .arg(format!("tcp:127.0.0.1:{}", replica.port))
        .output()
        .unwrap();
    ok(&out, "backup --dry-run -S");
    assert_eq!(
        (snapshot(&users), snapshot(&replicas)),
        before,
        "a dry run through a listener touched a file"
    );
    assert_far_report(&out, &far);
    assert_eq!(report_of(&out, &maildir(&src)), ["nothing would change"]);
}

#[test]
fn a_far_side_that_does_not_confirm_the_dry_run_is_refused_before_the_sync() {
    let d = Dir::new();
    let src = d.join("src");
    store(&src, 0, 2);
    // A far end that greets and answers the handshake as Dovecot's dsync-server does (no
    // x_dry_run); the master's raw log (-r) records what it sends.
    let greeting = d.join("greeting");
    let mut script = b"VERSION\tdsync\t3\t5\n".to_vec();
    for line in [
        "Hhostname\tsync_ns_prefix\tsync_box\tsync_box_guid\tsync_type\tdebug\tsync_visible_namespaces\texclude_mailboxes\tsend_mail_requests\tbackup_send\tbackup_recv\tlock_timeout\tno_mail_sync\tno_backup_overwrite\tpurge_remote\tno_notify\tsync_since_timestamp\tsync_max_size\tsync_flags\tsync_until_timestamp\tvirtual_all_box\tempty_hdr_workaround\timport_commit_msgs_interval\thashed_headers\talt_char",
        "Smailbox_guid\tlast_uidvalidity\tlast_common_uid\tlast_common_modseq\tlast_common_pvt_modseq\tlast_messages_count\tchanges_during_sync",
        "Nname\texistence\tmailbox_guid\tuid_validity\tuid_next\tlast_renamed_or_created\tsubscribed\tlast_subscription_change",
        "Dhierarchy_sep\tescape_char\tmailboxes\tdirs\tunsubscribes",
        "Bmailbox_guid\tuid_validity\tuid_next\tmessages_count\tfirst_recent_uid\thighest_modseq\thighest_pvt_modseq\tmailbox_lost\tmailbox_ignore\tcache_fields\thave_guids\thave_save_guids\thave_only_guid128",
        "Atype\tkey\tvalue\tstream\tdeleted\tlast_change\tmodseq",
        "Ctype\tuid\tguid\thdr_hash\tmodseq\tpvt_modseq\tadd_flags\tremove_flags\tfinal_flags\tkeywords_reset\tkeyword_changes\treceived_timestamp\tvirtual_size",
        "Rguid\tuid",
        "Mguid\tuid\tpop3_uidl\tpop3_order\treceived_date\tsaved_date\tstream",
        "Ferror\tmail_error\trequire_full_resync",
        "cname\tdecision\tlast_used",
        ".",
        "Hdovecot",
    ] {
        script.extend_from_slice(line.as_bytes());
        script.push(b'\n');
    }
    std::fs::write(&greeting, &script).unwrap();
    let rawlog = d.join("rawlog");
    let before = snapshot(&src);
    let out = boxsync()
        .args(["-o", &format!("mail_location={}", maildir(&src))])
        .args([
            "backup",
            "--dry-run",
            "-T",
            "10",
            "-r",
            rawlog.to_str().unwrap(),
        ])
        .args(["sh", "-c", "cat \"$0\"; cat >/dev/null"])
        .args([greeting.to_str().unwrap(), "dsync-server"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 64, "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("did not confirm a dry run"),
        "{}",
        describe(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("would"),
        "{}",
        describe(&out)
    );
    assert_eq!(snapshot(&src), before);
    // The master asked (x_dry_run is the last key of our handshake) and then said only
    // that it stops: no mailbox tree, so a slave has nothing to change.
    let log = std::fs::read(&rawlog).unwrap();
    let sent: Vec<&[u8]> = log
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let at = l.windows(4).position(|w| w == b" O: ")?;
            Some(&l[at + 4..])
        })
        .skip_while(|l| *l != b".")
        .skip(1)
        .collect();
    let letters: Vec<u8> = sent.iter().filter_map(|l| l.first().copied()).collect();
    assert_eq!(letters, b"HF", "{}", log.escape_ascii());
    assert!(sent[0].ends_with(b"\t"), "{}", sent[0].escape_ascii());
}

#[test]
fn dry_run_against_dovecots_dsync_server_stops_and_changes_nothing() {
    let Some(dovecot) = dovecot_or_skip() else {
        return;
    };
    let d = Dir::new();
    let src = d.join("src");
    store(&src, 0, 3);
    let far = maildir(&d.join("far"));
    let view = |loc: &str| (dovecot.fetch(loc), dovecot.mailbox_status(loc));
    let run = |extra: &[&str]| {
        dovecot.prepare(&far);
        boxsync()
            .args(["-o", &format!("mail_location={}", maildir(&src))])
            // Two-way: boxsync does not run a backup against Dovecot's dsync-server yet.
            .args(["-o", "mail_fsync=never", "sync"])
            .args(extra)
            .arg("doveadm")
            .arg("-c")
            .arg(dovecot.conf())
            .args(["-o", &format!("mail_location={far}"), "dsync-server"])
            .env("USER", "boxsync")
            .env("HOME", dovecot.base().join("home"))
            .output()
            .unwrap()
    };
    // The two stores agree first; then each changes.
    ok(&run(&[]), "the first sync with Dovecot's dsync-server");
    support::deliver(&src, "INBOX", &message(90), "");
    dovecot.save(&far, "INBOX", &message(91));
    let before = (view(&far), snapshot(&src));
    let out = run(&["--dry-run"]);
    assert_eq!(code(&out), 64, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not confirm a dry run"),
        "{}",
        describe(&out)
    );
    assert_eq!((view(&far), snapshot(&src)), before, "{}", describe(&out));
    // The real sync does change both: the comparison above would have seen it.
    ok(&run(&[]), "the real sync with Dovecot's dsync-server");
    assert_ne!((view(&far), snapshot(&src)), before);
}
