//! dbox message files: sdbox's `u.<uid>` (one message each) and mdbox's `storage/m.<file_id>`
//! (several messages, at offsets the map index gives). A file starts with a header line
//! (`2 M<message header size> C<creation time>`, hex values); each message is a fixed-size
//! header holding the message size as 16 hex digits, the message bytes, then a metadata block
//! (`\n\x01\x03\n`, lines `<key><value>`, an empty line).

use boxsync_model::error::IoContext;
use boxsync_model::{Error, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How a message header starts (`DBOX_MAGIC_PRE`).
pub const MAGIC_PRE: [u8; 2] = [0x01, 0x02];
/// How a metadata block starts (`DBOX_MAGIC_POST`).
pub const MAGIC_POST: [u8; 4] = *b"\n\x01\x03\n";
/// `sizeof(struct dbox_message_header)`: magic, type, space, 8 spaces, space, 16 hex digits
/// of size, LF. A file may reserve more (its `M` value); LF stays last.
const MESSAGE_HEADER_MIN: u32 = 30;
/// Where the 16 hex digits of the message size sit in the message header.
const SIZE_HEX: std::ops::Range<usize> = 13..29;
/// Bounds for input that is garbage rather than a dbox file.
const MESSAGE_HEADER_MAX: u32 = 4096;
const FILE_HEADER_MAX: usize = 1024;
const METADATA_MAX: u64 = 1 << 20;

/// Metadata keys (`enum dbox_metadata_key`).
pub mod key {
    pub const GUID: u8 = b'G';
    pub const POP3_UIDL: u8 = b'P';
    pub const POP3_ORDER: u8 = b'O';
    pub const RECEIVED_TIME: u8 = b'R';
    pub const PHYSICAL_SIZE: u8 = b'Z';
    pub const VIRTUAL_SIZE: u8 = b'V';
    pub const EXT_REF: u8 = b'X';
    pub const ORIG_MAILBOX: u8 = b'B';
}

/// The first line of a dbox file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub version: u8,
    /// Size of every message header in this file.
    pub msg_header_size: u32,
    pub create_time: Option<u64>,
    /// Length of the line with its LF: where the first message starts.
    pub len: u64,
}

/// Parses the header line at the start of `bytes`.
pub fn parse_file_header(bytes: &[u8]) -> std::result::Result<FileHeader, String> {
    let window = &bytes[..bytes.len().min(FILE_HEADER_MAX)];
    let nl = window
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no file header line")?;
    let line = &window[..nl];
    let version = match line {
        [v @ (b'1' | b'2'), b' ', ..] | [v @ (b'1' | b'2')] => v - b'0',
        _ => {
            return Err(format!(
                "not a dbox file (header line {:?}, expected version 1 or 2)",
                String::from_utf8_lossy(&line[..line.len().min(40)])
            ));
        }
    };
    let mut msg_header_size = None;
    let mut create_time = None;
    for item in line[1..].split(|&b| b == b' ').filter(|i| !i.is_empty()) {
        let value = std::str::from_utf8(&item[1..]).ok();
        match item[0] {
            b'M' => {
                msg_header_size = Some(
                    value
                        .and_then(|v| u32::from_str_radix(v, 16).ok())
                        .ok_or("invalid message header size in the file header")?,
                );
            }
            b'C' => create_time = value.and_then(|v| u64::from_str_radix(v, 16).ok()),
            // Other keys (`A`, the old v1 append offset) say nothing a reader needs.
            _ => {}
        }
    }
    let msg_header_size = msg_header_size.ok_or("the file header has no message header size")?;
    if !(MESSAGE_HEADER_MIN..=MESSAGE_HEADER_MAX).contains(&msg_header_size) {
        return Err(format!(
            "message header size {msg_header_size} is outside {MESSAGE_HEADER_MIN}..={MESSAGE_HEADER_MAX}"
        ));
    }
    Ok(FileHeader {
        version,
        msg_header_size,
        create_time,
        len: nl as u64 + 1,
    })
}

/// Parses a message header (exactly the file's message header size) and returns the size of
/// the message that follows it.
pub fn parse_message_header(bytes: &[u8]) -> std::result::Result<u64, String> {
    if bytes.len() < MESSAGE_HEADER_MIN as usize || bytes[..2] != MAGIC_PRE {
        return Err("no message header here (bad magic)".to_owned());
    }
    if bytes.last() != Some(&b'\n') {
        return Err("message header does not end with LF".to_owned());
    }
    let hex = &bytes[SIZE_HEX];
    std::str::from_utf8(hex)
        .ok()
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| {
            format!(
                "invalid message size {:?} in the message header",
                String::from_utf8_lossy(hex)
            )
        })
}

/// The metadata block of one message: `(key, value)` in file order. Unknown keys are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub entries: Vec<(u8, String)>,
}

impl Metadata {
    /// The first value of `key`.
    pub fn get(&self, key: u8) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn guid(&self) -> Option<&str> {
        self.get(key::GUID).filter(|g| !g.is_empty())
    }

    /// The received date (IMAP INTERNALDATE), UNIX seconds.
    pub fn received(&self) -> Option<i64> {
        self.get(key::RECEIVED_TIME)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .and_then(|v| i64::try_from(v).ok())
    }

    pub fn pop3_uidl(&self) -> Option<&str> {
        self.get(key::POP3_UIDL).filter(|u| !u.is_empty())
    }

    pub fn pop3_order(&self) -> Option<u32> {
        self.get(key::POP3_ORDER).and_then(|v| v.parse().ok())
    }

    /// Why the stored bytes are not the message as is (compressed by Dovecot's zlib plugin,
    /// or with attachments stored outside), if they are not.
    pub fn transformed(&self) -> Option<&'static str> {
        if self.get(key::EXT_REF).is_some() {
            Some("its attachments are stored outside the file (mail_attachment_dir)")
        } else if self.get(key::PHYSICAL_SIZE).is_some() {
            Some("it is stored compressed (mail_plugins = zlib)")
        } else {
            None
        }
    }
}

/// Parses a metadata block from its magic up to the empty line that ends it (or the end of
/// the input).
pub fn parse_metadata(mut input: impl BufRead) -> std::result::Result<Metadata, String> {
    let mut magic = [0u8; 4];
    input
        .read_exact(&mut magic)
        .map_err(|_| "no metadata block after the message".to_owned())?;
    if magic != MAGIC_POST {
        return Err("no metadata block after the message (bad magic)".to_owned());
    }
    let mut meta = Metadata::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading the metadata block: {e}"))?;
        if n == 0 {
            return Ok(meta);
        }
        if line.pop() != Some(b'\n') {
            return Err("the metadata block is cut off or longer than 1 MiB".to_owned());
        }
        let Some((&k, value)) = line.split_first() else {
            return Ok(meta);
        };
        meta.entries
            .push((k, String::from_utf8_lossy(value).into_owned()));
    }
}

/// Where one message of a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLocation {
    /// Of the message header.
    pub header_offset: u64,
    /// Of the first byte of the message.
    pub body_offset: u64,
    pub size: u64,
}

/// An open dbox file.
pub struct DboxFile {
    path: PathBuf,
    reader: BufReader<File>,
    header: FileHeader,
    file_len: u64,
}

impl DboxFile {
    pub fn open(path: &Path) -> Result<DboxFile> {
        let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        let file_len = file
            .metadata()
            .ctx(|| format!("reading {}", path.display()))?
            .len();
        let mut reader = BufReader::new(file);
        let mut start = Vec::with_capacity(FILE_HEADER_MAX);
        (&mut reader)
            .take(FILE_HEADER_MAX as u64)
            .read_to_end(&mut start)
            .ctx(|| format!("reading {}", path.display()))?;
        let header = parse_file_header(&start)
            .map_err(|e| Error::data(format!("{}: {e}", path.display())))?;
        Ok(DboxFile {
            path: path.to_path_buf(),
            reader,
            header,
            file_len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    fn bad(&self, offset: u64, what: impl std::fmt::Display) -> Error {
        Error::data(format!("{} at byte {offset}: {what}", self.path.display()))
    }

    /// The message whose header starts at `offset`.
    pub fn message_at(&mut self, offset: u64) -> Result<MessageLocation> {
        let mut header = vec![0u8; self.header.msg_header_size as usize];
        self.reader
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.reader.read_exact(&mut header))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    self.bad(offset, "the file ends before the message header")
                }
                _ => Error::io(format!("reading {}", self.path.display()), e),
            })?;
        let size = parse_message_header(&header).map_err(|e| self.bad(offset, e))?;
        let body_offset = offset + u64::from(self.header.msg_header_size);
        if body_offset
            .checked_add(size)
            .is_none_or(|end| end > self.file_len)
        {
            return Err(self.bad(
                offset,
                format!(
                    "a message of {size} bytes does not fit in the {}-byte file",
                    self.file_len
                ),
            ));
        }
        Ok(MessageLocation {
            header_offset: offset,
            body_offset,
            size,
        })
    }

    /// The first message (sdbox files hold only this one).
    pub fn first_message(&mut self) -> Result<MessageLocation> {
        self.message_at(self.header.len)
    }

    /// The metadata block after a message.
    pub fn metadata(&mut self, loc: &MessageLocation) -> Result<Metadata> {
        let at = loc.body_offset + loc.size;
        self.reader
            .seek(SeekFrom::Start(at))
            .ctx(|| format!("reading {}", self.path.display()))?;
        parse_metadata((&mut self.reader).take(METADATA_MAX)).map_err(|e| self.bad(at, e))
    }
}

/// A reader of exactly the bytes of the message at `loc`. The message header is read again
/// and must still announce the same size, so that a file rewritten meanwhile (mdbox purge
/// moves messages) gives an error instead of other bytes.
pub fn open_body(path: &Path, loc: &MessageLocation) -> std::io::Result<impl Read + Send + use<>> {
    let mut file = DboxFile::open(path).map_err(std::io::Error::other)?;
    let now = file
        .message_at(loc.header_offset)
        .map_err(std::io::Error::other)?;
    if now != *loc {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: the message at byte {} changed since the mailbox was read",
                path.display(),
                loc.header_offset
            ),
        ));
    }
    let mut reader = file.reader;
    reader.seek(SeekFrom::Start(loc.body_offset))?;
    Ok(reader.take(loc.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as Dovecot 2.3 writes it into a dbox file.
    fn message(body: &[u8], meta: &str) -> Vec<u8> {
        let mut out = b"\x01\x02N          ".to_vec();
        out.extend_from_slice(format!("{:016X}\n", body.len()).as_bytes());
        assert_eq!(out.len(), 30);
        out.extend_from_slice(body);
        out.extend_from_slice(&MAGIC_POST);
        out.extend_from_slice(meta.as_bytes());
        out.extend_from_slice(b"\n");
        out
    }

    const BODY: &[u8] = b"From: a@b\nSubject: one\n\nbody one\n";

    #[test]
    fn parses_a_file_header() {
        let h = parse_file_header(b"2 M1e C6b02c41d\n\x01\x02").unwrap();
        assert_eq!(
            h,
            FileHeader {
                version: 2,
                msg_header_size: 30,
                create_time: Some(0x6b02_c41d),
                len: 16,
            }
        );
        for (bad, want) in [
            (&b"2 M1e C6b02c41d"[..], "no file header line"),
            (b"3 M1e\n", "not a dbox file"),
            (b"From: x\n", "not a dbox file"),
            (b"2 C1\n", "no message header size"),
            (b"2 Mzz\n", "invalid message header size"),
            (b"2 M2\n", "outside"),
        ] {
            let err = parse_file_header(bad).unwrap_err();
            assert!(err.contains(want), "{bad:?}: {err}");
        }
    }

    #[test]
    fn parses_message_headers_and_metadata() {
        let m = message(
            BODY,
            "R6b02c41d\nV25\nPuidl 1\nO7\nGdc14941b1dc4026b0028000083ecc375\nQunknown\n",
        );
        assert_eq!(parse_message_header(&m[..30]).unwrap(), BODY.len() as u64);
        let meta = parse_metadata(&m[30 + BODY.len()..]).unwrap();
        assert_eq!(meta.guid(), Some("dc14941b1dc4026b0028000083ecc375"));
        assert_eq!(meta.received(), Some(0x6b02_c41d));
        assert_eq!(meta.pop3_uidl(), Some("uidl 1"));
        assert_eq!(meta.pop3_order(), Some(7));
        assert_eq!(meta.get(b'Q'), Some("unknown"));
        assert_eq!(meta.transformed(), None);

        assert!(parse_message_header(b"garbage").is_err());
        let mut bad = m[..30].to_vec();
        bad[20] = b'x';
        assert!(
            parse_message_header(&bad)
                .unwrap_err()
                .contains("invalid message size")
        );
        bad[29] = b' ';
        assert!(parse_message_header(&bad).unwrap_err().contains("LF"));
        assert!(parse_metadata(&b"\n\x01"[..]).is_err());
        assert!(
            parse_metadata(&b"From: x\n"[..])
                .unwrap_err()
                .contains("bad magic")
        );
    }

    #[test]
    fn reads_sdbox_and_mdbox_files() {
        let dir = tempfile::tempdir().unwrap();
        let sdbox = dir.path().join("u.1");
        let mut bytes = b"2 M1e C6b02c41d\n".to_vec();
        bytes.extend_from_slice(&message(BODY, "R10\nGaa"));
        std::fs::write(&sdbox, &bytes).unwrap();
        let mut f = DboxFile::open(&sdbox).unwrap();
        let loc = f.first_message().unwrap();
        assert_eq!(loc.body_offset, 46);
        assert_eq!(f.metadata(&loc).unwrap().guid(), Some("aa"));
        let mut body = Vec::new();
        open_body(&sdbox, &loc)
            .unwrap()
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body, BODY);

        // mdbox: two messages; the second found by its offset.
        let mdbox = dir.path().join("m.1");
        let second = bytes.len() as u64;
        bytes.extend_from_slice(&message(b"second\n", "R20\nGbb\nBINBOX"));
        std::fs::write(&mdbox, &bytes).unwrap();
        let mut f = DboxFile::open(&mdbox).unwrap();
        let loc = f.message_at(second).unwrap();
        let meta = f.metadata(&loc).unwrap();
        assert_eq!((meta.guid(), meta.received()), (Some("bb"), Some(0x20)));
        let mut body = Vec::new();
        open_body(&mdbox, &loc)
            .unwrap()
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body, b"second\n");

        // A wrong offset, a truncated file, a size past the end: errors naming the file.
        let err = f.message_at(second + 1).unwrap_err().to_string();
        assert!(
            err.contains("m.1 at byte") && err.contains("bad magic"),
            "{err}"
        );
        let err = f
            .message_at(bytes.len() as u64 - 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ends before the message header"), "{err}");
        std::fs::write(&mdbox, &bytes[..bytes.len() - 20]).unwrap();
        let err = DboxFile::open(&mdbox)
            .unwrap()
            .message_at(second)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit"), "{err}");
        std::fs::write(&mdbox, b"").unwrap();
        let err = DboxFile::open(&mdbox).err().unwrap().to_string();
        assert!(err.contains("m.1: no file header line"), "{err}");
    }

    #[test]
    fn a_changed_file_is_not_read_as_the_old_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.2");
        let mut bytes = b"2 M1e C1\n".to_vec();
        bytes.extend_from_slice(&message(BODY, "Gaa"));
        std::fs::write(&path, &bytes).unwrap();
        let loc = DboxFile::open(&path).unwrap().first_message().unwrap();
        let mut other = b"2 M1e C1\n".to_vec();
        other.extend_from_slice(&message(b"short\n", "Gbb"));
        std::fs::write(&path, &other).unwrap();
        assert!(open_body(&path, &loc).is_err());
    }
}
