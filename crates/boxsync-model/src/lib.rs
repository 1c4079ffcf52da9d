//! The vocabulary shared by every boxsync crate: mailbox GUIDs, message flags and keywords,
//! mailbox names as hierarchy parts, modified UTF-7, and the error type with doveadm's exit codes.

pub mod error;
pub mod flags;
pub mod guid;
pub mod mutf7;
pub mod name;

pub use error::{Error, ExitCode, Result};
pub use flags::{Flags, Keywords};
pub use guid::Guid128;
pub use name::MailboxName;

/// An IMAP UID. Zero never names a message.
pub type Uid = u32;
/// A modification sequence (RFC 7162); zero means "never changed".
pub type Modseq = u64;
