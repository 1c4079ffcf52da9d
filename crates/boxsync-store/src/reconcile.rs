//! Bringing the index up to date with what a store's files hold now. Formats without modseqs
//! or an expunge history (Maildir, mbox, dbox read without Dovecot) list their messages; this
//! compares the list with the index, gives a fresh modseq to every message that is new or
//! changed since the last look, and journals the ones that are gone as expunged.

use crate::Message;
use boxsync_index::{ExpungedRow, Index, MailboxRow, MessageRow};
use boxsync_model::{Flags, Guid128, Keywords, MailboxName, Modseq, Result, Uid};
use std::collections::{BTreeMap, HashSet};

/// How much older than the scan a store's last change must be before its recorded signature
/// (mtimes, sizes) is trusted to mean "unchanged": file systems stamp mtimes with a coarse
/// clock, so a change in the same tick as the scan could go unseen.
pub(crate) const SIGNATURE_MARGIN_NS: i128 = 2_000_000_000;

/// Now, in nanoseconds since the epoch: the scan time signatures are compared with.
pub(crate) fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The messages of a mailbox as the index last recorded them, with each one's locator: what a
/// store serves for a mailbox whose scan was skipped. `received_of` reads the received date
/// from a locator, for stores that keep it there.
pub(crate) fn from_index(
    rows: Vec<MessageRow>,
    received_of: impl Fn(&str) -> i64,
) -> (Vec<Message>, BTreeMap<Uid, String>) {
    let mut messages = Vec::with_capacity(rows.len());
    let mut files = BTreeMap::new();
    for r in rows {
        messages.push(Message {
            uid: r.uid,
            guid: r.guid,
            flags: r.flags,
            keywords: r.keywords,
            modseq: r.modseq,
            base: r.base,
            received: received_of(&r.file),
            pop3_uidl: r.pop3_uidl,
            pop3_order: r.pop3_order,
        });
        files.insert(r.uid, r.file);
    }
    (messages, files)
}

/// One message as the files show it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub uid: Uid,
    pub guid: String,
    /// Where the store finds the message (its own locator: a file name, an offset).
    pub file: String,
    pub flags: Flags,
    pub keywords: Keywords,
    pub received: i64,
    pub pop3_uidl: Option<String>,
    pub pop3_order: Option<u32>,
}

/// A mailbox after [`reconcile`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub messages: Vec<Message>,
    /// Each message's locator, by UID.
    pub files: BTreeMap<Uid, String>,
    pub highest_modseq: Modseq,
    pub digest: u64,
}

/// Compares `seen` (sorted by UID; a repeated UID counts once) with what the index held for
/// `mailbox`, records the differences and the mailbox row, and returns the messages with their
/// modseqs. A changed UIDVALIDITY makes every old row stale: they are dropped, not journalled,
/// since the UIDs they name no longer mean anything.
#[allow(clippy::too_many_arguments)]
pub fn reconcile(
    index: &mut Index,
    mailbox: Guid128,
    name: &MailboxName,
    uidvalidity: u32,
    uidnext: Uid,
    mut seen: Vec<Seen>,
    scan_signature: String,
) -> Result<Reconciled> {
    seen.sort_by_key(|s| s.uid);
    let row = index.mailbox(mailbox)?;
    let old: BTreeMap<Uid, MessageRow> = index
        .messages(mailbox)?
        .into_iter()
        .map(|m| (m.uid, m))
        .collect();
    let mut highest = row.as_ref().map_or(0, |r| r.highest_modseq);
    let uidvalidity_changed = row.as_ref().is_some_and(|r| r.uidvalidity != uidvalidity);
    let mut messages: Vec<Message> = Vec::with_capacity(seen.len());
    let mut files = BTreeMap::new();
    let tx = index.transaction()?;
    for s in seen {
        if messages.last().is_some_and(|m| m.uid >= s.uid) {
            continue;
        }
        let prev = old
            .get(&s.uid)
            .filter(|p| p.guid == s.guid && !uidvalidity_changed);
        let (modseq, base) = match prev {
            Some(p) if p.flags == s.flags && p.keywords == s.keywords => {
                if p.file != s.file {
                    tx.put_message(
                        mailbox,
                        &MessageRow {
                            file: s.file.clone(),
                            ..p.clone()
                        },
                    )?;
                }
                (p.modseq, p.base.clone())
            }
            _ => {
                highest += 1;
                let base = prev.and_then(|p| p.base.clone());
                tx.put_message(
                    mailbox,
                    &MessageRow {
                        uid: s.uid,
                        guid: s.guid.clone(),
                        file: s.file.clone(),
                        flags: s.flags,
                        keywords: s.keywords.clone(),
                        modseq: highest,
                        base: base.clone(),
                        pop3_uidl: s.pop3_uidl.clone(),
                        pop3_order: s.pop3_order,
                    },
                )?;
                (highest, base)
            }
        };
        files.insert(s.uid, s.file);
        messages.push(Message {
            uid: s.uid,
            guid: s.guid,
            flags: s.flags,
            keywords: s.keywords,
            modseq,
            base,
            received: s.received,
            pop3_uidl: s.pop3_uidl,
            pop3_order: s.pop3_order,
        });
    }
    let present: HashSet<Uid> = messages.iter().map(|m| m.uid).collect();
    for (uid, prev) in &old {
        let same = messages
            .binary_search_by_key(uid, |m| m.uid)
            .ok()
            .map(|i| &messages[i]);
        if !present.contains(uid)
            || same.is_some_and(|m| m.guid != prev.guid)
            || uidvalidity_changed
        {
            highest += 1;
            tx.delete_message(mailbox, *uid)?;
            if !uidvalidity_changed {
                tx.add_expunged(
                    mailbox,
                    &ExpungedRow {
                        uid: *uid,
                        guid: prev.guid.clone(),
                        modseq: highest,
                    },
                )?;
            }
        }
    }
    let digest = crate::content_digest(&messages);
    tx.put_mailbox(&MailboxRow {
        guid: mailbox,
        name: name.to_string(),
        uidvalidity,
        uidnext,
        highest_modseq: highest,
        scan_signature,
        messages: messages.len() as u32,
        digest,
    })?;
    tx.commit()?;
    Ok(Reconciled {
        messages,
        files,
        highest_modseq: highest,
        digest,
    })
}
