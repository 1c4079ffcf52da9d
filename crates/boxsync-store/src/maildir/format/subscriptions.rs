//! The `subscriptions` file: the subscribed mailbox names, each as its hierarchy parts.
//! Version 2 (`V\t2` header) separates parts with TAB and tab-escapes them; version 1 has no
//! header and joins parts with the mailbox list's separator.

use std::path::Path;

use boxsync_model::{Error, Result};

use super::{line_str, numbered_lines, read_optional, replace_via_dotlock};

pub const FILE_NAME: &str = "subscriptions";

/// The version 2 header: a version line, then an empty line.
const V2_HEADER: &str = "V\t2\n\n";

/// Dovecot's tab-escape: this byte starts an escape, followed by one of the letters below.
const ESC: char = '\x01';

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriptions {
    /// 1 or 2; a rewrite keeps it, so that an old reader of a version 1 file still can.
    pub version: u32,
    pub names: Vec<Vec<String>>,
}

impl Default for Subscriptions {
    /// Empty, in version 2: what Dovecot 2.3 writes for a new file.
    fn default() -> Subscriptions {
        Subscriptions {
            version: 2,
            names: Vec::new(),
        }
    }
}

impl Subscriptions {
    pub fn new() -> Subscriptions {
        Subscriptions::default()
    }

    /// Parses either version. Empty lines are skipped. An empty file counts as version 2,
    /// since it has nothing that an old reader would need to keep reading.
    pub fn parse(bytes: &[u8], v1_separator: char, path: &Path) -> Result<Subscriptions> {
        let bad =
            |n: usize, what: &str| Error::Data(format!("{} line {n}: {what}", path.display()));
        let mut lines = numbered_lines(bytes).peekable();
        let version = match lines.peek() {
            None => 2,
            Some((n, first)) if first.starts_with(b"V\t") => {
                let first = line_str(first, path, *n)?;
                if first != "V\t2" {
                    return Err(bad(*n, &format!("unsupported header {first:?}")));
                }
                lines.next();
                2
            }
            Some(_) => 1,
        };
        let mut names = Vec::new();
        for (n, line) in lines {
            let line = line_str(line, path, n)?;
            if line.is_empty() {
                continue;
            }
            let name = if version == 2 {
                line.split('\t')
                    .map(unescape)
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| bad(n, "bad tab-escape"))?
            } else {
                line.split(v1_separator).map(str::to_string).collect()
            };
            names.push(name);
        }
        Ok(Subscriptions { version, names })
    }

    /// Reads `dir/subscriptions`; `None` when there is none.
    pub fn read(dir: &Path, v1_separator: char) -> Result<Option<Subscriptions>> {
        let path = dir.join(FILE_NAME);
        read_optional(&path)?
            .map(|bytes| Subscriptions::parse(&bytes, v1_separator, &path))
            .transpose()
    }

    /// The file content: version 1 when read as version 1, otherwise version 2.
    pub fn to_bytes(&self, v1_separator: char) -> Vec<u8> {
        let mut out = String::new();
        if self.version != 1 {
            out.push_str(V2_HEADER);
        }
        for name in &self.names {
            for (i, part) in name.iter().enumerate() {
                if self.version == 1 {
                    if i > 0 {
                        out.push(v1_separator);
                    }
                    out.push_str(part);
                } else {
                    if i > 0 {
                        out.push('\t');
                    }
                    escape_into(part, &mut out);
                }
            }
            out.push('\n');
        }
        out.into_bytes()
    }

    pub fn contains(&self, name: &[String]) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Adds a name; false when it was already there.
    pub fn insert(&mut self, name: Vec<String>) -> bool {
        if self.contains(&name) {
            return false;
        }
        self.names.push(name);
        true
    }

    /// Removes a name; false when it was not there.
    pub fn remove(&mut self, name: &[String]) -> bool {
        let before = self.names.len();
        self.names.retain(|n| n != name);
        self.names.len() != before
    }

    /// Why this value would not read back the same from a file, if it would not.
    fn unwritable(&self, v1_separator: char) -> Option<String> {
        for name in &self.names {
            if name.iter().all(String::is_empty) {
                return Some(format!("empty mailbox name {name:?}"));
            }
            if self.version == 1
                && name
                    .iter()
                    .any(|p| p.contains(v1_separator) || p.contains('\n'))
            {
                return Some(format!(
                    "mailbox name {name:?} cannot be written in version 1 with separator {v1_separator:?}"
                ));
            }
        }
        None
    }
}

fn escape_into(part: &str, out: &mut String) {
    for c in part.chars() {
        let escaped = match c {
            ESC => '1',
            '\t' => 't',
            '\r' => 'r',
            '\n' => 'n',
            c => {
                out.push(c);
                continue;
            }
        };
        out.push(ESC);
        out.push(escaped);
    }
}

fn unescape(part: &str) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        if c != ESC {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '1' => ESC,
            't' => '\t',
            'r' => '\r',
            'n' => '\n',
            _ => return None,
        });
    }
    Some(out)
}

/// Replaces `dir/subscriptions` through Dovecot's `subscriptions.lock` and a rename, so that
/// a concurrent SUBSCRIBE in Dovecot waits for us instead of overwriting us.
pub fn write_atomic(
    dir: &Path,
    subs: &Subscriptions,
    v1_separator: char,
    fsync: bool,
) -> Result<()> {
    write_atomic_as(dir, FILE_NAME, subs, v1_separator, fsync)
}

/// [`write_atomic`] under another file name (an mbox root keeps `.subscriptions`, since any
/// plain file there is a mailbox).
pub fn write_atomic_as(
    dir: &Path,
    file_name: &str,
    subs: &Subscriptions,
    v1_separator: char,
    fsync: bool,
) -> Result<()> {
    if let Some(why) = subs.unwritable(v1_separator) {
        return Err(Error::Data(format!(
            "{}: refusing to write: {why}",
            dir.join(file_name).display()
        )));
    }
    replace_via_dotlock(dir, file_name, &subs.to_bytes(v1_separator), fsync)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real Dovecot 2.3 output after `mailbox create -s Sub` and `-s Sub/Child`
    /// (tests/fixtures/dovecot/make.sh).
    const DOVECOT: &[u8] = include_bytes!("../../../tests/fixtures/dovecot/inbox/subscriptions");

    fn p() -> &'static Path {
        Path::new("/m/subscriptions")
    }

    fn name(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dovecot_made_file() {
        let s = Subscriptions::parse(DOVECOT, '/', p()).unwrap();
        assert_eq!(s.version, 2);
        assert_eq!(s.names, [name(&["Sub"]), name(&["Sub", "Child"])]);
        assert_eq!(s.to_bytes('/'), DOVECOT);
    }

    #[test]
    fn tab_escape_known_answers() {
        let s = Subscriptions {
            version: 2,
            names: vec![name(&["a\tb", "c\x01d", "e\r\nf"]), name(&["Prøjekt"])],
        };
        let bytes = s.to_bytes('/');
        assert_eq!(
            bytes,
            "V\t2\n\na\x01tb\tc\x011d\te\x01r\x01nf\nPrøjekt\n".as_bytes()
        );
        assert_eq!(Subscriptions::parse(&bytes, '/', p()).unwrap(), s);
    }

    #[test]
    fn version_1_round_trip() {
        let bytes = b"INBOX\nWork.Projects\n\nArchive\n";
        let s = Subscriptions::parse(bytes, '.', p()).unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(
            s.names,
            [
                name(&["INBOX"]),
                name(&["Work", "Projects"]),
                name(&["Archive"])
            ]
        );
        assert_eq!(s.to_bytes('.'), b"INBOX\nWork.Projects\nArchive\n");
    }

    #[test]
    fn empty_and_header_only() {
        assert_eq!(
            Subscriptions::parse(b"", '/', p()).unwrap(),
            Subscriptions::new()
        );
        let s = Subscriptions::parse(b"V\t2\n\n", '/', p()).unwrap();
        assert_eq!(s, Subscriptions::new());
        assert_eq!(s.to_bytes('/'), V2_HEADER.as_bytes());
    }

    #[test]
    fn corruption_is_reported_with_line() {
        let err = |b: &[u8]| match Subscriptions::parse(b, '/', p()) {
            Err(Error::Data(m)) => m,
            other => panic!("expected a data error, got {other:?}"),
        };
        assert_eq!(
            err(b"V\t3\n\n"),
            "/m/subscriptions line 1: unsupported header \"V\\t3\""
        );
        assert!(err(b"V\t2\n\nok\nbad\x01x\n").contains("line 4: bad tab-escape"));
        assert!(err(b"V\t2\n\nbad\x01\n").contains("line 3: bad tab-escape"));
        assert!(err(b"V\t2\n\n\xff\n").contains("line 3: not valid UTF-8"));
    }

    #[test]
    fn insert_remove() {
        let mut s = Subscriptions::new();
        assert!(s.insert(name(&["A", "B"])));
        assert!(!s.insert(name(&["A", "B"])));
        assert!(s.contains(&name(&["A", "B"])));
        assert!(s.remove(&name(&["A", "B"])));
        assert!(!s.remove(&name(&["A", "B"])));
    }

    #[test]
    fn write_atomic_then_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Subscriptions::read(dir.path(), '.').unwrap(), None);
        let mut s = Subscriptions::new();
        s.insert(name(&["A", "B.C"]));
        write_atomic(dir.path(), &s, '.', true).unwrap();
        assert_eq!(
            Subscriptions::read(dir.path(), '.').unwrap(),
            Some(s.clone())
        );
        assert!(!dir.path().join("subscriptions.lock").exists());

        // Version 1 cannot hold a part containing its separator.
        s.version = 1;
        assert!(matches!(
            write_atomic(dir.path(), &s, '.', false),
            Err(Error::Data(_))
        ));
        s.names = vec![name(&[""])];
        s.version = 2;
        assert!(matches!(
            write_atomic(dir.path(), &s, '.', false),
            Err(Error::Data(_))
        ));
    }
}
