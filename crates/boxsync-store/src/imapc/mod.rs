//! An IMAP account as a store (Dovecot's `imapc`), readable and writable.
//!
//! The server decides its UIDs and keeps no expunge history, so the store puts a thin layer
//! of its own between the brain and the server, kept in a local index: each mailbox has the
//! UIDVALIDITY and UIDs the brain agreed on with the other side ("virtual" UIDs), each mapped
//! to the server UID that holds the message. A mailbox seen for the first time gets the
//! server's own UIDs and UIDVALIDITY, so a Maildir made from an account keeps them; a message
//! the brain saves keeps the UID and GUID it has on the other side whatever UID the server
//! gives it. Modseqs and the expunge journal are the index's, refreshed from the server before
//! every sync: with CONDSTORE a mailbox whose STATUS did not move is not even selected, with
//! QRESYNC a changed one costs one SELECT and the changes, without them the UID and flag lists.
//!
//! A message's GUID is the server's (Dovecot's `X-GUID`, RFC 8474 `EMAILID`, Gmail's
//! `X-GM-MSGID`) or else Dovecot's header hash; the header hash is also kept for every
//! message, so a UIDVALIDITY change is recovered by matching, without downloading again.

mod body;
pub mod config;
mod gather;
pub mod names;
mod writer;

pub use config::ImapcLocation;

use crate::maildir::format::mailbox_log::{self, LogKind, LogRecord};
use crate::{
    ExpungedRow, HeaderUpdate, MailboxEntry, MailboxWriter, Message, Store, Tombstones,
    content_digest, hdr_hash,
};
use body::Fetcher;
use boxsync_imap::{GuidItem, ListEntry, Session, Status};
use boxsync_index::{Index, MailboxRow, MessageRow};
use boxsync_model::error::IoContext;
use boxsync_model::{Error, Flags, Guid128, Keywords, MailboxName, Modseq, Result, Uid};
use boxsync_proto::MailBody;
use gather::{Changes, GuidProbe, Want};
use names::ServerNames;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// Where a message is on the server, and what identifies it there. Kept in the index row's
/// `file` column as `SERVERUID RECEIVED SIZE HEADERHASH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerRef {
    pub uid: u32,
    pub received: i64,
    pub size: u64,
    pub hash: String,
}

impl ServerRef {
    fn encode(&self) -> String {
        format!("{} {} {} {}", self.uid, self.received, self.size, self.hash)
    }

    fn decode(s: &str) -> Option<ServerRef> {
        let mut it = s.split(' ');
        Some(ServerRef {
            uid: it.next()?.parse().ok()?,
            received: it.next()?.parse().ok()?,
            size: it.next()?.parse().ok()?,
            hash: it.next().unwrap_or("").to_owned(),
        })
    }
}

/// The server's counters for a mailbox when the index was last brought up to date: if the
/// server still reports these (and has modseqs), nothing changed there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Signature {
    uidvalidity: u32,
    uidnext: u32,
    messages: u32,
    highest_modseq: u64,
}

impl Signature {
    fn of(s: &Status) -> Signature {
        Signature {
            uidvalidity: s.uidvalidity,
            uidnext: s.uidnext,
            messages: s.messages,
            highest_modseq: s.highestmodseq.unwrap_or(0),
        }
    }

    fn encode(&self) -> String {
        format!(
            "imapc {} {} {} {}",
            self.uidvalidity, self.uidnext, self.messages, self.highest_modseq
        )
    }

    fn decode(s: &str) -> Option<Signature> {
        let mut it = s.strip_prefix("imapc ")?.split(' ');
        Some(Signature {
            uidvalidity: it.next()?.parse().ok()?,
            uidnext: it.next()?.parse().ok()?,
            messages: it.next()?.parse().ok()?,
            highest_modseq: it.next()?.parse().ok()?,
        })
    }
}

/// One mailbox of the account.
pub(crate) struct ImapBox {
    pub name: MailboxName,
    /// The server's name for it (modified UTF-7).
    pub server: String,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: Modseq,
    pub count: u32,
    pub digest: u64,
    /// The server's counters as of the last refresh.
    signature: Option<Signature>,
    pub loaded: bool,
    pub messages: Vec<Message>,
    pub refs: BTreeMap<Uid, ServerRef>,
}

/// A mailbox whose server counters moved, waiting for what changed there.
struct Job {
    name: MailboxName,
    row: MailboxRow,
    b: ImapBox,
    old_rows: Vec<MessageRow>,
    want: Want,
}

/// [`gather::gather`] on a worker's own connection, opened on first use and once more when
/// it was lost.
fn gather_on(
    session: &mut Option<Session>,
    config: &boxsync_imap::Config,
    want: &Want,
    probe: &mut GuidProbe,
    headers: &[String],
) -> Result<Changes> {
    for attempt in 0..2 {
        if session.is_none() {
            *session = Some(Session::connect(config)?);
        }
        let s = session.as_mut().expect("just connected");
        match gather::gather(s, want, probe, headers) {
            Err(Error::Temp(msg)) if attempt == 0 => {
                tracing::warn!("{msg}; connecting again");
                *session = None;
            }
            r => return r,
        }
    }
    unreachable!("the second attempt returns")
}

/// An IMAP account opened for a sync.
pub struct ImapcStore {
    location: ImapcLocation,
    session: Session,
    index: Index,
    names: ServerNames,
    /// The fetch item that gives a message GUID (`None` when the server has none), and
    /// whether it was seen to work (Dovecot answers `X-GUID` without announcing it).
    probe: GuidProbe,
    boxes: BTreeMap<Guid128, ImapBox>,
    subscribed: HashSet<MailboxName>,
    log: Vec<LogRecord>,
    fetcher: Arc<Mutex<Fetcher>>,
    /// Opened by [`ImapcStore::open_dry_run`]: the index is a copy in memory and the mailbox
    /// log is kept in memory only.
    dry_run: bool,
    /// Problems with single mailboxes; the others still sync.
    pub mailbox_errors: Vec<(String, Error)>,
}

/// IMAP flags to boxsync's: system flags by bit, anything else that can be a keyword as one.
/// `\Recent` and unknown system flags are dropped.
pub(crate) fn flags_from_imap(list: &[String]) -> (Flags, Keywords) {
    let mut flags = Flags::EMPTY;
    let mut keywords = Keywords::new();
    for f in list {
        if let Some(bit) = Flags::from_imap_name(f) {
            flags = flags.union(bit);
        } else if !f.starts_with('\\') && boxsync_model::flags::is_valid_keyword(f) {
            keywords.insert(f.clone());
        }
    }
    (flags, keywords)
}

pub(crate) fn flags_to_imap(flags: Flags, keywords: &Keywords) -> Vec<String> {
    flags
        .imap_names()
        .map(str::to_owned)
        .chain(keywords.iter().cloned())
        .collect()
}

/// Compact IMAP UID sets (`1:5,9,12:14`) of sorted or unsorted UIDs, split so that their
/// text stays short enough for any server's command line.
pub(crate) fn uid_sets(uids: &[u32]) -> Vec<String> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.chunks(2000).map(sorted_set).collect()
}

/// The set text of UIDs already sorted and without duplicates.
fn sorted_set(sorted: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

impl ImapcStore {
    /// Connects, logs in and brings the index up to date with the account.
    pub fn open(location: &ImapcLocation, fsync: bool) -> Result<ImapcStore> {
        std::fs::create_dir_all(&location.index_dir)
            .ctx(|| format!("creating {}", location.index_dir.display()))?;
        let index = Index::open(&location.index_path(), fsync)?;
        ImapcStore::open_with(location, index, false)
    }

    /// Opens the account for a dry run: the same view as [`ImapcStore::open`], but nothing
    /// changes, on the server or on disk. Reading the account needs only LIST, STATUS,
    /// EXAMINE and FETCH of `BODY.PEEK[…]`, as always; what the refresh learns goes into a
    /// copy of the index in memory, and a mailbox renamed or deleted on the server is noted in
    /// a mailbox log kept in memory. Its write methods must not be called:
    /// [`crate::dry_run::DryRun`] stands in for them.
    pub fn open_dry_run(location: &ImapcLocation) -> Result<ImapcStore> {
        let index = Index::open_in_memory_copy(&location.index_path())?;
        ImapcStore::open_with(location, index, true)
    }

    fn open_with(location: &ImapcLocation, index: Index, dry_run: bool) -> Result<ImapcStore> {
        let session = Session::connect(&location.config)?;
        let guid_item = if session.has("OBJECTID") {
            Some(GuidItem::EmailId)
        } else if session.has("X-GM-EXT-1") {
            Some(GuidItem::GmMsgId)
        } else {
            // Dovecot answers X-GUID without announcing it; the first fetch finds out.
            Some(GuidItem::XGuid)
        };
        let names = match session.namespace() {
            Some((prefix, separator)) => ServerNames { prefix, separator },
            None => ServerNames {
                prefix: String::new(),
                separator: None,
            },
        };
        let fetcher = Arc::new(Mutex::new(Fetcher::new(location.config.clone())));
        let mut store = ImapcStore {
            location: location.clone(),
            session,
            index,
            names,
            probe: GuidProbe {
                item: guid_item,
                checked: false,
            },
            boxes: BTreeMap::new(),
            subscribed: HashSet::new(),
            log: mailbox_log::read(&location.index_dir)?,
            fetcher,
            dry_run,
            mailbox_errors: Vec::new(),
        };
        store.refresh()?;
        Ok(store)
    }

    fn log_append(&mut self, kind: LogKind, guid: Guid128) -> Result<()> {
        let rec = if self.dry_run {
            LogRecord {
                kind,
                guid,
                timestamp: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as u32),
            }
        } else {
            mailbox_log::append_now(&self.location.index_dir, kind, guid)?
        };
        self.log.push(rec);
        Ok(())
    }

    /// Runs `f` on the session; when the connection was lost, connects again and runs it once
    /// more. Only for work that is safe to repeat.
    fn retrying<T>(&mut self, mut f: impl FnMut(&mut Self) -> Result<T>) -> Result<T> {
        match f(self) {
            Err(Error::Temp(msg)) => {
                tracing::warn!("{msg}; connecting again");
                self.session = Session::connect(&self.location.config)?;
                f(self)
            }
            r => r,
        }
    }

    /// Lists the account's mailboxes and refreshes every one whose counters moved.
    fn refresh(&mut self) -> Result<()> {
        let entries = self.retrying(|s| s.session.list())?;
        if self.names.separator.is_none() {
            self.names.separator = entries.iter().find_map(|e| e.separator);
        }
        self.mailbox_errors.clear();
        let listed = self.name_entries(entries);
        self.subscribed = listed
            .iter()
            .filter(|(_, e)| e.subscribed)
            .map(|(n, _)| n.clone())
            .collect();

        let mut rows: HashMap<String, MailboxRow> = HashMap::new();
        for row in self.index.all_mailboxes()? {
            rows.insert(row.name.clone(), row);
        }
        let mut seen_rows: HashSet<Guid128> = HashSet::new();
        let mut boxes = BTreeMap::new();
        let mut pending = Vec::new();
        for (name, entry) in listed {
            if entry.attributes.iter().any(|a| {
                a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent")
            }) {
                continue;
            }
            pending.push((name, entry));
        }
        // Names first, so that a renamed mailbox is not claimed by a new one of its old name.
        let mut unclaimed: Vec<MailboxRow> = Vec::new();
        let listed_names: HashSet<String> = pending.iter().map(|(n, _)| n.to_string()).collect();
        for row in rows.values() {
            if !listed_names.contains(&row.name) {
                unclaimed.push(row.clone());
            }
        }
        // The client asks LIST for statuses only with both extensions (RFC 5819 needs both).
        let list_status = self.session.has("LIST-EXTENDED") && self.session.has("LIST-STATUS");
        let mut jobs: Vec<Job> = Vec::new();
        for (name, entry) in pending {
            let status = match entry.status {
                Some(s) => s,
                // With LIST-STATUS the server answers for every mailbox it can select; a name
                // it lists without one is hierarchy only (Dovecot keeps listing the parent of
                // a child after DELETE, without \NonExistent).
                None if list_status => continue,
                None => match self.retrying(|s| s.session.status(&entry.name)) {
                    Ok(s) => s,
                    Err(Error::NotFound(_)) => continue,
                    Err(e) => {
                        self.mailbox_errors.push((name.to_string(), e));
                        continue;
                    }
                },
            };
            let row = match rows.get(&name.to_string()) {
                Some(r) => r.clone(),
                None => {
                    // Renamed by another client: the server keeps a mailbox's UIDVALIDITY
                    // across a rename, so a vanished mailbox with this one's is this one.
                    let same = unclaimed.iter().position(|r| {
                        Signature::decode(&r.scan_signature)
                            .is_some_and(|s| s.uidvalidity == status.uidvalidity)
                    });
                    match same {
                        Some(i) => {
                            let mut r = unclaimed.remove(i);
                            tracing::info!(
                                "mailbox {} was renamed to {name} on the server",
                                r.name
                            );
                            r.name = name.to_string();
                            self.log_append(LogKind::Rename, Guid128::sha128_of(&r.name))?;
                            r
                        }
                        None => MailboxRow {
                            guid: Guid128::generate(),
                            name: name.to_string(),
                            uidvalidity: status.uidvalidity,
                            uidnext: 1,
                            highest_modseq: 1,
                            scan_signature: String::new(),
                            messages: 0,
                            digest: content_digest(&[]),
                        },
                    }
                }
            };
            if !seen_rows.insert(row.guid) {
                continue;
            }
            let b = ImapBox {
                name: name.clone(),
                server: entry.name.clone(),
                uidvalidity: row.uidvalidity,
                uidnext: row.uidnext,
                highest_modseq: row.highest_modseq,
                count: row.messages,
                digest: row.digest,
                signature: Signature::decode(&row.scan_signature),
                loaded: false,
                messages: Vec::new(),
                refs: BTreeMap::new(),
            };
            let unchanged = status.highestmodseq.is_some()
                && b.signature == Some(Signature::of(&status))
                && row.name == name.to_string();
            if unchanged {
                boxes.insert(row.guid, b);
                continue;
            }
            let old_rows = match self.index.messages(row.guid) {
                Ok(r) => r,
                Err(e) => {
                    self.mailbox_errors.push((name.to_string(), e));
                    continue;
                }
            };
            let want = self.want_of(&b.server, &row, &old_rows);
            jobs.push(Job {
                name,
                row,
                b,
                old_rows,
                want,
            });
        }
        self.gather_and_apply(jobs, &mut boxes);
        // What the index knew and the server no longer lists was deleted there.
        for row in unclaimed {
            if boxes.contains_key(&row.guid) {
                continue;
            }
            tracing::info!("mailbox {} was deleted on the server", row.name);
            let tx = self.index.transaction()?;
            tx.delete_mailbox(row.guid)?;
            tx.commit()?;
            self.log_append(LogKind::DeleteMailbox, row.guid)?;
        }
        self.boxes = boxes;
        Ok(())
    }

    /// Gives every listed mailbox its boxsync name; special-use mailboxes take the usual name
    /// when no other mailbox has it. Names that cannot be boxsync names are reported.
    fn name_entries(&mut self, entries: Vec<ListEntry>) -> Vec<(MailboxName, ListEntry)> {
        let mut named: Vec<(MailboxName, ListEntry)> = Vec::new();
        for e in entries {
            match self.names.to_name(&e.name) {
                Ok(n) => named.push((n, e)),
                Err(err) => self.mailbox_errors.push((e.name.clone(), err)),
            }
        }
        let taken: HashSet<String> = named.iter().map(|(n, _)| n.to_string()).collect();
        let mut renamed: HashSet<&'static str> = HashSet::new();
        for (n, e) in &mut named {
            if let Some(usual) = names::special_use_name(&e.attributes)
                && n.to_string() != usual
                && !taken.contains(usual)
                && renamed.insert(usual)
                && let Ok(u) = MailboxName::parse(usual)
            {
                *n = u;
            }
        }
        named
    }

    /// What the index knows of a mailbox, for asking the server about the rest.
    fn want_of(&self, server: &str, row: &MailboxRow, old_rows: &[MessageRow]) -> Want {
        let old_sig = Signature::decode(&row.scan_signature);
        let qresync = match old_sig {
            Some(s) if self.session.qresync_enabled() && s.highest_modseq > 0 => {
                Some((s.uidvalidity, s.highest_modseq))
            }
            _ => None,
        };
        Want {
            server: server.to_owned(),
            qresync,
            old_uidvalidity: old_sig.map(|s| s.uidvalidity),
            known: old_rows
                .iter()
                .filter_map(|r| ServerRef::decode(&r.file).map(|s| s.uid))
                .collect(),
        }
    }

    /// Asks the server what changed in every mailbox of `jobs` and writes it to the index.
    /// The first mailbox goes over the main connection (it settles which GUID item the server
    /// answers); the others over up to `imapc_max_connections` connections at once, applied
    /// as their answers come in.
    fn gather_and_apply(&mut self, jobs: Vec<Job>, boxes: &mut BTreeMap<Guid128, ImapBox>) {
        let headers = self.location.hashed_headers.clone();
        let mut rest = jobs.into_iter();
        let Some(first) = rest.next() else {
            return;
        };
        let changes =
            self.retrying(|s| gather::gather(&mut s.session, &first.want, &mut s.probe, &headers));
        self.apply_job(first, changes, boxes);
        let rest: Vec<Job> = rest.collect();
        let workers = self.location.max_connections.min(rest.len());
        if workers <= 1 {
            for job in rest {
                let changes = self.retrying(|s| {
                    gather::gather(&mut s.session, &job.want, &mut s.probe, &headers)
                });
                self.apply_job(job, changes, boxes);
            }
            return;
        }
        let queue: Mutex<VecDeque<(usize, Want)>> =
            Mutex::new(rest.iter().map(|j| j.want.clone()).enumerate().collect());
        let mut slots: Vec<Option<Job>> = rest.into_iter().map(Some).collect();
        let config = self.location.config.clone();
        let probe = self.probe;
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Changes>)>();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let tx = tx.clone();
                let (queue, config, headers) = (&queue, &config, &headers);
                scope.spawn(move || {
                    let mut session: Option<Session> = None;
                    let mut probe = probe;
                    loop {
                        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                        let Some((i, want)) = next else { break };
                        let changes = gather_on(&mut session, config, &want, &mut probe, headers);
                        if tx.send((i, changes)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for (i, changes) in rx {
                if let Some(job) = slots.get_mut(i).and_then(Option::take) {
                    self.apply_job(job, changes, boxes);
                }
            }
        });
    }

    fn apply_job(
        &mut self,
        job: Job,
        changes: Result<Changes>,
        boxes: &mut BTreeMap<Guid128, ImapBox>,
    ) {
        let Job {
            name,
            row,
            mut b,
            old_rows,
            ..
        } = job;
        match changes.and_then(|c| self.apply(row.guid, &row, &mut b, old_rows, c)) {
            Ok(()) => {
                boxes.insert(row.guid, b);
            }
            Err(e) => self.mailbox_errors.push((name.to_string(), e)),
        }
    }

    /// Writes what changed on the server into the index: expunges into the journal, flag
    /// changes and new messages with a new modseq, new messages under the server's UID where
    /// it is free.
    fn apply(
        &mut self,
        guid: Guid128,
        row: &MailboxRow,
        b: &mut ImapBox,
        old_rows: Vec<MessageRow>,
        changes: Changes,
    ) -> Result<()> {
        let Changes {
            sel,
            uidvalidity_changed,
            vanished,
            flag_updates,
            new_meta,
        } = changes;
        // The messages as the index knows them, by virtual UID.
        let mut known: BTreeMap<Uid, (MessageRow, ServerRef)> = BTreeMap::new();
        let mut recover: HashMap<(String, u64), VecDeque<(MessageRow, ServerRef)>> = HashMap::new();
        for r in old_rows {
            let Some(sref) = ServerRef::decode(&r.file) else {
                continue;
            };
            if uidvalidity_changed {
                recover
                    .entry((sref.hash.clone(), sref.size))
                    .or_default()
                    .push_back((r, sref));
            } else {
                known.insert(r.uid, (r, sref));
            }
        }
        let mut by_server: HashMap<u32, Uid> =
            known.iter().map(|(v, (_, s))| (s.uid, *v)).collect();

        let next_modseq = row.highest_modseq + 1;
        let mut changed = false;
        let mut expunged: Vec<ExpungedRow> = Vec::new();
        let mut dirty: HashSet<Uid> = HashSet::new();
        for su in vanished {
            if let Some(v) = by_server.remove(&su)
                && let Some((r, _)) = known.remove(&v)
            {
                expunged.push(ExpungedRow {
                    uid: v,
                    guid: r.guid,
                    modseq: next_modseq,
                });
                changed = true;
            }
        }
        for m in &flag_updates {
            let Some(v) = by_server.get(&m.uid) else {
                continue;
            };
            let Some((r, _)) = known.get_mut(v) else {
                continue;
            };
            let (f, k) = flags_from_imap(&m.flags);
            if (f, &k) != (r.flags, &r.keywords) {
                r.flags = f;
                r.keywords = k;
                r.modseq = next_modseq;
                dirty.insert(*v);
                changed = true;
            }
        }
        let mut uidnext = row.uidnext.max(1);
        let mut recovered = 0usize;
        let mut metas = new_meta;
        metas.sort_by_key(|m| m.uid);
        for m in metas {
            if by_server.contains_key(&m.uid) {
                continue;
            }
            let hash = hdr_hash::header_hash(
                m.header.as_deref().unwrap_or(b""),
                &self
                    .location
                    .hashed_headers
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
                3,
            );
            let sref = ServerRef {
                uid: m.uid,
                received: m.internaldate.unwrap_or(0),
                size: m.size.unwrap_or(0),
                hash: hash.clone(),
            };
            let (f, k) = flags_from_imap(&m.flags);
            let reused = recover
                .get_mut(&(hash.clone(), sref.size))
                .and_then(VecDeque::pop_front)
                .filter(|(r, _)| !known.contains_key(&r.uid));
            let row = match reused {
                Some((mut r, _)) => {
                    recovered += 1;
                    if (f, &k) != (r.flags, &r.keywords) {
                        r.flags = f;
                        r.keywords = k;
                        r.modseq = next_modseq;
                        changed = true;
                    }
                    r
                }
                None => {
                    let v = if m.uid >= uidnext { m.uid } else { uidnext };
                    changed = true;
                    MessageRow {
                        uid: v,
                        guid: m.guid.clone().unwrap_or_else(|| hash.clone()),
                        file: String::new(),
                        flags: f,
                        keywords: k,
                        modseq: next_modseq,
                        base: None,
                        pop3_uidl: None,
                        pop3_order: None,
                    }
                }
            };
            uidnext = uidnext.max(row.uid + 1);
            by_server.insert(m.uid, row.uid);
            dirty.insert(row.uid);
            known.insert(row.uid, (row, sref));
        }
        if uidvalidity_changed {
            // What no longer matches is gone from the server: expunged, for the other side to
            // follow. Were it only changed beyond recognition, it comes back as new mail.
            let mut lost = 0usize;
            for (r, _) in recover.into_values().flatten() {
                if !known.contains_key(&r.uid) {
                    expunged.push(ExpungedRow {
                        uid: r.uid,
                        guid: r.guid,
                        modseq: next_modseq,
                    });
                    changed = true;
                    lost += 1;
                }
            }
            tracing::warn!(
                "UIDVALIDITY of {} changed on the server; {recovered} messages matched by their \
                 headers, {lost} no longer there",
                b.name
            );
        }

        let hms = if changed {
            next_modseq
        } else {
            row.highest_modseq
        };
        let sig = Signature {
            uidvalidity: sel.uidvalidity,
            uidnext: sel.uidnext,
            messages: sel.exists,
            highest_modseq: sel.highestmodseq.unwrap_or(0),
        };
        let mut messages = Vec::with_capacity(known.len());
        let mut refs = BTreeMap::new();
        for (v, (r, s)) in &known {
            messages.push(message_of(r, s));
            refs.insert(*v, s.clone());
        }
        let digest = content_digest(&messages);
        let tx = self.index.transaction()?;
        for e in &expunged {
            tx.delete_message(guid, e.uid)?;
            tx.add_expunged(guid, e)?;
        }
        for v in &dirty {
            if let Some((r, s)) = known.get(v) {
                let mut r = r.clone();
                r.file = s.encode();
                tx.put_message(guid, &r)?;
            }
        }
        tx.put_mailbox(&MailboxRow {
            guid,
            name: b.name.to_string(),
            uidvalidity: row.uidvalidity,
            uidnext,
            highest_modseq: hms,
            scan_signature: sig.encode(),
            messages: messages.len() as u32,
            digest,
        })?;
        tx.commit()?;
        b.uidvalidity = row.uidvalidity;
        b.uidnext = uidnext;
        b.highest_modseq = hms;
        b.count = messages.len() as u32;
        b.digest = digest;
        b.signature = Some(sig);
        b.messages = messages;
        b.refs = refs;
        b.loaded = true;
        Ok(())
    }

    fn imap_box(&self, guid: Guid128) -> Result<&ImapBox> {
        self.boxes
            .get(&guid)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {guid} not found")))
    }

    pub fn location(&self) -> &ImapcLocation {
        &self.location
    }
}

fn message_of(r: &MessageRow, s: &ServerRef) -> Message {
    Message {
        uid: r.uid,
        guid: r.guid.clone(),
        flags: r.flags,
        keywords: r.keywords.clone(),
        modseq: r.modseq,
        base: r.base.clone(),
        received: s.received,
        pop3_uidl: r.pop3_uidl.clone(),
        pop3_order: r.pop3_order,
    }
}

impl Store for ImapcStore {
    fn describe(&self) -> String {
        self.location.describe()
    }

    fn lock_sync(&self, timeout: std::time::Duration) -> Result<crate::SyncLock> {
        crate::lock_file(&self.location.index_dir.join("boxsync-sync.lock"), timeout)
    }

    fn mailboxes(&self) -> Vec<MailboxEntry> {
        self.boxes
            .iter()
            .map(|(guid, b)| {
                let (renamed, sub_change) = mailbox_log::name_times(&self.log, &b.name);
                MailboxEntry {
                    name: b.name.clone(),
                    guid: *guid,
                    uidvalidity: b.uidvalidity,
                    uidnext: b.uidnext,
                    highest_modseq: b.highest_modseq,
                    messages: b.count,
                    digest: b.digest,
                    subscribed: self.subscribed.contains(&b.name),
                    last_renamed_or_created: renamed,
                    last_subscription_change: sub_change,
                }
            })
            .collect()
    }

    fn tombstones(&self) -> Tombstones {
        mailbox_log::tombstones(&self.log, |g| self.boxes.contains_key(&g))
    }

    fn broken_mailboxes(&self) -> Vec<MailboxName> {
        crate::broken_names(&self.mailbox_errors)
    }

    fn fix_name(&self, name: &MailboxName, alt: char) -> Option<MailboxName> {
        self.names.fix_name(name, alt)
    }

    fn load(&mut self, mailbox: Guid128) -> Result<()> {
        let b = self
            .boxes
            .get_mut(&mailbox)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {mailbox} not found")))?;
        if b.loaded {
            return Ok(());
        }
        let mut messages = Vec::new();
        let mut refs = BTreeMap::new();
        for r in self.index.messages(mailbox)? {
            let Some(s) = ServerRef::decode(&r.file) else {
                continue;
            };
            messages.push(message_of(&r, &s));
            refs.insert(r.uid, s);
        }
        b.messages = messages;
        b.refs = refs;
        b.loaded = true;
        Ok(())
    }

    fn messages(&self, mailbox: Guid128) -> Result<&[Message]> {
        let b = self.imap_box(mailbox)?;
        if !b.loaded {
            return Err(Error::temp(format!(
                "BUG: messages of {} read before they were loaded",
                b.name
            )));
        }
        Ok(&b.messages)
    }

    fn expunged_since(&self, mailbox: Guid128, since: Modseq) -> Result<Vec<ExpungedRow>> {
        self.index.expunged_since(mailbox, since)
    }

    fn body(&self, mailbox: Guid128, uid: Uid) -> Result<Box<dyn MailBody>> {
        let b = self.imap_box(mailbox)?;
        let sref = b
            .refs
            .get(&uid)
            .ok_or_else(|| Error::NotFound(format!("UID {uid} not in {}", b.name)))?;
        body::register(&self.fetcher, &b.server, sref)
    }

    fn create_mailbox(
        &mut self,
        name: &MailboxName,
        guid: Guid128,
        uidvalidity: u32,
    ) -> Result<()> {
        let server = self.names.to_server(name)?;
        self.session.create(&server)?;
        let row = MailboxRow {
            guid,
            name: name.to_string(),
            uidvalidity,
            uidnext: 1,
            highest_modseq: 1,
            scan_signature: String::new(),
            messages: 0,
            digest: content_digest(&[]),
        };
        let tx = self.index.transaction()?;
        tx.delete_mailbox(guid)?;
        tx.put_mailbox(&row)?;
        tx.commit()?;
        self.boxes.insert(
            guid,
            ImapBox {
                name: name.clone(),
                server,
                uidvalidity,
                uidnext: 1,
                highest_modseq: 1,
                count: 0,
                digest: row.digest,
                signature: None,
                loaded: true,
                messages: Vec::new(),
                refs: BTreeMap::new(),
            },
        );
        Ok(())
    }

    fn delete_mailbox(&mut self, guid: Guid128) -> Result<()> {
        let b = self.imap_box(guid)?;
        let server = b.server.clone();
        // A server may drop a connection whose selected mailbox is deleted (Dovecot: "BYE
        // Selected mailbox was deleted"): look at INBOX instead first.
        self.session.select("INBOX", true, None)?;
        self.session.delete(&server)?;
        self.boxes.remove(&guid);
        let tx = self.index.transaction()?;
        tx.delete_mailbox(guid)?;
        tx.commit()?;
        self.log_append(LogKind::DeleteMailbox, guid)
    }

    fn rename_mailbox(&mut self, guid: Guid128, to: &MailboxName) -> Result<()> {
        let new_server = self.names.to_server(to)?;
        let old_server = self.imap_box(guid)?.server.clone();
        self.session.select("INBOX", true, None)?;
        let sep = self.names.separator.map(String::from).unwrap_or_default();
        let child_prefix = format!("{old_server}{sep}");
        if !sep.is_empty() && new_server.starts_with(&child_prefix) {
            // IMAP cannot rename a mailbox under its own child in one step.
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let tmp = format!("{}boxsync-rename-{stamp}", self.names.prefix);
            self.session.rename(&old_server, &tmp)?;
            self.session.rename(&tmp, &new_server)?;
        } else {
            self.session.rename(&old_server, &new_server)?;
        }
        // The server took the children along, but a dsync rename moves one mailbox: each
        // child goes back to the name it has on both sides (the next LIST would otherwise
        // show it under the new parent, a rename the other side never made).
        let children: Vec<(String, MailboxName)> = if sep.is_empty() {
            Vec::new()
        } else {
            self.boxes
                .values()
                .filter(|b| b.server.starts_with(&child_prefix))
                .map(|b| (b.server.clone(), b.name.clone()))
                .collect()
        };
        for (old_child, name) in children {
            let moved = format!("{new_server}{sep}{}", &old_child[child_prefix.len()..]);
            let home = self.names.to_server(&name)?;
            if moved != home {
                self.session.rename(&moved, &home)?;
            }
            for b in self.boxes.values_mut() {
                if b.server == old_child {
                    b.server = home.clone();
                }
            }
        }
        if let Some(row) = self.index.mailbox(guid)? {
            let tx = self.index.transaction()?;
            tx.put_mailbox(&MailboxRow {
                name: to.to_string(),
                ..row
            })?;
            tx.commit()?;
        }
        if let Some(b) = self.boxes.get_mut(&guid) {
            b.name = to.clone();
            b.server = new_server;
        }
        self.log_append(LogKind::Rename, Guid128::sha128_of(&to.to_string()))
    }

    fn change_mailbox_guid(&mut self, old: Guid128, new: Guid128) -> Result<()> {
        let b = self
            .boxes
            .remove(&old)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {old} not found")))?;
        let tx = self.index.transaction()?;
        tx.delete_mailbox(new)?;
        tx.rekey_mailbox(old, new)?;
        tx.commit()?;
        self.boxes.insert(new, b);
        Ok(())
    }

    fn set_subscribed(&mut self, name: &MailboxName, subscribed: bool) -> Result<()> {
        if self.subscribed.contains(name) == subscribed {
            return Ok(());
        }
        // A special-use mailbox shown under its usual name is subscribed under its own.
        let server = self
            .boxes
            .values()
            .find(|b| &b.name == name)
            .map(|b| b.server.clone())
            .map_or_else(|| self.names.to_server(name), Ok)?;
        if subscribed {
            self.session.subscribe(&server)?;
            self.subscribed.insert(name.clone());
        } else {
            self.session.unsubscribe(&server)?;
            self.subscribed.remove(name);
        }
        let kind = if subscribed {
            LogKind::Subscribe
        } else {
            LogKind::Unsubscribe
        };
        self.log_append(kind, Guid128::sha128_of(&name.to_string()))
    }

    fn record_agreed_flags(&mut self, mailbox: Guid128) -> Result<()> {
        let b = self
            .boxes
            .get_mut(&mailbox)
            .ok_or_else(|| Error::NotFound(format!("mailbox GUID {mailbox} not found")))?;
        if !b.loaded {
            return Ok(());
        }
        let refs = &b.refs;
        crate::record_agreed(&mut self.index, mailbox, &mut b.messages, |uid| {
            refs.get(&uid).map(ServerRef::encode)
        })
    }

    fn writer(
        &mut self,
        mailbox: Guid128,
        header: HeaderUpdate,
    ) -> Result<Box<dyn MailboxWriter + '_>> {
        self.load(mailbox)?;
        Ok(Box::new(writer::Writer::new(self, mailbox, header)?))
    }

    fn flush(&mut self) -> Result<crate::WriteReport> {
        // Its writers leave nothing waiting.
        Ok(crate::WriteReport::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(
            uid_sets(&[5, 1, 2, 3, 9, 12, 13, 14, 2]),
            vec!["1:3,5,9,12:14"]
        );
        assert!(uid_sets(&[]).is_empty());
        assert_eq!(uid_sets(&(1..=5000).collect::<Vec<_>>()).len(), 3);
    }

    #[test]
    fn server_refs_and_signatures_round_trip() {
        let s = ServerRef {
            uid: 7,
            received: 1_700_000_000,
            size: 1234,
            hash: "68b329da9893e34099c7d8ad5cb9c940".into(),
        };
        assert_eq!(ServerRef::decode(&s.encode()), Some(s));
        let sig = Signature {
            uidvalidity: 1,
            uidnext: 2,
            messages: 3,
            highest_modseq: 4,
        };
        assert_eq!(Signature::decode(&sig.encode()), Some(sig));
        // A Maildir's scan signature is never taken for an IMAP one.
        assert_eq!(Signature::decode("1234 5678"), None);
    }

    #[test]
    fn flags_convert_both_ways() {
        let list: Vec<String> = ["\\Seen", "\\Recent", "$Junk", "\\Flagged", "\\Unknown"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (f, k) = flags_from_imap(&list);
        assert_eq!(f, Flags::SEEN.union(Flags::FLAGGED));
        assert_eq!(k.iter().collect::<Vec<_>>(), vec!["$Junk"]);
        assert_eq!(flags_to_imap(f, &k), vec!["\\Flagged", "\\Seen", "$Junk"]);
    }
}
