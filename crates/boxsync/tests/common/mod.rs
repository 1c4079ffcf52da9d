//! Helpers shared by the integration tests: temporary directories, the built binary, test
//! messages, and a self-contained real Dovecot (`dovecot` submodule).
//!
//! Every test binary includes this with `mod common;` and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod dovecot;
pub mod imapd;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use dovecot::{Dovecot, FetchRow, dovecot_available, dovecot_or_skip, parse_tab};

/// The `boxsync` binary built by Cargo for this test run.
///
/// With `BOXSYNC_TEST_WIRE=1` in the tests' environment (the second pass of `scripts/test`),
/// every local sync it runs puts its two brains on the two ends of a socket pair, talking
/// through the dsync wire codec, instead of the in-process channel: the same tests then
/// check the wire.
pub fn boxsync() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_boxsync"));
    if wire_mode() {
        c.env("BOXSYNC_WIRE_LOCAL", "1");
    }
    c
}

/// Whether this test run checks the wire (see [`boxsync`]).
pub fn wire_mode() -> bool {
    std::env::var_os("BOXSYNC_TEST_WIRE").is_some_and(|v| v == "1")
}

/// A temporary directory, removed on drop, that Dovecot's mail uid may enter (mode 0755).
pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    /// Creates a fresh empty directory under the system's temporary directory.
    pub fn new() -> Dir {
        let tmp = tempfile::Builder::new()
            .prefix("boxsync-test-")
            .tempdir()
            .expect("create temporary directory");
        // TempDir is 0700; Dovecot drops root privileges to another uid and must traverse it.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temporary directory");
        Dir { tmp }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// A path inside the directory (not created).
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.tmp.path().join(rel)
    }
}

impl Default for Dir {
    fn default() -> Self {
        Dir::new()
    }
}

/// The mail location string `maildir:PATH` for a Maildir++ store at `path`.
pub fn maildir(path: &Path) -> String {
    format!("maildir:{}", path.display())
}

/// A small realistic RFC 5322 message whose Message-ID, Subject, Date and body derive from `n`.
pub fn message(n: usize) -> Vec<u8> {
    // One message an hour (plus a little) from 2024-03-01 09:00:00 UTC.
    let secs = 1_709_283_600 + (n as i64) * 3_607;
    let date = rfc5322_date(secs);
    let lines = 1 + n % 4;
    let mut body = String::new();
    body.push_str("Hello,\n\n");
    body.push_str(&format!(
        "this is test message number {n}, sent by the boxsync integration tests.\n"
    ));
    for i in 0..lines {
        body.push_str(&format!(
            "Line {i} of {lines}: the quick brown fox jumps over the lazy dog.\n"
        ));
    }
    body.push_str("\nRegards,\nSender ");
    body.push_str(&n.to_string());
    body.push('\n');
    format!(
        "Return-Path: <sender{n}@example.org>\n\
         From: Sender {n} <sender{n}@example.org>\n\
         To: Recipient <rcpt@example.com>\n\
         Subject: Test message {n}\n\
         Date: {date}\n\
         Message-ID: <{n}.{secs}@boxsync.test>\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=us-ascii\n\
         Content-Transfer-Encoding: 7bit\n\
         \n\
         {body}"
    )
    .into_bytes()
}

/// `secs` since the epoch as an RFC 5322 date in UTC, e.g. `Fri, 01 Mar 2024 09:00:00 +0000`.
fn rfc5322_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian (year, month 1–12, day 1–31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
