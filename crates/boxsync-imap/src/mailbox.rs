//! Mailbox-level commands: LIST (with LIST-EXTENDED/LIST-STATUS/SPECIAL-USE when offered),
//! STATUS, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE.

use crate::session::{Incoming, What};
use crate::{ListEntry, Session, Status};
use boxsync_model::{Error, Result};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::flag::FlagNameAttribute;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::response::{Data, StatusBody, StatusKind};
use imap_codec::imap_types::status::{StatusDataItem, StatusDataItemName};
use std::collections::BTreeMap;

impl Session {
    /// All mailboxes with their attributes and subscription state, and their STATUS when
    /// the server has LIST-STATUS, in one round trip:
    /// `LIST "" "*" RETURN (SUBSCRIBED SPECIAL-USE STATUS (...))`. Without LIST-EXTENDED it
    /// is LIST plus LSUB, and a subscription without a mailbox gets `\NonExistent`.
    pub fn list(&mut self) -> Result<Vec<ListEntry>> {
        self.retrying(|s| {
            if s.has("LIST-EXTENDED") {
                s.list_extended()
            } else {
                s.list_and_lsub()
            }
        })
    }

    fn list_extended(&mut self) -> Result<Vec<ListEntry>> {
        let what = What::new("LIST", None);
        self.begin(&what)?;
        let mut ret = String::from(" RETURN (SUBSCRIBED");
        if self.has("SPECIAL-USE") {
            ret.push_str(" SPECIAL-USE");
        }
        if self.has("LIST-STATUS") {
            ret.push_str(" STATUS (MESSAGES UIDNEXT UIDVALIDITY");
            if self.condstore {
                ret.push_str(" HIGHESTMODSEQ");
            }
            ret.push(')');
        }
        ret.push(')');
        let body = list_body(false)?;
        // imap-types has no LIST return options yet: imap-codec encodes the LIST, the
        // options go after it.
        let tag = self.send_extended(body, |line| {
            line.extend_from_slice(ret.as_bytes());
            Ok(())
        })?;
        let mut entries = Vec::new();
        let mut statuses = BTreeMap::new();
        let done = self.wait(&tag, &mut |incoming| {
            match incoming {
                Incoming::Data(
                    Data::List {
                        items,
                        delimiter,
                        mailbox,
                    },
                    _,
                ) => entries.extend(entry(&items, delimiter.map(|d| d.inner()), &mailbox)),
                Incoming::Data(Data::Status { mailbox, items }, _) => {
                    if let Some(name) = mailbox_name(&mailbox) {
                        statuses.insert(name, status_from_items(&items));
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        self.check(done, &what)?;
        for e in &mut entries {
            e.status = statuses.remove(&e.name);
        }
        Ok(entries)
    }

    fn list_and_lsub(&mut self) -> Result<Vec<ListEntry>> {
        let what = What::new("LIST", None);
        self.begin(&what)?;
        let list_tag = self.send(list_body(false)?);
        let lsub_tag = self.send(list_body(true)?);
        let mut entries: Vec<ListEntry> = Vec::new();
        let mut subscribed: Vec<ListEntry> = Vec::new();
        let mut on = |incoming| {
            match incoming {
                Incoming::Data(
                    Data::List {
                        items,
                        delimiter,
                        mailbox,
                    },
                    _,
                ) => entries.extend(entry(&items, delimiter.map(|d| d.inner()), &mailbox)),
                Incoming::Data(
                    Data::Lsub {
                        items,
                        delimiter,
                        mailbox,
                    },
                    _,
                ) => subscribed.extend(entry(&items, delimiter.map(|d| d.inner()), &mailbox)),
                _ => {}
            }
            Ok(())
        };
        let list_done = self.wait(&list_tag, &mut on)?;
        let lsub_done = self.wait(&lsub_tag, &mut on)?;
        self.check(list_done, &what)?;
        self.check(lsub_done, &What::new("LSUB", None))?;
        for sub in subscribed {
            match entries.iter_mut().find(|e| e.name == sub.name) {
                Some(e) => e.subscribed = true,
                None => {
                    let mut attributes = sub.attributes;
                    attributes.push("\\NonExistent".into());
                    entries.push(ListEntry {
                        subscribed: true,
                        attributes,
                        ..sub
                    });
                }
            }
        }
        Ok(entries)
    }

    /// STATUS (MESSAGES UIDNEXT UIDVALIDITY [HIGHESTMODSEQ]) of one mailbox.
    pub fn status(&mut self, mailbox: &str) -> Result<Status> {
        self.retrying(|s| s.status_once(mailbox))
    }

    fn status_once(&mut self, name: &str) -> Result<Status> {
        let what = What::new("STATUS", Some(name));
        let mut item_names = vec![
            StatusDataItemName::Messages,
            StatusDataItemName::UidNext,
            StatusDataItemName::UidValidity,
        ];
        if self.condstore {
            item_names.push(StatusDataItemName::HighestModSeq);
        }
        let body = CommandBody::Status {
            mailbox: mailbox_arg(name)?,
            item_names: item_names.into(),
        };
        let mut got = None;
        self.begin(&what)?;
        let tag = self.send(body);
        let done = self.wait(&tag, &mut |incoming| {
            if let Incoming::Data(Data::Status { mailbox, items }, _) = incoming
                && mailbox_name(&mailbox).is_some_and(|m| same_mailbox(&m, name))
            {
                got = Some(status_from_items(&items));
            }
            Ok(())
        })?;
        self.check_mailbox_refusal(done, &what, name)?;
        got.ok_or_else(|| {
            Error::data(format!(
                "imapc({}): STATUS {name}: the server sent no STATUS data",
                self.host
            ))
        })
    }

    /// Like `check`, but a bare NO (no response code) is checked with LIST: Dovecot 2.3
    /// answers SELECT or STATUS of a missing mailbox with just "NO Mailbox doesn't exist",
    /// and the caller must tell a missing mailbox (`NotFound`) from other refusals.
    pub(crate) fn check_mailbox_refusal(
        &mut self,
        done: StatusBody<'static>,
        what: &What,
        name: &str,
    ) -> Result<StatusBody<'static>> {
        if done.kind == StatusKind::No && done.code.is_none() && !self.mailbox_exists(name)? {
            return Err(Error::NotFound(format!(
                "imapc({}): {what} failed: mailbox does not exist: {}",
                self.host,
                done.text.inner()
            )));
        }
        self.check(done, what)
    }

    fn mailbox_exists(&mut self, name: &str) -> Result<bool> {
        let body = CommandBody::List {
            reference: mailbox_arg("")?,
            mailbox_wildcard: ListMailbox::try_from(name.to_owned())
                .map_err(|e| Error::Usage(format!("imapc: invalid mailbox name {name:?}: {e}")))?,
        };
        let mut exists = false;
        self.run(body, &What::new("LIST", Some(name)), &mut |incoming| {
            if let Incoming::Data(Data::List { items, mailbox, .. }, _) = incoming
                && mailbox_name(&mailbox).is_some_and(|m| same_mailbox(&m, name))
            {
                exists = !items
                    .iter()
                    .any(|a| a.to_string().eq_ignore_ascii_case("\\NonExistent"));
            }
            Ok(())
        })?;
        Ok(exists)
    }

    pub fn create(&mut self, mailbox: &str) -> Result<()> {
        let body = CommandBody::Create {
            mailbox: mailbox_arg(mailbox)?,
        };
        self.run(body, &What::new("CREATE", Some(mailbox)), &mut |_| Ok(()))
            .map(drop)
    }

    pub fn delete(&mut self, mailbox: &str) -> Result<()> {
        let body = CommandBody::Delete {
            mailbox: mailbox_arg(mailbox)?,
        };
        self.run(body, &What::new("DELETE", Some(mailbox)), &mut |_| Ok(()))
            .map(drop)
    }

    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let body = CommandBody::Rename {
            from: mailbox_arg(from)?,
            to: mailbox_arg(to)?,
        };
        self.run(body, &What::new("RENAME", Some(from)), &mut |_| Ok(()))
            .map(drop)
    }

    pub fn subscribe(&mut self, mailbox: &str) -> Result<()> {
        let body = CommandBody::Subscribe {
            mailbox: mailbox_arg(mailbox)?,
        };
        self.run(
            body,
            &What::new("SUBSCRIBE", Some(mailbox)),
            &mut |_| Ok(()),
        )
        .map(drop)
    }

    pub fn unsubscribe(&mut self, mailbox: &str) -> Result<()> {
        let body = CommandBody::Unsubscribe {
            mailbox: mailbox_arg(mailbox)?,
        };
        self.run(body, &What::new("UNSUBSCRIBE", Some(mailbox)), &mut |_| {
            Ok(())
        })
        .map(drop)
    }
}

fn list_body(lsub: bool) -> Result<CommandBody<'static>> {
    let body = if lsub {
        CommandBody::lsub("", "*")
    } else {
        CommandBody::list("", "*")
    };
    // Invariant: "" and "*" are a valid reference and pattern.
    body.map(IntoStatic::into_static)
        .map_err(|e| Error::Usage(format!("imapc: LIST arguments: {e:?}")))
}

/// A raw wire name as a command argument.
pub(crate) fn mailbox_arg(name: &str) -> Result<Mailbox<'static>> {
    Mailbox::try_from(name.to_owned())
        .map_err(|e| Error::Usage(format!("imapc: invalid mailbox name {name:?}: {e}")))
}

/// A mailbox name as the server sent it; `None` if it is not UTF-8 (a server with
/// modified UTF-7 names never sends that).
pub(crate) fn mailbox_name(mailbox: &Mailbox) -> Option<String> {
    match mailbox {
        Mailbox::Inbox => Some("INBOX".to_owned()),
        Mailbox::Other(other) => String::from_utf8(other.as_ref().to_vec()).ok(),
    }
}

fn same_mailbox(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

pub(crate) fn entry(
    items: &[FlagNameAttribute],
    separator: Option<char>,
    mailbox: &Mailbox,
) -> Option<ListEntry> {
    let Some(name) = mailbox_name(mailbox) else {
        tracing::warn!("imapc: skipping a mailbox whose name is not UTF-8: {mailbox:?}");
        return None;
    };
    let mut subscribed = false;
    let mut attributes = Vec::with_capacity(items.len());
    for item in items {
        let text = item.to_string();
        if text.eq_ignore_ascii_case("\\Subscribed") {
            subscribed = true;
        } else {
            attributes.push(text);
        }
    }
    Some(ListEntry {
        name,
        separator,
        attributes,
        subscribed,
        status: None,
    })
}

pub(crate) fn status_from_items(items: &[StatusDataItem]) -> Status {
    let mut status = Status::default();
    for item in items {
        match item {
            StatusDataItem::Messages(n) => status.messages = *n,
            StatusDataItem::UidNext(n) => status.uidnext = n.get(),
            StatusDataItem::UidValidity(n) => status.uidvalidity = n.get(),
            StatusDataItem::HighestModSeq(n) => status.highestmodseq = Some(*n).filter(|&m| m > 0),
            _ => {}
        }
    }
    status
}
