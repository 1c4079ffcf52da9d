//! The dsync record types (reference/dovecot-dsync.md §4.3) as Rust values. Field names follow
//! Dovecot's keys so that the wire codec of the remote issue maps them one to one.

use boxsync_model::{Flags, Guid128, MailboxName, Modseq, Uid};
use std::fmt;
use std::io::Read;
use std::path::Path;

/// `H.sync_type`: `f` full, `c` changed (fast, the default), `s` stateful.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncType {
    Full,
    Changed,
    State,
}

/// `H`: sent by both sides first; the slave adopts the master's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub hostname: String,
    /// A boxsync extension (`x_ns_prefix`): the prefix of the namespace this side syncs
    /// (`Mail.`, or empty), sent by both sides, so that two ends whose mailbox names would not
    /// line up stop before changing anything. `None` from Dovecot.
    pub ns_prefix: Option<String>,
    pub sync_type: SyncType,
    /// The master sends mail, the slave only receives (`backup`); reversed for the slave.
    pub backup_send: bool,
    pub backup_recv: bool,
    /// `sync -1`: the sending side is never modified.
    pub no_backup_overwrite: bool,
    /// `-m`: only these mailboxes (by name).
    pub sync_boxes: Vec<String>,
    /// `-x`: mailbox masks to leave alone.
    pub exclude_mailboxes: Vec<String>,
    /// `-l SECS`: lock the user for the sync (0: no lock). The side with the lower host name
    /// takes the lock, as Dovecot decides.
    pub lock_timeout: u32,
    /// `-g GUID`: only the mailbox with this GUID (zero: every mailbox).
    pub sync_box_guid: Guid128,
    /// `-g ""` / `-m ""`: sync the mailbox list only, no mail.
    pub no_mail_sync: bool,
    /// `-t`: save only missing mail received at or after this UNIX time (0: no limit).
    pub sync_since_timestamp: i64,
    /// `-e`: save only missing mail received at or before this UNIX time (0: no limit).
    pub sync_until_timestamp: i64,
    /// `-I`: save only missing mail whose virtual size is at most this (0: no limit).
    pub sync_max_size: u64,
    /// `-O`: save only missing mail with this flag or keyword (`\Seen`, `$Label`), or with a
    /// leading `-`, only mail without it. Dovecot's string form, passed on as given.
    pub sync_flags: Option<String>,
    /// `-C`, `dsync_alt_char`: what replaces, in the other side's mailbox names, what a store
    /// cannot hold. The master sends its own; a slave uses it (its own default when absent).
    pub alt_char: Option<char>,
    /// `-a`: a mailbox holding every message (a virtual `\All`, Gmail's `All Mail`), from
    /// which a side copies mail it lacks by GUID instead of asking the other side for it.
    pub virtual_all_box: Option<String>,
    /// A boxsync extension (`x_dry_run`): the master asks the slave to open its store for
    /// `--dry-run`, change nothing and report what it would change in its finish record; a
    /// slave that does so says it in its own handshake. A master that does not see it there
    /// (a Dovecot slave ignores the key) must not go on.
    pub dry_run: bool,
}

impl Handshake {
    /// A handshake that asks for nothing: a fast two-way sync of everything, no lock, no
    /// filter (what a slave sends; it adopts the master's settings).
    pub fn plain(hostname: String) -> Handshake {
        Handshake {
            hostname,
            ns_prefix: None,
            sync_type: SyncType::Changed,
            backup_send: false,
            backup_recv: false,
            no_backup_overwrite: false,
            sync_boxes: Vec::new(),
            exclude_mailboxes: Vec::new(),
            lock_timeout: 0,
            sync_box_guid: Guid128::ZERO,
            no_mail_sync: false,
            sync_since_timestamp: 0,
            sync_until_timestamp: 0,
            sync_max_size: 0,
            sync_flags: None,
            alt_char: None,
            virtual_all_box: None,
            dry_run: false,
        }
    }
}

/// `N.existence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existence {
    Exists,
    Nonexistent,
    Deleted,
}

/// `N`: one node of a side's mailbox tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    pub name: MailboxName,
    pub existence: Existence,
    pub mailbox_guid: Guid128,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub last_renamed_or_created: i64,
    pub subscribed: bool,
    pub last_subscription_change: i64,
}

/// `D`: a side's tombstones. Dirs and unsubscribes are keyed by SHA-1-128 of the name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deletes {
    pub mailboxes: Vec<(Guid128, i64)>,
    pub dirs: Vec<(Guid128, i64)>,
    pub unsubscribes: Vec<(Guid128, i64)>,
}

/// `B`: a mailbox's counters, exchanged before its messages.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailboxRecord {
    pub mailbox_guid: Guid128,
    pub uid_validity: u32,
    pub uid_next: Uid,
    pub messages_count: u32,
    pub first_recent_uid: Uid,
    pub highest_modseq: Modseq,
    pub highest_pvt_modseq: Modseq,
    /// The side does not have (or lost) this mailbox.
    pub mailbox_lost: bool,
    /// The side will not sync this mailbox (filtered, or `-1` on the destination only).
    pub mailbox_ignore: bool,
    /// A boxsync extension: a digest of every (UID, GUID, flags, keywords), so that a fast sync
    /// never skips a mailbox whose counters agree by chance (dsync's documented weakness).
    /// Absent from peers that do not send it.
    pub content_digest: Option<u64>,
}

/// `C.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Save,
    Expunge,
    FlagChange,
}

/// One entry of `C.keyword_changes`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeywordChange {
    /// `+kw`: added since the last common state.
    Add(String),
    /// `-kw`: removed since the last common state.
    Remove(String),
    /// `=kw`: present now.
    Final(String),
    /// `&kw`: added and present now.
    AddFinal(String),
}

/// `C`: one message as one side has it (save), or its expunge, with flag deltas since the last
/// state both sides agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailChange {
    pub change_type: ChangeType,
    pub uid: Uid,
    pub guid: String,
    pub modseq: Modseq,
    pub add_flags: Flags,
    pub remove_flags: Flags,
    pub final_flags: Flags,
    pub keywords_reset: bool,
    pub keyword_changes: Vec<KeywordChange>,
    pub received_timestamp: i64,
    pub virtual_size: u64,
}

impl MailChange {
    /// The keywords this change says the message has now.
    pub fn final_keywords(&self) -> impl Iterator<Item = &str> {
        self.keyword_changes.iter().filter_map(|k| match k {
            KeywordChange::Final(s) | KeywordChange::AddFinal(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// Whether this side changed keyword `kw` since the last common state.
    pub fn keyword_changed(&self, kw: &str) -> bool {
        self.keyword_changes.iter().any(|k| match k {
            KeywordChange::Add(s) | KeywordChange::Remove(s) | KeywordChange::AddFinal(s) => {
                s == kw
            }
            KeywordChange::Final(_) => false,
        })
    }
}

/// `R`: please send me this mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailRequest {
    pub guid: String,
    pub uid: Uid,
}

/// A message body that can be read when the receiver is ready for it, so that thousands of
/// queued `M` records hold no open files and no bytes.
pub trait MailBody: Send {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>>;
    /// A local file holding exactly the body, when there is one (lets a local copy use the
    /// kernel's copy instead of a read/write loop).
    fn local_path(&self) -> Option<&Path> {
        None
    }
    /// The received date (IMAP INTERNALDATE) as a UNIX time, when the store keeps one.
    fn received(&self) -> Option<i64> {
        None
    }
    /// The size in bytes, when known without reading.
    fn size(&self) -> Option<u64> {
        None
    }
    /// Gives `dest` the body's bytes without copying them, when the body is a file that this
    /// side received and spooled (a hard link to it). Returns the size and the virtual size
    /// (with CRLF line ends) when it did.
    fn link_to(&self, _dest: &Path) -> std::io::Result<Option<(u64, u64)>> {
        Ok(None)
    }
}

/// `M`: a message body with the metadata that is not in the `C` record.
pub struct Mail {
    pub guid: String,
    pub uid: Uid,
    pub pop3_uidl: Option<String>,
    pub pop3_order: Option<u32>,
    pub received_date: i64,
    pub saved_date: i64,
    /// `None`: the sender no longer has the mail (expunged meanwhile).
    pub body: Option<Box<dyn MailBody>>,
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("guid", &self.guid)
            .field("uid", &self.uid)
            .field("received_date", &self.received_date)
            .field("has_body", &self.body.is_some())
            .finish()
    }
}

/// `F`: the slave's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Finish {
    pub error: Option<String>,
    /// Dovecot's `enum mail_error`, 0 for none.
    pub mail_error: u32,
    pub require_full_resync: bool,
    /// A boxsync extension, sent only to a master that asked for a dry run (and whose
    /// handshake the slave answered with `dry_run`): what the slave's store would have changed.
    pub dry_run: Option<DryRunReport>,
}

/// What a slave opened for `--dry-run` would have changed (`F.x_dry_run_store` and
/// `F.x_dry_run_lines`), for the master to print as it prints its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DryRunReport {
    /// The slave's description of its store, which prefixes each line when printed.
    pub store: String,
    /// One line per change, in the order the changes were asked for; empty when nothing
    /// would change.
    pub lines: Vec<String>,
}

/// Everything that travels between two brains. `End` is the `.` line that closes a list.
#[derive(Debug)]
pub enum Record {
    /// Boxed: rare, and the largest record.
    Handshake(Box<Handshake>),
    State(crate::MailboxState),
    Node(TreeNode),
    Deletes(Deletes),
    Mailbox(MailboxRecord),
    Change(MailChange),
    Request(MailRequest),
    Mail(Mail),
    Finish(Finish),
    End,
}

impl Record {
    /// The record's type letter, as on the wire (`.` for the end of a list).
    pub fn letter(&self) -> char {
        match self {
            Record::Handshake(_) => 'H',
            Record::State(_) => 'S',
            Record::Node(_) => 'N',
            Record::Deletes(_) => 'D',
            Record::Mailbox(_) => 'B',
            Record::Change(_) => 'C',
            Record::Request(_) => 'R',
            Record::Mail(_) => 'M',
            Record::Finish(_) => 'F',
            Record::End => '.',
        }
    }
}
