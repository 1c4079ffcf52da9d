//! `-v` progress as a person sees it: plain lines per mailbox when stderr is a file or a pipe
//! (counts that match what was copied, in both directions and across a process boundary),
//! and a live bar with no plain lines when stderr is a terminal (a real pseudo-terminal,
//! through `script`).

mod common;
mod support;

use common::{Dir, boxsync, maildir, message};
use std::path::Path;
use std::process::Output;
use support::{Folder, Mail, code, describe, write_maildir};

const BIN: &str = env!("CARGO_BIN_EXE_boxsync");

/// INBOX with 7 messages, `Work` with 3, `Empty` with none.
fn source(root: &Path) {
    write_maildir(
        root,
        &[
            Folder::new(
                "INBOX",
                (0..7).map(|i| Mail::new(message(i), "S")).collect(),
            ),
            Folder::new(
                "Work",
                (10..13).map(|i| Mail::new(message(i), "")).collect(),
            ),
            Folder::new("Empty", Vec::new()),
        ],
    );
}

fn run(local: &Path, args: &[&str]) -> Output {
    let out = boxsync()
        .arg("-v")
        .arg("-o")
        .arg(format!("mail_location={}", maildir(local)))
        .args(["-o", "mail_fsync=never"])
        .arg(args[0])
        .args(["-u", "alice"])
        .args(&args[1..])
        .output()
        .expect("run boxsync");
    assert_eq!(code(&out), 0, "{}", describe(&out));
    out
}

/// The progress lines of a run: mailbox name → "done/planned".
fn progress_lines(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("boxsync: alice: "))
        .filter(|l| l.contains(" messages, "))
        .map(|l| {
            let (name, rest) = l.split_once(" (").expect("a mailbox position");
            let (_, rest) = rest.split_once("): ").expect("a mailbox position");
            let counts = rest.split(' ').next().unwrap_or_default();
            (name.to_owned(), counts.to_owned())
        })
        .collect()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

fn expected() -> Vec<(String, String)> {
    vec![
        ("INBOX".to_owned(), "7/7".to_owned()),
        ("Work".to_owned(), "3/3".to_owned()),
    ]
}

#[test]
fn plain_lines_count_each_mailbox_that_copied_mail() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    source(&a);
    let out = run(&a, &["backup", &maildir(&b)]);
    assert_eq!(
        sorted(progress_lines(&out)),
        expected(),
        "{}",
        describe(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("boxsync: alice: INBOX ("))
        .unwrap();
    assert!(line.contains("/s, ") && line.ends_with(" s"), "{line}");

    // Nothing to copy, nothing to report but the summary.
    let out = run(&a, &["backup", &maildir(&b)]);
    assert_eq!(progress_lines(&out), Vec::new(), "{}", describe(&out));
}

#[test]
fn mail_coming_the_other_way_is_counted_too() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    source(&b);
    let out = run(&a, &["backup", "-R", &maildir(&b)]);
    assert_eq!(
        sorted(progress_lines(&out)),
        expected(),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_remote_destination_is_counted_once_in_each_direction() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    source(&a);
    let server = |root: &Path| {
        format!(
            "{BIN} -o mail_location={} -o mail_fsync=never dsync-server",
            maildir(root)
        )
    };
    // Sent: the far side's saves never reach this process, so the sends are counted.
    let out = run(&a, &["backup", &server(&b)]);
    assert_eq!(
        sorted(progress_lines(&out)),
        expected(),
        "{}",
        describe(&out)
    );
    // Received.
    let c = d.join("c");
    let out = run(&c, &["backup", "-R", &server(&b)]);
    assert_eq!(
        sorted(progress_lines(&out)),
        expected(),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_terminal_gets_a_live_bar_and_no_plain_lines() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: script(1) is not installed");
        return;
    }
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    source(&a);
    let command = format!(
        "{BIN} -v -o mail_location={} -o mail_fsync=never backup -u alice {}",
        maildir(&a),
        maildir(&b)
    );
    // script(1) runs the command on a fresh pseudo-terminal and copies what it draws.
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("run script");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("alice ["), "no bar drawn: {screen:?}");
    assert!(
        screen.contains("INBOX (") && screen.contains("/7"),
        "{screen:?}"
    );
    assert!(
        screen.contains('\r'),
        "the bar is not redrawn in place: {screen:?}"
    );
    assert!(
        !screen.contains("boxsync: alice: INBOX ("),
        "plain lines on a terminal: {screen:?}"
    );
    assert!(
        screen.contains("boxsync: alice: 3 mailboxes, 10 messages copied"),
        "{screen:?}"
    );
    assert_eq!(support::read_maildir(&b).message_count(), 10);
}
