//! Changing an mbox folder: every change is a new file written beside the old one, flushed,
//! and renamed over it, under the dotlock and fcntl lock. A crash leaves the old file or the
//! new one whole; an MDA waiting on the dotlock appends to whichever is there after.
//!
//! Saved bodies are spooled first (the brain hands them over one at a time, possibly before
//! the expunges and flag changes of the same mailbox), and the file is written once at the end,
//! in UID order, as Dovecot and mutt need it.

use super::format::{self, Flavor, ImapBase, MboxMeta, MboxReader};
use super::{FileScan, Folder, Locator, Scanned, lock, message_hash, scan_file};
use crate::{HeaderUpdate, MailboxWriter, Message, SaveMeta, WriteReport};
use boxsync_index::{ExpungedRow, Index, MailboxRow, MessageRow};
use boxsync_model::error::IoContext;
use boxsync_model::{Error, Flags, Guid128, Keywords, Result, Uid};
use boxsync_proto::MailBody;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static SPOOL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Spaces kept after `X-IMAPbase: UIDVALIDITY UIDNEXT` in the first spooled message, for the
/// keyword list.
const IMAPBASE_ROOM: usize = 1000;

/// Where a message of the new file comes from.
enum Source {
    /// The old file, at this offset.
    Old(u64),
    /// The spool (saved mail, already in mbox form), at this offset.
    Spool(u64),
}

/// A message of the new file with what the index needs of it: its GUID, the UID it had
/// before (none for a save or a late delivery), its POP3 UIDL and agreed flags.
type Planned = (
    Out,
    String,
    Option<Uid>,
    Option<String>,
    Option<(Flags, Keywords)>,
);

/// One message of the new file.
struct Out {
    uid: Uid,
    flags: Flags,
    keywords: Keywords,
    recent: bool,
    received: i64,
    source: Source,
}

/// Writes `outs` (in UID order) as the new content of `path`. Returns each message's locator
/// in the new file, in the same order.
fn rewrite(
    path: &Path,
    outs: &[Out],
    spool: Option<(&std::fs::File, &Path)>,
    uidvalidity: u32,
    uidnext: Uid,
    fsync: bool,
) -> Result<Vec<Locator>> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.boxsync-new-{}", std::process::id()));
    let new = std::fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let result = write_new(path, &tmp, &new, outs, spool, uidvalidity, uidnext);
    let locators = match result {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        let _ = new.set_permissions(meta.permissions());
        // Keeps /var/mail/alice owned by alice when root runs the sync; not allowed otherwise,
        // and then not needed.
        let _ = std::os::unix::fs::fchown(&new, Some(meta.uid()), Some(meta.gid()));
    }
    if fsync {
        new.sync_all()
            .ctx(|| format!("flushing {}", tmp.display()))?;
    }
    drop(new);
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(
            format!("renaming {} to {}", tmp.display(), path.display()),
            e,
        ));
    }
    if fsync && let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx(|| format!("flushing {}", dir.display()))?;
    }
    Ok(locators)
}

fn write_new(
    path: &Path,
    tmp: &Path,
    new: &std::fs::File,
    outs: &[Out],
    spool: Option<(&std::fs::File, &Path)>,
    uidvalidity: u32,
    uidnext: Uid,
) -> Result<Vec<Locator>> {
    let mut keywords: Vec<String> = outs
        .iter()
        .flat_map(|o| o.keywords.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    keywords.sort();
    let mut old = None;
    let mut w = BufWriter::with_capacity(256 << 10, new);
    let mut offset = 0u64;
    let mut locators = Vec::with_capacity(outs.len());
    for (i, out) in outs.iter().enumerate() {
        let (file, at, name): (&std::fs::File, u64, &Path) = match out.source {
            Source::Old(at) => {
                let f = match &old {
                    Some(f) => f,
                    None => old.insert(
                        std::fs::File::open(path).ctx(|| format!("opening {}", path.display()))?,
                    ),
                };
                (f, at, path)
            }
            Source::Spool(at) => {
                let (f, p) =
                    spool.ok_or_else(|| Error::temp("BUG: spooled message without a spool"))?;
                (f, at, p)
            }
        };
        let m = read_one(file, at, name)?;
        let (from_line, body, exact) = (m.from_line, m.body, m.exact_length);
        let meta = MboxMeta {
            imapbase: (i == 0).then(|| ImapBase {
                uidvalidity,
                uidnext,
                keywords: keywords.clone(),
            }),
            uid: Some(out.uid),
            flags: out.flags,
            recent: out.recent,
            keywords: out.keywords.clone(),
        };
        let body = format::rewrite_meta(&body, &meta);
        let hash = message_hash(&body);
        // A message Dovecot delimited by its length goes back the same way, unquoted, so
        // that Dovecot keeps showing the same bytes.
        let written = if exact {
            match format::write_message(&mut w, &from_line, &body, Flavor::Mboxcl2) {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    format::write_message(&mut w, &from_line, &body, Flavor::Mboxrd)
                }
                Err(e) => Err(e),
            }
        } else {
            format::write_message(&mut w, &from_line, &body, Flavor::Mboxrd)
        }
        .ctx(|| format!("writing {}", tmp.display()))?;
        locators.push(Locator {
            offset,
            received: out.received,
            hash,
        });
        offset += written;
    }
    w.flush().ctx(|| format!("writing {}", tmp.display()))?;
    Ok(locators)
}

/// The message at `at` of an mbox file.
fn read_one(mut file: &std::fs::File, at: u64, path: &Path) -> Result<format::MboxMessage> {
    file.seek(SeekFrom::Start(at))
        .ctx(|| format!("reading {}", path.display()))?;
    MboxReader::new(BufReader::new(file), Flavor::Auto)
        .next_message()
        .ctx(|| format!("reading {}", path.display()))?
        .ok_or_else(|| {
            Error::temp(format!(
                "{}: no message at byte {at} (the file changed during the sync)",
                path.display()
            ))
        })
}

/// Gives every message without a valid X-UID (none, or not above the one before) the next
/// UID, and the file an X-IMAPbase; the caller holds the write lock. Returns the new file's
/// content as a scan.
pub(crate) fn assign_uids(
    path: &Path,
    uidvalidity: u32,
    uidnext: &mut Uid,
    fsync: bool,
) -> Result<FileScan> {
    let file = std::fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let scan = scan_file(&file, path)?;
    let mut last = 0;
    let mut outs = Vec::with_capacity(scan.messages.len());
    for m in &scan.messages {
        let uid = match m.uid {
            Some(u) if u > last => u,
            _ => {
                let u = (*uidnext).max(last + 1);
                *uidnext = u + 1;
                u
            }
        };
        last = uid;
        *uidnext = (*uidnext).max(uid + 1);
        outs.push(Out {
            uid,
            flags: m.flags,
            keywords: m.keywords.clone(),
            recent: m.recent,
            received: m.received,
            source: Source::Old(m.offset),
        });
    }
    let locators = rewrite(path, &outs, None, uidvalidity, *uidnext, fsync)?;
    let keywords = outs
        .iter()
        .flat_map(|o| o.keywords.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(FileScan {
        imapbase: Some(ImapBase {
            uidvalidity,
            uidnext: *uidnext,
            keywords,
        }),
        messages: outs
            .into_iter()
            .zip(locators)
            .zip(scan.messages)
            .map(|((o, l), m)| Scanned {
                offset: l.offset,
                uid: Some(o.uid),
                flags: o.flags,
                keywords: o.keywords,
                recent: o.recent,
                received: o.received,
                hash: l.hash,
                pop3_uidl: m.pop3_uidl,
            })
            .collect(),
    })
}

/// Empties a folder file (INBOX, which cannot be deleted).
pub(crate) fn replace_with_empty(path: &Path, fsync: bool) -> Result<()> {
    rewrite(path, &[], None, 0, 1, fsync).map(|_| ())
}

/// Makes the spool the folder's file: fills in the X-IMAPbase kept room for in the first
/// message, flushes, renames. Returns false (and changes nothing) when the keyword list does
/// not fit the room.
fn take_over_spool(
    spool: &Spool,
    path: &Path,
    plan: &[Out],
    uidvalidity: u32,
    uidnext: Uid,
    fsync: bool,
) -> Result<bool> {
    use std::io::BufRead;
    use std::os::unix::fs::FileExt;
    let keywords: std::collections::BTreeSet<&String> =
        plan.iter().flat_map(|o| o.keywords.iter()).collect();
    // The second number is the last UID given, as in every X-IMAPbase.
    let mut value = format!("{uidvalidity} {:010}", uidnext.saturating_sub(1));
    for k in keywords {
        value.push(' ');
        value.push_str(k);
    }
    // The X-IMAPbase line of the first message, found in the raw bytes.
    let mut reader = BufReader::new(&spool.file);
    reader
        .seek(SeekFrom::Start(0))
        .ctx(|| format!("reading {}", spool.path.display()))?;
    let mut offset = 0u64;
    let mut line = Vec::new();
    let room = loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .ctx(|| format!("reading {}", spool.path.display()))?;
        if n == 0 || line == b"\n" {
            return Ok(false);
        }
        if let Some(rest) = line.strip_prefix(b"X-IMAPbase: ") {
            let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
            let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
            break (offset + 12, rest.len());
        }
        offset += n as u64;
    };
    if value.len() > room.1 {
        return Ok(false);
    }
    let mut padded = value.into_bytes();
    padded.resize(room.1, b' ');
    spool
        .file
        .write_all_at(&padded, room.0)
        .ctx(|| format!("writing {}", spool.path.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        let _ = spool.file.set_permissions(meta.permissions());
        let _ = std::os::unix::fs::fchown(&spool.file, Some(meta.uid()), Some(meta.gid()));
    }
    if fsync {
        spool
            .file
            .sync_all()
            .ctx(|| format!("flushing {}", spool.path.display()))?;
    }
    std::fs::rename(&spool.path, path)
        .ctx(|| format!("renaming {} to {}", spool.path.display(), path.display()))?;
    if fsync && let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx(|| format!("flushing {}", dir.display()))?;
    }
    Ok(true)
}

/// A spool file for saved bodies, removed when dropped.
struct Spool {
    file: std::fs::File,
    path: PathBuf,
    len: u64,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(crate) struct Writer<'a> {
    index: &'a mut Index,
    mailbox: Guid128,
    folder: &'a mut Folder,
    fsync: bool,
    header: HeaderUpdate,
    spool: Option<Spool>,
    /// Each save with where it is in the spool and its header hash.
    saves: Vec<(SaveMeta, u64, String)>,
    expunges: HashSet<Uid>,
    flag_sets: BTreeMap<Uid, (Flags, Keywords)>,
    moves: HashMap<Uid, Uid>,
    bases: BTreeMap<Uid, (Flags, Keywords)>,
    report: WriteReport,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(
        index: &'a mut Index,
        mailbox: Guid128,
        folder: &'a mut Folder,
        fsync: bool,
        header: HeaderUpdate,
    ) -> Writer<'a> {
        Writer {
            index,
            mailbox,
            folder,
            fsync,
            header,
            spool: None,
            saves: Vec::new(),
            expunges: HashSet::new(),
            flag_sets: BTreeMap::new(),
            moves: HashMap::new(),
            bases: BTreeMap::new(),
            report: WriteReport::default(),
        }
    }

    fn spool(&mut self) -> Result<&mut Spool> {
        if self.spool.is_none() {
            // Beside the folder file, so that a fresh folder can take it over by a rename.
            let file_name = self
                .folder
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let path = self.folder.path.with_file_name(format!(
                ".{file_name}.boxsync-spool-{}-{}",
                std::process::id(),
                SPOOL_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .ctx(|| format!("creating {}", path.display()))?;
            self.spool = Some(Spool { file, path, len: 0 });
        }
        Ok(self.spool.as_mut().expect("just made"))
    }

    fn finish_inner(&mut self) -> Result<WriteReport> {
        let modseq = self.header.change_modseq;
        // An X-IMAPbase in the file names the UIDVALIDITY; an empty file has none.
        let uidvalidity_holds =
            self.header.uidvalidity == self.folder.uidvalidity || self.folder.messages.is_empty();
        if self.saves.is_empty()
            && self.expunges.is_empty()
            && self.flag_sets.is_empty()
            && self.moves.is_empty()
            && uidvalidity_holds
        {
            return self.record_bases_only();
        }
        let path = self.folder.path.clone();
        let lock = lock::write_lock(&path)?;
        // What the file holds now: another program may have delivered or rewritten meanwhile.
        let scan = scan_file(lock.file(), &path)?;
        let before: HashMap<Uid, &Message> =
            self.folder.messages.iter().map(|m| (m.uid, m)).collect();
        let mut outs: Vec<Planned> = Vec::new();
        let mut found = HashSet::new();
        let mut late = Vec::new();
        for m in &scan.messages {
            let Some(old) = m
                .uid
                .filter(|u| before.contains_key(u) && !found.contains(u))
            else {
                late.push(m);
                continue;
            };
            found.insert(old);
            if self.expunges.contains(&old) {
                continue;
            }
            let known = before[&old];
            let uid = self.moves.get(&old).copied().unwrap_or(old);
            let (flags, keywords) = self
                .flag_sets
                .get(&old)
                .cloned()
                .unwrap_or((m.flags, m.keywords.clone()));
            let base = self.bases.get(&uid).cloned().or(known.base.clone());
            outs.push((
                Out {
                    uid,
                    flags,
                    keywords,
                    recent: m.recent,
                    received: m.received,
                    source: Source::Old(m.offset),
                },
                // Changed beyond recognition by another program: a new message.
                if m.hash == locator_hash(self.folder, old) {
                    known.guid.clone()
                } else {
                    m.hash.clone()
                },
                Some(old),
                m.pop3_uidl.clone().or(known.pop3_uidl.clone()),
                base,
            ));
        }
        if before
            .keys()
            .any(|u| !found.contains(u) && !self.expunges.contains(u))
        {
            // Another program expunged mail meanwhile.
            self.report.changed_during_sync = true;
        }
        let file_was_empty = scan.messages.is_empty() && before.is_empty();
        let only_saves =
            self.expunges.is_empty() && self.flag_sets.is_empty() && self.moves.is_empty();
        let mut spooled = HashMap::new();
        for (meta, at, hash) in std::mem::take(&mut self.saves) {
            spooled.insert(at, hash);
            outs.push((
                Out {
                    uid: meta.uid,
                    flags: meta.flags,
                    keywords: meta.keywords.clone(),
                    recent: false,
                    received: meta.received,
                    source: Source::Spool(at),
                },
                meta.guid,
                None,
                meta.pop3_uidl,
                Some((meta.flags, meta.keywords)),
            ));
        }
        outs.sort_by_key(|o| o.0.uid);
        let max_uid = outs.last().map_or(0, |o| o.0.uid);
        let mut uidnext = self.header.uidnext.max(max_uid + 1);
        // A UID given twice (a save onto a UID another program took meanwhile): the later one
        // moves to the end, keeping the mail.
        let mut ordered = Vec::with_capacity(outs.len());
        let mut bumped = Vec::new();
        for o in outs {
            if ordered.last().is_some_and(|l: &Planned| l.0.uid >= o.0.uid) {
                bumped.push(o);
            } else {
                ordered.push(o);
            }
        }
        let mut outs = ordered;
        for mut o in bumped {
            o.0.uid = uidnext;
            uidnext += 1;
            self.report.changed_during_sync = true;
            outs.push(o);
        }
        for m in late {
            // Delivered (or rewritten beyond recognition) while we synced: kept, after ours.
            self.report.changed_during_sync = true;
            outs.push((
                Out {
                    uid: uidnext,
                    flags: m.flags,
                    keywords: m.keywords.clone(),
                    recent: m.recent,
                    received: m.received,
                    source: Source::Old(m.offset),
                },
                m.hash.clone(),
                None,
                m.pop3_uidl.clone(),
                None,
            ));
            uidnext += 1;
        }
        let (plan, outs): (Vec<Out>, Vec<_>) = outs
            .into_iter()
            .map(|(o, guid, prev, uidl, base)| (o, (guid, prev, uidl, base)))
            .unzip();
        // A folder that was empty and only gets mail takes the spool as it is, when the mail
        // came in UID order (the usual first copy): no second pass over the bytes.
        let in_spool_order = plan
            .windows(2)
            .all(|w| matches!((&w[0].source, &w[1].source), (Source::Spool(a), Source::Spool(b)) if a < b));
        let taken_over = match (&self.spool, &plan.first()) {
            (
                Some(spool),
                Some(Out {
                    source: Source::Spool(0),
                    ..
                }),
            ) if file_was_empty && only_saves && in_spool_order => take_over_spool(
                spool,
                &path,
                &plan,
                self.header.uidvalidity,
                uidnext,
                self.fsync,
            )?,
            _ => false,
        };
        let locators = if taken_over {
            plan.iter()
                .map(|o| match o.source {
                    Source::Spool(at) => Locator {
                        offset: at,
                        received: o.received,
                        hash: spooled.get(&at).cloned().unwrap_or_default(),
                    },
                    Source::Old(_) => unreachable!("checked above: only spooled mail"),
                })
                .collect()
        } else {
            rewrite(
                &path,
                &plan,
                self.spool.as_ref().map(|s| (&s.file, s.path.as_path())),
                self.header.uidvalidity,
                uidnext,
                self.fsync,
            )?
        };
        drop(lock);

        // The index follows the new file.
        let tx = self.index.transaction()?;
        let kept: HashSet<Uid> = outs.iter().filter_map(|o| o.1).collect();
        for m in &self.folder.messages {
            if !kept.contains(&m.uid) || self.moves.contains_key(&m.uid) {
                tx.delete_message(self.mailbox, m.uid)?;
                tx.add_expunged(
                    self.mailbox,
                    &ExpungedRow {
                        uid: m.uid,
                        guid: m.guid.clone(),
                        modseq,
                    },
                )?;
                if self.expunges.contains(&m.uid) {
                    self.report.expunged += 1;
                }
            }
        }
        let mut messages = Vec::with_capacity(plan.len());
        let mut files = BTreeMap::new();
        for ((out, (guid, prev, pop3_uidl, base)), loc) in plan.into_iter().zip(outs).zip(locators)
        {
            let unchanged = prev.and_then(|p| before.get(&p)).filter(|m| {
                m.uid == out.uid
                    && m.guid == guid
                    && m.flags == out.flags
                    && m.keywords == out.keywords
            });
            let modseq = unchanged.map_or(modseq, |m| m.modseq);
            if prev.is_some() && self.flag_sets.contains_key(&prev.unwrap_or(0)) {
                self.report.flag_changes += 1;
            }
            let file = loc.encode();
            let pop3_order = prev.and_then(|p| before.get(&p)).and_then(|m| m.pop3_order);
            tx.put_message(
                self.mailbox,
                &MessageRow {
                    uid: out.uid,
                    guid: guid.clone(),
                    file: file.clone(),
                    flags: out.flags,
                    keywords: out.keywords.clone(),
                    modseq,
                    base: base.clone(),
                    pop3_uidl: pop3_uidl.clone(),
                    pop3_order,
                },
            )?;
            files.insert(out.uid, file);
            messages.push(Message {
                uid: out.uid,
                guid,
                flags: out.flags,
                keywords: out.keywords,
                modseq,
                base,
                received: out.received,
                pop3_uidl,
                pop3_order,
            });
        }
        drop(before);
        self.folder.messages = messages;
        self.folder.files = files;
        self.folder.uidvalidity = self.header.uidvalidity;
        self.folder.uidnext = uidnext;
        self.folder.highest_modseq = self.header.highest_modseq.max(self.folder.highest_modseq);
        self.folder.count = self.folder.messages.len() as u32;
        self.folder.digest = crate::content_digest(&self.folder.messages);
        tx.put_mailbox(&mailbox_row(self.mailbox, self.folder))?;
        tx.commit()?;
        Ok(std::mem::take(&mut self.report))
    }

    /// Nothing in the file changes: only the agreed flags and the counters.
    fn record_bases_only(&mut self) -> Result<WriteReport> {
        // The file did not change; what the last scan trusted still holds.
        let signature = self
            .index
            .mailbox(self.mailbox)?
            .map(|r| r.scan_signature)
            .unwrap_or_default();
        let tx = self.index.transaction()?;
        for (uid, (flags, kws)) in std::mem::take(&mut self.bases) {
            if let Ok(i) = self.folder.messages.binary_search_by_key(&uid, |m| m.uid) {
                let m = &mut self.folder.messages[i];
                m.base = Some((flags, kws));
                if let Some(file) = self.folder.files.get(&uid) {
                    tx.put_message(self.mailbox, &m.index_row(file.clone()))?;
                }
            }
        }
        let max_uid = self.folder.messages.last().map_or(0, |m| m.uid);
        self.folder.uidvalidity = self.header.uidvalidity;
        self.folder.uidnext = self.header.uidnext.max(max_uid + 1);
        self.folder.highest_modseq = self.header.highest_modseq.max(self.folder.highest_modseq);
        let mut row = mailbox_row(self.mailbox, self.folder);
        row.scan_signature = signature;
        tx.put_mailbox(&row)?;
        tx.commit()?;
        Ok(std::mem::take(&mut self.report))
    }
}

fn mailbox_row(mailbox: Guid128, folder: &Folder) -> MailboxRow {
    MailboxRow {
        guid: mailbox,
        name: folder.name.to_string(),
        uidvalidity: folder.uidvalidity,
        uidnext: folder.uidnext,
        highest_modseq: folder.highest_modseq,
        // Written just now: the next scan reads it again rather than trust an mtime another
        // program could share.
        scan_signature: String::new(),
        messages: folder.count,
        digest: folder.digest,
    }
}

/// The header hash recorded for `uid` at the last scan.
fn locator_hash(folder: &Folder, uid: Uid) -> String {
    folder
        .files
        .get(&uid)
        .and_then(|s| Locator::decode(s))
        .map(|l| l.hash)
        .unwrap_or_default()
}

impl MailboxWriter for Writer<'_> {
    fn save(&mut self, meta: SaveMeta, body: &dyn MailBody) -> Result<()> {
        let uid = meta.uid;
        let mut bytes = Vec::with_capacity(body.size().unwrap_or(0).min(1 << 30) as usize);
        body.open()
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(|e| Error::io(format!("reading the body of UID {uid}"), e))?;
        let size = bytes.len() as u64;
        // Header fields the folder keeps for itself cannot come from the mail: Dovecot drops
        // them too when it saves into an mbox.
        let visible = format::strip_hidden(&bytes);
        drop(bytes);
        let hash = message_hash(&visible);
        let first = self.saves.is_empty();
        let uidvalidity = self.header.uidvalidity;
        let spool = self.spool()?;
        let at = spool.len;
        let mbox_meta = MboxMeta {
            // Room for the real X-IMAPbase, filled in at the end when the spool becomes the
            // folder as it is (UIDNEXT and the keyword list are known only then). Dovecot
            // pads its metadata headers with spaces the same way.
            imapbase: first.then(|| ImapBase {
                uidvalidity,
                uidnext: 0,
                keywords: vec![" ".repeat(IMAPBASE_ROOM)],
            }),
            uid: Some(uid),
            flags: meta.flags,
            recent: false,
            keywords: meta.keywords.clone(),
        };
        let with_meta = format::rewrite_meta(&visible, &mbox_meta);
        drop(visible);
        let from = format::from_line("MAILER-DAEMON", meta.received).into_bytes();
        spool
            .file
            .seek(SeekFrom::Start(at))
            .ctx(|| format!("writing {}", spool.path.display()))?;
        let mut w = BufWriter::with_capacity(256 << 10, &spool.file);
        let n = format::write_message(&mut w, &from, &with_meta, Flavor::Mboxrd)
            .and_then(|n| w.flush().map(|()| n))
            .ctx(|| format!("spooling UID {uid} into {}", spool.path.display()))?;
        drop(w);
        spool.len += n;
        self.report.saved += 1;
        self.report.bytes += size;
        self.saves.push((meta, at, hash));
        Ok(())
    }

    fn expunge(&mut self, uid: Uid) {
        self.expunges.insert(uid);
    }

    fn set_flags(&mut self, uid: Uid, flags: Flags, keywords: Keywords) {
        self.flag_sets.insert(uid, (flags, keywords));
    }

    fn move_uid(&mut self, from: Uid, to: Uid) {
        self.moves.insert(from, to);
    }

    fn set_base(&mut self, uid: Uid, flags: Flags, keywords: Keywords) {
        self.bases.insert(uid, (flags, keywords));
    }

    fn finish(mut self: Box<Self>) -> Result<WriteReport> {
        self.finish_inner()
    }
}
