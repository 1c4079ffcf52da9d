//! The dsync records two brains exchange, and the `-s` state string. No I/O here: a local sync
//! passes these values between threads, a remote one will serialize them on the wire.

pub mod record;
pub mod state;

pub use record::*;
pub use state::MailboxState;
