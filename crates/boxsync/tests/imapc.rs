//! IMAP accounts as stores, against a real Dovecot imapd on loopback: migrating an account
//! into a Maildir, pushing a Maildir into an account, two-way sync, TLS and STARTTLS, wrong
//! passwords, and connections cut in the middle of a FETCH or an APPEND.

mod common;
mod support;

use common::imapd::{Imapd, run_boxsync as run, with_port};
use common::{Dir, boxsync, maildir, message};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use support::{
    Content, Rng, assert_same_content, code, content_of, describe, ok, read_maildir, sized_message,
    tree_bytes,
};

/// The Maildir behind a user's account.
fn account_root(im: &Imapd, user: &str) -> std::path::PathBuf {
    let loc = im.user_location(user);
    let path = loc
        .strip_prefix("maildir:")
        .expect("maildir location")
        .split(':')
        .next()
        .unwrap();
    std::path::PathBuf::from(path)
}

/// What an IMAP client sees in a user's account. Dovecot writes an empty mailbox's uidlist
/// only when the mailbox is first opened, so every mailbox is opened first.
fn account_content(im: &Imapd, user: &str) -> Content {
    im.dovecot().mailbox_status(&im.user_location(user));
    content_of(&account_root(im, user))
}

/// Fills alice's account: folders with non-ASCII names and hierarchy, flags, keywords,
/// subscriptions, and one 20 MB message.
fn populate(im: &Imapd, user: &str, big: bool) {
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
    if big {
        let mut rng = Rng::new(20);
        dc.mailbox_create(&loc, "Big");
        dc.save(&loc, "Big", &sized_message(900, 20 << 20, &mut rng));
    }
}

#[test]
fn migrate_push_and_rerun_change_nothing() {
    let Some(im) = Imapd::start_with(&["alice", "bob"]) else {
        return;
    };
    populate(&im, "alice", true);
    let d = Dir::new();
    let local = d.join("Maildir");
    let loc = maildir(&local);
    let alice = im.imapc_args("alice");

    // Migrate: the account becomes a Maildir with the server's UIDs and UIDVALIDITY.
    let idx_a = format!("imapc:{}", d.join("idx-alice").display());
    let out = run(&loc, &alice, &["backup", "-R", &idx_a]);
    ok(&out, "migrate");
    let server_view = read_maildir(&account_root(&im, "alice"));
    let local_view = read_maildir(&local);
    assert_eq!(
        server_view.mailboxes.keys().collect::<Vec<_>>(),
        local_view.mailboxes.keys().collect::<Vec<_>>()
    );
    for (name, mb) in &server_view.mailboxes {
        let mine = &local_view.mailboxes[name];
        assert_eq!(mb.uidvalidity, mine.uidvalidity, "UIDVALIDITY of {name}");
        assert_eq!(
            mb.messages.keys().collect::<Vec<_>>(),
            mine.messages.keys().collect::<Vec<_>>(),
            "UIDs of {name}"
        );
        for (uid, m) in &mb.messages {
            assert_eq!(m.flags, mine.messages[uid].flags, "flags of {name} {uid}");
            assert!(m.body == mine.messages[uid].body, "body of {name} {uid}");
        }
    }
    let dc = im.dovecot();
    let mut subs = dc.subscriptions(&im.user_location("alice"));
    subs.sort();
    let mut local_subs = dc.subscriptions(&loc);
    local_subs.sort();
    assert_eq!(subs, local_subs, "subscriptions");

    // A rerun changes nothing on either side.
    let before_local = tree_bytes(&local);
    let before_server = dc.fetch(&im.user_location("alice"));
    let out = run(&loc, &alice, &["backup", "-R", &idx_a]);
    ok(&out, "rerun of the migration");
    support::assert_same_tree(&before_local, &tree_bytes(&local), "local Maildir");
    assert_eq!(before_server, dc.fetch(&im.user_location("alice")));

    // Push the Maildir into bob's empty account.
    let bob = im.imapc_args("bob");
    let idx_b = format!("imapc:{}", d.join("idx-bob").display());
    let out = run(&loc, &bob, &["backup", &idx_b]);
    ok(&out, "push");
    assert_same_content(
        &content_of(&local),
        &account_content(&im, "bob"),
        "bob's account after the push",
    );
    let bob_rows = dc.fetch(&im.user_location("bob"));
    let out = run(&loc, &bob, &["backup", &idx_b]);
    ok(&out, "rerun of the push");
    assert_eq!(
        bob_rows,
        dc.fetch(&im.user_location("bob")),
        "rerun changed bob"
    );
}

#[test]
fn two_way_sync_carries_changes_both_ways() {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    populate(&im, "alice", false);
    let d = Dir::new();
    let local = d.join("Maildir");
    let loc = maildir(&local);
    let alice = im.imapc_args("alice");
    let idx = format!("imapc:{}", d.join("idx").display());
    ok(&run(&loc, &alice, &["sync", &idx]), "first sync");
    assert_same_content(
        &content_of(&local),
        &account_content(&im, "alice"),
        "after the first sync",
    );

    // Server side: new mail, a flag, an expunge. Local side: new mail and a keyword.
    let dc = im.dovecot();
    let server_loc = im.user_location("alice");
    dc.save(&server_loc, "INBOX", &message(40));
    dc.flags_add(&server_loc, "Work/Prøjekt", 1, "\\Flagged");
    dc.expunge(&server_loc, "INBOX", 5);
    dc.save(&loc, "Work", &message(41));
    dc.flags_add(&loc, "INBOX", 6, "$Local");
    let out = run(&loc, &alice, &["sync", &idx]);
    assert!(matches!(code(&out), 0 | 2), "{}", describe(&out));
    let out = run(&loc, &alice, &["sync", &idx]);
    ok(&out, "second sync");
    let server = account_content(&im, "alice");
    assert_same_content(&content_of(&local), &server, "after changes on both sides");
    let all: Vec<&Vec<u8>> = server.values().flatten().map(|(_, b)| b).collect();
    assert!(all.contains(&&message(40)) && all.contains(&&message(41)));
    assert!(
        !all.contains(&&message(5)),
        "the expunge did not reach the Maildir"
    );
    let inbox6 = &server["INBOX"]
        .iter()
        .find(|(_, b)| *b == message(6))
        .unwrap()
        .0;
    assert!(inbox6.contains("$Local"), "{inbox6:?}");
}

#[test]
fn tls_and_starttls_with_the_tests_ca() {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    populate(&im, "alice", false);
    for ssl in ["imaps", "starttls"] {
        let d = Dir::new();
        let local = d.join("Maildir");
        let args = im.imapc_tls_args("alice", ssl);
        let idx = format!("imapc:{}", d.join("idx").display());
        ok(&run(&maildir(&local), &args, &["backup", "-R", &idx]), ssl);
        if ssl == "imaps" {
            // The URL form names host, port, user and TLS; its index goes to the default
            // place under XDG_STATE_HOME.
            let url = format!("imaps://alice@localhost:{}/", im.tls_port());
            let only_secrets: Vec<String> = args
                .chunks(2)
                .filter(|pair| {
                    pair[1].starts_with("imapc_password=")
                        || pair[1].starts_with("ssl_client_ca_file=")
                })
                .flatten()
                .cloned()
                .collect();
            let by_url = d.join("ByUrl");
            let out = boxsync()
                .env("XDG_STATE_HOME", d.join("state"))
                .arg("-o")
                .arg(format!("mail_location={}", maildir(&by_url)))
                .args(&only_secrets)
                .args(["backup", "-R", &url])
                .output()
                .unwrap();
            ok(&out, "imaps:// URL");
            assert_same_content(&content_of(&by_url), &content_of(&local), "by URL");
            assert!(
                d.join("state/boxsync/imapc").is_dir(),
                "default index place"
            );
        }
        assert_same_content(&content_of(&local), &account_content(&im, "alice"), ssl);
        // Without the CA the certificate is not trusted, and nothing is written.
        let args: Vec<String> = args
            .chunks(2)
            .filter(|pair| !pair[1].starts_with("ssl_client_ca_file="))
            .flatten()
            .cloned()
            .collect();
        let other = d.join("Other");
        let out = run(&maildir(&other), &args, &["backup", "-R", &idx]);
        assert_ne!(code(&out), 0, "{ssl} without the CA: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.to_lowercase().contains("certificate"), "{ssl}: {err}");
        assert!(!other.exists(), "{ssl}: a Maildir was created");
    }
}

#[test]
fn wrong_password_is_exit_77_and_touches_nothing() {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    let d = Dir::new();
    let local = d.join("Maildir");
    let mut args = im.imapc_args("alice");
    for a in &mut args {
        if a.starts_with("imapc_password=") {
            *a = "imapc_password=wrong".into();
        }
    }
    let idx = format!("imapc:{}", d.join("idx").display());
    let out = run(&maildir(&local), &args, &["backup", "-R", &idx]);
    assert_eq!(code(&out), 77, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "the password was logged: {err}");
    assert!(!local.exists(), "a Maildir was created");
}

/// A proxy in front of the imapd that cuts the first connection carrying more than `limit`
/// bytes in one direction (`from_client`: client to server), and passes every other one.
fn cutting_proxy(target: u16, from_client: bool, limit: usize) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                break;
            };
            let counted = Arc::new(AtomicUsize::new(0));
            for (from, to, watched) in [
                (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    from_client,
                ),
                (server, client, !from_client),
            ] {
                let flag = flag.clone();
                let counted = counted.clone();
                std::thread::spawn(move || pump(from, to, watched, limit, &flag, &counted));
            }
        }
    });
    (port, cut)
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    watched: bool,
    limit: usize,
    cut: &AtomicBool,
    counted: &AtomicUsize,
) {
    let mut buf = [0u8; 16384];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if watched
            && !cut.load(Ordering::SeqCst)
            && counted.fetch_add(n, Ordering::SeqCst) + n > limit
            && !cut.swap(true, Ordering::SeqCst)
        {
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[test]
fn a_connection_cut_during_fetch_recovers_without_duplicates() {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    populate(&im, "alice", true);
    let (port, cut) = cutting_proxy(im.port(), false, 8 << 20);
    let d = Dir::new();
    let local = d.join("Maildir");
    let args = with_port(&im.imapc_args("alice"), port);
    let idx = format!("imapc:{}", d.join("idx").display());
    let out = run(&maildir(&local), &args, &["backup", "-R", &idx]);
    assert!(cut.load(Ordering::SeqCst), "the proxy never cut");
    assert!(matches!(code(&out), 0 | 2), "{}", describe(&out));
    if code(&out) == 2 {
        ok(
            &run(&maildir(&local), &args, &["backup", "-R", &idx]),
            "second run",
        );
    }
    assert_same_content(
        &content_of(&local),
        &account_content(&im, "alice"),
        "after a cut FETCH",
    );
}

#[test]
fn a_connection_cut_during_append_recovers_without_duplicates() {
    let Some(im) = Imapd::start_with(&["alice", "bob"]) else {
        return;
    };
    populate(&im, "alice", true);
    let d = Dir::new();
    let local = d.join("Maildir");
    let idx_a = format!("imapc:{}", d.join("idx-a").display());
    ok(
        &run(
            &maildir(&local),
            &im.imapc_args("alice"),
            &["backup", "-R", &idx_a],
        ),
        "migrate",
    );
    let (port, cut) = cutting_proxy(im.port(), true, 8 << 20);
    let bob = with_port(&im.imapc_args("bob"), port);
    let idx_b = format!("imapc:{}", d.join("idx-b").display());
    let out = run(&maildir(&local), &bob, &["backup", &idx_b]);
    assert!(cut.load(Ordering::SeqCst), "the proxy never cut");
    if code(&out) != 0 {
        ok(
            &run(&maildir(&local), &bob, &["backup", &idx_b]),
            "second run",
        );
    }
    assert_same_content(
        &content_of(&local),
        &account_content(&im, "bob"),
        "after a cut APPEND",
    );
}
