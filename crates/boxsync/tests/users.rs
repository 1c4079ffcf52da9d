//! Whole servers: a config file in dovecot.conf syntax, a passwd-file userdb, and the user
//! selection flags `-A`, `-u MASK`, `-F FILE` and `-d`, run through the binary as an admin
//! would; each user's store compared with its backup as an IMAP client would see them.

mod common;
mod support;

use common::{Dir, boxsync, message};
use std::path::Path;
use support::{Folder, Mail, assert_same_content, code, content_of, describe, ok, write_maildir};

/// A passwd-file with `users` users, each with a Maildir under `base/mail/<name>` holding a
/// few messages, and a config file whose userdb reads it. Returns the config's path.
fn server(base: &Path, users: &[String]) -> std::path::PathBuf {
    let mut passwd = String::from("# boxsync test users\n\n");
    for (i, name) in users.iter().enumerate() {
        let home = base.join("home").join(name);
        passwd.push_str(&format!(
            "{name}:{{PLAIN}}secret:{uid}:{uid}::{home}::userdb_mail_replica=maildir:{replica}\n",
            uid = 5000 + i,
            home = home.display(),
            replica = base.join("replica").join(name).display(),
        ));
        let maildir = base.join("mail").join(name);
        let inbox = (0..(1 + i % 3))
            .map(|m| Mail::new(message(i * 10 + m), "S"))
            .collect();
        write_maildir(
            &maildir,
            &[
                Folder::new("INBOX", inbox),
                Folder::new("Archive", vec![Mail::new(message(i * 10 + 9), "")]),
            ],
        );
    }
    std::fs::write(base.join("users.passwd"), passwd).unwrap();
    let conf = base.join("boxsync.conf");
    std::fs::write(
        &conf,
        format!(
            "# as in dovecot.conf\n\
             mail_fsync = never\n\
             userdb {{\n  driver = passwd-file\n  args = username_format=%u {passwd}\n  \
             default_fields = mail=maildir:{base}/mail/%u\n}}\n",
            passwd = base.join("users.passwd").display(),
            base = base.display(),
        ),
    )
    .unwrap();
    conf
}

fn run(conf: &Path, args: &[&str]) -> std::process::Output {
    boxsync()
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .expect("run boxsync")
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i:03}@example.org")).collect()
}

#[test]
fn backup_all_users_in_parallel_and_one_broken_user_fails_alone() {
    let d = Dir::new();
    let users = names(100);
    let conf = server(d.path(), &users);
    // One user whose store is gone: it fails with its own message, the others are backed up.
    let broken = &users[42];
    std::fs::remove_dir_all(d.join("mail").join(broken)).unwrap();
    let dest = format!("maildir:{}/backup/%u", d.path().display());
    let out = run(
        &conf,
        &["-o", "sync_parallel_users=4", "backup", "-A", &dest],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 68, "{}", describe(&out));
    for (i, name) in users.iter().enumerate() {
        if i == 42 {
            assert!(
                stderr.contains(&format!("boxsync: user {name}: FAILED (exit 68")),
                "{stderr}"
            );
            assert!(!d.join("backup").join(name).exists());
            continue;
        }
        assert!(
            stderr.contains(&format!("boxsync: user {name}: done (exit 0")),
            "{name}: {stderr}"
        );
        assert_same_content(
            &content_of(&d.join("mail").join(name)),
            &content_of(&d.join("backup").join(name)),
            name,
        );
    }
    assert_eq!(
        stderr.matches("does not exist").count(),
        1,
        "only the broken user's error: {stderr}"
    );
}

#[test]
fn a_mask_a_user_file_and_the_replica_select_users() {
    let d = Dir::new();
    let mut users = names(3);
    users.push("alice@other.example".to_owned());
    let conf = server(d.path(), &users);
    let dest = format!("maildir:{}/masked/%n", d.path().display());
    ok(
        &run(&conf, &["backup", "-u", "*@example.org", &dest]),
        "backup -u MASK",
    );
    for name in &users[..3] {
        let local = name.split('@').next().unwrap();
        assert_same_content(
            &content_of(&d.join("mail").join(name)),
            &content_of(&d.join("masked").join(local)),
            name,
        );
    }
    assert!(!d.join("masked").join("alice").exists());

    std::fs::write(
        d.join("list"),
        format!("# two of them\n{}\n\n{}\n", users[3], users[1]),
    )
    .unwrap();
    let dest = format!("maildir:{}/listed/%u", d.path().display());
    let list = d.join("list");
    ok(
        &run(&conf, &["backup", "-F", list.to_str().unwrap(), &dest]),
        "backup -F",
    );
    let listed: std::collections::BTreeSet<String> = std::fs::read_dir(d.join("listed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed, [users[1].clone(), users[3].clone()].into());

    // -d: the destination is the user's mail_replica.
    ok(&run(&conf, &["sync", "-u", &users[0], "-d"]), "sync -d");
    assert_same_content(
        &content_of(&d.join("mail").join(&users[0])),
        &content_of(&d.join("replica").join(&users[0])),
        "replica",
    );
}

#[test]
fn verbose_prints_a_summary_line_per_user() {
    let d = Dir::new();
    let users = names(2);
    let conf = server(d.path(), &users);
    let dest = format!("maildir:{}/backup/%u", d.path().display());
    let out = run(&conf, &["-v", "backup", "-A", &dest]);
    ok(&out, "backup -A -v");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // user000: one message in INBOX, one in Archive; user001: two and one.
    for (name, copied) in [(&users[0], 2), (&users[1], 3)] {
        let line = stderr
            .lines()
            // The summary, not a progress line of a mailbox.
            .find(|l| l.starts_with(&format!("boxsync: {name}: ")) && l.contains(" mailboxes, "))
            .unwrap_or_else(|| panic!("no summary for {name}: {stderr}"));
        assert!(
            line.contains(&format!("2 mailboxes, {copied} messages copied (")),
            "{line}"
        );
        assert!(line.contains("0 expunged, 0 re-flagged"), "{line}");
    }
    // Run again: nothing to do, and it says so.
    let out = run(&conf, &["-v", "backup", "-u", &users[0], &dest]);
    ok(&out, "rerun");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 messages copied (0 B), 0 expunged"),
        "{}",
        describe(&out)
    );
}

#[test]
fn an_unknown_user_exits_67() {
    let d = Dir::new();
    let conf = server(d.path(), &names(2));
    let dest = format!("maildir:{}/x", d.path().display());
    let out = run(&conf, &["backup", "-u", "nobody@example.org", &dest]);
    assert_eq!(code(&out), 67, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nobody@example.org"),
        "{}",
        describe(&out)
    );
    assert!(!d.join("x").exists());
}

#[test]
fn config_errors_name_the_file_and_line_and_o_overrides_the_file() {
    let d = Dir::new();
    let conf = d.join("bad.conf");
    std::fs::write(
        &conf,
        "mail_fsync = never\n\n# a comment\nbogus_setting = 1\n",
    )
    .unwrap();
    let src = d.join("src");
    write_maildir(
        &src,
        &[Folder::new("INBOX", vec![Mail::new(message(1), "S")])],
    );
    let loc = format!("mail_location=maildir:{}", src.display());
    let dest = format!("maildir:{}", d.join("dst").display());
    let out = run(&conf, &["-o", &loc, "backup", &dest]);
    assert_eq!(code(&out), 78, "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4", conf.display())) && stderr.contains("bogus_setting"),
        "{stderr}"
    );
    assert!(!d.join("dst").exists());

    // mail_location from the file, overridden by -o.
    let good = d.join("good.conf");
    std::fs::write(
        &good,
        "mail_location = maildir:/does/not/exist\nmail_fsync = never\n",
    )
    .unwrap();
    ok(&run(&good, &["-o", &loc, "backup", &dest]), "-o over -c");
    assert_same_content(&content_of(&src), &content_of(&d.join("dst")), "backup");
}

#[test]
fn help_settings_lists_every_setting() {
    let out = boxsync().args(["help", "settings"]).output().unwrap();
    ok(&out, "help settings");
    let text = String::from_utf8_lossy(&out.stdout);
    for k in [
        "mail_location",
        "mail_fsync",
        "sync_parallel_users",
        "imapc_host",
        "dsync_hashed_headers",
        "default_fields",
    ] {
        assert!(text.contains(k), "{k} missing from:\n{text}");
    }
}
