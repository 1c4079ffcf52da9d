//! Dovecot dsync's header hash: how two stores without message GUIDs (an `imapc:` side, a
//! POP3 side) recognise the same message. Written from a description of the algorithm
//! (`/work/shared/reference/dovecot-dsync.md` §2.2) and checked against Dovecot 2.3.19.
//!
//! The hashed bytes are what Dovecot's header filter produces for the wanted fields: every
//! header line whose field name is one of `fields` (ASCII case-insensitively), in message
//! order, all occurrences, each exactly as in the message (`Name`, the original bytes around
//! the colon, the value, its folded continuation lines), followed by the end-of-header blank
//! line. That text is converted to LF line endings, normalised (version 2 and later) and
//! hashed with MD5.
//!
//! Normalisation, version 2: every byte below 0x20 other than TAB and LF, every byte from
//! 0x7f up, and `?` itself, become `?`, and a run of such bytes gives a single `?`.
//! Version 3 also drops every space (a space ends a run, so `? ?` gives `??`); version 4
//! also drops every tab. Version 1 hashes the bytes unchanged. dsync uses version 3 with
//! peers of protocol minor 4 or later, version 1 with older ones.
//!
//! The input may be a whole message, a header block with or without its blank line, or what
//! an IMAP server returns for `BODY.PEEK[HEADER.FIELDS (…)]`: all give the same hash for the
//! same message.

use md5::{Digest, Md5};

/// The header fields dsync hashes unless `dsync_hashed_headers` says otherwise.
pub const DEFAULT_HASHED_HEADERS: &[&str] = &["Date", "Message-ID"];

/// The hash of a message that has none of the hashed fields: MD5 of a lone `"\n"`.
pub const EMPTY_HEADER_HASH: &str = "68b329da9893e34099c7d8ad5cb9c940";

/// The hash version dsync uses with peers of protocol minor 4 and later.
pub const HASH_VERSION: u8 = 3;

/// Field names longer than this are not names (the whole line counts as a value).
const MAX_NAME_LEN: usize = 1000;

/// Whether `hash` is [`EMPTY_HEADER_HASH`] (the `empty-header-workaround` treats it as a
/// match for anything).
pub fn is_empty_header_hash(hash: &str) -> bool {
    hash.eq_ignore_ascii_case(EMPTY_HEADER_HASH)
}

/// The dsync header hash of a message (or its header) over `fields`, as 32 lowercase hex
/// digits, with normalisation `version` (1–4; see the module documentation).
///
/// An empty name in `fields` matches header lines that have no name (no colon): Dovecot's
/// slave brain decodes the handshake's `hashed_headers` with a trailing empty name and so
/// counts such lines; pass the list as the side being imitated sees it.
///
/// # Panics
///
/// When `version` is not 1 to 4.
pub fn header_hash(message_or_header: &[u8], fields: &[&str], version: u8) -> String {
    assert!(
        (1..=4).contains(&version),
        "unknown header hash version {version}"
    );
    let mut sink = Sink::new(version);
    filter_header(message_or_header, fields, &mut sink);
    to_hex(&sink.finish())
}

/// Feeds `sink` with the header lines of `input` named in `fields`, then the end of header.
fn filter_header(input: &[u8], fields: &[&str], sink: &mut Sink) {
    // Whether the last byte given to the sink was a line feed (true before anything).
    let mut ended_with_lf = true;
    // Whether the last line end given to the sink was CRLF in the input.
    let mut last_crlf = false;
    // Whether the previous physical line belongs to a wanted field.
    let mut wanted = false;
    let mut pos = 0;
    let mut first = true;
    while pos < input.len() {
        let rest = &input[pos..];
        let (line, newline) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        let next = pos + line.len() + usize::from(newline);
        // Without its line end: a CR directly before the LF belongs to the line end.
        let (content, crlf) = match line {
            [head @ .., b'\r'] if newline => (head, true),
            _ => (line, false),
        };
        let continued = !first && matches!(line.first(), Some(b' ' | b'\t'));
        first = false;
        if !continued && content.is_empty() && newline {
            // The blank line that ends the header.
            sink.line_end(crlf);
            return;
        }
        if !continued {
            wanted = field_wanted(content, fields);
        }
        if wanted {
            sink.feed(content);
            if newline {
                sink.line_end(crlf);
                ended_with_lf = true;
                last_crlf = crlf;
            } else if !content.is_empty() {
                ended_with_lf = false;
            }
        }
        pos = next;
    }
    // The header ended without a blank line: end the last line if it was left open, then
    // add the blank line, both with the line ending last written.
    if !ended_with_lf {
        sink.line_end(last_crlf);
    }
    sink.line_end(last_crlf);
}

/// Whether the header line starting with `line` (its first physical line) is one of
/// `fields`.
fn field_wanted(line: &[u8], fields: &[&str]) -> bool {
    let name = match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            let mut end = colon;
            while end > 0 && matches!(line[end - 1], b' ' | b'\t') {
                end -= 1;
            }
            if end > MAX_NAME_LEN {
                &[][..]
            } else {
                let name = &line[..end];
                // Names are compared as C strings: a NUL ends them.
                match name.iter().position(|&b| b == 0) {
                    Some(nul) => &name[..nul],
                    None => name,
                }
            }
        }
        None => &[][..],
    };
    fields
        .iter()
        .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
}

/// CRLF → LF conversion, normalisation and MD5, fed in pieces.
struct Sink {
    md5: Md5,
    version: u8,
    /// A CR was seen and not yet written: it is dropped if an LF follows.
    pending_cr: bool,
    /// The last byte written through normalisation was one that became `?`.
    prev_question: bool,
}

impl Sink {
    fn new(version: u8) -> Sink {
        Sink {
            md5: Md5::new(),
            version,
            pending_cr: false,
            prev_question: false,
        }
    }

    /// A line end as the header filter writes it: CRLF or LF, as the line had.
    fn line_end(&mut self, crlf: bool) {
        if crlf {
            self.feed(b"\r\n");
        } else {
            self.feed(b"\n");
        }
    }

    /// Converts CRLF to LF (a CR not followed by LF stays) and passes the rest on.
    fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.pending_cr {
            // A CR that ended the previous piece.
            self.pending_cr = false;
            if data[0] != b'\n' {
                self.normalize(b"\r");
            }
        }
        let mut start = 0;
        let mut from = 0;
        while let Some(off) = data[from..].iter().position(|&b| b == b'\r') {
            let i = from + off;
            self.normalize(&data[start..i]);
            start = i + 1;
            from = i + 1;
            match data.get(i + 1) {
                None => self.pending_cr = true,
                Some(b'\n') => {}
                Some(_) => self.normalize(b"\r"),
            }
        }
        self.normalize(&data[start..]);
    }

    /// Normalises for the hash version and hashes.
    fn normalize(&mut self, data: &[u8]) {
        if self.version == 1 {
            self.md5.update(data);
            return;
        }
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            let question = match b {
                b'\n' => false,
                b'\t' => {
                    if self.version >= 4 {
                        self.md5.update(&data[start..i]);
                        start = i + 1;
                    }
                    false
                }
                b' ' => {
                    if self.version >= 3 {
                        self.md5.update(&data[start..i]);
                        start = i + 1;
                    }
                    false
                }
                b'?' => true,
                _ => !(0x20..0x7f).contains(&b),
            };
            if question {
                self.md5.update(&data[start..i]);
                if !self.prev_question {
                    self.md5.update(b"?");
                }
                start = i + 1;
            }
            self.prev_question = question;
        }
        self.md5.update(&data[start..]);
    }

    fn finish(self) -> [u8; 16] {
        // A CR still pending at the end is dropped, as Dovecot's LF stream does.
        self.md5.finalize().into()
    }
}

fn to_hex(bytes: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_hex(data: &[u8]) -> String {
        to_hex(&Md5::digest(data).into())
    }

    /// MD5 of `data` after CRLF conversion and normalisation, fed in pieces of `chunk` bytes.
    fn normalized(data: &[u8], version: u8, chunk: usize) -> String {
        let mut sink = Sink::new(version);
        for piece in data.chunks(chunk.max(1)) {
            sink.feed(piece);
        }
        to_hex(&sink.finish())
    }

    fn hash(msg: &str) -> String {
        header_hash(msg.as_bytes(), DEFAULT_HASHED_HEADERS, 3)
    }

    /// The normalisation vectors of Dovecot's `src/lib-mail/test-message-header-hash.c`
    /// (2.3.19): input, version, expected normalised text.
    #[test]
    fn dovecot_normalisation_vectors() {
        let with_nuls: &[u8] = b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\
            \x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\
            \x20!?x??yz\x7f\x80\x90\xff-plop\xff";
        let vectors: &[(&[u8], u8, &[u8])] = &[
            (b"???hi???", 1, b"???hi???"),
            (with_nuls, 2, b"?\t\n? !?x?yz?-plop?"),
            (b"?hi?", 2, b"?hi?"),
            (b"\x01hi\x01", 2, b"?hi?"),
            (b"???hi???", 2, b"?hi?"),
            (b"\x01?hi??\x01", 2, b"?hi?"),
            (b"?\t?hi?\t?", 2, b"?\t?hi?\t?"),
            (b"\n\nhi\n\n", 2, b"\n\nhi\n\n"),
            (b"", 2, b""),
            (b" ", 2, b" "),
            (b"   ", 2, b"   "),
            (b"? ? ? hi \x01\x02   \x03   ", 2, b"? ? ? hi ?   ?   "),
            (with_nuls, 3, b"?\t\n?!?x?yz?-plop?"),
            (b"\n\nhi\n\n", 3, b"\n\nhi\n\n"),
            (b"", 3, b""),
            (b" ", 3, b""),
            (b"   ", 3, b""),
            (b" ? ", 3, b"?"),
            (b"? ? ? hi \x01\x02   \x03   ", 3, b"???hi??"),
            (b" \t \t", 3, b"\t\t"),
            (with_nuls, 4, b"?\n?!?x?yz?-plop?"),
            (b"\n\nhi\n\n", 4, b"\n\nhi\n\n"),
            (b"", 4, b""),
            (b" ", 4, b""),
            (b" \t \t", 4, b""),
            (b"foo\t\t", 4, b"foo"),
        ];
        for (i, &(input, version, output)) in vectors.iter().enumerate() {
            let want = md5_hex(output);
            // Whole, one byte at a time, and in uneven pieces, as Dovecot's test does.
            for chunk in [usize::MAX, 1, 2, 3, 7] {
                assert_eq!(
                    normalized(input, version, chunk),
                    want,
                    "vector {i} (version {version}, pieces of {chunk})"
                );
            }
        }
    }

    #[test]
    fn crlf_becomes_lf_and_lone_cr_stays() {
        for chunk in [usize::MAX, 1, 2] {
            assert_eq!(normalized(b"a\r\nb\r\n", 1, chunk), md5_hex(b"a\nb\n"));
            assert_eq!(normalized(b"a\rb\r\r\n", 1, chunk), md5_hex(b"a\rb\r\n"));
            assert_eq!(normalized(b"a\rb\r\r\n", 2, chunk), md5_hex(b"a?b?\n"));
        }
    }

    #[test]
    fn no_wanted_header_gives_the_empty_hash() {
        assert_eq!(md5_hex(b"\n"), EMPTY_HEADER_HASH);
        for msg in [
            "",
            "\n",
            "\r\n",
            "Subject: hi\n\nbody\n",
            "Subject: hi\r\n\r\nDate: in the body\r\n",
            "Subject: no blank line",
            "Subject: no blank line\n",
            "Date-Received: x\nX-Message-ID: y\n\n",
        ] {
            for version in 1..=4 {
                assert_eq!(
                    header_hash(msg.as_bytes(), DEFAULT_HASHED_HEADERS, version),
                    EMPTY_HEADER_HASH,
                    "{msg:?} version {version}"
                );
            }
        }
        assert!(is_empty_header_hash(&hash("To: x\n\n")));
    }

    #[test]
    fn hashes_the_wanted_lines_and_the_blank_line() {
        let msg = "Return-Path: <a@b>\nDate: Fri, 01 Mar 2024 09:00:00 +0000\nSubject: s\n\
                   Message-ID: <1@x>\nTo: t\n\nbody\nDate: not a header\n";
        let text = "Date: Fri, 01 Mar 2024 09:00:00 +0000\nMessage-ID: <1@x>\n\n";
        assert_eq!(
            header_hash(msg.as_bytes(), DEFAULT_HASHED_HEADERS, 1),
            md5_hex(text.as_bytes())
        );
        assert_eq!(hash(msg), md5_hex(text.replace(' ', "").as_bytes()));
        // The field list's order does not matter, message order does.
        assert_eq!(
            header_hash(msg.as_bytes(), &["message-id", "DATE"], 3),
            hash(msg)
        );
    }

    #[test]
    fn header_block_imap_header_fields_and_whole_message_agree() {
        let msg = "Received: from x\r\n\tby y\r\nDate: Fri, 01 Mar 2024 09:00:00 +0000\r\n\
                   Subject: s\r\nMessage-ID:\r\n <folded.1@x>\r\nX-Other: o\r\n\r\nbody\r\n";
        let header_only = "Received: from x\r\n\tby y\r\nDate: Fri, 01 Mar 2024 09:00:00 +0000\r\n\
                   Subject: s\r\nMessage-ID:\r\n <folded.1@x>\r\nX-Other: o\r\n";
        // What an IMAP server returns for BODY.PEEK[HEADER.FIELDS (Date Message-ID)].
        let fetched =
            "Date: Fri, 01 Mar 2024 09:00:00 +0000\r\nMessage-ID:\r\n <folded.1@x>\r\n\r\n";
        let lf = msg.replace("\r\n", "\n");
        for version in 1..=4 {
            let want = header_hash(msg.as_bytes(), DEFAULT_HASHED_HEADERS, version);
            for other in [header_only, &format!("{header_only}\r\n"), fetched, &lf] {
                assert_eq!(
                    header_hash(other.as_bytes(), DEFAULT_HASHED_HEADERS, version),
                    want,
                    "{other:?} version {version}"
                );
            }
        }
        assert_eq!(
            hash(msg),
            md5_hex(b"Date:Fri,01Mar202409:00:00+0000\nMessage-ID:\n<folded.1@x>\n\n")
        );
    }

    #[test]
    fn every_occurrence_counts_in_message_order() {
        let msg = "Date: one\nMessage-ID: <m>\nDATE: two\n\n";
        assert_eq!(
            header_hash(msg.as_bytes(), DEFAULT_HASHED_HEADERS, 1),
            md5_hex(msg.as_bytes())
        );
        assert_ne!(hash(msg), hash("Date: one\nMessage-ID: <m>\n\n"));
        assert_ne!(hash(msg), hash("DATE: two\nMessage-ID: <m>\nDate: one\n\n"));
    }

    #[test]
    fn name_and_colon_bytes_are_kept() {
        // Space before the colon still names the field; the bytes are hashed as they are.
        let msg = "Date \t: x\nMessage-ID:<y>\n\n";
        assert_eq!(
            header_hash(msg.as_bytes(), DEFAULT_HASHED_HEADERS, 1),
            md5_hex(msg.as_bytes())
        );
        assert_eq!(hash(msg), md5_hex(b"Date\t:x\nMessage-ID:<y>\n\n"));
        // A line without a colon has an empty name: only an empty field name wants it.
        let odd = "Date: x\nno colon here\n\n";
        assert_eq!(
            header_hash(odd.as_bytes(), &["Date"], 1),
            md5_hex(b"Date: x\n\n")
        );
        assert_eq!(
            header_hash(odd.as_bytes(), &["Date", ""], 1),
            md5_hex(odd.as_bytes())
        );
    }

    #[test]
    fn eight_bit_and_control_bytes_collapse() {
        let raw = "Date: Fr\u{e9}, 1 M\u{e4}r\nMessage-ID: <\u{1f600}??x\u{7f}@y>\n\n";
        let latin1 = b"Date: Fr\xe9, 1 M\xe4r\nMessage-ID: <\xf0??x@y>\n\n";
        let want = md5_hex(b"Date:Fr?,1M?r\nMessage-ID:<?x?@y>\n\n");
        assert_eq!(hash(raw), want);
        assert_ne!(
            header_hash(latin1, DEFAULT_HASHED_HEADERS, 3),
            want,
            "the DEL byte is missing here"
        );
        assert_eq!(
            header_hash(latin1, DEFAULT_HASHED_HEADERS, 3),
            md5_hex(b"Date:Fr?,1M?r\nMessage-ID:<?x@y>\n\n")
        );
        // Dovecot's imapd sends NUL as 0x80; both normalise alike.
        assert_eq!(hash("Date: a\0b\n\n"), hash("Date: a\u{80}b\n\n"));
        // Version 1 sees every byte.
        assert_ne!(
            header_hash("Date: a?b\n\n".as_bytes(), DEFAULT_HASHED_HEADERS, 1),
            header_hash("Date: a??b\n\n".as_bytes(), DEFAULT_HASHED_HEADERS, 1)
        );
        assert_eq!(hash("Date: a?b\n\n"), hash("Date: a???b\n\n"));
        assert_ne!(hash("Date: a? ?b\n\n"), hash("Date: a?b\n\n"));
    }

    #[test]
    fn version_3_ignores_spaces_that_servers_trim() {
        assert_eq!(
            hash("Date: x  \r\nMessage-ID: <y> \r\n\r\n"),
            hash("Date:x\nMessage-ID:<y>\n\n")
        );
        assert_ne!(
            header_hash(b"Date: x \n\n", DEFAULT_HASHED_HEADERS, 2),
            header_hash(b"Date: x\n\n", DEFAULT_HASHED_HEADERS, 2)
        );
    }

    #[test]
    fn header_without_blank_line_or_final_newline() {
        let want = md5_hex(b"Date:x\n\n");
        assert_eq!(hash("Date: x"), want);
        assert_eq!(hash("Date: x\n"), want);
        assert_eq!(hash("Date: x\r\n"), want);
        assert_eq!(hash("Subject: s\nDate: x"), want);
        assert_eq!(hash("Date: x\nSubject: s"), want);
    }

    /// Hashes Dovecot 2.3.19.1 computed (`doveadm -D sync` of a Maildir against `imapc:` on
    /// a Dovecot imapd, "Import change … hdr_hash=… result=Headers hashes match"): the
    /// Maildir side hashed these exact file contents, the imapc side what the imapd served.
    #[test]
    fn hashes_computed_by_dovecot() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"Date: Fri, 01 Mar 2024 09:00:00 +0000\r\nSubject: crlf\r\n\
                  Message-ID: <crlf@x>\r\n\r\nbody\r\n",
                "320f1c9152ada8effefcdfc8ffe2a1b3",
            ),
            (
                b"Subject: folded\nMessage-ID:\n <folded.1@x>\n\
                  Date: Sat, 02 Mar 2024 09:00:00 +0000\n\
                  Date: Sun, 03 Mar 2024 09:00:00 +0000\n\nbody\n",
                "18b2b24b31e0996027c819a5a0e476ed",
            ),
            (
                "Subject: utf8\nDate: Fr\u{e9}, 1 M\u{e4}r 2024\nMessage-ID: <\u{1f600}??x@y>\n\nbody\n"
                    .as_bytes(),
                "94e58466a06f2b41adb2c238caf40948",
            ),
            (
                b"Subject: latin1\nDate: Fr\xe9 \x01\x02 ?? x\nmessage-id:   <sp@x>   \n\nbody\n",
                "5d7d62033a3438bcb6fc1f4ab9c623d4",
            ),
            (
                b"Subject: none\nTo: x\n\nDate: body\n",
                EMPTY_HEADER_HASH,
            ),
            (
                b"Date \t: spaced\nX-Date: no\nMessage-ID:<nospace@x>\n\tcont  \n\nbody\n",
                "4e65c931c08f2763452e22250f8eaa3f",
            ),
            (
                b"Subject: nul\nDate: a\x00b\nMessage-ID: <nul@x>\n\nbody\n",
                "8005714cfea33809cec912eb493ae587",
            ),
            (
                b"Subject: cr\nDate: a\rb\r\nMessage-ID: <cr@x>\n\nbody\n",
                "20519b73bcd75537c70400106b31e6c4",
            ),
            (
                b"Date: headeronly\nMessage-ID: <ho@x>\n",
                "c46a93b08073c845ba95154b8ae2a63d",
            ),
            (
                b"From junk\nno colon line\nDate: x\n\nbody\n",
                "ed81abc69c6d32c9ca5ec923f7a12c26",
            ),
        ];
        for (i, &(msg, want)) in cases.iter().enumerate() {
            assert_eq!(
                header_hash(msg, DEFAULT_HASHED_HEADERS, 3),
                want,
                "case {i}: {:?}",
                String::from_utf8_lossy(msg)
            );
        }
        // The slave brain decodes the handshake's list with a trailing empty name, and so
        // hashes the lines without a colon too (its imapc side sent this hash).
        assert_eq!(
            header_hash(
                b"From junk\nno colon line\nDate: x\n\nbody\n",
                &["Date", "Message-ID", ""],
                3
            ),
            "9187d6c9aab7fef0cd770a783383fdef"
        );
    }

    #[test]
    #[should_panic(expected = "unknown header hash version")]
    fn version_0_is_refused() {
        header_hash(b"", DEFAULT_HASHED_HEADERS, 0);
    }
}
