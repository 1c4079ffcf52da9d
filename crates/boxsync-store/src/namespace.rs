//! Dovecot's inbox namespace: the names a user (an IMAP client, `-m`, `-x`) and the dsync wire
//! see are the store's names under the namespace `prefix` (`INBOX/Sent` for a store's `Sent`
//! with `prefix = INBOX/`); INBOX itself keeps its name. [`Namespaced`] wraps a store so that
//! the brain deals in those names only, as Dovecot's dsync does, and a boxsync talking to a
//! Dovecot with the same namespace settings names every mailbox as it does.

use crate::{
    ExpungedRow, HeaderUpdate, MailboxEntry, MailboxWriter, Message, Store, SyncLock, Tombstones,
};
use boxsync_model::{Error, Guid128, MailboxName, Modseq, Result, Uid};
use boxsync_proto::MailBody;

/// The namespace's prefix as hierarchy levels (`INBOX/` → `["INBOX"]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    prefix: Vec<String>,
    /// The prefix as configured, separator included.
    text: String,
}

impl Namespace {
    /// A namespace from Dovecot's `prefix` setting, which ends with the `separator` (or is
    /// empty).
    pub fn new(prefix: &str, separator: char) -> Result<Namespace> {
        if prefix.is_empty() {
            return Ok(Namespace::default());
        }
        let Some(levels) = prefix.strip_suffix(separator) else {
            return Err(Error::Config(format!(
                "namespace prefix {prefix:?} must end with its separator {separator:?}"
            )));
        };
        let name = MailboxName::from_parts(levels.split(separator))
            .map_err(|e| Error::Config(format!("namespace prefix {prefix:?}: {e}")))?;
        Ok(Namespace {
            prefix: name.parts().to_vec(),
            text: prefix.to_owned(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.prefix.is_empty()
    }

    /// The prefix as configured (`Mail.`).
    pub fn prefix(&self) -> &str {
        &self.text
    }

    /// The name a user sees for a store's mailbox.
    pub fn outer(&self, name: &MailboxName) -> MailboxName {
        if self.prefix.is_empty() || name.is_inbox() {
            return name.clone();
        }
        let parts = self.prefix.iter().chain(name.parts()).cloned();
        // Both halves are valid levels, so their concatenation is a valid name.
        MailboxName::from_parts(parts).unwrap_or_else(|_| name.clone())
    }

    /// The store's name for a name a user sees; `None` for one outside the namespace.
    pub fn inner(&self, name: &MailboxName) -> Option<MailboxName> {
        if self.prefix.is_empty() || name.is_inbox() {
            return Some(name.clone());
        }
        let rest = name.parts().strip_prefix(&self.prefix[..])?;
        MailboxName::from_parts(rest.iter().cloned()).ok()
    }

    fn inner_or_err(&self, name: &MailboxName) -> Result<MailboxName> {
        self.inner(name).ok_or_else(|| {
            Error::data(format!(
                "mailbox {name} is outside the namespace prefix {}/ of this side: give both \
                 sides the same namespace settings",
                self.prefix.join("/")
            ))
        })
    }
}

/// Whether two prefixes as configured (each with its own separator) name the same levels:
/// `Mail.` and `Mail/` do.
pub fn same_prefix(a: &str, b: &str) -> bool {
    fn levels(p: &str) -> Vec<&str> {
        match p.chars().last() {
            None => Vec::new(),
            Some(sep) => p[..p.len() - sep.len_utf8()].split(sep).collect(),
        }
    }
    levels(a) == levels(b)
}

/// A store seen through a namespace: see the module documentation.
pub struct Namespaced {
    inner: Box<dyn Store + Send>,
    namespace: Namespace,
}

impl Namespaced {
    pub fn new(inner: Box<dyn Store + Send>, namespace: Namespace) -> Namespaced {
        Namespaced { inner, namespace }
    }
}

impl Store for Namespaced {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn lock_sync(&self, timeout: std::time::Duration) -> Result<SyncLock> {
        self.inner.lock_sync(timeout)
    }

    fn mailboxes(&self) -> Vec<MailboxEntry> {
        let mut boxes = self.inner.mailboxes();
        for b in &mut boxes {
            b.name = self.namespace.outer(&b.name);
        }
        boxes
    }

    fn tombstones(&self) -> Tombstones {
        self.inner.tombstones()
    }

    fn broken_mailboxes(&self) -> Vec<MailboxName> {
        self.inner
            .broken_mailboxes()
            .iter()
            .map(|n| self.namespace.outer(n))
            .collect()
    }

    fn namespace_prefix(&self) -> String {
        self.namespace.text.clone()
    }

    fn fix_name(&self, name: &MailboxName, alt: char) -> Option<MailboxName> {
        // A name outside the namespace is refused when it is created, by name.
        match self.namespace.inner(name) {
            Some(inner) => self
                .inner
                .fix_name(&inner, alt)
                .map(|n| self.namespace.outer(&n)),
            None => Some(name.clone()),
        }
    }

    fn load(&mut self, mailbox: Guid128) -> Result<()> {
        self.inner.load(mailbox)
    }

    fn messages(&self, mailbox: Guid128) -> Result<&[Message]> {
        self.inner.messages(mailbox)
    }

    fn expunged_since(&self, mailbox: Guid128, since: Modseq) -> Result<Vec<ExpungedRow>> {
        self.inner.expunged_since(mailbox, since)
    }

    fn body(&self, mailbox: Guid128, uid: Uid) -> Result<Box<dyn MailBody>> {
        self.inner.body(mailbox, uid)
    }

    fn create_mailbox(
        &mut self,
        name: &MailboxName,
        guid: Guid128,
        uidvalidity: u32,
    ) -> Result<()> {
        let inner = self.namespace.inner_or_err(name)?;
        self.inner.create_mailbox(&inner, guid, uidvalidity)
    }

    fn delete_mailbox(&mut self, guid: Guid128) -> Result<()> {
        self.inner.delete_mailbox(guid)
    }

    fn rename_mailbox(&mut self, guid: Guid128, to: &MailboxName) -> Result<()> {
        let inner = self.namespace.inner_or_err(to)?;
        self.inner.rename_mailbox(guid, &inner)
    }

    fn change_mailbox_guid(&mut self, old: Guid128, new: Guid128) -> Result<()> {
        self.inner.change_mailbox_guid(old, new)
    }

    fn set_subscribed(&mut self, name: &MailboxName, subscribed: bool) -> Result<()> {
        let inner = self.namespace.inner_or_err(name)?;
        self.inner.set_subscribed(&inner, subscribed)
    }

    fn record_agreed_flags(&mut self, mailbox: Guid128) -> Result<()> {
        self.inner.record_agreed_flags(mailbox)
    }

    fn writer(
        &mut self,
        mailbox: Guid128,
        header: HeaderUpdate,
    ) -> Result<Box<dyn MailboxWriter + '_>> {
        self.inner.writer(mailbox, header)
    }

    fn flush(&mut self) -> Result<crate::WriteReport> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> MailboxName {
        MailboxName::parse(s).unwrap()
    }

    #[test]
    fn names_go_under_the_prefix_and_back_and_inbox_keeps_its_name() {
        let ns = Namespace::new("INBOX.", '.').unwrap();
        assert_eq!(ns.outer(&name("Sent")), name("INBOX/Sent"));
        assert_eq!(ns.outer(&name("Lists/rust")), name("INBOX/Lists/rust"));
        assert_eq!(ns.outer(&name("INBOX")), name("INBOX"));
        assert_eq!(ns.inner(&name("INBOX/Sent")), Some(name("Sent")));
        assert_eq!(ns.inner(&name("INBOX")), Some(name("INBOX")));
        assert_eq!(ns.inner(&name("Sent")), None);
        // A store's own INBOX child is under the prefix twice.
        assert_eq!(ns.outer(&name("INBOX/x")), name("INBOX/INBOX/x"));
        assert_eq!(ns.inner(&name("INBOX/INBOX/x")), Some(name("INBOX/x")));
    }

    #[test]
    fn a_prefix_of_several_levels() {
        let ns = Namespace::new("Mail/Private/", '/').unwrap();
        assert_eq!(ns.outer(&name("Sent")), name("Mail/Private/Sent"));
        assert_eq!(ns.inner(&name("Mail/Private/Sent")), Some(name("Sent")));
        assert_eq!(ns.inner(&name("Mail/Sent")), None);
    }

    #[test]
    fn prefixes_with_other_separators_name_the_same_levels() {
        assert!(same_prefix("Mail.", "Mail."));
        assert!(same_prefix("Mail.", "Mail/"));
        assert!(!same_prefix("Mail.", ""));
        assert!(!same_prefix("Mail.", "INBOX."));
        assert!(!same_prefix("Mail.", "Mail.Sub."));
        assert!(same_prefix("", ""));
        assert!(!same_prefix("", "Mail/"));
    }

    #[test]
    fn an_empty_prefix_changes_nothing() {
        let ns = Namespace::new("", '/').unwrap();
        assert!(ns.is_empty());
        assert_eq!(ns.outer(&name("Sent")), name("Sent"));
        assert_eq!(ns.inner(&name("Sent")), Some(name("Sent")));
    }

    #[test]
    fn a_prefix_without_its_separator_is_refused() {
        assert!(Namespace::new("INBOX", '.').is_err());
        assert!(Namespace::new("INBOX/", '.').is_err());
        assert!(Namespace::new("a..", '.').is_err());
    }
}
