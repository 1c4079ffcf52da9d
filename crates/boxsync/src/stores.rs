//! Opening any store a mail location names: a Maildir or an IMAP account.

use boxsync_model::{Error, ExitCode, Result};
use boxsync_store::imapc::{ImapcLocation, ImapcStore};
use boxsync_store::maildir::MaildirStore;
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

/// Opens the store at `text`. With `create`, a missing Maildir is created (a destination);
/// without, it is an error (a source). An IMAP account must exist either way.
pub fn open(text: &str, create: bool, settings: &StoreSettings) -> Result<Opened> {
    if ImapcLocation::is_imap(text) {
        let loc = imapc_location(text, settings)?;
        let store = ImapcStore::open(&loc, settings.fsync)?;
        let scan_errors = described(&store.mailbox_errors);
        return Ok(Opened {
            spool: loc.index_dir.clone(),
            store: Box::new(store),
            scan_errors,
        });
    }
    let loc = Location::parse(text)?;
    let store = MaildirStore::open(&loc, create, settings.fsync)?;
    let scan_errors = described(&store.mailbox_errors);
    Ok(Opened {
        spool: loc.root.clone(),
        store: Box::new(store),
        scan_errors,
    })
}

fn described(errors: &[(String, Error)]) -> Vec<(String, String, ExitCode)> {
    errors
        .iter()
        .map(|(name, e)| (name.clone(), e.to_string(), e.exit_code()))
        .collect()
}

fn imapc_location(text: &str, settings: &StoreSettings) -> Result<ImapcLocation> {
    ImapcLocation::parse(text, &|k| settings.imapc.get(k).cloned())
}

/// What makes two locations the same store, without opening them.
pub fn identity(text: &str, settings: &StoreSettings) -> Result<String> {
    if ImapcLocation::is_imap(text) {
        Ok(imapc_location(text, settings)?.describe())
    } else {
        Ok(Location::parse(text)?.root.display().to_string())
    }
}

/// Where spooled bodies go for a store at `text`.
pub fn spool_root(text: &str, settings: &StoreSettings) -> PathBuf {
    if ImapcLocation::is_imap(text) {
        return imapc_location(text, settings)
            .map(|l| l.index_dir)
            .unwrap_or_else(|_| std::env::temp_dir());
    }
    Location::parse(text)
        .map(|l| l.root)
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
        }
    }
}
