//! `--dry-run` from the command line: both trees untouched (bytes, mtimes, the set of paths,
//! boxsync's index included), a report of what would change, and that report's counts are
//! what the real run then does.

mod common;
mod support;

use common::{Dir, boxsync, maildir, message};
use support::{Folder, Mail, code, describe, ok, write_maildir};

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
    let summary = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .find(|l| l.contains("messages copied"))
            .map(|l| l.split(", ").skip(1).take(3).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let real = run(&["-v"]);
    ok(&real, "the real backup");
    assert_eq!(
        summary(&dry),
        summary(&real),
        "{}\n{}",
        describe(&dry),
        describe(&real)
    );
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
    for args in [
        vec!["backup", "--dry-run", "-s", "", "maildir:/tmp/x"],
        vec!["backup", "--dry-run", "tcp:127.0.0.1:1"],
    ] {
        let out = boxsync().args(["-o", &loc]).args(&args).output().unwrap();
        assert_eq!(code(&out), 64, "{args:?}: {}", describe(&out));
    }
}
