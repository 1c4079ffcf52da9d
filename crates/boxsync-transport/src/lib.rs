//! Carries dsync records between two brains that are not in one process: the link over a
//! byte stream (wire codec, reader and writer threads, spooled bodies), child processes
//! (`remote:`, commands), tcp and tls with the doveadm-server handshake, the listener, and
//! the raw log.

pub mod command;
pub mod dest;
pub mod doveadm;
pub mod dry_run;
pub mod link;
pub mod net;
pub mod pair;
pub mod rawlog;
pub mod server;

pub use link::{LinkOptions, StreamLink};
pub use pair::{run_master, sync_over_socketpair};
