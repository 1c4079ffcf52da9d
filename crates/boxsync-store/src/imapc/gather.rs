//! The network half of refreshing a mailbox: what the server says changed since the index
//! last looked. It needs only a session, so the mailboxes of an account are gathered on
//! several connections at once (`imapc_max_connections`) while the index is written from one
//! thread.

use super::uid_sets;
use boxsync_imap::{GuidItem, MessageMeta, MetaRequest, Selected, Session};
use boxsync_model::{Error, Result};
use std::collections::HashSet;

/// Which fetch item gives message GUIDs, and whether the server was seen to answer it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GuidProbe {
    pub item: Option<GuidItem>,
    pub checked: bool,
}

/// What the index knows of a mailbox, for asking the server about the rest.
#[derive(Clone, Debug)]
pub(crate) struct Want {
    pub server: String,
    /// `(UIDVALIDITY, HIGHESTMODSEQ)` of the last look, when QRESYNC can use it.
    pub qresync: Option<(u32, u64)>,
    pub old_uidvalidity: Option<u32>,
    /// The server UIDs the index maps.
    pub known: HashSet<u32>,
}

/// What changed on the server.
pub(crate) struct Changes {
    pub sel: Selected,
    pub uidvalidity_changed: bool,
    pub vanished: Vec<u32>,
    pub flag_updates: Vec<MessageMeta>,
    pub new_meta: Vec<MessageMeta>,
}

/// Selects the mailbox read-only and asks for what changed: with QRESYNC the vanished UIDs
/// and changed flags come with the SELECT, otherwise from the UID and flag lists; messages
/// not seen before come with everything the index keeps.
pub(crate) fn gather(
    session: &mut Session,
    want: &Want,
    probe: &mut GuidProbe,
    headers: &[String],
) -> Result<Changes> {
    let sel = session.select(&want.server, true, want.qresync)?;
    let uidvalidity_changed = want.old_uidvalidity.is_some_and(|v| v != sel.uidvalidity);
    let empty = HashSet::new();
    // After a UIDVALIDITY change no old UID means anything: everything is new.
    let known = if uidvalidity_changed {
        &empty
    } else {
        &want.known
    };
    let max_known = known.iter().copied().max().unwrap_or(0);
    let mut flag_updates = Vec::new();
    let vanished: Vec<u32>;
    let new_meta: Vec<MessageMeta>;
    if want.qresync.is_some() && !uidvalidity_changed {
        vanished = sel.vanished.clone();
        flag_updates = sel.changed.clone();
        new_meta = if sel.exists == 0 {
            Vec::new()
        } else {
            fetch_new(
                session,
                probe,
                headers,
                &format!("{}:*", max_known + 1),
                max_known,
            )?
        };
    } else if sel.exists == 0 {
        vanished = known.iter().copied().collect();
        new_meta = Vec::new();
    } else {
        let flags_only = MetaRequest {
            guid: None,
            header_fields: None,
            changed_since: None,
            vanished: false,
            internaldate_and_size: false,
        };
        let (all, _) = session.fetch_meta("1:*", &flags_only)?;
        let present: HashSet<u32> = all.iter().map(|m| m.uid).collect();
        vanished = known
            .iter()
            .filter(|u| !present.contains(u))
            .copied()
            .collect();
        let mut fresh = Vec::new();
        for m in all {
            if known.contains(&m.uid) {
                flag_updates.push(m);
            } else {
                fresh.push(m.uid);
            }
        }
        let mut metas = Vec::new();
        for set in uid_sets(&fresh) {
            metas.extend(fetch_new(session, probe, headers, &set, 0)?);
        }
        new_meta = metas;
    }
    Ok(Changes {
        sel,
        uidvalidity_changed,
        vanished,
        flag_updates,
        new_meta,
    })
}

/// Everything about messages not seen before: flags, date, size, GUID and the headers that
/// are hashed. Answers at or below `above` are dropped (`N:*` always names the last message,
/// even when every UID is below N).
fn fetch_new(
    session: &mut Session,
    probe: &mut GuidProbe,
    headers: &[String],
    set: &str,
    above: u32,
) -> Result<Vec<MessageMeta>> {
    loop {
        let req = MetaRequest {
            guid: probe.item,
            header_fields: Some(headers),
            changed_since: None,
            vanished: false,
            internaldate_and_size: true,
        };
        match session.fetch_meta(set, &req) {
            Ok((metas, _)) => {
                if probe.item.is_some() {
                    if metas.iter().any(|m| m.guid.is_none()) {
                        // A server that ignores the item: header hashes throughout.
                        probe.item = None;
                        continue;
                    }
                    probe.checked = true;
                }
                return Ok(metas.into_iter().filter(|m| m.uid > above).collect());
            }
            Err(Error::Data(msg)) if probe.item.is_some() && !probe.checked => {
                tracing::debug!("the server has no GUID fetch item ({msg}); using header hashes");
                probe.item = None;
            }
            Err(e) => return Err(e),
        }
    }
}
