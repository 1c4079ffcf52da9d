//! `dovecot-keywords`: which keyword each file-name letter `a`..=`z` stands for in one Maildir.

use std::path::Path;

use boxsync_model::flags::is_valid_keyword;
use boxsync_model::{Error, Result};

use super::{line_str, numbered_lines, read_optional, replace_via_dotlock};

pub const FILE_NAME: &str = "dovecot-keywords";

/// Only 26 letters fit in a file name; Dovecot keeps further keywords in its index only.
const SLOTS: usize = 26;

/// The keyword table: slot `i` is letter `b'a' + i`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeywordsFile {
    names: [Option<String>; SLOTS],
}

impl KeywordsFile {
    pub fn new() -> KeywordsFile {
        KeywordsFile::default()
    }

    /// Parses `<index> <name>` lines. Indexes of 26 and more are skipped: they cannot appear
    /// in a file name, and another writer may keep them there for its own reasons.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<KeywordsFile> {
        let bad =
            |n: usize, what: &str| Error::Data(format!("{} line {n}: {what}", path.display()));
        let mut file = KeywordsFile::default();
        for (n, line) in numbered_lines(bytes) {
            let line = line_str(line, path, n)?;
            let (index, name) = line
                .split_once(' ')
                .ok_or_else(|| bad(n, "not `<index> <keyword>`"))?;
            if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(n, "bad keyword index"));
            }
            if name.is_empty() {
                return Err(bad(n, "empty keyword"));
            }
            // An index too long for usize is still just "too high".
            let Some(slot) = index.parse::<usize>().ok().filter(|&i| i < SLOTS) else {
                continue;
            };
            if file.names[slot].is_some() {
                // Two names for one letter would give messages the wrong keyword.
                return Err(bad(n, &format!("keyword index {slot} given twice")));
            }
            file.names[slot] = Some(name.to_string());
        }
        Ok(file)
    }

    /// Reads `dir/dovecot-keywords`; `None` when the mailbox has none.
    pub fn read(dir: &Path) -> Result<Option<KeywordsFile>> {
        let path = dir.join(FILE_NAME);
        read_optional(&path)?
            .map(|bytes| KeywordsFile::parse(&bytes, &path))
            .transpose()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for (letter, name) in self.iter() {
            out.push_str(&(letter - b'a').to_string());
            out.push(' ');
            out.push_str(name);
            out.push('\n');
        }
        out.into_bytes()
    }

    /// The letter of a keyword. Names compare exactly, as Dovecot stores them.
    pub fn letter_of(&self, name: &str) -> Option<u8> {
        self.names
            .iter()
            .position(|n| n.as_deref() == Some(name))
            .map(slot_letter)
    }

    pub fn name_of(&self, letter: u8) -> Option<&str> {
        let slot = usize::from(letter.checked_sub(b'a')?);
        self.names.get(slot)?.as_deref()
    }

    /// The letter for `name`: its existing one, or the first free slot, which is then taken.
    /// `None` when all 26 are in use or the name is not a keyword a file can store (it would
    /// break the file's line format); such keywords live only in the index.
    pub fn assign(&mut self, name: &str) -> Option<u8> {
        if let Some(letter) = self.letter_of(name) {
            return Some(letter);
        }
        if !is_valid_keyword(name) {
            return None;
        }
        let slot = self.names.iter().position(Option::is_none)?;
        self.names[slot] = Some(name.to_string());
        Some(slot_letter(slot))
    }

    /// `(letter, name)` of every assigned slot, in letter order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &str)> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((slot_letter(i), n.as_deref()?)))
    }
}

fn slot_letter(slot: usize) -> u8 {
    // Slots are below 26, so this stays within `a`..=`z`.
    b'a' + slot as u8
}

/// Replaces `dir/dovecot-keywords` through Dovecot's `dovecot-keywords.lock` and a rename.
/// Dovecot changes the table only while holding the uidlist lock; so must the caller, since a
/// letter handed out here must not be handed out for another name by a concurrent writer.
pub fn write_atomic(dir: &Path, file: &KeywordsFile, fsync: bool) -> Result<()> {
    replace_via_dotlock(dir, FILE_NAME, &file.to_bytes(), fsync)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real Dovecot 2.3 output for `kw1`, `kw2`, `$Work` (tests/fixtures/dovecot/make.sh).
    const DOVECOT: &[u8] = include_bytes!("../../../tests/fixtures/dovecot/inbox/dovecot-keywords");

    fn p() -> &'static Path {
        Path::new("/m/dovecot-keywords")
    }

    fn data_err(bytes: &[u8]) -> String {
        match KeywordsFile::parse(bytes, p()) {
            Err(Error::Data(m)) => m,
            other => panic!("expected a data error, got {other:?}"),
        }
    }

    #[test]
    fn dovecot_made_file() {
        let k = KeywordsFile::parse(DOVECOT, p()).unwrap();
        assert_eq!(k.name_of(b'a'), Some("kw1"));
        assert_eq!(k.name_of(b'b'), Some("kw2"));
        assert_eq!(k.name_of(b'c'), Some("$Work"));
        assert_eq!(k.name_of(b'd'), None);
        assert_eq!(k.letter_of("$Work"), Some(b'c'));
        assert_eq!(k.letter_of("$work"), None);
        assert_eq!(k.to_bytes(), DOVECOT);
    }

    #[test]
    fn sparse_slots_and_high_indexes() {
        let k = KeywordsFile::parse(
            b"25 last\n3 d-word\n26 ignored\n99999999999999999999999 x\n",
            p(),
        )
        .unwrap();
        assert_eq!(k.name_of(b'z'), Some("last"));
        assert_eq!(k.name_of(b'd'), Some("d-word"));
        assert_eq!(k.iter().count(), 2);
        assert_eq!(k.to_bytes(), b"3 d-word\n25 last\n");
        assert_eq!(k.name_of(b'A'), None);
        assert_eq!(k.name_of(b'{'), None);
    }

    #[test]
    fn assign_reuses_then_fills_gaps() {
        let mut k = KeywordsFile::parse(b"1 b\n", p()).unwrap();
        assert_eq!(k.assign("b"), Some(b'b'));
        assert_eq!(k.assign("new"), Some(b'a'));
        assert_eq!(k.assign("other"), Some(b'c'));
        assert_eq!(k.assign("two words"), None);
        for i in 3..26 {
            assert_eq!(k.assign(&format!("k{i}")), Some(b'a' + i as u8));
        }
        assert_eq!(k.assign("one-too-many"), None);
        assert_eq!(k.assign("k25"), Some(b'z'));
        assert_eq!(KeywordsFile::parse(&k.to_bytes(), p()).unwrap(), k);
    }

    #[test]
    fn corruption_is_reported_with_line() {
        assert_eq!(
            data_err(b"0 a\nbogus\n"),
            "/m/dovecot-keywords line 2: not `<index> <keyword>`"
        );
        assert!(data_err(b"x a\n").contains("line 1: bad keyword index"));
        assert!(data_err(b"+1 a\n").contains("line 1: bad keyword index"));
        assert!(data_err(b"1 \n").contains("line 1: empty keyword"));
        assert!(data_err(b"1 a\n1 b\n").contains("line 2: keyword index 1 given twice"));
        assert!(data_err(b"\n").contains("line 1"));
        assert!(data_err(b"1 \xff\n").contains("line 1: not valid UTF-8"));
        assert_eq!(KeywordsFile::parse(b"", p()).unwrap(), KeywordsFile::new());
    }

    #[test]
    fn write_atomic_then_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(KeywordsFile::read(dir.path()).unwrap(), None);
        let mut k = KeywordsFile::new();
        k.assign("$Junk");
        k.assign("Work");
        write_atomic(dir.path(), &k, true).unwrap();
        assert_eq!(KeywordsFile::read(dir.path()).unwrap(), Some(k));
        assert!(!dir.path().join("dovecot-keywords.lock").exists());
    }
}
