//! `dovecot.mailbox.log`: the journal of mailbox deletes, renames and (un)subscriptions that
//! dsync turns into tombstones and timestamps. Fixed 24-byte records, appended; rotated to
//! `dovecot.mailbox.log.2` at 4 KiB.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use boxsync_model::{Error, Guid128, Result};

use super::{file_mode, read_optional};

pub const FILE_NAME: &str = "dovecot.mailbox.log";
pub const ROTATED_NAME: &str = "dovecot.mailbox.log.2";

const RECORD_SIZE: usize = 24;
/// Past this size the next append starts a new file, as Dovecot does.
const ROTATE_SIZE: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// The GUID is the mailbox GUID.
    DeleteMailbox = 1,
    /// This and every later kind carry SHA-1-128 of the mailbox name instead.
    DeleteDir = 2,
    /// Names the destination.
    Rename = 3,
    Subscribe = 4,
    Unsubscribe = 5,
    CreateDir = 6,
}

impl LogKind {
    pub fn from_u8(b: u8) -> Option<LogKind> {
        Some(match b {
            1 => LogKind::DeleteMailbox,
            2 => LogKind::DeleteDir,
            3 => LogKind::Rename,
            4 => LogKind::Subscribe,
            5 => LogKind::Unsubscribe,
            6 => LogKind::CreateDir,
            _ => return None,
        })
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogRecord {
    pub kind: LogKind,
    pub guid: Guid128,
    /// UNIX seconds.
    pub timestamp: u32,
}

impl LogRecord {
    /// The on-disk form: kind, three zero bytes, GUID, big-endian timestamp.
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut out = [0u8; RECORD_SIZE];
        out[0] = self.kind.as_u8();
        out[4..20].copy_from_slice(&self.guid.0);
        out[20..24].copy_from_slice(&self.timestamp.to_be_bytes());
        out
    }

    /// `None` for a kind this version does not know; padding bytes are not checked.
    pub fn decode(bytes: &[u8; RECORD_SIZE]) -> Option<LogRecord> {
        let kind = LogKind::from_u8(bytes[0])?;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&bytes[4..20]);
        let mut ts = [0u8; 4];
        ts.copy_from_slice(&bytes[20..24]);
        Some(LogRecord {
            kind,
            guid: Guid128(guid),
            timestamp: u32::from_be_bytes(ts),
        })
    }
}

/// When the mailbox `name` was last renamed or created, and when its subscription last
/// changed, by the log (0 when it says nothing).
pub fn name_times(log: &[LogRecord], name: &boxsync_model::MailboxName) -> (i64, i64) {
    let name_hash = Guid128::sha128_of(&name.to_string());
    let mut renamed = 0i64;
    let mut sub_change = 0i64;
    for r in log.iter().filter(|r| r.guid == name_hash) {
        match r.kind {
            LogKind::Rename | LogKind::CreateDir => renamed = renamed.max(i64::from(r.timestamp)),
            LogKind::Subscribe | LogKind::Unsubscribe => {
                sub_change = sub_change.max(i64::from(r.timestamp))
            }
            _ => {}
        }
    }
    (renamed, sub_change)
}

/// The deleted mailboxes (those `exists` does not know) and removed subscriptions the log
/// holds.
pub fn tombstones(log: &[LogRecord], exists: impl Fn(Guid128) -> bool) -> crate::Tombstones {
    let mut t = crate::Tombstones::default();
    for r in log {
        match r.kind {
            LogKind::DeleteMailbox if !exists(r.guid) => {
                t.mailboxes.push((r.guid, i64::from(r.timestamp)))
            }
            LogKind::Unsubscribe => t.unsubscribes.push((r.guid, i64::from(r.timestamp))),
            _ => {}
        }
    }
    t
}

/// All records of the log in `dir`, oldest first: the rotated file, then the current one.
/// Missing files are empty logs; a trailing partial record (a writer that crashed mid-append)
/// and records of unknown kinds are skipped.
pub fn read(dir: &Path) -> Result<Vec<LogRecord>> {
    let mut out = Vec::new();
    for name in [ROTATED_NAME, FILE_NAME] {
        let Some(bytes) = read_optional(&dir.join(name))? else {
            continue;
        };
        for chunk in bytes.chunks_exact(RECORD_SIZE) {
            // chunks_exact yields exactly RECORD_SIZE bytes, so the conversion cannot fail.
            if let Some(record) = <&[u8; RECORD_SIZE]>::try_from(chunk)
                .ok()
                .and_then(LogRecord::decode)
            {
                out.push(record);
            }
        }
    }
    Ok(out)
}

/// Appends one record stamped with the current time, and returns it.
pub fn append_now(dir: &Path, kind: LogKind, guid: Guid128) -> Result<LogRecord> {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let rec = LogRecord {
        kind,
        guid,
        timestamp,
    };
    append(dir, std::slice::from_ref(&rec))?;
    Ok(rec)
}

/// Appends `records` to the log in `dir` in one write, so that concurrent appenders (Dovecot
/// included) never interleave inside a record. A file of 4 KiB or more is first rotated to
/// `dovecot.mailbox.log.2`, replacing the older rotation.
pub fn append(dir: &Path, records: &[LogRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let path = dir.join(FILE_NAME);
    let mut file = open_for_append(&path, dir)?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("reading size of {}", path.display()), e))?;
    if meta.len() >= ROTATE_SIZE {
        // Rotate only the file we opened: another appender may have rotated already, and
        // moving its fresh file over `.2` would drop the older records.
        let same =
            fs::metadata(&path).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
        if same {
            let rotated = dir.join(ROTATED_NAME);
            fs::rename(&path, &rotated).map_err(|e| {
                Error::io(
                    format!("rotating {} to {}", path.display(), rotated.display()),
                    e,
                )
            })?;
        }
        file = open_for_append(&path, dir)?;
    } else if meta.len() % RECORD_SIZE as u64 != 0 {
        // A crashed writer left a partial record; appending after it would shift every later
        // record by its length, for every reader. Cut it off first.
        file.set_len(meta.len() - meta.len() % RECORD_SIZE as u64)
            .map_err(|e| {
                Error::io(
                    format!("truncating partial record in {}", path.display()),
                    e,
                )
            })?;
    }
    let bytes: Vec<u8> = records.iter().flat_map(LogRecord::encode).collect();
    file.write_all(&bytes)
        .map_err(|e| Error::io(format!("appending to {}", path.display()), e))
}

fn open_for_append(path: &Path, dir: &Path) -> Result<fs::File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(file_mode(dir))
        .open(path)
        .map_err(|e: io::Error| Error::io(format!("opening {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by real Dovecot 2.3 for `mailbox create X`, `mailbox rename X Y`,
    /// `mailbox delete Y` (tests/fixtures/dovecot/make.sh); `status` holds Y's GUID.
    const RENAME_DELETE: &[u8] =
        include_bytes!("../../../tests/fixtures/dovecot/log/dovecot.mailbox.log");
    const RENAME_DELETE_STATUS: &str = include_str!("../../../tests/fixtures/dovecot/log/status");
    /// Written by `mailbox create -s Sub` and `mailbox create -s Sub/Child`.
    const SUBSCRIBES: &[u8] =
        include_bytes!("../../../tests/fixtures/dovecot/inbox/dovecot.mailbox.log");

    fn read_bytes(bytes: &[u8]) -> Vec<LogRecord> {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), bytes).unwrap();
        read(dir.path()).unwrap()
    }

    #[test]
    fn dovecot_rename_and_delete() {
        let records = read_bytes(RENAME_DELETE);
        let kinds: Vec<LogKind> = records.iter().map(|r| r.kind).collect();
        // Deleting a mailbox also removes its now-empty directory, which Dovecot logs too.
        assert_eq!(
            kinds,
            [LogKind::Rename, LogKind::DeleteMailbox, LogKind::DeleteDir]
        );
        let guid = RENAME_DELETE_STATUS.trim().strip_prefix("Y guid=").unwrap();
        assert_eq!(records[1].guid.to_string(), guid);
        assert_eq!(records[0].guid, Guid128::sha128_of("Y"));
        assert_eq!(records[2].guid, Guid128::sha128_of("Y"));
        // Stamped "now" when the fixture was made: after 2020, and all within a few seconds.
        assert!(records.iter().all(|r| r.timestamp > 1_577_836_800));
        assert!(records[2].timestamp - records[0].timestamp < 60);
        // Encoding gives Dovecot's bytes back.
        let again: Vec<u8> = records.iter().flat_map(LogRecord::encode).collect();
        assert_eq!(again, RENAME_DELETE);
    }

    #[test]
    fn dovecot_subscribes_hash_full_names() {
        let records = read_bytes(SUBSCRIBES);
        let got: Vec<(LogKind, Guid128)> = records.iter().map(|r| (r.kind, r.guid)).collect();
        assert_eq!(
            got,
            [
                (LogKind::Subscribe, Guid128::sha128_of("Sub")),
                (LogKind::Subscribe, Guid128::sha128_of("Sub/Child")),
            ]
        );
    }

    #[test]
    fn record_known_answer() {
        let r = LogRecord {
            kind: LogKind::Unsubscribe,
            guid: Guid128([0xab; 16]),
            timestamp: 0x0102_0304,
        };
        let mut want = vec![5, 0, 0, 0];
        want.extend([0xab; 16]);
        want.extend([1, 2, 3, 4]);
        assert_eq!(r.encode().to_vec(), want);
        assert_eq!(LogRecord::decode(&r.encode()), Some(r));
        for b in 1..=6 {
            assert_eq!(LogKind::from_u8(b).map(LogKind::as_u8), Some(b));
        }
        assert_eq!(LogKind::from_u8(0), None);
        assert_eq!(LogKind::from_u8(7), None);
    }

    #[test]
    fn unknown_kinds_and_partial_records_are_skipped() {
        let good = LogRecord {
            kind: LogKind::CreateDir,
            guid: Guid128::sha128_of("A"),
            timestamp: 7,
        };
        let mut bytes = [9u8; RECORD_SIZE].to_vec();
        bytes.extend(good.encode());
        bytes.extend([1u8; 10]);
        assert_eq!(read_bytes(&bytes), [good]);
    }

    #[test]
    fn append_rotates_and_read_spans_both_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), []);
        let rec = |i: u32| LogRecord {
            kind: LogKind::Subscribe,
            guid: Guid128::sha128_of(&i.to_string()),
            timestamp: i,
        };
        // 171 records are 4104 bytes: the 172nd append rotates.
        let first: Vec<LogRecord> = (0..171).map(rec).collect();
        append(dir.path(), &first).unwrap();
        append(dir.path(), &[]).unwrap();
        assert!(!dir.path().join(ROTATED_NAME).exists());
        append(dir.path(), &[rec(171), rec(172)]).unwrap();
        assert_eq!(
            fs::metadata(dir.path().join(ROTATED_NAME)).unwrap().len(),
            171 * 24
        );
        assert_eq!(fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(), 48);
        let all: Vec<LogRecord> = (0..173).map(rec).collect();
        assert_eq!(read(dir.path()).unwrap(), all);

        // A second rotation drops the oldest file.
        let more: Vec<LogRecord> = (173..173 + 171).map(rec).collect();
        append(dir.path(), &more).unwrap();
        append(dir.path(), &[rec(1000)]).unwrap();
        let got = read(dir.path()).unwrap();
        assert_eq!(got.first(), Some(&rec(171)));
        assert_eq!(got.last(), Some(&rec(1000)));
        assert_eq!(got.len(), 2 + 171 + 1);
    }

    #[test]
    fn append_cuts_off_a_partial_record() {
        let dir = tempfile::tempdir().unwrap();
        let r = LogRecord {
            kind: LogKind::DeleteMailbox,
            guid: Guid128([7; 16]),
            timestamp: 1,
        };
        let mut bytes = r.encode().to_vec();
        bytes.extend([3u8; 5]);
        fs::write(dir.path().join(FILE_NAME), bytes).unwrap();
        append(dir.path(), &[r]).unwrap();
        assert_eq!(read(dir.path()).unwrap(), [r, r]);
    }
}
