//! The dsync records two brains exchange, their wire codec, and the `-s` state string. No I/O
//! here: a local sync passes these values between threads, a remote one serializes them with
//! [`wire`].

pub mod record;
pub mod state;
pub mod wire;

pub use record::*;
pub use state::MailboxState;
