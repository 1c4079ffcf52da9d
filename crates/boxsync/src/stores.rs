//! Opening any store a mail location names: a Maildir, an mbox tree, an IMAP account, or
//! (read only) Dovecot's sdbox or mdbox.

use boxsync_model::{Error, ExitCode, Result};
use boxsync_store::dbox::{DboxLocation, DboxStore};
use boxsync_store::dry_run::{DryRun, DryRunLog};
use boxsync_store::imapc::{ImapcLocation, ImapcStore};
use boxsync_store::maildir::MaildirStore;
use boxsync_store::mbox::{MboxLocation, MboxStore};
use boxsync_store::namespace::{Namespace, Namespaced};
use boxsync_store::{Location, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The settings that IMAP locations read (Dovecot's names), besides `ssl_client_ca_file`.
pub const IMAPC_SETTINGS: &[&str] = &[
    "imapc_host",
    "imapc_port",
    "imapc_user",
    "imapc_master_user",
    "imapc_password",
    "imapc_password_file",
    "imapc_password_command",
    "imapc_ssl",
    "imapc_ssl_verify",
    "imapc_sasl_mechanisms",
    "imapc_max_connections",
    "imapc_max_bytes_per_second",
    "imapc_cmd_timeout",
    "dsync_hashed_headers",
];

/// What opening a store needs besides its location.
#[derive(Clone, Debug, Default)]
pub struct StoreSettings {
    pub fsync: bool,
    /// `imapc_*`, `dsync_hashed_headers` and `ssl_client_ca_file` as given.
    pub imapc: BTreeMap<String, String>,
    /// The namespace the store's mailboxes are named in (its prefix), for a store a
    /// `dsync-server` opens; the CLI applies the one `-n` chose itself.
    pub namespace: Namespace,
}

/// An opened store with what its first scan found wrong.
pub struct Opened {
    pub store: Box<dyn Store + Send>,
    /// Mailboxes that could not be read (name, what is wrong, its exit code): reported here;
    /// the store itself keeps them too, so that the sync leaves them alone on both sides.
    pub scan_errors: Vec<(String, String, ExitCode)>,
    /// Where bodies received over a wire are spooled.
    pub spool: PathBuf,
}

impl Opened {
    /// The store seen through a namespace: its mailboxes named under the prefix.
    pub fn in_namespace(self, ns: &Namespace) -> Opened {
        if ns.is_empty() {
            return self;
        }
        Opened {
            store: Box::new(Namespaced::new(self.store, ns.clone())),
            ..self
        }
    }
}

/// A parsed mail location.
pub enum MailLocation {
    Maildir(Location),
    Mbox(MboxLocation),
    /// Dovecot's sdbox or mdbox: read only.
    Dbox(DboxLocation),
    Imapc(Box<ImapcLocation>),
}

impl MailLocation {
    pub fn parse(text: &str, settings: &StoreSettings) -> Result<MailLocation> {
        if ImapcLocation::is_imap(text) {
            Ok(MailLocation::Imapc(Box::new(ImapcLocation::parse(
                text,
                &|k| settings.imapc.get(k).cloned(),
            )?)))
        } else if DboxLocation::is_dbox(text) {
            Ok(MailLocation::Dbox(DboxLocation::parse(text)?))
        } else if MboxLocation::is_mbox(text) {
            Ok(MailLocation::Mbox(MboxLocation::parse(text)?))
        } else {
            Ok(MailLocation::Maildir(Location::parse(text)?))
        }
    }

    /// What makes two locations the same store.
    pub fn identity(&self) -> String {
        match self {
            MailLocation::Maildir(l) => l.root.display().to_string(),
            MailLocation::Mbox(l) => l.root.display().to_string(),
            MailLocation::Dbox(l) => l.root.display().to_string(),
            MailLocation::Imapc(l) => l.describe(),
        }
    }

    /// Where bodies received over a wire are spooled.
    pub fn spool(&self) -> PathBuf {
        match self {
            MailLocation::Maildir(l) => l.root.clone(),
            MailLocation::Mbox(l) => l.index_dir.clone(),
            MailLocation::Dbox(l) => l.index_dir.clone(),
            MailLocation::Imapc(l) => l.index_dir.clone(),
        }
    }

    /// Whether the root of a store on this machine's file system exists; `None` for an
    /// IMAP account.
    pub fn root_exists(&self) -> Option<bool> {
        match self {
            MailLocation::Maildir(l) => Some(l.root.is_dir()),
            MailLocation::Mbox(l) => Some(l.root.exists()),
            MailLocation::Dbox(l) => Some(l.root.is_dir()),
            MailLocation::Imapc(_) => None,
        }
    }

    /// Refuses a store boxsync cannot change (a dbox) on a side the sync would write to.
    pub fn check_writable(&self) -> Result<()> {
        match self {
            MailLocation::Dbox(l) => Err(l.read_only_error()),
            _ => Ok(()),
        }
    }

    /// Opens the store. With `create`, a missing Maildir is created (a destination); without,
    /// it is an error (a source). An IMAP account must exist either way.
    pub fn open(&self, create: bool, fsync: bool) -> Result<Opened> {
        let (store, scan_errors): (Box<dyn Store + Send>, _) = match self {
            MailLocation::Maildir(l) => {
                let store = MaildirStore::open(l, create, fsync)?;
                let errors = described(&store.mailbox_errors);
                (Box::new(store), errors)
            }
            MailLocation::Mbox(l) => {
                let store = MboxStore::open(l, create, fsync)?;
                let errors = described(&store.mailbox_errors);
                (Box::new(store), errors)
            }
            MailLocation::Dbox(l) => {
                let store = DboxStore::open(&l.root, l.kind, &l.index_dir)?;
                let errors = described(&store.mailbox_errors);
                (Box::new(store), errors)
            }
            MailLocation::Imapc(l) => {
                let store = ImapcStore::open(l, fsync)?;
                let errors = described(&store.mailbox_errors);
                (Box::new(store), errors)
            }
        };
        Ok(Opened {
            store,
            scan_errors,
            spool: self.spool(),
        })
    }

    /// Opens the store for `--dry-run`: nothing changes, neither while opening (the index is
    /// copied into memory, new mail gets UIDs in memory only, a missing Maildir or mbox root
    /// is an empty store, an IMAP account is only read) nor during the sync (every write
    /// becomes a line in the returned log, which the caller prints after the sync). A dbox
    /// is opened too, though only as a source: the caller refuses it on a side the sync
    /// writes to (see [`MailLocation::check_writable`]), as a real run would. Without
    /// `create` (a source), a missing Maildir or mbox root is the error the real run would
    /// stop with, never an empty store whose mirror would delete everything.
    pub fn open_dry_run(&self, create: bool) -> Result<(Opened, DryRunLog)> {
        // As in MaildirStore::open and MboxStore::open (an mbox root that is a file is
        // refused by MboxStore::open_dry_run).
        let missing = match self {
            MailLocation::Maildir(l) => Some(&l.root).filter(|r| !r.is_dir()),
            MailLocation::Mbox(l) => Some(&l.root).filter(|r| !r.exists()),
            MailLocation::Dbox(_) | MailLocation::Imapc(_) => None,
        };
        if let Some(root) = missing
            && !create
        {
            return Err(Error::NotFound(format!(
                "mail location {} does not exist",
                root.display()
            )));
        }
        let log = DryRunLog::new();
        let (store, scan_errors): (Box<dyn Store + Send>, _) = match self {
            MailLocation::Maildir(l) => {
                let store = MaildirStore::open_dry_run(l)?;
                let errors = described(&store.mailbox_errors);
                (Box::new(DryRun::new(store, log.clone())), errors)
            }
            MailLocation::Mbox(l) => {
                let store = MboxStore::open_dry_run(l)?;
                let errors = described(&store.mailbox_errors);
                (Box::new(DryRun::new(store, log.clone())), errors)
            }
            MailLocation::Dbox(l) => {
                let store = DboxStore::open_dry_run(&l.root, l.kind, &l.index_dir)?;
                let errors = described(&store.mailbox_errors);
                (Box::new(DryRun::new(store, log.clone())), errors)
            }
            MailLocation::Imapc(l) => {
                let store = ImapcStore::open_dry_run(l)?;
                let errors = described(&store.mailbox_errors);
                (Box::new(DryRun::new(store, log.clone())), errors)
            }
        };
        Ok((
            Opened {
                store,
                scan_errors,
                // Not in the store: even a spool file that comes and goes changes a directory.
                spool: std::env::temp_dir(),
            },
            log,
        ))
    }
}

/// Opens the store at `text` (see [`MailLocation::open`]); `create` also says that the sync
/// writes to it.
pub fn open(text: &str, create: bool, settings: &StoreSettings) -> Result<Opened> {
    let location = MailLocation::parse(text, settings)?;
    if create {
        location.check_writable()?;
    }
    location.open(create, settings.fsync)
}

fn described(errors: &[(String, Error)]) -> Vec<(String, String, ExitCode)> {
    errors
        .iter()
        .map(|(name, e)| (name.clone(), e.to_string(), e.exit_code()))
        .collect()
}

/// Opens `first` (created when missing only with `create`) and `second` (created when
/// missing), each scanning its store on a thread of its own when that is safe: when `first`
/// may be created, or its root is there. Otherwise `first` is opened alone first, so that a
/// missing source stops the sync before the other store is created.
pub fn open_both(
    first: &MailLocation,
    create: bool,
    second: &MailLocation,
    fsync: bool,
) -> Result<(Opened, Opened)> {
    if !create && first.root_exists() != Some(true) {
        let first = first.open(create, fsync)?;
        return Ok((first, second.open(true, fsync)?));
    }
    std::thread::scope(|s| {
        let other = s.spawn(|| second.open(true, fsync));
        let first = first.open(create, fsync);
        let second = other
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok((first?, second?))
    })
}

/// Closes two stores at once. Closing one checkpoints its index and frees its lists of every
/// message, several milliseconds each after a large scan; the process waits for both.
pub fn close_both(first: Opened, second: Opened) {
    std::thread::scope(|s| {
        s.spawn(move || drop(second));
        drop(first);
    });
}

/// Where spooled bodies go for a store at `text`.
pub fn spool_root(text: &str, settings: &StoreSettings) -> PathBuf {
    MailLocation::parse(text, settings)
        .map(|l| l.spool())
        .unwrap_or_else(|_| std::env::temp_dir())
}

/// Checks a setting name boxsync's IMAP stores know.
pub fn is_imapc_setting(key: &str) -> bool {
    IMAPC_SETTINGS.contains(&key)
}

impl StoreSettings {
    pub fn new(fsync: bool) -> StoreSettings {
        StoreSettings {
            fsync,
            imapc: BTreeMap::new(),
            namespace: Namespace::default(),
        }
    }
}
