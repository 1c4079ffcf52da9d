//! IMAP system flags as Dovecot's bitmask (`mail-types.h`), and keyword sets.

use std::collections::BTreeSet;

/// Keywords of one message, kept sorted so that comparisons and output are stable.
pub type Keywords = BTreeSet<String>;

/// The IMAP system flags, with Dovecot's bit values (they travel as hex on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Flags(pub u8);

impl Flags {
    pub const ANSWERED: Flags = Flags(0x01);
    pub const FLAGGED: Flags = Flags(0x02);
    pub const DELETED: Flags = Flags(0x04);
    pub const SEEN: Flags = Flags(0x08);
    pub const DRAFT: Flags = Flags(0x10);
    pub const ALL: Flags = Flags(0x1f);
    pub const EMPTY: Flags = Flags(0);

    /// Every system flag with its IMAP name, in the order IMAP clients usually print them.
    pub const NAMES: [(Flags, &'static str); 5] = [
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::SEEN, "\\Seen"),
        (Flags::DRAFT, "\\Draft"),
    ];

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    pub fn minus(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses an IMAP system flag name, case-insensitively.
    pub fn from_imap_name(name: &str) -> Option<Flags> {
        Flags::NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(f, _)| *f)
    }

    pub fn imap_names(self) -> impl Iterator<Item = &'static str> {
        Flags::NAMES
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.imap_names().collect();
        write!(f, "({})", names.join(" "))
    }
}

/// Whether a keyword name is an IMAP atom that a store can hold: no spaces, parentheses,
/// wildcards, quotes, backslashes, brackets or control characters, and not a system flag.
pub fn is_valid_keyword(kw: &str) -> bool {
    !kw.is_empty()
        && kw.len() <= 255
        && !kw.starts_with('\\')
        && kw
            .bytes()
            .all(|b| b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (f, n) in Flags::NAMES {
            assert_eq!(Flags::from_imap_name(n), Some(f));
            assert_eq!(Flags::from_imap_name(&n.to_uppercase()), Some(f));
        }
        assert_eq!(Flags::from_imap_name("\\Recent"), None);
    }

    #[test]
    fn keyword_validity() {
        assert!(is_valid_keyword("$Important"));
        assert!(is_valid_keyword("Work"));
        assert!(!is_valid_keyword("two words"));
        assert!(!is_valid_keyword("\\Seen"));
        assert!(!is_valid_keyword(""));
    }
}
