//! Bringing the index up to date with what a store's files hold now. Formats without modseqs
//! or an expunge history (Maildir, mbox, dbox read without Dovecot) list their messages; this
//! compares the list with the index, gives a fresh modseq to every message that is new or
//! changed since the last look, and journals the ones that are gone as expunged.

use crate::Message;
use boxsync_index::{ExpungedRow, Index, MailboxRow, MessageRow};
use boxsync_model::{Flags, Guid128, Keywords, MailboxName, Modseq, Result, Uid};
use std::collections::BTreeMap;

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

/// What the index knew of a message the files show.
enum Known {
    /// No row for it (or the row is of another message, or of another UIDVALIDITY).
    New,
    /// Same message, same flags: it keeps its modseq; `moved` is its row, when the file it
    /// is in has another name now.
    Same {
        modseq: Modseq,
        base: Option<(Flags, Keywords)>,
        moved: Option<MessageRow>,
    },
    /// Same message, other flags or keywords.
    Changed { base: Option<(Flags, Keywords)> },
}

/// Compares `seen` (in any order; a repeated UID counts once) with what the index held for
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
    seen.dedup_by_key(|s| s.uid);
    let row = index.mailbox(mailbox)?;
    let mut highest = row.as_ref().map_or(0, |r| r.highest_modseq);
    let uidvalidity_changed = row.as_ref().is_some_and(|r| r.uidvalidity != uidvalidity);

    // One walk over the rows and the files, both in UID order.
    let mut known: Vec<Known> = (0..seen.len()).map(|_| Known::New).collect();
    let mut gone: Vec<(Uid, String)> = Vec::new();
    let mut next = 0;
    index.visit_messages(mailbox, |p| {
        while seen.get(next).is_some_and(|s| s.uid < p.uid) {
            next += 1;
        }
        match seen.get(next) {
            Some(s) if s.uid == p.uid && p.guid == s.guid && !uidvalidity_changed => {
                known[next] = if p.flags == s.flags && p.keywords_are(&s.keywords) {
                    Known::Same {
                        modseq: p.modseq,
                        base: p.base(),
                        moved: (p.file != s.file).then(|| p.to_row()),
                    }
                } else {
                    Known::Changed { base: p.base() }
                };
            }
            _ => gone.push((p.uid, p.guid.to_owned())),
        }
        Ok(())
    })?;

    let mut puts: Vec<MessageRow> = Vec::new();
    let mut messages: Vec<Message> = Vec::with_capacity(seen.len());
    let mut files = Vec::with_capacity(seen.len());
    for (s, known) in seen.into_iter().zip(known) {
        let (modseq, base, new_row) = match known {
            Known::Same {
                modseq,
                base,
                moved,
            } => {
                if let Some(row) = moved {
                    puts.push(MessageRow {
                        file: s.file.clone(),
                        ..row
                    });
                }
                (modseq, base, false)
            }
            Known::Changed { base } => {
                highest += 1;
                (highest, base, true)
            }
            Known::New => {
                highest += 1;
                (highest, None, true)
            }
        };
        let m = Message {
            uid: s.uid,
            guid: s.guid,
            flags: s.flags,
            keywords: s.keywords,
            modseq,
            base,
            received: s.received,
            pop3_uidl: s.pop3_uidl,
            pop3_order: s.pop3_order,
        };
        if new_row {
            puts.push(m.index_row(s.file.clone()));
        }
        files.push((s.uid, s.file));
        messages.push(m);
    }

    let tx = index.transaction()?;
    // Rows of messages gone go first: a UID that now holds another message gets its new row
    // after the old one is deleted.
    for (uid, guid) in gone {
        highest += 1;
        tx.delete_message(mailbox, uid)?;
        if !uidvalidity_changed {
            tx.add_expunged(
                mailbox,
                &ExpungedRow {
                    uid,
                    guid,
                    modseq: highest,
                },
            )?;
        }
    }
    for row in &puts {
        tx.put_message(mailbox, row)?;
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
        files: files.into_iter().collect(),
        highest_modseq: highest,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(uid: Uid, guid: &str, flags: Flags) -> Seen {
        Seen {
            uid,
            guid: guid.to_owned(),
            file: format!("cur/{guid}:2,"),
            flags,
            keywords: Keywords::new(),
            received: 0,
            pop3_uidl: None,
            pop3_order: None,
        }
    }

    #[test]
    fn rows_follow_the_files_and_gone_mail_is_journalled() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("i.sqlite"), false).unwrap();
        let mailbox = Guid128::generate();
        let name = MailboxName::parse("INBOX").unwrap();
        let first = vec![
            seen(1, "a", Flags::EMPTY),
            seen(2, "b", Flags::EMPTY),
            seen(3, "c", Flags::EMPTY),
            seen(4, "d", Flags::EMPTY),
        ];
        let before = reconcile(&mut index, mailbox, &name, 7, 5, first, String::new()).unwrap();
        assert_eq!(before.highest_modseq, 4);

        // 1 unchanged, 2 flagged, 3 gone, 4 replaced by another message, 5 new; out of
        // order and with a repeat, as a listing may give them.
        let mut moved = seen(1, "a", Flags::EMPTY);
        moved.file = "new/a".to_owned();
        let now = vec![
            seen(5, "e", Flags::EMPTY),
            seen(4, "x", Flags::EMPTY),
            seen(2, "b", Flags::SEEN),
            moved,
            seen(2, "b", Flags::SEEN),
        ];
        let after = reconcile(&mut index, mailbox, &name, 7, 6, now, String::new()).unwrap();
        let modseqs: Vec<(Uid, &str, Modseq)> = after
            .messages
            .iter()
            .map(|m| (m.uid, m.guid.as_str(), m.modseq))
            .collect();
        assert_eq!(
            modseqs,
            [(1, "a", 1), (2, "b", 5), (4, "x", 6), (5, "e", 7)]
        );
        assert_eq!(after.files[&1], "new/a");

        let rows: Vec<(Uid, String, String)> = index
            .messages(mailbox)
            .unwrap()
            .into_iter()
            .map(|r| (r.uid, r.guid, r.file))
            .collect();
        let want: Vec<(Uid, String, String)> = after
            .messages
            .iter()
            .map(|m| (m.uid, m.guid.clone(), after.files[&m.uid].clone()))
            .collect();
        assert_eq!(rows, want, "the index holds what the files hold");
        let journal: Vec<(Uid, String)> = index
            .expunged_since(mailbox, 0)
            .unwrap()
            .into_iter()
            .map(|e| (e.uid, e.guid))
            .collect();
        assert_eq!(journal, [(3, "c".to_owned())]);
        assert_eq!(after.highest_modseq, 9);
    }
}
