//! A blocking IMAP client for syncing with a remote server (Dovecot's `imapc`).
//!
//! imap-codec parses and serializes every message, imap-next runs the client protocol flow
//! (literals, AUTHENTICATE), and a small tokio driver owned by each [`Session`] moves the
//! bytes. Every public method blocks. Commands the sync needs in bulk (body fetches, appends)
//! are pipelined up to a window.
//!
//! Mailbox names are the raw names on the wire (modified UTF-7, as the server sends them);
//! `boxsync_model::mutf7` converts.
//!
//! Error mapping, so the caller can pick the exit code and decide whether to reconnect:
//! - connection refused, DNS failure, timeout, connection lost, BYE, `[UNAVAILABLE]`,
//!   `[THROTTLED]` (after retries), `[OVERQUOTA]`/`[LIMIT]`: `Error::Temp`;
//! - wrong credentials (`[AUTHENTICATIONFAILED]` or any NO to LOGIN/AUTHENTICATE), an
//!   untrusted TLS certificate: `Error::Permission`;
//! - a mailbox that does not exist (`[NONEXISTENT]`, `[TRYCREATE]`): `Error::NotFound`;
//! - any other NO/BAD, and a server breaking the protocol (unparseable response, oversized
//!   literal, data for a UID not asked for): `Error::Data`.
//!
//! After an error the session may be mid-conversation; further calls fail with `Temp` and the
//! caller reconnects.

mod append;
mod auth;
mod conn;
mod ext;
mod fetch;
mod mailbox;
mod session;

pub use session::{Session, parse_response_bytes_for_fuzz};

use std::path::PathBuf;
use std::time::Duration;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ssl {
    No,
    /// TLS from the first byte (port 993).
    Imaps,
    /// Plain tcp upgraded with STARTTLS; fails if the server does not offer it.
    Starttls,
}

/// Where the password (or OAuth token) comes from. `File` and `Command` are read again on
/// every connect so rotated tokens are picked up. The secret is never logged.
#[derive(Clone)]
pub enum Secret {
    Password(String),
    /// A file whose content, minus one trailing newline, is the secret.
    File(PathBuf),
    /// A shell command (`sh -c`) whose standard output, minus one trailing newline, is the
    /// secret.
    Command(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(***)"),
            Secret::File(p) => f.debug_tuple("File").field(p).finish(),
            Secret::Command(_) => f.write_str("Command(***)"),
        }
    }
}

/// Connection settings, named after Dovecot's `imapc_*` settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    /// 0 picks 143, or 993 with [`Ssl::Imaps`].
    pub port: u16,
    pub ssl: Ssl,
    /// false accepts any certificate (handshake signatures are still checked).
    pub ssl_verify: bool,
    /// PEM trust roots; `None` uses the system store.
    pub ca_file: Option<PathBuf>,
    pub user: String,
    /// Log in as this user on behalf of `user` (SASL PLAIN authzid = `user`).
    pub master_user: Option<String>,
    pub secret: Secret,
    /// Allowed SASL mechanisms in order of preference: PLAIN, LOGIN, XOAUTH2, OAUTHBEARER.
    /// Empty: the LOGIN command, or AUTHENTICATE PLAIN when the server says LOGINDISABLED or
    /// a master user is set. For the OAuth mechanisms the secret is the token.
    pub sasl_mechanisms: Vec<String>,
    /// The longest wait for any byte from the server before giving up with `Error::Temp`.
    pub timeout: Duration,
    /// Average limit on bytes read plus written, counted on the wire (after COMPRESS).
    pub max_bytes_per_second: Option<u64>,
    /// A literal larger than this (a message, usually) is refused with `Error::Data` as soon
    /// as the server announces it, before any of it is read.
    pub max_message_size: u64,
    /// How many body FETCH or APPEND commands may be in flight at once. 0 picks 16.
    pub pipeline_window: usize,
    /// Use COMPRESS=DEFLATE after login when the server offers it.
    pub compress: bool,
}

impl Config {
    /// Settings with the defaults Dovecot's imapc uses where it has one.
    pub fn new(host: impl Into<String>, user: impl Into<String>, secret: Secret) -> Config {
        Config {
            host: host.into(),
            port: 0,
            ssl: Ssl::No,
            ssl_verify: true,
            ca_file: None,
            user: user.into(),
            master_user: None,
            secret,
            sasl_mechanisms: Vec::new(),
            timeout: Duration::from_secs(30),
            max_bytes_per_second: None,
            max_message_size: 100 * 1024 * 1024,
            pipeline_window: 0,
            compress: true,
        }
    }
}

/// A mailbox's STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub messages: u32,
    pub uidnext: u32,
    pub uidvalidity: u32,
    /// `None` when the server has no CONDSTORE or the mailbox has no mod-sequences.
    pub highestmodseq: Option<u64>,
}

/// One mailbox from LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The raw wire name (modified UTF-7).
    pub name: String,
    pub separator: Option<char>,
    /// Attributes as text, `\Subscribed` left out (see `subscribed`): `\Noselect`,
    /// `\HasChildren`, special-use such as `\Sent`, `\NonExistent` for a subscription
    /// without a mailbox.
    pub attributes: Vec<String>,
    pub subscribed: bool,
    /// Filled when the server answered LIST-STATUS in the same round trip.
    pub status: Option<Status>,
}

impl ListEntry {
    /// Whether the entry has this attribute (case-insensitive, with the backslash).
    pub fn has_attribute(&self, attribute: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.eq_ignore_ascii_case(attribute))
    }
}

/// What FETCH told about one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageMeta {
    pub uid: u32,
    /// System flags as `\Seen` and so on, keywords verbatim; `\Recent` is dropped because it
    /// is per-session state nobody can sync.
    pub flags: Vec<String>,
    pub modseq: Option<u64>,
    /// INTERNALDATE in unix seconds.
    pub internaldate: Option<i64>,
    /// RFC822.SIZE.
    pub size: Option<u64>,
    pub guid: Option<String>,
    /// The raw bytes of BODY[HEADER.FIELDS (..)].
    pub header: Option<Vec<u8>>,
}

/// Which server-side message id to ask for as the GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuidItem {
    /// Dovecot's `X-GUID`: Dovecot answers it without advertising a capability, so use it
    /// when [`Session::is_dovecot`] says so or when the caller knows better.
    XGuid,
    /// RFC 8474 `EMAILID` (capability OBJECTID).
    EmailId,
    /// Gmail's `X-GM-MSGID` (capability X-GM-EXT-1).
    GmMsgId,
}

/// What [`Session::fetch_meta`] asks for besides UID and FLAGS.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetaRequest<'a> {
    pub guid: Option<GuidItem>,
    /// Header fields to fetch as `BODY.PEEK[HEADER.FIELDS (..)]` into `MessageMeta::header`.
    /// Names must be plain field names (letters, digits, `-`, `_`, `.`).
    pub header_fields: Option<&'a [String]>,
    /// Only messages whose mod-sequence is above this (CONDSTORE `CHANGEDSINCE`).
    pub changed_since: Option<u64>,
    /// With `changed_since` and QRESYNC enabled: also report expunged UIDs (`VANISHED`).
    pub vanished: bool,
    pub internaldate_and_size: bool,
}

/// The result of SELECT/EXAMINE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selected {
    pub uidvalidity: u32,
    /// 0 if the server did not say (it must, per RFC 3501, but old servers forget).
    pub uidnext: u32,
    pub exists: u32,
    pub highestmodseq: Option<u64>,
    /// UIDs expunged since the QRESYNC state given to [`Session::select`].
    pub vanished: Vec<u32>,
    /// Messages changed since that state, as QRESYNC reports them during SELECT.
    pub changed: Vec<MessageMeta>,
}

/// One message to APPEND. The body is borrowed: it is written to the connection from the
/// caller's buffer, never copied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Append<'a> {
    pub flags: Vec<String>,
    /// Unix seconds; `None` lets the server use its clock.
    pub internaldate: Option<i64>,
    pub body: &'a [u8],
}

/// How [`Session::store_flags`] changes the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Replace,
    Add,
    Remove,
}

#[cfg(test)]
mod tests;
