//! The dbox stores against real Dovecot: stores made by `doveadm` (saves, flags, keywords, an
//! expunge, a non-ASCII subfolder, an index file written mid-way) must read as `doveadm fetch`
//! and `doveadm mailbox status` report them, bodies byte for byte; damaged or missing index
//! files must give a fallback or a clear per-mailbox error without hiding the other mailboxes.

#[path = "../../boxsync/tests/common/dovecot.rs"]
#[allow(dead_code)]
mod dovecot;

use boxsync_model::Flags;
use boxsync_store::Store;
use boxsync_store::dbox::{DboxKind, DboxStore};
use dovecot::{Dovecot, dovecot_or_skip, normalize_flags, parse_tab};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Settings that make Dovecot write `dovecot.index` (and rotate its log) after every change,
/// instead of only once the log has grown.
const REWRITE_INDEX_OFTEN: [&str; 10] = [
    "-o",
    "mail_index_rewrite_min_log_bytes=1",
    "-o",
    "mail_index_rewrite_max_log_bytes=1",
    "-o",
    "mail_index_log_rotate_min_size=1",
    "-o",
    "mail_index_log_rotate_max_size=1",
    "-o",
    "mail_index_log_rotate_min_age=0",
];

fn msg(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.org>\nTo: bob@example.org\nSubject: {subject}\nMessage-ID: <{subject}@example.org>\n\n{body}\n"
    )
    .into_bytes()
}

/// Runs a doveadm command with extra global options (`-o …`) and an optional stdin.
fn doveadm(dc: &Dovecot, loc: &str, options: &[&str], args: &[&str], stdin: Option<&[u8]>) {
    let mut cmd = dc.doveadm(loc);
    cmd.args(options)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run doveadm");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input)
            .expect("write doveadm stdin");
    }
    let out = child.wait_with_output().expect("wait for doveadm");
    assert!(
        out.status.success(),
        "doveadm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fills a store the way a mail user would: INBOX, a non-ASCII subfolder and an archive
/// folder whose `dovecot.index` exists with more changes in the log after it.
fn populate(dc: &Dovecot, loc: &str) {
    for i in 1..=4 {
        dc.save(
            loc,
            "INBOX",
            &msg(&format!("inbox{i}"), &format!("Body {i}.")),
        );
    }
    // Not every message ends with a line end.
    doveadm(
        dc,
        loc,
        &[],
        &["save", "-m", "INBOX"],
        Some(b"Subject: bare\n\nno line end"),
    );
    dc.flags_add(loc, "INBOX", 1, "\\Seen $Work");
    dc.flags_add(loc, "INBOX", 2, "\\Flagged \\Answered \\Draft todo");
    dc.flags_add(loc, "INBOX", 4, "$Work later");
    dc.flags_remove(loc, "INBOX", 4, "$Work");
    dc.expunge(loc, "INBOX", 3);

    dc.mailbox_create(loc, "Work/Prøjekt");
    dc.mailbox_subscribe(loc, "Work/Prøjekt");
    dc.save(loc, "Work/Prøjekt", &msg("work1", "Plans."));
    dc.save(loc, "Work/Prøjekt", &msg("work2", "More plans."));
    dc.flags_add(loc, "Work/Prøjekt", 2, "\\Deleted urgent");

    dc.mailbox_create(loc, "Archive");
    for i in 1..=5 {
        doveadm(
            dc,
            loc,
            &REWRITE_INDEX_OFTEN,
            &["save", "-m", "Archive"],
            Some(&msg(&format!("old{i}"), "Archived.")),
        );
    }
    doveadm(
        dc,
        loc,
        &REWRITE_INDEX_OFTEN,
        &["flags", "add", "\\Seen", "mailbox", "Archive", "uid", "1:3"],
        None,
    );
    // Changes only in the log, after the index file.
    dc.save(loc, "Archive", &msg("old6", "Archived later."));
    dc.flags_add(loc, "Archive", 2, "\\Flagged keep");
    dc.expunge(loc, "Archive", 5);
}

/// One message as both sides should see it: GUID, sorted flags and keywords, received date.
type View = BTreeMap<(String, u32), (String, Vec<String>, i64)>;

fn dovecot_view(dc: &Dovecot, loc: &str) -> View {
    dc.fetch_fields(
        loc,
        "mailbox uid guid flags date.received.unixtime",
        &["ALL"],
    )
    .into_iter()
    .map(|r| {
        (
            (r["mailbox"].clone(), r["uid"].parse().expect("uid")),
            (
                r["guid"].clone(),
                normalize_flags(&r["flags"]),
                r["date.received.unixtime"].parse().expect("date"),
            ),
        )
    })
    .collect()
}

fn boxsync_view(store: &DboxStore, with_message_dates: bool) -> View {
    let mut view = View::new();
    for mb in store.mailboxes() {
        for m in store.messages(mb.guid).expect("messages") {
            let mut flags: Vec<String> = m
                .flags
                .imap_names()
                .map(str::to_owned)
                .chain(m.keywords.iter().cloned())
                .collect();
            flags.sort();
            let body = store.body(mb.guid, m.uid).expect("body");
            let received = body.received().expect("received date");
            if with_message_dates {
                assert_eq!(m.received, received, "{} UID {}", mb.name, m.uid);
            }
            view.insert(
                (mb.name.to_string(), m.uid),
                (m.guid.clone(), flags, received),
            );
        }
    }
    view
}

/// `(name, guid, uidvalidity, uidnext, messages)` of every mailbox, as doveadm reports them.
fn dovecot_status(dc: &Dovecot, loc: &str) -> Vec<(String, String, u32, u32, u32)> {
    let out = dc
        .doveadm(loc)
        .args([
            "-f",
            "tab",
            "mailbox",
            "status",
            "guid uidvalidity uidnext messages",
            "*",
        ])
        .output()
        .expect("doveadm mailbox status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<_> = parse_tab(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .map(|r| {
            (
                r["mailbox"].clone(),
                r["guid"].clone(),
                r["uidvalidity"].parse().expect("uidvalidity"),
                r["uidnext"].parse().expect("uidnext"),
                r["messages"].parse().expect("messages"),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn boxsync_status(store: &DboxStore) -> Vec<(String, String, u32, u32, u32)> {
    let mut rows: Vec<_> = store
        .mailboxes()
        .into_iter()
        .map(|m| {
            (
                m.name.to_string(),
                m.guid.to_string(),
                m.uidvalidity,
                m.uidnext,
                m.messages,
            )
        })
        .collect();
    rows.sort();
    rows
}

/// `doveadm fetch text` of one message: exactly its bytes.
fn dovecot_text(dc: &Dovecot, loc: &str, mailbox: &str, uid: u32) -> Vec<u8> {
    let out = dc
        .doveadm(loc)
        .args(["fetch", "text", "mailbox", mailbox, "uid", &uid.to_string()])
        .output()
        .expect("doveadm fetch text");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .strip_prefix(b"text:\n")
        .expect("doveadm fetch text output starts with `text:`")
        .to_vec()
}

fn assert_bodies_match(dc: &Dovecot, loc: &str, store: &DboxStore) {
    for mb in store.mailboxes() {
        for m in store.messages(mb.guid).expect("messages") {
            let body = store.body(mb.guid, m.uid).expect("body");
            let mut ours = Vec::new();
            body.open()
                .expect("open body")
                .read_to_end(&mut ours)
                .expect("read body");
            assert_eq!(body.size(), Some(ours.len() as u64));
            let theirs = dovecot_text(dc, loc, &mb.name.to_string(), m.uid);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{} UID {}",
                mb.name,
                m.uid
            );
        }
    }
}

struct Fixture {
    dc: Dovecot,
    root: PathBuf,
    loc: String,
    index_dir: tempfile::TempDir,
}

fn fixture(kind: DboxKind) -> Option<Fixture> {
    let dc = dovecot_or_skip()?;
    let root = dc.base().join(kind.to_string());
    let loc = format!("{kind}:{}", root.display());
    populate(&dc, &loc);
    Some(Fixture {
        dc,
        root,
        loc,
        index_dir: tempfile::tempdir().expect("index dir"),
    })
}

impl Fixture {
    fn open(&self, kind: DboxKind) -> DboxStore {
        DboxStore::open(&self.root, kind, self.index_dir.path()).expect("open dbox store")
    }

    fn mailbox_dir(&self, name: &str) -> PathBuf {
        name.split('/')
            .fold(self.root.join("mailboxes"), |d, part| {
                d.join(boxsync_model::mutf7::encode(part))
            })
            .join("dbox-Mails")
    }
}

fn check_reads_like_dovecot(kind: DboxKind) {
    let Some(fx) = fixture(kind) else { return };
    let store = fx.open(kind);
    assert!(
        store.mailbox_errors.is_empty(),
        "{:?}",
        store.mailbox_errors
    );
    assert_eq!(boxsync_status(&store), dovecot_status(&fx.dc, &fx.loc));
    let expected = dovecot_view(&fx.dc, &fx.loc);
    assert_eq!(boxsync_view(&store, true), expected);
    // The scenario really has what it is meant to test.
    assert!(expected.contains_key(&("Work/Prøjekt".to_owned(), 2)));
    assert!(!expected.contains_key(&("INBOX".to_owned(), 3)));
    assert!(
        expected
            .values()
            .any(|(_, f, _)| f.contains(&"keep".to_owned()))
    );
    assert!(fx.mailbox_dir("Archive").join("dovecot.index").exists());
    assert!(!fx.mailbox_dir("INBOX").join("dovecot.index").exists());
    assert_bodies_match(&fx.dc, &fx.loc, &store);

    let subscribed: Vec<String> = store
        .mailboxes()
        .into_iter()
        .filter(|m| m.subscribed)
        .map(|m| m.name.to_string())
        .collect();
    assert_eq!(subscribed, ["Work/Prøjekt"]);

    // A second open finds nothing changed: same modseqs, and message data from boxsync's index.
    let modseqs: Vec<_> = store.mailboxes().iter().map(|m| m.highest_modseq).collect();
    drop(store);
    let again = fx.open(kind);
    assert_eq!(
        again
            .mailboxes()
            .iter()
            .map(|m| m.highest_modseq)
            .collect::<Vec<_>>(),
        modseqs
    );
    assert_eq!(boxsync_view(&again, false), expected);

    // A flag change by Dovecot is a change with a new modseq; an expunge lands in the journal.
    let before = again
        .mailboxes()
        .into_iter()
        .find(|m| m.name.is_inbox())
        .expect("INBOX")
        .highest_modseq;
    fx.dc.flags_add(&fx.loc, "INBOX", 5, "\\Seen");
    fx.dc.expunge(&fx.loc, "INBOX", 1);
    drop(again);
    let changed = fx.open(kind);
    let inbox = changed
        .mailboxes()
        .into_iter()
        .find(|m| m.name.is_inbox())
        .expect("INBOX");
    let five = changed
        .messages(inbox.guid)
        .expect("messages")
        .iter()
        .find(|m| m.uid == 5)
        .expect("UID 5")
        .clone();
    assert!(five.flags.contains(Flags::SEEN));
    assert!(five.modseq > before);
    assert!(inbox.highest_modseq > five.modseq);
    let expunged = changed.expunged_since(inbox.guid, 0).expect("journal");
    assert_eq!(expunged.len(), 1);
    assert_eq!(expunged[0].uid, 1);
    assert_eq!(boxsync_view(&changed, false), dovecot_view(&fx.dc, &fx.loc));
}

#[test]
fn sdbox_reads_like_dovecot() {
    check_reads_like_dovecot(DboxKind::Sdbox);
}

#[test]
fn mdbox_reads_like_dovecot() {
    check_reads_like_dovecot(DboxKind::Mdbox);
}

fn is_read_only_refusal(e: boxsync_model::Error, kind: DboxKind, root: &Path) {
    assert_eq!(e.exit_code().code(), 64);
    assert_eq!(
        e.to_string(),
        format!(
            "{kind}:{} is read-only: boxsync reads Dovecot's dbox but does not write it",
            root.display()
        )
    );
}

#[test]
fn writes_are_refused_and_agreed_flags_are_kept() {
    let Some(fx) = fixture(DboxKind::Sdbox) else {
        return;
    };
    let mut store = fx.open(DboxKind::Sdbox);
    let inbox = store
        .mailboxes()
        .into_iter()
        .find(|m| m.name.is_inbox())
        .expect("INBOX");
    let name = boxsync_model::MailboxName::parse("New").expect("name");
    is_read_only_refusal(
        store
            .create_mailbox(&name, boxsync_model::Guid128::generate(), 1)
            .unwrap_err(),
        DboxKind::Sdbox,
        &fx.root,
    );
    is_read_only_refusal(
        store.delete_mailbox(inbox.guid).unwrap_err(),
        DboxKind::Sdbox,
        &fx.root,
    );
    is_read_only_refusal(
        store.set_subscribed(&name, true).unwrap_err(),
        DboxKind::Sdbox,
        &fx.root,
    );
    let header = boxsync_store::HeaderUpdate {
        uidvalidity: inbox.uidvalidity,
        uidnext: inbox.uidnext,
        highest_modseq: inbox.highest_modseq,
        change_modseq: inbox.highest_modseq + 1,
    };
    is_read_only_refusal(
        store
            .writer(inbox.guid, header)
            .err()
            .expect("writer refused"),
        DboxKind::Sdbox,
        &fx.root,
    );

    store.record_agreed_flags(inbox.guid).expect("agree");
    drop(store);
    let again = fx.open(DboxKind::Sdbox);
    for m in again.messages(inbox.guid).expect("messages") {
        assert_eq!(m.base, Some((m.flags, m.keywords.clone())), "UID {}", m.uid);
    }
}

#[test]
fn sdbox_without_its_index_files_falls_back_to_the_message_files() {
    let Some(fx) = fixture(DboxKind::Sdbox) else {
        return;
    };
    let expected = dovecot_view(&fx.dc, &fx.loc);
    // boxsync has seen the mailboxes once: it remembers their flags.
    drop(fx.open(DboxKind::Sdbox));

    // Archive's log was rotated: without dovecot.index it does not go back far enough.
    let archive = fx.mailbox_dir("Archive");
    std::fs::remove_file(archive.join("dovecot.index")).expect("remove index");
    // INBOX never had an index file; without its log nothing is left but the files.
    let inbox = fx.mailbox_dir("INBOX");
    std::fs::remove_file(inbox.join("dovecot.index.log")).expect("remove log");

    let store = fx.open(DboxKind::Sdbox);
    assert!(
        store.mailbox_errors.is_empty(),
        "{:?}",
        store.mailbox_errors
    );
    // The same messages with the flags boxsync saw last, under the same mailbox GUIDs.
    assert_eq!(boxsync_view(&store, false), expected);

    // A boxsync that never saw the store gets the messages without flags.
    let fresh = tempfile::tempdir().expect("index dir");
    let store = DboxStore::open(&fx.root, DboxKind::Sdbox, fresh.path()).expect("open");
    let view = boxsync_view(&store, true);
    let stripped: View = expected
        .iter()
        .map(|((mb, uid), (guid, flags, date))| {
            let flags = if mb == "Work/Prøjekt" {
                flags.clone()
            } else {
                Vec::new()
            };
            ((mb.clone(), *uid), (guid.clone(), flags, *date))
        })
        .collect();
    assert_eq!(view, stripped);
}

#[test]
fn garbage_index_files_are_reported_by_name_and_other_mailboxes_still_read() {
    for kind in [DboxKind::Sdbox, DboxKind::Mdbox] {
        let Some(fx) = fixture(kind) else { return };
        let expected = dovecot_view(&fx.dc, &fx.loc);
        let garbage = b"this is not a dovecot index file, just garbage bytes".repeat(10);

        // INBOX's log goes back to its creation: an unreadable index file is rebuilt from it.
        std::fs::write(fx.mailbox_dir("INBOX").join("dovecot.index"), &garbage).expect("write");
        // Archive's log does not: garbage there loses the mailbox state.
        std::fs::write(fx.mailbox_dir("Archive").join("dovecot.index"), &garbage).expect("write");
        // A log that is garbage too.
        std::fs::write(
            fx.mailbox_dir("Work/Prøjekt").join("dovecot.index.log"),
            &garbage,
        )
        .expect("write");

        let store = fx.open(kind);
        let view = boxsync_view(&store, true);
        let inbox: View = expected
            .iter()
            .filter(|((mb, _), _)| mb == "INBOX")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match kind {
            DboxKind::Sdbox => {
                // Every mailbox is read; those without a usable index come from their files.
                assert!(
                    store.mailbox_errors.is_empty(),
                    "{:?}",
                    store.mailbox_errors
                );
                let keys: Vec<_> = view.keys().cloned().collect();
                let want: Vec<_> = expected.keys().cloned().collect();
                assert_eq!(keys, want);
                assert!(inbox.iter().all(|(k, v)| view.get(k) == Some(v)));
            }
            DboxKind::Mdbox => {
                let mut broken: Vec<String> = store
                    .mailbox_errors
                    .iter()
                    .map(|(n, _)| n.clone())
                    .collect();
                broken.sort();
                assert_eq!(broken, ["Archive", "Work/Prøjekt"]);
                for (name, err) in &store.mailbox_errors {
                    let text = err.to_string();
                    assert!(text.contains("dovecot.index"), "{name}: {text}");
                }
                assert_eq!(view, inbox);
            }
        }
    }
}

#[test]
fn mdbox_with_a_broken_map_or_missing_mailbox_index_reports_the_mailboxes() {
    let Some(fx) = fixture(DboxKind::Mdbox) else {
        return;
    };
    let expected = dovecot_view(&fx.dc, &fx.loc);
    let work = fx.mailbox_dir("Work/Prøjekt");
    for entry in std::fs::read_dir(&work).expect("list") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("dovecot.index"))
        {
            std::fs::remove_file(path).expect("remove");
        }
    }
    let store = fx.open(DboxKind::Mdbox);
    assert_eq!(store.mailbox_errors.len(), 1, "{:?}", store.mailbox_errors);
    let (name, err) = &store.mailbox_errors[0];
    assert_eq!(name, "Work/Prøjekt");
    assert!(err.to_string().contains("force-resync"), "{err}");
    assert_eq!(
        store.broken_mailboxes(),
        [boxsync_model::MailboxName::parse("Work/Prøjekt").expect("name")]
    );
    let others: View = expected
        .into_iter()
        .filter(|((mb, _), _)| mb != "Work/Prøjekt")
        .collect();
    assert_eq!(boxsync_view(&store, true), others);
    drop(store);

    let storage = fx.root.join("storage");
    for entry in std::fs::read_dir(&storage).expect("list") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("dovecot.map.index"))
        {
            std::fs::write(path, b"garbage").expect("write");
        }
    }
    let store = fx.open(DboxKind::Mdbox);
    assert!(store.mailboxes().is_empty());
    assert_eq!(store.mailbox_errors.len(), 3, "{:?}", store.mailbox_errors);
    for (_, err) in &store.mailbox_errors {
        assert!(err.to_string().contains("dovecot.map.index"), "{err}");
    }
}
