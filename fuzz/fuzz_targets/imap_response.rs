//! Bytes from a hostile IMAP server through the client's response handling: never a panic,
//! never an allocation the input did not pay for.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    boxsync_imap::parse_response_bytes_for_fuzz(data);
});
