//! The dsync wire codec (reference/dovecot-dsync.md §4): records as tab-separated lines in
//! Dovecot's exact format (protocol `VERSION\tdsync\t3\t5`), the handshake's schema lines, and
//! the dot-stuffed streams that carry message bodies. Sans-I/O: the caller reads lines and
//! chunks from its transport, this module turns them into [`Record`]s and back.
//!
//! Each side first announces, per record type, the keys it sends and in which order; a record
//! then carries its values positionally in the sender's order. So we encode by our schema and
//! decode by the peer's, which lets Dovecot skip our extension keys (`x_…`) and lets us skip the
//! keys of Dovecot's that we do not model.

use crate::MailboxState;
use crate::record::{
    ChangeType, Deletes, DryRunReport, Existence, Finish, Handshake, KeywordChange, Mail,
    MailChange, MailRequest, MailboxRecord, Record, SyncType, TreeNode,
};
use boxsync_model::{Flags, Guid128, MailboxName};
use std::collections::HashSet;
use std::fmt;

/// The first line each side sends: dsync protocol 3.5, as Dovecot 2.2 … 2.4 speak it.
pub const VERSION_LINE: &[u8] = b"VERSION\tdsync\t3\t5\n";
/// Longest record line accepted (without its LF); longer is a protocol error.
pub const MAX_LINE: usize = 1 << 20;

/// A peer broke the protocol: bad framing, a malformed value, a name we refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dsync protocol error: {}", self.0)
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for boxsync_model::Error {
    fn from(e: WireError) -> Self {
        boxsync_model::Error::data(e)
    }
}

/// Our greeting: the VERSION line, one schema line per record type in Dovecot's order
/// `H S N D B A C R M F c`, then `.`. Our key lists are Dovecot 2.3's with our extension keys
/// appended after its optional keys, where a Dovecot peer ignores them.
pub fn preamble() -> Vec<u8> {
    let mut out = VERSION_LINE.to_vec();
    for schema in SCHEMAS {
        out.push(schema.letter);
        out.extend_from_slice(schema.keys.join("\t").as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b".\n");
    out
}

/// The peer's greeting, parsed line by line: its protocol minor version and, per record type,
/// where each key we know sits in its records.
#[derive(Debug, Clone)]
pub struct PeerSchemas {
    stage: Stage,
    minor: u32,
    /// Indexed like [`SCHEMAS`].
    known: [Option<PeerSchema>; SCHEMAS.len()],
    /// Types we do not know, kept only to know their key count and whether a stream follows.
    unknown: Vec<(u8, PeerSchema)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Version,
    Schemas,
    Done,
}

#[derive(Debug, Clone)]
struct PeerSchema {
    /// For each of our keys of this type, its position in the peer's records.
    pos: Vec<Option<usize>>,
    /// How many keys the peer announced: a record with more values is an error.
    count: usize,
    /// Where the peer's `stream` key is: a record with it set is followed by a dot stream.
    stream: Option<usize>,
}

impl Default for PeerSchemas {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerSchemas {
    pub fn new() -> Self {
        PeerSchemas {
            stage: Stage::Version,
            minor: 0,
            known: std::array::from_fn(|_| None),
            unknown: Vec::new(),
        }
    }

    /// Feeds one line (without its LF). The first must be the VERSION line (major 3, any
    /// minor); then schema lines. Returns `Ok(true)` once the `.` line is seen.
    pub fn feed_line(&mut self, line: &[u8]) -> Result<bool, WireError> {
        let line = strip_line(line)?;
        match self.stage {
            Stage::Version => {
                self.minor = parse_version(line)?;
                self.stage = Stage::Schemas;
                Ok(false)
            }
            Stage::Schemas if line == b"." => {
                for &letter in NEEDED {
                    let described = SCHEMAS
                        .iter()
                        .position(|s| s.letter == letter)
                        .is_some_and(|t| self.known[t].is_some());
                    if !described {
                        return Err(err(format!(
                            "the peer's handshake does not describe {} records",
                            letter as char
                        )));
                    }
                }
                self.stage = Stage::Done;
                Ok(true)
            }
            Stage::Schemas => {
                self.feed_schema(line)?;
                Ok(false)
            }
            Stage::Done => Err(err(format!(
                "handshake line after the end of the schemas: {}",
                printable(line)
            ))),
        }
    }

    /// The peer's protocol minor version (features are gated by it).
    pub fn minor(&self) -> u32 {
        self.minor
    }

    fn feed_schema(&mut self, line: &[u8]) -> Result<(), WireError> {
        let Some((&letter, rest)) = line.split_first() else {
            return Err(err("empty schema line"));
        };
        let keys = split_fields(rest);
        let mut seen = HashSet::with_capacity(keys.len());
        if let Some(dup) = keys.iter().find(|k| !seen.insert(**k)) {
            return Err(err(format!(
                "the peer's {} schema names key {} twice",
                letter as char,
                printable(dup)
            )));
        }
        let stream = keys.iter().position(|k| *k == b"stream");
        let Some(t) = SCHEMAS.iter().position(|s| s.letter == letter) else {
            if !self.unknown.iter().any(|(l, _)| *l == letter) {
                let schema = PeerSchema {
                    pos: Vec::new(),
                    count: keys.len(),
                    stream,
                };
                self.unknown.push((letter, schema));
            }
            return Ok(());
        };
        if self.known[t].is_some() {
            return Err(err(format!(
                "the peer describes {} records twice",
                letter as char
            )));
        }
        let ours = SCHEMAS[t];
        let pos: Vec<Option<usize>> = ours
            .keys
            .iter()
            .map(|k| keys.iter().position(|pk| *pk == k.as_bytes()))
            .collect();
        if let Some(missing) = (0..ours.required).find(|&i| pos[i].is_none()) {
            return Err(err(format!(
                "the peer's {} records lack the required key {}",
                letter as char, ours.keys[missing]
            )));
        }
        self.known[t] = Some(PeerSchema {
            pos,
            count: keys.len(),
            stream,
        });
        Ok(())
    }
}

/// Encodes one record as one line ending in LF, in our schema's key order (the peer decodes by
/// our schema). A [`Record::Mail`] with a body gets the `stream` key: the caller sends the body
/// next through a [`DotEncoder`]. [`Record::End`] is the `.` line.
///
/// [`decode`] gives back the same record except where the wire cannot tell values apart, as in
/// Dovecot: `pop3_uidl` `Some("")` reads back as `None`, `virtual_size` `u64::MAX` (Dovecot's
/// "unknown") as 0, flag bits above the five system flags are dropped, and a list holding one
/// empty string (`exclude_mailboxes`) reads back as an empty list.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Handshake(h) => encode_handshake(h, out),
        Record::State(s) => encode_state(s, out),
        Record::Node(n) => encode_node(n, out),
        Record::Deletes(d) => encode_deletes(d, out),
        Record::Mailbox(b) => encode_mailbox(b, out),
        Record::Change(c) => encode_change(c, out),
        Record::Request(r) => encode_request(r, out),
        Record::Mail(m) => encode_mail(m, out),
        Record::Finish(f) => encode_finish(f, out),
        Record::End => out.extend_from_slice(b".\n"),
    }
}

/// What one received line is.
#[derive(Debug)]
pub enum Decoded {
    /// Mail records come with `body: None`; the caller attaches the body it reads after the line.
    Record(Record),
    /// The `X` line a side sends when it closes.
    Done,
    /// A type Dovecot knows that we do not model (`A` attribute, `c` cache field) or an unknown
    /// letter. A stream that follows it must still be read past.
    Ignored,
}

/// Decodes one line (without its LF) by the peer's schema. The bool says whether a dot-stuffed
/// stream follows the line (the record's `stream` key is set: `M` and `A` records).
pub fn decode(peer: &PeerSchemas, line: &[u8]) -> Result<(Decoded, bool), WireError> {
    let line = strip_line(line)?;
    if peer.stage != Stage::Done {
        return Err(err("record line before the end of the peer's handshake"));
    }
    let Some((&letter, rest)) = line.split_first() else {
        return Err(err("empty record line"));
    };
    match letter {
        b'.' if rest.is_empty() => return Ok((Decoded::Record(Record::End), false)),
        b'X' if rest.is_empty() => return Ok((Decoded::Done, false)),
        b'.' | b'X' => {
            return Err(err(format!("unexpected line {}", printable(line))));
        }
        _ => {}
    }
    let values = split_fields(rest);
    let Some(t) = SCHEMAS.iter().position(|s| s.letter == letter) else {
        let stream = match peer.unknown.iter().find(|(l, _)| *l == letter) {
            Some((_, schema)) => {
                check_count(letter, schema, &values)?;
                stream_follows(schema, &values)
            }
            None => false,
        };
        return Ok((Decoded::Ignored, stream));
    };
    let Some(schema) = &peer.known[t] else {
        return Err(err(format!(
            "the peer sent {} records without describing them",
            letter as char
        )));
    };
    check_count(letter, schema, &values)?;
    let stream = stream_follows(schema, &values);
    let f = Fields {
        schema: SCHEMAS[t],
        peer: schema,
        values,
    };
    let record = match letter {
        b'H' => Record::Handshake(Box::new(decode_handshake(&f)?)),
        b'S' => Record::State(decode_state(&f)?),
        b'N' => Record::Node(decode_node(&f)?),
        b'D' => Record::Deletes(decode_deletes(&f)?),
        b'B' => Record::Mailbox(decode_mailbox(&f)?),
        b'C' => Record::Change(decode_change(&f)?),
        b'R' => Record::Request(decode_request(&f)?),
        b'M' => Record::Mail(decode_mail(&f)?),
        b'F' => Record::Finish(decode_finish(&f)?),
        _ => return Ok((Decoded::Ignored, stream)),
    };
    Ok((Decoded::Record(record), stream))
}

/// Dot-stuffs a body: a `.` at the start of a line (the start of the stream counts) is doubled.
/// [`DotEncoder::finish`] appends `\r\n.\r\n` after whatever the body ended with, as Dovecot 2.3
/// does; the receiver drops that CRLF again.
#[derive(Debug, Clone)]
pub struct DotEncoder {
    at_line_start: bool,
}

impl Default for DotEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DotEncoder {
    pub fn new() -> Self {
        DotEncoder {
            at_line_start: true,
        }
    }

    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut rest = chunk;
        while let Some(&first) = rest.first() {
            if self.at_line_start && first == b'.' {
                out.push(b'.');
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(lf) => {
                    out.extend_from_slice(&rest[..=lf]);
                    rest = &rest[lf + 1..];
                    self.at_line_start = true;
                }
                None => {
                    out.extend_from_slice(rest);
                    self.at_line_start = false;
                    rest = &[];
                }
            }
        }
    }

    pub fn finish(self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n.\r\n");
    }
}

/// Undoes [`DotEncoder`] incrementally, holding back at most a line ending and a dot (kept in
/// its state, never in a buffer: bodies can be hundreds of megabytes).
#[derive(Debug, Clone)]
pub struct DotDecoder {
    state: DotState,
}

/// The line ending that ended the previous line, held back until the next line shows whether it
/// is the terminating `.` line (then the ending is dropped, as Dovecot's receiver does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The stream's first line has no ending before it.
    None,
    Lf,
    CrLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DotState {
    LineStart(Ending),
    /// A `.` at the start of a line.
    Dot(Ending),
    /// `.` then CR at the start of a line.
    DotCr(Ending),
    /// Inside a line, nothing held back.
    Mid,
    /// Inside a line, a CR held back (it may start the line's ending).
    Cr,
    Done,
}

impl Default for DotDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DotDecoder {
    pub fn new() -> Self {
        DotDecoder {
            state: DotState::LineStart(Ending::None),
        }
    }

    /// Appends the body bytes in `input` to `out`; returns how many bytes of `input` it consumed
    /// and whether the stream has ended. After the end, the rest of `input` is the next record
    /// line. A `.` line ended by a bare LF also ends the stream (lenient, like Dovecot 2.4); a
    /// `.` at the start of any other line is removed (RFC 5321 transparency).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), WireError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                DotState::Done => break,
                DotState::Mid => {
                    let rest = &input[i..];
                    match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
                        None => {
                            out.extend_from_slice(rest);
                            i = input.len();
                        }
                        Some(p) => {
                            out.extend_from_slice(&rest[..p]);
                            self.state = if rest[p] == b'\r' {
                                DotState::Cr
                            } else {
                                DotState::LineStart(Ending::Lf)
                            };
                            i += p + 1;
                        }
                    }
                }
                DotState::Cr => {
                    i += 1;
                    match b {
                        b'\n' => self.state = DotState::LineStart(Ending::CrLf),
                        b'\r' => out.push(b'\r'),
                        _ => {
                            out.extend_from_slice(&[b'\r', b]);
                            self.state = DotState::Mid;
                        }
                    }
                }
                DotState::LineStart(ending) => {
                    if b == b'.' {
                        i += 1;
                        self.state = DotState::Dot(ending);
                    } else {
                        // The byte is looked at again in Mid.
                        flush(ending, out);
                        self.state = DotState::Mid;
                    }
                }
                DotState::Dot(ending) => {
                    i += 1;
                    match b {
                        b'\n' => self.state = DotState::Done,
                        b'\r' => self.state = DotState::DotCr(ending),
                        _ => {
                            flush(ending, out);
                            out.push(b);
                            self.state = DotState::Mid;
                        }
                    }
                }
                DotState::DotCr(ending) => {
                    if b == b'\n' {
                        i += 1;
                        self.state = DotState::Done;
                    } else {
                        // The line was ".\r<b>": the dot goes, the CR is held as in any line,
                        // and the byte is looked at again in Cr.
                        flush(ending, out);
                        self.state = DotState::Cr;
                    }
                }
            }
        }
        Ok((i, self.state == DotState::Done))
    }
}

fn flush(ending: Ending, out: &mut Vec<u8>) {
    match ending {
        Ending::None => {}
        Ending::Lf => out.push(b'\n'),
        Ending::CrLf => out.extend_from_slice(b"\r\n"),
    }
}

/// Escapes one field value: 0x01 → `01 '1'`, TAB → `01 't'`, CR → `01 'r'`, LF → `01 'n'`,
/// NUL → `01 '0'`; a value starting with 0x02 (the unset marker) gets one more 0x02 in front.
pub fn escape(value: &[u8], out: &mut Vec<u8>) {
    if value.first() == Some(&UNSET) {
        out.push(UNSET);
    }
    tab_escape(value, out);
}

/// The inverse of [`escape`]. A field that is exactly one 0x02 is unset, not a value: callers
/// check for that first, and here it is an error.
pub fn unescape(field: &[u8]) -> Result<Vec<u8>, WireError> {
    match field {
        [UNSET] => Err(err("an unset field where a value was expected")),
        [UNSET, rest @ ..] => tab_unescape(rest),
        _ => tab_unescape(field),
    }
}

const ESCAPE: u8 = 0x01;
const UNSET: u8 = 0x02;
const TAB: u8 = b'\t';

/// Escaping without the unset-marker rule, for the elements of nested lists.
fn tab_escape(value: &[u8], out: &mut Vec<u8>) {
    let mut rest = value;
    while let Some(p) = rest
        .iter()
        .position(|&b| matches!(b, ESCAPE | TAB | b'\r' | b'\n' | 0))
    {
        out.extend_from_slice(&rest[..p]);
        let code = match rest[p] {
            ESCAPE => b'1',
            TAB => b't',
            b'\r' => b'r',
            b'\n' => b'n',
            _ => b'0',
        };
        out.extend_from_slice(&[ESCAPE, code]);
        rest = &rest[p + 1..];
    }
    out.extend_from_slice(rest);
}

fn tab_unescape(value: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some(p) = rest.iter().position(|&b| b == ESCAPE) {
        out.extend_from_slice(&rest[..p]);
        let byte = match rest.get(p + 1) {
            Some(b'1') => ESCAPE,
            Some(b't') => TAB,
            Some(b'r') => b'\r',
            Some(b'n') => b'\n',
            Some(b'0') => 0,
            Some(_) | None => {
                return Err(err(format!("bad escape sequence in {}", printable(value))));
            }
        };
        out.push(byte);
        rest = &rest[p + 2..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

/// A nested list: each element escaped, joined by TAB; the record encoder escapes the whole
/// again, so inner TABs travel as `01 't'`.
fn nested_list<S: AsRef<[u8]>>(items: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(TAB);
        }
        tab_escape(item.as_ref(), &mut out);
    }
    out
}

fn err(msg: impl Into<String>) -> WireError {
    WireError(msg.into())
}

/// At most 80 bytes of peer input, quoted, with control and non-ASCII bytes escaped.
fn printable(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let shown = &bytes[..bytes.len().min(MAX)];
    let more = if bytes.len() > MAX { "..." } else { "" };
    format!("\"{}\"{more}", shown.escape_ascii())
}

/// A string for an error message: at most `max` characters, Debug-quoted.
fn shown_str(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// Dovecot's line reader drops the CR of a CRLF line ending, so we accept one too (a CR inside
/// a value always travels escaped).
fn strip_line(line: &[u8]) -> Result<&[u8], WireError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(err(format!(
            "a line of {} bytes is longer than the limit of {MAX_LINE}",
            line.len()
        )));
    }
    Ok(line)
}

fn parse_version(line: &[u8]) -> Result<u32, WireError> {
    let fields = split_fields(line);
    if let [b"VERSION", b"dsync", b"3", minor, ..] = fields.as_slice()
        && let Some(minor) = dec_u64(minor).and_then(|m| u32::try_from(m).ok())
    {
        return Ok(minor);
    }
    Err(err(format!(
        "the peer does not speak dsync protocol 3: it sent {}",
        printable(line)
    )))
}

/// A line's values after its type letter. No values at all is an empty list, not one empty
/// value: that is how Dovecot reads a bare `F`.
fn split_fields(rest: &[u8]) -> Vec<&[u8]> {
    if rest.is_empty() {
        Vec::new()
    } else {
        rest.split(|&b| b == TAB).collect()
    }
}

fn check_count(letter: u8, schema: &PeerSchema, values: &[&[u8]]) -> Result<(), WireError> {
    if values.len() > schema.count {
        return Err(err(format!(
            "a {} record with {} values, but its schema has {} keys",
            letter as char,
            values.len(),
            schema.count
        )));
    }
    Ok(())
}

fn stream_follows(schema: &PeerSchema, values: &[&[u8]]) -> bool {
    schema
        .stream
        .and_then(|p| values.get(p))
        .is_some_and(|v| *v != [UNSET])
}

/// One record type's keys as we send them: required keys first, then optional ones, then our
/// extensions.
struct Schema {
    letter: u8,
    keys: &'static [&'static str],
    required: usize,
}

const HANDSHAKE: Schema = Schema {
    letter: b'H',
    keys: &[
        "hostname",
        "sync_ns_prefix",
        "sync_box",
        "sync_box_guid",
        "sync_type",
        "debug",
        "sync_visible_namespaces",
        "exclude_mailboxes",
        "send_mail_requests",
        "backup_send",
        "backup_recv",
        "lock_timeout",
        "no_mail_sync",
        "no_backup_overwrite",
        "purge_remote",
        "no_notify",
        "sync_since_timestamp",
        "sync_max_size",
        "sync_flags",
        "sync_until_timestamp",
        "virtual_all_box",
        "empty_hdr_workaround",
        "import_commit_msgs_interval",
        "hashed_headers",
        "alt_char",
        // Extension: `-m` given more than once (Dovecot's sync_box holds one name).
        "x_sync_boxes",
        // Extension: Handshake::ns_prefix.
        "x_ns_prefix",
        // Extension: Handshake::dry_run, a flag.
        "x_dry_run",
    ],
    required: 1,
};

const STATE: Schema = Schema {
    letter: b'S',
    keys: &[
        "mailbox_guid",
        "last_uidvalidity",
        "last_common_uid",
        "last_common_modseq",
        "last_common_pvt_modseq",
        "last_messages_count",
        "changes_during_sync",
    ],
    required: 5,
};

const NODE: Schema = Schema {
    letter: b'N',
    keys: &[
        "name",
        "existence",
        "mailbox_guid",
        "uid_validity",
        "uid_next",
        "last_renamed_or_created",
        "subscribed",
        "last_subscription_change",
    ],
    required: 2,
};

const DELETES: Schema = Schema {
    letter: b'D',
    keys: &[
        "hierarchy_sep",
        "escape_char",
        "mailboxes",
        "dirs",
        "unsubscribes",
    ],
    required: 1,
};

const MAILBOX: Schema = Schema {
    letter: b'B',
    keys: &[
        "mailbox_guid",
        "uid_validity",
        "uid_next",
        "messages_count",
        "first_recent_uid",
        "highest_modseq",
        "highest_pvt_modseq",
        "mailbox_lost",
        "mailbox_ignore",
        "cache_fields",
        "have_guids",
        "have_save_guids",
        "have_only_guid128",
        // Extension: MailboxRecord::content_digest, lowercase hex.
        "x_content_digest",
    ],
    required: 7,
};

const ATTRIBUTE: Schema = Schema {
    letter: b'A',
    keys: &[
        "type",
        "key",
        "value",
        "stream",
        "deleted",
        "last_change",
        "modseq",
    ],
    required: 2,
};

const CHANGE: Schema = Schema {
    letter: b'C',
    keys: &[
        "type",
        "uid",
        "guid",
        "hdr_hash",
        "modseq",
        "pvt_modseq",
        "add_flags",
        "remove_flags",
        "final_flags",
        "keywords_reset",
        "keyword_changes",
        "received_timestamp",
        "virtual_size",
    ],
    required: 2,
};

const REQUEST: Schema = Schema {
    letter: b'R',
    keys: &["guid", "uid"],
    required: 0,
};

const MAIL: Schema = Schema {
    letter: b'M',
    keys: &[
        "guid",
        "uid",
        "pop3_uidl",
        "pop3_order",
        "received_date",
        "saved_date",
        "stream",
    ],
    required: 0,
};

const FINISH: Schema = Schema {
    letter: b'F',
    keys: &[
        "error",
        "mail_error",
        "require_full_resync",
        // Extension: Finish::dry_run, the store's description and a list of lines.
        "x_dry_run_store",
        "x_dry_run_lines",
    ],
    required: 0,
};

const CACHE_FIELD: Schema = Schema {
    letter: b'c',
    keys: &["name", "decision", "last_used"],
    required: 2,
};

/// In the order Dovecot sends its schema lines.
const SCHEMAS: [&Schema; 11] = [
    &HANDSHAKE,
    &STATE,
    &NODE,
    &DELETES,
    &MAILBOX,
    &ATTRIBUTE,
    &CHANGE,
    &REQUEST,
    &MAIL,
    &FINISH,
    &CACHE_FIELD,
];

/// The types a peer must describe because we send or receive them.
const NEEDED: &[u8] = b"HSNDBCRMF";

/// A key's index in our schema, found at compile time so that a misspelt key does not build.
const fn key_index(schema: &Schema, name: &str) -> usize {
    let mut i = 0;
    while i < schema.keys.len() {
        let (a, b) = (schema.keys[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("no such key in the schema")
}

macro_rules! key {
    ($schema:ident, $name:literal) => {
        const { key_index(&$schema, $name) }
    };
}

/// Writes one record line by our schema: values must come in key order; skipped keys are sent
/// unset, trailing ones are left out.
struct LineWriter<'a> {
    out: &'a mut Vec<u8>,
    schema: &'static Schema,
    written: usize,
    start: usize,
}

impl<'a> LineWriter<'a> {
    fn new(schema: &'static Schema, out: &'a mut Vec<u8>) -> Self {
        out.push(schema.letter);
        let start = out.len();
        LineWriter {
            out,
            schema,
            written: 0,
            start,
        }
    }

    fn value(&mut self, key: usize, value: &[u8]) {
        debug_assert!(
            key >= self.written && key < self.schema.keys.len(),
            "key {key} out of order"
        );
        while self.written < key {
            self.separator();
            self.out.push(UNSET);
            self.written += 1;
        }
        self.separator();
        escape(value, self.out);
        self.written += 1;
    }

    fn separator(&mut self) {
        if self.written > 0 {
            self.out.push(TAB);
        }
    }

    fn flag(&mut self, key: usize, on: bool) {
        if on {
            self.value(key, b"");
        }
    }

    fn decimal(&mut self, key: usize, n: impl fmt::Display) {
        self.value(key, n.to_string().as_bytes());
    }

    fn hex(&mut self, key: usize, n: u64) {
        self.value(key, format!("{n:x}").as_bytes());
    }

    fn finish(self) {
        // A line whose only value is empty would read back as no values at all (see
        // split_fields), so one unset value is added to keep the empty one.
        if self.written == 1 && self.out.len() == self.start {
            self.out.extend_from_slice(&[TAB, UNSET]);
        }
        self.out.push(b'\n');
    }
}

/// One received record's values, looked up by our key index through the peer's schema.
struct Fields<'a> {
    schema: &'static Schema,
    peer: &'a PeerSchema,
    values: Vec<&'a [u8]>,
}

impl<'a> Fields<'a> {
    /// The raw value, or None when the peer does not send the key, left it out or left it unset.
    fn raw(&self, key: usize) -> Option<&'a [u8]> {
        let value = *self.values.get(self.peer.pos[key]?)?;
        (value != [UNSET]).then_some(value)
    }

    fn bad(&self, key: usize, what: &str, value: &[u8]) -> WireError {
        err(format!(
            "{}.{}: {what} {}",
            self.schema.letter as char,
            self.schema.keys[key],
            printable(value)
        ))
    }

    fn required<T>(&self, key: usize, value: Option<T>) -> Result<T, WireError> {
        value.ok_or_else(|| {
            err(format!(
                "a {} record without its required {}",
                self.schema.letter as char, self.schema.keys[key]
            ))
        })
    }

    fn flag(&self, key: usize) -> bool {
        self.raw(key).is_some()
    }

    fn bytes(&self, key: usize) -> Result<Option<Vec<u8>>, WireError> {
        self.raw(key)
            .map(|v| unescape(v).map_err(|_| self.bad(key, "bad escaping in", v)))
            .transpose()
    }

    fn string(&self, key: usize) -> Result<Option<String>, WireError> {
        self.bytes(key)?
            .map(|v| String::from_utf8(v).map_err(|e| self.bad(key, "not UTF-8:", e.as_bytes())))
            .transpose()
    }

    /// A value parsed by `parse`; `what` names the kind of value in the error.
    fn parsed<T>(
        &self,
        key: usize,
        what: &str,
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, WireError> {
        self.bytes(key)?
            .map(|v| parse(&v).ok_or_else(|| self.bad(key, what, &v)))
            .transpose()
    }

    fn u32(&self, key: usize) -> Result<Option<u32>, WireError> {
        self.parsed(key, "invalid number", |v| {
            dec_u64(v).and_then(|n| u32::try_from(n).ok())
        })
    }

    fn u64(&self, key: usize) -> Result<Option<u64>, WireError> {
        self.parsed(key, "invalid number", dec_u64)
    }

    fn i64(&self, key: usize) -> Result<Option<i64>, WireError> {
        self.parsed(key, "invalid number", dec_i64)
    }

    fn hex(&self, key: usize) -> Result<Option<u64>, WireError> {
        self.parsed(key, "invalid hex number", hex_u64)
    }

    fn guid(&self, key: usize) -> Result<Option<Guid128>, WireError> {
        self.parsed(key, "invalid GUID", guid_of)
    }

    fn list(&self, key: usize) -> Result<Vec<Vec<u8>>, WireError> {
        match self.bytes(key)? {
            None => Ok(Vec::new()),
            Some(v) if v.is_empty() => Ok(Vec::new()),
            Some(v) => v
                .split(|&b| b == TAB)
                .map(|item| tab_unescape(item).map_err(|_| self.bad(key, "bad escaping in", &v)))
                .collect(),
        }
    }

    fn string_list(&self, key: usize) -> Result<Vec<String>, WireError> {
        self.list(key)?
            .into_iter()
            .map(|v| String::from_utf8(v).map_err(|e| self.bad(key, "not UTF-8:", e.as_bytes())))
            .collect()
    }
}

fn dec_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn dec_i64(v: &[u8]) -> Option<i64> {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn hex_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(v).ok()?, 16).ok()
}

fn guid_of(v: &[u8]) -> Option<Guid128> {
    Guid128::parse_hex(std::str::from_utf8(v).ok()?)
}

/// `C` flag masks hold Dovecot's `\Recent` (0x20) and may hold bits we do not know; only the
/// five system flags are kept.
fn flags_of(mask: u64) -> Flags {
    Flags((mask & u64::from(Flags::ALL.0)) as u8)
}

fn encode_handshake(h: &Handshake, out: &mut Vec<u8>) {
    let mut w = LineWriter::new(&HANDSHAKE, out);
    w.value(key!(HANDSHAKE, "hostname"), h.hostname.as_bytes());
    if let Some(first) = h.sync_boxes.first() {
        w.value(key!(HANDSHAKE, "sync_box"), first.as_bytes());
    }
    if !h.sync_box_guid.is_zero() {
        w.value(
            key!(HANDSHAKE, "sync_box_guid"),
            h.sync_box_guid.to_string().as_bytes(),
        );
    }
    let sync_type: &[u8] = match h.sync_type {
        SyncType::Full => b"f",
        SyncType::Changed => b"c",
        SyncType::State => b"s",
    };
    w.value(key!(HANDSHAKE, "sync_type"), sync_type);
    if !h.exclude_mailboxes.is_empty() {
        w.value(
            key!(HANDSHAKE, "exclude_mailboxes"),
            &nested_list(&h.exclude_mailboxes),
        );
    }
    // Our brains ask for every body they want with R records; without this flag a Dovecot
    // peer sends bodies unasked and waits for ours the same way. (Keys go in schema order.)
    w.flag(key!(HANDSHAKE, "send_mail_requests"), true);
    // Dovecot names the backup direction from the receiving side: a master that is the backup
    // source sends `backup_recv` (see backup.rawlog). Our fields name it from the master's side.
    w.flag(key!(HANDSHAKE, "backup_send"), h.backup_recv);
    w.flag(key!(HANDSHAKE, "backup_recv"), h.backup_send);
    if h.lock_timeout > 0 {
        w.decimal(key!(HANDSHAKE, "lock_timeout"), h.lock_timeout);
    }
    w.flag(key!(HANDSHAKE, "no_mail_sync"), h.no_mail_sync);
    w.flag(
        key!(HANDSHAKE, "no_backup_overwrite"),
        h.no_backup_overwrite,
    );
    // Dovecot sends these only when set, as decimals; a zero would read back as invalid.
    if h.sync_since_timestamp > 0 {
        w.decimal(
            key!(HANDSHAKE, "sync_since_timestamp"),
            h.sync_since_timestamp,
        );
    }
    if h.sync_max_size > 0 {
        w.decimal(key!(HANDSHAKE, "sync_max_size"), h.sync_max_size);
    }
    if let Some(flags) = &h.sync_flags {
        w.value(key!(HANDSHAKE, "sync_flags"), flags.as_bytes());
    }
    if h.sync_until_timestamp > 0 {
        w.decimal(
            key!(HANDSHAKE, "sync_until_timestamp"),
            h.sync_until_timestamp,
        );
    }
    if let Some(b) = &h.virtual_all_box {
        w.value(key!(HANDSHAKE, "virtual_all_box"), b.as_bytes());
    }
    if let Some(c) = h.alt_char {
        w.value(key!(HANDSHAKE, "alt_char"), c.to_string().as_bytes());
    }
    if h.sync_boxes.len() > 1 {
        w.value(key!(HANDSHAKE, "x_sync_boxes"), &nested_list(&h.sync_boxes));
    }
    if let Some(p) = &h.ns_prefix {
        w.value(key!(HANDSHAKE, "x_ns_prefix"), p.as_bytes());
    }
    w.flag(key!(HANDSHAKE, "x_dry_run"), h.dry_run);
    w.finish();
}

fn decode_handshake(f: &Fields) -> Result<Handshake, WireError> {
    let hostname = f.string(key!(HANDSHAKE, "hostname"))?;
    let sync_type_key = key!(HANDSHAKE, "sync_type");
    // A slave leaves sync_type unset: it adopts the master's.
    let sync_type = match f.bytes(sync_type_key)?.as_deref() {
        None | Some(b"c") => SyncType::Changed,
        Some(b"f") => SyncType::Full,
        Some(b"s") => SyncType::State,
        Some(other) => return Err(f.bad(sync_type_key, "unknown sync type", other)),
    };
    let sync_boxes = if f.raw(key!(HANDSHAKE, "x_sync_boxes")).is_some() {
        f.string_list(key!(HANDSHAKE, "x_sync_boxes"))?
    } else {
        f.string(key!(HANDSHAKE, "sync_box"))?.into_iter().collect()
    };
    Ok(Handshake {
        hostname: f.required(key!(HANDSHAKE, "hostname"), hostname)?,
        ns_prefix: f.string(key!(HANDSHAKE, "x_ns_prefix"))?,
        virtual_all_box: f.string(key!(HANDSHAKE, "virtual_all_box"))?,
        sync_type,
        backup_send: f.flag(key!(HANDSHAKE, "backup_recv")),
        backup_recv: f.flag(key!(HANDSHAKE, "backup_send")),
        no_backup_overwrite: f.flag(key!(HANDSHAKE, "no_backup_overwrite")),
        sync_boxes,
        exclude_mailboxes: f.string_list(key!(HANDSHAKE, "exclude_mailboxes"))?,
        lock_timeout: f.u32(key!(HANDSHAKE, "lock_timeout"))?.unwrap_or(0),
        sync_box_guid: f
            .guid(key!(HANDSHAKE, "sync_box_guid"))?
            .unwrap_or(Guid128::ZERO),
        no_mail_sync: f.flag(key!(HANDSHAKE, "no_mail_sync")),
        sync_since_timestamp: positive_time(f, key!(HANDSHAKE, "sync_since_timestamp"))?,
        sync_until_timestamp: positive_time(f, key!(HANDSHAKE, "sync_until_timestamp"))?,
        sync_max_size: f.u64(key!(HANDSHAKE, "sync_max_size"))?.unwrap_or(0),
        sync_flags: f.string(key!(HANDSHAKE, "sync_flags"))?,
        // Dovecot sends one character and reads only the first: so do we.
        alt_char: f
            .string(key!(HANDSHAKE, "alt_char"))?
            .and_then(|s| s.chars().next()),
        dry_run: f.flag(key!(HANDSHAKE, "x_dry_run")),
    })
}

/// A handshake timestamp: a positive UNIX time when present (Dovecot refuses 0 and below).
fn positive_time(f: &Fields, key: usize) -> Result<i64, WireError> {
    match f.i64(key)? {
        None => Ok(0),
        Some(t) if t > 0 => Ok(t),
        Some(t) => Err(f.bad(key, "invalid timestamp", t.to_string().as_bytes())),
    }
}

fn encode_state(s: &MailboxState, out: &mut Vec<u8>) {
    let mut w = LineWriter::new(&STATE, out);
    w.value(
        key!(STATE, "mailbox_guid"),
        s.mailbox_guid.to_string().as_bytes(),
    );
    w.decimal(key!(STATE, "last_uidvalidity"), s.last_uidvalidity);
    w.decimal(key!(STATE, "last_common_uid"), s.last_common_uid);
    w.decimal(key!(STATE, "last_common_modseq"), s.last_common_modseq);
    w.decimal(
        key!(STATE, "last_common_pvt_modseq"),
        s.last_common_pvt_modseq,
    );
    w.decimal(key!(STATE, "last_messages_count"), s.last_messages_count);
    w.finish();
}

fn decode_state(f: &Fields) -> Result<MailboxState, WireError> {
    let req_u32 = |key| f.u32(key).and_then(|v| f.required(key, v));
    let req_u64 = |key| f.u64(key).and_then(|v| f.required(key, v));
    let guid_key = key!(STATE, "mailbox_guid");
    Ok(MailboxState {
        mailbox_guid: f.required(guid_key, f.guid(guid_key)?)?,
        last_uidvalidity: req_u32(key!(STATE, "last_uidvalidity"))?,
        last_common_uid: req_u32(key!(STATE, "last_common_uid"))?,
        last_common_modseq: req_u64(key!(STATE, "last_common_modseq"))?,
        last_common_pvt_modseq: req_u64(key!(STATE, "last_common_pvt_modseq"))?,
        last_messages_count: f.u32(key!(STATE, "last_messages_count"))?.unwrap_or(0),
    })
}

fn encode_node(n: &TreeNode, out: &mut Vec<u8>) {
    let mut w = LineWriter::new(&NODE, out);
    w.value(key!(NODE, "name"), &nested_list(n.name.parts()));
    let existence: &[u8] = match n.existence {
        Existence::Exists => b"y",
        Existence::Nonexistent => b"n",
        Existence::Deleted => b"d",
    };
    w.value(key!(NODE, "existence"), existence);
    if !n.mailbox_guid.is_zero() {
        w.value(
            key!(NODE, "mailbox_guid"),
            n.mailbox_guid.to_string().as_bytes(),
        );
    }
    if n.uid_validity != 0 {
        w.decimal(key!(NODE, "uid_validity"), n.uid_validity);
    }
    if n.uid_next != 0 {
        w.decimal(key!(NODE, "uid_next"), n.uid_next);
    }
    if n.last_renamed_or_created != 0 {
        w.decimal(
            key!(NODE, "last_renamed_or_created"),
            n.last_renamed_or_created,
        );
    }
    w.flag(key!(NODE, "subscribed"), n.subscribed);
    if n.last_subscription_change != 0 {
        w.decimal(
            key!(NODE, "last_subscription_change"),
            n.last_subscription_change,
        );
    }
    w.finish();
}

fn decode_node(f: &Fields) -> Result<TreeNode, WireError> {
    let name_key = key!(NODE, "name");
    f.required(name_key, f.raw(name_key))?;
    let parts = f.list(name_key)?;
    let joined = parts.join(&b'/');
    let parts = parts
        .into_iter()
        .map(String::from_utf8)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            err(format!(
                "N.name: mailbox name {} is not UTF-8",
                printable(&joined)
            ))
        })?;
    let name = MailboxName::from_parts(parts.iter().map(String::as_str)).map_err(|e| {
        err(format!(
            "N.name: refusing mailbox name {}: {}",
            shown_str(&parts.join("/"), 80),
            shown_str(&e.to_string(), 160)
        ))
    })?;
    let existence_key = key!(NODE, "existence");
    let existence = match f
        .required(existence_key, f.bytes(existence_key)?)?
        .as_slice()
    {
        b"y" => Existence::Exists,
        b"n" => Existence::Nonexistent,
        b"d" => Existence::Deleted,
        other => return Err(f.bad(existence_key, "unknown existence", other)),
    };
    Ok(TreeNode {
        name,
        existence,
        mailbox_guid: f.guid(key!(NODE, "mailbox_guid"))?.unwrap_or(Guid128::ZERO),
        uid_validity: f.u32(key!(NODE, "uid_validity"))?.unwrap_or(0),
        uid_next: f.u32(key!(NODE, "uid_next"))?.unwrap_or(0),
        last_renamed_or_created: f.i64(key!(NODE, "last_renamed_or_created"))?.unwrap_or(0),
        subscribed: f.flag(key!(NODE, "subscribed")),
        last_subscription_change: f.i64(key!(NODE, "last_subscription_change"))?.unwrap_or(0),
    })
}

fn encode_deletes(d: &Deletes, out: &mut Vec<u8>) {
    fn pairs(list: &[(Guid128, i64)]) -> Vec<u8> {
        let text: Vec<String> = list.iter().map(|(g, ts)| format!("{g} {ts}")).collect();
        text.join(" ").into_bytes()
    }
    let mut w = LineWriter::new(&DELETES, out);
    // Our mailbox names use '/' and never escape characters; Dovecot wants both announced.
    w.value(key!(DELETES, "hierarchy_sep"), b"/");
    w.value(key!(DELETES, "escape_char"), b"%");
    if !d.mailboxes.is_empty() {
        w.value(key!(DELETES, "mailboxes"), &pairs(&d.mailboxes));
    }
    if !d.dirs.is_empty() {
        w.value(key!(DELETES, "dirs"), &pairs(&d.dirs));
    }
    if !d.unsubscribes.is_empty() {
        w.value(key!(DELETES, "unsubscribes"), &pairs(&d.unsubscribes));
    }
    w.finish();
}

fn decode_deletes(f: &Fields) -> Result<Deletes, WireError> {
    let pairs = |key: usize| -> Result<Vec<(Guid128, i64)>, WireError> {
        let Some(v) = f.bytes(key)? else {
            return Ok(Vec::new());
        };
        let words: Vec<&[u8]> = v.split(|&b| b == b' ').filter(|w| !w.is_empty()).collect();
        if !words.len().is_multiple_of(2) {
            return Err(f.bad(key, "not a list of GUID and time pairs:", &v));
        }
        words
            .chunks(2)
            .map(|pair| {
                let guid = guid_of(pair[0]).ok_or_else(|| f.bad(key, "invalid GUID", pair[0]))?;
                let ts = dec_i64(pair[1]).ok_or_else(|| f.bad(key, "invalid time", pair[1]))?;
                Ok((guid, ts))
            })
            .collect()
    };
    let sep_key = key!(DELETES, "hierarchy_sep");
    f.required(sep_key, f.raw(sep_key))?;
    Ok(Deletes {
        mailboxes: pairs(key!(DELETES, "mailboxes"))?,
        dirs: pairs(key!(DELETES, "dirs"))?,
        unsubscribes: pairs(key!(DELETES, "unsubscribes"))?,
    })
}

fn encode_mailbox(b: &MailboxRecord, out: &mut Vec<u8>) {
    let mut w = LineWriter::new(&MAILBOX, out);
    w.value(
        key!(MAILBOX, "mailbox_guid"),
        b.mailbox_guid.to_string().as_bytes(),
    );
    w.decimal(key!(MAILBOX, "uid_validity"), b.uid_validity);
    w.decimal(key!(MAILBOX, "uid_next"), b.uid_next);
    w.decimal(key!(MAILBOX, "messages_count"), b.messages_count);
    w.decimal(key!(MAILBOX, "first_recent_uid"), b.first_recent_uid);
    w.decimal(key!(MAILBOX, "highest_modseq"), b.highest_modseq);
    w.decimal(key!(MAILBOX, "highest_pvt_modseq"), b.highest_pvt_modseq);
    w.flag(key!(MAILBOX, "mailbox_lost"), b.mailbox_lost);
    w.flag(key!(MAILBOX, "mailbox_ignore"), b.mailbox_ignore);
    // Every message has a GUID in our stores, and a save can keep the one we are given.
    w.flag(key!(MAILBOX, "have_guids"), true);
    w.flag(key!(MAILBOX, "have_save_guids"), true);
    if let Some(digest) = b.content_digest {
        w.hex(key!(MAILBOX, "x_content_digest"), digest);
    }
    w.finish();
}

fn decode_mailbox(f: &Fields) -> Result<MailboxRecord, WireError> {
    let req_u32 = |key| f.u32(key).and_then(|v| f.required(key, v));
    let req_u64 = |key| f.u64(key).and_then(|v| f.required(key, v));
    let guid_key = key!(MAILBOX, "mailbox_guid");
    Ok(MailboxRecord {
        mailbox_guid: f.required(guid_key, f.guid(guid_key)?)?,
        uid_validity: req_u32(key!(MAILBOX, "uid_validity"))?,
        uid_next: req_u32(key!(MAILBOX, "uid_next"))?,
        messages_count: req_u32(key!(MAILBOX, "messages_count"))?,
        first_recent_uid: req_u32(key!(MAILBOX, "first_recent_uid"))?,
        highest_modseq: req_u64(key!(MAILBOX, "highest_modseq"))?,
        highest_pvt_modseq: req_u64(key!(MAILBOX, "highest_pvt_modseq"))?,
        mailbox_lost: f.flag(key!(MAILBOX, "mailbox_lost")),
        mailbox_ignore: f.flag(key!(MAILBOX, "mailbox_ignore")),
        content_digest: f.hex(key!(MAILBOX, "x_content_digest"))?,
    })
}

fn encode_change(c: &MailChange, out: &mut Vec<u8>) {
    let mut w = LineWriter::new(&CHANGE, out);
    let change_type: &[u8] = match c.change_type {
        ChangeType::Save => b"s",
        ChangeType::Expunge => b"e",
        ChangeType::FlagChange => b"f",
    };
    w.value(key!(CHANGE, "type"), change_type);
    w.decimal(key!(CHANGE, "uid"), c.uid);
    w.value(key!(CHANGE, "guid"), c.guid.as_bytes());
    if c.modseq != 0 {
        w.decimal(key!(CHANGE, "modseq"), c.modseq);
    }
    for (key, flags) in [
        (key!(CHANGE, "add_flags"), c.add_flags),
        (key!(CHANGE, "remove_flags"), c.remove_flags),
        (key!(CHANGE, "final_flags"), c.final_flags),
    ] {
        if !flags.is_empty() {
            w.hex(key, u64::from(flags.0));
        }
    }
    w.flag(key!(CHANGE, "keywords_reset"), c.keywords_reset);
    if !c.keyword_changes.is_empty() {
        let items: Vec<String> = c
            .keyword_changes
            .iter()
            .map(|k| match k {
                KeywordChange::Add(kw) => format!("+{kw}"),
                KeywordChange::Remove(kw) => format!("-{kw}"),
                KeywordChange::Final(kw) => format!("={kw}"),
                KeywordChange::AddFinal(kw) => format!("&{kw}"),
            })
            .collect();
        w.value(key!(CHANGE, "keyword_changes"), &nested_list(&items));
    }
    if c.received_timestamp != 0 {
        // Hex of the two's complement, which reads back to the same i64.
        w.hex(
            key!(CHANGE, "received_timestamp"),
            c.received_timestamp as u64,
        );
    }
    if c.virtual_size != 0 {
        w.hex(key!(CHANGE, "virtual_size"), c.virtual_size);
    }
    w.finish();
}

fn decode_change(f: &Fields) -> Result<MailChange, WireError> {
    let type_key = key!(CHANGE, "type");
    let change_type = match f.required(type_key, f.bytes(type_key)?)?.as_slice() {
        b"s" => ChangeType::Save,
        b"e" => ChangeType::Expunge,
        b"f" => ChangeType::FlagChange,
        other => return Err(f.bad(type_key, "unknown change type", other)),
    };
    let uid_key = key!(CHANGE, "uid");
    let flags = |key| f.hex(key).map(|v| flags_of(v.unwrap_or(0)));
    let kw_key = key!(CHANGE, "keyword_changes");
    let keyword_changes = f
        .string_list(kw_key)?
        .into_iter()
        .map(|item| {
            let kw = item.get(1..).unwrap_or("").to_owned();
            match item.as_bytes().first() {
                Some(b'+') => Ok(KeywordChange::Add(kw)),
                Some(b'-') => Ok(KeywordChange::Remove(kw)),
                Some(b'=') => Ok(KeywordChange::Final(kw)),
                Some(b'&') => Ok(KeywordChange::AddFinal(kw)),
                _ => Err(f.bad(kw_key, "unknown keyword change", item.as_bytes())),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MailChange {
        change_type,
        uid: f.required(uid_key, f.u32(uid_key)?)?,
        guid: f.string(key!(CHANGE, "guid"))?.unwrap_or_default(),
        modseq: f.u64(key!(CHANGE, "modseq"))?.unwrap_or(0),
        add_flags: flags(key!(CHANGE, "add_flags"))?,
        remove_flags: flags(key!(CHANGE, "remove_flags"))?,
        final_flags: flags(key!(CHANGE, "final_flags"))?,
        keywords_reset: f.flag(key!(CHANGE, "keywords_reset")),
        keyword_changes,
        received_timestamp: f.hex(key!(CHANGE, "received_timestamp"))?.unwrap_or(0) as i64,
        // Dovecot sends all ones when it does not know the size.
        virtual_size: match f.hex(key!(CHANGE, "virtual_size"))? {
            None | Some(u64::MAX) => 0,
            Some(size) => size,
        },
    })
}

fn encode_request(r: &MailRequest, out: &mut Vec<u8>) {
    let mut w = LineWriter::new(&REQUEST, out);
    if !r.guid.is_empty() {
        w.value(key!(REQUEST, "guid"), r.guid.as_bytes());
    }
    if r.uid != 0 {
        w.decimal(key!(REQUEST, "uid"), r.uid);
    }
    w.finish();
}

fn decode_request(f: &Fields) -> Result<MailRequest, WireError> {
    Ok(MailRequest {
        guid: f.string(key!(REQUEST, "guid"))?.unwrap_or_default(),
        uid: f.u32(key!(REQUEST, "uid"))?.unwrap_or(0),
    })
}

fn encode_mail(m: &Mail, out: &mut Vec<u8>) {
    let mut w = LineWriter::new(&MAIL, out);
    w.value(key!(MAIL, "guid"), m.guid.as_bytes());
    if m.uid != 0 {
        w.decimal(key!(MAIL, "uid"), m.uid);
    }
    // Always present, empty for none, as Dovecot sends it.
    let uidl = m.pop3_uidl.as_deref().unwrap_or("");
    w.value(key!(MAIL, "pop3_uidl"), uidl.as_bytes());
    if let Some(order) = m.pop3_order {
        w.decimal(key!(MAIL, "pop3_order"), order);
    }
    if m.received_date != 0 {
        w.decimal(key!(MAIL, "received_date"), m.received_date);
    }
    if m.saved_date != 0 {
        w.decimal(key!(MAIL, "saved_date"), m.saved_date);
    }
    w.flag(key!(MAIL, "stream"), m.body.is_some());
    w.finish();
}

fn decode_mail(f: &Fields) -> Result<Mail, WireError> {
    Ok(Mail {
        guid: f.string(key!(MAIL, "guid"))?.unwrap_or_default(),
        uid: f.u32(key!(MAIL, "uid"))?.unwrap_or(0),
        // Dovecot sends an empty UIDL when there is none.
        pop3_uidl: f.string(key!(MAIL, "pop3_uidl"))?.filter(|u| !u.is_empty()),
        pop3_order: f.u32(key!(MAIL, "pop3_order"))?,
        received_date: f.i64(key!(MAIL, "received_date"))?.unwrap_or(0),
        saved_date: f.i64(key!(MAIL, "saved_date"))?.unwrap_or(0),
        body: None,
    })
}

fn encode_finish(fin: &Finish, out: &mut Vec<u8>) {
    let mut w = LineWriter::new(&FINISH, out);
    if let Some(error) = &fin.error {
        w.value(key!(FINISH, "error"), error.as_bytes());
    }
    if fin.mail_error != 0 {
        w.decimal(key!(FINISH, "mail_error"), fin.mail_error);
    }
    w.flag(key!(FINISH, "require_full_resync"), fin.require_full_resync);
    if let Some(report) = &fin.dry_run {
        w.value(key!(FINISH, "x_dry_run_store"), report.store.as_bytes());
        if !report.lines.is_empty() {
            w.value(key!(FINISH, "x_dry_run_lines"), &nested_list(&report.lines));
        }
    }
    w.finish();
}

fn decode_finish(f: &Fields) -> Result<Finish, WireError> {
    Ok(Finish {
        error: f.string(key!(FINISH, "error"))?,
        mail_error: f.u32(key!(FINISH, "mail_error"))?.unwrap_or(0),
        require_full_resync: f.flag(key!(FINISH, "require_full_resync")),
        // The store's description says a report is there, even one without lines.
        dry_run: match f.string(key!(FINISH, "x_dry_run_store"))? {
            Some(store) => Some(DryRunReport {
                store,
                lines: f.string_list(key!(FINISH, "x_dry_run_lines"))?,
            }),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own greeting, as a peer of ours would parse it.
    fn our_schemas() -> PeerSchemas {
        let mut peer = PeerSchemas::new();
        let pre = preamble();
        let mut lines = pre.strip_suffix(b"\n").unwrap().split(|&b| b == b'\n');
        let done = lines.all(|l| !peer.feed_line(l).unwrap());
        assert!(!done, "the '.' line must end the preamble");
        peer
    }

    fn decode_ours(line: &[u8]) -> Result<(Decoded, bool), WireError> {
        decode(&our_schemas(), line)
    }

    fn encoded(record: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        encode(record, &mut out);
        out
    }

    fn dot_encoded(body: &[u8]) -> Vec<u8> {
        let mut enc = DotEncoder::new();
        let mut out = Vec::new();
        enc.encode(body, &mut out);
        enc.finish(&mut out);
        out
    }

    fn dot_decoded(stream: &[u8]) -> (Vec<u8>, usize, bool) {
        let mut dec = DotDecoder::new();
        let mut out = Vec::new();
        let (used, done) = dec.decode(stream, &mut out).unwrap();
        (out, used, done)
    }

    #[test]
    fn escaping_known_answers() {
        let mut out = Vec::new();
        escape(b"a\tb\x01c\rd\ne\0f", &mut out);
        assert_eq!(out, b"a\x01tb\x011c\x01rd\x01ne\x010f");
        assert_eq!(unescape(&out).unwrap(), b"a\tb\x01c\rd\ne\0f");
        out.clear();
        escape(b"\x02x", &mut out);
        assert_eq!(out, b"\x02\x02x");
        assert_eq!(unescape(b"\x02\x02x").unwrap(), b"\x02x");
        assert!(unescape(b"\x02").is_err());
        assert!(unescape(b"a\x01").is_err());
        assert!(unescape(b"a\x01x").is_err());
        assert_eq!(unescape(b"").unwrap(), b"");
    }

    #[test]
    fn preamble_is_dovecots_layout() {
        let pre = preamble();
        assert!(pre.starts_with(VERSION_LINE));
        assert!(pre.ends_with(b"\n.\n"));
        let letters: Vec<u8> = pre
            .split(|&b| b == b'\n')
            .skip(1)
            .filter_map(|l| l.first().copied())
            .collect();
        assert_eq!(letters, b"HSNDBACRMFc.");
        assert_eq!(our_schemas().minor(), 5);
    }

    #[test]
    fn version_line_is_checked() {
        let mut p = PeerSchemas::new();
        assert!(!p.feed_line(b"VERSION\tdsync\t3\t7").unwrap());
        assert_eq!(p.minor(), 7);
        for bad in [
            &b"VERSION\tdsync\t2\t5"[..],
            b"VERSION\tdoveadm-server\t1\t2",
            b"VERSION\tdsync\t3",
            b"VERSION\tdsync\t3\tx",
            b"",
            b"+OK hello",
        ] {
            let e = PeerSchemas::new().feed_line(bad).unwrap_err();
            assert!(e.0.contains("dsync protocol 3"), "{e}");
        }
        let long = [b'A'; 500];
        let e = PeerSchemas::new().feed_line(&long).unwrap_err();
        assert!(e.0.len() < 200, "{e}");
        assert!(e.0.contains("AAAA\"..."), "{e}");
    }

    #[test]
    fn schema_errors() {
        let start = |lines: &[&[u8]]| {
            let mut p = PeerSchemas::new();
            p.feed_line(VERSION_LINE.strip_suffix(b"\n").unwrap())?;
            for l in lines {
                p.feed_line(l)?;
            }
            Ok::<_, WireError>(p)
        };
        let e = start(&[b"Nname"]).unwrap_err();
        assert!(e.0.contains("required key existence"), "{e}");
        let e = start(&[b"Rguid\tuid\tguid"]).unwrap_err();
        assert!(e.0.contains("twice"), "{e}");
        let e = start(&[b"Rguid\tuid", b"Rguid\tuid"]).unwrap_err();
        assert!(e.0.contains("twice"), "{e}");
        let e = start(&[b"Rguid\tuid", b"."]).unwrap_err();
        assert!(e.0.contains("does not describe H"), "{e}");
        // Unknown letters are fine, even twice.
        start(&[b"Zfoo", b"Zfoo\tfoo2", b"Rguid"]).unwrap();
    }

    #[test]
    fn record_framing_errors() {
        let peer = our_schemas();
        assert!(decode(&PeerSchemas::new(), b"F").is_err());
        assert!(decode(&peer, b"").is_err());
        assert!(decode(&peer, b".x").is_err());
        assert!(decode(&peer, b"Xx").is_err());
        assert!(matches!(decode(&peer, b"X"), Ok((Decoded::Done, false))));
        assert!(matches!(
            decode(&peer, b"."),
            Ok((Decoded::Record(Record::End), false))
        ));
        assert!(matches!(
            decode(&peer, b"Zanything"),
            Ok((Decoded::Ignored, false))
        ));
        // An attribute with a stream must say so, so that the caller reads past it.
        assert!(matches!(
            decode(&peer, b"Ap\tkey\t\x02\t"),
            Ok((Decoded::Ignored, true))
        ));
        assert!(matches!(
            decode(&peer, b"Ap\tkey\tvalue"),
            Ok((Decoded::Ignored, false))
        ));
        let e = decode(&peer, b"Rg\t1\tx").unwrap_err();
        assert!(e.0.contains("3 values"), "{e}");
        let long = vec![b'R'; MAX_LINE + 1];
        assert!(decode(&peer, &long).is_err());
        // A trailing CR (a CRLF line ending) is dropped.
        let (d, _) = decode(&peer, b"Rabc\t7\r").unwrap();
        let Decoded::Record(Record::Request(r)) = d else {
            panic!("{d:?}")
        };
        assert_eq!((r.guid.as_str(), r.uid), ("abc", 7));
    }

    #[test]
    fn hostile_values_are_errors() {
        let guid = "0123456789abcdef0123456789abcdef";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                format!("S{}\t1\t2\t3\t4", &guid[..31]).into_bytes(),
                "S.mailbox_guid: invalid GUID",
            ),
            (
                format!("S{guid}x\t1\t2\t3\t4").into_bytes(),
                "S.mailbox_guid: invalid GUID",
            ),
            (
                format!("S{guid}\t4294967296\t2\t3\t4").into_bytes(),
                "S.last_uidvalidity: invalid number",
            ),
            (
                format!("S{guid}\t1\t2\t18446744073709551616\t4").into_bytes(),
                "S.last_common_modseq: invalid number",
            ),
            (
                format!("S{guid}\t1\t+2\t3\t4").into_bytes(),
                "S.last_common_uid: invalid number",
            ),
            (
                format!("S{guid}\t1\t\t3\t4").into_bytes(),
                "S.last_common_uid: invalid number",
            ),
            (
                format!("S{guid}\t1\t2\t3").into_bytes(),
                "required last_common_pvt_modseq",
            ),
            (
                format!("S{guid}\t1\t\x02\t3\t4").into_bytes(),
                "required last_common_uid",
            ),
            (
                b"Cs\t1\tg\t\x02\t7\t\x02\t1ffffffffffffffff".to_vec(),
                "C.add_flags",
            ),
            (b"Cx\t1".to_vec(), "C.type: unknown change type"),
            (b"Css\t1".to_vec(), "C.type: unknown change type"),
            (b"Cs\t-1".to_vec(), "C.uid: invalid number"),
            (b"Cs".to_vec(), "required uid"),
            (
                b"Cs\t1\t\x02\t\x02\t\x02\t\x02\t\x02\t\x02\t\x02\t\x02\t*kw".to_vec(),
                "unknown keyword change",
            ),
            (b"NINBOX\tq".to_vec(), "N.existence: unknown existence"),
            (b"NINBOX".to_vec(), "required existence"),
            (b"Hhost\t\x02\t\x02\t\x02\tz".to_vec(), "unknown sync type"),
            (b"H\x02".to_vec(), "required hostname"),
            (b"D\x02".to_vec(), "required hierarchy_sep"),
            (
                format!("D/\t%\t{guid} 12 {guid}").into_bytes(),
                "not a list of GUID and time pairs",
            ),
            (format!("D/\t%\t{guid} 1x").into_bytes(), "invalid time"),
            (
                b"Mg\t1\t\x02\t\x02\t12x".to_vec(),
                "M.received_date: invalid number",
            ),
            (b"Fboom\t5x".to_vec(), "F.mail_error: invalid number"),
            (b"Fbad\x01escape".to_vec(), "F.error: bad escaping"),
            (b"F\xff\xfe".to_vec(), "F.error: not UTF-8"),
        ];
        for (line, want) in cases {
            let e = decode_ours(&line).unwrap_err();
            assert!(
                e.0.contains(want),
                "{:?}: {e}",
                line.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn hostile_names_are_refused_by_name() {
        for (name, shown) in [
            (&b"Work\x01t.."[..], "\"Work/..\""),
            (b"..", "\"..\""),
            (b"a\x01tb/c", "\"a/b/c\""),
            (b"a\x010b", "\"a\\0b\""),
            (b"a\x01t\x01tb", "\"a//b\""),
            (b"", "\"\""),
        ] {
            let mut line = b"N".to_vec();
            line.extend_from_slice(name);
            line.extend_from_slice(b"\ty");
            let e = decode_ours(&line).unwrap_err();
            assert!(e.0.starts_with("N.name: refusing mailbox name"), "{e}");
            assert!(e.0.contains(shown), "{e} lacks {shown}");
        }
        let e = decode_ours(b"N\xc3\x28\ty").unwrap_err();
        assert!(e.0.contains("not UTF-8"), "{e}");
        // Control characters other than NUL are names the receiving brain repairs with its
        // alt char, as Dovecot's does, not protocol errors.
        for (name, want) in [(&b"a\x0111b"[..], "a\u{1}b"), (b"del\x7f", "del\u{7f}")] {
            let mut line = b"N".to_vec();
            line.extend_from_slice(name);
            line.extend_from_slice(b"\ty");
            let (d, _) = decode_ours(&line).unwrap();
            let Decoded::Record(Record::Node(n)) = d else {
                panic!("{d:?}")
            };
            assert_eq!(n.name.parts(), [want]);
        }
        // A huge name is not copied whole into the message.
        let mut line = b"N".to_vec();
        line.extend(std::iter::repeat_n(b'x', 5000));
        line.extend_from_slice(b"\ty");
        let e = decode_ours(&line).unwrap_err();
        assert!(e.0.len() < 400, "{} bytes", e.0.len());
    }

    #[test]
    fn empty_only_value_survives() {
        let fin = Record::Finish(Finish {
            error: Some(String::new()),
            ..Finish::default()
        });
        assert_eq!(encoded(&fin), b"F\t\x02\n");
        let (d, _) = decode_ours(b"F\t\x02").unwrap();
        let Decoded::Record(Record::Finish(f)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(f.error.as_deref(), Some(""));
        assert_eq!(encoded(&Record::Finish(Finish::default())), b"F\n");
        let (d, _) = decode_ours(b"F").unwrap();
        let Decoded::Record(Record::Finish(f)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(f, Finish::default());
    }

    #[test]
    fn dot_stuffing_known_answers() {
        assert_eq!(dot_encoded(b""), b"\r\n.\r\n");
        assert_eq!(dot_encoded(b"a\n"), b"a\n\r\n.\r\n");
        assert_eq!(dot_encoded(b".a\n.\n..b"), b"..a\n..\n...b\r\n.\r\n");
        assert_eq!(dot_encoded(b"a.\r.b"), b"a.\r.b\r\n.\r\n");
        for body in [
            &b""[..],
            b"a",
            b"a\n",
            b"a\r\n",
            b"a\r",
            b"\r",
            b"\n",
            b".",
            b".\r\n",
            b"\n.\n",
            b".\r.\r\n.",
            b"x\r\r\n",
        ] {
            let stream = dot_encoded(body);
            let (out, used, done) = dot_decoded(&stream);
            assert!(done);
            assert_eq!(used, stream.len());
            assert_eq!(out, body, "{:?}", body.escape_ascii().to_string());
        }
    }

    #[test]
    fn dot_decoder_is_lenient_and_stops_at_the_end() {
        // A "." line ended by a bare LF, and the next record right behind it.
        let (out, used, done) = dot_decoded(b"abc\n.\nF\n");
        assert_eq!((out.as_slice(), used, done), (&b"abc"[..], 6, true));
        // RFC 5321: a lone leading dot goes.
        let (out, _, done) = dot_decoded(b".abc\r\n.\r\n");
        assert_eq!((out.as_slice(), done), (&b"abc"[..], true));
        let (out, _, done) = dot_decoded(b".\rx\r\n.\r\n");
        assert_eq!((out.as_slice(), done), (&b"\rx"[..], true));
        // Unfinished: everything consumed, only line endings held back.
        let (out, used, done) = dot_decoded(b"abc\r\n.\r");
        assert_eq!((out.as_slice(), used, done), (&b"abc"[..], 7, false));
        // After the end nothing more is consumed.
        let mut dec = DotDecoder::new();
        let mut out = Vec::new();
        assert_eq!(dec.decode(b".\r\nrest", &mut out).unwrap(), (3, true));
        assert_eq!(dec.decode(b"rest", &mut out).unwrap(), (0, true));
        assert!(out.is_empty());
    }

    #[test]
    fn wire_error_is_a_data_error() {
        let e: boxsync_model::Error = WireError("x".into()).into();
        assert_eq!(e.exit_code(), boxsync_model::ExitCode::DataErr);
        assert_eq!(e.to_string(), "dsync protocol error: x");
    }

    #[test]
    fn handshake_multiple_boxes_use_the_extension() {
        let h = Handshake {
            hostname: "h".into(),
            sync_type: SyncType::Full,
            backup_send: true,
            backup_recv: false,
            no_backup_overwrite: false,
            sync_boxes: vec!["INBOX".into(), "a\tb".into()],
            exclude_mailboxes: vec!["Trash".into(), "Spam*".into()],
            lock_timeout: 0,
            ..plain_handshake()
        };
        let line = encoded(&Record::Handshake(Box::new(h.clone())));
        let mut want = b"Hh\t\x02\tINBOX\t\x02\tf\t\x02\t\x02\tTrash\x01tSpam*\t\t\x02\t".to_vec();
        want.extend_from_slice(b"\t\x02".repeat(14).as_slice());
        want.extend_from_slice(b"\tINBOX\x01ta\x011tb\n");
        assert_eq!(
            line.escape_ascii().to_string(),
            want.escape_ascii().to_string()
        );
        let (d, _) = decode_ours(line.strip_suffix(b"\n").unwrap()).unwrap();
        let Decoded::Record(Record::Handshake(back)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(*back, h);
    }

    fn plain_handshake() -> Handshake {
        Handshake::plain("h".into())
    }

    #[test]
    fn handshake_filters_use_dovecots_keys_in_schema_order() {
        let h = Handshake {
            sync_box_guid: Guid128::parse_hex("0123456789abcdef0123456789ABCDEF").unwrap(),
            no_mail_sync: true,
            sync_since_timestamp: 1_700_000_000,
            sync_until_timestamp: 1_800_000_000,
            sync_max_size: 2048,
            sync_flags: Some("-\\Seen".into()),
            alt_char: Some('+'),
            ..plain_handshake()
        };
        let line = encoded(&Record::Handshake(Box::new(h.clone())));
        let fields: Vec<&[u8]> = line
            .strip_suffix(b"\n")
            .unwrap()
            .strip_prefix(b"H")
            .unwrap()
            .split(|&b| b == b'\t')
            .collect();
        let at = |k: &str| {
            let i = HANDSHAKE.keys.iter().position(|x| *x == k).unwrap();
            String::from_utf8_lossy(fields[i]).into_owned()
        };
        assert_eq!(at("sync_box_guid"), "0123456789abcdef0123456789abcdef");
        assert_eq!(at("no_mail_sync"), "");
        assert_eq!(at("sync_since_timestamp"), "1700000000");
        assert_eq!(at("sync_until_timestamp"), "1800000000");
        assert_eq!(at("sync_max_size"), "2048");
        assert_eq!(at("sync_flags"), "-\\Seen");
        assert_eq!(at("alt_char"), "+");
        let (d, _) = decode_ours(line.strip_suffix(b"\n").unwrap()).unwrap();
        let Decoded::Record(Record::Handshake(back)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(*back, h);
    }

    /// A greeting with Dovecot's keys only (ours without the `x_` extensions), as a Dovecot
    /// peer announces them.
    fn dovecot_schemas() -> PeerSchemas {
        let mut peer = PeerSchemas::new();
        assert!(
            !peer
                .feed_line(VERSION_LINE.strip_suffix(b"\n").unwrap())
                .unwrap()
        );
        for schema in SCHEMAS {
            let mut line = vec![schema.letter];
            let keys: Vec<&str> = schema
                .keys
                .iter()
                .copied()
                .filter(|k| !k.starts_with("x_"))
                .collect();
            line.extend_from_slice(keys.join("\t").as_bytes());
            assert!(!peer.feed_line(&line).unwrap());
        }
        assert!(peer.feed_line(b".").unwrap());
        peer
    }

    #[test]
    fn the_namespace_prefix_travels_even_when_empty() {
        for prefix in [None, Some(String::new()), Some("Mail.".to_owned())] {
            let h = Handshake {
                ns_prefix: prefix.clone(),
                ..plain_handshake()
            };
            let line = encoded(&Record::Handshake(Box::new(h)));
            let (d, _) = decode_ours(line.strip_suffix(b"\n").unwrap()).unwrap();
            let Decoded::Record(Record::Handshake(back)) = d else {
                panic!("{d:?}")
            };
            assert_eq!(back.ns_prefix, prefix);
        }
    }

    #[test]
    fn dry_run_travels_in_extension_keys_and_reads_back() {
        let h = Handshake {
            dry_run: true,
            ..plain_handshake()
        };
        let line = encoded(&Record::Handshake(Box::new(h.clone())));
        let fields: Vec<&[u8]> = line
            .strip_suffix(b"\n")
            .unwrap()
            .strip_prefix(b"H")
            .unwrap()
            .split(|&b| b == b'\t')
            .collect();
        assert_eq!(
            fields.len(),
            HANDSHAKE.keys.len(),
            "x_dry_run is the last key"
        );
        assert_eq!(
            fields.last(),
            Some(&&b""[..]),
            "a flag is present and empty"
        );
        let (d, _) = decode_ours(line.strip_suffix(b"\n").unwrap()).unwrap();
        let Decoded::Record(Record::Handshake(back)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(*back, h);

        // A report with lines, one without (nothing would change), and none at all.
        for dry_run in [
            Some(DryRunReport {
                store: "maildir:/srv/a b (dry run)".into(),
                lines: vec![
                    "would create mailbox Work\tTab".into(),
                    "would save 2 messages (1.0 KiB) into INBOX".into(),
                ],
            }),
            Some(DryRunReport {
                store: "imap://alice@h:143 (dry run)".into(),
                lines: Vec::new(),
            }),
            None,
        ] {
            let fin = Finish {
                error: Some("e".into()),
                dry_run,
                ..Finish::default()
            };
            let line = encoded(&Record::Finish(fin.clone()));
            assert_eq!(line.starts_with(b"Fe\t\x02\t\x02\t"), fin.dry_run.is_some());
            let (d, _) = decode_ours(line.strip_suffix(b"\n").unwrap()).unwrap();
            let Decoded::Record(Record::Finish(back)) = d else {
                panic!("{d:?}")
            };
            assert_eq!(back, fin);
        }
        let known = encoded(&Record::Finish(Finish {
            dry_run: Some(DryRunReport {
                store: "s".into(),
                lines: vec!["a".into(), "b\tc".into()],
            }),
            ..Finish::default()
        }));
        assert_eq!(
            known.escape_ascii().to_string(),
            b"F\x02\t\x02\t\x02\ts\ta\x01tb\x011tc\n"
                .escape_ascii()
                .to_string()
        );
    }

    #[test]
    fn dovecot_records_without_the_dry_run_keys_decode() {
        let peer = dovecot_schemas();
        let (d, _) = decode(&peer, b"Hdovecot\t\x02\t\x02\t\x02\tc").unwrap();
        let Decoded::Record(Record::Handshake(h)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(h.hostname, "dovecot");
        assert!(!h.dry_run);
        let (d, _) = decode(&peer, b"Fsomething failed\t1").unwrap();
        let Decoded::Record(Record::Finish(f)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(f.error.as_deref(), Some("something failed"));
        assert_eq!(f.dry_run, None);
        // A Dovecot peer has no place for our keys: a record with more values than its
        // schema has keys is refused, so it never mistakes one for something else.
        assert!(decode(&peer, b"Fe\t1\t\x02\ts").is_err());
    }

    #[test]
    fn handshake_without_filters_reads_back_without_filters() {
        let h = plain_handshake();
        let line = encoded(&Record::Handshake(Box::new(h.clone())));
        let (d, _) = decode_ours(line.strip_suffix(b"\n").unwrap()).unwrap();
        let Decoded::Record(Record::Handshake(back)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(*back, h);
    }
}
