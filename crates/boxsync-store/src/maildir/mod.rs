//! The Maildir store, in Dovecot's flavour: `dovecot-uidlist` for UIDs and GUIDs,
//! `dovecot-keywords` for keyword letters, `subscriptions`, `dovecot.mailbox.log`, Maildir++ or
//! `LAYOUT=fs` folders in modified UTF-7. Dovecot and boxsync can share one Maildir.

mod copier;
pub mod format;
mod scan;
mod writer;

use crate::{
    ExpungedRow, HeaderUpdate, Layout, Location, MailboxEntry, MailboxWriter, Message, Store,
    Tombstones, WriteReport,
};
use boxsync_index::Index;
use boxsync_model::error::IoContext;
use boxsync_model::{Error, Guid128, MailboxName, Modseq, Result, Uid, mutf7};
use boxsync_proto::MailBody;
use format::mailbox_log::{self, LogKind, LogRecord};
use format::subscriptions::Subscriptions;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long to wait for another program's `dovecot-uidlist.lock`.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// One mailbox after a scan: its directory, counters and messages.
pub(crate) struct Folder {
    pub name: MailboxName,
    pub dir: PathBuf,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: Modseq,
    pub count: u32,
    pub digest: u64,
    /// Whether `messages` and `files` are filled (a folder whose scan was skipped is filled
    /// from the index only when a sync needs its messages).
    pub loaded: bool,
    pub messages: Vec<Message>,
    /// File name (relative to `dir`, `cur/…` or `new/…`) of each message, by UID.
    pub files: BTreeMap<Uid, String>,
}

impl Folder {
    /// Puts a message in its place by UID, replacing one of the same UID.
    pub(crate) fn put_message(&mut self, msg: Message) {
        let at = self.messages.partition_point(|m| m.uid < msg.uid);
        if self.messages.get(at).is_some_and(|m| m.uid == msg.uid) {
            self.messages[at] = msg;
        } else {
            self.messages.insert(at, msg);
        }
    }
}

/// A Maildir store opened for a sync.
pub struct MaildirStore {
    location: Location,
    index: Index,
    fsync: bool,
    folders: BTreeMap<Guid128, Folder>,
    subscriptions: Subscriptions,
    log: Vec<LogRecord>,
    /// Opened by [`MaildirStore::open_dry_run`]: scans change nothing on disk.
    dry_run: bool,
    /// Folders whose sync is done but whose saves wait to be flushed with others' ones.
    staged: Vec<writer::Staged>,
    /// Whether a publish found a folder changed by another program, until a flush reports it.
    changed_while_staged: bool,
    /// Problems with single mailboxes found by the scan; the others still sync.
    pub mailbox_errors: Vec<(String, Error)>,
}

impl MaildirStore {
    /// Opens the store and refreshes the index from the files. With `create`, a missing root is
    /// created (a new destination); without, a missing root is an error (a source must exist).
    pub fn open(location: &Location, create: bool, fsync: bool) -> Result<MaildirStore> {
        let root = &location.root;
        if !root.is_dir() {
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
        let index = Index::open(&location.index_path(), fsync)?;
        let mut store = MaildirStore {
            location: location.clone(),
            index,
            fsync,
            folders: BTreeMap::new(),
            subscriptions: Subscriptions {
                version: 2,
                names: Vec::new(),
            },
            log: Vec::new(),
            dry_run: false,
            staged: Vec::new(),
            changed_while_staged: false,
            mailbox_errors: Vec::new(),
        };
        store.refresh()?;
        Ok(store)
    }

    /// Opens the store for a dry run: the same view as [`MaildirStore::open`], but nothing on
    /// disk changes. The index is a copy in memory, new files get their UIDs in memory only, and
    /// a missing root is an empty store (a destination not created yet). Its write methods
    /// must not be called: [`crate::dry_run::DryRun`] stands in for them.
    pub fn open_dry_run(location: &Location) -> Result<MaildirStore> {
        let index = Index::open_in_memory_copy(&location.index_path())?;
        let mut store = MaildirStore {
            location: location.clone(),
            index,
            fsync: false,
            folders: BTreeMap::new(),
            subscriptions: Subscriptions {
                version: 2,
                names: Vec::new(),
            },
            log: Vec::new(),
            dry_run: true,
            staged: Vec::new(),
            changed_while_staged: false,
            mailbox_errors: Vec::new(),
        };
        if location.root.is_dir() {
            store.refresh()?;
        }
        Ok(store)
    }

    fn separator_v1(&self) -> char {
        match self.location.layout {
            Layout::MaildirPlusPlus => '.',
            Layout::Fs => '/',
        }
    }

    /// Reads the folder list, subscriptions and mailbox log, and brings the index up to date
    /// with what other programs did to the files.
    pub fn refresh(&mut self) -> Result<()> {
        let root = self.location.root.clone();
        let sub_path = root.join("subscriptions");
        self.subscriptions = match std::fs::read(&sub_path) {
            // Dovecot keeps the names as stored on disk: modified UTF-7.
            Ok(bytes) => {
                let mut s = Subscriptions::parse(&bytes, self.separator_v1(), &sub_path)?;
                for name in &mut s.names {
                    for part in name.iter_mut() {
                        if let Some(decoded) = mutf7::decode(part) {
                            *part = decoded;
                        }
                    }
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Subscriptions {
                version: 2,
                names: Vec::new(),
            },
            Err(e) => return Err(Error::io(format!("reading {}", sub_path.display()), e)),
        };
        self.log = mailbox_log::read(&self.location.index_dir)?;
        let dirs = scan::list_folders(&root, self.location.layout)?;
        let mut folders = BTreeMap::new();
        self.mailbox_errors.clear();
        for (name, dir) in dirs {
            match scan::scan_folder(&mut self.index, &name, &dir, self.dry_run) {
                Ok(mut folder) => {
                    let mut guid = folder.1;
                    if folders.contains_key(&guid) && self.dry_run {
                        let fresh = Guid128::generate();
                        tracing::warn!(
                            "duplicate mailbox GUID {guid} in {name}: a real run gives it a new GUID"
                        );
                        guid = fresh;
                    } else if folders.contains_key(&guid) {
                        // A copied folder directory carries its original's GUID; the later one
                        // (by name) gets a fresh one, as Dovecot does.
                        let fresh = Guid128::generate();
                        scan::rewrite_mailbox_guid(&folder.0.dir, fresh, self.fsync)?;
                        let tx = self.index.transaction()?;
                        tx.delete_mailbox(fresh)?;
                        tx.commit()?;
                        tracing::warn!(
                            "duplicate mailbox GUID {guid} in {name}: giving it a new GUID {fresh}"
                        );
                        guid = fresh;
                        folder = scan::scan_folder(&mut self.index, &name, &dir, false)?;
                    }
                    folders.insert(guid, folder.0);
                }
                Err(e) => self.mailbox_errors.push((name.to_string(), e)),
            }
        }
        self.folders = folders;
        Ok(())
    }

    /// Publishes the staged folders (see [`writer::publish`]), noting whether another
    /// program changed one meanwhile for the next flush to report.
    fn publish_staged(&mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        self.changed_while_staged |= writer::publish(&mut self.index, staged, self.fsync)?;
        Ok(())
    }

    fn folder(&self, guid: Guid128) -> Result<&Folder> {
        self.folders
            .get(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))
    }

    fn folder_dir(&self, name: &MailboxName) -> Result<PathBuf> {
        scan::folder_dir(&self.location.root, self.location.layout, name)
    }

    fn log_append(&mut self, kind: LogKind, guid: Guid128) -> Result<()> {
        let rec = mailbox_log::append_now(&self.location.index_dir, kind, guid)?;
        self.log.push(rec);
        Ok(())
    }

    fn write_subscriptions(&self) -> Result<()> {
        format::subscriptions::write_atomic(
            &self.location.root,
            &self.subscriptions,
            self.separator_v1(),
            self.fsync,
        )
    }

    pub fn location(&self) -> &Location {
        &self.location
    }
}

impl Drop for MaildirStore {
    /// A store dropped without [`Store::flush`] (an error ended the sync) still publishes
    /// the folders it finished: their mail is complete in `tmp/`, and the next sync need
    /// not copy it again.
    fn drop(&mut self) {
        if let Err(e) = self.publish_staged() {
            tracing::warn!("{}: finishing the last saves: {e}", self.describe());
        }
    }
}

/// A message body in a Maildir file. The name is looked up again at open time, so a flag
/// change by another program (which renames the file) between listing and copying is survived.
struct MaildirBody {
    dir: PathBuf,
    file: String,
    /// `dir/file`, for a kernel-side copy.
    path: PathBuf,
    size: Option<u64>,
}

impl MailBody for MaildirBody {
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        match std::fs::File::open(self.dir.join(&self.file)) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let base = format::filename::split_info(file_name_of(&self.file)).0;
                for sub in ["cur", "new"] {
                    for entry in std::fs::read_dir(self.dir.join(sub))?.flatten() {
                        let name = entry.file_name();
                        if name
                            .to_str()
                            .is_some_and(|n| format::filename::split_info(n).0 == base)
                        {
                            return Ok(Box::new(std::fs::File::open(entry.path())?));
                        }
                    }
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn local_path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn received(&self) -> Option<i64> {
        let meta = std::fs::metadata(self.dir.join(&self.file)).ok()?;
        let t = meta.modified().ok()?;
        Some(
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        )
    }

    fn size(&self) -> Option<u64> {
        self.size
    }
}

fn file_name_of(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

impl Store for MaildirStore {
    fn describe(&self) -> String {
        format!("maildir:{}", self.location.root.display())
    }

    fn lock_sync(&self, timeout: std::time::Duration) -> Result<crate::SyncLock> {
        crate::lock_file(&self.location.index_dir.join("boxsync-sync.lock"), timeout)
    }

    fn mailboxes(&self) -> Vec<MailboxEntry> {
        let subscribed: std::collections::HashSet<&Vec<String>> =
            self.subscriptions.names.iter().collect();
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
                    subscribed: subscribed.contains(&f.name.parts().to_vec()),
                    last_renamed_or_created: renamed,
                    last_subscription_change: sub_change,
                }
            })
            .collect()
    }

    fn broken_mailboxes(&self) -> Vec<MailboxName> {
        crate::broken_names(&self.mailbox_errors)
    }

    fn fix_name(&self, name: &MailboxName, alt: char) -> Option<MailboxName> {
        scan::fix_name(self.location.layout, name, alt)
    }

    fn tombstones(&self) -> Tombstones {
        mailbox_log::tombstones(&self.log, |g| self.folders.contains_key(&g))
    }

    fn load(&mut self, mailbox: Guid128) -> Result<()> {
        let folder = self
            .folders
            .get_mut(&mailbox)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {mailbox} not found")))?;
        scan::load_folder(&self.index, mailbox, folder)
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
        if let Some(tmp) = self.staged.iter().find_map(|s| s.tmp_of(mailbox, uid)) {
            // Saved in this sync and not published yet: still in tmp/.
            let file = format!("tmp/{}", file_name_of(&tmp.to_string_lossy()));
            return Ok(Box::new(MaildirBody {
                dir: f.dir.clone(),
                file,
                path: tmp.to_path_buf(),
                size: None,
            }));
        }
        let file = f
            .files
            .get(&uid)
            .ok_or_else(|| Error::NotFound(format!("UID {uid} not in {}", f.name)))?;
        let size =
            format::filename::base_sizes(format::filename::split_info(file_name_of(file)).0).0;
        Ok(Box::new(MaildirBody {
            dir: f.dir.clone(),
            file: file.clone(),
            path: f.dir.join(file),
            size,
        }))
    }

    fn create_mailbox(
        &mut self,
        name: &MailboxName,
        guid: Guid128,
        uidvalidity: u32,
    ) -> Result<()> {
        let dir = self.folder_dir(name)?;
        let folder = scan::create_folder(
            &mut self.index,
            name,
            &dir,
            guid,
            uidvalidity,
            self.location.layout,
            self.fsync,
        )?;
        self.folders.insert(guid, folder);
        Ok(())
    }

    fn delete_mailbox(&mut self, guid: Guid128) -> Result<()> {
        self.publish_staged()?;
        let f = self
            .folders
            .remove(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))?;
        scan::delete_folder(&f.dir, self.location.layout, &self.location.root)?;
        let tx = self.index.transaction()?;
        tx.delete_mailbox(guid)?;
        tx.commit()?;
        self.log_append(LogKind::DeleteMailbox, guid)
    }

    fn rename_mailbox(&mut self, guid: Guid128, to: &MailboxName) -> Result<()> {
        self.publish_staged()?;
        let new_dir = self.folder_dir(to)?;
        let layout = self.location.layout;
        let f = self
            .folders
            .get_mut(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))?;
        scan::move_folder(&f.dir, &new_dir, layout)?;
        f.dir = new_dir;
        f.name = to.clone();
        self.log_append(LogKind::Rename, Guid128::sha128_of(&to.to_string()))
    }

    fn change_mailbox_guid(&mut self, old: Guid128, new: Guid128) -> Result<()> {
        self.publish_staged()?;
        let f = self
            .folders
            .remove(&old)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {old} not found")))?;
        scan::rewrite_mailbox_guid(&f.dir, new, self.fsync)?;
        let tx = self.index.transaction()?;
        tx.delete_mailbox(new)?;
        tx.rekey_mailbox(old, new)?;
        tx.commit()?;
        self.folders.insert(new, f);
        Ok(())
    }

    fn set_subscribed(&mut self, name: &MailboxName, subscribed: bool) -> Result<()> {
        let parts = name.parts().to_vec();
        let present = self.subscriptions.names.contains(&parts);
        if present == subscribed {
            return Ok(());
        }
        if subscribed {
            self.subscriptions.names.push(parts);
        } else {
            self.subscriptions.names.retain(|n| *n != parts);
        }
        self.write_subscriptions()?;
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
            // Not rescanned since the last run, which recorded this already.
            return Ok(());
        }
        let files = &folder.files;
        crate::record_agreed(&mut self.index, mailbox, &mut folder.messages, |uid| {
            files.get(&uid).cloned()
        })
    }

    fn flush(&mut self) -> Result<WriteReport> {
        self.publish_staged()?;
        Ok(WriteReport {
            changed_during_sync: std::mem::take(&mut self.changed_while_staged),
            ..WriteReport::default()
        })
    }

    fn writer(
        &mut self,
        mailbox: Guid128,
        header: HeaderUpdate,
    ) -> Result<Box<dyn MailboxWriter + '_>> {
        if self.staged.iter().any(|s| s.is_of(mailbox)) {
            // Its records must be in the uidlist before another writer reads it, and publish
            // takes each folder's lock once.
            self.publish_staged()?;
        }
        let fsync = self.fsync;
        let folder = self
            .folders
            .get_mut(&mailbox)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {mailbox} not found")))?;
        scan::load_folder(&self.index, mailbox, folder)?;
        Ok(Box::new(writer::Writer::new(
            &mut self.index,
            mailbox,
            folder,
            &mut self.staged,
            fsync,
            header,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SaveMeta;
    use boxsync_model::{Flags, Keywords};
    use format::uidlist::{self, UidlistRecord};

    /// A message file on disk, handed over as the other side's body.
    struct FileBody(PathBuf);

    impl MailBody for FileBody {
        fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
            Ok(Box::new(std::fs::File::open(&self.0)?))
        }

        fn local_path(&self) -> Option<&Path> {
            Some(&self.0)
        }
    }

    const TEXT: &[u8] = b"Subject: x\n\nhello\n";

    fn open(root: &Path) -> MaildirStore {
        let location = Location::parse(&format!("maildir:{}", root.display())).unwrap();
        MaildirStore::open(&location, true, true).unwrap()
    }

    /// An empty store at `DIR/mail`, and `DIR/source` for the other side's files.
    fn store_and_source() -> (tempfile::TempDir, PathBuf, PathBuf, MaildirStore) {
        let dir = tempfile::tempdir().unwrap();
        let (root, source) = (dir.path().join("mail"), dir.path().join("source"));
        std::fs::create_dir_all(&source).unwrap();
        let store = open(&root);
        (dir, root, source, store)
    }

    /// A new folder given one message (UID 1) by a finished writer, agreeing on `uidnext`.
    fn save_one(
        store: &mut MaildirStore,
        source: &Path,
        name: &str,
        i: usize,
        uidnext: Uid,
    ) -> (Guid128, PathBuf) {
        let guid = Guid128::generate();
        store
            .create_mailbox(&MailboxName::parse(name).unwrap(), guid, 100)
            .unwrap();
        // A Dovecot-style name stating the sizes: the copier threads copy it.
        let base = format!("1700000000.M{i}P1.host,S=18,W=21");
        let file = source.join(&base);
        std::fs::write(&file, TEXT).unwrap();
        let header = HeaderUpdate {
            uidvalidity: 100,
            uidnext,
            highest_modseq: 1,
            change_modseq: 1,
        };
        let mut writer = store.writer(guid, header).unwrap();
        let meta = SaveMeta {
            uid: 1,
            guid: base,
            flags: Flags::SEEN,
            keywords: Keywords::new(),
            received: 1_700_000_000,
            pop3_uidl: None,
            pop3_order: None,
        };
        writer.save(meta, &FileBody(file)).unwrap();
        let report = writer.finish().unwrap();
        assert_eq!(report.saved, 1);
        (guid, store.folder(guid).unwrap().dir.clone())
    }

    /// Two new folders, each given one message by a finished writer; returns the folders.
    fn save_into_two(store: &mut MaildirStore, source: &Path) -> Vec<(Guid128, PathBuf)> {
        ["A", "B"]
            .into_iter()
            .enumerate()
            .map(|(i, name)| save_one(store, source, name, i, 2))
            .collect()
    }

    fn cur_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("cur"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn uids_after_reopening(root: &Path, guid: Guid128) -> Vec<(Uid, String)> {
        let mut store = open(root);
        store.load(guid).unwrap();
        store
            .messages(guid)
            .unwrap()
            .iter()
            .map(|m| (m.uid, m.guid.clone()))
            .collect()
    }

    #[test]
    fn small_batches_of_saves_wait_for_the_flush_and_read_from_tmp_meanwhile() {
        let (_dir, root, source, mut store) = store_and_source();
        let folders = save_into_two(&mut store, &source);
        for (guid, folder) in &folders {
            assert!(cur_files(folder).is_empty(), "published before the flush");
            // The store shows the message already, and can read it.
            assert_eq!(store.messages(*guid).unwrap().len(), 1);
            let mut text = Vec::new();
            std::io::Read::read_to_end(
                &mut store.body(*guid, 1).unwrap().open().unwrap(),
                &mut text,
            )
            .unwrap();
            assert_eq!(text, TEXT);
        }
        let report = store.flush().unwrap();
        assert!(!report.changed_during_sync);
        for (i, (guid, folder)) in folders.iter().enumerate() {
            let base = format!("1700000000.M{i}P1.host,S=18,W=21");
            assert_eq!(cur_files(folder), [format!("{base}:2,S")]);
            let uidlist = std::fs::read_to_string(folder.join("dovecot-uidlist")).unwrap();
            assert!(uidlist.contains(&format!("\n1 :{base}\n")), "{uidlist}");
            let left: Vec<_> = std::fs::read_dir(folder.join("tmp")).unwrap().collect();
            assert!(left.is_empty(), "{left:?}");
            drop(store);
            assert_eq!(uids_after_reopening(&root, *guid), [(1, base)]);
            store = open(&root);
        }
    }

    #[test]
    fn a_store_dropped_without_a_flush_still_publishes_what_it_staged() {
        let (_dir, root, source, mut store) = store_and_source();
        let folders = save_into_two(&mut store, &source);
        drop(store);
        for (i, (guid, folder)) in folders.iter().enumerate() {
            assert_eq!(cur_files(folder).len(), 1);
            let base = format!("1700000000.M{i}P1.host,S=18,W=21");
            assert_eq!(uids_after_reopening(&root, *guid), [(1, base)]);
        }
    }

    #[test]
    fn a_uid_another_program_takes_before_the_flush_goes_to_the_staged_save_no_more() {
        let (_dir, root, source, mut store) = store_and_source();
        let folders = save_into_two(&mut store, &source);
        // Dovecot delivers into A and gives the new mail UID 1, under the uidlist lock.
        let (guid, folder) = &folders[0];
        std::fs::write(folder.join("cur/1700000001.other:2,"), TEXT).unwrap();
        let path = folder.join("dovecot-uidlist");
        let mut list = uidlist::Uidlist::read(folder).unwrap().unwrap();
        list.records.push(UidlistRecord::new(1, "1700000001.other"));
        list.next_uid = 2;
        uidlist::write_atomic(folder, &list, false).unwrap();
        assert!(path.exists());
        let report = store.flush().unwrap();
        assert!(report.changed_during_sync);
        drop(store);
        let base = "1700000000.M0P1.host,S=18,W=21".to_owned();
        assert_eq!(
            uids_after_reopening(&root, *guid),
            [(1, "1700000001.other".to_owned()), (2, base)]
        );
    }

    #[test]
    fn saves_are_appended_to_the_uidlist_unless_its_next_uid_must_move_past_them() {
        let (_dir, _root, source, mut store) = store_and_source();
        let (_, appended) = save_one(&mut store, &source, "A", 0, 2);
        // The source's UIDNEXT is 9: the header must say so, which an append cannot.
        let (_, raised) = save_one(&mut store, &source, "B", 1, 9);
        let before = |d: &Path| std::fs::read(d.join("dovecot-uidlist")).unwrap();
        let (appended_before, raised_before) = (before(&appended), before(&raised));
        store.flush().unwrap();

        let after = std::fs::read(appended.join("dovecot-uidlist")).unwrap();
        assert!(
            after.starts_with(&appended_before),
            "rewritten, not appended"
        );
        let list = uidlist::Uidlist::read(&appended).unwrap().unwrap();
        assert_eq!(list.next_uid, 2);
        assert_eq!(list.records.len(), 1);

        let after = std::fs::read(raised.join("dovecot-uidlist")).unwrap();
        assert!(!after.starts_with(&raised_before));
        let list = uidlist::Uidlist::read(&raised).unwrap().unwrap();
        assert_eq!(list.next_uid, 9);
        assert!(String::from_utf8(after).unwrap().starts_with("3 V100 N9 "));
    }

    #[test]
    fn an_append_cut_short_is_dropped_by_a_rewrite() {
        let (_dir, root, source, mut store) = store_and_source();
        let (guid, folder) = save_one(&mut store, &source, "A", 0, 2);
        // Another writer's append, cut short by a crash: no line end, half a record.
        let path = folder.join("dovecot-uidlist");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"7 G0a1b");
        std::fs::write(&path, &bytes).unwrap();
        let report = store.flush().unwrap();
        assert!(!report.changed_during_sync);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with(":1700000000.M0P1.host,S=18,W=21\n"),
            "{text}"
        );
        assert!(!text.contains("7 G0a1b"), "{text}");
        drop(store);
        let base = "1700000000.M0P1.host,S=18,W=21".to_owned();
        assert_eq!(uids_after_reopening(&root, guid), [(1, base)]);
    }
    #[test]
    fn a_second_writer_on_a_staged_folder_publishes_the_first_one_first() {
        let (_dir, root, source, mut store) = store_and_source();
        let (guid, folder) = save_one(&mut store, &source, "A", 0, 2);
        let base = "1700000000.M9P1.host,S=18,W=21".to_owned();
        let file = source.join(&base);
        std::fs::write(&file, TEXT).unwrap();
        let header = HeaderUpdate {
            uidvalidity: 100,
            uidnext: 3,
            highest_modseq: 2,
            change_modseq: 2,
        };
        let mut writer = store.writer(guid, header).unwrap();
        assert_eq!(cur_files(&folder).len(), 1, "the first save is published");
        let meta = SaveMeta {
            uid: 2,
            guid: base.clone(),
            flags: Flags::EMPTY,
            keywords: Keywords::new(),
            received: 1_700_000_000,
            pop3_uidl: None,
            pop3_order: None,
        };
        writer.save(meta, &FileBody(file)).unwrap();
        writer.finish().unwrap();
        assert!(!store.flush().unwrap().changed_during_sync);
        drop(store);
        let first = "1700000000.M0P1.host,S=18,W=21".to_owned();
        assert_eq!(uids_after_reopening(&root, guid), [(1, first), (2, base)]);
    }
}
