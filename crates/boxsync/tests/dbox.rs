//! Dovecot's sdbox and mdbox as boxsync sources, through the CLI. The stores are made by real
//! Dovecot (`doveadm backup` from a Maildir, then changes that live only in Dovecot's
//! transaction log) and must convert to a Maildir, an mbox tree and an IMAP account with what
//! `doveadm fetch` reports on the dbox: the mailboxes, the bytes of every message, flags,
//! keywords, received dates, subscriptions, and the UIDs where the destination keeps them.
//! `sync -1` merges from a dbox; a dbox on a side the sync writes to is refused before
//! anything happens; an mdbox mailbox with broken index files is reported by name while the
//! others convert; an sdbox without its `dovecot.index` converts from its message files; a
//! rerun changes nothing.
//!
//! Every boxsync run gets `XDG_STATE_HOME` in a temporary directory, and all but the one test
//! of that default place give `INDEX=` there too, so nothing is written outside temporary
//! directories. `TZ=UTC` everywhere: the mbox received date bug outside UTC is pinned in
//! `mbox.rs`, not here.

mod common;
mod support;

use common::dovecot::normalize_flags;
use common::imapd::Imapd;
use common::{Dir, Dovecot, boxsync, dovecot_or_skip, maildir, message};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};
use support::{Folder, Mail, code, describe, folder_dir, ok, write_maildir};

/// The nested mailbox with a non-ASCII name (`Work` exists only as its parent: an mbox folder
/// cannot also hold sub-folders).
const PROJEKT: &str = "Work/Prøjekt";

/// A mailbox Dovecot creates in the dbox after the backup, with a message and a subscription.
const NEU: &str = "Neu/Ärger";

/// The marker boxsync's mbox writer puts first in a message without a final line end, which
/// then gets one (README, "mbox").
const EOL_NONE: &str = "X-Boxsync-Eol: none\n";

/// Settings that make Dovecot write `dovecot.index` (and rotate its log) after every change,
/// so that the dbox has index files with the changes made after the backup only in the log.
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

// ---- what Dovecot sees ----

/// One message as `doveadm fetch` reports it. `text` is the whole message (UTF-8 in these
/// tests, so that a difference prints readably).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Msg {
    uid: u32,
    guid: String,
    /// System flags and keywords, sorted, without `\Recent`.
    flags: Vec<String>,
    received: i64,
    text: String,
}

/// A whole store as Dovecot sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct View {
    /// `doveadm mailbox list`, sorted (with parents that exist only as hierarchy).
    mailboxes: Vec<String>,
    /// `doveadm mailbox list -s`, sorted.
    subscriptions: Vec<String>,
    /// Mailbox → (UIDVALIDITY, UIDNEXT, messages).
    status: BTreeMap<String, (u32, u32, u32)>,
    /// Mailbox → its messages by UID.
    mail: BTreeMap<String, Vec<Msg>>,
}

fn dovecot_view(dc: &Dovecot, loc: &str) -> View {
    View {
        mailboxes: dc.mailbox_list(loc),
        subscriptions: dc.subscriptions(loc),
        status: dc
            .mailbox_status(loc)
            .into_iter()
            .map(|(name, uidvalidity, uidnext, messages)| (name, (uidvalidity, uidnext, messages)))
            .collect(),
        mail: fetch_all(dc, loc),
    }
}

/// Every message with its text, from one `doveadm -f pager fetch`: records are separated by
/// `\f\n`, single-line fields are `name: value`, and `text:` is last, followed by the exact
/// bytes of the message.
fn fetch_all(dc: &Dovecot, loc: &str) -> BTreeMap<String, Vec<Msg>> {
    let mut cmd = dc.doveadm(loc);
    cmd.env("TZ", "UTC").args([
        "-f",
        "pager",
        "fetch",
        "mailbox uid guid flags date.received.unixtime text",
        "ALL",
    ]);
    let out = cmd.output().expect("run doveadm fetch");
    assert!(out.status.success(), "doveadm fetch: {}", describe(&out));
    let mut mail: BTreeMap<String, Vec<Msg>> = BTreeMap::new();
    for record in split(&out.stdout, b"\x0c\n") {
        if record.is_empty() {
            continue;
        }
        let marker = b"\ntext:\n";
        let at = find(record, marker)
            .unwrap_or_else(|| panic!("no text in {:?}", String::from_utf8_lossy(record)));
        let head = String::from_utf8(record[..at].to_vec()).expect("fields are UTF-8");
        let text = String::from_utf8(record[at + marker.len()..].to_vec())
            .expect("the test messages are UTF-8");
        let fields: BTreeMap<&str, &str> = head
            .lines()
            .map(|l| l.split_once(": ").unwrap_or((l.trim_end_matches(':'), "")))
            .collect();
        let msg = Msg {
            uid: fields["uid"].parse().expect("uid"),
            guid: fields["guid"].to_owned(),
            flags: normalize_flags(fields["flags"]),
            received: fields["date.received.unixtime"]
                .parse()
                .expect("received date"),
            text,
        };
        mail.entry(fields["mailbox"].to_owned())
            .or_default()
            .push(msg);
    }
    for msgs in mail.values_mut() {
        msgs.sort();
    }
    mail
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = find(hay, sep) {
        parts.push(&hay[..at]);
        hay = &hay[at + sep.len()..];
    }
    parts.push(hay);
    parts
}

/// The messages of `view` with what a destination does not keep blanked: UIDs (an IMAP
/// server numbers mail itself) and GUIDs (neither an mbox nor an IMAP server stores them), in
/// a canonical order.
fn mail_of(view: &View, uids: bool, guids: bool) -> BTreeMap<String, Vec<Msg>> {
    view.mail
        .iter()
        .map(|(name, msgs)| {
            let mut msgs: Vec<Msg> = msgs
                .iter()
                .map(|m| Msg {
                    uid: if uids { m.uid } else { 0 },
                    guid: if guids { m.guid.clone() } else { String::new() },
                    ..m.clone()
                })
                .collect();
            msgs.sort();
            (name.clone(), msgs)
        })
        .collect()
}

/// Mailbox → UIDVALIDITY of the mailboxes that hold mail.
fn uidvalidities(view: &View) -> BTreeMap<String, u32> {
    view.status
        .iter()
        .filter(|(_, s)| s.2 > 0)
        .map(|(name, s)| (name.clone(), s.0))
        .collect()
}

// ---- the source stores ----

/// A message whose last line has no line end.
fn without_final_newline(n: usize) -> Vec<u8> {
    let mut m = message(n);
    m.extend_from_slice(b"\n-- \nno final newline");
    m
}

/// A message with an 8-bit UTF-8 body.
fn eight_bit(n: usize) -> Vec<u8> {
    format!(
        "From: Jürgen <j@example.org>\nTo: rcpt@example.com\nSubject: 8bit {n}\n\
         Message-ID: <8bit.{n}@boxsync.test>\nMIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
         Grüße aus Köln, Nachricht {n}. 日本語のテキスト。\n"
    )
    .into_bytes()
}

/// The received date of the `i`-th message written into the source Maildir.
fn received(i: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_650_000_000 + i * 86_461)
}

/// Writes the Maildir the dbox stores are made from: INBOX with every system flag, three
/// keywords, a message without a final line end and an 8-bit one; `Work/Prøjekt` with UID
/// gaps; `Archive/2024` under a parent with no mail; an empty mailbox; every message with
/// its own received date (file mtime); three subscriptions. With `empty`, also an empty
/// mailbox `Empty`.
fn write_source(dc: &Dovecot, root: &Path, empty: bool) {
    let mut inbox = Folder::new(
        "INBOX",
        vec![
            Mail::new(message(1), "S"),
            Mail::new(message(2), "FS"),
            Mail::new(message(3), "DFRST"),
            Mail::new(message(4), "Sa"),
            Mail::new(message(5), "bc"),
            Mail::new(without_final_newline(6), "R"),
            Mail::new(eight_bit(7), ""),
        ],
    );
    inbox.uidvalidity = 1_600_000_001;
    inbox.keywords = vec!["$Important".into(), "Work".into(), "$Label1".into()];
    // The folder as Dovecot names it on disk: modified UTF-7.
    let mut projekt = Folder::new(
        "Work/Pr&APg-jekt",
        vec![
            Mail::new(message(9), "a"),
            Mail::new(message(10), "T"),
            Mail::new(message(11), "Sb"),
        ],
    );
    projekt.uidvalidity = 1_600_000_002;
    projekt.first_uid = 3;
    projekt.uid_step = 4;
    let mut archive = Folder::new(
        "Archive/2024",
        vec![Mail::new(message(12), "S"), Mail::new(message(13), "")],
    );
    archive.uidvalidity = 1_600_000_003;
    archive.first_uid = 100;
    let mut folders = vec![inbox, projekt, archive];
    if empty {
        let mut empty = Folder::new("Empty", Vec::new());
        empty.uidvalidity = 1_600_000_004;
        folders.push(empty);
    }
    write_maildir(root, &folders);
    let mut i = 0;
    for f in &folders {
        let cur = folder_dir(root, &f.name).join("cur");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&cur)
            .expect("list cur")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for path in files {
            i += 1;
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(received(i)))
                .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
        }
    }
    let loc = maildir(root);
    for name in ["INBOX", PROJEKT, "Archive/2024"] {
        dc.mailbox_subscribe(&loc, name);
    }
}

/// A dbox made by Dovecot, and what Dovecot reports on it.
struct Fixture {
    dc: Dovecot,
    dir: Dir,
    kind: &'static str,
    root: PathBuf,
    want: View,
}

impl Fixture {
    /// Builds a `kind` (`sdbox` or `mdbox`) store: `doveadm backup` from the source Maildir
    /// with index files written, then changes made by Dovecot in the dbox (a flag added, one
    /// removed, flags replaced, an expunge, a new message, a new mailbox with a message and a
    /// subscription, an unsubscription) that live only in the transaction log. With `empty`,
    /// the store also has an empty mailbox.
    fn new(kind: &'static str, empty: bool) -> Option<Fixture> {
        let dc = dovecot_or_skip()?;
        let dir = Dir::new();
        let src = dir.join("source");
        write_source(&dc, &src, empty);
        let root = dir.join(kind);
        let dove = format!("{kind}:{}", root.display());
        dc.prepare(&dove);
        let mut cmd = dc.doveadm(&maildir(&src));
        cmd.args(REWRITE_INDEX_OFTEN).arg("backup").arg(&dove);
        let out = cmd.output().expect("run doveadm backup");
        assert!(out.status.success(), "doveadm backup: {}", describe(&out));

        dc.flags_add(&dove, "INBOX", 7, "\\Flagged $Later");
        dc.flags_remove(&dove, "INBOX", 2, "\\Seen");
        dc.flags_replace(&dove, "INBOX", 5, "\\Answered Work");
        dc.expunge(&dove, "INBOX", 1);
        dc.save(&dove, PROJEKT, &message(14));
        dc.mailbox_create(&dove, NEU);
        dc.save(&dove, NEU, &message(15));
        dc.mailbox_subscribe(&dove, NEU);
        dc.mailbox_unsubscribe(&dove, "Archive/2024");

        let want = dovecot_view(&dc, &dove);
        // The scenario really has what it is meant to test.
        let uids = |name: &str| -> Vec<u32> { want.mail[name].iter().map(|m| m.uid).collect() };
        assert_eq!(uids("INBOX"), [2, 3, 4, 5, 6, 7], "{want:#?}");
        assert_eq!(uids(PROJEKT), [3, 7, 11, 15], "{want:#?}");
        assert_eq!(uids("Archive/2024"), [100, 101], "{want:#?}");
        assert_eq!(uids(NEU), [1], "{want:#?}");
        if empty {
            assert_eq!(want.status["Empty"], (1_600_000_004, 1, 0));
        }
        assert_eq!(want.subscriptions, ["INBOX", NEU, PROJEKT]);
        let inbox = &want.mail["INBOX"];
        assert_eq!(
            inbox[1].flags,
            ["\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen"]
        );
        assert_eq!(inbox[3].flags, ["Work", "\\Answered"]);
        assert_eq!(inbox[5].flags, ["$Later", "\\Flagged"]);
        assert!(!inbox[4].text.ends_with('\n'));
        assert_eq!(inbox[0].received, 1_650_000_000 + 2 * 86_461);
        assert!(
            root.join("mailboxes/INBOX/dbox-Mails/dovecot.index")
                .exists(),
            "the backup wrote no dovecot.index"
        );
        Some(Fixture {
            dc,
            dir,
            kind,
            root,
            want,
        })
    }

    /// The location as Dovecot is given it.
    fn dove(&self) -> String {
        format!("{}:{}", self.kind, self.root.display())
    }

    /// The location as boxsync is given it: its own index in the temporary directory.
    fn loc(&self) -> String {
        format!(
            "{}:{}:INDEX={}",
            self.kind,
            self.root.display(),
            self.dir
                .join(format!("boxsync-index-{}", self.kind))
                .display()
        )
    }

    /// The `dbox-Mails` directory of a mailbox.
    fn mailbox_dir(&self, name: &str) -> PathBuf {
        name.split('/')
            .fold(self.root.join("mailboxes"), |d, part| {
                d.join(boxsync_model::mutf7::encode(part))
            })
            .join("dbox-Mails")
    }
}

// ---- running boxsync ----

/// `boxsync -o mail_location=LOCAL -o mail_fsync=never EXTRA… ARGS…` with `XDG_STATE_HOME` in
/// `dir` and `TZ=UTC`.
fn run(dir: &Dir, local: &str, extra: &[String], args: &[&str]) -> Output {
    boxsync()
        .env("XDG_STATE_HOME", dir.join("xdg-state"))
        .env("TZ", "UTC")
        .arg("-o")
        .arg(format!("mail_location={local}"))
        .args(["-o", "mail_fsync=never"])
        .args(extra)
        .args(args)
        .output()
        .expect("run boxsync")
}

/// Every file under `root` (relative path) with its bytes and mtime, and every directory;
/// boxsync's index files only `with_index` (a run may update them).
type Snapshot = BTreeMap<String, Option<(Vec<u8>, SystemTime)>>;

fn snapshot(root: &Path, with_index: bool) -> Snapshot {
    fn walk(root: &Path, dir: &Path, with_index: bool, out: &mut Snapshot) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if !with_index && support::is_index_file(&rel) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                out.insert(rel, None);
                walk(root, &path, with_index, out);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                out.insert(rel, Some((bytes, meta.modified().expect("mtime"))));
            }
        }
    }
    let mut out = Snapshot::new();
    if root.exists() {
        out.insert(String::new(), None);
    }
    walk(root, root, with_index, &mut out);
    out
}

fn assert_untouched(before: &Snapshot, after: &Snapshot, what: &str) {
    let mut diffs = Vec::new();
    for (k, v) in before {
        match (v, after.get(k)) {
            (_, None) => diffs.push(format!("removed: {k:?}")),
            (Some((b, _)), Some(Some((b2, _)))) if b != b2 => {
                diffs.push(format!("bytes changed: {k}"))
            }
            (Some((_, m)), Some(Some((_, m2)))) if m != m2 => {
                diffs.push(format!("mtime changed: {k}"))
            }
            (None, Some(Some(_))) | (Some(_), Some(None)) => {
                diffs.push(format!("file/directory swapped: {k}"))
            }
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            diffs.push(format!("added: {k:?}"));
        }
    }
    assert!(diffs.is_empty(), "{what} changed:\n{}", diffs.join("\n"));
}

/// `want`'s messages as Dovecot serves them from an mbox boxsync wrote: a message without a
/// final line end carries the documented marker line and gets one.
fn as_in_mbox(mail: &BTreeMap<String, Vec<Msg>>) -> BTreeMap<String, Vec<Msg>> {
    mail.iter()
        .map(|(name, msgs)| {
            let mut msgs: Vec<Msg> = msgs
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    if !m.text.ends_with('\n') {
                        m.text = format!("{EOL_NONE}{}\n", m.text);
                    }
                    m
                })
                .collect();
            msgs.sort();
            (name.clone(), msgs)
        })
        .collect()
}

// ---- conversions ----

/// A Maildir made from the dbox is what Dovecot reports on the dbox: the same mailboxes,
/// subscriptions, UIDVALIDITY and UIDNEXT, UIDs, GUIDs, flags, keywords, received dates and
/// bytes.
fn check_to_maildir(fx: &Fixture) {
    let dest = fx.dir.join("maildir");
    let out = run(&fx.dir, &fx.loc(), &[], &["backup", &maildir(&dest)]);
    ok(&out, &format!("{} → maildir", fx.kind));
    assert_rerun_changes_nothing(fx, &dest, &["backup", &maildir(&dest)]);
    let got = dovecot_view(&fx.dc, &maildir(&dest));
    let what = format!("{} → maildir", fx.kind);
    assert_eq!(got.mailboxes, fx.want.mailboxes, "{what}: mailboxes");
    assert_eq!(
        got.subscriptions, fx.want.subscriptions,
        "{what}: subscriptions"
    );
    assert_eq!(
        got.status, fx.want.status,
        "{what}: UIDVALIDITY, UIDNEXT, counts"
    );
    assert_eq!(
        mail_of(&got, true, true),
        mail_of(&fx.want, true, true),
        "{what}: messages"
    );
}

/// An mbox tree made from the dbox reads back in Dovecot with the same mailboxes,
/// subscriptions, UIDVALIDITY, UIDs, flags, keywords, received dates and bytes (but for the
/// documented marker of a message without a final line end).
fn check_to_mbox(fx: &Fixture) {
    let dest = fx.dir.join("mbox");
    let bs = format!("mbox:{}", dest.display());
    let out = run(&fx.dir, &fx.loc(), &[], &["backup", &bs]);
    ok(&out, &format!("{} → mbox", fx.kind));
    assert_rerun_changes_nothing(fx, &dest, &["backup", &bs]);
    let dove = format!("mbox:{}:INBOX={}/inbox", dest.display(), dest.display());
    let got = dovecot_view(&fx.dc, &dove);
    let what = format!("{} → mbox", fx.kind);
    assert_eq!(got.mailboxes, fx.want.mailboxes, "{what}: mailboxes");
    assert_eq!(
        got.subscriptions, fx.want.subscriptions,
        "{what}: subscriptions"
    );
    // An empty mbox folder has no first message to carry its UIDVALIDITY.
    assert_eq!(
        uidvalidities(&got),
        uidvalidities(&fx.want),
        "{what}: UIDVALIDITY"
    );
    assert_eq!(
        mail_of(&got, true, false),
        as_in_mbox(&mail_of(&fx.want, true, false)),
        "{what}: messages"
    );
}

/// Reruns `boxsync backup` from the dbox: exit 0, and no file of the destination (but
/// boxsync's index) is added, removed, rewritten or touched.
fn assert_rerun_changes_nothing(fx: &Fixture, dest: &Path, args: &[&str]) {
    let before = snapshot(dest, false);
    let dbox = snapshot(&fx.root, true);
    let out = run(&fx.dir, &fx.loc(), &[], args);
    ok(&out, &format!("rerun of {} {args:?}", fx.kind));
    assert_untouched(
        &before,
        &snapshot(dest, false),
        &format!("the destination of a rerun of {} {args:?}", fx.kind),
    );
    assert_untouched(
        &dbox,
        &snapshot(&fx.root, true),
        &format!("the {} source", fx.kind),
    );
}

/// An IMAP account filled from the dbox holds the same mailboxes, subscriptions, flags,
/// keywords, received dates and bytes (the server numbers the mail itself); a rerun changes
/// nothing in it.
fn check_to_imap_account(fx: &Fixture) {
    let Some(im) = Imapd::start_with(&["alice"]) else {
        return;
    };
    let account = im.imapc_args("alice");
    let idx = format!("imapc:{}", fx.dir.join("imapc-index").display());
    let what = format!("{} → IMAP account", fx.kind);
    let out = run(&fx.dir, &fx.loc(), &account, &["backup", &idx]);
    ok(&out, &what);

    let server = im.user_location("alice");
    let adc = im.dovecot();
    let state = |dc: &Dovecot| {
        (
            dc.fetch_fields(&server, "mailbox uid flags modseq", &["ALL"]),
            dc.mailbox_status(&server),
        )
    };
    let before = state(adc);
    let dbox = snapshot(&fx.root, true);
    let out = run(&fx.dir, &fx.loc(), &account, &["backup", &idx]);
    ok(&out, &format!("rerun of {what}"));
    assert_eq!(state(adc), before, "a rerun of {what} changed the account");
    assert_untouched(
        &dbox,
        &snapshot(&fx.root, true),
        &format!("the {} source", fx.kind),
    );

    let got = dovecot_view(adc, &server);
    assert_eq!(got.mailboxes, fx.want.mailboxes, "{what}: mailboxes");
    assert_eq!(
        got.subscriptions, fx.want.subscriptions,
        "{what}: subscriptions"
    );
    assert_eq!(
        mail_of(&got, false, false),
        mail_of(&fx.want, false, false),
        "{what}: messages"
    );
}

fn converts_everywhere(kind: &'static str, empty: bool) {
    let Some(fx) = Fixture::new(kind, empty) else {
        return;
    };
    let dbox = snapshot(&fx.root, true);
    check_to_maildir(&fx);
    check_to_mbox(&fx);
    check_to_imap_account(&fx);
    // boxsync wrote nothing into the dbox (its index is in INDEX=).
    assert_untouched(&dbox, &snapshot(&fx.root, true), &format!("the {kind}"));
    assert!(
        !fx.dir.join("xdg-state").exists(),
        "boxsync wrote under XDG_STATE_HOME although INDEX= was given"
    );
}

#[test]
fn sdbox_converts_to_maildir_mbox_and_an_imap_account_and_a_rerun_changes_nothing() {
    converts_everywhere("sdbox", true);
}

#[test]
fn mdbox_converts_to_maildir_mbox_and_an_imap_account_and_a_rerun_changes_nothing() {
    converts_everywhere("mdbox", true);
}

/// Without `INDEX=`, boxsync keeps its index of a dbox under
/// `$XDG_STATE_HOME/boxsync/<kind>/<root path with / as _>`, never in the store; a rerun
/// finds it there and changes nothing.
#[test]
fn without_index_option_the_index_goes_under_xdg_state_home() {
    let Some(fx) = Fixture::new("sdbox", true) else {
        return;
    };
    let dbox = snapshot(&fx.root, true);
    let dest = fx.dir.join("maildir");
    let args = ["backup", &maildir(&dest)];
    ok(&run(&fx.dir, &fx.dove(), &[], &args), "sdbox → maildir");
    let flat: String = fx
        .root
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "_");
    let index = fx
        .dir
        .join("xdg-state/boxsync/sdbox")
        .join(flat)
        .join("boxsync.index.sqlite");
    assert!(index.is_file(), "no index at {}", index.display());
    let before = snapshot(&dest, false);
    ok(&run(&fx.dir, &fx.dove(), &[], &args), "rerun");
    assert_untouched(
        &before,
        &snapshot(&dest, false),
        "the Maildir after a rerun",
    );
    assert_untouched(&dbox, &snapshot(&fx.root, true), "the sdbox");
}

// ---- sync -1 ----

/// `sync -1` from a dbox: into an empty Maildir it copies everything; after changes on both
/// sides the dbox's changes arrive, the Maildir's own changes stay, and the dbox is untouched.
fn sync_one_way_merges(kind: &'static str, empty: bool) {
    let Some(fx) = Fixture::new(kind, empty) else {
        return;
    };
    let dest = fx.dir.join("maildir");
    let dl = maildir(&dest);
    let dbox = snapshot(&fx.root, true);
    ok(
        &run(&fx.dir, &fx.loc(), &[], &["sync", "-1", &dl]),
        &format!("{kind} sync -1 into an empty Maildir"),
    );
    assert_untouched(&dbox, &snapshot(&fx.root, true), &format!("the {kind}"));
    let got = dovecot_view(&fx.dc, &dl);
    assert_eq!(got.mailboxes, fx.want.mailboxes);
    assert_eq!(got.subscriptions, fx.want.subscriptions);
    assert_eq!(got.status, fx.want.status);
    assert_eq!(mail_of(&got, true, true), mail_of(&fx.want, true, true));

    // Dovecot changes the dbox; the Maildir gets mail, a keyword and a mailbox of its own.
    let dove = fx.dove();
    fx.dc.flags_add(&dove, "INBOX", 4, "\\Flagged");
    fx.dc.save(&dove, "Archive/2024", &message(20));
    fx.dc.expunge(&dove, PROJEKT, 3);
    fx.dc.save(&dl, "INBOX", &message(21));
    fx.dc.flags_add(&dl, "Archive/2024", 101, "$Mine");
    fx.dc.mailbox_create(&dl, "Local");
    fx.dc.save(&dl, "Local", &message(22));
    let src = dovecot_view(&fx.dc, &dove);
    let mine = dovecot_view(&fx.dc, &dl);

    let dbox = snapshot(&fx.root, true);
    ok(
        &run(&fx.dir, &fx.loc(), &[], &["sync", "-1", &dl]),
        &format!("{kind} sync -1 after changes on both sides"),
    );
    assert_untouched(&dbox, &snapshot(&fx.root, true), &format!("the {kind}"));

    // What the Maildir must hold: the dbox's mail, plus its own new messages and keyword.
    let own = |text: &[u8]| -> (String, Msg) {
        let text = String::from_utf8(text.to_vec()).expect("UTF-8");
        mine.mail
            .iter()
            .flat_map(|(name, msgs)| msgs.iter().map(move |m| (name.clone(), m.clone())))
            .find(|(_, m)| m.text == text)
            .expect("the Maildir's own message")
    };
    let mut want = src.clone();
    for (name, m) in [own(&message(21)), own(&message(22))] {
        want.mail.entry(name).or_default().push(m);
    }
    for m in want.mail.get_mut("Archive/2024").expect("Archive/2024") {
        if m.uid == 101 {
            m.flags.insert(0, "$Mine".to_owned());
        }
    }
    let got = dovecot_view(&fx.dc, &dl);
    let mut names = src.mailboxes.clone();
    names.push("Local".to_owned());
    names.sort();
    assert_eq!(got.mailboxes, names, "{kind} sync -1: mailboxes");
    assert_eq!(got.subscriptions, src.subscriptions, "{kind} sync -1");
    assert_eq!(
        mail_of(&got, true, true),
        mail_of(&want, true, true),
        "{kind} sync -1: messages"
    );

    // And once more: nothing to do.
    let before = snapshot(&dest, false);
    ok(
        &run(&fx.dir, &fx.loc(), &[], &["sync", "-1", &dl]),
        &format!("{kind} sync -1 rerun"),
    );
    assert_untouched(
        &before,
        &snapshot(&dest, false),
        "the Maildir after a rerun",
    );
}

#[test]
fn sync_one_way_from_an_sdbox_merges_into_a_maildir() {
    sync_one_way_merges("sdbox", true);
}

#[test]
fn sync_one_way_from_an_mdbox_merges_into_a_maildir() {
    sync_one_way_merges("mdbox", true);
}

// ---- refusals ----

/// Every way of making a dbox a side the sync writes to ends with exit 64 and a message that
/// names the dbox, before anything is created or changed on either side (boxsync's index
/// included).
#[test]
fn writing_into_a_dbox_is_refused_before_anything_happens() {
    let Some(fx) = Fixture::new("sdbox", true) else {
        return;
    };
    let mdbox_root = fx.dir.join("mdbox");
    let out = fx.dc.sync(
        &fx.dove(),
        &format!("mdbox:{}", mdbox_root.display()),
        &["backup"],
    );
    assert!(out.status.success(), "doveadm backup: {}", describe(&out));
    let md = fx.dir.join("maildir");
    write_maildir(
        &md,
        &[Folder::new("INBOX", vec![Mail::new(message(30), "S")])],
    );

    let sdbox = fx.loc();
    let sdbox_name = fx.dove();
    let mdbox = format!(
        "mdbox:{}:INDEX={}",
        mdbox_root.display(),
        fx.dir.join("mdbox-index").display()
    );
    let mdbox_name = format!("mdbox:{}", mdbox_root.display());
    let missing_root = fx.dir.join("no-such-sdbox");
    let missing = format!(
        "sdbox:{}:INDEX={}",
        missing_root.display(),
        fx.dir.join("no-such-index").display()
    );
    let missing_name = format!("sdbox:{}", missing_root.display());
    let ml = maildir(&md);
    let new_maildir = maildir(&fx.dir.join("no-such-maildir"));
    let cases: [(&str, &[&str], &str, &str); 10] = [
        (&ml, &["backup"], &sdbox, &sdbox_name),
        (&ml, &["backup"], &missing, &missing_name),
        (&ml, &["sync", "-1"], &mdbox, &mdbox_name),
        (&ml, &["sync"], &mdbox, &mdbox_name),
        (&mdbox, &["sync"], &ml, &mdbox_name),
        (&mdbox, &["sync"], &new_maildir, &mdbox_name),
        (&sdbox, &["backup", "-R"], &ml, &sdbox_name),
        (&sdbox, &["backup", "-R"], &new_maildir, &sdbox_name),
        (&sdbox, &["sync", "-1", "-R"], &ml, &sdbox_name),
        (&sdbox, &["backup"], &mdbox, &mdbox_name),
    ];
    let before = snapshot(fx.dir.path(), true);
    for (local, args, dest, refused) in cases {
        let what = format!("-o mail_location={local} {} {dest}", args.join(" "));
        let mut all = args.to_vec();
        all.push(dest);
        let out = run(&fx.dir, local, &[], &all);
        assert_eq!(code(&out), 64, "{what}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message =
            format!("{refused} is read-only: boxsync reads Dovecot's dbox but does not write it");
        assert!(stderr.contains(&message), "{what}: {}", describe(&out));
        assert!(!stderr.contains("panicked"), "{what}: {}", describe(&out));
        assert_untouched(
            &before,
            &snapshot(fx.dir.path(), true),
            &format!("the stores after {what}"),
        );
    }
}

// ---- broken input ----

/// Overwrites every `dovecot.index*` file in `dir` with garbage; returns how many there were.
fn garble_index_files(dir: &Path) -> usize {
    let garbage = b"this is not a dovecot index file, just garbage bytes\n".repeat(20);
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("list mailbox directory") {
        let path = e.expect("entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("dovecot.index") {
            std::fs::write(&path, &garbage).expect("write garbage");
            n += 1;
        }
    }
    n
}

/// An mdbox whose one mailbox has garbage for index files: `backup` converts the other
/// mailboxes, names the broken one, exits 65; a destination that already had that mailbox
/// keeps it as it was.
#[test]
fn an_mdbox_mailbox_with_garbage_index_files_is_reported_and_the_others_convert() {
    let Some(fx) = Fixture::new("mdbox", false) else {
        return;
    };
    // One destination made while the mdbox was whole, one new.
    let earlier = fx.dir.join("earlier");
    ok(
        &run(&fx.dir, &fx.loc(), &[], &["backup", &maildir(&earlier)]),
        "backup of the whole mdbox",
    );
    let earlier_view = dovecot_view(&fx.dc, &maildir(&earlier));
    assert!(garble_index_files(&fx.mailbox_dir(PROJEKT)) >= 2);

    let mut want = fx.want.clone();
    want.mail.remove(PROJEKT);
    for (dest, what) in [
        (&earlier, "the earlier backup"),
        (&fx.dir.join("new"), "a new Maildir"),
    ] {
        let out = run(&fx.dir, &fx.loc(), &[], &["backup", &maildir(dest)]);
        assert_eq!(code(&out), 65, "{what}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{what}: {}", describe(&out));
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("Error")).collect();
        let prefix = format!("boxsync: Error: {}: mailbox {PROJEKT}: ", fx.dove());
        assert!(
            errors.len() == 1 && errors[0].starts_with(&prefix),
            "{what}: one error, naming {PROJEKT}: {}",
            describe(&out)
        );
        assert!(errors[0].contains("cannot be read"), "{}", errors[0]);
        let got = dovecot_view(&fx.dc, &maildir(dest));
        let mut got_others = got.clone();
        got_others.mail.remove(PROJEKT);
        assert_eq!(
            mail_of(&got_others, true, false),
            mail_of(&want, true, false),
            "{what}: the other mailboxes"
        );
        if dest == &earlier {
            assert_eq!(
                got.mail.get(PROJEKT),
                earlier_view.mail.get(PROJEKT),
                "{what}: the broken mailbox was changed in the destination"
            );
        } else {
            assert!(
                !got.mail.contains_key(PROJEKT),
                "{what}: mail of the broken mailbox: {:?}",
                got.mail.get(PROJEKT)
            );
        }
    }
}

/// An sdbox whose `dovecot.index` files are gone (the rotated log alone does not go back far
/// enough) still converts from its message files, with a warning naming each such mailbox:
/// into an earlier backup nothing changes (the flags are the ones boxsync saw last), and into
/// a new Maildir with a boxsync that never saw the store every message arrives with its UID,
/// GUID, received date and bytes, and without flags.
#[test]
fn an_sdbox_without_dovecot_index_converts_from_its_message_files() {
    let Some(fx) = Fixture::new("sdbox", true) else {
        return;
    };
    let earlier = fx.dir.join("earlier");
    ok(
        &run(&fx.dir, &fx.loc(), &[], &["backup", &maildir(&earlier)]),
        "backup of the whole sdbox",
    );
    let mut lost = Vec::new();
    for name in fx.want.status.keys() {
        let index = fx.mailbox_dir(name).join("dovecot.index");
        if index.exists() {
            std::fs::remove_file(&index).expect("remove dovecot.index");
            lost.push(name.clone());
        }
    }
    assert_eq!(lost, ["Archive/2024", "Empty", "INBOX", PROJEKT]);

    let check_warnings = |out: &Output, what: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        for name in lost.iter().filter(|n| fx.want.mail.contains_key(*n)) {
            assert!(
                stderr
                    .lines()
                    .any(|l| l.contains(&format!("sdbox mailbox {name}: "))
                        && l.contains("dovecot.index is missing")),
                "{what}: no warning about {name}: {}",
                describe(out)
            );
        }
    };

    // The earlier destination: nothing to change.
    let before = snapshot(&earlier, false);
    let out = run(&fx.dir, &fx.loc(), &[], &["backup", &maildir(&earlier)]);
    ok(&out, "backup into the earlier destination");
    check_warnings(&out, "backup into the earlier destination");
    assert_untouched(&before, &snapshot(&earlier, false), "the earlier backup");
    assert_eq!(dovecot_view(&fx.dc, &maildir(&earlier)), fx.want);

    // A boxsync that never saw the store.
    let dest = fx.dir.join("new");
    let fresh = format!(
        "sdbox:{}:INDEX={}",
        fx.root.display(),
        fx.dir.join("fresh-index").display()
    );
    let out = run(&fx.dir, &fresh, &[], &["backup", &maildir(&dest)]);
    ok(&out, "sdbox without dovecot.index → maildir");
    check_warnings(&out, "sdbox without dovecot.index → maildir");
    let got = dovecot_view(&fx.dc, &maildir(&dest));
    assert_eq!(got.mailboxes, fx.want.mailboxes);
    let mut want = mail_of(&fx.want, true, true);
    for name in &lost {
        for m in want.get_mut(name).into_iter().flatten() {
            m.flags.clear();
        }
    }
    assert_eq!(mail_of(&got, true, true), want, "messages");
}

// ---- regressions ----

/// An empty mdbox mailbox, as `doveadm mailbox create` leaves it, has no "mdbox" record
/// extension (Dovecot registers it with the first message saved): it is empty, not broken.
#[test]
fn an_empty_mdbox_mailbox_converts() {
    let Some(dc) = dovecot_or_skip() else { return };
    let dir = Dir::new();
    let root = dir.join("mdbox");
    let dove = format!("mdbox:{}", root.display());
    dc.save(&dove, "INBOX", &message(1));
    dc.mailbox_create(&dove, "Empty");
    let loc = format!("{dove}:INDEX={}", dir.join("index").display());
    let dest = maildir(&dir.join("maildir"));
    ok(&run(&dir, &loc, &[], &["backup", &dest]), "mdbox → maildir");
    assert_eq!(dc.mailbox_list(&dest), ["Empty", "INBOX"]);
}

/// mdbox message GUIDs are the ones Dovecot reports: the message file's `G`, not the index's
/// `guid` record extension, which holds a hash for a GUID that is not 128 bits (every message
/// migrated from a Maildir, whose GUID is its file's base name).
#[test]
fn mdbox_keeps_the_message_guids_dovecot_reports() {
    let Some(dc) = dovecot_or_skip() else { return };
    let dir = Dir::new();
    let src = maildir(&dir.join("source"));
    dc.save(&src, "INBOX", &message(1));
    let dove = format!("mdbox:{}", dir.join("mdbox").display());
    let out = dc.sync(&src, &dove, &["backup"]);
    assert!(out.status.success(), "doveadm backup: {}", describe(&out));
    let want = dc.fetch(&dove);
    let loc = format!("{dove}:INDEX={}", dir.join("index").display());
    let dest = maildir(&dir.join("maildir"));
    ok(&run(&dir, &loc, &[], &["backup", &dest]), "mdbox → maildir");
    assert_eq!(dc.fetch(&dest), want);
}
