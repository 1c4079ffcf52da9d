//! Mail stores behind one trait. The brain sees a store as a list of mailboxes (with GUIDs,
//! tombstones and timestamps), each a UID-ordered list of messages with modseqs and an expunge
//! journal, that it can change through a batched [`MailboxWriter`]. Backends: `maildir` and `imapc`.

pub mod dbox;
pub mod dry_run;
pub mod hdr_hash;
pub mod imapc;
pub mod location;
pub mod maildir;
pub mod mbox;
pub mod namespace;
pub mod reconcile;

pub use boxsync_index::ExpungedRow;
use boxsync_model::{Flags, Guid128, Keywords, MailboxName, Modseq, Result, Uid};
use boxsync_proto::MailBody;

pub use location::{Layout, Location};

/// One mailbox as the tree sync sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxEntry {
    pub name: MailboxName,
    pub guid: Guid128,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: Modseq,
    pub messages: u32,
    pub subscribed: bool,
    pub last_renamed_or_created: i64,
    pub last_subscription_change: i64,
    /// [`content_digest`] of the messages.
    pub digest: u64,
}

/// What a store remembers of deleted mailboxes and removed subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tombstones {
    /// Deleted mailboxes by GUID, with the time of the deletion.
    pub mailboxes: Vec<(Guid128, i64)>,
    /// Unsubscribed names by SHA-1-128 of the name.
    pub unsubscribes: Vec<(Guid128, i64)>,
}

/// One message with everything the sync compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub uid: Uid,
    pub guid: String,
    pub flags: Flags,
    pub keywords: Keywords,
    pub modseq: Modseq,
    /// Flags and keywords at the last sync of this message, when there was one.
    pub base: Option<(Flags, Keywords)>,
    pub received: i64,
    pub pop3_uidl: Option<String>,
    pub pop3_order: Option<u32>,
}

impl Message {
    /// Its index row, found at `file` (the store's locator).
    pub fn index_row(&self, file: String) -> boxsync_index::MessageRow {
        boxsync_index::MessageRow {
            uid: self.uid,
            guid: self.guid.clone(),
            file,
            flags: self.flags,
            keywords: self.keywords.clone(),
            modseq: self.modseq,
            base: self.base.clone(),
            pop3_uidl: self.pop3_uidl.clone(),
            pop3_order: self.pop3_order,
        }
    }
}

/// FNV-1a over every message's UID, GUID, flags and keywords: equal on two sides exactly when
/// they hold the same messages (up to hash collisions), and the same on any machine.
pub fn content_digest(messages: &[Message]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for m in messages {
        eat(&m.uid.to_le_bytes());
        eat(m.guid.as_bytes());
        eat(&[0, m.flags.0]);
        for k in &m.keywords {
            eat(k.as_bytes());
            eat(&[0]);
        }
        eat(&[1]);
    }
    h
}

/// Records that both sides now hold `messages` with the flags they have: sets each one's base
/// and returns the index rows to write, for the messages whose base moved (`file_of` gives a
/// message's `file` column; one without is skipped).
pub fn agree_flags(
    messages: &mut [Message],
    file_of: impl Fn(Uid) -> Option<String>,
) -> Vec<boxsync_index::MessageRow> {
    let mut rows = Vec::new();
    for m in messages {
        let current = (m.flags, m.keywords.clone());
        if m.base.as_ref() == Some(&current) {
            continue;
        }
        let Some(file) = file_of(m.uid) else {
            continue;
        };
        m.base = Some(current);
        rows.push(m.index_row(file));
    }
    rows
}

/// [`agree_flags`], and the rows it returns written to `index`: the whole of
/// [`Store::record_agreed_flags`] for a store that keeps a boxsync index.
pub(crate) fn record_agreed(
    index: &mut boxsync_index::Index,
    mailbox: Guid128,
    messages: &mut [Message],
    file_of: impl Fn(Uid) -> Option<String>,
) -> Result<()> {
    let rows = agree_flags(messages, file_of);
    if !rows.is_empty() {
        let tx = index.transaction()?;
        for row in &rows {
            tx.put_message(mailbox, row)?;
        }
        tx.commit()?;
    }
    Ok(())
}

/// The names of the mailboxes a scan could not read, for [`Store::broken_mailboxes`].
pub(crate) fn broken_names(errors: &[(String, boxsync_model::Error)]) -> Vec<MailboxName> {
    errors
        .iter()
        .filter_map(|(name, _)| MailboxName::parse(name).ok())
        .collect()
}

/// What a save needs besides the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveMeta {
    pub uid: Uid,
    pub guid: String,
    pub flags: Flags,
    pub keywords: Keywords,
    pub received: i64,
    pub pop3_uidl: Option<String>,
    pub pop3_order: Option<u32>,
}

/// Mailbox counters a writer sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderUpdate {
    pub uidvalidity: u32,
    /// The UIDNEXT both sides agreed on. A backup destination may be set lower than before.
    pub uidnext: Uid,
    pub highest_modseq: Modseq,
    /// The modseq given to every message this writer changed.
    pub change_modseq: Modseq,
}

/// What happened when a writer finished.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub saved: u64,
    pub expunged: u64,
    pub flag_changes: u64,
    pub bytes: u64,
    /// Another program changed the mailbox meanwhile (a UID we wanted was taken, a file
    /// vanished): the sync is consistent but must run again (exit 2).
    pub changed_during_sync: bool,
}

/// A store the brain can sync.
/// `-l`: held for a whole sync so that two syncs of one user do not run at once. Released on
/// drop (and by the kernel when the process dies).
pub struct SyncLock {
    _file: std::fs::File,
}

/// Takes an exclusive lock on `path`, waiting up to `timeout`.
pub fn lock_file(path: &std::path::Path, timeout: std::time::Duration) -> Result<SyncLock> {
    use boxsync_model::Error;
    use boxsync_model::error::IoContext;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ctx(|| format!("opening lock file {}", path.display()))?;
    let start = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(SyncLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < timeout => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::temp(format!(
                    "another sync holds {} (waited {} s, -l)",
                    path.display(),
                    timeout.as_secs()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
        }
    }
}

pub trait Store: Send {
    /// Where the store is, for messages.
    fn describe(&self) -> String;
    /// `-l`: locks the whole store for one sync.
    fn lock_sync(&self, timeout: std::time::Duration) -> Result<SyncLock>;
    fn mailboxes(&self) -> Vec<MailboxEntry>;
    fn tombstones(&self) -> Tombstones;
    /// Mailboxes that exist but could not be read (a corrupt uidlist): reported, and left
    /// alone on both sides.
    fn broken_mailboxes(&self) -> Vec<MailboxName>;
    /// The name this store gives a mailbox the other side calls `name` (dsync's
    /// `dsync_alt_char` repair; the brain has replaced control characters already): what the
    /// store cannot hold inside a level becomes `alt` (Maildir++'s `.`, an IMAP server's
    /// separator), a reserved level gets a `_` in front. A name that fits comes back as it is;
    /// `None` when no repair makes it fit (too long), and the brain names the mailbox after
    /// its GUID instead, as dsync does. Pure: it looks at no mailbox, so both names of one
    /// mailbox compare equal on this side in every later sync.
    fn fix_name(&self, name: &MailboxName, alt: char) -> Option<MailboxName>;
    /// The prefix of the namespace the store's names are given in, as configured (`Mail.`);
    /// empty for none (see [`namespace::Namespaced`]).
    fn namespace_prefix(&self) -> String {
        String::new()
    }
    /// Makes the messages of a mailbox available to [`Store::messages`] (a mailbox that did
    /// not change since the last scan is only read from the index when needed).
    fn load(&mut self, mailbox: Guid128) -> Result<()>;
    /// The messages of a mailbox in UID order, once loaded.
    fn messages(&self, mailbox: Guid128) -> Result<&[Message]>;
    fn expunged_since(&self, mailbox: Guid128, since: Modseq) -> Result<Vec<ExpungedRow>>;
    fn body(&self, mailbox: Guid128, uid: Uid) -> Result<Box<dyn MailBody>>;
    fn create_mailbox(&mut self, name: &MailboxName, guid: Guid128, uidvalidity: u32)
    -> Result<()>;
    fn delete_mailbox(&mut self, guid: Guid128) -> Result<()>;
    fn rename_mailbox(&mut self, guid: Guid128, to: &MailboxName) -> Result<()>;
    fn change_mailbox_guid(&mut self, old: Guid128, new: Guid128) -> Result<()>;
    fn set_subscribed(&mut self, name: &MailboxName, subscribed: bool) -> Result<()>;
    /// Starts changing a mailbox; `header` holds the counters both sides agreed on.
    /// Records that both sides now hold every message of this mailbox with the flags it has:
    /// the base for per-flag merging in the next sync. Touches only the index.
    fn record_agreed_flags(&mut self, mailbox: Guid128) -> Result<()>;
    fn writer(
        &mut self,
        mailbox: Guid128,
        header: HeaderUpdate,
    ) -> Result<Box<dyn MailboxWriter + '_>>;
    /// Makes durable what finished writers left waiting (a store may keep small batches of
    /// saves to flush many mailboxes' at once). The brain calls it once every mailbox is
    /// synced, before any state is given out; only `changed_during_sync` of the report is set.
    fn flush(&mut self) -> Result<WriteReport>;
}

/// Batched changes to one mailbox. Saves reach the disk in batches (write many, flush once,
/// rename, then record), so a crash at any point loses nothing and duplicates nothing.
pub trait MailboxWriter {
    fn save(&mut self, meta: SaveMeta, body: &dyn MailBody) -> Result<()>;
    fn expunge(&mut self, uid: Uid);
    fn set_flags(&mut self, uid: Uid, flags: Flags, keywords: Keywords);
    /// Gives a message a new UID (both sides renumber on a UID conflict).
    fn move_uid(&mut self, from: Uid, to: Uid);
    /// Records the flags both sides now agree on for a message.
    fn set_base(&mut self, uid: Uid, flags: Flags, keywords: Keywords);
    fn finish(self: Box<Self>) -> Result<WriteReport>;
}
