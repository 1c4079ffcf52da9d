//! Changes to one mailbox of the account. Saves go out as pipelined APPENDs in batches; flag
//! changes, expunges and renumbering are applied at the end, in the Maildir writer's order
//! (flags, expunges, UID moves, agreed flags). A renumbering only changes the index: the
//! server's message stays where it is under another UID of ours.
//!
//! A connection lost during an APPEND batch is opened again and the batch's messages looked
//! for by header hash and size above the UIDNEXT from before it, so a message the server took
//! just before the drop is not appended twice.

use super::{ImapcStore, ServerRef, flags_to_imap, message_of, uid_sets};
use crate::{HeaderUpdate, MailboxWriter, SaveMeta, Store, WriteReport, content_digest, hdr_hash};
use boxsync_imap::{Append, MetaRequest, Session, StoreMode};
use boxsync_index::{ExpungedRow, MailboxRow, MessageRow};
use boxsync_model::{Error, Flags, Guid128, Keywords, Result, Uid};
use boxsync_proto::MailBody;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// A batch goes out when it holds this many messages or bytes.
const BATCH_MESSAGES: usize = 64;
const BATCH_BYTES: usize = 16 << 20;

struct PendingSave {
    uid: Uid,
    flags: Vec<String>,
    received: i64,
    hash: String,
    body: Vec<u8>,
}

pub(crate) struct Writer<'a> {
    store: &'a mut ImapcStore,
    mailbox: Guid128,
    server: String,
    header: HeaderUpdate,
    rows: BTreeMap<Uid, (MessageRow, Option<ServerRef>)>,
    pending: Vec<PendingSave>,
    pending_bytes: usize,
    flag_sets: BTreeMap<Uid, (Flags, Keywords)>,
    expunges: Vec<Uid>,
    moves: Vec<(Uid, Uid)>,
    bases: BTreeMap<Uid, (Flags, Keywords)>,
    /// Index rows to write and to delete at the end.
    touched: BTreeSet<Uid>,
    removed: BTreeSet<Uid>,
    journal: Vec<ExpungedRow>,
    report: WriteReport,
    /// Server UIDs of messages the index no longer points to.
    stray: Vec<u32>,
    /// UIDs saved by this writer: an expunge of one of them means the message it replaced.
    saved: BTreeSet<Uid>,
}

impl<'a> Writer<'a> {
    pub fn new(store: &'a mut ImapcStore, mailbox: Guid128, header: HeaderUpdate) -> Result<Self> {
        let b = store.imap_box(mailbox)?;
        let server = b.server.clone();
        let mut rows = BTreeMap::new();
        for m in &b.messages {
            let sref = b.refs.get(&m.uid).cloned();
            rows.insert(m.uid, (m.index_row(String::new()), sref));
        }
        Ok(Writer {
            store,
            mailbox,
            server,
            header,
            rows,
            pending: Vec::new(),
            pending_bytes: 0,
            flag_sets: BTreeMap::new(),
            expunges: Vec::new(),
            moves: Vec::new(),
            bases: BTreeMap::new(),
            touched: BTreeSet::new(),
            removed: BTreeSet::new(),
            journal: Vec::new(),
            report: WriteReport::default(),
            stray: Vec::new(),
            saved: BTreeSet::new(),
        })
    }

    fn hashed_headers(&self) -> Vec<&str> {
        self.store
            .location
            .hashed_headers
            .iter()
            .map(String::as_str)
            .collect()
    }

    /// Sends the pending saves and records where the server put them.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let server = self.server.clone();
        let before = self.store.session.status(&server)?.uidnext;
        let uids = match append_all(&mut self.store.session, &server, &pending) {
            Ok(uids) => uids,
            Err(Error::Temp(msg)) => {
                tracing::warn!("{msg}; connecting again to see what {server} got");
                self.store.session = Session::connect(&self.store.location.config)?;
                let found = self.locate(before, &pending)?;
                let missing: Vec<usize> =
                    (0..pending.len()).filter(|&i| found[i].is_none()).collect();
                let again: Vec<&PendingSave> = missing.iter().map(|&i| &pending[i]).collect();
                let resent = append_refs(&mut self.store.session, &server, &again)?;
                let mut uids = found;
                for (i, u) in missing.into_iter().zip(resent) {
                    uids[i] = u;
                }
                uids
            }
            Err(e) => return Err(e),
        };
        let uids = if uids.iter().any(Option::is_none) {
            // No UIDPLUS: find them the same way as after a lost connection.
            let found = self.locate(before, &pending)?;
            uids.into_iter().zip(found).map(|(a, b)| a.or(b)).collect()
        } else {
            uids
        };
        for (p, server_uid) in pending.iter().zip(uids) {
            let Some(server_uid) = server_uid else {
                return Err(Error::temp(format!(
                    "{}: the server accepted message UID {} into {server} but it cannot be found \
                     there",
                    self.store.describe(),
                    p.uid
                )));
            };
            if let Some((_, sref)) = self.rows.get_mut(&p.uid) {
                *sref = Some(ServerRef {
                    uid: server_uid,
                    received: p.received,
                    size: super::body::crlf_size(&p.body),
                    hash: p.hash.clone(),
                });
            }
            self.report.saved += 1;
            self.report.bytes += p.body.len() as u64;
        }
        Ok(())
    }

    /// The server UIDs, at or above `from`, of messages with the same header hash and size as
    /// each of `pending` (first come, first matched).
    fn locate(&mut self, from: u32, pending: &[PendingSave]) -> Result<Vec<Option<u32>>> {
        let headers = self.store.location.hashed_headers.clone();
        let req = MetaRequest {
            guid: None,
            header_fields: Some(&headers),
            changed_since: None,
            vanished: false,
            internaldate_and_size: true,
        };
        let server = self.server.clone();
        self.store.session.select(&server, false, None)?;
        let (metas, _) = self.store.session.fetch_meta(&format!("{from}:*"), &req)?;
        let fields = self.hashed_headers();
        let mut candidates: Vec<(u32, String, u64)> = metas
            .iter()
            .filter(|m| m.uid >= from)
            .map(|m| {
                (
                    m.uid,
                    hdr_hash::header_hash(m.header.as_deref().unwrap_or(b""), &fields, 3),
                    m.size.unwrap_or(0),
                )
            })
            .collect();
        candidates.sort_by_key(|c| c.0);
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            let pos = candidates
                .iter()
                .position(|(_, h, s)| *h == p.hash && *s == super::body::crlf_size(&p.body));
            out.push(pos.map(|i| candidates.remove(i).0));
        }
        Ok(out)
    }

    fn finish_inner(&mut self) -> Result<WriteReport> {
        self.flush()?;
        let modseq = self.header.change_modseq;
        let server = self.server.clone();

        // Flags: one STORE per distinct flag set.
        let mut by_flags: BTreeMap<Vec<String>, Vec<u32>> = BTreeMap::new();
        for (uid, (flags, kws)) in std::mem::take(&mut self.flag_sets) {
            let Some((row, sref)) = self.rows.get_mut(&uid) else {
                self.report.changed_during_sync = true;
                continue;
            };
            if (row.flags, &row.keywords) == (flags, &kws) {
                continue;
            }
            row.flags = flags;
            row.keywords = kws.clone();
            row.modseq = modseq;
            self.touched.insert(uid);
            self.report.flag_changes += 1;
            if let Some(s) = sref {
                by_flags
                    .entry(flags_to_imap(flags, &kws))
                    .or_default()
                    .push(s.uid);
            }
        }
        if !by_flags.is_empty() {
            self.store.session.select(&server, false, None)?;
        }
        for (names, uids) in &by_flags {
            for set in uid_sets(uids) {
                self.store
                    .session
                    .store_flags(&set, names, StoreMode::Replace)?;
            }
        }

        let mut gone = std::mem::take(&mut self.stray);
        for uid in std::mem::take(&mut self.expunges) {
            if self.saved.contains(&uid) {
                // The message this writer replaced, already on its way out (`stray`).
                self.report.expunged += 1;
                continue;
            }
            let Some((row, sref)) = self.rows.remove(&uid) else {
                continue;
            };
            if let Some(s) = sref {
                gone.push(s.uid);
            }
            self.removed.insert(uid);
            self.touched.remove(&uid);
            self.journal.push(ExpungedRow {
                uid,
                guid: row.guid,
                modseq,
            });
            self.report.expunged += 1;
        }
        if !gone.is_empty() {
            self.store.session.select(&server, false, None)?;
            for set in uid_sets(&gone) {
                self.store
                    .session
                    .store_flags(&set, &["\\Deleted".to_owned()], StoreMode::Add)?;
                self.store.session.uid_expunge(&set)?;
            }
        }

        // Renumbering: out first, then in, so that swaps cannot collide.
        let mut moved = Vec::new();
        for (from, to) in std::mem::take(&mut self.moves) {
            match self.rows.remove(&from) {
                Some((row, sref)) => {
                    self.removed.insert(from);
                    self.touched.remove(&from);
                    self.journal.push(ExpungedRow {
                        uid: from,
                        guid: row.guid.clone(),
                        modseq,
                    });
                    moved.push((to, row, sref));
                }
                None => self.report.changed_during_sync = true,
            }
        }
        for (to, mut row, sref) in moved {
            if self.rows.contains_key(&to) {
                return Err(Error::temp(format!(
                    "{}: UID {to} was taken during the sync",
                    self.store.describe()
                )));
            }
            row.uid = to;
            row.modseq = modseq;
            self.rows.insert(to, (row, sref));
            self.removed.remove(&to);
            self.touched.insert(to);
        }
        for (uid, base) in std::mem::take(&mut self.bases) {
            if let Some((row, _)) = self.rows.get_mut(&uid) {
                row.base = Some(base);
                self.touched.insert(uid);
            }
        }

        // The index, in one transaction.
        let max_uid = self.rows.keys().next_back().copied().unwrap_or(0);
        let uidnext = self.header.uidnext.max(max_uid + 1);
        let mut messages = Vec::with_capacity(self.rows.len());
        let mut refs = BTreeMap::new();
        for (uid, (row, sref)) in &self.rows {
            if let Some(s) = sref {
                messages.push(message_of(row, s));
                refs.insert(*uid, s.clone());
            }
        }
        let digest = content_digest(&messages);
        let old = self.store.index.mailbox(self.mailbox)?;
        let name = self.store.imap_box(self.mailbox)?.name.to_string();
        let tx = self.store.index.transaction()?;
        for uid in &self.removed {
            tx.delete_message(self.mailbox, *uid)?;
        }
        for e in &self.journal {
            // A UID that holds a message again (a move onto it) keeps no journal entry.
            if !self.rows.contains_key(&e.uid) {
                tx.add_expunged(self.mailbox, e)?;
            }
        }
        for uid in &self.touched {
            if let Some((row, Some(sref))) = self.rows.get(uid) {
                let mut row = row.clone();
                row.file = sref.encode();
                tx.put_message(self.mailbox, &row)?;
            }
        }
        tx.put_mailbox(&MailboxRow {
            guid: self.mailbox,
            name,
            uidvalidity: self.header.uidvalidity,
            uidnext,
            highest_modseq: self.header.highest_modseq,
            // The server's counters from before these changes: the next run looks again and
            // finds only what it wrote, unless someone else changed something meanwhile.
            scan_signature: old.map(|r| r.scan_signature).unwrap_or_default(),
            messages: messages.len() as u32,
            digest,
        })?;
        tx.commit()?;
        if let Some(b) = self.store.boxes.get_mut(&self.mailbox) {
            b.uidvalidity = self.header.uidvalidity;
            b.uidnext = uidnext;
            b.highest_modseq = self.header.highest_modseq;
            b.count = messages.len() as u32;
            b.digest = digest;
            b.messages = messages;
            b.refs = refs;
            b.loaded = true;
        }
        Ok(std::mem::take(&mut self.report))
    }
}

fn append_refs(
    session: &mut Session,
    mailbox: &str,
    items: &[&PendingSave],
) -> Result<Vec<Option<u32>>> {
    // The bodies are lent, not cloned: the session writes them from here.
    let mut it = items.iter().map(|p| {
        Ok(Append {
            flags: p.flags.clone(),
            internaldate: (p.received > 0).then_some(p.received),
            body: &p.body,
        })
    });
    session.append_many(mailbox, &mut it)
}

fn append_all(
    session: &mut Session,
    mailbox: &str,
    items: &[PendingSave],
) -> Result<Vec<Option<u32>>> {
    let refs: Vec<&PendingSave> = items.iter().collect();
    append_refs(session, mailbox, &refs)
}

impl MailboxWriter for Writer<'_> {
    fn save(&mut self, meta: SaveMeta, body: &dyn MailBody) -> Result<()> {
        let limit = self.store.location.config.max_message_size;
        // Room for the whole body up front (a byte more to see one over the limit), so a big
        // message is not grown, and copied, step by step.
        let mut bytes =
            Vec::with_capacity(body.size().unwrap_or(0).min(limit.saturating_add(1)) as usize);
        body.open()
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(|e| Error::io(format!("reading the body of UID {}", meta.uid), e))?;
        if bytes.len() as u64 > limit {
            return Err(Error::data(format!(
                "message UID {} is {} bytes, over the {limit} bytes boxsync sends to a server",
                meta.uid,
                bytes.len()
            )));
        }
        let hash = hdr_hash::header_hash(&bytes, &self.hashed_headers(), 3);
        if let Some((_, Some(old))) = self.rows.get(&meta.uid) {
            // A backup replaces the destination's own mail by the source's under the same
            // UID (the brain also asks to expunge it): the older copy goes from the server.
            self.stray.push(old.uid);
        }
        self.saved.insert(meta.uid);
        self.rows.insert(
            meta.uid,
            (
                MessageRow {
                    uid: meta.uid,
                    guid: meta.guid.clone(),
                    file: String::new(),
                    flags: meta.flags,
                    keywords: meta.keywords.clone(),
                    modseq: self.header.change_modseq,
                    base: None,
                    pop3_uidl: meta.pop3_uidl.clone(),
                    pop3_order: meta.pop3_order,
                },
                None,
            ),
        );
        self.removed.remove(&meta.uid);
        self.touched.insert(meta.uid);
        self.pending_bytes += bytes.len();
        self.pending.push(PendingSave {
            uid: meta.uid,
            flags: flags_to_imap(meta.flags, &meta.keywords),
            received: meta.received,
            hash,
            body: bytes,
        });
        if self.pending.len() >= BATCH_MESSAGES || self.pending_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn expunge(&mut self, uid: Uid) {
        self.expunges.push(uid);
    }

    fn set_flags(&mut self, uid: Uid, flags: Flags, keywords: Keywords) {
        self.flag_sets.insert(uid, (flags, keywords));
    }

    fn move_uid(&mut self, from: Uid, to: Uid) {
        self.moves.push((from, to));
    }

    fn set_base(&mut self, uid: Uid, flags: Flags, keywords: Keywords) {
        self.bases.insert(uid, (flags, keywords));
    }

    fn finish(mut self: Box<Self>) -> Result<WriteReport> {
        self.finish_inner()
    }
}
