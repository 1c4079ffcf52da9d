//! Between the server's mailbox names (modified UTF-7, its own separator, maybe under a
//! namespace prefix such as `INBOX.`) and boxsync's names. Special-use mailboxes are shown
//! under the usual names (`Sent`, `Trash`, …) when the server calls them something else, so
//! that `[Gmail]/Sent Mail` and a Maildir's `Sent` are one mailbox.

use boxsync_model::{Error, MailboxName, Result, mutf7};

/// The special-use attributes (RFC 6154) and the names boxsync shows them under.
pub const SPECIAL_USE_NAMES: [(&str, &str); 6] = [
    ("\\Sent", "Sent"),
    ("\\Trash", "Trash"),
    ("\\Drafts", "Drafts"),
    ("\\Junk", "Junk"),
    ("\\Archive", "Archive"),
    ("\\All", "All Mail"),
];

/// How the account names its mailboxes.
#[derive(Clone, Debug)]
pub struct ServerNames {
    /// The personal namespace prefix (`""` or `INBOX.`), with its separator.
    pub prefix: String,
    pub separator: Option<char>,
}

impl ServerNames {
    /// boxsync's name for a server name, or `None` for one that cannot be a boxsync name
    /// (an empty level, `..`): such mailboxes are reported and left alone.
    pub fn to_name(&self, raw: &str) -> Result<MailboxName> {
        if raw.eq_ignore_ascii_case("INBOX") {
            return Ok(MailboxName::inbox());
        }
        let rel = if !self.prefix.is_empty() && raw.starts_with(&self.prefix) {
            &raw[self.prefix.len()..]
        } else {
            raw
        };
        let parts: Vec<String> = match self.separator {
            Some(sep) => rel.split(sep).map(decode).collect(),
            None => vec![decode(rel)],
        };
        MailboxName::from_parts(parts)
            .map_err(|e| Error::data(format!("server mailbox {raw:?}: {e}")))
    }

    /// The server's name for a boxsync name.
    pub fn to_server(&self, name: &MailboxName) -> Result<String> {
        if name.is_inbox() {
            return Ok("INBOX".to_owned());
        }
        let parts = name.parts();
        if parts.len() > 1 && self.separator.is_none() {
            return Err(Error::data(format!(
                "mailbox {name}: the server has no hierarchy, so it cannot hold sub-mailboxes"
            )));
        }
        let mut encoded = Vec::with_capacity(parts.len());
        for p in parts {
            if let Some(sep) = self.separator
                && p.contains(sep)
            {
                return Err(Error::data(format!(
                    "mailbox {name}: {p:?} contains the server's hierarchy separator {sep:?}"
                )));
            }
            encoded.push(mutf7::encode(p));
        }
        let sep = self.separator.map(String::from).unwrap_or_default();
        Ok(format!("{}{}", self.prefix, encoded.join(&sep)))
    }

    /// The name a mailbox gets on this server for one another store calls `name`
    /// ([`crate::Store::fix_name`]): the server's separator inside a level becomes `alt`, and
    /// on a server without hierarchy the levels are joined by `alt` into one. `None` when
    /// that still cannot be a server name.
    pub fn fix_name(&self, name: &MailboxName, alt: char) -> Option<MailboxName> {
        if self.to_server(name).is_ok() {
            return Some(name.clone());
        }
        let fixed = match self.separator {
            Some(sep) => name.replace_chars(|c| c == sep, alt).ok()?,
            None => MailboxName::from_parts([name.parts().join(&alt.to_string())]).ok()?,
        };
        self.to_server(&fixed).is_ok().then_some(fixed)
    }
}

fn decode(part: &str) -> String {
    // A name that is not valid modified UTF-7 is taken as it is, as Dovecot's imapc does.
    mutf7::decode(part).unwrap_or_else(|| part.to_owned())
}

/// The usual name for a special-use attribute among `attributes`, if any.
pub fn special_use_name(attributes: &[String]) -> Option<&'static str> {
    attributes.iter().find_map(|a| {
        SPECIAL_USE_NAMES
            .iter()
            .find(|(attr, _)| attr.eq_ignore_ascii_case(a))
            .map(|(_, name)| *name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_with_separator_and_prefix() {
        let dovecot = ServerNames {
            prefix: String::new(),
            separator: Some('/'),
        };
        let n = dovecot.to_name("Work/Pr&APg-jekt").unwrap();
        assert_eq!(n.to_string(), "Work/Prøjekt");
        assert_eq!(dovecot.to_server(&n).unwrap(), "Work/Pr&APg-jekt");
        assert!(dovecot.to_name("inbox").unwrap().is_inbox());

        let courier = ServerNames {
            prefix: "INBOX.".to_owned(),
            separator: Some('.'),
        };
        let n = courier.to_name("INBOX.Work.Old").unwrap();
        assert_eq!(n.to_string(), "Work/Old");
        assert_eq!(courier.to_server(&n).unwrap(), "INBOX.Work.Old");
        assert_eq!(courier.to_server(&MailboxName::inbox()).unwrap(), "INBOX");
        let dotted = MailboxName::parse("v1.2").unwrap();
        assert!(courier.to_server(&dotted).is_err());
        assert!(dovecot.to_name("a//b").is_err());
    }

    #[test]
    fn names_the_server_cannot_hold_are_repaired() {
        let courier = ServerNames {
            prefix: "INBOX.".to_owned(),
            separator: Some('.'),
        };
        let dotted = MailboxName::parse("Work/v1.2").unwrap();
        let fixed = courier.fix_name(&dotted, '_').unwrap();
        assert_eq!(fixed.to_string(), "Work/v1_2");
        assert_eq!(courier.to_server(&fixed).unwrap(), "INBOX.Work.v1_2");
        assert_eq!(
            courier.fix_name(&dotted, '+').unwrap().to_string(),
            "Work/v1+2"
        );
        // What fits stays as it is, '/' included where it is not the separator.
        let slash = ServerNames {
            prefix: String::new(),
            separator: Some('/'),
        };
        assert_eq!(slash.fix_name(&dotted, '_'), Some(dotted.clone()));
        // No hierarchy: the levels become one name.
        let flat = ServerNames {
            prefix: String::new(),
            separator: None,
        };
        let fixed = flat.fix_name(&dotted, '_').unwrap();
        assert_eq!(fixed.to_string(), "Work_v1.2");
        assert!(flat.to_server(&fixed).is_ok());
        // An alt char that is the separator repairs nothing.
        assert_eq!(courier.fix_name(&dotted, '.'), None);
    }

    #[test]
    fn special_use_is_found_case_insensitively() {
        let attrs = vec!["\\HasNoChildren".to_owned(), "\\sent".to_owned()];
        assert_eq!(special_use_name(&attrs), Some("Sent"));
        assert_eq!(special_use_name(&["\\Noselect".to_owned()]), None);
    }
}
