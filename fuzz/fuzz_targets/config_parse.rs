//! Any bytes as a config file: parsing never panics, and never leaves the nonexistent
//! directory it pretends to live in (relative includes and `<file` values fail cleanly).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

#[allow(dead_code)]
#[path = "../../crates/boxsync/src/config.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let origin = Path::new("/nonexistent-boxsync-fuzz/dovecot.conf");
    if let Err(e) = config::parse_str(&text, origin) {
        let _ = e.to_string();
    }
});
