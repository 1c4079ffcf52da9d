//! The stateful-sync state string (`-s`), byte-compatible with Dovecot's `dsync-mailbox-state.c`
//! layout: base64 of a 4-byte header `01 00 00 00`, 44-byte little-endian records, and a CRC-32.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use boxsync_model::Guid128;

/// What two sides had in common for one mailbox at the end of the last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxState {
    pub mailbox_guid: Guid128,
    pub last_uidvalidity: u32,
    pub last_common_uid: u32,
    pub last_common_modseq: u64,
    pub last_common_pvt_modseq: u64,
    pub last_messages_count: u32,
}

const HEADER: [u8; 4] = [1, 0, 0, 0];
const RECORD_LEN: usize = 44;
const V0_RECORD_LEN: usize = 40;

/// Encodes states the way Dovecot prints them.
pub fn encode(states: &[MailboxState]) -> String {
    let mut blob = Vec::with_capacity(8 + states.len() * RECORD_LEN);
    blob.extend_from_slice(&HEADER);
    for s in states {
        blob.extend_from_slice(&s.mailbox_guid.0);
        blob.extend_from_slice(&s.last_uidvalidity.to_le_bytes());
        blob.extend_from_slice(&s.last_common_uid.to_le_bytes());
        blob.extend_from_slice(&s.last_common_modseq.to_le_bytes());
        blob.extend_from_slice(&s.last_common_pvt_modseq.to_le_bytes());
        blob.extend_from_slice(&s.last_messages_count.to_le_bytes());
    }
    let crc = crc32fast::hash(&blob);
    blob.extend_from_slice(&crc.to_le_bytes());
    STANDARD.encode(blob)
}

/// Why a state string was refused; the caller falls back to a full sync, as Dovecot does.
#[derive(Debug, PartialEq, Eq)]
pub enum StateError {
    NotBase64,
    BadLength(usize),
    BadChecksum,
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::NotBase64 => f.write_str("not base64"),
            StateError::BadLength(n) => {
                write!(f, "{n} bytes is not a whole number of mailbox records")
            }
            StateError::BadChecksum => f.write_str("checksum mismatch"),
        }
    }
}

/// Decodes a state string. An empty string is an empty state. A valid old-format (v0) state is
/// accepted as empty, as Dovecot does.
pub fn decode(text: &str) -> Result<Vec<MailboxState>, StateError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let blob = STANDARD.decode(text).map_err(|_| StateError::NotBase64)?;
    if blob == [0, 0, 0, 0] {
        return Ok(Vec::new());
    }
    let crc_ok = |blob: &[u8]| {
        blob.len() >= 4 && {
            let (body, crc) = blob.split_at(blob.len() - 4);
            crc32fast::hash(body).to_le_bytes() == crc
        }
    };
    if blob.len() >= 8 && (blob.len() - 8) % RECORD_LEN == 0 {
        if !crc_ok(&blob) {
            return Err(StateError::BadChecksum);
        }
        return Ok(blob[4..blob.len() - 4]
            .chunks(RECORD_LEN)
            .map(parse_record)
            .collect());
    }
    if blob.len() >= 4 && (blob.len() - 4) % V0_RECORD_LEN == 0 && crc_ok(&blob) {
        return Ok(Vec::new());
    }
    Err(StateError::BadLength(blob.len()))
}

fn parse_record(r: &[u8]) -> MailboxState {
    let u32_at = |i: usize| u32::from_le_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]]);
    let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&r[..16]);
    MailboxState {
        mailbox_guid: Guid128(guid),
        last_uidvalidity: u32_at(16),
        last_common_uid: u32_at(20),
        last_common_modseq: u64_at(24),
        last_common_pvt_modseq: u64_at(32),
        last_messages_count: u32_at(40),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> MailboxState {
        MailboxState {
            mailbox_guid: Guid128::parse_hex("0123456789abcdef0123456789abcdef").unwrap(),
            last_uidvalidity: 1234567890,
            last_common_uid: 42,
            last_common_modseq: 100,
            last_common_pvt_modseq: 0,
            last_messages_count: 40,
        }
    }

    #[test]
    fn reference_vectors() {
        assert_eq!(encode(&[]), "AQAAAHm4+Jk=");
        assert_eq!(
            encode(&[example()]),
            "AQAAAAEjRWeJq83vASNFZ4mrze/SApZJKgAAAGQAAAAAAAAAAAAAAAAAAAAoAAAAUC4Yqg=="
        );
        assert_eq!(decode("AQAAAHm4+Jk="), Ok(vec![]));
        assert_eq!(decode(&encode(&[example()])), Ok(vec![example()]));
    }

    /// The state real Dovecot 2.3.19 printed after a two-way sync (shared/reference/dovecot-wire).
    #[test]
    fn decodes_real_dovecot_state() {
        let text = "AQAAAKrW6hCGZAJreToAAIPsw3WGZAJrBgAAAAkAAAAAAAAAAAAAAAAAAAAEAAAAMKSDFYZkAmuJOgAAg+zDdYdkAmsAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAiJEta";
        let states = decode(text).unwrap();
        assert_eq!(states.len(), 2);
        assert_eq!(states[0].last_common_uid, 6);
        assert_eq!(states[0].last_common_modseq, 9);
        assert_eq!(states[0].last_messages_count, 4);
        assert_eq!(encode(&states), text);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(decode("not base64!"), Err(StateError::NotBase64));
        assert_eq!(decode("AQAAAHm4+Jg="), Err(StateError::BadChecksum));
        assert_eq!(decode("AQAA"), Err(StateError::BadLength(3)));
        assert_eq!(decode(""), Ok(vec![]));
        assert_eq!(decode("AAAAAA=="), Ok(vec![]));
    }
}
