//! `dovecot-uidlist`: a Maildir's UIDVALIDITY, next UID, mailbox GUID and the UID of every
//! file (by base name), its lock, and its atomic rewrite.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use boxsync_model::{Error, Guid128, Result};

use super::{DotLock, file_mode, line_str, numbered_lines, read_optional, replace_via_tmp};

pub const FILE_NAME: &str = "dovecot-uidlist";
pub const LOCK_NAME: &str = "dovecot-uidlist.lock";
const TMP_NAME: &str = "dovecot-uidlist.tmp";

/// The parsed file. Header items and record extensions we do not interpret are kept, so that a
/// rewrite preserves what Dovecot (or another tool) put there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uidlist {
    pub uidvalidity: u32,
    /// Always above every record's UID once parsed (see [`parse`]).
    pub next_uid: u32,
    pub mailbox_guid: Option<Guid128>,
    /// Header items other than `V`, `N` and `G`, verbatim (`<key><value>`), in file order.
    pub extra_header: Vec<String>,
    /// In strictly increasing UID order.
    pub records: Vec<UidlistRecord>,
}

/// One file's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidlistRecord {
    pub uid: u32,
    /// Extension items `<key><value>` in file order: `G` message GUID, `S`/`W` sizes, `P` POP3
    /// UIDL, `O` POP3 order, and whatever else a writer added.
    pub ext: Vec<(u8, String)>,
    /// The file's base name: without the `:2,…` flags, which change without the uidlist
    /// being rewritten.
    pub base: String,
}

impl UidlistRecord {
    fn write_line(&self, s: &mut String) {
        use std::fmt::Write;
        // Writing into a String cannot fail.
        let _ = write!(s, "{}", self.uid);
        for (key, value) in &self.ext {
            s.push(' ');
            s.push(char::from(*key));
            s.push_str(value);
        }
        s.push_str(" :");
        s.push_str(&self.base);
        s.push('\n');
    }

    pub fn new(uid: u32, base: impl Into<String>) -> UidlistRecord {
        UidlistRecord {
            uid,
            ext: Vec::new(),
            base: base.into(),
        }
    }

    pub fn ext(&self, key: u8) -> Option<&str> {
        self.ext
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The message GUID when it is not the base name (the `G` extension).
    pub fn guid(&self) -> Option<&str> {
        self.ext(b'G')
    }

    pub fn pop3_uidl(&self) -> Option<&str> {
        self.ext(b'P')
    }

    pub fn pop3_order(&self) -> Option<u32> {
        self.ext(b'O').and_then(parse_decimal)
    }

    /// Sets an extension, in place when it exists so that item order stays stable.
    pub fn set_ext(&mut self, key: u8, value: impl Into<String>) {
        let value = value.into();
        match self.ext.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.ext.push((key, value)),
        }
    }

    pub fn remove_ext(&mut self, key: u8) {
        self.ext.retain(|(k, _)| *k != key);
    }
}

impl Uidlist {
    /// An empty list for a new mailbox.
    pub fn new(uidvalidity: u32, mailbox_guid: Guid128) -> Uidlist {
        Uidlist {
            uidvalidity,
            next_uid: 1,
            mailbox_guid: Some(mailbox_guid),
            extra_header: Vec::new(),
            records: Vec::new(),
        }
    }

    /// [`parse`], for symmetry with the other files' parsers.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Uidlist> {
        parse(bytes, path)
    }

    /// Reads `dir/dovecot-uidlist`; `None` when the mailbox has none yet.
    pub fn read(dir: &Path) -> Result<Option<Uidlist>> {
        let path = dir.join(FILE_NAME);
        read_optional(&path)?
            .map(|bytes| parse(&bytes, &path))
            .transpose()
    }

    /// The file content, always in version 3, with LF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        use std::fmt::Write;
        let mut s = String::with_capacity(64 + self.records.len() * 48);
        // Writing into a String cannot fail.
        let _ = write!(s, "3 V{} N{}", self.uidvalidity, self.next_uid);
        if let Some(guid) = self.mailbox_guid {
            let _ = write!(s, " G{guid}");
        }
        for item in &self.extra_header {
            s.push(' ');
            s.push_str(item);
        }
        s.push('\n');
        for r in &self.records {
            r.write_line(&mut s);
        }
        s.into_bytes()
    }

    /// Whether this list reaches the disk by appending its records from `old_len` on to the
    /// file that held the ones before them, with the same header, and from which readers took
    /// `old_next` as the next UID: there are new records, and readers take the next UID from
    /// the last of them, as Dovecot's appends leave it (the header's `N` lags). The caller
    /// knows that the first `old_len` records are the file's, unchanged.
    pub fn appends_to(&self, old_len: usize, old_next: u32) -> bool {
        match self.records.last() {
            Some(last) if self.records.len() > old_len => {
                self.next_uid == old_next.max(last.uid.saturating_add(1))
            }
            _ => false,
        }
    }

    /// Why this value cannot be written so that it reads back the same, if it cannot.
    fn unwritable(&self) -> Option<String> {
        if self.uidvalidity == 0 {
            return Some("UIDVALIDITY is 0".into());
        }
        for item in &self.extra_header {
            if item.is_empty() || item.contains([' ', '\n']) || item.starts_with(['V', 'N', 'G']) {
                return Some(format!("header item {item:?} cannot be written"));
            }
        }
        let mut prev = 0;
        for r in &self.records {
            if r.uid <= prev {
                return Some(format!("UID {} does not follow UID {prev}", r.uid));
            }
            prev = r.uid;
            if r.base.is_empty() || r.base.contains([':', '\n']) {
                return Some(format!(
                    "UID {}: file name {:?} cannot be written",
                    r.uid, r.base
                ));
            }
            for (key, value) in &r.ext {
                if !key.is_ascii_uppercase() || value.contains([' ', '\n']) {
                    return Some(format!(
                        "UID {}: extension {:?} {value:?} cannot be written",
                        r.uid,
                        char::from(*key)
                    ));
                }
            }
        }
        if self.next_uid <= prev {
            return Some(format!(
                "next UID {} is not above UID {prev}",
                self.next_uid
            ));
        }
        None
    }
}

/// Parses a `dovecot-uidlist` of version 3 or the Courier-compatible version 1.
///
/// A header `N` at or below the highest UID is raised to that UID + 1 rather than rejected:
/// Dovecot's own dsync writes such files (`N1` above UIDs 1 and 2 after a backup into an
/// empty Maildir) and Dovecot reads them the same way.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Uidlist> {
    let bad = |n: usize, what: &str| Error::Data(format!("{} line {n}: {what}", path.display()));
    let mut lines = numbered_lines(bytes);
    let Some((n, header)) = lines.next() else {
        return Err(Error::Data(format!("{}: empty file", path.display())));
    };
    let header = line_str(header, path, n)?;
    let mut list = Uidlist {
        uidvalidity: 0,
        next_uid: 0,
        mailbox_guid: None,
        extra_header: Vec::new(),
        records: Vec::new(),
    };
    let mut items = header.split(' ').filter(|s| !s.is_empty());
    let version = items.next().unwrap_or("");
    match version {
        "1" => {
            let (Some(v), Some(next), None) = (items.next(), items.next(), items.next()) else {
                return Err(bad(
                    n,
                    "version 1 header is not `1 <uidvalidity> <nextuid>`",
                ));
            };
            list.uidvalidity = parse_decimal(v).ok_or_else(|| bad(n, "bad UIDVALIDITY"))?;
            list.next_uid = parse_decimal(next).ok_or_else(|| bad(n, "bad next UID"))?;
        }
        "3" => {
            for item in items {
                let mut chars = item.chars();
                let key = chars.next();
                let value = chars.as_str();
                match key {
                    Some('V') => {
                        list.uidvalidity =
                            parse_decimal(value).ok_or_else(|| bad(n, "bad UIDVALIDITY"))?;
                    }
                    Some('N') => {
                        list.next_uid =
                            parse_decimal(value).ok_or_else(|| bad(n, "bad next UID"))?;
                    }
                    Some('G') => {
                        let guid =
                            Guid128::parse_hex(value).ok_or_else(|| bad(n, "bad mailbox GUID"))?;
                        list.mailbox_guid = Some(guid);
                    }
                    _ => list.extra_header.push(item.to_string()),
                }
            }
        }
        _ => return Err(bad(n, &format!("unsupported version {version:?}"))),
    }
    if list.uidvalidity == 0 {
        return Err(bad(n, "UIDVALIDITY missing or 0"));
    }
    if list.next_uid == 0 {
        return Err(bad(n, "next UID missing or 0"));
    }

    let unterminated = !bytes.ends_with(b"\n");
    let mut prev_uid = 0;
    let mut lines = lines.peekable();
    while let Some((n, line)) = lines.next() {
        let record = line_str(line, path, n).and_then(|line| {
            if version == "1" {
                parse_v1_record(line)
            } else {
                parse_v3_record(line)
            }
            .map_err(|what| bad(n, what))
        });
        let record = match record {
            Ok(r) => r,
            Err(e) if unterminated && lines.peek().is_none() => {
                // An append cut short (a crash in the middle of one, or a power loss before
                // the data reached the disk): Dovecot reads no line without its end either.
                tracing::warn!("{e}: ignoring an unfinished last line");
                break;
            }
            Err(e) => return Err(e),
        };
        if record.uid <= prev_uid {
            return Err(bad(
                n,
                &format!("UID {} does not follow UID {prev_uid}", record.uid),
            ));
        }
        prev_uid = record.uid;
        list.records.push(record);
    }
    if list.next_uid <= prev_uid {
        // u32::MAX is not a usable UID, so a record carrying it leaves no next UID.
        list.next_uid = prev_uid
            .checked_add(1)
            .ok_or_else(|| Error::Data(format!("{}: UID {prev_uid} too high", path.display())))?;
    }
    Ok(list)
}

/// `<uid> <filename>`
fn parse_v1_record(line: &str) -> Result<UidlistRecord, &'static str> {
    let (uid, name) = line.split_once(' ').ok_or("record has no file name")?;
    let uid = parse_uid(uid)?;
    Ok(UidlistRecord::new(uid, base_of(name)?))
}

/// `<uid> [<key><value> ...] :<filename>`
fn parse_v3_record(line: &str) -> Result<UidlistRecord, &'static str> {
    let (uid, mut rest) = line.split_once(' ').ok_or("record has no file name")?;
    let mut record = UidlistRecord::new(parse_uid(uid)?, "");
    loop {
        rest = rest.trim_start_matches(' ');
        if let Some(name) = rest.strip_prefix(':') {
            record.base = base_of(name)?.to_string();
            return Ok(record);
        }
        let (item, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        let key = *item.as_bytes().first().ok_or("record has no file name")?;
        if !key.is_ascii_uppercase() {
            return Err("bad extension key");
        }
        record.ext.push((key, item[1..].to_string()));
        rest = tail;
    }
}

fn parse_uid(s: &str) -> Result<u32, &'static str> {
    match parse_decimal(s) {
        Some(0) | None => Err("bad UID"),
        Some(uid) => Ok(uid),
    }
}

/// The stored name without its `:2,…` suffix, which Dovecot omits but older writers kept.
fn base_of(name: &str) -> Result<&str, &'static str> {
    let base = super::filename::split_info(name).0;
    if base.is_empty() {
        return Err("empty file name");
    }
    Ok(base)
}

/// Digits only: `u32::from_str` would also take a leading `+`.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Reads `dir/dovecot-uidlist` for an update under the lock, with whether records may be
/// appended to it as it is: a version 3 file that ends with a line end.
pub fn read_for_update(dir: &Path) -> Result<Option<(Uidlist, bool)>> {
    let path = dir.join(FILE_NAME);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    let appendable = bytes.starts_with(b"3 ") && bytes.ends_with(b"\n");
    Ok(Some((parse(&bytes, &path)?, appendable)))
}

/// Appends the records of `list` from `from` on to `dir/dovecot-uidlist`, as Dovecot adds new
/// mail to it: in one write, unflushed. Hold a [`UidlistLock`], and append only what
/// [`Uidlist::appends_to`] allows to a file [`read_for_update`] found appendable. A list that
/// would not read back the same is refused, as [`write_atomic`] refuses it.
pub fn append(dir: &Path, list: &Uidlist, from: usize) -> Result<()> {
    let path = dir.join(FILE_NAME);
    if let Some(why) = list.unwritable() {
        return Err(Error::Data(format!(
            "{}: refusing to write: {why}",
            path.display()
        )));
    }
    let records = &list.records[from..];
    let mut lines = String::with_capacity(records.len() * 96);
    for r in records {
        r.write_line(&mut lines);
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, lines.as_bytes()))
        .map_err(|e| Error::io(format!("appending to {}", path.display()), e))
}

/// Writes `list` to `dir/dovecot-uidlist` through `dovecot-uidlist.tmp` and a rename, so that
/// readers see the old or the new file, never half of one. Hold a [`UidlistLock`] meanwhile.
pub fn write_atomic(dir: &Path, list: &Uidlist, fsync: bool) -> Result<()> {
    if let Some(why) = list.unwritable() {
        return Err(Error::Data(format!(
            "{}: refusing to write: {why}",
            dir.join(FILE_NAME).display()
        )));
    }
    replace_via_tmp(dir, FILE_NAME, TMP_NAME, &list.to_bytes(), fsync)
}

/// The first half of [`write_atomic`] for a caller that flushes many files at once: writes
/// `list` to `dovecot-uidlist.tmp`, unflushed. [`install_tmp`] renames it into place once the
/// caller has flushed it. Hold a [`UidlistLock`] from here until then.
pub fn write_tmp(dir: &Path, list: &Uidlist) -> Result<()> {
    if let Some(why) = list.unwritable() {
        return Err(Error::Data(format!(
            "{}: refusing to write: {why}",
            dir.join(FILE_NAME).display()
        )));
    }
    let tmp = dir.join(TMP_NAME);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(file_mode(dir))
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &list.to_bytes()))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("writing {}", tmp.display()), e)
        })
}

/// Renames what [`write_tmp`] wrote over `dovecot-uidlist`.
pub fn install_tmp(dir: &Path) -> Result<()> {
    let tmp = dir.join(TMP_NAME);
    std::fs::rename(&tmp, dir.join(FILE_NAME)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("renaming {} into place", tmp.display()), e)
    })
}

/// Dovecot's `dovecot-uidlist.lock`: while it is held, no one else assigns UIDs in the
/// mailbox or rewrites its uidlist or keywords. Released on drop.
pub struct UidlistLock {
    lock: DotLock,
}

impl UidlistLock {
    /// Takes the lock in the mailbox directory `dir`, waiting up to `timeout` for a live holder
    /// (then `Error::Temp`) and breaking a lock untouched for two minutes.
    pub fn acquire(dir: &Path, timeout: Duration) -> Result<UidlistLock> {
        let mut lock = DotLock::acquire(&dir.join(LOCK_NAME), file_mode(dir), timeout)?;
        lock.note_holder();
        Ok(UidlistLock { lock })
    }

    pub fn path(&self) -> &Path {
        self.lock.path()
    }

    /// Keeps the lock fresh: a holder busy for longer than two minutes must call this, or
    /// other processes will break the lock as stale.
    pub fn touch(&self) -> Result<()> {
        self.lock.touch()
    }

    /// Releases the lock, reporting a failure to remove the file.
    pub fn release(self) -> Result<()> {
        self.lock.release()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INBOX: &[u8] = include_bytes!("../../../tests/fixtures/dovecot/inbox/dovecot-uidlist");
    const INBOX_STATUS: &str = include_str!("../../../tests/fixtures/dovecot/inbox/status");
    const INBOX_NAMES: &str = include_str!("../../../tests/fixtures/dovecot/inbox/filenames");
    const DSYNC: &[u8] = include_bytes!("../../../tests/fixtures/dovecot/dsync/dovecot-uidlist");
    const DSYNC_FETCH: &str = include_str!("../../../tests/fixtures/dovecot/dsync/fetch");

    fn p() -> &'static Path {
        Path::new("/m/dovecot-uidlist")
    }

    /// The value of `key=` in a `doveadm mailbox status` line.
    fn status(key: &str) -> &'static str {
        INBOX_STATUS
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .unwrap()
    }

    fn data_err(bytes: &[u8]) -> String {
        match parse(bytes, p()) {
            Err(Error::Data(m)) => m,
            other => panic!("expected a data error, got {other:?}"),
        }
    }

    #[test]
    fn dovecot_made_uidlist() {
        let list = parse(INBOX, p()).unwrap();
        assert_eq!(list.uidvalidity.to_string(), status("uidvalidity"));
        assert_eq!(list.next_uid.to_string(), status("uidnext"));
        assert_eq!(list.mailbox_guid.unwrap().to_string(), status("guid"));
        assert!(list.extra_header.is_empty());
        let bases: Vec<&str> = INBOX_NAMES
            .lines()
            .map(|n| n.split(':').next().unwrap())
            .collect();
        assert_eq!(list.records.len(), 2);
        for (i, r) in list.records.iter().enumerate() {
            assert_eq!(r.uid, i as u32 + 1);
            assert_eq!(r.base, bases[i]);
            assert!(r.ext.is_empty());
        }
        // Dovecot's file is in canonical form: a rewrite gives the same bytes.
        assert_eq!(list.to_bytes(), INBOX);
    }

    #[test]
    fn dovecot_dsync_uidlist_with_guids_and_lagging_next_uid() {
        // Header says N1 although UIDs 1 and 2 exist; Dovecot reports UIDNEXT 3.
        assert!(DSYNC.starts_with(b"3 V") && DSYNC.windows(4).any(|w| w == b" N1 "));
        let list = parse(DSYNC, p()).unwrap();
        assert_eq!(list.next_uid, 3);
        let guids: Vec<(u32, &str)> = DSYNC_FETCH
            .lines()
            .skip(1)
            .map(|l| {
                let (uid, guid) = l.split_once('\t').unwrap();
                (uid.parse().unwrap(), guid)
            })
            .collect();
        let got: Vec<(u32, &str)> = list
            .records
            .iter()
            .map(|r| (r.uid, r.guid().unwrap()))
            .collect();
        assert_eq!(got, guids);
        // Rewritten with the raised N; everything else unchanged.
        let again = parse(&list.to_bytes(), p()).unwrap();
        assert_eq!(again, list);
    }

    #[test]
    fn extensions_and_extra_header_round_trip() {
        let text = "3 V7 N20 G0123456789abcdef0123456789abcdef P%08Xu%08Xv Zzz\n\
                    3 :a.M1P1.h,S=5,W=6\n\
                    5 Gabc P0000beef O4 W99 :b.M1P1.h\n\
                    19 Xfoo :c\n";
        let list = parse(text.as_bytes(), p()).unwrap();
        assert_eq!(list.uidvalidity, 7);
        assert_eq!(list.next_uid, 20);
        assert_eq!(list.extra_header, ["P%08Xu%08Xv", "Zzz"]);
        let r = &list.records[1];
        assert_eq!(
            (r.uid, r.guid(), r.pop3_uidl(), r.pop3_order()),
            (5, Some("abc"), Some("0000beef"), Some(4))
        );
        assert_eq!(r.ext(b'W'), Some("99"));
        assert_eq!(list.records[2].ext, [(b'X', "foo".to_string())]);
        assert_eq!(list.to_bytes(), text.as_bytes());
    }

    #[test]
    fn set_ext_keeps_order() {
        let mut r = UidlistRecord::new(1, "x");
        r.set_ext(b'G', "g1");
        r.set_ext(b'P', "p");
        r.set_ext(b'G', "g2");
        assert_eq!(r.ext, [(b'G', "g2".into()), (b'P', "p".into())]);
        r.remove_ext(b'G');
        assert_eq!(r.guid(), None);
    }

    #[test]
    fn filenames_with_flags_and_version_1() {
        let list = parse(b"3 V1 N3\n1 :a,S=1:2,FS\n2 :b\n", p()).unwrap();
        assert_eq!(list.records[0].base, "a,S=1");
        assert_eq!(list.mailbox_guid, None);

        let v1 = parse(b"1 1234 10\n4 1.M2P3.h:2,S\n9 2.M2P3.h\n", p()).unwrap();
        assert_eq!((v1.uidvalidity, v1.next_uid), (1234, 10));
        assert_eq!(v1.records[0], UidlistRecord::new(4, "1.M2P3.h"));
        assert_eq!(v1.records[1], UidlistRecord::new(9, "2.M2P3.h"));
        // Rewritten as version 3.
        assert_eq!(v1.to_bytes(), b"3 V1234 N10\n4 :1.M2P3.h\n9 :2.M2P3.h\n");
    }

    #[test]
    fn corruption_is_reported_with_line() {
        assert!(data_err(b"").contains("empty file"));
        assert!(data_err(b"2 V1 N1\n").contains("line 1: unsupported version"));
        assert!(data_err(b"3 V0 N1\n").contains("line 1: UIDVALIDITY"));
        assert!(data_err(b"3 N1\n").contains("line 1: UIDVALIDITY"));
        assert!(data_err(b"3 V1 N0\n").contains("line 1: next UID"));
        assert!(data_err(b"3 V1 N+2\n").contains("line 1: bad next UID"));
        assert!(data_err(b"3 V1 N2 Gxyz\n").contains("line 1: bad mailbox GUID"));
        assert!(data_err(b"1 5\n").contains("line 1: version 1 header"));
        let m = data_err(b"3 V1 N9\n1 :a\n1 :b\n");
        assert_eq!(m, "/m/dovecot-uidlist line 3: UID 1 does not follow UID 1");
        assert!(data_err(b"3 V1 N9\n2 :a\n1 :b\n").contains("line 3: UID 1 does not follow"));
        assert!(data_err(b"3 V1 N9\n0 :a\n").contains("line 2: bad UID"));
        assert!(data_err(b"3 V1 N9\nx :a\n").contains("line 2: bad UID"));
        assert!(data_err(b"3 V1 N9\n1 Gabc\n").contains("line 2: record has no file name"));
        assert!(data_err(b"3 V1 N9\n1\n").contains("line 2: record has no file name"));
        assert!(data_err(b"3 V1 N9\n1 :\n").contains("line 2: empty file name"));
        assert!(data_err(b"3 V1 N9\n1 g1 :a\n").contains("line 2: bad extension key"));
        assert!(data_err(b"3 V1 N9\n1 :a\n\n").contains("line 3: record has no file name"));
        assert!(data_err(b"3 V1 N9\n1 :\xff\n").contains("line 2: not valid UTF-8"));
        assert!(data_err(b"3 V1 N9\n4294967295 :a\n").contains("too high"));
    }

    #[test]
    fn write_atomic_then_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Uidlist::read(dir.path()).unwrap(), None);
        let mut list = Uidlist::new(99, Guid128::sha128_of("x"));
        list.records.push(UidlistRecord::new(1, "a"));
        list.next_uid = 2;
        write_atomic(dir.path(), &list, true).unwrap();
        write_atomic(dir.path(), &list, false).unwrap();
        assert_eq!(Uidlist::read(dir.path()).unwrap(), Some(list.clone()));
        assert!(!dir.path().join(TMP_NAME).exists());

        let mut bad = list.clone();
        bad.next_uid = 1;
        assert!(matches!(
            write_atomic(dir.path(), &bad, false),
            Err(Error::Data(_))
        ));
        let mut bad = list.clone();
        bad.records[0].set_ext(b'P', "a b");
        assert!(matches!(
            write_atomic(dir.path(), &bad, false),
            Err(Error::Data(_))
        ));
        let mut bad = list;
        bad.records[0].base = "a:2,S".into();
        assert!(matches!(
            write_atomic(dir.path(), &bad, false),
            Err(Error::Data(_))
        ));
    }

    #[test]
    fn lock_times_out_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let lock = UidlistLock::acquire(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(lock.path(), dir.path().join(LOCK_NAME));
        match UidlistLock::acquire(dir.path(), Duration::from_millis(50)) {
            Err(Error::Temp(m)) => assert!(m.contains(LOCK_NAME), "{m}"),
            other => panic!("expected a timeout, got {:?}", other.err()),
        }
        lock.touch().unwrap();
        drop(lock);
        assert!(!dir.path().join(LOCK_NAME).exists());
        UidlistLock::acquire(dir.path(), Duration::ZERO)
            .unwrap()
            .release()
            .unwrap();
    }

    #[test]
    fn lock_waits_for_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lock = UidlistLock::acquire(dir.path(), Duration::ZERO).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(lock);
        });
        UidlistLock::acquire(dir.path(), Duration::from_secs(10)).unwrap();
        releaser.join().unwrap();
    }
    #[test]
    fn an_unfinished_last_line_is_ignored_only_when_it_does_not_parse() {
        let head = "3 V5 N3 G0123456789abcdef0123456789abcdef\n1 :a\n";
        // Cut in the middle of an append: ignored, as Dovecot ignores it.
        let list = parse(format!("{head}2 G12").as_bytes(), p()).unwrap();
        assert_eq!(list.records.len(), 1);
        assert_eq!(list.next_uid, 3);
        // Whole but without its line end: kept, as before.
        let list = parse(format!("{head}2 :b").as_bytes(), p()).unwrap();
        assert_eq!(list.records.len(), 2);
        // Broken and ended: the file is corrupt.
        assert!(data_err(format!("{head}2 G12\n").as_bytes()).contains("line 3"));
        assert!(data_err(format!("{head}x :c\n2 :b").as_bytes()).contains("line 3"));
    }

    #[test]
    fn appended_records_read_back_with_the_next_uid_they_imply() {
        let dir = tempfile::tempdir().unwrap();
        let mut list = Uidlist::new(5, Guid128::generate());
        list.records.push(UidlistRecord::new(1, "a"));
        list.next_uid = 2;
        write_atomic(dir.path(), &list, false).unwrap();
        let (mut grown, appendable) = read_for_update(dir.path()).unwrap().unwrap();
        assert!(appendable);
        let mut rec = UidlistRecord::new(4, "b");
        rec.set_ext(b'G', "0a1b");
        grown.records.push(rec);
        grown.next_uid = 5;
        assert!(grown.appends_to(1, 2));
        assert!(!grown.appends_to(2, 2), "nothing new to append");
        grown.next_uid = 7;
        assert!(!grown.appends_to(1, 2), "the header must say 7");
        grown.next_uid = 5;
        append(dir.path(), &grown, 1).unwrap();
        assert_eq!(Uidlist::read(dir.path()).unwrap().unwrap(), grown);
        // What would not read back the same is refused, and the file stays as it was.
        let before = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let mut spaced = UidlistRecord::new(9, "c");
        spaced.set_ext(b'G', "a b");
        grown.records.push(spaced);
        grown.next_uid = 10;
        assert!(append(dir.path(), &grown, 2).is_err());
        assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap(), before);
    }
}
