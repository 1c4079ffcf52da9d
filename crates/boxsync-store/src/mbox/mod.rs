//! The mbox store: file format first (`format`), store logic to follow.

pub mod format;
