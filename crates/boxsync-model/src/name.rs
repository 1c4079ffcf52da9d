//! Mailbox names as lists of hierarchy parts, independent of any store's separator.

use crate::{Error, Result};
use std::fmt;

/// A mailbox name, such as `Work/Prøjekt`, held as its hierarchy parts (`["Work", "Prøjekt"]`).
/// Every part has passed [`MailboxName::check_part`], so no store can be tricked into leaving its
/// root by a name.
///
/// Control characters other than NUL are allowed: a mailbox made by another program can have
/// one (Dovecot lists it; only its creation is refused), so a sync source must be able to name
/// it. The side that receives such a name replaces them with the alt char before creating
/// anything (dsync's `dsync_alt_char`, see [`MailboxName::replace_chars`]).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MailboxName {
    parts: Vec<String>,
}

/// The separator boxsync shows and parses names with (Dovecot's `separator = /`).
pub const SEPARATOR: char = '/';

/// Dovecot's default `dsync_alt_char`: what replaces, in a name received from the other side,
/// each character or level the local store cannot hold.
pub const DEFAULT_ALT_CHAR: char = '_';

/// Parses an alt char (`-C`, `dsync_alt_char`): exactly one character that can stand in a name
/// everywhere. Refused: control characters (they are what it replaces), `/` (boxsync's
/// hierarchy separator) and `.` (Maildir++'s and many IMAP servers' separator, so a name
/// repaired with it would still not fit there).
pub fn parse_alt_char(s: &str) -> Result<char> {
    let mut chars = s.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return Err(Error::Usage(format!(
            "alt char {s:?}: expected exactly one character"
        )));
    };
    if c.is_control() || c == SEPARATOR || c == '.' {
        return Err(Error::Usage(format!(
            "alt char {s:?}: it cannot replace characters in mailbox names \
             (not a control character, '/' or '.')"
        )));
    }
    Ok(c)
}

impl MailboxName {
    pub fn inbox() -> MailboxName {
        MailboxName {
            parts: vec!["INBOX".to_owned()],
        }
    }

    /// Builds a name from parts, checking each one. `inbox` in any case as the only part is
    /// INBOX, as IMAP requires.
    pub fn from_parts<I, S>(parts: I) -> Result<MailboxName>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut parts: Vec<String> = parts.into_iter().map(Into::into).collect();
        if parts.is_empty() {
            return Err(Error::data("empty mailbox name"));
        }
        for p in &parts {
            MailboxName::check_part(p)?;
        }
        if parts.len() == 1 && parts[0].eq_ignore_ascii_case("INBOX") {
            parts[0] = "INBOX".to_owned();
        }
        Ok(MailboxName { parts })
    }

    /// Parses `A/B/C`.
    pub fn parse(s: &str) -> Result<MailboxName> {
        MailboxName::from_parts(s.split(SEPARATOR))
    }

    /// Rejects parts that are empty, `.` or `..`, contain `/` or NUL, or are longer than a file
    /// name can be.
    pub fn check_part(part: &str) -> Result<()> {
        let bad = if part.is_empty() {
            Some("an empty hierarchy level")
        } else if part == "." || part == ".." {
            Some("a '.' or '..' hierarchy level")
        } else if part.contains('/') {
            Some("a '/' inside a hierarchy level")
        } else if part.contains('\0') {
            Some("a NUL character")
        } else if part.len() > 200 {
            Some("a hierarchy level longer than 200 bytes")
        } else {
            None
        };
        match bad {
            Some(why) => Err(Error::data(format!("invalid mailbox name {part:?}: {why}"))),
            None => Ok(()),
        }
    }

    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    pub fn is_inbox(&self) -> bool {
        self.parts.len() == 1 && self.parts[0] == "INBOX"
    }

    pub fn parent(&self) -> Option<MailboxName> {
        (self.parts.len() > 1).then(|| MailboxName {
            parts: self.parts[..self.parts.len() - 1].to_vec(),
        })
    }

    /// Whether any part holds a control character (see the type's documentation).
    pub fn has_control(&self) -> bool {
        self.parts.iter().any(|p| p.chars().any(char::is_control))
    }

    /// The same name with every character `bad` picks replaced by `alt`, part by part; an
    /// error when the result is no valid name (`alt` is `/`, or a part becomes `..`).
    pub fn replace_chars(&self, bad: impl Fn(char) -> bool, alt: char) -> Result<MailboxName> {
        MailboxName::from_parts(self.parts.iter().map(|p| {
            p.chars()
                .map(|c| if bad(c) { alt } else { c })
                .collect::<String>()
        }))
    }

    /// The same name with `suffix` appended to its last part (for resolving name conflicts).
    pub fn with_suffix(&self, suffix: &str) -> MailboxName {
        let mut parts = self.parts.clone();
        if let Some(last) = parts.last_mut() {
            last.push_str(suffix);
        }
        MailboxName { parts }
    }
}

impl fmt::Display for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.parts.join("/"))
    }
}

impl fmt::Debug for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hierarchy() {
        let n = MailboxName::parse("Work/Prøjekt").unwrap();
        assert_eq!(n.parts(), ["Work", "Prøjekt"]);
        assert_eq!(n.to_string(), "Work/Prøjekt");
        assert_eq!(n.parent().unwrap().to_string(), "Work");
        assert!(MailboxName::parse("inbox").unwrap().is_inbox());
    }

    #[test]
    fn rejects_names_that_escape() {
        for bad in ["..", "a/../b", "a//b", "", "a/./b", "x\u{0}y"] {
            assert!(MailboxName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn control_characters_are_names_until_replaced() {
        let n = MailboxName::parse("Work/tab\there\u{1}").unwrap();
        assert!(n.has_control());
        let fixed = n.replace_chars(char::is_control, '_').unwrap();
        assert_eq!(fixed.to_string(), "Work/tab_here_");
        assert!(!fixed.has_control());
        assert!(n.replace_chars(char::is_control, '/').is_err());
        let dots = MailboxName::parse("\u{1}\u{2}").unwrap();
        assert!(
            dots.replace_chars(char::is_control, '.').is_err(),
            "'..' is no part"
        );
    }

    #[test]
    fn alt_chars_are_one_usable_character() {
        assert_eq!(parse_alt_char("_").unwrap(), '_');
        assert_eq!(parse_alt_char("+").unwrap(), '+');
        assert_eq!(parse_alt_char("ø").unwrap(), 'ø');
        for bad in ["", "__", "/", ".", "\t", "\u{7f}"] {
            let e = parse_alt_char(bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::ExitCode::Usage, "{bad:?}: {e}");
        }
    }
}
