//! Batched, crash-safe changes to one Maildir folder.
//!
//! Order of work for saves: write each body into `tmp/`, flush them all with one `syncfs`,
//! write the uidlist with their records, rename them into `cur/`, flush the directory, then
//! commit the index. A crash before the rename leaves only `tmp/` debris (and records without
//! files, which the next scan skips); after it, the next scan finds the files under the UIDs
//! the uidlist gives them, and the next sync recognises them by GUID: nothing lost, nothing
//! doubled.
//!
//! A folder whose sync ends with a small batch of saves does not flush it alone: the batch
//! waits as a [`Staged`] folder, and [`publish`] makes many folders' batches durable with two
//! or three `syncfs` in all, where each folder would need four flushes of its own. After 1 %
//! new mail in 20 folders, those flushes were most of the time the destination spent writing.
//! There the saves' records are appended to the uidlist, as Dovecot appends new mail's, when
//! they follow every record in it; the file is rewritten when records must go or the next UID
//! must move past the last record.

use super::copier;
use super::format::filename::{self, split_info};
use super::format::keywords::{self, KeywordsFile};
use super::format::uidlist::{self, UidlistLock, UidlistRecord};
use super::scan::{self, flags_of};
use super::{Folder, LOCK_TIMEOUT};
use crate::{HeaderUpdate, MailboxWriter, Message, SaveMeta, WriteReport};
use boxsync_index::{ExpungedRow, Index, MailboxRow, MessageRow};
use boxsync_model::error::IoContext;
use boxsync_model::{Error, Flags, Guid128, Keywords, Modseq, Result, Uid};
use boxsync_proto::MailBody;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Saves written before one flush: enough to amortise the flush, few enough that a crash
/// repeats little work.
const BATCH_MESSAGES: usize = 2000;
const BATCH_BYTES: u64 = 256 << 20;
/// Copies queued on the copier threads at once: each holds its source open.
const COPIES_IN_FLIGHT: usize = 64;
/// Index changes staged folders may hold before they are published: each is a row in memory.
const STAGED_OPS: usize = 100_000;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// An index change collected while files are renamed, applied in one transaction at the end.
enum Op {
    Put(MessageRow),
    Delete(Uid),
    Expunged(ExpungedRow),
}

fn apply_ops(tx: &boxsync_index::Transaction<'_>, mailbox: Guid128, ops: Vec<Op>) -> Result<()> {
    for op in ops {
        match op {
            Op::Put(row) => tx.put_message(mailbox, &row)?,
            Op::Delete(uid) => tx.delete_message(mailbox, uid)?,
            Op::Expunged(row) => tx.add_expunged(mailbox, &row)?,
        }
    }
    Ok(())
}

struct PendingSave {
    tmp: PathBuf,
    /// The unique name `tmp/` holds it under, the start of a name of its own when the
    /// peer's name does not fit.
    fresh: String,
    base: String,
    meta: SaveMeta,
    /// The sizes a queued copy expects, until its result is in.
    copying: Option<(u64, u64)>,
}

/// One staged save: its body in `tmp/`, and what records it once it is in `cur/`.
struct StagedSave {
    tmp: PathBuf,
    dest: PathBuf,
    record: UidlistRecord,
    row: MessageRow,
}

/// A folder whose sync is done in memory (the store shows it as it will be), waiting for
/// [`publish`] to make its saves durable and visible and to commit its index changes.
pub(crate) struct Staged {
    mailbox: Guid128,
    dir: PathBuf,
    saves: Vec<StagedSave>,
    /// Its other index changes (flags, expunges, bases), committed with the saves: until
    /// then the next scan would see those changes as made by another program, which gives
    /// the same result.
    ops: Vec<Op>,
    row: MailboxRow,
    /// The size of the saves.
    bytes: u64,
    /// UIDs from here up to the uidlist's next UID were given out by another program.
    known_next: Uid,
    /// The UIDNEXT both sides agreed on.
    uidnext: Uid,
}

impl Staged {
    pub(crate) fn is_of(&self, mailbox: Guid128) -> bool {
        self.mailbox == mailbox
    }

    /// Where a staged save of `mailbox` waits, for a read of it before it is published.
    pub(crate) fn tmp_of(&self, mailbox: Guid128, uid: Uid) -> Option<&Path> {
        self.is_of(mailbox)
            .then(|| self.saves.iter().find(|v| v.row.uid == uid))
            .flatten()
            .map(|v| v.tmp.as_path())
    }
}

/// Makes staged folders' saves durable and visible and commits their index changes: the
/// saves' records are appended to each uidlist (or, when that cannot be, a new uidlist is
/// written beside it), the bodies and the uidlists are flushed together, rewritten uidlists
/// are renamed into place and flushed, the bodies are renamed into `cur/` and flushed, then
/// one transaction commits the index. Each folder's uidlist lock is held from its update to
/// the commit. Returns whether another program changed a folder meanwhile (a UID it took is
/// given a new one).
pub(crate) fn publish(index: &mut Index, mut staged: Vec<Staged>, fsync: bool) -> Result<bool> {
    let Some(first_dir) = staged.first().map(|s| s.dir.clone()) else {
        return Ok(false);
    };
    let mut changed = false;
    let mut locks = Vec::new();
    let mut rewritten = Vec::new();
    for s in staged.iter_mut().filter(|s| !s.saves.is_empty()) {
        let lock = UidlistLock::acquire(&s.dir, LOCK_TIMEOUT)?;
        let (mut list, appendable) = uidlist::read_for_update(&s.dir)?
            .ok_or_else(|| Error::data(format!("{}: dovecot-uidlist vanished", s.dir.display())))?;
        let (old_len, old_next) = (list.records.len(), list.next_uid);
        s.saves.sort_by_key(|v| v.record.uid);
        {
            // A record of a file another program removed lingers until a rewrite; in a
            // save's way (its UID, its name), it goes now, as in flush_saves.
            let uids: std::collections::HashSet<Uid> =
                s.saves.iter().map(|v| v.record.uid).collect();
            let bases: std::collections::HashSet<&str> =
                s.saves.iter().map(|v| v.record.base.as_str()).collect();
            let in_way =
                |r: &UidlistRecord| uids.contains(&r.uid) || bases.contains(r.base.as_str());
            if list.records.iter().any(in_way) {
                let present = present_bases(&s.dir)?;
                list.records
                    .retain(|r| !in_way(r) || present.contains(&r.base));
            }
        }
        // The scan saw every UID below known_next handed out: one from there on is mail that
        // arrived during the sync.
        let last_kept = list.records.last().map_or(0, |r| r.uid);
        changed |= last_kept >= s.known_next;
        // The file's records stay as they are when none went and every save follows them.
        let mut file_records_kept = list.records.len() == old_len;
        let taken: std::collections::HashSet<Uid> = list.records.iter().map(|r| r.uid).collect();
        for v in &mut s.saves {
            let (uid, moved) = insert_record(
                &mut list,
                &taken,
                s.known_next,
                &mut s.uidnext,
                v.record.clone(),
            );
            v.row.uid = uid;
            changed |= moved;
            file_records_kept &= uid > last_kept;
        }
        list.next_uid = list.next_uid.max(s.uidnext);
        s.row.uidnext = list.next_uid;
        if appendable && file_records_kept && list.appends_to(old_len, old_next) {
            uidlist::append(&s.dir, &list, old_len)?;
        } else {
            uidlist::write_tmp(&s.dir, &list)?;
            rewritten.push(s.dir.clone());
        }
        locks.push(lock);
    }
    let saves = staged.iter().any(|s| !s.saves.is_empty());
    if fsync && saves {
        // The bodies and the uidlists' new records, before any file is renamed into place.
        syncfs(&first_dir)?;
    }
    for dir in &rewritten {
        uidlist::install_tmp(dir)?;
    }
    if fsync && !rewritten.is_empty() {
        // The uidlists (with the GUIDs the names may not carry) before the mail they name.
        syncfs(&first_dir)?;
    }
    for v in staged.iter().flat_map(|s| &s.saves) {
        std::fs::rename(&v.tmp, &v.dest).ctx(|| format!("moving {} into cur/", v.tmp.display()))?;
    }
    if fsync && saves {
        syncfs(&first_dir)?;
    }
    let tx = index.transaction()?;
    for s in staged {
        apply_ops(&tx, s.mailbox, s.ops)?;
        for v in s.saves {
            tx.put_message(s.mailbox, &v.row)?;
        }
        tx.put_mailbox(&s.row)?;
    }
    tx.commit()?;
    drop(locks);
    Ok(changed)
}

impl PendingSave {
    /// Its uidlist record under `uid`: the GUID when the name does not carry it, and the
    /// POP3 UIDL and order.
    fn record(&self, uid: Uid) -> UidlistRecord {
        let mut rec = UidlistRecord::new(uid, self.base.clone());
        if self.meta.guid != self.base {
            rec.set_ext(b'G', self.meta.guid.clone());
        }
        if let Some(u) = &self.meta.pop3_uidl {
            rec.set_ext(b'P', u.clone());
        }
        if let Some(o) = self.meta.pop3_order {
            rec.set_ext(b'O', o.to_string());
        }
        rec
    }

    /// Its index row under `uid`, as `file` in `cur/`: the flags it comes with are the
    /// ones both sides agree on.
    fn row(&self, uid: Uid, file: String, modseq: Modseq) -> MessageRow {
        MessageRow {
            uid,
            guid: self.meta.guid.clone(),
            file,
            flags: self.meta.flags,
            keywords: self.meta.keywords.clone(),
            modseq,
            base: Some((self.meta.flags, self.meta.keywords.clone())),
            pop3_uidl: self.meta.pop3_uidl.clone(),
            pop3_order: self.meta.pop3_order,
        }
    }
}

/// A saved message as the folder in memory holds it.
fn saved_message(meta: SaveMeta, uid: Uid, modseq: Modseq) -> Message {
    Message {
        uid,
        guid: meta.guid,
        flags: meta.flags,
        keywords: meta.keywords,
        modseq,
        base: None,
        received: meta.received,
        pop3_uidl: meta.pop3_uidl,
        pop3_order: meta.pop3_order,
    }
}

/// Puts a save's record into `list` under its UID, or, when another program took that UID
/// meanwhile (it is in `taken`, or handed out from `known_next` on), under a new UID from
/// `uidnext` on, which then moves past it. Returns the UID and whether it is a new one.
fn insert_record(
    list: &mut uidlist::Uidlist,
    taken: &std::collections::HashSet<Uid>,
    known_next: Uid,
    uidnext: &mut Uid,
    mut rec: UidlistRecord,
) -> (Uid, bool) {
    let mut uid = rec.uid;
    let moved = taken.contains(&uid) || (uid >= known_next && uid < list.next_uid);
    if moved {
        // Keep the mail, under a new UID.
        uid = list.next_uid.max(*uidnext);
        *uidnext = uid + 1;
        rec.uid = uid;
    }
    let pos = list.records.partition_point(|r| r.uid < uid);
    list.records.insert(pos, rec);
    list.next_uid = list.next_uid.max(uid + 1);
    (uid, moved)
}

pub(crate) struct Writer<'a> {
    index: &'a mut Index,
    mailbox: Guid128,
    folder: &'a mut Folder,
    /// Folders of this store staged for [`publish`], this one's too once it finishes.
    staged: &'a mut Vec<Staged>,
    fsync: bool,
    header: HeaderUpdate,
    keywords: KeywordsFile,
    pending: Vec<PendingSave>,
    pending_bytes: u64,
    /// Where the copier threads report the copies queued from `pending`.
    copies: (
        std::sync::mpsc::Sender<copier::Done>,
        std::sync::mpsc::Receiver<copier::Done>,
    ),
    copies_in_flight: usize,
    copy_failed: Option<Error>,
    /// Base names in use, built at the first save that needs them.
    names_in_use: Option<std::collections::HashSet<String>>,
    /// The next UID as of our scan and our own saves: UIDs from here up to the uidlist's
    /// next UID were handed out by another program meanwhile.
    known_next: Uid,
    expunges: Vec<Uid>,
    flag_sets: BTreeMap<Uid, (Flags, Keywords)>,
    moves: Vec<(Uid, Uid)>,
    bases: BTreeMap<Uid, (Flags, Keywords)>,
    report: WriteReport,
}

/// Copies a body into `dest`, returning its size and its size with CRLF line ends (`W=`).
fn copy_body(body: &dyn MailBody, dest: &Path) -> std::io::Result<(std::fs::File, u64, u64)> {
    let mut input = body.open()?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    let (size, vsize) = copier::copy_counting(&mut input, &mut out)?;
    Ok((out, size, vsize))
}

/// The error of a save that could not be written into `tmp_dir`, whichever thread copied it.
fn save_failed(uid: Uid, tmp_dir: &Path, e: std::io::Error) -> Error {
    Error::io(format!("saving UID {uid} into {}", tmp_dir.display()), e)
}

/// Brings a folder's message count and digest up to date and writes its index row.
fn record_folder(
    tx: &boxsync_index::Transaction,
    mailbox: Guid128,
    folder: &mut Folder,
    header: &HeaderUpdate,
    uidnext: Uid,
) -> Result<()> {
    folder.count = folder.messages.len() as u32;
    folder.digest = crate::content_digest(&folder.messages);
    tx.put_mailbox(&mailbox_row(mailbox, folder, header, uidnext))
}

fn mailbox_row(
    mailbox: Guid128,
    folder: &Folder,
    header: &HeaderUpdate,
    uidnext: Uid,
) -> MailboxRow {
    MailboxRow {
        guid: mailbox,
        name: folder.name.to_string(),
        uidvalidity: header.uidvalidity,
        uidnext,
        highest_modseq: header.highest_modseq.max(folder.highest_modseq),
        scan_signature: String::new(),
        messages: folder.count,
        digest: folder.digest,
    }
}

/// The base names of the files in `cur/` and `new/`.
fn present_bases(dir: &Path) -> Result<std::collections::HashSet<String>> {
    let mut out = std::collections::HashSet::new();
    for sub in ["cur", "new"] {
        let d = dir.join(sub);
        for e in std::fs::read_dir(&d).ctx(|| format!("listing {}", d.display()))? {
            let e = e.ctx(|| format!("listing {}", d.display()))?;
            if let Some(name) = e.file_name().to_str() {
                out.insert(split_info(name).0.to_owned());
            }
        }
    }
    Ok(out)
}

/// Removes what killed runs left in `tmp/`: boxsync's own files whose process is gone, and
/// anything older than 36 hours (Dovecot's rule for `tmp/`). Failures only leave debris.
fn clean_tmp(tmp: &Path) {
    const OLD: std::time::Duration = std::time::Duration::from_secs(36 * 3600);
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let host = super::format::hostname();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > OLD);
        if old || written_by_dead_boxsync(&name, &host) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether a `tmp/` name is one `filename::new_base` made (`<secs>.M<usecs>P<pid>Q<n>.<host>`)
/// in a process of this host that no longer runs.
fn written_by_dead_boxsync(name: &str, host: &str) -> bool {
    let mut parts = name.splitn(3, '.');
    let (Some(_), Some(unique), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Some((pid, _)) = unique.split_once('P').and_then(|(_, r)| r.split_once('Q')) else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if rest != host || pid <= 0 || pid as u32 == std::process::id() {
        return false;
    }
    super::format::process_is_gone(pid)
}

fn syncfs(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).ctx(|| format!("opening {}", dir.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is valid for the lifetime of `f`.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(Error::io(
            format!("flushing {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .ctx(|| format!("flushing {}", dir.display()))
}

impl<'a> Writer<'a> {
    pub(crate) fn new(
        index: &'a mut Index,
        mailbox: Guid128,
        folder: &'a mut Folder,
        staged: &'a mut Vec<Staged>,
        fsync: bool,
        header: HeaderUpdate,
    ) -> Result<Writer<'a>> {
        let keywords = scan::read_keywords(&folder.dir)?;
        clean_tmp(&folder.dir.join("tmp"));
        let known_next = folder.uidnext;
        Ok(Writer {
            index,
            mailbox,
            folder,
            staged,
            fsync,
            header,
            keywords,
            pending: Vec::new(),
            pending_bytes: 0,
            copies: std::sync::mpsc::channel(),
            copies_in_flight: 0,
            copy_failed: None,
            names_in_use: None,
            known_next,
            expunges: Vec::new(),
            flag_sets: BTreeMap::new(),
            moves: Vec::new(),
            bases: BTreeMap::new(),
            report: WriteReport::default(),
        })
    }

    /// Whether a file of this folder (or a pending save) already has this base name.
    fn existing_base(&mut self, base: &str) -> bool {
        let folder = &*self.folder;
        let pending = &self.pending;
        self.names_in_use
            .get_or_insert_with(|| {
                folder
                    .files
                    .values()
                    .map(|f| split_info(f.rsplit('/').next().unwrap_or(f)).0.to_owned())
                    .chain(pending.iter().map(|p| p.base.clone()))
                    .collect()
            })
            .contains(base)
    }

    /// The `:2,…` part for flags and keywords, giving new keywords letters as needed.
    fn info_for(&mut self, flags: Flags, kws: &Keywords, unknown: &str) -> String {
        let mut letters = Vec::new();
        for k in kws {
            match self
                .keywords
                .letter_of(k)
                .or_else(|| self.keywords.assign(k))
            {
                Some(l) => letters.push(l),
                None => tracing::warn!(
                    "{}: keyword {k:?} dropped: a Maildir holds at most 26 keywords per folder",
                    self.folder.dir.display()
                ),
            }
        }
        letters.sort_unstable();
        filename::format_info(flags, &letters, unknown)
    }

    fn write_keywords(&self) -> Result<()> {
        let current = scan::read_keywords(&self.folder.dir)?;
        if current.to_bytes() != self.keywords.to_bytes() {
            keywords::write_atomic(&self.folder.dir, &self.keywords, self.fsync)?;
        }
        Ok(())
    }

    /// Takes in copier results until at most `left` copies are still running. A copy whose
    /// size differs from what the peer's name said gets a name of its own.
    fn await_copies(&mut self, left: usize) {
        while self.copies_in_flight > left {
            let Ok(done) = self.copies.1.recv() else {
                break;
            };
            self.copies_in_flight -= 1;
            let Some(p) = self.pending.get_mut(done.id) else {
                continue;
            };
            let expected = p.copying.take().unwrap_or_default();
            match done.result {
                Ok(sizes) if sizes == expected => {}
                Ok((size, vsize)) => {
                    p.base = filename::with_sizes(&p.fresh, size, vsize);
                    self.pending_bytes = self.pending_bytes - expected.0 + size;
                    self.report.bytes = self.report.bytes - expected.0 + size;
                }
                Err(e) => {
                    let tmp_dir = self.folder.dir.join("tmp");
                    self.copy_failed
                        .get_or_insert_with(|| save_failed(p.meta.uid, &tmp_dir, e));
                }
            }
        }
    }

    /// Makes pending saves durable and visible: flush, rename into `cur/`, uidlist, index.
    fn flush_saves(&mut self) -> Result<()> {
        self.await_copies(0);
        if let Some(e) = self.copy_failed.take() {
            // Nothing of this batch is in cur/, the uidlist or the index yet: drop it all,
            // so that a later flush cannot rename a copy that is not there.
            for p in std::mem::take(&mut self.pending) {
                let _ = std::fs::remove_file(&p.tmp);
            }
            self.pending_bytes = 0;
            return Err(e);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let dir = self.folder.dir.clone();
        if self.fsync {
            syncfs(&dir.join("tmp"))?;
        }
        let lock = UidlistLock::acquire(&dir, LOCK_TIMEOUT)?;
        // Keyword letters must be on disk before any file name uses them.
        let mut pending = std::mem::take(&mut self.pending);
        // Mail arrives in the peer's UID order, not in the order of the UIDs it gets here;
        // appending in UID order keeps a lower wanted UID from looking taken by another program.
        pending.sort_by_key(|p| p.meta.uid);
        let mut infos = Vec::with_capacity(pending.len());
        for p in &pending {
            infos.push(self.info_for(p.meta.flags, &p.meta.keywords, ""));
        }
        self.write_keywords()?;
        let mut list = scan::reread_uidlist(&dir)?;
        // A backup replaces a destination's own mail by the source's under the same UID:
        // expunge the old one first, or the new one would have to move aside.
        let reused: std::collections::HashSet<Uid> = pending.iter().map(|p| p.meta.uid).collect();
        let (early, later): (Vec<Uid>, Vec<Uid>) = std::mem::take(&mut self.expunges)
            .into_iter()
            .partition(|u| reused.contains(u));
        self.expunges = later;
        let mut early_ops = Vec::new();
        for uid in early {
            self.expunge_now(uid, &dir, &mut list, &mut early_ops)?;
        }
        // The record of a file another program removed before our scan lingers until the
        // next rewrite (Dovecot drops them lazily too): it holds no UID a backup may restore,
        // and no name that a copy of the same mail may take again.
        {
            let bases: std::collections::HashSet<&str> =
                pending.iter().map(|p| p.base.as_str()).collect();
            let files = &self.folder.files;
            let stale = |r: &UidlistRecord| {
                !files.contains_key(&r.uid)
                    && (reused.contains(&r.uid) || bases.contains(r.base.as_str()))
            };
            if list.records.iter().any(stale) {
                let present = present_bases(&dir)?;
                list.records
                    .retain(|r| !stale(r) || present.contains(&r.base));
            }
        }
        let taken: std::collections::HashSet<Uid> = list.records.iter().map(|r| r.uid).collect();
        let tx = self.index.transaction()?;
        apply_ops(&tx, self.mailbox, early_ops)?;
        let mut renames = Vec::with_capacity(pending.len());
        for (p, info) in pending.into_iter().zip(infos) {
            let name = format!("{}:{}", p.base, info);
            renames.push((p.tmp.clone(), dir.join("cur").join(&name)));
            let (uid, moved) = insert_record(
                &mut list,
                &taken,
                self.known_next,
                &mut self.header.uidnext,
                p.record(p.meta.uid),
            );
            self.report.changed_during_sync |= moved;
            let file = format!("cur/{name}");
            let modseq = self.header.change_modseq;
            tx.put_message(self.mailbox, &p.row(uid, file.clone(), modseq))?;
            self.folder.files.insert(uid, file);
            self.folder.put_message(saved_message(p.meta, uid, modseq));
        }
        // The uidlist first: a crash before the renames leaves records without files, which
        // the next scan skips (the index does not know them yet) and the next sync copies
        // again; a crash after them finds files whose GUIDs (G fields) are already recorded.
        // The other order could lose a G field and make the next sync copy the mail back.
        uidlist::write_atomic(&dir, &list, self.fsync)?;
        for (tmp, dest) in renames {
            std::fs::rename(&tmp, &dest).ctx(|| format!("moving {} into cur/", tmp.display()))?;
        }
        if self.fsync {
            fsync_dir(&dir.join("cur"))?;
        }
        record_folder(&tx, self.mailbox, self.folder, &self.header, list.next_uid)?;
        tx.commit()?;
        drop(lock);
        self.pending_bytes = 0;
        self.known_next = list.next_uid;
        Ok(())
    }

    /// Removes the file of `uid` and its uidlist record; the index rows go into `ops`.
    fn expunge_now(
        &mut self,
        uid: Uid,
        dir: &Path,
        list: &mut uidlist::Uidlist,
        ops: &mut Vec<Op>,
    ) -> Result<()> {
        let Some(file) = self.folder.files.remove(&uid) else {
            return Ok(());
        };
        match std::fs::remove_file(dir.join(&file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.report.changed_during_sync = true
            }
            Err(e) => {
                return Err(Error::io(
                    format!("removing {}", dir.join(&file).display()),
                    e,
                ));
            }
        }
        let base = split_info(file.rsplit('/').next().unwrap_or(&file))
            .0
            .to_owned();
        list.records.retain(|r| !(r.uid == uid && r.base == base));
        if let Ok(i) = self.folder.messages.binary_search_by_key(&uid, |m| m.uid) {
            let m = self.folder.messages.remove(i);
            ops.push(Op::Delete(uid));
            ops.push(Op::Expunged(ExpungedRow {
                uid,
                guid: m.guid,
                modseq: self.header.change_modseq,
            }));
        }
        self.report.expunged += 1;
        Ok(())
    }

    /// Renames the files whose flags changed (a file in `new/` moves to `cur/`, as Dovecot
    /// does) and collects their index rows.
    fn rename_for_flags(&mut self, dir: &Path, ops: &mut Vec<Op>) -> Result<()> {
        let modseq = self.header.change_modseq;
        let flag_sets = std::mem::take(&mut self.flag_sets);
        for (uid, (flags, kws)) in flag_sets {
            let Some(file) = self.folder.files.get(&uid).cloned() else {
                continue;
            };
            let name = file.rsplit('/').next().unwrap_or(&file).to_owned();
            let (base, info) = split_info(&name);
            let unknown = info
                .map(|i| {
                    // Letters without a keyword name stay, as Dovecot keeps them.
                    let info = filename::parse_info(i);
                    let undefined: String = info
                        .keyword_letters
                        .iter()
                        .filter(|&&l| self.keywords.name_of(l).is_none())
                        .map(|&l| char::from(l))
                        .collect();
                    undefined + &info.unknown
                })
                .unwrap_or_default();
            let new_name = format!("{base}:{}", self.info_for(flags, &kws, &unknown));
            let new_file = format!("cur/{new_name}");
            if new_file != file {
                match std::fs::rename(dir.join(&file), dir.join(&new_file)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        self.report.changed_during_sync = true;
                        continue;
                    }
                    Err(e) => {
                        return Err(Error::io(
                            format!("renaming {}", dir.join(&file).display()),
                            e,
                        ));
                    }
                }
            }
            self.folder.files.insert(uid, new_file.clone());
            if let Ok(i) = self.folder.messages.binary_search_by_key(&uid, |m| m.uid) {
                let m = &mut self.folder.messages[i];
                m.flags = flags;
                m.keywords = kws;
                m.modseq = modseq;
                ops.push(Op::Put(m.index_row(new_file)));
            }
            self.report.flag_changes += 1;
        }
        Ok(())
    }

    /// Collects the index rows of the messages whose agreed flags moved.
    fn record_bases(&mut self, ops: &mut Vec<Op>) {
        for (uid, (flags, kws)) in std::mem::take(&mut self.bases) {
            if let Ok(i) = self.folder.messages.binary_search_by_key(&uid, |m| m.uid) {
                let m = &mut self.folder.messages[i];
                m.base = Some((flags, kws));
                if let Some(file) = self.folder.files.get(&uid) {
                    ops.push(Op::Put(m.index_row(file.clone())));
                }
            }
        }
    }

    /// Takes the uidlist lock and reads the uidlist: as it is on disk, and without the
    /// records of files another program removed (they go while rewriting anyway, as in
    /// assign_uids: above the agreed UIDNEXT they would look like mail that just arrived).
    fn lock_uidlist(
        &self,
        dir: &Path,
    ) -> Result<(UidlistLock, uidlist::Uidlist, uidlist::Uidlist)> {
        let lock = UidlistLock::acquire(dir, LOCK_TIMEOUT)?;
        let on_disk = scan::reread_uidlist(dir)?;
        let mut list = on_disk.clone();
        let files = &self.folder.files;
        if list.records.iter().any(|r| !files.contains_key(&r.uid)) {
            let present = present_bases(dir)?;
            list.records
                .retain(|r| files.contains_key(&r.uid) || present.contains(&r.base));
        }
        Ok((lock, list, on_disk))
    }

    /// Whether this folder's saves may wait for [`publish`] with other folders' ones: not when
    /// something here must follow them on disk (a renumbering) or come before them (an
    /// expunge of a UID they take again, a new UIDVALIDITY). Those go in order right away.
    fn stageable(&self) -> bool {
        let reused = || {
            let saving: std::collections::HashSet<Uid> =
                self.pending.iter().map(|p| p.meta.uid).collect();
            self.expunges.iter().any(|u| saving.contains(u))
        };
        self.moves.is_empty()
            && self.header.uidvalidity == self.folder.uidvalidity
            && (self.pending.is_empty() || self.expunges.is_empty() || !reused())
    }

    /// Finishes the folder in memory and on disk except for its saves and index changes,
    /// which wait in the store's staged folders; publishes them all when they grow large.
    fn finish_staged(&mut self) -> Result<WriteReport> {
        self.await_copies(0);
        if let Some(e) = self.copy_failed.take() {
            for p in std::mem::take(&mut self.pending) {
                let _ = std::fs::remove_file(&p.tmp);
            }
            return Err(e);
        }
        let dir = self.folder.dir.clone();
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by_key(|p| p.meta.uid);
        let infos: Vec<String> = pending
            .iter()
            .map(|p| self.info_for(p.meta.flags, &p.meta.keywords, ""))
            .collect();
        let flag_sets: Vec<(Flags, Keywords)> = self.flag_sets.values().cloned().collect();
        for (flags, kws) in &flag_sets {
            self.info_for(*flags, kws, "");
        }
        let mut ops: Vec<Op> = Vec::new();
        let mut uidnext = self.header.uidnext;
        let keywords_on_disk = scan::read_keywords(&dir)?.to_bytes() == self.keywords.to_bytes();
        if !pending.is_empty() && self.expunges.is_empty() && keywords_on_disk {
            // Saves and flag changes alone need nothing of the uidlist before publish, which
            // rereads it under the lock anyway and sees there what arrived meanwhile.
            self.rename_for_flags(&dir, &mut ops)?;
            self.record_bases(&mut ops);
        } else {
            let (lock, mut list, on_disk) = self.lock_uidlist(&dir)?;
            // Keyword letters must be on disk before any file name uses them.
            self.write_keywords()?;
            self.rename_for_flags(&dir, &mut ops)?;
            for uid in std::mem::take(&mut self.expunges) {
                self.expunge_now(uid, &dir, &mut list, &mut ops)?;
            }
            self.record_bases(&mut ops);
            let max_uid = list.records.last().map_or(0, |r| r.uid);
            if max_uid >= self.header.uidnext {
                // Mail arrived during the sync and got UIDs beyond what we agreed.
                self.report.changed_during_sync = true;
            }
            if pending.is_empty() {
                list.next_uid = self.header.uidnext.max(max_uid + 1);
            }
            if list != on_disk {
                // With saves, UIDNEXT moves with their records when they are published: IMAP
                // clients take mail below a UIDNEXT they saw for mail they have seen.
                uidlist::write_atomic(&dir, &list, self.fsync)?;
            }
            drop(lock);
            uidnext = uidnext.max(list.next_uid);
        }

        // The folder as it will be once the saves are published.
        let modseq = self.header.change_modseq;
        let mut saves = Vec::with_capacity(pending.len());
        for (p, info) in pending.into_iter().zip(infos) {
            let uid = p.meta.uid;
            let file = format!("cur/{}:{}", p.base, info);
            uidnext = uidnext.max(uid + 1);
            saves.push(StagedSave {
                dest: dir.join(&file),
                record: p.record(uid),
                row: p.row(uid, file.clone(), modseq),
                tmp: p.tmp,
            });
            self.folder.files.insert(uid, file);
            self.folder.put_message(saved_message(p.meta, uid, modseq));
        }
        self.folder.uidnext = uidnext;
        self.folder.highest_modseq = self.header.highest_modseq.max(self.folder.highest_modseq);
        self.folder.count = self.folder.messages.len() as u32;
        self.folder.digest = crate::content_digest(&self.folder.messages);
        let row = mailbox_row(self.mailbox, self.folder, &self.header, uidnext);
        self.staged.push(Staged {
            mailbox: self.mailbox,
            dir,
            saves,
            ops,
            row,
            bytes: self.pending_bytes,
            known_next: self.known_next,
            uidnext,
        });
        self.pending_bytes = 0;
        let saves: usize = self.staged.iter().map(|s| s.saves.len()).sum();
        let ops: usize = self.staged.iter().map(|s| s.ops.len()).sum();
        let bytes: u64 = self.staged.iter().map(|s| s.bytes).sum();
        if saves >= BATCH_MESSAGES || bytes >= BATCH_BYTES || ops >= STAGED_OPS {
            let staged = std::mem::take(self.staged);
            self.report.changed_during_sync |= publish(self.index, staged, self.fsync)?;
        }
        Ok(std::mem::take(&mut self.report))
    }

    fn finish_inner(&mut self) -> Result<WriteReport> {
        if self.stageable() {
            return self.finish_staged();
        }
        self.flush_saves()?;
        let dir = self.folder.dir.clone();
        let (lock, mut list, on_disk) = self.lock_uidlist(&dir)?;
        let mut ops: Vec<Op> = Vec::new();
        let modseq = self.header.change_modseq;

        self.rename_for_flags(&dir, &mut ops)?;
        self.write_keywords()?;

        for uid in std::mem::take(&mut self.expunges) {
            self.expunge_now(uid, &dir, &mut list, &mut ops)?;
        }

        // Renumbering: take every moved record out first, so that swaps cannot collide.
        let moves = std::mem::take(&mut self.moves);
        let mut moved = Vec::new();
        for &(from, to) in &moves {
            if let Some(pos) = list.records.iter().position(|r| r.uid == from) {
                let mut rec = list.records.remove(pos);
                rec.uid = to;
                let file = self.folder.files.remove(&from);
                let msg = self
                    .folder
                    .messages
                    .binary_search_by_key(&from, |m| m.uid)
                    .ok()
                    .map(|i| self.folder.messages.remove(i));
                ops.push(Op::Delete(from));
                if let Some(m) = &msg {
                    ops.push(Op::Expunged(ExpungedRow {
                        uid: from,
                        guid: m.guid.clone(),
                        modseq,
                    }));
                }
                moved.push((rec, file, msg));
            } else {
                self.report.changed_during_sync = true;
            }
        }
        for (rec, file, msg) in moved {
            let to = rec.uid;
            if list.records.iter().any(|r| r.uid == to) {
                return Err(Error::temp(format!(
                    "{}: UID {to} was taken during the sync",
                    dir.display()
                )));
            }
            let pos = list.records.partition_point(|r| r.uid < to);
            list.records.insert(pos, rec);
            if let (Some(file), Some(mut m)) = (file, msg) {
                m.uid = to;
                m.modseq = modseq;
                let (flags, kws) = flags_of(&file, &self.keywords);
                ops.push(Op::Put(MessageRow {
                    uid: to,
                    guid: m.guid.clone(),
                    file: file.clone(),
                    flags,
                    keywords: kws,
                    modseq,
                    base: m.base.clone(),
                    pop3_uidl: m.pop3_uidl.clone(),
                    pop3_order: m.pop3_order,
                }));
                self.folder.files.insert(to, file);
                let at = self.folder.messages.partition_point(|x| x.uid < to);
                self.folder.messages.insert(at, m);
            }
        }

        self.record_bases(&mut ops);

        let max_uid = list.records.last().map_or(0, |r| r.uid);
        if max_uid >= self.header.uidnext {
            // Mail arrived during the sync and got UIDs beyond what we agreed.
            self.report.changed_during_sync = true;
        }
        list.uidvalidity = self.header.uidvalidity;
        list.next_uid = self.header.uidnext.max(max_uid + 1);
        if list != on_disk {
            // Flag changes alone rename files and leave the uidlist as it is.
            uidlist::write_atomic(&dir, &list, self.fsync)?;
        }
        self.folder.uidvalidity = list.uidvalidity;
        self.folder.uidnext = list.next_uid;
        self.folder.highest_modseq = self.header.highest_modseq.max(self.folder.highest_modseq);
        let tx = self.index.transaction()?;
        apply_ops(&tx, self.mailbox, ops)?;
        record_folder(&tx, self.mailbox, self.folder, &self.header, list.next_uid)?;
        tx.commit()?;
        drop(lock);
        Ok(std::mem::take(&mut self.report))
    }
}

impl MailboxWriter for Writer<'_> {
    fn save(&mut self, meta: SaveMeta, body: &dyn MailBody) -> Result<()> {
        let tmp_dir = self.folder.dir.join("tmp");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let fresh = filename::new_base(
            std::time::SystemTime::now(),
            std::process::id(),
            n,
            &super::format::hostname(),
        );
        let tmp = tmp_dir.join(&fresh);
        // A body received into a spool file on this file system is linked, not copied.
        let linked = match body.link_to(&tmp) {
            Ok(Some((size, vsize))) => match std::fs::OpenOptions::new().write(true).open(&tmp) {
                Ok(file) => Some((file, size, vsize)),
                Err(_) => {
                    let _ = std::fs::remove_file(&tmp);
                    None
                }
            },
            _ => None,
        };
        let received =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(meta.received.max(0) as u64);
        // A Dovecot-named local file states its sizes: a copier thread lets the kernel copy
        // it. It is opened here, so that one that cannot be read is reported as before.
        let queued = match (
            linked.is_none().then(|| body.local_path()).flatten(),
            filename::base_sizes(&meta.guid),
        ) {
            (Some(path), (Some(size), Some(vsize))) => std::fs::File::open(path).ok().map(|from| {
                copier::read_ahead(&from);
                (from, size, vsize)
            }),
            _ => None,
        };
        let (size, vsize, copying) = if let Some((from, size, vsize)) = queued {
            self.await_copies(COPIES_IN_FLIGHT - 1);
            copier::submit(copier::Job {
                from,
                to: tmp.clone(),
                expected: (size, vsize),
                received,
                id: self.pending.len(),
                reply: self.copies.0.clone(),
            });
            self.copies_in_flight += 1;
            (size, vsize, Some((size, vsize)))
        } else {
            let copied = match linked {
                Some(done) => Ok(done),
                None => copy_body(body, &tmp),
            };
            let (file, size, vsize) = copied.map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                save_failed(meta.uid, &tmp_dir, e)
            })?;
            file.set_modified(received)
                .ctx(|| format!("setting the received date of {}", tmp.display()))?;
            (size, vsize, None)
        };
        // Keep the peer's file name when it is a Dovecot-style name whose sizes are right:
        // then Dovecot sees the same GUID without a G field, as its own dsync arranges.
        let base = match filename::base_sizes(&meta.guid) {
            (Some(s), Some(w))
                if s == size
                    && w == vsize
                    && !meta.guid.contains(['/', ':'])
                    && !self.existing_base(&meta.guid) =>
            {
                meta.guid.clone()
            }
            _ => filename::with_sizes(&fresh, size, vsize),
        };
        self.pending_bytes += size;
        self.report.saved += 1;
        self.report.bytes += size;
        if let Some(names) = &mut self.names_in_use {
            names.insert(base.clone());
        }
        self.pending.push(PendingSave {
            tmp,
            fresh,
            base,
            meta,
            copying,
        });
        if self.pending.len() >= BATCH_MESSAGES || self.pending_bytes >= BATCH_BYTES {
            self.flush_saves()?;
        }
        Ok(())
    }

    fn expunge(&mut self, uid: Uid) {
        self.expunges.push(uid);
    }

    fn set_flags(&mut self, uid: Uid, flags: Flags, keywords: Keywords) {
        self.flag_sets.insert(uid, (flags, keywords));
    }

    fn move_uid(&mut self, from: Uid, to: Uid) {
        self.moves.push((from, to));
    }

    fn set_base(&mut self, uid: Uid, flags: Flags, keywords: Keywords) {
        self.bases.insert(uid, (flags, keywords));
    }

    fn finish(mut self: Box<Self>) -> Result<WriteReport> {
        self.finish_inner()
    }
}
