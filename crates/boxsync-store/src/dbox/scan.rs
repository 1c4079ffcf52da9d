//! Reading one dbox mailbox into the list of messages [`crate::reconcile`] compares with
//! boxsync's index: UIDs, flags and keywords from Dovecot's index, GUIDs, received dates and
//! POP3 data from the message files (or from boxsync's index when the file was read before).

use super::DboxKind;
use super::file::DboxFile;
use super::index::{self, MailIndex};
use crate::reconcile::Seen;
use boxsync_index::{Index, MessageRow};
use boxsync_model::error::IoContext;
use boxsync_model::{Error, Flags, Guid128, Keywords, MailboxName, Result, Uid, mutf7};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The directory inside a mailbox's directory that holds its index (and sdbox mail).
pub(super) const MAILBOX_DIR: &str = "dbox-Mails";
/// The mailbox index inside `dbox-Mails/`.
const MAILBOX_INDEX: &str = "dovecot.index";
/// mdbox's map index inside `storage/`.
const MAP_INDEX: &str = "dovecot.map.index";
const SDBOX_PREFIX: &str = "u.";
const MDBOX_PREFIX: &str = "m.";

/// Every mailbox under `root/mailboxes/` with its `dbox-Mails` directory, INBOX first.
/// A mailbox is a directory holding `dbox-Mails/`; names are nested directories in modified
/// UTF-7.
pub(super) fn list_mailboxes(root: &Path) -> Result<Vec<(MailboxName, PathBuf)>> {
    let top = root.join("mailboxes");
    let mut out = Vec::new();
    if !top.is_dir() {
        return Ok(out);
    }
    walk(&top, &mut Vec::new(), &mut out, true)?;
    out.sort_by(|a, b| (!a.0.is_inbox(), &a.0).cmp(&(!b.0.is_inbox(), &b.0)));
    Ok(out)
}

fn walk(
    dir: &Path,
    prefix: &mut Vec<String>,
    out: &mut Vec<(MailboxName, PathBuf)>,
    top: bool,
) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // Below the top, one unreadable directory hides only the mailboxes inside it.
        Err(e) if !top => {
            tracing::warn!(
                "cannot list {}: {e}; skipping the mailboxes in it",
                dir.display()
            );
            return Ok(());
        }
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        if entry.file_name() == MAILBOX_DIR || !path.is_dir() {
            continue;
        }
        let Some(part) = entry.file_name().to_str().and_then(mutf7::decode) else {
            tracing::warn!(
                "ignoring {}: not a modified UTF-7 mailbox name",
                path.display()
            );
            continue;
        };
        prefix.push(part);
        let boxdir = path.join(MAILBOX_DIR);
        if boxdir.is_dir() {
            match MailboxName::from_parts(prefix.clone()) {
                Ok(name) => out.push((name, boxdir)),
                Err(e) => tracing::warn!("ignoring {}: {e}", path.display()),
            }
        }
        walk(&path, prefix, out, false)?;
        prefix.pop();
    }
    Ok(())
}

/// One mailbox as its files show it.
pub(super) struct Scanned {
    pub guid: Guid128,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub seen: Vec<Seen>,
}

/// Where each mdbox message is, by map UID: file id, offset of its message header, and size
/// of header, message and metadata.
pub(super) type Map = HashMap<u32, (u32, u32, u32)>;

/// Reads `storage/dovecot.map.index*`.
pub(super) fn read_map(root: &Path) -> Result<Map> {
    let storage = root.join("storage");
    let map = index::read_index(&storage, MAP_INDEX)?;
    let ext = map.ext_index("map").ok_or_else(|| {
        Error::data(format!(
            "{}: no \"map\" extension (not an mdbox map index)",
            storage.join(MAP_INDEX).display()
        ))
    })?;
    Ok(map
        .records
        .iter()
        .map(|r| {
            let b: [u8; 12] = map.record_ext(r, ext);
            (r.uid, (le32(&b, 0), le32(&b, 4), le32(&b, 8)))
        })
        .collect())
}

fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The mailbox GUID in a `dbox-hdr`/`mdbox-hdr` header: after a 32-bit rebuild count or map
/// UIDVALIDITY (`struct sdbox_index_header`, `struct mdbox_index_header`).
fn header_guid(index: &MailIndex, ext: &str) -> Option<Guid128> {
    let h = index.ext_header(ext)?;
    let bytes: [u8; 16] = h.get(4..20)?.try_into().ok()?;
    Some(Guid128(bytes)).filter(|g| !g.is_zero())
}

/// A GUID for a mailbox whose index cannot say it: the one boxsync recorded for this name
/// before, else one derived from the name, so that every run gives the same.
fn stand_in_guid(index: &Index, name: &MailboxName) -> Result<Guid128> {
    let shown = name.to_string();
    Ok(index
        .all_mailboxes()?
        .into_iter()
        .find(|r| r.name == shown)
        .map(|r| r.guid)
        .unwrap_or_else(|| Guid128::sha128_of(&format!("boxsync dbox mailbox {shown}"))))
}

fn mtime(path: &Path) -> Option<i64> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

fn now() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
}

/// A message known from the index, before its file is consulted.
struct Candidate {
    uid: Uid,
    flags: Flags,
    keywords: Keywords,
    locator: String,
    path: PathBuf,
    /// Of its message header; `None`: the first message of the file (sdbox).
    offset: Option<u64>,
    /// mdbox's `guid` record extension (preferred over the file's `G`); sdbox's, if it has
    /// one, is used only when the file has no `G`.
    ext_guid: Option<String>,
    /// The received date when the file has no `R`: sdbox's file mtime, mdbox's save date.
    received_fallback: Option<i64>,
}

fn flags_of(index: &MailIndex, rec: &index::Record) -> (Flags, Keywords) {
    (
        Flags(rec.flags & Flags::ALL.0),
        index.record_keywords(rec).map(str::to_owned).collect(),
    )
}

fn guid_ext(index: &MailIndex, rec: &index::Record) -> Option<String> {
    let ext = index.ext_index("guid")?;
    let g: [u8; 16] = index.record_ext(rec, ext);
    Some(Guid128(g))
        .filter(|g| !g.is_zero())
        .map(|g| g.to_string())
}

/// Reads an sdbox mailbox. Without a usable index, the message files alone give UIDs, GUIDs
/// and dates, and flags are those boxsync last saw for the same message (none for new ones).
pub(super) fn scan_sdbox(index: &Index, name: &MailboxName, dir: &Path) -> Result<Scanned> {
    let files = list_sdbox_files(dir)?;
    let dovecot = match index::read_index(dir, MAILBOX_INDEX) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(
                "sdbox mailbox {name}: {e}; reading its message files alone (flags and keywords are the ones boxsync saw last)"
            );
            None
        }
    };
    let guid = match dovecot.as_ref().and_then(|d| header_guid(d, "dbox-hdr")) {
        Some(g) => g,
        None => stand_in_guid(index, name)?,
    };
    let row = index.mailbox(guid)?;
    let old: HashMap<Uid, MessageRow> = index
        .messages(guid)?
        .into_iter()
        .map(|m| (m.uid, m))
        .collect();

    let (uidvalidity, mut uidnext, candidates) = match &dovecot {
        Some(d) if d.uid_validity() != 0 => {
            let mut candidates = Vec::with_capacity(d.records.len());
            for rec in &d.records {
                if !files.contains(&rec.uid) {
                    // Dovecot treats such a message as expunged too.
                    tracing::warn!(
                        "sdbox mailbox {name}: UID {} is in the index but {} is missing",
                        rec.uid,
                        dir.join(format!("{SDBOX_PREFIX}{}", rec.uid)).display()
                    );
                    continue;
                }
                let (flags, keywords) = flags_of(d, rec);
                candidates.push(sdbox_candidate(
                    dir,
                    rec.uid,
                    flags,
                    keywords,
                    guid_ext(d, rec),
                ));
            }
            (d.uid_validity(), d.next_uid(), candidates)
        }
        _ => {
            let uidvalidity = row.as_ref().map_or_else(now, |r| r.uidvalidity);
            let mut uids: Vec<Uid> = files.iter().copied().collect();
            uids.sort_unstable();
            let candidates = uids
                .into_iter()
                .map(|uid| sdbox_candidate(dir, uid, Flags::EMPTY, Keywords::new(), None))
                .collect();
            (
                uidvalidity,
                row.as_ref().map_or(1, |r| r.uidnext),
                candidates,
            )
        }
    };
    let usable_cache = row.is_some_and(|r| r.uidvalidity == uidvalidity);
    let mut seen = read_candidates(DboxKind::Sdbox, candidates, &old, usable_cache)?;
    if dovecot.as_ref().is_none_or(|d| d.uid_validity() == 0) {
        // Only the files: keep what boxsync saw last for the same message.
        for s in &mut seen {
            if let Some(prev) = old.get(&s.uid).filter(|p| p.guid == s.guid) {
                s.flags = prev.flags;
                s.keywords = prev.keywords.clone();
            }
        }
    }
    if let Some(last) = seen.last() {
        uidnext = uidnext.max(last.uid.saturating_add(1));
    }
    Ok(Scanned {
        guid,
        uidvalidity,
        uidnext,
        seen,
    })
}

fn sdbox_candidate(
    dir: &Path,
    uid: Uid,
    flags: Flags,
    keywords: Keywords,
    ext_guid: Option<String>,
) -> Candidate {
    let locator = format!("{SDBOX_PREFIX}{uid}");
    Candidate {
        uid,
        flags,
        keywords,
        path: dir.join(&locator),
        locator,
        offset: None,
        ext_guid,
        received_fallback: None,
    }
}

/// The UIDs of the `u.<uid>` files in a mailbox directory.
fn list_sdbox_files(dir: &Path) -> Result<HashSet<Uid>> {
    let mut uids = HashSet::new();
    for entry in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        if let Some(uid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(SDBOX_PREFIX))
            .and_then(|n| n.parse::<Uid>().ok())
            .filter(|&u| u != 0)
        {
            uids.insert(uid);
        }
    }
    Ok(uids)
}

/// Reads an mdbox mailbox. Its messages are in the shared `storage/m.*` files at the places
/// the map gives; without the mailbox's own index nothing says which of them are its own.
pub(super) fn scan_mdbox(
    index: &Index,
    name: &MailboxName,
    dir: &Path,
    root: &Path,
    map: &Map,
) -> Result<Scanned> {
    let dovecot = index::read_index(dir, MAILBOX_INDEX).map_err(|e| {
        Error::data(format!(
            "mdbox mailbox {name} cannot be read: {e} (without its index an mdbox mailbox's messages are known only to `doveadm force-resync`)"
        ))
    })?;
    if dovecot.uid_validity() == 0 {
        return Err(Error::data(format!(
            "mdbox mailbox {name} cannot be read: {} has no UIDVALIDITY",
            dir.join(MAILBOX_INDEX).display()
        )));
    }
    let guid = match header_guid(&dovecot, "mdbox-hdr") {
        Some(g) => g,
        None => {
            tracing::warn!(
                "mdbox mailbox {name}: {} has no mailbox GUID",
                dir.join(MAILBOX_INDEX).display()
            );
            stand_in_guid(index, name)?
        }
    };
    // Dovecot registers the "mdbox" record extension with the first message saved: a mailbox
    // that never held mail has none.
    let (mdbox_ext, records) = match dovecot.ext_index("mdbox") {
        Some(ext) => (ext, dovecot.records.as_slice()),
        None if dovecot.records.is_empty() => (0, &[][..]),
        None => {
            return Err(Error::data(format!(
                "mdbox mailbox {name}: {} has no \"mdbox\" extension (is this an sdbox mailbox?)",
                dir.join(MAILBOX_INDEX).display()
            )));
        }
    };
    let storage = root.join("storage");
    let mut candidates = Vec::with_capacity(dovecot.records.len());
    for rec in records {
        let b: [u8; 8] = dovecot.record_ext(rec, mdbox_ext);
        let (map_uid, save_date) = (le32(&b, 0), le32(&b, 4));
        let &(file_id, offset, size) = map.get(&map_uid).ok_or_else(|| {
            Error::data(format!(
                "mdbox mailbox {name}: UID {} points to map UID {map_uid}, which {} does not have",
                rec.uid,
                storage.join(MAP_INDEX).display()
            ))
        })?;
        let (flags, keywords) = flags_of(&dovecot, rec);
        let file = format!("{MDBOX_PREFIX}{file_id}");
        candidates.push(Candidate {
            uid: rec.uid,
            flags,
            keywords,
            locator: format!("{file}:{offset}:{size}"),
            path: storage.join(file),
            offset: Some(u64::from(offset)),
            ext_guid: guid_ext(&dovecot, rec),
            received_fallback: (save_date != 0).then_some(i64::from(save_date)),
        });
    }
    let row = index.mailbox(guid)?;
    let old: HashMap<Uid, MessageRow> = index
        .messages(guid)?
        .into_iter()
        .map(|m| (m.uid, m))
        .collect();
    let usable_cache = row.is_some_and(|r| r.uidvalidity == dovecot.uid_validity());
    // Reading the shared files in order keeps each open once and the reads sequential.
    candidates.sort_by(|a, b| (&a.path, a.offset).cmp(&(&b.path, b.offset)));
    let mut seen = read_candidates(DboxKind::Mdbox, candidates, &old, usable_cache)?;
    seen.sort_by_key(|s| s.uid);
    let uidnext = seen
        .last()
        .map_or(1, |s| s.uid.saturating_add(1))
        .max(dovecot.next_uid());
    Ok(Scanned {
        guid,
        uidvalidity: dovecot.uid_validity(),
        uidnext,
        seen,
    })
}

/// Turns candidates into messages, reading a message's metadata only when boxsync's index
/// does not already hold what it says (a message at the same place under the same
/// UIDVALIDITY). A message whose file cannot be read makes the mailbox unreadable: leaving it
/// out would look like an expunge and spread to the other side.
fn read_candidates(
    kind: DboxKind,
    candidates: Vec<Candidate>,
    old: &HashMap<Uid, MessageRow>,
    usable_cache: bool,
) -> Result<Vec<Seen>> {
    let mut seen = Vec::with_capacity(candidates.len());
    let mut open: Option<DboxFile> = None;
    for c in candidates {
        let cached = old
            .get(&c.uid)
            .filter(|r| usable_cache && r.file == c.locator);
        if let Some(row) = cached {
            let guid = row.guid.clone();
            seen.push(Seen {
                uid: c.uid,
                guid,
                file: c.locator,
                flags: c.flags,
                keywords: c.keywords,
                received: 0,
                pop3_uidl: row.pop3_uidl.clone(),
                pop3_order: row.pop3_order,
            });
            continue;
        }
        let file = match open.take() {
            Some(f) if f.path() == c.path => f,
            _ => DboxFile::open(&c.path)?,
        };
        let file = open.insert(file);
        let loc = match c.offset {
            Some(off) => file.message_at(off)?,
            None => file.first_message()?,
        };
        let meta = file.metadata(&loc)?;
        let file_guid = meta.guid().map(str::to_owned);
        // The file's `G` is the GUID Dovecot reports (a Maildir's base name, for mail that
        // came from one); the index's `guid` extension only when the file has none.
        let guid = file_guid.or(c.ext_guid).ok_or_else(|| {
            Error::data(format!(
                "{}: the message with UID {} has no GUID",
                c.path.display(),
                c.uid
            ))
        })?;
        let received = meta
            .received()
            .or(c.received_fallback)
            .or_else(|| match kind {
                DboxKind::Sdbox => mtime(&c.path),
                DboxKind::Mdbox => None,
            })
            .unwrap_or(0);
        seen.push(Seen {
            uid: c.uid,
            guid,
            file: c.locator,
            flags: c.flags,
            keywords: c.keywords,
            received,
            pop3_uidl: meta.pop3_uidl().map(str::to_owned),
            pop3_order: meta.pop3_order(),
        });
    }
    Ok(seen)
}

/// A locator as [`Seen::file`] holds it, resolved: the file and its message header's offset
/// (`None`: the first message).
pub(super) fn locate(
    kind: DboxKind,
    root: &Path,
    dir: &Path,
    locator: &str,
) -> Result<(PathBuf, Option<u64>)> {
    let bad = || Error::data(format!("invalid dbox message locator {locator:?}"));
    match kind {
        DboxKind::Sdbox => {
            let uid = locator
                .strip_prefix(SDBOX_PREFIX)
                .and_then(|n| n.parse::<Uid>().ok());
            match uid {
                Some(_) => Ok((dir.join(locator), None)),
                None => Err(bad()),
            }
        }
        DboxKind::Mdbox => {
            let mut parts = locator.split(':');
            let file = parts
                .next()
                .filter(|f| {
                    f.strip_prefix(MDBOX_PREFIX)
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .ok_or_else(bad)?;
            let offset: u64 = parts.next().and_then(|o| o.parse().ok()).ok_or_else(bad)?;
            Ok((root.join("storage").join(file), Some(offset)))
        }
    }
}
