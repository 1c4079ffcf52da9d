//! `--dry-run`: a store that reports what a sync would change and changes nothing. [`DryRun`]
//! wraps a store opened in its no-write mode (`MaildirStore::open_dry_run`,
//! `MboxStore::open_dry_run`): reads go to it, and every write becomes a line in a
//! [`DryRunLog`] plus bookkeeping in memory, so that the brain sees the mailboxes it created,
//! renamed or deleted, and its counts (saved, expunged, flag changes) are the real run's.

use crate::{
    ExpungedRow, HeaderUpdate, MailboxEntry, MailboxWriter, Message, SaveMeta, Store, SyncLock,
    Tombstones, WriteReport,
};
use boxsync_model::{Error, Flags, Guid128, Keywords, MailboxName, Modseq, Result, Uid};
use boxsync_proto::MailBody;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

/// What a dry run would have done, one line per change, shared between the store (which
/// writes it) and the caller (which prints it after the sync).
#[derive(Clone, Debug, Default)]
pub struct DryRunLog {
    lines: Arc<Mutex<Vec<String>>>,
}

impl DryRunLog {
    pub fn new() -> DryRunLog {
        DryRunLog::default()
    }

    /// The lines so far, in the order the changes were asked for.
    pub fn lines(&self) -> Vec<String> {
        match self.lines.lock() {
            Ok(l) => l.clone(),
            // A thread that panicked while pushing a line left the list whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn push(&self, line: String) {
        tracing::info!("dry run: {line}");
        match self.lines.lock() {
            Ok(mut l) => l.push(line),
            Err(poisoned) => poisoned.into_inner().push(line),
        }
    }
}

/// One mailbox as the dry run sees it: the inner store's (by its GUID there), or one only
/// pretended into existence.
struct Box_ {
    inner: Option<Guid128>,
    entry: MailboxEntry,
}

/// A store that changes nothing: see the module documentation.
pub struct DryRun<S: Store> {
    inner: S,
    log: DryRunLog,
    /// Every mailbox by its GUID as the brain knows it.
    boxes: BTreeMap<Guid128, Box_>,
    deleted: Vec<(Guid128, i64)>,
    unsubscribed: Vec<(Guid128, i64)>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A size for people: `812 B`, `1.2 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "message" } else { "messages" }
}

impl<S: Store> DryRun<S> {
    /// Wraps `inner`, which must have been opened in its no-write mode; the lines go to `log`.
    pub fn new(inner: S, log: DryRunLog) -> DryRun<S> {
        let boxes = inner
            .mailboxes()
            .into_iter()
            .map(|entry| {
                (
                    entry.guid,
                    Box_ {
                        inner: Some(entry.guid),
                        entry,
                    },
                )
            })
            .collect();
        DryRun {
            inner,
            log,
            boxes,
            deleted: Vec::new(),
            unsubscribed: Vec::new(),
        }
    }

    pub fn log(&self) -> &DryRunLog {
        &self.log
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn get(&self, guid: Guid128) -> Result<&Box_> {
        self.boxes
            .get(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))
    }

    fn get_mut(&mut self, guid: Guid128) -> Result<&mut Box_> {
        self.boxes
            .get_mut(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))
    }
}

impl<S: Store> Store for DryRun<S> {
    fn describe(&self) -> String {
        format!("{} (dry run)", self.inner.describe())
    }

    /// A dry run writes nothing, so it takes no lock (taking one would create the lock file).
    fn lock_sync(&self, _timeout: std::time::Duration) -> Result<SyncLock> {
        let file = std::fs::File::open("/dev/null")
            .map_err(|e| Error::io("opening /dev/null for a dry run's lock", e))?;
        Ok(SyncLock { _file: file })
    }

    fn mailboxes(&self) -> Vec<MailboxEntry> {
        self.boxes.values().map(|b| b.entry.clone()).collect()
    }

    fn tombstones(&self) -> Tombstones {
        let mut t = self.inner.tombstones();
        t.mailboxes.extend(self.deleted.iter().copied());
        t.unsubscribes.extend(self.unsubscribed.iter().copied());
        t
    }

    fn broken_mailboxes(&self) -> Vec<MailboxName> {
        self.inner.broken_mailboxes()
    }

    /// The names the real run would give: the inner store is the one that must hold them.
    fn fix_name(&self, name: &MailboxName, alt: char) -> Option<MailboxName> {
        self.inner.fix_name(name, alt)
    }

    fn load(&mut self, mailbox: Guid128) -> Result<()> {
        match self.get(mailbox)?.inner {
            Some(g) => self.inner.load(g),
            None => Ok(()),
        }
    }

    fn messages(&self, mailbox: Guid128) -> Result<&[Message]> {
        match self.get(mailbox)?.inner {
            Some(g) => self.inner.messages(g),
            None => Ok(&[]),
        }
    }

    fn expunged_since(&self, mailbox: Guid128, since: Modseq) -> Result<Vec<ExpungedRow>> {
        match self.get(mailbox)?.inner {
            Some(g) => self.inner.expunged_since(g, since),
            None => Ok(Vec::new()),
        }
    }

    fn body(&self, mailbox: Guid128, uid: Uid) -> Result<Box<dyn MailBody>> {
        let b = self.get(mailbox)?;
        match b.inner {
            Some(g) => self.inner.body(g, uid),
            None => Err(Error::NotFound(format!(
                "UID {uid} not in {}",
                b.entry.name
            ))),
        }
    }

    fn create_mailbox(
        &mut self,
        name: &MailboxName,
        guid: Guid128,
        uidvalidity: u32,
    ) -> Result<()> {
        self.log.push(format!("would create mailbox {name}"));
        let now = now();
        let uidvalidity = if uidvalidity == 0 {
            now as u32
        } else {
            uidvalidity
        };
        self.boxes.insert(
            guid,
            Box_ {
                inner: None,
                entry: MailboxEntry {
                    name: name.clone(),
                    guid,
                    uidvalidity,
                    uidnext: 1,
                    highest_modseq: 0,
                    messages: 0,
                    subscribed: false,
                    last_renamed_or_created: now,
                    last_subscription_change: 0,
                    digest: crate::content_digest(&[]),
                },
            },
        );
        Ok(())
    }

    fn delete_mailbox(&mut self, guid: Guid128) -> Result<()> {
        let name = self.get(guid)?.entry.name.clone();
        self.boxes.remove(&guid);
        self.deleted.push((guid, now()));
        self.log.push(format!("would delete mailbox {name}"));
        Ok(())
    }

    fn rename_mailbox(&mut self, guid: Guid128, to: &MailboxName) -> Result<()> {
        let b = self.get_mut(guid)?;
        let from = std::mem::replace(&mut b.entry.name, to.clone());
        b.entry.last_renamed_or_created = now();
        self.log
            .push(format!("would rename mailbox {from} to {to}"));
        Ok(())
    }

    fn change_mailbox_guid(&mut self, old: Guid128, new: Guid128) -> Result<()> {
        self.get(old)?;
        let Some(mut b) = self.boxes.remove(&old) else {
            return Ok(());
        };
        b.entry.guid = new;
        self.log.push(format!(
            "would change the GUID of mailbox {} to {new}",
            b.entry.name
        ));
        self.boxes.insert(new, b);
        Ok(())
    }

    fn set_subscribed(&mut self, name: &MailboxName, subscribed: bool) -> Result<()> {
        let mut changed = false;
        for b in self.boxes.values_mut().filter(|b| &b.entry.name == name) {
            if b.entry.subscribed != subscribed {
                b.entry.subscribed = subscribed;
                b.entry.last_subscription_change = now();
                changed = true;
            }
        }
        if changed {
            if subscribed {
                self.log.push(format!("would subscribe to {name}"));
            } else {
                self.unsubscribed
                    .push((Guid128::sha128_of(&name.to_string()), now()));
                self.log.push(format!("would unsubscribe from {name}"));
            }
        }
        Ok(())
    }

    /// Touches only the index, which a dry run does not keep.
    fn record_agreed_flags(&mut self, mailbox: Guid128) -> Result<()> {
        self.get(mailbox)?;
        Ok(())
    }

    fn writer(
        &mut self,
        mailbox: Guid128,
        header: HeaderUpdate,
    ) -> Result<Box<dyn MailboxWriter + '_>> {
        let inner_guid = self.get(mailbox)?.inner;
        let known: HashSet<Uid> = match inner_guid {
            Some(g) => {
                self.inner.load(g)?;
                self.inner.messages(g)?.iter().map(|m| m.uid).collect()
            }
            None => HashSet::new(),
        };
        let log = self.log.clone();
        let entry = &mut self.get_mut(mailbox)?.entry;
        Ok(Box::new(DryWriter {
            log,
            entry,
            header,
            known,
            report: WriteReport::default(),
            expunges: BTreeSet::new(),
            flag_sets: BTreeSet::new(),
            moves: 0,
        }))
    }

    fn flush(&mut self) -> Result<WriteReport> {
        // Nothing was written: the inner store's writers were never used.
        Ok(WriteReport::default())
    }
}

/// Counts what a real writer would do, as it would count it.
struct DryWriter<'a> {
    log: DryRunLog,
    entry: &'a mut MailboxEntry,
    header: HeaderUpdate,
    /// The UIDs the mailbox holds: changes to others are not counted (a real writer finds no
    /// file for them).
    known: HashSet<Uid>,
    report: WriteReport,
    expunges: BTreeSet<Uid>,
    flag_sets: BTreeSet<Uid>,
    moves: u64,
}

impl MailboxWriter for DryWriter<'_> {
    fn save(&mut self, _meta: SaveMeta, body: &dyn MailBody) -> Result<()> {
        // Read the body as a real save would: an unreadable one fails here too, and its size
        // is known even when the other side did not say it.
        let size = match body.size() {
            Some(s) => s,
            None => {
                let mut r = body
                    .open()
                    .map_err(|e| Error::io("reading a message body", e))?;
                std::io::copy(&mut r, &mut std::io::sink())
                    .map_err(|e| Error::io("reading a message body", e))?
            }
        };
        self.report.saved += 1;
        self.report.bytes += size;
        Ok(())
    }

    fn expunge(&mut self, uid: Uid) {
        if self.known.contains(&uid) {
            self.expunges.insert(uid);
        }
    }

    fn set_flags(&mut self, uid: Uid, _flags: Flags, _keywords: Keywords) {
        if self.known.contains(&uid) {
            self.flag_sets.insert(uid);
        }
    }

    fn move_uid(&mut self, _from: Uid, _to: Uid) {
        self.moves += 1;
    }

    fn set_base(&mut self, _uid: Uid, _flags: Flags, _keywords: Keywords) {}

    fn finish(mut self: Box<Self>) -> Result<WriteReport> {
        self.report.expunged = self.expunges.len() as u64;
        self.report.flag_changes = self.flag_sets.len() as u64;
        let name = self.entry.name.clone();
        let r = &self.report;
        if self.header.uidvalidity != self.entry.uidvalidity {
            self.log.push(format!(
                "would change the UIDVALIDITY of {name} to {}",
                self.header.uidvalidity
            ));
        }
        if r.expunged > 0 {
            self.log.push(format!(
                "would expunge {} {} from {name}",
                r.expunged,
                plural(r.expunged)
            ));
        }
        if self.moves > 0 {
            self.log.push(format!(
                "would renumber {} {} in {name}",
                self.moves,
                plural(self.moves)
            ));
        }
        if r.flag_changes > 0 {
            self.log.push(format!(
                "would change flags of {} {} in {name}",
                r.flag_changes,
                plural(r.flag_changes)
            ));
        }
        if r.saved > 0 {
            self.log.push(format!(
                "would save {} {} ({}) into {name}",
                r.saved,
                plural(r.saved),
                human_size(r.bytes)
            ));
        }
        // The view follows, for anything that reads it later in this sync.
        let e = &mut *self.entry;
        e.uidvalidity = self.header.uidvalidity;
        e.uidnext = self.header.uidnext;
        e.highest_modseq = self.header.highest_modseq;
        e.messages = (u64::from(e.messages) + self.report.saved)
            .saturating_sub(self.report.expunged)
            .try_into()
            .unwrap_or(u32::MAX);
        Ok(self.report.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Location;
    use crate::maildir::MaildirStore;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(812), "812 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1_258_291), "1.2 MiB");
    }

    #[test]
    fn the_view_follows_pretended_changes_and_the_disk_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("missing");
        let location = Location::parse(&format!("maildir:{}", root.display())).unwrap();
        let log = DryRunLog::new();
        let mut store = DryRun::new(MaildirStore::open_dry_run(&location).unwrap(), log.clone());
        assert!(store.mailboxes().is_empty());
        let work = MailboxName::parse("Work/Sub").unwrap();
        let g = Guid128::generate();
        store.create_mailbox(&work, g, 7).unwrap();
        store.set_subscribed(&work, true).unwrap();
        assert_eq!(store.mailboxes()[0].name, work);
        assert!(store.mailboxes()[0].subscribed);
        store.load(g).unwrap();
        assert!(store.messages(g).unwrap().is_empty());
        let old = MailboxName::parse("Old").unwrap();
        store.rename_mailbox(g, &old).unwrap();
        assert_eq!(store.mailboxes()[0].name, old);
        store.delete_mailbox(g).unwrap();
        assert!(store.mailboxes().is_empty());
        assert_eq!(store.tombstones().mailboxes.len(), 1);
        assert_eq!(
            log.lines(),
            [
                "would create mailbox Work/Sub",
                "would subscribe to Work/Sub",
                "would rename mailbox Work/Sub to Old",
                "would delete mailbox Old",
            ]
        );
        assert!(!root.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
