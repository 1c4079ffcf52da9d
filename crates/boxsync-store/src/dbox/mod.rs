//! Read-only `sdbox` and `mdbox` stores: Dovecot's own formats, read without a running Dovecot.
//! Flags, keywords, UIDs, UIDVALIDITY and the mailbox GUID live only in Dovecot's index files
//! ([`index`]), the messages and their GUIDs and dates in dbox files ([`file`]). boxsync's own
//! index gives the messages modseqs and journals expunges, as for Maildir. Writing dbox would
//! mean writing Dovecot's indexes compatibly, which boxsync does not attempt: every change is
//! refused.

pub mod file;
pub mod index;
mod scan;

use crate::maildir::format::mailbox_log::{self, LogRecord};
use crate::maildir::format::subscriptions::Subscriptions;
use crate::{ExpungedRow, HeaderUpdate, MailboxEntry, MailboxWriter, Message, Store, Tombstones};
use boxsync_index::Index;
use boxsync_model::error::IoContext;
use boxsync_model::{Error, Guid128, MailboxName, Modseq, Result, Uid, mutf7};
use boxsync_proto::MailBody;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Which dbox format a store is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DboxKind {
    /// One file per message, `mailboxes/<name>/dbox-Mails/u.<uid>`.
    Sdbox,
    /// Messages in shared files `storage/m.<file_id>`, found through `storage/dovecot.map.index`.
    Mdbox,
}

impl fmt::Display for DboxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DboxKind::Sdbox => "sdbox",
            DboxKind::Mdbox => "mdbox",
        })
    }
}

/// A parsed `sdbox:ROOT[:INDEX=DIR]` or `mdbox:ROOT[:INDEX=DIR]` location. Dovecot's index
/// files are read where Dovecot keeps them by default, in the store; `INDEX=` names where
/// boxsync keeps its own index (by default under `$XDG_STATE_HOME/boxsync/dbox/`, so that the
/// store itself is never written to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DboxLocation {
    pub kind: DboxKind,
    pub root: PathBuf,
    pub index_dir: PathBuf,
}

impl DboxLocation {
    /// Whether `text` names a dbox location.
    pub fn is_dbox(text: &str) -> bool {
        text.starts_with("sdbox:") || text.starts_with("mdbox:")
    }

    pub fn parse(text: &str) -> Result<DboxLocation> {
        let (kind, rest) = match text.split_once(':') {
            Some(("sdbox", rest)) => (DboxKind::Sdbox, rest),
            Some(("mdbox", rest)) => (DboxKind::Mdbox, rest),
            _ => {
                return Err(Error::Usage(format!(
                    "mail location {text:?} is not an sdbox: or mdbox: location"
                )));
            }
        };
        let mut parts = rest.split(':');
        let root = parts.next().unwrap_or("");
        if root.is_empty() {
            return Err(Error::Usage(format!("mail location {text:?} has no path")));
        }
        let root = crate::location::expand_home(root);
        let mut index_dir = None;
        for opt in parts {
            match opt.split_once('=') {
                Some(("INDEX", dir)) if !dir.is_empty() => {
                    index_dir = Some(crate::location::expand_home(dir))
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "mail location {text:?}: unsupported option {opt:?} (a dbox store is \
                         read from its root; ALT= storage is not supported)"
                    )));
                }
            }
        }
        let index_dir = index_dir.unwrap_or_else(|| default_index_dir(kind, &root));
        Ok(DboxLocation {
            kind,
            root,
            index_dir,
        })
    }

    pub fn describe(&self) -> String {
        format!("{}:{}", self.kind, self.root.display())
    }

    /// The refusal for any change to a dbox store.
    pub fn read_only_error(&self) -> Error {
        Error::Usage(format!(
            "{} is read-only: boxsync reads Dovecot's dbox but does not write it (use it as the \
             source of a backup or of sync -1)",
            self.describe()
        ))
    }
}

fn default_index_dir(kind: DboxKind, root: &Path) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| crate::location::expand_home("~/.local/state"));
    let absolute = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let name: String = absolute
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    base.join("boxsync")
        .join(kind.to_string())
        .join(if name.is_empty() {
            "root".to_owned()
        } else {
            name
        })
}

/// One mailbox after a scan.
struct Folder {
    name: MailboxName,
    /// Its `dbox-Mails` directory.
    dir: PathBuf,
    uidvalidity: u32,
    uidnext: Uid,
    highest_modseq: Modseq,
    digest: u64,
    messages: Vec<Message>,
    /// Where each message is (`u.<uid>`, `m.<file_id>:<offset>:<size>`), by UID.
    files: BTreeMap<Uid, String>,
}

/// An sdbox or mdbox store opened for reading.
pub struct DboxStore {
    root: PathBuf,
    kind: DboxKind,
    index_dir: PathBuf,
    index: Index,
    folders: BTreeMap<Guid128, Folder>,
    subscriptions: Subscriptions,
    log: Vec<LogRecord>,
    /// Mailboxes that could not be read, with why; the others are read all the same.
    pub mailbox_errors: Vec<(String, Error)>,
}

impl DboxStore {
    /// Opens the store at `root` and brings boxsync's index in `index_dir` up to date with it.
    pub fn open(root: &Path, kind: DboxKind, index_dir: &Path) -> Result<DboxStore> {
        if !root.is_dir() {
            return Err(Error::NotFound(format!(
                "mail location {kind}:{} does not exist",
                root.display()
            )));
        }
        std::fs::create_dir_all(index_dir).ctx(|| format!("creating {}", index_dir.display()))?;
        let index = Index::open(&index_dir.join("boxsync.index.sqlite"), true)?;
        DboxStore::open_with(root, kind, index_dir, index)
    }

    /// Opens the store for a dry run: the same view as [`DboxStore::open`], with boxsync's
    /// index (the only thing a dbox store ever writes) copied into memory.
    pub fn open_dry_run(root: &Path, kind: DboxKind, index_dir: &Path) -> Result<DboxStore> {
        if !root.is_dir() {
            return Err(Error::NotFound(format!(
                "mail location {kind}:{} does not exist",
                root.display()
            )));
        }
        let index = Index::open_in_memory_copy(&index_dir.join("boxsync.index.sqlite"))?;
        DboxStore::open_with(root, kind, index_dir, index)
    }

    fn open_with(root: &Path, kind: DboxKind, index_dir: &Path, index: Index) -> Result<DboxStore> {
        let mut store = DboxStore {
            root: root.to_path_buf(),
            kind,
            index_dir: index_dir.to_path_buf(),
            index,
            folders: BTreeMap::new(),
            subscriptions: Subscriptions::new(),
            log: Vec::new(),
            mailbox_errors: Vec::new(),
        };
        store.refresh()?;
        Ok(store)
    }

    pub fn kind(&self) -> DboxKind {
        self.kind
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads the mailbox list, subscriptions and mailbox log again, and every mailbox.
    pub fn refresh(&mut self) -> Result<()> {
        let sub_path = self.root.join("subscriptions");
        self.subscriptions = match Subscriptions::read(&self.root, '/')? {
            Some(mut s) => {
                // Stored as on disk: modified UTF-7.
                for name in &mut s.names {
                    for part in name.iter_mut() {
                        match mutf7::decode(part) {
                            Some(decoded) => *part = decoded,
                            None => tracing::warn!(
                                "{}: {part:?} is not modified UTF-7",
                                sub_path.display()
                            ),
                        }
                    }
                }
                s
            }
            None => Subscriptions::new(),
        };
        self.log = mailbox_log::read(&self.root)?;
        self.mailbox_errors.clear();
        self.folders.clear();
        let mailboxes = scan::list_mailboxes(&self.root)?;
        let map = match self.kind {
            DboxKind::Mdbox if !mailboxes.is_empty() => Some(scan::read_map(&self.root)),
            _ => None,
        };
        for (name, dir) in mailboxes {
            let scanned = match &map {
                Some(Err(e)) => Err(Error::data(format!(
                    "mdbox mailbox {name} cannot be read: the map of the shared mail files is unreadable: {e}"
                ))),
                Some(Ok(map)) => scan::scan_mdbox(&self.index, &name, &dir, &self.root, map),
                None => scan::scan_sdbox(&self.index, &name, &dir),
            };
            let result = scanned.and_then(|s| self.add_folder(&name, dir, s));
            if let Err(e) = result {
                tracing::warn!("{}:{}: {e}", self.kind, self.root.display());
                self.mailbox_errors.push((name.to_string(), e));
            }
        }
        Ok(())
    }

    fn add_folder(&mut self, name: &MailboxName, dir: PathBuf, s: scan::Scanned) -> Result<()> {
        if let Some(other) = self.folders.get(&s.guid) {
            // A copied mailbox directory: Dovecot would give one a new GUID, which a read-only
            // reader cannot.
            return Err(Error::data(format!(
                "mailbox {name} has the same mailbox GUID {} as {}; one of them is a copy (`doveadm mailbox update --mailbox-guid` fixes it)",
                s.guid, other.name
            )));
        }
        let r = crate::reconcile::reconcile(
            &mut self.index,
            s.guid,
            name,
            s.uidvalidity,
            s.uidnext,
            s.seen,
            String::new(),
        )?;
        self.folders.insert(
            s.guid,
            Folder {
                name: name.clone(),
                dir,
                uidvalidity: s.uidvalidity,
                uidnext: s.uidnext,
                highest_modseq: r.highest_modseq,
                digest: r.digest,
                messages: r.messages,
                files: r.files,
            },
        );
        Ok(())
    }

    fn folder(&self, guid: Guid128) -> Result<&Folder> {
        self.folders
            .get(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))
    }

    fn read_only(&self) -> Error {
        Error::Usage(format!(
            "{}:{} is read-only: boxsync reads Dovecot's dbox but does not write it",
            self.kind,
            self.root.display()
        ))
    }
}

/// A message in a dbox file.
struct DboxBody {
    path: PathBuf,
    loc: file::MessageLocation,
    received: Option<i64>,
}

impl MailBody for DboxBody {
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(file::open_body(&self.path, &self.loc)?))
    }

    fn received(&self) -> Option<i64> {
        self.received
    }

    fn size(&self) -> Option<u64> {
        Some(self.loc.size)
    }
}

impl Store for DboxStore {
    fn describe(&self) -> String {
        format!("{}:{}", self.kind, self.root.display())
    }

    fn lock_sync(&self, timeout: std::time::Duration) -> Result<crate::SyncLock> {
        crate::lock_file(&self.index_dir.join("boxsync-sync.lock"), timeout)
    }

    fn mailboxes(&self) -> Vec<MailboxEntry> {
        let subscribed: HashSet<&Vec<String>> = self.subscriptions.names.iter().collect();
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
                    messages: f.messages.len() as u32,
                    digest: f.digest,
                    subscribed: subscribed.contains(&f.name.parts().to_vec()),
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

    /// A dbox is only ever read, so it never has to hold another store's name.
    fn fix_name(&self, name: &MailboxName, _alt: char) -> Option<MailboxName> {
        Some(name.clone())
    }

    fn load(&mut self, mailbox: Guid128) -> Result<()> {
        // Every mailbox is read whole when the store is opened.
        self.folder(mailbox).map(|_| ())
    }

    fn messages(&self, mailbox: Guid128) -> Result<&[Message]> {
        Ok(&self.folder(mailbox)?.messages)
    }

    fn expunged_since(&self, mailbox: Guid128, since: Modseq) -> Result<Vec<ExpungedRow>> {
        self.index.expunged_since(mailbox, since)
    }

    fn body(&self, mailbox: Guid128, uid: Uid) -> Result<Box<dyn MailBody>> {
        let f = self.folder(mailbox)?;
        let locator = f
            .files
            .get(&uid)
            .ok_or_else(|| Error::NotFound(format!("UID {uid} not in {}", f.name)))?;
        let (path, offset) = scan::locate(self.kind, &self.root, &f.dir, locator)?;
        let mut dbox = file::DboxFile::open(&path)?;
        let loc = match offset {
            Some(off) => dbox.message_at(off)?,
            None => dbox.first_message()?,
        };
        let meta = dbox.metadata(&loc)?;
        if let Some(why) = meta.transformed() {
            return Err(Error::data(format!(
                "{}: message UID {uid} of {} cannot be copied: {why}, which boxsync does not decode",
                path.display(),
                f.name
            )));
        }
        let received = meta.received().or_else(|| match self.kind {
            DboxKind::Sdbox => std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64),
            DboxKind::Mdbox => f
                .messages
                .binary_search_by_key(&uid, |m| m.uid)
                .ok()
                .map(|i| f.messages[i].received)
                .filter(|&r| r != 0),
        });
        Ok(Box::new(DboxBody {
            path,
            loc,
            received,
        }))
    }

    fn create_mailbox(&mut self, _: &MailboxName, _: Guid128, _: u32) -> Result<()> {
        Err(self.read_only())
    }

    fn delete_mailbox(&mut self, _: Guid128) -> Result<()> {
        Err(self.read_only())
    }

    fn rename_mailbox(&mut self, _: Guid128, _: &MailboxName) -> Result<()> {
        Err(self.read_only())
    }

    fn change_mailbox_guid(&mut self, _: Guid128, _: Guid128) -> Result<()> {
        Err(self.read_only())
    }

    fn set_subscribed(&mut self, _: &MailboxName, _: bool) -> Result<()> {
        Err(self.read_only())
    }

    fn record_agreed_flags(&mut self, mailbox: Guid128) -> Result<()> {
        let folder = self
            .folders
            .get_mut(&mailbox)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {mailbox} not found")))?;
        let files = &folder.files;
        crate::record_agreed(&mut self.index, mailbox, &mut folder.messages, |uid| {
            files.get(&uid).cloned()
        })
    }

    fn writer(&mut self, _: Guid128, _: HeaderUpdate) -> Result<Box<dyn MailboxWriter + '_>> {
        Err(self.read_only())
    }

    fn flush(&mut self) -> Result<crate::WriteReport> {
        // Its writers leave nothing waiting.
        Ok(crate::WriteReport::default())
    }
}

#[cfg(test)]
mod tests {
    use super::index::test_log::Log;
    use super::*;
    use boxsync_model::Flags;
    use std::io::Read;

    /// `mail_index_header.uid_validity`.
    const UIDVALIDITY: u16 = 24;

    /// A message as Dovecot writes it into a dbox file.
    fn dbox_message(body: &[u8], meta: &str) -> Vec<u8> {
        let mut out = format!("\x01\x02N          {:016X}\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        out.extend_from_slice(&file::MAGIC_POST);
        out.extend_from_slice(meta.as_bytes());
        out.extend_from_slice(b"\n\n");
        out
    }

    fn sdbox_file(body: &[u8], meta: &str) -> Vec<u8> {
        let mut out = b"2 M1e C1\n".to_vec();
        out.extend_from_slice(&dbox_message(body, meta));
        out
    }

    /// `dbox-hdr`/`mdbox-hdr` header data: a 32-bit counter, the mailbox GUID, flags.
    fn mailbox_hdr(guid: [u8; 16]) -> Vec<u8> {
        let mut h = vec![0; 4];
        h.extend_from_slice(&guid);
        h.extend_from_slice(&[0; 4]);
        h
    }

    fn mailbox_dir(root: &Path, name: &str) -> PathBuf {
        let dir = root
            .join("mailboxes")
            .join(mutf7::encode(name))
            .join("dbox-Mails");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_body(store: &DboxStore, mailbox: Guid128, uid: Uid) -> Vec<u8> {
        let mut out = Vec::new();
        store
            .body(mailbox, uid)
            .unwrap()
            .open()
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn reads_a_hand_made_sdbox_store() {
        let root = tempfile::tempdir().unwrap();
        let index_dir = tempfile::tempdir().unwrap();
        let inbox = mailbox_dir(root.path(), "INBOX");
        let log = Log::new(1, 1, 0)
            .intro(u32::MAX, "dbox-hdr", 24, 0)
            .ext_hdr(0, &mailbox_hdr([0x11; 16]))
            .header_u32(UIDVALIDITY, 1000)
            .append(1, 0)
            .append(2, 0)
            .append(3, 0)
            .flags(1, 1, Flags::SEEN.0, 0)
            .keyword(0, "$Label1", 2, 2)
            .expunge(3, 3, true);
        std::fs::write(inbox.join("dovecot.index.log"), &log.0).unwrap();
        std::fs::write(
            inbox.join("u.1"),
            sdbox_file(b"Subject: one\n\nOne\n", "R5f5e1000\nGguid-one"),
        )
        .unwrap();
        std::fs::write(inbox.join("u.2"), sdbox_file(b"two", "Gguid-two")).unwrap();

        let sub = mailbox_dir(root.path(), "Ünïcode");
        let log = Log::new(2, 1, 0)
            .intro(u32::MAX, "dbox-hdr", 24, 0)
            .ext_hdr(0, &mailbox_hdr([0x22; 16]))
            .header_u32(UIDVALIDITY, 2000);
        std::fs::write(sub.join("dovecot.index.log"), &log.0).unwrap();
        std::fs::write(
            root.path().join("subscriptions"),
            format!("V\t2\n\n{}\n", mutf7::encode("Ünïcode")),
        )
        .unwrap();

        let broken = mailbox_dir(root.path(), "Broken");
        let log = Log::new(3, 1, 0)
            .intro(u32::MAX, "dbox-hdr", 24, 0)
            .ext_hdr(0, &mailbox_hdr([0x33; 16]))
            .header_u32(UIDVALIDITY, 3000)
            .append(1, 0);
        std::fs::write(broken.join("dovecot.index.log"), &log.0).unwrap();
        std::fs::write(broken.join("u.1"), b"garbage").unwrap();

        let mut store = DboxStore::open(root.path(), DboxKind::Sdbox, index_dir.path()).unwrap();
        assert_eq!(store.mailbox_errors.len(), 1);
        let (name, err) = &store.mailbox_errors[0];
        assert_eq!(name, "Broken");
        assert!(err.to_string().contains("Broken/dbox-Mails/u.1"), "{err}");

        let mut boxes = store.mailboxes();
        boxes.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<String> = boxes.iter().map(|m| m.name.to_string()).collect();
        assert_eq!(names, ["INBOX", "Ünïcode"]);
        let (inbox, sub) = (&boxes[0], &boxes[1]);
        assert_eq!(inbox.guid, Guid128([0x11; 16]));
        assert_eq!(
            (inbox.uidvalidity, inbox.uidnext, inbox.messages),
            (1000, 4, 2)
        );
        assert!(!inbox.subscribed && sub.subscribed);
        assert_eq!(
            (sub.guid, sub.uidvalidity, sub.messages),
            (Guid128([0x22; 16]), 2000, 0)
        );

        let msgs = store.messages(inbox.guid).unwrap().to_vec();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            (
                msgs[0].uid,
                msgs[0].guid.as_str(),
                msgs[0].flags,
                msgs[0].received
            ),
            (1, "guid-one", Flags::SEEN, 0x5f5e_1000)
        );
        assert_eq!((msgs[1].uid, msgs[1].guid.as_str()), (2, "guid-two"));
        assert_eq!(msgs[1].keywords.iter().collect::<Vec<_>>(), ["$Label1"]);
        // Without `R`, the file's modification time.
        assert!(msgs[1].received > 0);
        assert_eq!(read_body(&store, inbox.guid, 1), b"Subject: one\n\nOne\n");
        assert_eq!(read_body(&store, inbox.guid, 2), b"two");
        assert_eq!(
            store.body(inbox.guid, 1).unwrap().received(),
            Some(0x5f5e_1000)
        );

        let err = store.delete_mailbox(inbox.guid).unwrap_err();
        assert_eq!(err.exit_code().code(), 64);
        assert!(
            err.to_string()
                .ends_with("is read-only: boxsync reads Dovecot's dbox but does not write it")
        );
    }

    #[test]
    fn reads_a_hand_made_mdbox_store() {
        let root = tempfile::tempdir().unwrap();
        let index_dir = tempfile::tempdir().unwrap();
        let storage = root.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let a = dbox_message(b"Subject: a\n\nA\n", "Gguid-a\nPuidl-a\nO3\nBINBOX");
        let b = dbox_message(b"Subject: b\n\nB\n", "R64\nGguid-b");
        let mut m1 = b"2 M1e C1\n".to_vec();
        let (off_a, off_b) = (m1.len() as u32, (m1.len() + a.len()) as u32);
        m1.extend_from_slice(&a);
        m1.extend_from_slice(&b);
        std::fs::write(storage.join("m.1"), &m1).unwrap();
        let map_rec = |offset: u32, size: usize| {
            [1u32, offset, size as u32]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
        };
        let map = Log::new(9, 1, 0)
            .intro(u32::MAX, "map", 8, 12)
            .append(1, 0)
            .append(2, 0)
            .ext_rec(1, &map_rec(off_a, a.len()))
            .ext_rec(2, &map_rec(off_b, b.len()));
        std::fs::write(storage.join("dovecot.map.index.log"), &map.0).unwrap();

        let inbox = mailbox_dir(root.path(), "INBOX");
        let mdbox_rec = |map_uid: u32, save_date: u32| {
            [map_uid, save_date]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
        };
        let log = Log::new(4, 1, 0)
            .intro(u32::MAX, "mdbox-hdr", 24, 0)
            .ext_hdr(0, &mailbox_hdr([0x44; 16]))
            .header_u32(UIDVALIDITY, 4000)
            .append(1, 0)
            .append(2, Flags::FLAGGED.0)
            .intro(u32::MAX, "mdbox", 0, 8)
            .ext_rec(1, &mdbox_rec(2, 0))
            .ext_rec(2, &mdbox_rec(1, 0x100))
            .intro(u32::MAX, "guid", 0, 16)
            .ext_rec(1, &[0xaa; 16]);
        std::fs::write(inbox.join("dovecot.index.log"), &log.0).unwrap();

        let store = DboxStore::open(root.path(), DboxKind::Mdbox, index_dir.path()).unwrap();
        assert!(
            store.mailbox_errors.is_empty(),
            "{:?}",
            store.mailbox_errors
        );
        let guid = Guid128([0x44; 16]);
        let msgs = store.messages(guid).unwrap();
        assert_eq!(msgs.len(), 2);
        // The file's `G` is what Dovecot reports, over the `guid` extension.
        assert_eq!(msgs[0].guid, "guid-b");
        assert_eq!(msgs[0].received, 0x64);
        assert_eq!(msgs[1].guid, "guid-a");
        assert_eq!(msgs[1].flags, Flags::FLAGGED);
        assert_eq!(
            (msgs[1].pop3_uidl.as_deref(), msgs[1].pop3_order),
            (Some("uidl-a"), Some(3))
        );
        // Without `R`, the save date from the index.
        assert_eq!(msgs[1].received, 0x100);
        assert_eq!(read_body(&store, guid, 1), b"Subject: b\n\nB\n");
        assert_eq!(read_body(&store, guid, 2), b"Subject: a\n\nA\n");
        drop(store);

        std::fs::remove_file(inbox.join("dovecot.index.log")).unwrap();
        let store = DboxStore::open(root.path(), DboxKind::Mdbox, index_dir.path()).unwrap();
        assert!(store.mailboxes().is_empty());
        let (name, err) = &store.mailbox_errors[0];
        assert_eq!(name, "INBOX");
        assert!(err.to_string().contains("force-resync"), "{err}");
    }
}
