//! The inbox namespace (`namespace inbox { prefix, separator, mailbox { special_use } }` in
//! the config file) and the flags that lean on it: `-m`/`-x` masks written with the
//! namespace's prefix and separator, `\SpecialUse` masks, `-n` and `-N`. Each mask selects
//! what real `doveadm backup` selects with the same namespace settings, on copies of one
//! store; across a process boundary both ends name mailboxes under the prefix.

mod common;
mod support;

use common::{Dir, Dovecot, boxsync, dovecot_or_skip, maildir, message};
use std::path::Path;
use std::process::Output;
use support::{Folder, Mail, code, content_of, copy_tree, describe, write_maildir};

const BIN: &str = env!("CARGO_BIN_EXE_boxsync");

/// Dovecot's default separator for Maildir++ (`.`), and two mailboxes of special use
/// `\Trash`.
const DOTTED: &str = "namespace inbox {\n  inbox = yes\n  separator = .\n  prefix =\n  mailbox Sent {\n    special_use = \\Sent\n  }\n  mailbox Trash {\n    special_use = \\Trash\n  }\n  mailbox \"Deleted Items\" {\n    special_use = \\Trash\n  }\n}\n";

/// The same under a prefix. Real Dovecot 2.3.19 cannot back up a bare Maildir++ with a
/// prefixed inbox namespace (it gives the Maildir root, INBOX, to the prefix too and panics on
/// the duplicate GUID), so the prefix is checked against boxsync's own results.
const NAMESPACE: &str = "namespace inbox {\n  inbox = yes\n  separator = .\n  prefix = Mail.\n  mailbox Sent {\n    special_use = \\Sent\n  }\n  mailbox Trash {\n    special_use = \\Trash\n  }\n  mailbox \"Deleted Items\" {\n    special_use = \\Trash\n  }\n}\n";

const SHARED: &str = "namespace shared {\n  type = shared\n  separator = .\n  prefix = shared.%u.\n  location = maildir:/srv/shared/%u\n}\n";

fn source(root: &Path) {
    let folder = |name: &str, n: usize| Folder::new(name, vec![Mail::new(message(n), "S")]);
    write_maildir(
        root,
        &[
            folder("INBOX", 1),
            folder("Sent", 2),
            folder("Trash", 3),
            folder("Deleted Items", 4),
            folder("Lists/rust", 5),
            folder("Lists/go", 6),
            folder("Work", 7),
        ],
    );
}

fn config(dir: &Dir, text: &str) -> std::path::PathBuf {
    let path = dir.join("boxsync.conf");
    std::fs::write(&path, text).unwrap();
    path
}

/// The mailboxes holding mail, as the store names them.
fn names(root: &Path) -> Vec<String> {
    content_of(root)
        .into_iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(n, _)| n)
        .collect()
}

fn run_boxsync(conf: &Path, local: &Path, args: &[&str], dest: &str) -> Output {
    boxsync()
        .arg("-c")
        .arg(conf)
        .args(["-o", &format!("mail_location={}", maildir(local))])
        .args(["-o", "mail_fsync=never"])
        .args(args)
        .arg(dest)
        .output()
        .expect("run boxsync")
}

/// Gives the test Dovecot the namespace under test instead of its plain one.
fn use_namespace(dovecot: &Dovecot) {
    let conf = std::fs::read_to_string(dovecot.conf()).unwrap();
    let at = conf
        .find("namespace inbox {")
        .expect("the harness has a namespace");
    std::fs::write(dovecot.conf(), format!("{}{DOTTED}", &conf[..at])).unwrap();
}

/// Special-use masks are left out of the comparison: in this setup Dovecot 2.3.19's
/// `backup -x '\Trash'` copies the Trash too (its man page says it leaves it out, which is what
/// boxsync does: see `special_use_masks_select_the_configured_mailboxes`).
#[test]
fn masks_select_what_doveadm_selects_under_the_same_namespace() {
    let Some(dovecot) = dovecot_or_skip() else {
        return;
    };
    use_namespace(&dovecot);
    let dir = Dir::new();
    let src = dir.join("src");
    source(&src);
    let conf = config(&dir, DOTTED);
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "lists",
            &["backup", "-x", "Lists.*"],
            &["Deleted Items", "INBOX", "Sent", "Trash", "Work"],
        ),
        (
            // doveadm takes one -m (the last); boxsync takes several.
            "work",
            &["backup", "-m", "Work"],
            &["Work"],
        ),
        ("inbox", &["backup", "-m", "INBOX"], &["INBOX"]),
        ("one-level", &["backup", "-m", "Lists.r*"], &["Lists/rust"]),
    ];
    for (case, args, want) in cases {
        let (ds, bs) = (
            dir.join(format!("{case}-ds")),
            dir.join(format!("{case}-bs")),
        );
        copy_tree(&src, &ds);
        copy_tree(&src, &bs);
        let (dd, bd) = (
            dir.join(format!("{case}-dd")),
            dir.join(format!("{case}-bd")),
        );
        let out = dovecot.sync(&maildir(&ds), &maildir(&dd), args);
        assert_eq!(code(&out), 0, "doveadm {args:?}: {}", describe(&out));
        let out = run_boxsync(&conf, &bs, args, &maildir(&bd));
        assert_eq!(code(&out), 0, "boxsync {args:?}: {}", describe(&out));
        assert_eq!(names(&dd), *want, "doveadm {args:?}");
        assert_eq!(names(&bd), *want, "boxsync {args:?}");
        // A Maildir's INBOX always exists; only mail is compared.
        let with_mail = |root: &Path| {
            let mut c = content_of(root);
            c.retain(|_, m| !m.is_empty());
            c
        };
        assert_eq!(with_mail(&bd), with_mail(&dd), "boxsync {args:?}");
    }
}

#[test]
fn masks_under_a_prefix_select_what_they_select_without_it() {
    let dir = Dir::new();
    let src = dir.join("src");
    source(&src);
    let (plain, prefixed) = (config(&dir, DOTTED), dir.join("prefixed.conf"));
    std::fs::write(&prefixed, NAMESPACE).unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["-x", "Lists.*"], &["-x", "Mail.Lists.*"]),
        (
            &["-m", "Work", "-m", "\\Trash"],
            &["-m", "Mail.Work", "-m", "\\Trash"],
        ),
        (
            &["-m", "INBOX", "-m", "Sent"],
            &["-m", "INBOX", "-m", "Mail.Sent"],
        ),
    ];
    for (i, (without, with)) in cases.iter().enumerate() {
        let (a, b) = (dir.join(format!("{i}-a")), dir.join(format!("{i}-b")));
        let run = |conf: &Path, args: &[&str], dest: &Path| {
            let mut all = vec!["backup"];
            all.extend_from_slice(args);
            let out = run_boxsync(conf, &src, &all, &maildir(dest));
            assert_eq!(code(&out), 0, "{args:?}: {}", describe(&out));
        };
        run(&plain, without, &a);
        run(&prefixed, with, &b);
        assert_eq!(content_of(&b), content_of(&a), "{with:?}");
        assert!(names(&a).len() < 7, "{without:?} selects something");
        // A mask without the prefix matches nothing under it.
        let c = dir.join(format!("{i}-c"));
        run(&prefixed, without, &c);
        if without[0] == "-m" {
            assert!(
                names(&c).len() < names(&a).len() || names(&a) == ["INBOX"],
                "{without:?}"
            );
        }
    }
}

#[test]
fn special_use_masks_select_the_configured_mailboxes() {
    let dir = Dir::new();
    let src = dir.join("src");
    source(&src);
    let conf = config(&dir, DOTTED);
    let dest = dir.join("x");
    let out = run_boxsync(&conf, &src, &["backup", "-x", "\\Trash"], &maildir(&dest));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(
        names(&dest),
        ["INBOX", "Lists/go", "Lists/rust", "Sent", "Work"]
    );
    let dest = dir.join("m");
    let out = run_boxsync(&conf, &src, &["backup", "-m", "\\sent"], &maildir(&dest));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(names(&dest), ["Sent"]);
    // A special use no mailbox has selects nothing, rather than everything.
    let dest = dir.join("none");
    let out = run_boxsync(&conf, &src, &["backup", "-m", "\\Flagged"], &maildir(&dest));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(!dest.exists() || names(&dest).is_empty());
}

#[test]
fn without_mailbox_sections_special_use_is_dovecots_shipped_list() {
    let dir = Dir::new();
    let src = dir.join("src");
    source(&src);
    let conf = config(&dir, "");
    let dest = dir.join("dest");
    let out = run_boxsync(&conf, &src, &["backup", "-x", "\\Trash"], &maildir(&dest));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    // 15-mailboxes.conf gives \Trash to Trash only.
    assert_eq!(
        names(&dest),
        [
            "Deleted Items",
            "INBOX",
            "Lists/go",
            "Lists/rust",
            "Sent",
            "Work"
        ]
    );
}

#[test]
fn dash_n_and_dash_capital_n_choose_namespaces() {
    let dir = Dir::new();
    let src = dir.join("src");
    source(&src);
    let conf = config(&dir, &format!("{NAMESPACE}{SHARED}"));
    let dest = |n: &str| maildir(&dir.join(n));

    let out = run_boxsync(&conf, &src, &["backup", "-n", "Mail."], &dest("a"));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(names(&dir.join("a")).len(), 7);

    let out = run_boxsync(&conf, &src, &["backup", "-n", "shared.%u."], &dest("b"));
    assert_eq!(code(&out), 65, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("namespace shared") && err.contains("not supported yet"),
        "{err}"
    );
    assert!(!dir.join("b").exists(), "nothing is created");

    let out = run_boxsync(&conf, &src, &["backup", "-n", "Other."], &dest("c"));
    assert_eq!(code(&out), 68, "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-n \"Other.\""));

    let out = run_boxsync(&conf, &src, &["backup", "-N"], &dest("d"));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Warning: -N: namespace shared"), "{err}");
    assert_eq!(names(&dir.join("d")).len(), 7);
}

#[test]
fn a_bad_namespace_section_names_its_file_and_line() {
    let dir = Dir::new();
    let src = dir.join("src");
    source(&src);
    let conf = config(
        &dir,
        "namespace inbox {\n  inbox = yes\n  prefix = INBOX\n  separator = .\n}\n",
    );
    let out = run_boxsync(&conf, &src, &["backup"], &maildir(&dir.join("d")));
    assert_eq!(code(&out), 78, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("boxsync.conf:1") && err.contains("separator"),
        "{err}"
    );
}

#[test]
fn both_ends_of_a_remote_sync_name_mailboxes_under_the_prefix() {
    let dir = Dir::new();
    let (a, b) = (dir.join("a"), dir.join("b"));
    source(&a);
    let conf = config(&dir, NAMESPACE);
    let server = |conf: &Path| {
        format!(
            "{BIN} -c {} -o mail_location={} -o mail_fsync=never dsync-server",
            conf.display(),
            maildir(&b)
        )
    };
    let out = run_boxsync(&conf, &a, &["backup", "-x", "Mail.Lists.*"], &server(&conf));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(
        names(&b),
        ["Deleted Items", "INBOX", "Sent", "Trash", "Work"]
    );

    // A far end without the namespace names mailboxes outside this side's prefix: stopped,
    // with a message that says what to fix, and nothing lost on this side.
    let plain = dir.join("plain.conf");
    std::fs::write(&plain, "").unwrap();
    support::deliver(&b, "Work", &message(20), "");
    let before = content_of(&a);
    let out = run_boxsync(&conf, &a, &["sync"], &server(&plain));
    assert_ne!(code(&out), 0, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("namespace"), "{err}");
    assert_eq!(content_of(&a), before);
}
