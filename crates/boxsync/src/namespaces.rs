//! `namespace NAME { }` sections, as in dovecot.conf, and what `-n`, `-N`, `-m` and `-x` make
//! of them. boxsync syncs one namespace: the private one that holds INBOX and has no
//! `location` of its own (its mail is `mail_location`), which is what doveadm syncs by
//! default. Its `prefix` puts every mailbox but INBOX under a name (`INBOX/Sent`), and its
//! `separator` is the one `-m` and `-x` masks are written with. Shared and public namespaces
//! are reported as not supported yet.
//!
//! `\SpecialUse` masks name mailboxes by their `special_use` in the namespace's `mailbox`
//! sections; without any, by the list Dovecot ships (conf.d/15-mailboxes.conf) and the names
//! an IMAP store gives special-use mailboxes.

use crate::config::Section;
use boxsync_model::{Error, Result};
use boxsync_store::namespace::Namespace;

/// Dovecot's shipped `mailbox` sections (15-mailboxes.conf), plus the names boxsync's IMAP
/// store shows `\Archive` and `\All` mailboxes under.
const DEFAULT_SPECIAL_USE: &[(&str, &str)] = &[
    ("Drafts", "\\Drafts"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
    ("Sent", "\\Sent"),
    ("Sent Messages", "\\Sent"),
    ("Archive", "\\Archive"),
    ("All Mail", "\\All"),
];

/// Settings of a namespace section boxsync reads; the others in Dovecot's list are accepted
/// and have no effect here.
const NAMESPACE_KEYS: &[&str] = &[
    "type",
    "separator",
    "prefix",
    "location",
    "inbox",
    "hidden",
    "list",
    "subscriptions",
    "disabled",
    "alias_for",
    "ignore_on_failure",
    "order",
];

const MAILBOX_KEYS: &[&str] = &[
    "special_use",
    "auto",
    "autoexpunge",
    "autoexpunge_max_mails",
    "comment",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceConfig {
    pub name: String,
    /// `private`, `shared` or `public`.
    pub kind: String,
    pub prefix: String,
    pub separator: char,
    pub inbox: bool,
    /// Its own mail location; empty: `mail_location`.
    pub location: String,
    pub hidden: bool,
    pub disabled: bool,
    pub alias: bool,
    /// `mailbox NAME { special_use = \Sent }`: (mailbox name, special-use flag).
    pub special_use: Vec<(String, String)>,
}

impl Default for NamespaceConfig {
    fn default() -> NamespaceConfig {
        NamespaceConfig {
            name: "inbox".to_owned(),
            kind: "private".to_owned(),
            prefix: String::new(),
            separator: '/',
            inbox: true,
            location: String::new(),
            hidden: false,
            disabled: false,
            alias: false,
            special_use: Vec::new(),
        }
    }
}

fn yes(v: &str) -> bool {
    matches!(v, "yes" | "y" | "true" | "1")
}

impl NamespaceConfig {
    /// Reads a `namespace NAME { }` section; an unknown setting is an error naming its file
    /// and line.
    pub fn from_section(section: &Section) -> Result<NamespaceConfig> {
        let at = |file: &std::path::Path, line: usize| format!("{}:{line}", file.display());
        let mut ns = NamespaceConfig {
            name: section.name.clone().unwrap_or_default(),
            ..Default::default()
        };
        for s in &section.settings {
            let v = s.value.as_str();
            match s.key.as_str() {
                "type" => {
                    if !["private", "shared", "public"].contains(&v) {
                        return Err(Error::Config(format!(
                            "{}: namespace type {v:?} (private, shared or public)",
                            at(&s.file, s.line)
                        )));
                    }
                    ns.kind = v.to_owned();
                }
                "separator" => {
                    let mut chars = v.chars();
                    ns.separator = match (chars.next(), chars.next()) {
                        (Some(c), None) => c,
                        _ => {
                            return Err(Error::Config(format!(
                                "{}: namespace separator {v:?} must be one character",
                                at(&s.file, s.line)
                            )));
                        }
                    }
                }
                "prefix" => ns.prefix = v.to_owned(),
                "location" => ns.location = v.to_owned(),
                "inbox" => ns.inbox = yes(v),
                "hidden" => ns.hidden = yes(v),
                "disabled" => ns.disabled = yes(v),
                "alias_for" => ns.alias = !v.is_empty(),
                k if NAMESPACE_KEYS.contains(&k) => {}
                k => {
                    return Err(Error::Config(format!(
                        "{}: unknown namespace setting {k:?}",
                        at(&s.file, s.line)
                    )));
                }
            }
        }
        // A section with no `inbox` setting holds INBOX only if it says so.
        if section.get("inbox").is_none() {
            ns.inbox = false;
        }
        for m in &section.sections {
            if m.kind != "mailbox" {
                return Err(Error::Config(format!(
                    "{}: section {:?} inside a namespace (boxsync knows mailbox {{ }})",
                    at(&m.file, m.line),
                    m.kind
                )));
            }
            let name = m.name.clone().unwrap_or_default();
            for s in &m.settings {
                match s.key.as_str() {
                    "special_use" => {
                        for flag in s.value.split_whitespace() {
                            ns.special_use.push((name.clone(), flag.to_owned()));
                        }
                    }
                    k if MAILBOX_KEYS.contains(&k) => {}
                    k => {
                        return Err(Error::Config(format!(
                            "{}: unknown mailbox setting {k:?}",
                            at(&s.file, s.line)
                        )));
                    }
                }
            }
        }
        // Checked here, so that a bad prefix is reported with its section.
        Namespace::new(&ns.prefix, ns.separator)
            .map_err(|e| Error::Config(format!("{}: {e}", at(&section.file, section.line))))?;
        Ok(ns)
    }

    /// Whether doveadm would sync it without `-n`/`-N`: a private namespace on
    /// `mail_location`.
    fn is_synced(&self) -> bool {
        self.kind == "private" && self.location.is_empty() && !self.disabled && !self.alias
    }

    pub fn namespace(&self) -> Namespace {
        // Checked when the section was read.
        Namespace::new(&self.prefix, self.separator).unwrap_or_default()
    }

    /// `-m`/`-x` masks as the brain matches them: levels joined by `/`, the namespace prefix
    /// included, a `\SpecialUse` mask replaced by the names of those mailboxes.
    pub fn masks(&self, given: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for mask in given {
            if mask.starts_with('\\') {
                let configured: Vec<(&str, &str)> = self
                    .special_use
                    .iter()
                    .map(|(n, f)| (n.as_str(), f.as_str()))
                    .collect();
                let table = if configured.is_empty() {
                    DEFAULT_SPECIAL_USE
                } else {
                    &configured[..]
                };
                for (name, flag) in table {
                    if flag.eq_ignore_ascii_case(mask) {
                        out.push(self.joined(&format!("{}{name}", self.prefix)));
                    }
                }
                // A special use no mailbox has selects nothing.
                if !table.iter().any(|(_, f)| f.eq_ignore_ascii_case(mask)) {
                    tracing::warn!("{mask}: no mailbox has this special use");
                }
            } else {
                out.push(self.joined(mask));
            }
        }
        out
    }

    /// A name or mask written with this namespace's separator, as the brain joins levels.
    fn joined(&self, text: &str) -> String {
        if self.separator == '/' {
            text.to_owned()
        } else {
            text.chars()
                .map(|c| if c == self.separator { '/' } else { c })
                .collect()
        }
    }
}

/// The namespace to sync, from the config's sections and `-n`/`-N`; warnings for what is
/// left out.
pub fn select(
    sections: &[NamespaceConfig],
    prefixes: &[String],
    all_visible: bool,
) -> Result<(NamespaceConfig, Vec<String>)> {
    let mut warnings = Vec::new();
    let synced: Vec<&NamespaceConfig> = sections.iter().filter(|n| n.is_synced()).collect();
    let chosen = match synced.as_slice() {
        [] if sections.is_empty() => NamespaceConfig::default(),
        [] => {
            return Err(Error::Config(
                "no private namespace on mail_location in the config: boxsync syncs that one"
                    .into(),
            ));
        }
        [one] => (*one).clone(),
        many => {
            // Dovecot allows one private namespace per location; several here would split
            // one store under two prefixes.
            let names: Vec<&str> = many.iter().map(|n| n.name.as_str()).collect();
            return Err(Error::Config(format!(
                "namespaces {} all hold mail_location: boxsync syncs one (set location for the others)",
                names.join(", ")
            )));
        }
    };
    for p in prefixes {
        if *p == chosen.prefix {
            continue;
        }
        match sections.iter().find(|n| n.prefix == *p) {
            Some(n) => {
                return Err(Error::data(format!(
                    "-n {p:?}: namespace {} ({}{}) is not supported yet: boxsync syncs the \
                     private namespace on mail_location only",
                    n.name,
                    n.kind,
                    if n.location.is_empty() {
                        String::new()
                    } else {
                        format!(", location {}", n.location)
                    }
                )));
            }
            None => {
                return Err(Error::NotFound(format!(
                    "-n {p:?}: no namespace has this prefix"
                )));
            }
        }
    }
    if all_visible {
        for n in sections {
            if n.name != chosen.name && !n.hidden && !n.disabled && !n.alias {
                warnings.push(format!(
                    "-N: namespace {} ({}, prefix {:?}) skipped: only the private namespace on \
                     mail_location is supported yet",
                    n.name, n.kind, n.prefix
                ));
            }
        }
    }
    Ok((chosen, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn sections(text: &str) -> Result<Vec<NamespaceConfig>> {
        let config = parse_str(text, std::path::Path::new("boxsync.conf")).unwrap();
        config
            .sections_of("namespace")
            .map(NamespaceConfig::from_section)
            .collect()
    }

    const DOVECOT_STYLE: &str = "namespace inbox {\n  inbox = yes\n  separator = .\n  prefix = INBOX.\n  mailbox Trash {\n    special_use = \\Trash\n    auto = subscribe\n  }\n  mailbox \"Sent Items\" {\n    special_use = \\Sent\n  }\n}\nnamespace shared {\n  type = shared\n  separator = .\n  prefix = shared.%u.\n  location = maildir:%h/Maildir:INDEX=~/Maildir/shared/%u\n  list = children\n}\n";

    #[test]
    fn a_dovecot_namespace_section_is_read() {
        let ns = sections(DOVECOT_STYLE).unwrap();
        assert_eq!(ns.len(), 2);
        assert_eq!(ns[0].prefix, "INBOX.");
        assert_eq!(ns[0].separator, '.');
        assert!(ns[0].inbox);
        assert_eq!(
            ns[0].special_use,
            vec![
                ("Trash".to_owned(), "\\Trash".to_owned()),
                ("Sent Items".to_owned(), "\\Sent".to_owned())
            ]
        );
        assert_eq!(ns[1].kind, "shared");
    }

    #[test]
    fn masks_take_the_separator_and_special_use_of_the_namespace() {
        let ns = sections(DOVECOT_STYLE).unwrap();
        let inbox = &ns[0];
        assert_eq!(
            inbox.masks(&["INBOX.Lists.*".into(), "\\Sent".into(), "\\trash".into()]),
            vec!["INBOX/Lists/*", "INBOX/Sent Items", "INBOX/Trash"]
        );
        // Without mailbox sections, Dovecot's shipped list.
        let plain = NamespaceConfig::default();
        assert_eq!(
            plain.masks(&["\\Sent".into()]),
            vec!["Sent", "Sent Messages"]
        );
        assert_eq!(plain.masks(&["\\Flagged".into()]), Vec::<String>::new());
    }

    #[test]
    fn dash_n_selects_the_inbox_namespace_and_refuses_the_others() {
        let ns = sections(DOVECOT_STYLE).unwrap();
        let (chosen, warnings) = select(&ns, &["INBOX.".into()], false).unwrap();
        assert_eq!(chosen.name, "inbox");
        assert!(warnings.is_empty());
        let e = select(&ns, &["shared.%u.".into()], false).unwrap_err();
        assert_eq!(e.exit_code().code(), 65, "{e}");
        assert!(e.to_string().contains("not supported yet"), "{e}");
        let e = select(&ns, &["nope/".into()], false).unwrap_err();
        assert_eq!(e.exit_code().code(), 68, "{e}");
        let (_, warnings) = select(&ns, &[], true).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("namespace shared"), "{warnings:?}");
    }

    #[test]
    fn no_namespace_section_is_dovecots_default() {
        let (chosen, _) = select(&[], &["".into()], true).unwrap();
        assert_eq!(chosen.prefix, "");
        assert!(chosen.namespace().is_empty());
    }

    #[test]
    fn bad_namespace_sections_are_refused_with_their_line() {
        let e = sections("namespace inbox {\n  prefix = INBOX\n  separator = .\n}\n").unwrap_err();
        assert!(e.to_string().contains("must end with its separator"), "{e}");
        let e = sections("namespace inbox {\n  nonsense = 1\n}\n").unwrap_err();
        assert!(
            e.to_string().contains(":2: unknown namespace setting"),
            "{e}"
        );
        let e = sections("namespace inbox {\n  separator = ab\n}\n").unwrap_err();
        assert!(e.to_string().contains("one character"), "{e}");
        let two = "namespace a {\n  inbox = yes\n}\nnamespace b {\n  prefix = B/\n}\n";
        let e = select(&sections(two).unwrap(), &[], false).unwrap_err();
        assert_eq!(e.exit_code().code(), 78, "{e}");
    }
}
