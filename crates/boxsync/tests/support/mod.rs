//! Maildir fixtures for the `cli`, `bad_input` and `crash` tests: writing Dovecot-style
//! Maildirs directly (files named as Dovecot names them, `dovecot-uidlist` v3 and
//! `dovecot-keywords`), reading one back as an IMAP client would see it, and byte snapshots of
//! whole trees.
//!
//! Each of those test binaries includes this with `mod support;` and uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A small deterministic generator (SplitMix64), so that failures reproduce from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// One message to write: its bytes and the letters after `:2,` (system flags in upper case,
/// keyword letters `a`… indexing the folder's `dovecot-keywords`).
#[derive(Clone, Debug)]
pub struct Mail {
    pub body: Vec<u8>,
    pub flags: String,
    /// Where the file goes: `new/` (no `:2,` suffix, as an MDA delivers) or `cur/`.
    pub in_new: bool,
    /// A base name without Dovecot's `,S=` and `,W=` sizes, as other programs name files.
    pub plain_name: bool,
}

impl Mail {
    pub fn new(body: Vec<u8>, flags: &str) -> Mail {
        Mail {
            body,
            flags: flags.to_owned(),
            in_new: false,
            plain_name: false,
        }
    }
}

/// One folder to write: its IMAP name (`/`-separated; `INBOX` is the root), its
/// mailbox GUID (by default derived from the name, so that folders of the same name in two
/// stores are the same mailbox, as after an earlier sync), UIDVALIDITY, the first UID and the
/// step between UIDs (gaps are what expunges leave), and its keyword names (letter `a` is the
/// first).
#[derive(Clone, Debug)]
pub struct Folder {
    pub name: String,
    pub guid: u128,
    pub uidvalidity: u32,
    pub first_uid: u32,
    pub uid_step: u32,
    pub keywords: Vec<String>,
    pub mails: Vec<Mail>,
}

impl Folder {
    pub fn new(name: &str, mails: Vec<Mail>) -> Folder {
        // FNV-1a, 128 bits.
        let guid = name
            .bytes()
            .fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58du128, |h, b| {
                (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
            });
        Folder {
            name: name.to_owned(),
            guid,
            uidvalidity: 1_700_000_000,
            first_uid: 1,
            uid_step: 1,
            keywords: vec!["$Important".to_owned(), "Work".to_owned()],
            mails,
        }
    }
}

/// The directory of a folder in a Maildir++ store (ASCII names only).
pub fn folder_dir(root: &Path, name: &str) -> PathBuf {
    if name == "INBOX" {
        root.to_path_buf()
    } else {
        root.join(format!(".{}", name.replace('/', ".")))
    }
}

/// A unique Dovecot-style base name, `<time>.M<usecs>P<pid>.<host>,S=<size>,W=<vsize>`, or
/// with `plain` one without the sizes.
fn base_name(serial: u64, body: &[u8], plain: bool) -> String {
    let name = format!(
        "{}.M{}P{}.fixture",
        1_700_000_000 + serial,
        serial * 7 % 1_000_000,
        4242
    );
    if plain {
        return name;
    }
    format!("{name}{}", dovecot_sizes(body))
}

/// `,S=<size>,W=<vsize>` as Dovecot appends them to a base name: the size, and the size with
/// CRLF line ends.
pub fn dovecot_sizes(body: &[u8]) -> String {
    let bare_lf = body
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || body[i - 1] != b'\r'))
        .count();
    format!(",S={},W={}", body.len(), body.len() + bare_lf)
}

/// Writes `folders` as a Maildir++ store under `root`, as Dovecot would have left it: every
/// file named in `dovecot-uidlist` (v3, with a mailbox GUID) and keywords in
/// `dovecot-keywords`. Returns nothing; read it back with [`read_maildir`].
pub fn write_maildir(root: &Path, folders: &[Folder]) {
    // Unique across calls, so that two stores written by one test never share a base name
    // (which, without a `G` field, is the message GUID).
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for f in folders {
        let dir = folder_dir(root, &f.name);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create maildir");
        }
        if f.name != "INBOX" {
            std::fs::write(dir.join("maildirfolder"), b"").expect("write maildirfolder");
        }
        let mut uidlist = String::new();
        let mut uid = f.first_uid;
        let mut records = String::new();
        for m in &f.mails {
            let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let base = base_name(serial, &m.body, m.plain_name);
            let path = if m.in_new {
                dir.join("new").join(&base)
            } else {
                dir.join("cur").join(format!("{base}:2,{}", m.flags))
            };
            std::fs::write(&path, &m.body).expect("write message");
            records.push_str(&format!("{uid} :{base}\n"));
            uid += f.uid_step;
        }
        uidlist.push_str(&format!("3 V{} N{uid} G{:032x}\n", f.uidvalidity, f.guid));
        uidlist.push_str(&records);
        std::fs::write(dir.join("dovecot-uidlist"), uidlist).expect("write uidlist");
        if !f.keywords.is_empty() {
            let text: String = f
                .keywords
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{i} {k}\n"))
                .collect();
            std::fs::write(dir.join("dovecot-keywords"), text).expect("write keywords");
        }
    }
}

/// Adds a message to a folder of a Maildir++ store as Dovecot itself would: the file in `cur/`
/// named with its sizes and a `dovecot-uidlist` record with the next UID (so no other program
/// needs to assign one). Returns the UID.
pub fn deliver(root: &Path, folder: &str, body: &[u8], flags: &str) -> u32 {
    deliver_all(root, folder, &[(body, flags)], true)
}

/// [`deliver`] for many messages at once (one uidlist rewrite), with file names without
/// Dovecot's sizes unless `dovecot_names`. Returns the first UID.
pub fn deliver_all(root: &Path, folder: &str, mails: &[(&[u8], &str)], dovecot_names: bool) -> u32 {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = folder_dir(root, folder);
    let path = dir.join("dovecot-uidlist");
    let text = std::fs::read_to_string(&path).expect("read uidlist");
    let (header, records) = text.split_once('\n').unwrap_or((&text, ""));
    // As Dovecot does: the header's N lags behind appended records, the last one counts too.
    let after_last = records
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse::<u32>().ok())
        .max()
        .map_or(0, |uid| uid + 1);
    let mut first = 0;
    let header: Vec<String> = header
        .split(' ')
        .map(|item| match item.strip_prefix('N') {
            Some(n) => {
                first = after_last.max(n.parse().expect("N in uidlist header"));
                format!("N{}", first + mails.len() as u32)
            }
            None => item.to_owned(),
        })
        .collect();
    assert!(first > 0, "no N in {}", path.display());
    let mut records = records.to_owned();
    for (i, (body, flags)) in mails.iter().enumerate() {
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let base = format!(
            "{}.M{serial}P{}.delivered{}",
            1_800_000_000 + serial,
            std::process::id(),
            if dovecot_names {
                dovecot_sizes(body)
            } else {
                String::new()
            }
        );
        std::fs::write(dir.join("cur").join(format!("{base}:2,{flags}")), body)
            .expect("write message");
        records.push_str(&format!("{} :{base}\n", first + i as u32));
    }
    std::fs::write(&path, format!("{}\n{records}", header.join(" "))).expect("write uidlist");
    first
}

/// One message as an IMAP client would see it.
#[derive(Clone, PartialEq, Eq)]
pub struct MessageView {
    pub guid: String,
    /// `\Seen`-style system flags and keyword names; letters no table explains as `?x`.
    pub flags: BTreeSet<String>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for MessageView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageView")
            .field("guid", &self.guid)
            .field("flags", &self.flags)
            .field("body", &format_args!("{} bytes", self.body.len()))
            .finish()
    }
}

/// One mailbox as an IMAP client would see it, plus what no client should ever find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxView {
    pub uidvalidity: u32,
    pub guid: Option<String>,
    pub messages: BTreeMap<u32, MessageView>,
}

/// A whole store: mailboxes by IMAP name, and problems (files in `cur/`/`new/` that the
/// uidlist does not name, two files with one base name, unparsable uidlist lines, leftover
/// directories of deleted folders).
#[derive(Clone, Debug, Default)]
pub struct StoreView {
    pub mailboxes: BTreeMap<String, MailboxView>,
    pub problems: Vec<String>,
}

impl StoreView {
    /// Every message body with how often it occurs in the store.
    pub fn body_counts(&self) -> BTreeMap<Vec<u8>, usize> {
        let mut counts = BTreeMap::new();
        for mb in self.mailboxes.values() {
            for m in mb.messages.values() {
                *counts.entry(m.body.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    pub fn message_count(&self) -> usize {
        self.mailboxes.values().map(|m| m.messages.len()).sum()
    }
}

/// Reads a Maildir++ store: `dovecot-uidlist` for UIDs and GUIDs, `dovecot-keywords` for
/// keyword letters, the files for flags and bytes.
pub fn read_maildir(root: &Path) -> StoreView {
    let mut view = StoreView::default();
    let mut dirs = vec![("INBOX".to_owned(), root.to_path_buf())];
    for entry in std::fs::read_dir(root).expect("list maildir root") {
        let entry = entry.expect("list maildir root");
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_dir() {
            continue;
        }
        if name.starts_with("..") {
            view.problems
                .push(format!("leftover directory {}", entry.path().display()));
        } else if let Some(stored) = name.strip_prefix('.') {
            dirs.push((stored.replace('.', "/"), entry.path()));
        }
    }
    for (name, dir) in dirs {
        if let Some(mb) = read_folder(&dir, &mut view.problems) {
            view.mailboxes.insert(name, mb);
        }
    }
    view
}

fn read_folder(dir: &Path, problems: &mut Vec<String>) -> Option<MailboxView> {
    let uidlist = std::fs::read_to_string(dir.join("dovecot-uidlist")).ok()?;
    let mut lines = uidlist.lines();
    let header = lines.next().unwrap_or("");
    let mut uidvalidity = 0;
    let mut guid = None;
    for item in header.split(' ').skip(1) {
        if let Some(v) = item.strip_prefix('V') {
            uidvalidity = v.parse().unwrap_or(0);
        } else if let Some(g) = item.strip_prefix('G') {
            guid = Some(g.to_owned());
        }
    }
    let keywords: BTreeMap<char, String> = std::fs::read_to_string(dir.join("dovecot-keywords"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (i, name) = l.split_once(' ')?;
            let i: u8 = i.parse().ok()?;
            (i < 26).then(|| (char::from(b'a' + i), name.to_owned()))
        })
        .collect();
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for sub in ["cur", "new"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = name.split(':').next().unwrap_or(&name).to_owned();
            if let Some(old) = files.insert(base.clone(), e.path()) {
                problems.push(format!(
                    "two files with base name {base}: {} and {}",
                    old.display(),
                    e.path().display()
                ));
            }
        }
    }
    let mut messages = BTreeMap::new();
    for line in lines {
        let Some((items, base)) = line.split_once(" :") else {
            problems.push(format!(
                "{}: bad uidlist line {line:?}",
                dir.join("dovecot-uidlist").display()
            ));
            continue;
        };
        let mut items = items.split(' ');
        let Some(uid) = items.next().and_then(|u| u.parse::<u32>().ok()) else {
            problems.push(format!("{}: bad UID in {line:?}", dir.display()));
            continue;
        };
        let msg_guid = items
            .find_map(|i| i.strip_prefix('G'))
            .unwrap_or(base)
            .to_owned();
        // A record without a file is mail another program expunged; Dovecot drops such
        // records lazily, at its next rewrite, and so may boxsync.
        let Some(path) = files.remove(base) else {
            continue;
        };
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let letters = file_name.split_once(":2,").map_or("", |(_, f)| f);
        let flags = letters
            .chars()
            .map(|c| match c {
                'D' => "\\Draft".to_owned(),
                'F' => "\\Flagged".to_owned(),
                'R' => "\\Answered".to_owned(),
                'S' => "\\Seen".to_owned(),
                'T' => "\\Deleted".to_owned(),
                'a'..='z' => keywords.get(&c).cloned().unwrap_or_else(|| format!("?{c}")),
                _ => format!("?{c}"),
            })
            .collect();
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let old = messages.insert(
            uid,
            MessageView {
                guid: msg_guid,
                flags,
                body,
            },
        );
        if old.is_some() {
            problems.push(format!("{}: UID {uid} listed twice", dir.display()));
        }
    }
    for (base, path) in files {
        problems.push(format!(
            "{}: file {base} is in no uidlist record",
            path.display()
        ));
    }
    Some(MailboxView {
        uidvalidity,
        guid,
        messages,
    })
}

/// Whether a file is one of boxsync's own index files, which may change in a source.
pub fn is_index_file(rel: &str) -> bool {
    rel.rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with("boxsync.index.sqlite"))
}

/// Every file and directory under `root` (relative paths) with its bytes (`None` for
/// directories), leaving out boxsync's index files.
pub fn tree_bytes(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
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
        if is_index_file(&rel) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        if meta.is_dir() {
            out.insert(rel, None);
            walk(root, &path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| format!("<{e}>").into_bytes());
            out.insert(rel, Some(bytes));
        }
    }
}

/// Asserts that two tree snapshots are equal, naming the paths that differ.
pub fn assert_same_tree(
    before: &BTreeMap<String, Option<Vec<u8>>>,
    after: &BTreeMap<String, Option<Vec<u8>>>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diffs.push(format!("removed: {k}")),
            Some(w) if w != v => diffs.push(format!("changed: {k}")),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            diffs.push(format!("added: {k}"));
        }
    }
    assert!(diffs.is_empty(), "{what} changed:\n{}", diffs.join("\n"));
}

/// Asserts that two stores look the same to an IMAP client and neither has stray files.
pub fn assert_same_store(src: &StoreView, dst: &StoreView) {
    assert!(
        src.problems.is_empty(),
        "source problems: {:#?}",
        src.problems
    );
    assert!(
        dst.problems.is_empty(),
        "destination problems: {:#?}",
        dst.problems
    );
    let names = |v: &StoreView| v.mailboxes.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(src), names(dst), "mailbox lists differ");
    for (name, a) in &src.mailboxes {
        let b = &dst.mailboxes[name];
        assert_eq!(a.uidvalidity, b.uidvalidity, "UIDVALIDITY of {name}");
        assert_eq!(a.guid, b.guid, "mailbox GUID of {name}");
        let uids = |m: &MailboxView| m.messages.keys().copied().collect::<Vec<_>>();
        assert_eq!(uids(a), uids(b), "UIDs of {name}");
        for (uid, m) in &a.messages {
            let n = &b.messages[uid];
            assert_eq!(m.guid, n.guid, "GUID of {name} UID {uid}");
            assert_eq!(m.flags, n.flags, "flags of {name} UID {uid}");
            assert!(m.body == n.body, "bytes of {name} UID {uid} differ");
        }
    }
}

/// A message of about `size` bytes whose content is unique to `n`.
pub fn sized_message(n: usize, size: usize, rng: &mut Rng) -> Vec<u8> {
    let mut m = format!(
        "From: Sender {n} <s{n}@example.org>\nTo: <r@example.com>\nSubject: Generated {n}\n\
         Date: Fri, 01 Mar 2024 09:00:00 +0000\nMessage-ID: <gen.{n}@boxsync.test>\n\n"
    )
    .into_bytes();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    while m.len() < size {
        let mut x = rng.next_u64();
        for _ in 0..10 {
            m.push(ALPHABET[(x % ALPHABET.len() as u64) as usize]);
            x /= ALPHABET.len() as u64;
        }
        if m.len() % 72 < 10 {
            m.push(b'\n');
        }
    }
    m.push(b'\n');
    m
}

/// `cp -a FROM TO`: a copy with times and modes kept, as a store's backup would be made.
pub fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// `Output` as text for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The exit code, or -1 when killed by a signal.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Mailbox name → sorted (flags, body) of its messages: what an IMAP client sees, whatever
/// the UIDs.
pub type Content = BTreeMap<String, Vec<(BTreeSet<String>, Vec<u8>)>>;

/// The [`Content`] of the Maildir at `root`, which must have no problems.
pub fn content_of(root: &Path) -> Content {
    let view = read_maildir(root);
    assert!(view.problems.is_empty(), "{:#?}", view.problems);
    view.mailboxes
        .into_iter()
        .map(|(name, mb)| {
            let mut msgs: Vec<_> = mb
                .messages
                .into_values()
                .map(|m| (m.flags, m.body))
                .collect();
            msgs.sort();
            (name, msgs)
        })
        .collect()
}

/// Asserts that two stores hold the same mailboxes with the same messages and flags.
pub fn assert_same_content(a: &Content, b: &Content, what: &str) {
    let names = |c: &Content| c.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "{what}: mailbox lists differ");
    for (name, msgs) in a {
        let other = &b[name];
        assert_eq!(msgs.len(), other.len(), "{what}: message count of {name}");
        for (i, (m, n)) in msgs.iter().zip(other).enumerate() {
            assert_eq!(m.0, n.0, "{what}: flags of message {i} in {name}");
            assert!(m.1 == n.1, "{what}: bytes of message {i} in {name} differ");
        }
    }
}

/// Asserts that a run exited 0 without a panic.
pub fn ok(out: &Output, what: &str) {
    assert_eq!(code(out), 0, "{what}: {}", describe(out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{what}: {}",
        describe(out)
    );
}
