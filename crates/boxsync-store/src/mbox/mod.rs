//! The mbox store: `mbox:ROOT[:INBOX=PATH][:INDEX=DIR]`. Each mail folder is a file, each
//! level of hierarchy a directory, names in modified UTF-7, as Dovecot lays them out; INBOX is
//! its own file (`ROOT/inbox` unless `INBOX=` says otherwise).
//!
//! UIDs, flags and keywords live in the messages' headers (`X-IMAPbase`, `X-UID`, `Status`,
//! `X-Status`, `X-Keywords`), so Dovecot and mutt read the same ones; those headers are not
//! part of the mail a reader sees (Dovecot hides them too). What mbox cannot hold — message and
//! mailbox GUIDs, modseqs, the expunge journal — is in boxsync's index, by default in
//! `ROOT/.imap/`, Dovecot's own index directory for an mbox root: Dovecot does not list it as
//! a folder (it lists any other directory, dotted or not), and the `dovecot.mailbox.log` there
//! is shared with Dovecot, as in a Maildir.
//!
//! Every change to a folder writes a new file beside it and renames it over the old one under
//! the dotlock and fcntl locks: a crash leaves the old file or the new one, never half of one.
//! Files are streamed message by message, never read whole into memory.

pub mod format;
mod lock;
mod writer;

use crate::maildir::format::mailbox_log::{self, LogKind, LogRecord};
use crate::maildir::format::subscriptions::{self, Subscriptions};
use crate::reconcile::{SIGNATURE_MARGIN_NS, Seen, now_ns, reconcile};
use crate::{ExpungedRow, HeaderUpdate, MailboxEntry, MailboxWriter, Message, Store, Tombstones};
use crate::{hdr_hash, location::expand_home};
use boxsync_index::{Index, MailboxRow};
use boxsync_model::error::IoContext;
use boxsync_model::{Error, Flags, Guid128, Keywords, MailboxName, Modseq, Result, Uid, mutf7};
use boxsync_proto::MailBody;
use format::{Flavor, ImapBase, MboxReader};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where Dovecot keeps an mbox root's subscriptions (any plain file is a folder there).
const SUBSCRIPTIONS: &str = ".subscriptions";

/// A parsed `mbox:` location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MboxLocation {
    pub root: PathBuf,
    pub inbox: PathBuf,
    pub index_dir: PathBuf,
}

impl MboxLocation {
    /// Whether `text` names an mbox location.
    pub fn is_mbox(text: &str) -> bool {
        text.starts_with("mbox:")
    }

    /// Parses `mbox:ROOT[:INBOX=PATH][:INDEX=DIR]`.
    pub fn parse(text: &str) -> Result<MboxLocation> {
        let rest = text.strip_prefix("mbox:").ok_or_else(|| {
            Error::Usage(format!("mail location {text:?} is not an mbox location"))
        })?;
        let mut parts = rest.split(':');
        let root = parts.next().unwrap_or("");
        if root.is_empty() {
            return Err(Error::Usage(format!(
                "mail location {text:?} has no path (expected mbox:ROOT[:INBOX=PATH])"
            )));
        }
        let root = expand_home(root);
        let mut loc = MboxLocation {
            inbox: root.join("inbox"),
            index_dir: root.join(".imap"),
            root,
        };
        for opt in parts {
            match opt.split_once('=') {
                Some(("INBOX", p)) if !p.is_empty() => loc.inbox = expand_home(p),
                Some(("INDEX", p)) if !p.is_empty() => loc.index_dir = expand_home(p),
                // Settings Dovecot knows that do not change what boxsync reads or writes.
                Some(("CONTROL" | "VOLATILEDIR" | "LAYOUT", _)) => {}
                _ => {
                    return Err(Error::Usage(format!(
                        "mail location {text:?}: unsupported option {opt:?}"
                    )));
                }
            }
        }
        Ok(loc)
    }

    pub fn describe(&self) -> String {
        format!("mbox:{}", self.root.display())
    }
}

/// One mail folder after a scan.
pub(crate) struct Folder {
    pub name: MailboxName,
    pub path: PathBuf,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: Modseq,
    pub count: u32,
    pub digest: u64,
    pub loaded: bool,
    pub messages: Vec<Message>,
    /// Each message's locator by UID: `OFFSET RECEIVED HASH` ([`Locator`]).
    pub files: BTreeMap<Uid, String>,
    /// Some UIDs exist in boxsync's index only (the file could not be written, or a dry
    /// run): a message is then checked by its header hash, not by its X-UID.
    pub uids_in_memory: bool,
}

/// Where a message is in its file, with what identifies it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Locator {
    pub offset: u64,
    pub received: i64,
    /// Header hash of the message as a reader sees it.
    pub hash: String,
}

impl Locator {
    pub(crate) fn encode(&self) -> String {
        format!("{} {} {}", self.offset, self.received, self.hash)
    }

    pub(crate) fn decode(s: &str) -> Option<Locator> {
        let mut it = s.split(' ');
        Some(Locator {
            offset: it.next()?.parse().ok()?,
            received: it.next()?.parse().ok()?,
            hash: it.next()?.to_owned(),
        })
    }
}

/// One message as read from a file.
#[derive(Clone, Debug)]
pub(crate) struct Scanned {
    pub offset: u64,
    pub uid: Option<Uid>,
    pub flags: Flags,
    pub keywords: Keywords,
    pub recent: bool,
    pub received: i64,
    pub hash: String,
    pub pop3_uidl: Option<String>,
}

/// A whole file as read.
pub(crate) struct FileScan {
    pub imapbase: Option<ImapBase>,
    pub messages: Vec<Scanned>,
}

/// The header hash that names a message no index has a GUID for (what Dovecot's dsync uses
/// for mbox, which has no GUIDs).
pub(crate) fn message_hash(visible: &[u8]) -> String {
    hdr_hash::header_hash(visible, hdr_hash::DEFAULT_HASHED_HEADERS, 3)
}

/// Reads every message's metadata from an open mbox file, one message in memory at a time.
pub(crate) fn scan_file(file: &std::fs::File, path: &Path) -> Result<FileScan> {
    let mut reader =
        MboxReader::new(BufReader::with_capacity(256 << 10, file), Flavor::Auto).headers_only();
    let mut out = FileScan {
        imapbase: None,
        messages: Vec::new(),
    };
    loop {
        let m = match reader.next_message() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(Error::data(format!("{}: {e}", path.display())));
            }
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        if m.truncated {
            tracing::warn!(
                "{}: the last message (at byte {}) is cut short; taking what is there",
                path.display(),
                m.offset
            );
        }
        let meta = format::parse_meta(&m.body);
        if out.messages.is_empty() {
            out.imapbase = meta.imapbase.clone();
        }
        // The hidden fields are not among the hashed ones: the hash of the message as it
        // stands is the hash of what a reader sees, without copying it.
        out.messages.push(Scanned {
            offset: m.offset,
            uid: meta.uid.filter(|&u| u > 0),
            flags: meta.flags,
            keywords: meta.keywords,
            recent: meta.recent,
            received: format::parse_from_line(&m.from_line).map_or(0, |(_, t)| t),
            hash: message_hash(&m.body),
            pop3_uidl: format::pop3_uidl(&m.body),
        });
    }
    Ok(out)
}

/// The message at `offset` as a reader sees it, checked to be the one boxsync listed there:
/// the same header hash, and the same X-UID unless its UID lives in boxsync's index only
/// (`uid_in_file` false). When the file was rewritten since the offset was taken (this sync
/// changed the folder, renumbering included, before the other side asked for the mail; or
/// another program did), the message is looked for through the whole file: by X-UID and hash,
/// else by hash alone.
pub(crate) fn find_message(
    path: &Path,
    offset: u64,
    uid: Uid,
    uid_in_file: bool,
    hash: &str,
) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut reader = MboxReader::new(BufReader::new(&f), Flavor::Auto);
    let is_it = |body: &[u8], by_uid: bool| {
        message_hash(body) == hash && (!by_uid || format::parse_meta(body).uid == Some(uid))
    };
    match reader.next_message() {
        Ok(Some(m)) if is_it(&m.body, uid_in_file) => return Ok(format::strip_hidden(&m.body)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {}
        Err(e) => return Err(e),
    }
    f.seek(std::io::SeekFrom::Start(0))?;
    let reader = MboxReader::new(BufReader::with_capacity(256 << 10, &f), Flavor::Auto);
    let mut same_hash = None;
    for m in reader {
        let m = m?;
        if is_it(&m.body, true) {
            return Ok(format::strip_hidden(&m.body));
        }
        if same_hash.is_none() && is_it(&m.body, false) {
            same_hash = Some(m.body);
        }
    }
    same_hash.map(|b| format::strip_hidden(&b)).ok_or_else(|| {
        // Gone meanwhile: a later sync finds what is there now.
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{}: UID {uid} is no longer in the file (it changed during the sync)",
                path.display()
            ),
        )
    })
}

/// (size, mtime in ns, inode): what tells that a file is unchanged.
fn file_signature(path: &Path) -> Option<(String, i128)> {
    let m = std::fs::metadata(path).ok()?;
    let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    Some((format!("mbox {} {} {}", m.len(), mtime, m.ino()), mtime))
}

/// Whether an error says that a file or its directory cannot be written (permissions, a
/// read-only file system), as opposed to a failure worth stopping for.
fn cannot_write(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
        ),
        Error::Permission(_) => true,
        _ => false,
    }
}

/// Gives messages without a valid X-UID the UID boxsync's index had for the same message (by
/// header hash), else the next free one, without touching the file.
fn assign_uids_in_memory(
    scan: &mut FileScan,
    old: &HashMap<Uid, boxsync_index::MessageRow>,
    uidnext: &mut Uid,
) {
    let valid: std::collections::HashSet<Uid> = {
        let mut last = 0;
        scan.messages
            .iter()
            .filter_map(|m| match m.uid {
                Some(u) if u > last => {
                    last = u;
                    Some(u)
                }
                _ => None,
            })
            .collect()
    };
    let mut by_hash: HashMap<String, Vec<Uid>> = HashMap::new();
    for (uid, row) in old {
        if !valid.contains(uid)
            && let Some(l) = Locator::decode(&row.file)
        {
            by_hash.entry(l.hash).or_default().push(*uid);
        }
    }
    for uids in by_hash.values_mut() {
        uids.sort_unstable();
    }
    let mut last = 0;
    for m in &mut scan.messages {
        let uid = match m.uid {
            Some(u) if u > last => u,
            _ => {
                let reused = by_hash.get_mut(&m.hash).and_then(|uids| {
                    let i = uids.iter().position(|&u| u > last)?;
                    Some(uids.remove(i))
                });
                match reused {
                    Some(u) => u,
                    None => {
                        let u = (*uidnext).max(last + 1);
                        *uidnext = u + 1;
                        u
                    }
                }
            }
        };
        m.uid = Some(uid);
        last = uid;
        *uidnext = (*uidnext).max(uid + 1);
    }
}

/// The file of a mailbox: INBOX's own, else the levels in modified UTF-7 under the root.
fn path_of(location: &MboxLocation, name: &MailboxName) -> PathBuf {
    if name.is_inbox() {
        return location.inbox.clone();
    }
    name.parts()
        .iter()
        .fold(location.root.clone(), |p, part| p.join(mutf7::encode(part)))
}

/// The longest level, as stored, that leaves room in a file name (NAME_MAX, 255) for the
/// temporary files a writer makes beside a folder (`.NAME.boxsync-spool-PID-N`).
const MAX_LEVEL: usize = 255 - 40;

/// Whether a level (as stored: modified UTF-7) cannot name an mbox file: the scan skips hidden
/// files (the index directory `.imap` is one) and takes `*.lock` for dotlocks.
fn reserved_level(encoded: &str) -> bool {
    encoded.starts_with('.') || encoded.ends_with(".lock")
}

/// Why this mbox root cannot hold `name`, or `None` when it can.
fn unfit(location: &MboxLocation, name: &MailboxName) -> Option<String> {
    if name.is_inbox() {
        return None;
    }
    for part in name.parts() {
        let encoded = mutf7::encode(part);
        if reserved_level(&encoded) {
            return Some(format!(
                "level {part:?} cannot be an mbox file name (it would be hidden or taken for a lock)"
            ));
        }
        if encoded.len() > MAX_LEVEL {
            return Some(format!(
                "level {part:?} is longer than {MAX_LEVEL} bytes as a file name"
            ));
        }
    }
    let path = path_of(location, name);
    (path == location.inbox || path.starts_with(&location.index_dir)).then(|| {
        format!(
            "{} is INBOX or the index directory of this mbox root",
            path.display()
        )
    })
}

/// The name a folder gets here for a mailbox another store calls `name`
/// ([`crate::Store::fix_name`]): a hidden or lock-like level gets `_` in front (`.x` → `_.x`)
/// or its `.lock` turned into `alt` + `lock`. `None` when it still does not fit.
fn fix_name(location: &MboxLocation, name: &MailboxName, alt: char) -> Option<MailboxName> {
    if unfit(location, name).is_none() {
        return Some(name.clone());
    }
    let fixed = MailboxName::from_parts(name.parts().iter().map(|p| {
        let mut p = p.clone();
        if p.starts_with('.') {
            p.insert(0, '_');
        }
        if let Some(stem) = p.strip_suffix(".lock") {
            p = format!("{stem}{alt}lock");
        }
        p
    }))
    .ok()?;
    unfit(location, &fixed).is_none().then_some(fixed)
}

/// Whether a name is one of the files a writer makes beside a folder file
/// (`.NAME.boxsync-new-PID`, `.NAME.boxsync-spool-PID-N`) by a process that is gone.
fn left_by_a_dead_boxsync(file_name: &str) -> bool {
    let Some((_, tail)) = file_name
        .rsplit_once(".boxsync-new-")
        .or_else(|| file_name.rsplit_once(".boxsync-spool-"))
    else {
        return false;
    };
    let pid = tail.split('-').next().and_then(|p| p.parse::<i32>().ok());
    pid.is_some_and(|p| {
        p > 0 && p as u32 != std::process::id() && crate::maildir::format::process_is_gone(p)
    })
}

/// An mbox store opened for a sync.
pub struct MboxStore {
    location: MboxLocation,
    index: Index,
    fsync: bool,
    folders: BTreeMap<Guid128, Folder>,
    subscriptions: Subscriptions,
    log: Vec<LogRecord>,
    /// Opened by [`MboxStore::open_dry_run`]: scans change nothing on disk.
    dry_run: bool,
    /// Folders that could not be read; the others still sync.
    pub mailbox_errors: Vec<(String, Error)>,
}

impl MboxStore {
    /// Opens the store and refreshes the index from the files. With `create`, a missing root
    /// is created (a new destination).
    pub fn open(location: &MboxLocation, create: bool, fsync: bool) -> Result<MboxStore> {
        let root = &location.root;
        if !root.is_dir() {
            if root.exists() {
                return Err(Error::Usage(format!(
                    "mbox root {} is a file; an mbox: location names the directory of the \
                     folders (use mbox:DIR:INBOX={} for a single mbox file)",
                    root.display(),
                    root.display()
                )));
            }
            if !create {
                return Err(Error::NotFound(format!(
                    "mail location {} does not exist",
                    root.display()
                )));
            }
            std::fs::create_dir_all(root).ctx(|| format!("creating {}", root.display()))?;
        }
        std::fs::create_dir_all(&location.index_dir)
            .ctx(|| format!("creating {}", location.index_dir.display()))?;
        let index = Index::open(&location.index_dir.join("boxsync.index.sqlite"), fsync)?;
        let mut store = MboxStore {
            location: location.clone(),
            index,
            fsync,
            folders: BTreeMap::new(),
            subscriptions: Subscriptions::new(),
            log: Vec::new(),
            dry_run: false,
            mailbox_errors: Vec::new(),
        };
        store.refresh()?;
        Ok(store)
    }

    /// Opens the store for a dry run: the same view as [`MboxStore::open`], but nothing on disk
    /// changes. The index is a copy in memory, mail without X-UID gets its UIDs in memory only,
    /// a missing INBOX is not created, and a missing root is an empty store (a destination not
    /// created yet). Its write methods must not be called: [`crate::dry_run::DryRun`] stands
    /// in for them.
    pub fn open_dry_run(location: &MboxLocation) -> Result<MboxStore> {
        let root = &location.root;
        if !root.is_dir() && root.exists() {
            return Err(Error::Usage(format!(
                "mbox root {} is a file; an mbox: location names the directory of the folders",
                root.display()
            )));
        }
        let index = Index::open_in_memory_copy(&location.index_dir.join("boxsync.index.sqlite"))?;
        let mut store = MboxStore {
            location: location.clone(),
            index,
            fsync: false,
            folders: BTreeMap::new(),
            subscriptions: Subscriptions::new(),
            log: Vec::new(),
            dry_run: true,
            mailbox_errors: Vec::new(),
        };
        if root.is_dir() {
            store.refresh()?;
        }
        Ok(store)
    }

    /// Reads the folder list, subscriptions and log, and brings the index up to date.
    pub fn refresh(&mut self) -> Result<()> {
        let sub_path = self.location.root.join(SUBSCRIPTIONS);
        self.subscriptions = match std::fs::read(&sub_path) {
            Ok(bytes) => {
                let mut s = Subscriptions::parse(&bytes, '/', &sub_path)?;
                for name in &mut s.names {
                    for part in name.iter_mut() {
                        if let Some(decoded) = mutf7::decode(part) {
                            *part = decoded;
                        }
                    }
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Subscriptions::new(),
            Err(e) => return Err(Error::io(format!("reading {}", sub_path.display()), e)),
        };
        self.log = mailbox_log::read(&self.location.index_dir)?;
        if !self.dry_run
            && !self.location.inbox.exists()
            && self.location.inbox.parent().is_some_and(Path::is_dir)
        {
            // Dovecot creates INBOX on first sight too.
            std::fs::File::create(&self.location.inbox)
                .ctx(|| format!("creating {}", self.location.inbox.display()))?;
        }
        let mut list = Vec::new();
        // A dry run creates no INBOX: a missing one is a mailbox the sync would create.
        if !self.dry_run || self.location.inbox.is_file() {
            list.push((MailboxName::inbox(), self.location.inbox.clone()));
        }
        self.walk(&self.location.root.clone(), &mut Vec::new(), &mut list)?;
        let known: Vec<MailboxRow> = self.index.all_mailboxes()?;
        let present: std::collections::HashSet<String> =
            list.iter().map(|(n, _)| n.to_string()).collect();
        self.folders.clear();
        self.mailbox_errors.clear();
        for (name, path) in list {
            match self.scan_folder(&name, &path, &known, &present) {
                Ok((guid, folder)) => {
                    self.folders.insert(guid, folder);
                }
                Err(e) => self.mailbox_errors.push((name.to_string(), e)),
            }
        }
        Ok(())
    }

    /// Every folder file under `dir`.
    fn walk(
        &self,
        dir: &Path,
        prefix: &mut Vec<String>,
        out: &mut Vec<(MailboxName, PathBuf)>,
    ) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .ctx(|| format!("listing {}", dir.display()))?
            .collect::<std::io::Result<_>>()
            .ctx(|| format!("listing {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!("ignoring {:?}: the name is not UTF-8", path);
                continue;
            };
            if file_name.starts_with('.') || file_name.ends_with(".lock") {
                if !self.dry_run && left_by_a_dead_boxsync(&file_name) {
                    // A killed run's new file or spool: the old file is still whole.
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if path == self.location.inbox || path == self.location.index_dir {
                continue;
            }
            let Some(part) = mutf7::decode(&file_name) else {
                tracing::warn!("ignoring {:?}: not modified UTF-7", path);
                continue;
            };
            prefix.push(part);
            let ty = entry
                .file_type()
                .ctx(|| format!("reading {}", path.display()))?;
            if ty.is_dir() {
                self.walk(&path, prefix, out)?;
            } else if ty.is_file() {
                match MailboxName::from_parts(prefix.clone()) {
                    Ok(n) if n.is_inbox() => {
                        tracing::warn!("ignoring {:?}: INBOX is {:?}", path, self.location.inbox)
                    }
                    Ok(n) => out.push((n, path)),
                    Err(e) => tracing::warn!("ignoring {:?}: {e}", path),
                }
            }
            prefix.pop();
        }
        Ok(())
    }

    /// Reads one folder file and brings its index rows up to date.
    fn scan_folder(
        &mut self,
        name: &MailboxName,
        path: &Path,
        known: &[MailboxRow],
        present: &std::collections::HashSet<String>,
    ) -> Result<(Guid128, Folder)> {
        let scan_time = now_ns();
        let by_name = known.iter().find(|r| r.name == name.to_string());
        let (sig, newest) = file_signature(path)
            .ok_or_else(|| Error::NotFound(format!("{} vanished", path.display())))?;
        if let Some(row) = by_name
            && !row.scan_signature.is_empty()
            && row.scan_signature == sig
        {
            return Ok((
                row.guid,
                Folder {
                    name: name.clone(),
                    path: path.to_path_buf(),
                    uidvalidity: row.uidvalidity,
                    uidnext: row.uidnext,
                    highest_modseq: row.highest_modseq,
                    count: row.messages,
                    digest: row.digest,
                    loaded: false,
                    messages: Vec::new(),
                    files: BTreeMap::new(),
                    uids_in_memory: false,
                },
            ));
        }
        let mut scan = {
            let lock = lock::read_lock(path)?;
            scan_file(lock.file(), path)?
        };
        let needs_uids = {
            let mut last = 0;
            let mut bad = !scan.messages.is_empty() && scan.imapbase.is_none();
            for m in &scan.messages {
                match m.uid {
                    Some(u) if u > last => last = u,
                    _ => bad = true,
                }
            }
            bad
        };
        let imapbase_uidvalidity = scan
            .imapbase
            .as_ref()
            .map(|b| b.uidvalidity)
            .filter(|&v| v != 0);
        // The mailbox: by name, else (renamed by another program) by UIDVALIDITY among the
        // names that are gone, else new.
        let row = by_name.or_else(|| {
            imapbase_uidvalidity.and_then(|v| {
                known
                    .iter()
                    .find(|r| r.uidvalidity == v && !present.contains(&r.name))
            })
        });
        let guid = row.map_or_else(Guid128::generate, |r| r.guid);
        let uidvalidity = imapbase_uidvalidity
            .or(row.map(|r| r.uidvalidity))
            .unwrap_or((scan_time / 1_000_000_000) as u32);
        let max_uid = scan
            .messages
            .iter()
            .filter_map(|m| m.uid)
            .max()
            .unwrap_or(0);
        let mut uidnext = scan
            .imapbase
            .as_ref()
            .map_or(1, |b| b.uidnext)
            .max(row.map_or(1, |r| r.uidnext))
            .max(max_uid + 1);
        let old: HashMap<Uid, boxsync_index::MessageRow> = self
            .index
            .messages(guid)?
            .into_iter()
            .map(|m| (m.uid, m))
            .collect();
        let mut rewritten = false;
        let mut uids_in_memory = false;
        if needs_uids && self.dry_run {
            uids_in_memory = true;
            // The UIDs a real run would write into the file, kept in memory.
            assign_uids_in_memory(&mut scan, &old, &mut uidnext);
        } else if needs_uids {
            // Mail an MDA delivered has no X-UID yet: give it UIDs in the file, as Dovecot
            // does on its first look, so that both read the same ones.
            let assigned = lock::write_lock(path).and_then(|_lock| {
                let mut next = uidnext;
                writer::assign_uids(path, uidvalidity, &mut next, self.fsync).map(|s| (s, next))
            });
            match assigned {
                Ok((fresh, next)) => {
                    scan = fresh;
                    uidnext = next;
                    rewritten = true;
                }
                Err(e) if cannot_write(&e) => {
                    // A read-only mbox (a mounted snapshot, another user's spool) still
                    // converts: its UIDs live in boxsync's index only, found again by hash.
                    tracing::warn!(
                        "{}: cannot write UIDs into it ({e}); keeping them in boxsync's index only",
                        path.display()
                    );
                    assign_uids_in_memory(&mut scan, &old, &mut uidnext);
                    uids_in_memory = true;
                }
                Err(e) => return Err(e),
            }
        }
        let mut seen = Vec::with_capacity(scan.messages.len());
        for m in &scan.messages {
            let Some(uid) = m.uid else { continue };
            let guid = old
                .get(&uid)
                .filter(|r| Locator::decode(&r.file).is_some_and(|l| l.hash == m.hash))
                .map_or_else(|| m.hash.clone(), |r| r.guid.clone());
            seen.push(Seen {
                uid,
                guid,
                file: Locator {
                    offset: m.offset,
                    received: m.received,
                    hash: m.hash.clone(),
                }
                .encode(),
                flags: m.flags,
                keywords: m.keywords.clone(),
                received: m.received,
                pop3_uidl: m.pop3_uidl.clone(),
                pop3_order: None,
            });
        }
        let (sig_now, newest_now) = file_signature(path).unwrap_or((String::new(), newest));
        // UIDs held in memory only are given again from the file at every look.
        let trusted = if scan_time - newest_now.max(newest) > SIGNATURE_MARGIN_NS
            && !rewritten
            && !uids_in_memory
        {
            sig_now
        } else {
            String::new()
        };
        let r = reconcile(
            &mut self.index,
            guid,
            name,
            uidvalidity,
            uidnext,
            seen,
            trusted,
        )?;
        Ok((
            guid,
            Folder {
                name: name.clone(),
                path: path.to_path_buf(),
                uidvalidity,
                uidnext,
                highest_modseq: r.highest_modseq,
                count: r.messages.len() as u32,
                digest: r.digest,
                loaded: true,
                messages: r.messages,
                files: r.files,
                uids_in_memory,
            },
        ))
    }

    fn folder(&self, guid: Guid128) -> Result<&Folder> {
        self.folders
            .get(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))
    }

    /// The file a mailbox name maps to; refuses names that would leave the root.
    fn folder_path(&self, name: &MailboxName) -> Result<PathBuf> {
        if let Some(why) = unfit(&self.location, name) {
            return Err(Error::data(format!("mailbox name {name:?}: {why}")));
        }
        Ok(path_of(&self.location, name))
    }

    fn log_append(&mut self, kind: LogKind, guid: Guid128) -> Result<()> {
        let rec = mailbox_log::append_now(&self.location.index_dir, kind, guid)?;
        self.log.push(rec);
        Ok(())
    }

    fn load_folder(&mut self, guid: Guid128) -> Result<()> {
        let folder = self
            .folders
            .get_mut(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))?;
        if folder.loaded {
            return Ok(());
        }
        (folder.messages, folder.files) =
            crate::reconcile::from_index(self.index.messages(guid)?, |file| {
                Locator::decode(file).map_or(0, |l| l.received)
            });
        folder.loaded = true;
        Ok(())
    }
}

/// A message body in an mbox file, read when the receiver is ready for it.
struct MboxBody {
    path: PathBuf,
    offset: u64,
    uid: Uid,
    received: i64,
    /// The header hash of the message: what finds it again after a rewrite.
    hash: String,
    /// Whether the file carries the UID as X-UID (not when it lives in the index only: a
    /// dry run, or a file boxsync may not write).
    uid_in_file: bool,
}

impl MailBody for MboxBody {
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let bytes = find_message(
            &self.path,
            self.offset,
            self.uid,
            self.uid_in_file,
            &self.hash,
        )?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    fn received(&self) -> Option<i64> {
        Some(self.received)
    }
}

impl Store for MboxStore {
    fn describe(&self) -> String {
        self.location.describe()
    }

    fn lock_sync(&self, timeout: std::time::Duration) -> Result<crate::SyncLock> {
        crate::lock_file(&self.location.index_dir.join("boxsync-sync.lock"), timeout)
    }

    fn mailboxes(&self) -> Vec<MailboxEntry> {
        self.folders
            .iter()
            .map(|(guid, f)| {
                let (renamed, sub_change) = mailbox_log::name_times(&self.log, &f.name);
                MailboxEntry {
                    name: f.name.clone(),
                    guid: *guid,
                    uidvalidity: f.uidvalidity,
                    uidnext: f.uidnext,
                    highest_modseq: f.highest_modseq,
                    messages: f.count,
                    digest: f.digest,
                    subscribed: self.subscriptions.contains(f.name.parts()),
                    last_renamed_or_created: renamed,
                    last_subscription_change: sub_change,
                }
            })
            .collect()
    }

    fn tombstones(&self) -> Tombstones {
        mailbox_log::tombstones(&self.log, |g| self.folders.contains_key(&g))
    }

    fn broken_mailboxes(&self) -> Vec<MailboxName> {
        crate::broken_names(&self.mailbox_errors)
    }

    fn fix_name(&self, name: &MailboxName, alt: char) -> Option<MailboxName> {
        fix_name(&self.location, name, alt)
    }

    fn load(&mut self, mailbox: Guid128) -> Result<()> {
        self.load_folder(mailbox)
    }

    fn messages(&self, mailbox: Guid128) -> Result<&[Message]> {
        let f = self.folder(mailbox)?;
        if !f.loaded {
            return Err(Error::temp(format!(
                "BUG: messages of {} read before they were loaded",
                f.name
            )));
        }
        Ok(&f.messages)
    }

    fn expunged_since(&self, mailbox: Guid128, since: Modseq) -> Result<Vec<ExpungedRow>> {
        self.index.expunged_since(mailbox, since)
    }

    fn body(&self, mailbox: Guid128, uid: Uid) -> Result<Box<dyn MailBody>> {
        let f = self.folder(mailbox)?;
        let loc = f
            .files
            .get(&uid)
            .and_then(|s| Locator::decode(s))
            .ok_or_else(|| Error::NotFound(format!("UID {uid} not in {}", f.name)))?;
        Ok(Box::new(MboxBody {
            path: f.path.clone(),
            offset: loc.offset,
            uid,
            received: loc.received,
            hash: loc.hash,
            uid_in_file: !(self.dry_run || f.uids_in_memory),
        }))
    }

    fn create_mailbox(
        &mut self,
        name: &MailboxName,
        guid: Guid128,
        uidvalidity: u32,
    ) -> Result<()> {
        let path = self.folder_path(name)?;
        let mut ancestor = path.parent();
        while let Some(dir) = ancestor {
            if dir == self.location.root {
                break;
            }
            if dir.is_file() {
                return Err(Error::data(format!(
                    "cannot create mailbox {name}: {} is a mail folder file, and an mbox folder \
                     cannot also hold sub-folders",
                    dir.display()
                )));
            }
            ancestor = dir.parent();
        }
        if path.is_dir() {
            return Err(Error::data(format!(
                "cannot create mailbox {name}: {} is a directory of sub-folders, and an mbox \
                 folder cannot also hold mail",
                path.display()
            )));
        }
        if path.exists() && !name.is_inbox() {
            return Err(Error::temp(format!(
                "cannot create mailbox {name}: {} already exists",
                path.display()
            )));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        if !path.exists() {
            std::fs::File::create(&path).ctx(|| format!("creating {}", path.display()))?;
        }
        let uidvalidity = if uidvalidity == 0 {
            (now_ns() / 1_000_000_000) as u32
        } else {
            uidvalidity
        };
        let digest = crate::content_digest(&[]);
        let tx = self.index.transaction()?;
        tx.delete_mailbox(guid)?;
        tx.put_mailbox(&MailboxRow {
            guid,
            name: name.to_string(),
            uidvalidity,
            uidnext: 1,
            highest_modseq: 0,
            scan_signature: String::new(),
            messages: 0,
            digest,
        })?;
        tx.commit()?;
        self.folders.insert(
            guid,
            Folder {
                name: name.clone(),
                path,
                uidvalidity,
                uidnext: 1,
                highest_modseq: 0,
                count: 0,
                digest,
                loaded: true,
                messages: Vec::new(),
                files: BTreeMap::new(),
                uids_in_memory: false,
            },
        );
        Ok(())
    }

    fn delete_mailbox(&mut self, guid: Guid128) -> Result<()> {
        let f = self
            .folders
            .remove(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))?;
        if f.name.is_inbox() {
            // INBOX cannot be deleted; empty it instead.
            let _lock = lock::write_lock(&f.path)?;
            writer::replace_with_empty(&f.path, self.fsync)?;
        } else {
            let _lock = lock::write_lock(&f.path)?;
            std::fs::remove_file(&f.path).ctx(|| format!("removing {}", f.path.display()))?;
            // Directories left empty by the last sub-folder go too, as Dovecot removes them.
            let mut dir = f.path.parent();
            while let Some(d) = dir {
                if d == self.location.root || std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
        let tx = self.index.transaction()?;
        tx.delete_mailbox(guid)?;
        tx.commit()?;
        self.log_append(LogKind::DeleteMailbox, guid)
    }

    fn rename_mailbox(&mut self, guid: Guid128, to: &MailboxName) -> Result<()> {
        let new_path = self.folder_path(to)?;
        let f = self
            .folders
            .get(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))?;
        if new_path.exists() {
            return Err(Error::temp(format!(
                "cannot rename {} to {}: target exists",
                f.path.display(),
                new_path.display()
            )));
        }
        if let Some(dir) = new_path.parent() {
            std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        {
            let _lock = lock::write_lock(&f.path)?;
            std::fs::rename(&f.path, &new_path)
                .ctx(|| format!("renaming {} to {}", f.path.display(), new_path.display()))?;
        }
        let f = self.folders.get_mut(&guid).expect("looked up above");
        f.path = new_path;
        f.name = to.clone();
        // The row's name moves with it, so the next scan finds the folder by name.
        if let Some(mut row) = self.index.mailbox(guid)? {
            row.name = to.to_string();
            row.scan_signature = String::new();
            let tx = self.index.transaction()?;
            tx.put_mailbox(&row)?;
            tx.commit()?;
        }
        self.log_append(LogKind::Rename, Guid128::sha128_of(&to.to_string()))
    }

    fn change_mailbox_guid(&mut self, old: Guid128, new: Guid128) -> Result<()> {
        let f = self
            .folders
            .remove(&old)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {old} not found")))?;
        let tx = self.index.transaction()?;
        tx.delete_mailbox(new)?;
        tx.rekey_mailbox(old, new)?;
        tx.commit()?;
        self.folders.insert(new, f);
        Ok(())
    }

    fn set_subscribed(&mut self, name: &MailboxName, subscribed: bool) -> Result<()> {
        let changed = if subscribed {
            self.subscriptions.insert(name.parts().to_vec())
        } else {
            self.subscriptions.remove(name.parts())
        };
        if !changed {
            return Ok(());
        }
        // Dovecot keeps the names as they are on disk: modified UTF-7.
        let mut stored = self.subscriptions.clone();
        for n in &mut stored.names {
            for part in n.iter_mut() {
                *part = mutf7::encode(part);
            }
        }
        subscriptions::write_atomic_as(
            &self.location.root,
            SUBSCRIPTIONS,
            &stored,
            '/',
            self.fsync,
        )?;
        let kind = if subscribed {
            LogKind::Subscribe
        } else {
            LogKind::Unsubscribe
        };
        self.log_append(kind, Guid128::sha128_of(&name.to_string()))
    }

    fn record_agreed_flags(&mut self, mailbox: Guid128) -> Result<()> {
        let folder = self
            .folders
            .get_mut(&mailbox)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {mailbox} not found")))?;
        if !folder.loaded {
            return Ok(());
        }
        let files = &folder.files;
        crate::record_agreed(&mut self.index, mailbox, &mut folder.messages, |uid| {
            files.get(&uid).cloned()
        })
    }

    fn writer(
        &mut self,
        mailbox: Guid128,
        header: HeaderUpdate,
    ) -> Result<Box<dyn MailboxWriter + '_>> {
        self.load_folder(mailbox)?;
        let fsync = self.fsync;
        let folder = self
            .folders
            .get_mut(&mailbox)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {mailbox} not found")))?;
        Ok(Box::new(writer::Writer::new(
            &mut self.index,
            mailbox,
            folder,
            fsync,
            header,
        )))
    }

    fn flush(&mut self) -> Result<crate::WriteReport> {
        // Its writers leave nothing waiting.
        Ok(crate::WriteReport::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(uid: Option<Uid>, hash: &str) -> Scanned {
        Scanned {
            offset: 0,
            uid,
            flags: Flags::EMPTY,
            keywords: Keywords::new(),
            recent: false,
            received: 0,
            hash: hash.to_owned(),
            pop3_uidl: None,
        }
    }

    fn row(uid: Uid, hash: &str) -> (Uid, boxsync_index::MessageRow) {
        (
            uid,
            boxsync_index::MessageRow {
                uid,
                guid: format!("g{uid}"),
                file: Locator {
                    offset: 0,
                    received: 0,
                    hash: hash.to_owned(),
                }
                .encode(),
                flags: Flags::EMPTY,
                keywords: Keywords::new(),
                modseq: 1,
                base: None,
                pop3_uidl: None,
                pop3_order: None,
            },
        )
    }

    #[test]
    fn uids_kept_only_in_the_index_are_found_again_by_hash() {
        // A read-only mbox without X-UIDs, read before as UIDs 3 (hash a) and 4 (hash b);
        // now a new message (hash c) sits between them, and one with a stale X-UID 2 follows.
        let mut scan = FileScan {
            imapbase: None,
            messages: vec![
                scanned(None, "a"),
                scanned(None, "c"),
                scanned(None, "b"),
                scanned(Some(2), "d"),
            ],
        };
        let old: HashMap<_, _> = [row(3, "a"), row(4, "b")].into_iter().collect();
        let mut uidnext = 5;
        assign_uids_in_memory(&mut scan, &old, &mut uidnext);
        let uids: Vec<_> = scan.messages.iter().map(|m| m.uid.unwrap()).collect();
        // b cannot keep 4 after c took 5: UIDs must rise through the file.
        assert_eq!(uids, [3, 5, 6, 7]);
        assert_eq!(uidnext, 8);
    }

    #[test]
    fn only_the_debris_of_dead_writers_is_recognised() {
        assert!(!left_by_a_dead_boxsync(".inbox.boxsync-new-1"));
        assert!(!left_by_a_dead_boxsync(&format!(
            ".inbox.boxsync-spool-{}-0",
            std::process::id()
        )));
        assert!(left_by_a_dead_boxsync(".Work.boxsync-spool-2147483646-3"));
        assert!(!left_by_a_dead_boxsync(".subscriptions"));
        assert!(!left_by_a_dead_boxsync(".imap"));
    }

    #[test]
    fn parses_mbox_locations() {
        let l = MboxLocation::parse("mbox:/srv/mail:INBOX=/var/mail/alice").unwrap();
        assert_eq!(l.root, PathBuf::from("/srv/mail"));
        assert_eq!(l.inbox, PathBuf::from("/var/mail/alice"));
        assert_eq!(l.index_dir, PathBuf::from("/srv/mail/.imap"));
        let l = MboxLocation::parse("mbox:/m:INDEX=/idx").unwrap();
        assert_eq!(l.inbox, PathBuf::from("/m/inbox"));
        assert_eq!(l.index_dir, PathBuf::from("/idx"));
        assert!(MboxLocation::parse("mbox:").is_err());
        assert!(MboxLocation::parse("mbox:/m:BOGUS=1").is_err());
    }

    #[test]
    fn names_an_mbox_root_cannot_hold_are_repaired() {
        let l = MboxLocation::parse("mbox:/m:INBOX=/m/Mail/inbox").unwrap();
        let fix = |name: &str, alt: char| {
            fix_name(&l, &MailboxName::parse(name).unwrap(), alt).map(|n| n.to_string())
        };
        // Maildir++'s and IMAP's separators are plain characters in an mbox level.
        assert_eq!(fix("a.b/c\u{1}d", '_').as_deref(), Some("a.b/c\u{1}d"));
        assert_eq!(fix("Work/.hidden", '_').as_deref(), Some("Work/_.hidden"));
        assert_eq!(fix("x.lock", '+').as_deref(), Some("x+lock"));
        assert_eq!(fix(".y.lock", '_').as_deref(), Some("_.y_lock"));
        // A level longer than a file name can be stays unfit: the brain takes the GUID.
        assert_eq!(fix(&"ø".repeat(100), '_'), None);
        // INBOX's own file cannot be another mailbox.
        assert_eq!(fix("Mail/inbox", '_'), None);
        for fits in ["INBOX", "Work/x", "a b"] {
            assert_eq!(fix(fits, '_').as_deref(), Some(fits));
        }
    }
}
