//! The selected state: SELECT/EXAMINE (with QRESYNC or CONDSTORE), metadata FETCH, and the
//! pipelined streaming body FETCH.

use crate::ext::{self, Ext};
use crate::mailbox::mailbox_arg;
use crate::session::{Incoming, What, code_name};
use crate::{GuidItem, MessageMeta, MetaRequest, Selected, Session};
use boxsync_model::{Error, Result};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::{CommandBody, FetchModifier, SelectParameter};
use imap_codec::imap_types::core::{AString, Vec1};
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_codec::imap_types::flag::FlagFetch;
use imap_codec::imap_types::response::{Code, Data, StatusKind};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::num::{NonZeroU32, NonZeroU64};

/// The most UIDs a VANISHED response may expand to. A real mailbox has far fewer messages;
/// a hostile `1:4294967295` would otherwise allocate 16 GiB.
const MAX_VANISHED: u64 = 1 << 24;

impl Session {
    /// SELECT, or EXAMINE when `read_only`. With QRESYNC enabled and `qresync` =
    /// (uidvalidity, highestmodseq) known from the last sync, the server reports what
    /// vanished and changed since then in `Selected::vanished`/`changed`; otherwise the
    /// CONDSTORE parameter is sent when the server has it, so HIGHESTMODSEQ comes back.
    pub fn select(
        &mut self,
        mailbox: &str,
        read_only: bool,
        qresync: Option<(u32, u64)>,
    ) -> Result<Selected> {
        self.retrying(|s| s.select_once(mailbox, read_only, qresync))
    }

    fn select_once(
        &mut self,
        name: &str,
        read_only: bool,
        qresync: Option<(u32, u64)>,
    ) -> Result<Selected> {
        let what = What::new(if read_only { "EXAMINE" } else { "SELECT" }, Some(name));
        let known = qresync.and_then(|(v, m)| Some((NonZeroU32::new(v)?, NonZeroU64::new(m)?)));
        let parameters = match known {
            Some((uid_validity, mod_sequence_value)) if self.qresync => {
                vec![SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids: None,
                    seq_match_data: None,
                }]
            }
            _ if self.condstore => vec![SelectParameter::CondStore],
            _ => Vec::new(),
        };
        let mailbox = mailbox_arg(name)?;
        let body = if read_only {
            CommandBody::Examine {
                mailbox,
                parameters,
            }
        } else {
            CommandBody::Select {
                mailbox,
                parameters,
            }
        };
        // A failed SELECT leaves no mailbox selected (RFC 3501 6.3.1).
        self.selected = None;
        let mut sel = Selected::default();
        let mut uidvalidity = None;
        let mut bad = None;
        self.begin(&what)?;
        let tag = self.send(body);
        let done = self.wait(&tag, &mut |incoming| {
            match incoming {
                Incoming::Untagged(body) => match body.code {
                    Some(Code::UidValidity(v)) => uidvalidity = Some(v.get()),
                    Some(Code::UidNext(n)) => sel.uidnext = n.get(),
                    Some(Code::HighestModSeq(m)) => sel.highestmodseq = Some(m.get()),
                    Some(Code::NoModSeq) => sel.highestmodseq = None,
                    _ => {}
                },
                Incoming::Data(Data::Exists(n), _) => sel.exists = n,
                Incoming::Data(Data::Vanished { known_uids, .. }, _) => {
                    if let Err(e) = expand_uids(&known_uids, &mut sel.vanished) {
                        bad = Some(e);
                    }
                }
                Incoming::Data(Data::Fetch { items, .. }, ext) => {
                    let meta = meta_from_items(items.as_ref(), &ext, None);
                    if meta.uid != 0 {
                        sel.changed.push(meta);
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        self.check_mailbox_refusal(done, &what, name)?;
        if let Some(detail) = bad {
            return Err(self.poison(Error::data(format!(
                "imapc({}): {what}: {detail}",
                self.host
            ))));
        }
        sel.uidvalidity = uidvalidity.ok_or_else(|| {
            Error::data(format!(
                "imapc({}): {what}: no UIDVALIDITY from the server",
                self.host
            ))
        })?;
        self.selected = Some(name.to_owned());
        Ok(sel)
    }

    /// UID FETCH of metadata for `uids` (a sequence set such as "1:*" or "5,7:9") in the
    /// selected mailbox. Returns the messages in UID order, plus the UIDs the server reported
    /// VANISHED (only with `req.vanished`, `req.changed_since` and QRESYNC enabled). FETCH
    /// responses for UIDs outside `uids` (unsolicited flag updates) are left out.
    pub fn fetch_meta(
        &mut self,
        uids: &str,
        req: &MetaRequest,
    ) -> Result<(Vec<MessageMeta>, Vec<u32>)> {
        let set = SequenceSet::try_from(uids)
            .map_err(|e| Error::Usage(format!("imapc: invalid UID set {uids:?}: {e:?}")))?;
        self.retrying(|s| s.fetch_meta_once(&set, req))
    }

    fn fetch_meta_once(
        &mut self,
        set: &SequenceSet,
        req: &MetaRequest,
    ) -> Result<(Vec<MessageMeta>, Vec<u32>)> {
        let mailbox = self.selected.clone();
        let what = What::new("UID FETCH", mailbox.as_deref());
        self.begin(&what)?;
        let mut names = vec![MessageDataItemName::Uid, MessageDataItemName::Flags];
        if self.condstore {
            names.push(MessageDataItemName::ModSeq);
        }
        if req.internaldate_and_size {
            names.push(MessageDataItemName::InternalDate);
            names.push(MessageDataItemName::Rfc822Size);
        }
        if let Some(fields) = req.header_fields {
            names.push(header_fields_item(fields)?);
        }
        let mut modifiers = Vec::new();
        let changed_since = req.changed_since.and_then(NonZeroU64::new);
        if let Some(m) = changed_since {
            modifiers.push(FetchModifier::ChangedSince(m));
            if req.vanished && self.qresync {
                modifiers.push(FetchModifier::Vanished);
            }
        }
        let body = CommandBody::Fetch {
            sequence_set: set.clone(),
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names),
            uid: true,
            modifiers,
        };
        let tag = match req.guid {
            None => self.send(body),
            Some(item) => {
                // imap-types cannot name these items: imap-codec encodes the FETCH and the
                // item goes first in its parenthesised list.
                let name = ext::item_name(item);
                self.send_extended(body, |line| {
                    // "b7 UID FETCH <set> (UID FLAGS ...)": the set has no parentheses, so
                    // the first "(" after "FETCH " opens the item list.
                    let at = line
                        .windows(6)
                        .position(|w| w == b"FETCH ")
                        .and_then(|f| line[f..].iter().position(|&c| c == b'(').map(|p| f + p + 1))
                        .ok_or_else(|| Error::Usage("imapc: FETCH without item list".into()))?;
                    line.splice(at..at, format!("{name} ").into_bytes());
                    Ok(())
                })?
            }
        };
        let mut metas: BTreeMap<u32, MessageMeta> = BTreeMap::new();
        let mut vanished = Vec::new();
        let mut bad = None;
        let done = self.wait(&tag, &mut |incoming| {
            match incoming {
                Incoming::Data(Data::Fetch { items, .. }, ext) => {
                    let meta = meta_from_items(items.as_ref(), &ext, req.guid);
                    if meta.uid != 0 && contains(set, meta.uid) {
                        merge(metas.entry(meta.uid).or_default(), meta);
                    }
                }
                Incoming::Data(Data::Vanished { known_uids, .. }, _) => {
                    if let Err(e) = expand_uids(&known_uids, &mut vanished) {
                        bad = Some(e);
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        self.check(done, &what)?;
        if let Some(detail) = bad {
            return Err(self.poison(Error::data(format!(
                "imapc({}): {what}: {detail}",
                self.host
            ))));
        }
        Ok((metas.into_values().collect(), vanished))
    }

    /// Starts fetching the full bodies of `uids` from the selected mailbox: one
    /// `UID FETCH n BODY.PEEK[]` per UID, at most the pipeline window in flight. Take the
    /// results with [`Session::fetch_bodies_next`]; any other command first reads and drops
    /// what is left of this fetch.
    pub fn fetch_bodies_begin(&mut self, uids: &[u32]) -> Result<()> {
        let mailbox = self.selected.clone();
        self.begin(&What::new("UID FETCH", mailbox.as_deref()))?;
        self.bodies = Some(BodyFetch {
            queue: uids.iter().copied().collect(),
            requested: uids.iter().copied().collect(),
            inflight: VecDeque::new(),
            ready: VecDeque::new(),
        });
        Ok(())
    }

    /// The next body as it arrives: `(uid, Some(bytes))`, or `(uid, None)` for a UID the
    /// server had no message for (expunged). `None` when every requested UID is answered.
    /// A FETCH carrying a body for a UID that was not requested is `Error::Data`.
    pub fn fetch_bodies_next(&mut self) -> Result<Option<(u32, Option<Vec<u8>>)>> {
        self.usable()?;
        loop {
            let Some(bodies) = self.bodies.as_mut() else {
                return Ok(None);
            };
            if let Some(item) = bodies.ready.pop_front() {
                return Ok(Some(item));
            }
            if bodies.inflight.is_empty() && bodies.queue.is_empty() {
                self.bodies = None;
                return Ok(None);
            }
            self.top_up_bodies()?;
            let incoming = self.next_in()?;
            if let Err(e) = self.on_body_incoming(incoming) {
                return Err(self.poison(e));
            }
        }
    }

    fn top_up_bodies(&mut self) -> Result<()> {
        let window = self.window;
        loop {
            let Some(bodies) = self.bodies.as_mut() else {
                return Ok(());
            };
            if bodies.inflight.len() >= window {
                return Ok(());
            }
            let Some(uid) = bodies.queue.pop_front() else {
                return Ok(());
            };
            let Some(nz) = NonZeroU32::new(uid) else {
                bodies.ready.push_back((0, None));
                continue;
            };
            let body = CommandBody::Fetch {
                sequence_set: SequenceSet::from(nz),
                macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(vec![
                    MessageDataItemName::BodyExt {
                        section: None,
                        partial: None,
                        peek: true,
                    },
                ]),
                uid: true,
                modifiers: Vec::new(),
            };
            let tag = self.send(body);
            if let Some(bodies) = self.bodies.as_mut() {
                bodies.inflight.push_back(InFlight {
                    tag,
                    uid,
                    answered: false,
                });
            }
        }
    }

    fn on_body_incoming(&mut self, incoming: Incoming) -> Result<()> {
        let host = self.host.clone();
        let Some(bodies) = self.bodies.as_mut() else {
            return Ok(());
        };
        match incoming {
            Incoming::Data(Data::Fetch { items, .. }, _) => {
                let mut uid = None;
                let mut body = None;
                for item in items.into_inner() {
                    match item {
                        MessageDataItem::Uid(u) => uid = Some(u.get()),
                        MessageDataItem::BodyExt {
                            section: None,
                            data,
                            ..
                        } => body = Some(data.0.map(|d| d.into_inner().into_owned())),
                        _ => {}
                    }
                }
                // A FETCH without a body is an unsolicited flag update: not ours.
                let Some(body) = body else { return Ok(()) };
                let Some(uid) = uid else {
                    return Err(Error::data(format!(
                        "imapc({host}): server sent a message body without its UID"
                    )));
                };
                if !bodies.requested.contains(&uid) {
                    return Err(Error::data(format!(
                        "imapc({host}): server sent a FETCH for UID {uid}, which was not requested"
                    )));
                }
                if let Some(f) = bodies
                    .inflight
                    .iter_mut()
                    .find(|f| f.uid == uid && !f.answered)
                {
                    f.answered = true;
                    bodies.ready.push_back((uid, body));
                }
            }
            Incoming::Tagged(tagged) => {
                let tag = tagged.tag.inner();
                let Some(pos) = bodies.inflight.iter().position(|f| f.tag == tag) else {
                    return Ok(());
                };
                let Some(f) = bodies.inflight.remove(pos) else {
                    return Ok(());
                };
                let body = tagged.body;
                let missing =
                    body.kind == StatusKind::Ok || code_name(body.code.as_ref()) == "EXPUNGEISSUED";
                if missing {
                    if !f.answered {
                        bodies.ready.push_back((f.uid, None));
                    }
                } else {
                    let mailbox = self.selected.clone();
                    let what = What::new("UID FETCH", mailbox.as_deref());
                    return Err(self.refusal(&what, &body));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads and drops what is left of a body fetch, so another command can run.
    pub(crate) fn drain_bodies(&mut self) -> Result<()> {
        if let Some(bodies) = self.bodies.as_mut() {
            bodies.queue.clear();
        }
        while self.bodies.as_ref().is_some_and(|b| !b.inflight.is_empty()) {
            if let Incoming::Tagged(tagged) = self.next_in()?
                && let Some(bodies) = self.bodies.as_mut()
            {
                bodies.inflight.retain(|f| f.tag != tagged.tag.inner());
            }
        }
        self.bodies = None;
        Ok(())
    }
}

/// A streaming body fetch under way.
pub(crate) struct BodyFetch {
    /// UIDs not sent yet.
    queue: VecDeque<u32>,
    requested: HashSet<u32>,
    inflight: VecDeque<InFlight>,
    ready: VecDeque<(u32, Option<Vec<u8>>)>,
}

struct InFlight {
    tag: String,
    uid: u32,
    answered: bool,
}

fn header_fields_item(fields: &[String]) -> Result<MessageDataItemName<'static>> {
    let mut names = Vec::with_capacity(fields.len());
    for f in fields {
        // Plain field names only, so the command stays one line without literals.
        if f.is_empty()
            || !f
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(Error::Usage(format!(
                "imapc: invalid header field name {f:?}"
            )));
        }
        names.push(
            AString::try_from(f.clone())
                .map_err(|e| Error::Usage(format!("imapc: header field {f:?}: {e}")))?,
        );
    }
    let names =
        Vec1::try_from(names).map_err(|_| Error::Usage("imapc: empty header field list".into()))?;
    Ok(MessageDataItemName::BodyExt {
        section: Some(Section::HeaderFields(None, names)),
        partial: None,
        peek: true,
    }
    .into_static())
}

/// Whether `uid` is in `set`, reading `*` as the largest UID.
fn contains(set: &SequenceSet, uid: u32) -> bool {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => u32::MAX,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => value(s) == uid || matches!(s, SeqOrUid::Asterisk),
        Sequence::Range(a, b) => {
            let (a, b) = (value(a), value(b));
            (a.min(b)..=a.max(b)).contains(&uid)
        }
    })
}

/// Appends the UIDs of a VANISHED set to `out`; refuses `*` and implausibly many UIDs.
pub(crate) fn expand_uids(
    set: &SequenceSet,
    out: &mut Vec<u32>,
) -> std::result::Result<(), String> {
    let mut total = out.len() as u64;
    for seq in set.0.as_ref() {
        let (a, b) = match seq {
            Sequence::Single(SeqOrUid::Value(v)) => (v.get(), v.get()),
            Sequence::Range(SeqOrUid::Value(a), SeqOrUid::Value(b)) => {
                (a.get().min(b.get()), a.get().max(b.get()))
            }
            _ => return Err("VANISHED with \"*\"".into()),
        };
        total += u64::from(b - a) + 1;
        if total > MAX_VANISHED {
            return Err(format!("VANISHED lists more than {MAX_VANISHED} UIDs"));
        }
        out.extend(a..=b);
    }
    Ok(())
}

fn merge(into: &mut MessageMeta, from: MessageMeta) {
    into.uid = from.uid;
    if !from.flags.is_empty() || into.flags.is_empty() {
        into.flags = from.flags;
    }
    into.modseq = from.modseq.or(into.modseq);
    into.internaldate = from.internaldate.or(into.internaldate);
    into.size = from.size.or(into.size);
    into.guid = from.guid.or(into.guid.take());
    into.header = from.header.or(into.header.take());
}

/// The metadata in one FETCH response; `uid` 0 if it had none.
pub(crate) fn meta_from_items(
    items: &[MessageDataItem],
    ext: &Ext,
    guid: Option<GuidItem>,
) -> MessageMeta {
    let mut meta = MessageMeta {
        guid: guid.and_then(|g| ext.guid(g)),
        ..MessageMeta::default()
    };
    for item in items {
        match item {
            MessageDataItem::Uid(u) => meta.uid = u.get(),
            MessageDataItem::Flags(flags) => {
                meta.flags = flags
                    .iter()
                    .filter_map(|f| match f {
                        FlagFetch::Flag(flag) => Some(flag.to_string()),
                        FlagFetch::Recent => None,
                    })
                    .collect();
            }
            MessageDataItem::ModSeq(m) => meta.modseq = Some(m.get()),
            MessageDataItem::InternalDate(d) => meta.internaldate = Some(d.as_ref().timestamp()),
            MessageDataItem::Rfc822Size(n) => meta.size = Some(u64::from(*n)),
            MessageDataItem::BodyExt {
                section: Some(Section::HeaderFields(..)),
                data,
                ..
            } => {
                meta.header = Some(
                    data.0
                        .as_ref()
                        .map_or_else(Vec::new, |d| d.as_ref().to_vec()),
                )
            }
            _ => {}
        }
    }
    meta
}

/// Runs the conversions a session applies to untagged data (for the fuzz entry point).
pub(crate) fn exercise(data: &Data, ext: &Ext) {
    match data {
        Data::Fetch { items, .. } => {
            let _ = meta_from_items(items.as_ref(), ext, Some(GuidItem::XGuid));
        }
        Data::Vanished { known_uids, .. } => {
            let _ = expand_uids(known_uids, &mut Vec::new());
        }
        Data::List {
            items,
            delimiter,
            mailbox,
        } => {
            let _ = crate::mailbox::entry(items, delimiter.as_ref().map(|d| d.inner()), mailbox);
        }
        Data::Status { items, .. } => {
            let _ = crate::mailbox::status_from_items(items);
        }
        _ => {}
    }
}
