//! Mailbox names as lists of hierarchy parts, independent of any store's separator.

use crate::{Error, Result};
use std::fmt;

/// A mailbox name, such as `Work/Prøjekt`, held as its hierarchy parts (`["Work", "Prøjekt"]`).
/// Every part has passed [`MailboxName::check_part`], so no store can be tricked into leaving its
/// root by a name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MailboxName {
    parts: Vec<String>,
}

/// The separator boxsync shows and parses names with (Dovecot's `separator = /`).
pub const SEPARATOR: char = '/';

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

    /// Rejects parts that are empty, `.` or `..`, contain `/`, NUL or other control characters,
    /// or are longer than a file name can be.
    pub fn check_part(part: &str) -> Result<()> {
        let bad = if part.is_empty() {
            Some("an empty hierarchy level")
        } else if part == "." || part == ".." {
            Some("a '.' or '..' hierarchy level")
        } else if part.contains('/') {
            Some("a '/' inside a hierarchy level")
        } else if part.chars().any(|c| c.is_control()) {
            Some("a control character")
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
        for bad in ["..", "a/../b", "a//b", "", "a/./b", "x\u{0}y", "tab\there"] {
            assert!(MailboxName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
