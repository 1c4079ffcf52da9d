//! The mbox file format: a streaming reader, a writer, `From ` lines and the metadata headers
//! Dovecot and mutt keep in each message. Pure functions over bytes; no store logic.
//!
//! # Separators (what the reader accepts)
//!
//! - The file must start with a line beginning `From ` (an empty file holds no messages; any
//!   other first line is an error: not an mbox).
//! - mboxrd / mboxo: a later line beginning `From ` (exactly those five bytes) is a separator
//!   only when the line before it is empty (`\n` or `\r\n`). A `From ` line after a non-empty
//!   line is part of the body. That empty line belongs to the separator, not to the message
//!   before it; at the end of the file, one final empty line is likewise dropped.
//! - mboxcl2: the header block runs to the first empty line; its `Content-Length:` gives the
//!   body length exactly. When the bytes after that body are not an empty line followed by a
//!   `From ` line or the end of the file, the length is wrong and the reader falls back to the
//!   mboxrd separator rule (without unquoting) for that message.
//!
//! # Quoting
//!
//! - mboxrd: the writer adds one `>` to every line matching `^>*From `, the reader removes one
//!   from every line matching `^>+From `. Byte-exact for any body.
//! - mboxo: only `^From ` is quoted and only `^>From ` unquoted, so a body line that really
//!   began `>From ` comes back as `From ` (the format is lossy; read only, or write knowingly).
//! - mboxcl2: no quoting.
//!
//! # Messages that do not end in a newline (the writer's convention)
//!
//! The writer always ends a message with `\n` + an empty line, so that every reader finds the
//! next separator. For mboxrd/mboxo, a non-empty body that does not end in `\n` gets one added,
//! and the writer records that by putting the line `X-Boxsync-Eol: none` first in the message;
//! the reader removes that line and the added `\n`. A body that itself begins with
//! `X-Boxsync-Eol: ` (and does end in `\n`) gets `X-Boxsync-Eol: lf` first, which the reader
//! just removes, so the convention is unambiguous: `read(write(m)) == m` for every `m`, and
//! `write(read(f)) == f` for every file this writer wrote. Dovecot and mutt read such a message
//! as the same message with one extra (unknown, harmless) header and a final newline — which
//! is what they do themselves when they store a message lacking one. mboxcl2 needs no marker:
//! `Content-Length` gives the exact end, so the writer sets it.

use std::io::{self, BufRead, Read, Write};

use boxsync_model::{Flags, Keywords};

/// Which variant of mbox a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `>*From ` quoting, reversible. What boxsync writes.
    Mboxrd,
    /// `From ` quoting only, lossy.
    Mboxo,
    /// `Content-Length:` delimits the body, no quoting.
    Mboxcl2,
    /// What boxsync reads a mail folder as: a message whose `Content-Length:` is exact is
    /// taken as it stands (Dovecot writes so, without quoting); any other one by the mboxrd
    /// rule (what boxsync, and mostly mutt and MDAs, write).
    Auto,
}

/// First line of a message whose original did not end in a newline.
const EOL_NONE: &[u8] = b"X-Boxsync-Eol: none\n";
/// First line of a message whose original began with [`EOL_PREFIX`] itself.
const EOL_LF: &[u8] = b"X-Boxsync-Eol: lf\n";
const EOL_PREFIX: &[u8] = b"X-Boxsync-Eol: ";

/// One message as read from an mbox file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MboxMessage {
    /// The separator line without its final `\n` (a `\r` before it is kept).
    pub from_line: Vec<u8>,
    /// Byte offset of the separator line in the file.
    pub offset: u64,
    /// The message, unquoted, without the separator's empty line.
    pub body: Vec<u8>,
    /// The file ended inside this message (no empty line after it, or a `Content-Length`
    /// reaching past the end): `body` is what was there.
    pub truncated: bool,
    /// `Content-Length:` delimited the body exactly (mboxcl2, or Dovecot's way): write it
    /// back the same way, unquoted, so that readers see the same bytes.
    pub exact_length: bool,
}

/// Reads messages one at a time from an mbox file; only the current message is in memory.
pub struct MboxReader<R> {
    inner: R,
    flavor: Flavor,
    offset: u64,
    started: bool,
    done: bool,
    /// The separator line already read for the next message, with its offset.
    pending: Option<(Vec<u8>, u64)>,
    /// Bytes read ahead and given back (a `Content-Length:` that ran past the end of the
    /// file), read again before `inner`.
    pushback: std::collections::VecDeque<u8>,
    /// Leave bodies as they are in the file (see [`MboxReader::headers_only`]).
    raw: bool,
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\n" || line == b"\r\n"
}

impl<R: BufRead> MboxReader<R> {
    pub fn new(inner: R, flavor: Flavor) -> Self {
        MboxReader {
            inner,
            flavor,
            offset: 0,
            started: false,
            done: false,
            pending: None,
            pushback: std::collections::VecDeque::new(),
            raw: false,
        }
    }

    /// For a reader that wants only the header fields of each message: bodies are returned
    /// as they are in the file, without undoing the quoting of envelope lines or the
    /// no-final-newline marker (neither touches a header field that parse_meta or a header
    /// hash reads), which saves a pass over every byte.
    pub fn headers_only(mut self) -> Self {
        self.raw = true;
        self
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn read_line(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if !self.pushback.is_empty() {
            let n = self
                .pushback
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.pushback.len(), |i| i + 1);
            buf.extend(self.pushback.drain(..n));
            if buf.last() == Some(&b'\n') || !self.pushback.is_empty() {
                self.offset += n as u64;
                return Ok(n);
            }
            // The given-back bytes ended inside a line: the rest of it is in `inner`.
            let more = self.inner.read_until(b'\n', buf)?;
            self.offset += (n + more) as u64;
            return Ok(n + more);
        }
        let n = self.inner.read_until(b'\n', buf)?;
        self.offset += n as u64;
        Ok(n)
    }

    /// The next message, or `None` at the end of the file.
    pub fn next_message(&mut self) -> io::Result<Option<MboxMessage>> {
        if !self.started {
            self.started = true;
            let start = self.offset;
            let mut line = Vec::new();
            if self.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            if !line.starts_with(b"From ") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not an mbox file: the first line does not start with \"From \"",
                ));
            }
            self.pending = Some((line, start));
        }
        let Some((mut from_line, offset)) = self.pending.take() else {
            return Ok(None);
        };
        if from_line.last() == Some(&b'\n') {
            from_line.pop();
        }
        let mut body = Vec::new();
        let (truncated, exact_length) = match self.flavor {
            Flavor::Mboxcl2 | Flavor::Auto => self.read_cl2(&mut body)?,
            _ => (self.scan(&mut body, None)?, false),
        };
        let body = match self.flavor {
            Flavor::Mboxcl2 => body,
            Flavor::Auto if exact_length => body,
            _ if self.raw => body,
            Flavor::Auto => strip_marker(unquote(body, Flavor::Mboxrd)),
            f => strip_marker(unquote(body, f)),
        };
        Ok(Some(MboxMessage {
            from_line,
            offset,
            body,
            truncated,
            exact_length,
        }))
    }

    /// Appends lines to `body` up to the next separator (an empty line, then `From `).
    /// `blank_at`: where an empty line that ends `body` already begins. Returns whether the
    /// file ended without the separator's empty line.
    fn scan(&mut self, body: &mut Vec<u8>, mut blank_at: Option<usize>) -> io::Result<bool> {
        loop {
            let start = self.offset;
            let at = body.len();
            if self.read_line(body)? == 0 {
                // End of file: a final empty line is the separator's.
                return Ok(match blank_at {
                    Some(b) => {
                        body.truncate(b);
                        false
                    }
                    None => true,
                });
            }
            let line = &body[at..];
            if let Some(b) = blank_at
                && is_from_line(line)
            {
                self.pending = Some((line.to_vec(), start));
                body.truncate(b);
                return Ok(false);
            }
            blank_at = is_blank(line).then_some(at);
        }
    }

    /// Reads a message delimited by its `Content-Length:` when that is exact. Returns whether
    /// the file ended inside the message, and whether the length was exact.
    fn read_cl2(&mut self, body: &mut Vec<u8>) -> io::Result<(bool, bool)> {
        // The header block, up to and including the empty line.
        loop {
            let at = body.len();
            if self.read_line(body)? == 0 {
                return Ok((true, false));
            }
            if is_blank(&body[at..]) {
                break;
            }
        }
        let Some(len) = content_length(body) else {
            let blank = body.len() - 1 - usize::from(body.ends_with(b"\r\n"));
            return Ok((self.scan(body, Some(blank))?, false));
        };
        let header_end = body.len();
        let got = if self.pushback.is_empty() {
            (&mut self.inner).take(len).read_to_end(body)?
        } else {
            let mut got = 0;
            while (got as u64) < len {
                let n = self.read_line(body)?;
                if n == 0 {
                    break;
                }
                got += n;
                self.offset -= n as u64;
            }
            got
        };
        self.offset += got as u64;
        if (got as u64) < len {
            // A length past the end of the file does not hold: read the bytes again by the
            // separator rule rather than swallow the messages that follow.
            let rest: Vec<u8> = body.drain(header_end..).collect();
            self.offset -= rest.len() as u64;
            for &b in rest.iter().rev() {
                self.pushback.push_front(b);
            }
            let blank = header_end - 1 - usize::from(body[..header_end].ends_with(b"\r\n"));
            return Ok((self.scan(body, Some(blank))?, false));
        }
        if (got as u64) > len {
            // Whole lines were read from given-back bytes: return what is past the length.
            let extra: Vec<u8> = body.drain(header_end + len as usize..).collect();
            self.offset -= extra.len() as u64;
            for &b in extra.iter().rev() {
                self.pushback.push_front(b);
            }
        }
        let body_end = body.len();
        if self.read_line(body)? == 0 {
            return Ok((false, true));
        }
        if is_blank(&body[body_end..]) {
            let next = body.len();
            let next_start = self.offset;
            if self.read_line(body)? == 0 {
                body.truncate(body_end);
                return Ok((false, true));
            }
            if is_from_line(&body[next..]) {
                self.pending = Some((body[next..].to_vec(), next_start));
                body.truncate(body_end);
                return Ok((false, true));
            }
            let blank = is_blank(&body[next..]).then_some(next);
            return Ok((self.scan(body, blank)?, false));
        }
        // Wrong Content-Length: carry on with the mboxrd rule.
        let blank = is_blank(&body[body_end..]).then_some(body_end);
        Ok((self.scan(body, blank)?, false))
    }
}

impl<R: BufRead> Iterator for MboxReader<R> {
    type Item = io::Result<MboxMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_message().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

/// The `Content-Length:` of a header block, when present and a number.
fn content_length(msg: &[u8]) -> Option<u64> {
    let (fields, _) = header_fields(msg);
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(b"Content-Length"))
        .and_then(|f| std::str::from_utf8(&f.value).ok()?.trim().parse().ok())
}

/// Whether a line is an envelope line that can separate messages: `From `, a sender and a
/// date, as Dovecot and mutt require. `From here on, …` in a body is not one.
pub fn is_from_line(line: &[u8]) -> bool {
    line.starts_with(b"From ") && parse_from_line(line).is_some()
}

/// How many `>` quote a line that would otherwise be an envelope line: only such lines are
/// quoted and unquoted, so that every other byte of the mail stays as Dovecot and mutt (who
/// never unquote) show it, and reading undoes writing exactly.
fn quote_level(line: &[u8]) -> Option<usize> {
    let n = line.iter().take_while(|&&b| b == b'>').count();
    is_from_line(&line[n..]).then_some(n)
}

fn unquote(body: Vec<u8>, flavor: Flavor) -> Vec<u8> {
    // Only a line starting `>` can change, and only when `>From ` occurs at all: most mail
    // is returned as it is, without a pass over its lines.
    if !body.windows(6).any(|w| w == b">From ") {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        let drop = match (flavor, quote_level(line)) {
            (Flavor::Mboxrd, Some(n)) => n >= 1,
            (Flavor::Mboxo, Some(n)) => n == 1,
            _ => false,
        };
        out.extend_from_slice(if drop { &line[1..] } else { line });
    }
    out
}

fn strip_marker(mut body: Vec<u8>) -> Vec<u8> {
    if body.starts_with(EOL_NONE) {
        body.drain(..EOL_NONE.len());
        if body.last() == Some(&b'\n') {
            body.pop();
        }
    } else if body.starts_with(EOL_LF) {
        body.drain(..EOL_LF.len());
    }
    body
}

/// Writes one message: `from_line` (without line end; must start with `From `), the body
/// (quoted per `flavor`; for mboxcl2 with `Content-Length:` set), and the separator's empty
/// line. Returns the bytes written.
pub fn write_message(
    w: &mut impl Write,
    from_line: &[u8],
    body: &[u8],
    flavor: Flavor,
) -> io::Result<u64> {
    if !from_line.starts_with(b"From ") || from_line.contains(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an mbox separator must be one line starting with \"From \"",
        ));
    }
    // Auto reads what mboxrd writes.
    let flavor = if flavor == Flavor::Auto {
        Flavor::Mboxrd
    } else {
        flavor
    };
    let mut n = from_line.len() as u64 + 1;
    w.write_all(from_line)?;
    w.write_all(b"\n")?;
    match flavor {
        Flavor::Mboxcl2 => {
            let (_, end) = header_fields(body);
            let Some(body_start) = blank_line_end(body, end) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "mboxcl2 needs a message with a header block ending in an empty line",
                ));
            };
            let len = (body.len() - body_start).to_string();
            let out = set_headers(body, &[(&["Content-Length"], Some(len))]);
            w.write_all(&out)?;
            n += out.len() as u64;
        }
        Flavor::Mboxrd | Flavor::Mboxo | Flavor::Auto => {
            let marker = if !body.is_empty() && !body.ends_with(b"\n") {
                EOL_NONE
            } else if body.starts_with(EOL_PREFIX) {
                EOL_LF
            } else {
                b""
            };
            w.write_all(marker)?;
            n += marker.len() as u64;
            for line in body.split_inclusive(|&b| b == b'\n') {
                let quote = matches!(
                    (flavor, quote_level(line)),
                    (Flavor::Mboxrd, Some(_)) | (Flavor::Mboxo, Some(0))
                );
                if quote {
                    w.write_all(b">")?;
                    n += 1;
                }
                w.write_all(line)?;
                n += line.len() as u64;
            }
            if marker == EOL_NONE {
                w.write_all(b"\n")?;
                n += 1;
            }
        }
    }
    w.write_all(b"\n")?;
    Ok(n + 1)
}

// ---- From lines ----

const WDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The offset of local time from UTC at `t`, in seconds (the `TZ` setting, as ctime(3) uses).
pub fn local_offset(t: i64) -> i64 {
    unsafe extern "C" {
        /// POSIX; the libc crate does not bind it.
        fn tzset();
    }
    static TZSET: std::sync::Once = std::sync::Once::new();
    // SAFETY: tzset only reads the environment; run once, before any localtime_r.
    TZSET.call_once(|| unsafe { tzset() });
    let t = t as libc::time_t;
    // SAFETY: an all-zero tm is valid, and localtime_r writes only into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return 0;
    }
    tm.tm_gmtoff
}

/// `From <sender> <asctime in local time>`, e.g. `From MAILER-DAEMON Fri Mar  1 09:00:00 2024`,
/// as Dovecot, mutt and MDAs write it. An empty sender becomes `MAILER-DAEMON`; white space in
/// it becomes `_`.
pub fn from_line(sender: &str, received: i64) -> String {
    let sender: String = if sender.is_empty() {
        "MAILER-DAEMON".into()
    } else {
        sender
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect()
    };
    let local = received + local_offset(received);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "From {sender} {} {} {d:>2} {:02}:{:02}:{:02} {y}",
        WDAYS[(days + 4).rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn month_of(tok: &str) -> Option<i64> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(tok))
        .map(|i| i as i64 + 1)
}

/// Parses a `From ` line into the sender and the time (seconds since the epoch). Accepts any
/// run of spaces, `HH:MM` or `HH:MM:SS`, a numeric zone (`+0100`, applied) or a zone name
/// (ignored; the time is then local time, as ctime(3) writes it) before or after the year, and two-digit years
/// (`70`–`99` → 19xx, else 20xx). The sender is everything between `From ` and the weekday.
pub fn parse_from_line(line: &[u8]) -> Option<(String, i64)> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = std::str::from_utf8(line.strip_prefix(b"From ")?).ok()?;
    let toks: Vec<&str> = rest.split_whitespace().collect();
    let i = (0..toks.len().saturating_sub(1)).find(|&i| {
        WDAYS.iter().any(|w| w.eq_ignore_ascii_case(toks[i])) && month_of(toks[i + 1]).is_some()
    })?;
    let sender = toks[..i].join(" ");
    let month = month_of(toks[i + 1])?;
    let day: i64 = toks
        .get(i + 2)?
        .parse()
        .ok()
        .filter(|d| (1..=31).contains(d))?;
    let mut hms = toks.get(i + 3)?.split(':');
    let h: i64 = hms.next()?.parse().ok().filter(|h| (0..24).contains(h))?;
    let mi: i64 = hms.next()?.parse().ok().filter(|m| (0..60).contains(m))?;
    let s: i64 = match hms.next() {
        Some(s) => s.parse().ok().filter(|s| (0..=60).contains(s))?,
        None => 0,
    };
    if hms.next().is_some() {
        return None;
    }
    let mut year = None;
    let mut zone = None;
    for t in toks.iter().skip(i + 4) {
        let b = t.as_bytes();
        if (b[0] == b'+' || b[0] == b'-') && b.len() == 5 && b[1..].iter().all(u8::is_ascii_digit) {
            let v: i64 = t[1..].parse().ok()?;
            let off = (v / 100) * 3600 + (v % 100) * 60;
            zone = Some(if b[0] == b'-' { -off } else { off });
        } else if year.is_none() && b.iter().all(u8::is_ascii_digit) {
            let y: i64 = t.parse().ok()?;
            year = Some(match b.len() {
                2 if y >= 70 => 1900 + y,
                2 => 2000 + y,
                4 => y,
                _ => return None,
            });
        }
    }
    let days = days_from_civil(year?, month, day);
    let as_utc = days * 86_400 + h * 3600 + mi * 60 + s;
    let zone = zone.unwrap_or_else(|| {
        // The offset at the instant meant, which the offset at the UTC reading finds but for
        // the hour around a change of daylight saving time.
        let guess = local_offset(as_utc);
        local_offset(as_utc - guess)
    });
    Some((sender, as_utc - zone))
}

// ---- metadata headers ----

/// `X-IMAPbase:` of the first message: the mailbox's UIDVALIDITY, UIDNEXT and keyword list
/// (the file holds the last UID given, UIDNEXT − 1, as Dovecot and UW-IMAP write it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImapBase {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub keywords: Vec<String>,
}

/// The metadata Dovecot and mutt keep in a message's headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MboxMeta {
    /// `X-IMAPbase:` (or `X-IMAP:`), only meaningful in the first message.
    pub imapbase: Option<ImapBase>,
    /// `X-UID:`
    pub uid: Option<u32>,
    /// `Status:` R → \Seen; `X-Status:` A \Answered, D \Deleted, F \Flagged, T \Draft.
    pub flags: Flags,
    /// `Status:` without O: the message is \Recent (new).
    pub recent: bool,
    /// `X-Keywords:`, separated by spaces or commas.
    pub keywords: Keywords,
}

const X_STATUS: [(u8, Flags); 4] = [
    (b'A', Flags::ANSWERED),
    (b'D', Flags::DELETED),
    (b'F', Flags::FLAGGED),
    (b'T', Flags::DRAFT),
];

struct Field<'a> {
    start: usize,
    end: usize,
    name: &'a [u8],
    /// Unfolded value, without the line ends.
    value: Vec<u8>,
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The header fields of a message and where its header block ends: at the empty line, at the
/// first line that is not a header, or — without either — at the end of the message (or the
/// start of a final line without `\n`).
fn header_fields(msg: &[u8]) -> (Vec<Field<'_>>, usize) {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let end = msg[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |i| pos + i + 1);
        let line = &msg[pos..end];
        if is_blank(line) || !line.ends_with(b"\n") {
            return (fields, pos);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match fields.last_mut() {
                Some(f) => {
                    f.end = end;
                    f.value.extend_from_slice(trim_eol(line));
                }
                None => return (fields, pos),
            }
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = &line[..colon];
            if name.is_empty() || name.iter().any(|&b| b <= b' ' || b == 0x7f) {
                return (fields, pos);
            }
            fields.push(Field {
                start: pos,
                end,
                name,
                value: trim_eol(&line[colon + 1..]).to_vec(),
            });
        } else {
            return (fields, pos);
        }
        pos = end;
    }
    (fields, pos)
}

/// Where the body starts when `at` (from [`header_fields`]) is an empty line.
fn blank_line_end(msg: &[u8], at: usize) -> Option<usize> {
    let rest = &msg[at..];
    if rest.starts_with(b"\n") {
        Some(at + 1)
    } else if rest.starts_with(b"\r\n") {
        Some(at + 2)
    } else {
        None
    }
}

fn words(value: &[u8]) -> impl Iterator<Item = String> + '_ {
    value
        .split(|&b| b == b' ' || b == b'\t' || b == b',')
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
}

/// Parses the metadata headers of a message (its header block only).
pub fn parse_meta(msg: &[u8]) -> MboxMeta {
    let mut meta = MboxMeta {
        recent: true,
        ..MboxMeta::default()
    };
    let (fields, _) = header_fields(msg);
    for f in &fields {
        let name = f.name;
        if name.eq_ignore_ascii_case(b"X-IMAPbase") || name.eq_ignore_ascii_case(b"X-IMAP") {
            let mut w = words(&f.value);
            let (Some(v), Some(n)) = (w.next(), w.next()) else {
                continue;
            };
            // The second number is the last UID given (UW-IMAP's and Dovecot's reading).
            if let (Ok(uidvalidity), Ok(last)) = (v.parse(), n.parse::<u32>()) {
                meta.imapbase.get_or_insert(ImapBase {
                    uidvalidity,
                    uidnext: last.saturating_add(1),
                    keywords: w.collect(),
                });
            }
        } else if name.eq_ignore_ascii_case(b"X-UID") {
            if meta.uid.is_none() {
                meta.uid = words(&f.value).next().and_then(|w| w.parse().ok());
            }
        } else if name.eq_ignore_ascii_case(b"Status") {
            for &b in &f.value {
                match b {
                    b'R' => meta.flags = meta.flags.union(Flags::SEEN),
                    b'O' => meta.recent = false,
                    _ => {}
                }
            }
        } else if name.eq_ignore_ascii_case(b"X-Status") {
            for &b in &f.value {
                if let Some((_, fl)) = X_STATUS.iter().find(|(c, _)| *c == b) {
                    meta.flags = meta.flags.union(*fl);
                }
            }
        } else if name.eq_ignore_ascii_case(b"X-Keywords") {
            meta.keywords.extend(words(&f.value));
        }
    }
    meta
}

/// Sets header fields: for each `(names, value)`, the first field with one of `names` is
/// replaced by `name: value` (keeping that field's spelling of the name), later ones removed;
/// with `None` all are removed; missing ones are added, in the order given with the first
/// name, where the header block ends. Every other byte is kept as it was.
fn set_headers(msg: &[u8], slots: &[(&[&str], Option<String>)]) -> Vec<u8> {
    let (fields, end) = header_fields(msg);
    let eol: &[u8] = if msg[end..].starts_with(b"\r\n")
        || fields
            .first()
            .is_some_and(|f| msg[..f.end].ends_with(b"\r\n"))
    {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut done = vec![false; slots.len()];
    let mut out = Vec::with_capacity(msg.len() + 64);
    let mut cursor = 0;
    for f in &fields {
        let Some(i) = slots.iter().position(|(names, _)| {
            names
                .iter()
                .any(|n| f.name.eq_ignore_ascii_case(n.as_bytes()))
        }) else {
            continue;
        };
        out.extend_from_slice(&msg[cursor..f.start]);
        cursor = f.end;
        if let (false, Some(v)) = (done[i], &slots[i].1) {
            out.extend_from_slice(f.name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(eol);
        }
        done[i] = true;
    }
    out.extend_from_slice(&msg[cursor..end]);
    for (i, (names, value)) in slots.iter().enumerate() {
        if let (false, Some(v)) = (done[i], value) {
            out.extend_from_slice(names[0].as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(eol);
        }
    }
    out.extend_from_slice(&msg[end..]);
    out
}

/// The header fields a mail folder keeps for itself, which readers of the mail do not see
/// (the fields Dovecot hides from IMAP clients in an mbox).
pub const HIDDEN_HEADERS: [&str; 9] = [
    "Content-Length",
    "Status",
    "X-IMAP",
    "X-IMAPbase",
    "X-Keywords",
    "X-Message-Flag",
    "X-Status",
    "X-UID",
    "X-UIDL",
];

/// First line of a message that itself begins with white space: without it, the metadata
/// headers put before that line would take it for their continuation.
const LEAD: &[u8] = b"X-Boxsync-Lead: ws\n";

/// The message as a reader of the mail sees it: without [`HIDDEN_HEADERS`].
pub fn strip_hidden(msg: &[u8]) -> Vec<u8> {
    let slots: Vec<(&[&str], Option<String>)> = HIDDEN_HEADERS
        .iter()
        .map(|h| (std::slice::from_ref(h), None))
        .collect();
    let mut out = set_headers(msg, &slots);
    if out.starts_with(LEAD) {
        out.drain(..LEAD.len());
    }
    out
}

/// The `X-UIDL:` of a message (its POP3 UIDL), when it has one.
pub fn pop3_uidl(msg: &[u8]) -> Option<String> {
    let (fields, _) = header_fields(msg);
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(b"X-UIDL"))
        .map(|f| String::from_utf8_lossy(&f.value).trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Rewrites a message's metadata headers to say `meta` (`X-IMAPbase`, `X-UID`, `Status`,
/// `X-Status`, `X-Keywords`; one that would be empty is removed), leaving every other byte.
pub fn rewrite_meta(msg: &[u8], meta: &MboxMeta) -> Vec<u8> {
    let imapbase = meta.imapbase.as_ref().map(|b| {
        let mut s = format!("{} {:010}", b.uidvalidity, b.uidnext.saturating_sub(1));
        for k in &b.keywords {
            s.push(' ');
            s.push_str(k);
        }
        s
    });
    let mut status = String::new();
    if meta.flags.contains(Flags::SEEN) {
        status.push('R');
    }
    if !meta.recent {
        status.push('O');
    }
    let x_status: String = X_STATUS
        .iter()
        .filter(|(_, f)| meta.flags.contains(*f))
        .map(|(c, _)| char::from(*c))
        .collect();
    let keywords = meta.keywords.iter().cloned().collect::<Vec<_>>().join(" ");
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let led;
    let msg = if msg.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        led = [LEAD, msg].concat();
        &led[..]
    } else {
        msg
    };
    set_headers(
        msg,
        &[
            (&["X-IMAPbase", "X-IMAP"], imapbase),
            (&["X-UID"], meta.uid.map(|u| u.to_string())),
            (&["Status"], nonempty(status)),
            (&["X-Status"], nonempty(x_status)),
            (&["X-Keywords"], nonempty(keywords)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write_all(msgs: &[(Vec<u8>, Vec<u8>)], flavor: Flavor) -> Vec<u8> {
        let mut out = Vec::new();
        for (from, body) in msgs {
            let n = write_message(&mut out, from, body, flavor).unwrap();
            assert!(n > 0);
        }
        out
    }

    fn read_all(file: &[u8], flavor: Flavor) -> Vec<MboxMessage> {
        MboxReader::new(file, flavor)
            .collect::<io::Result<Vec<_>>>()
            .unwrap()
    }

    fn from(i: usize) -> Vec<u8> {
        from_line("a@b", 1_700_000_000 + i as i64).into_bytes()
    }

    #[test]
    fn separator_rules() {
        let file = b"From a Fri Mar  1 09:00:00 2024\nSubject: x\n\nbody\nFrom inside\n\n>From q Fri Mar  1 09:00:00 2024\n\nFrom b Fri Mar  1 09:00:01 2024\nhi\n\n";
        let m = read_all(file, Flavor::Mboxrd);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].body,
            b"Subject: x\n\nbody\nFrom inside\n\nFrom q Fri Mar  1 09:00:00 2024\n"
        );
        assert_eq!(m[0].offset, 0);
        assert_eq!(&file[m[1].offset as usize..][..6], b"From b");
        assert_eq!(m[1].body, b"hi\n");
        assert!(!m[1].truncated);
        // mboxo keeps >>From as >From; neither touches a line that is no envelope line.
        let file = b"From a x\n>>From a Fri Mar  1 09:00:00 2024\n>From b Fri Mar  1 09:00:00 2024\n>From here\n\n";
        assert_eq!(
            read_all(file, Flavor::Mboxo)[0].body,
            b">>From a Fri Mar  1 09:00:00 2024\nFrom b Fri Mar  1 09:00:00 2024\n>From here\n"
        );
        assert_eq!(
            read_all(file, Flavor::Mboxrd)[0].body,
            b">From a Fri Mar  1 09:00:00 2024\nFrom b Fri Mar  1 09:00:00 2024\n>From here\n"
        );
    }

    #[test]
    fn not_an_mbox_and_empty() {
        assert!(read_all(b"", Flavor::Mboxrd).is_empty());
        let mut r = MboxReader::new(&b"Subject: hi\n\nx\n"[..], Flavor::Mboxrd);
        assert_eq!(
            r.next().unwrap().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(r.next().is_none());
    }

    #[test]
    fn no_final_newline_and_markers() {
        let msgs = vec![
            (from(0), b"abc".to_vec()),
            (from(1), b"".to_vec()),
            (from(2), b"X-Boxsync-Eol: none\n".to_vec()),
            (from(3), b"X-Boxsync-Eol: lf".to_vec()),
            (from(4), b"\r\n".to_vec()),
            (from(5), b"From x".to_vec()),
        ];
        let file = write_all(&msgs, Flavor::Mboxrd);
        let got = read_all(&file, Flavor::Mboxrd);
        let got: Vec<_> = got.into_iter().map(|m| (m.from_line, m.body)).collect();
        assert_eq!(got, msgs);
    }

    #[test]
    fn mboxcl2_content_length() {
        let body = b"Subject: a\n\nline\n\nFrom fake\n\nno newline".to_vec();
        let mut file = Vec::new();
        write_message(&mut file, &from(0), &body, Flavor::Mboxcl2).unwrap();
        write_message(&mut file, &from(1), b"A: b\r\n\r\n", Flavor::Mboxcl2).unwrap();
        let m = read_all(&file, Flavor::Mboxcl2);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].body,
            b"Subject: a\nContent-Length: 27\n\nline\n\nFrom fake\n\nno newline"
        );
        assert_eq!(m[1].body, b"A: b\r\nContent-Length: 0\r\n\r\n");
        // Writing what was read gives the same file.
        let again: Vec<_> = m
            .iter()
            .map(|m| (m.from_line.clone(), m.body.clone()))
            .collect();
        assert_eq!(write_all(&again, Flavor::Mboxcl2), file);
        // A wrong Content-Length falls back to the separator rule.
        let file = b"From a x\nContent-Length: 2\n\nabc\ndef\n\nFrom b Fri Mar  1 09:00:01 2024\nC: d\n\nx\n\n";
        let m = read_all(file, Flavor::Mboxcl2);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].body, b"Content-Length: 2\n\nabc\ndef\n");
        assert_eq!(m[1].body, b"C: d\n\nx\n");
        // Content-Length past the end: truncated.
        let m = read_all(b"From a x\nContent-Length: 99\n\nabc\n", Flavor::Mboxcl2);
        assert!(m[0].truncated);
        assert_eq!(m[0].body, b"Content-Length: 99\n\nabc\n");
    }

    #[test]
    fn truncated_anywhere() {
        let msgs: Vec<_> = (0..4)
            .map(|i| {
                (
                    from(i),
                    format!("S: {i}\n\nFrom x\n\nFrom y\nbody {i}").into_bytes(),
                )
            })
            .collect();
        for flavor in [Flavor::Mboxrd, Flavor::Mboxcl2, Flavor::Mboxo] {
            let file = write_all(&msgs, flavor);
            for cut in 1..5 {
                assert!(
                    MboxReader::new(&file[..cut], flavor)
                        .next()
                        .unwrap()
                        .is_err()
                );
            }
            for cut in (0..file.len()).filter(|&c| c == 0 || c >= 5) {
                let got = read_all(&file[..cut], flavor);
                // mboxcl2 does not quote: once a cut makes the last length wrong, the
                // separator rule may find `From ` lines in its body.
                assert!(flavor == Flavor::Mboxcl2 || got.len() <= msgs.len());
                // All but the last message read are whole (a cut just after an empty line
                // cannot be told from the end of a message).
                for (g, m) in got.iter().zip(&msgs).take(got.len().saturating_sub(1)) {
                    assert!(!g.truncated);
                    if flavor != Flavor::Mboxcl2 {
                        assert_eq!(g.body, m.1, "cut {cut}");
                    }
                }
            }
            let whole = read_all(&file, flavor);
            assert!(whole.iter().all(|m| !m.truncated));
        }
        let m = read_all(b"From a x\nabc", Flavor::Mboxrd);
        assert!(m[0].truncated);
        assert_eq!(m[0].body, b"abc");
    }

    #[test]
    fn a_message_starting_with_white_space_keeps_its_first_line() {
        let msg = b" folded first line\nSubject: x\n\nbody\n";
        let meta = MboxMeta {
            uid: Some(3),
            ..MboxMeta::default()
        };
        let stored = rewrite_meta(msg, &meta);
        assert_eq!(parse_meta(&stored).uid, Some(3));
        assert_eq!(strip_hidden(&stored), msg.to_vec());
        // Rewritten again (a flag change), still one lead line.
        let again = rewrite_meta(&stored, &meta);
        assert_eq!(strip_hidden(&again), msg.to_vec());
    }

    #[test]
    fn only_real_envelope_lines_separate_and_are_quoted() {
        let body =
            b"S: 1\n\nFrom here on, it is body.\n\nFrom a@b Fri Mar  1 09:00:00 2024\n>From here\n";
        let mut file = Vec::new();
        write_message(&mut file, &from(0), body, Flavor::Mboxrd).unwrap();
        // Only the envelope-like line gets a `>`.
        assert!(file.windows(9).any(|w| w == b"\n>From a@"));
        assert!(file.windows(11).any(|w| w == b"\nFrom here "));
        assert!(file.windows(12).any(|w| w == b"\n>From here\n"));
        let got = read_all(&file, Flavor::Auto);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, body.to_vec());
        // Unquoted, an envelope-like body line after an empty line does separate.
        let raw = b"From a Fri Mar  1 09:00:00 2024\n\nx\n\nFrom b Fri Mar  1 09:00:00 2024\ny\n\n";
        assert_eq!(read_all(raw, Flavor::Auto).len(), 2);
        let raw = b"From a Fri Mar  1 09:00:00 2024\n\nx\n\nFrom here on\ny\n\n";
        assert_eq!(read_all(raw, Flavor::Auto).len(), 1);
    }

    #[test]
    fn x_imapbase_holds_the_last_uid_given() {
        let meta = parse_meta(b"X-IMAPbase: 1795343507 0000000002 $Label1\n\n");
        let base = meta.imapbase.unwrap();
        assert_eq!((base.uidvalidity, base.uidnext), (1795343507, 3));
        let written = rewrite_meta(
            b"S: x\n\n",
            &MboxMeta {
                imapbase: Some(ImapBase {
                    uidvalidity: 7,
                    uidnext: 5,
                    keywords: vec![],
                }),
                ..MboxMeta::default()
            },
        );
        assert!(written.starts_with(b"S: x\nX-IMAPbase: 7 0000000004\n"));
    }

    #[test]
    fn from_lines_are_in_local_time() {
        // 2024-03-01 09:30:00 UTC; whatever TZ the test runs in, the line reads back the same.
        let t = 1_709_285_400;
        let line = from_line("a@b", t);
        assert_eq!(parse_from_line(line.as_bytes()).unwrap().1, t);
        let shown = t + local_offset(t);
        let hh = shown.rem_euclid(86_400) / 3600;
        assert!(line.contains(&format!(" {hh:02}:30:00 ")), "{line}");
    }

    #[test]
    fn hidden_headers_are_stripped_and_nothing_else() {
        let msg = b"From: a\nX-UID: 4\nStatus: RO\nX-Keywords: x\n y\nSubject: s\nX-UIDL: abc\n\nX-UID: body\n";
        assert_eq!(
            strip_hidden(msg),
            b"From: a\nSubject: s\n\nX-UID: body\n".to_vec()
        );
        assert_eq!(pop3_uidl(msg).as_deref(), Some("abc"));
        assert_eq!(strip_hidden(b"no header"), b"no header".to_vec());
    }

    #[test]
    fn a_length_past_the_end_does_not_swallow_what_follows() {
        let file = b"From a x\nContent-Length: 9999\n\none\n\nFrom b Fri Mar  1 09:00:01 2024\nS: 2\n\ntwo\n\nFrom c Fri Mar  1 09:00:02 2024\n\nthree\n\n";
        for flavor in [Flavor::Mboxcl2, Flavor::Auto] {
            let got = read_all(file, flavor);
            let bodies: Vec<&[u8]> = got.iter().map(|m| m.body.as_slice()).collect();
            assert_eq!(
                bodies,
                [
                    &b"Content-Length: 9999\n\none\n"[..],
                    b"S: 2\n\ntwo\n",
                    b"\nthree\n"
                ]
            );
            assert_eq!(&file[got[1].offset as usize..][..6], b"From b");
            assert_eq!(&file[got[2].offset as usize..][..6], b"From c");
            assert!(got.iter().all(|m| !m.truncated && !m.exact_length));
        }
    }

    #[test]
    fn auto_takes_an_exact_length_as_it_stands_and_unquotes_the_rest() {
        // Dovecot's way: exact Content-Length, no quoting; then a message written by mboxrd.
        let file = b"From a x\nContent-Length: 23\n\nline\nFrom here\n>From q\n\nFrom b Fri Mar  1 09:00:01 2024\n\n>From here\n\n";
        let got = read_all(file, Flavor::Auto);
        assert_eq!(got.len(), 2);
        assert!(got[0].exact_length);
        assert_eq!(
            got[0].body,
            b"Content-Length: 23\n\nline\nFrom here\n>From q\n"
        );
        assert!(!got[1].exact_length);
        // `>From here` is no envelope line: never quoted, so never unquoted.
        assert_eq!(got[1].body, b"\n>From here\n");
    }

    #[test]
    fn from_lines() {
        let t = days_from_civil(2024, 3, 1) * 86_400 + 9 * 3600;
        assert_eq!(
            from_line("MAILER-DAEMON", t),
            "From MAILER-DAEMON Fri Mar  1 09:00:00 2024"
        );
        assert_eq!(
            from_line("", 0),
            "From MAILER-DAEMON Thu Jan  1 00:00:00 1970"
        );
        for (line, sender, secs) in [
            (
                "From MAILER-DAEMON Fri Mar  1 09:00:00 2024",
                "MAILER-DAEMON",
                t,
            ),
            ("From a@b  Fri  Mar 1 09:00:00 2024\n", "a@b", t),
            ("From a@b Fri Mar 1 10:00:00 +0100 2024\r\n", "a@b", t),
            ("From a@b Fri Mar 1 08:00:00 2024 -0100", "a@b", t),
            ("From a@b Fri Mar 1 09:00:00 CET 2024", "a@b", t),
            ("From a@b Fri Mar 1 09:00 2024", "a@b", t),
            ("From a@b Fri Mar 1 09:00:00 24", "a@b", t),
            ("From \"a b\"@c Fri Mar 1 09:00:00 2024", "\"a b\"@c", t),
        ] {
            assert_eq!(
                parse_from_line(line.as_bytes()),
                Some((sender.to_string(), secs)),
                "{line}"
            );
        }
        for bad in [
            "From a",
            "Fro a Fri Mar 1 09:00:00 2024",
            "From a Fri Mar 1 25:00 2024",
        ] {
            assert_eq!(parse_from_line(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn meta_parse_and_rewrite() {
        let msg = b"X-IMAPbase: 1700000000 0000000042 $Junk Work\nSubject: hi\nStatus: RO\nX-Status: AF\nX-Keywords: Work,\n $Junk\nX-UID: 7\n\nStatus: body\n";
        let meta = parse_meta(msg);
        assert_eq!(
            meta.imapbase,
            Some(ImapBase {
                uidvalidity: 1_700_000_000,
                // The file holds the last UID given.
                uidnext: 43,
                keywords: vec!["$Junk".into(), "Work".into()],
            })
        );
        assert_eq!(meta.uid, Some(7));
        assert_eq!(
            meta.flags,
            Flags::SEEN.union(Flags::ANSWERED).union(Flags::FLAGGED)
        );
        assert!(!meta.recent);
        assert_eq!(meta.keywords.len(), 2);
        let re = rewrite_meta(msg, &meta);
        assert_eq!(
            re,
            b"X-IMAPbase: 1700000000 0000000042 $Junk Work\nSubject: hi\nStatus: RO\nX-Status: AF\nX-Keywords: $Junk Work\nX-UID: 7\n\nStatus: body\n"
        );
        assert_eq!(rewrite_meta(&re, &meta), re);
        // Adding to a CRLF message without any: before the empty line.
        let msg = b"Subject: x\r\n\r\nbody\r\n";
        let new = MboxMeta {
            uid: Some(3),
            flags: Flags::DRAFT.union(Flags::DELETED),
            recent: true,
            ..MboxMeta::default()
        };
        let re = rewrite_meta(msg, &new);
        assert_eq!(
            re,
            b"Subject: x\r\nX-UID: 3\r\nX-Status: DT\r\n\r\nbody\r\n"
        );
        assert_eq!(parse_meta(&re), new);
        // Removing them all gives the original back.
        let none = MboxMeta {
            recent: true,
            ..MboxMeta::default()
        };
        assert_eq!(rewrite_meta(&re, &none), msg);
        assert_eq!(parse_meta(msg), none);
        // No header block: added in front, nothing else touched.
        assert_eq!(rewrite_meta(b"abc", &new), b"X-UID: 3\nX-Status: DT\nabc");
    }

    fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"From x".to_vec()),
            Just(b">From y".to_vec()),
            Just(b">>From z".to_vec()),
            Just(b"From ".to_vec()),
            Just(b"".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"X-Boxsync-Eol: none".to_vec()),
            Just(b"X-Boxsync-Eol: lf".to_vec()),
            Just(b"Subject: s".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        let sep = prop_oneof![Just(b"\n".to_vec()), Just(b"\r\n".to_vec())];
        (
            proptest::collection::vec((piece, sep), 0..8),
            proptest::collection::vec(any::<u8>(), 0..3),
        )
            .prop_map(|(lines, tail)| {
                let mut b = Vec::new();
                for (p, s) in lines {
                    b.extend(p);
                    b.extend(s);
                }
                b.extend(tail);
                b
            })
    }

    proptest! {
        #[test]
        fn mboxrd_round_trip(bodies in proptest::collection::vec(body_strategy(), 0..5)) {
            let msgs: Vec<_> = bodies.into_iter().enumerate().map(|(i, b)| (from(i), b)).collect();
            let file = write_all(&msgs, Flavor::Mboxrd);
            let got = read_all(&file, Flavor::Mboxrd);
            for m in &got {
                prop_assert!(file[m.offset as usize..].starts_with(&m.from_line));
                prop_assert!(!m.truncated);
            }
            let got: Vec<_> = got.into_iter().map(|m| (m.from_line, m.body)).collect();
            prop_assert_eq!(&got, &msgs);
            prop_assert_eq!(write_all(&got, Flavor::Mboxrd), file);
        }

        #[test]
        fn mboxcl2_round_trip(bodies in proptest::collection::vec(body_strategy(), 0..5)) {
            let msgs: Vec<_> = bodies
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    let mut m = b"H: v\n\n".to_vec();
                    m.extend(b);
                    (from(i), m)
                })
                .collect();
            let file = write_all(&msgs, Flavor::Mboxcl2);
            let got: Vec<_> = read_all(&file, Flavor::Mboxcl2)
                .into_iter()
                .map(|m| (m.from_line, m.body))
                .collect();
            prop_assert_eq!(got.len(), msgs.len());
            for ((gf, gb), (f, b)) in got.iter().zip(&msgs) {
                prop_assert_eq!(gf, f);
                // The writer added Content-Length to the header block; the body is intact.
                prop_assert!(gb.ends_with(&b[6..]));
            }
            prop_assert_eq!(write_all(&got, Flavor::Mboxcl2), file);
        }

        #[test]
        fn from_line_round_trip(secs in -2_000_000_000i64..10_000_000_000, sender in "[!-~]{1,20}") {
            let line = from_line(&sender, secs);
            prop_assert_eq!(parse_from_line(line.as_bytes()), Some((sender, secs)));
        }

        #[test]
        fn meta_round_trip(
            body in body_strategy(),
            uid in proptest::option::of(1u32..),
            flags in 0u8..32,
            recent: bool,
            kws in proptest::collection::btree_set("[A-Za-z$]{1,8}", 0..4),
            base in proptest::option::of((1u32.., 1u32.., proptest::collection::vec("[A-Za-z]{1,5}", 0..3))),
        ) {
            let mut msg = b"Subject: s\nStatus: O\nX-Keywords: old\n\n".to_vec();
            msg.extend(&body);
            let meta = MboxMeta {
                imapbase: base.map(|(uidvalidity, uidnext, keywords)| ImapBase { uidvalidity, uidnext, keywords }),
                uid,
                flags: Flags(flags),
                recent,
                keywords: kws,
            };
            let re = rewrite_meta(&msg, &meta);
            prop_assert_eq!(parse_meta(&re), meta.clone());
            prop_assert_eq!(rewrite_meta(&re, &meta), re.clone());
            prop_assert!(re.ends_with(&body));
            prop_assert!(re.starts_with(b"Subject: s\n"));
        }
    }
}
