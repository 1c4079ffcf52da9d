//! Reading a Maildir into the index: the folder list, and per folder the files, the uidlist and
//! the keywords, compared with what the index saw last time so that changes made by other
//! programs get fresh modseqs and expunges land in the journal.

use super::format::filename::{self, split_info};
use super::format::keywords::KeywordsFile;
use super::format::uidlist::{self, Uidlist, UidlistLock, UidlistRecord};
use super::{Folder, LOCK_TIMEOUT};
use crate::Layout;
use crate::reconcile::{SIGNATURE_MARGIN_NS, Seen, from_index, now_ns, reconcile};
use boxsync_index::{Index, MailboxRow};
use boxsync_model::error::IoContext;
use boxsync_model::{Error, Flags, Guid128, Keywords, MailboxName, Result, mutf7};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const UIDLIST: &str = "dovecot-uidlist";
const KEYWORDS: &str = "dovecot-keywords";

/// Every folder under a root with its name, INBOX first.
pub(crate) fn list_folders(root: &Path, layout: Layout) -> Result<Vec<(MailboxName, PathBuf)>> {
    let mut out = vec![(MailboxName::inbox(), root.to_path_buf())];
    match layout {
        Layout::MaildirPlusPlus => {
            for entry in std::fs::read_dir(root).ctx(|| format!("listing {}", root.display()))? {
                let entry = entry.ctx(|| format!("listing {}", root.display()))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Some(stored) = name.strip_prefix('.') else {
                    continue;
                };
                if stored.is_empty() || stored.starts_with('.') || !entry.path().is_dir() {
                    continue;
                }
                match decode_stored(stored.split('.')) {
                    Some(n) if !n.is_inbox() => out.push((n, entry.path())),
                    _ => tracing::warn!(
                        "ignoring folder {:?}: not a valid mailbox name",
                        entry.path()
                    ),
                }
            }
        }
        Layout::Fs => walk_fs(root, &mut Vec::new(), &mut out)?,
    }
    out.sort_by(|a, b| (!a.0.is_inbox(), &a.0).cmp(&(!b.0.is_inbox(), &b.0)));
    Ok(out)
}

fn decode_stored<'a>(parts: impl Iterator<Item = &'a str>) -> Option<MailboxName> {
    let decoded: Option<Vec<String>> = parts.map(mutf7::decode).collect();
    MailboxName::from_parts(decoded?).ok()
}

fn walk_fs(
    dir: &Path,
    prefix: &mut Vec<String>,
    out: &mut Vec<(MailboxName, PathBuf)>,
) -> Result<()> {
    for entry in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.')
            || ["cur", "new", "tmp"].contains(&name.as_str())
            || !entry.path().is_dir()
        {
            continue;
        }
        let Some(part) = mutf7::decode(&name) else {
            tracing::warn!("ignoring folder {:?}: not modified UTF-7", entry.path());
            continue;
        };
        prefix.push(part);
        if entry.path().join("cur").is_dir() {
            match MailboxName::from_parts(prefix.clone()) {
                Ok(n) if n.is_inbox() => {}
                Ok(n) => out.push((n, entry.path())),
                Err(e) => tracing::warn!("ignoring folder {:?}: {e}", entry.path()),
            }
        }
        walk_fs(&entry.path(), prefix, out)?;
        prefix.pop();
    }
    Ok(())
}

/// The directory a mailbox name maps to. Refuses names the layout cannot hold, so that no name
/// can reach outside the root.
pub(crate) fn folder_dir(root: &Path, layout: Layout, name: &MailboxName) -> Result<PathBuf> {
    if let Some(why) = unfit(layout, name) {
        return Err(Error::data(format!("mailbox name {name:?}: {why}")));
    }
    if name.is_inbox() {
        return Ok(root.to_path_buf());
    }
    let encoded: Vec<String> = name.parts().iter().map(|p| mutf7::encode(p)).collect();
    Ok(match layout {
        Layout::MaildirPlusPlus => root.join(format!(".{}", encoded.join("."))),
        Layout::Fs => encoded.iter().fold(root.to_path_buf(), |d, p| d.join(p)),
    })
}

/// The longest file name Linux and the BSDs allow (NAME_MAX).
const NAME_MAX: usize = 255;

/// Names of files Dovecot and boxsync keep beside `cur/`, `new/` and `tmp/` (and in the root):
/// with `LAYOUT=fs` a sub-folder's directory of such a name would collide with one of them.
const FS_RESERVED_PREFIXES: [&str; 10] = [
    "dovecot-uidlist",
    "dovecot-keywords",
    "dovecot-uidvalidity",
    "dovecot.index",
    "dovecot.list.index",
    "dovecot.mailbox.log",
    "boxsync.index",
    "boxsync-sync.lock",
    "maildirfolder",
    "subscriptions",
];

/// Whether a level (as stored: modified UTF-7) cannot be a folder directory with `LAYOUT=fs`:
/// hidden (the scan skips those, and the index directory of a root may be one), the three
/// Maildir directories (Dovecot's "reserved name"), or a control file's name.
fn fs_reserved(encoded: &str) -> bool {
    encoded.starts_with('.')
        || ["cur", "new", "tmp"].contains(&encoded)
        || FS_RESERVED_PREFIXES.iter().any(|r| encoded.starts_with(r))
}

/// Why `layout` cannot hold `name`, or `None` when it can.
fn unfit(layout: Layout, name: &MailboxName) -> Option<String> {
    if name.is_inbox() {
        return None;
    }
    let encoded: Vec<String> = name.parts().iter().map(|p| mutf7::encode(p)).collect();
    match layout {
        Layout::MaildirPlusPlus => {
            if let Some(p) = name.parts().iter().find(|p| p.contains('.')) {
                return Some(format!(
                    "level {p:?} contains '.', which Maildir++ uses as its separator"
                ));
            }
            // The whole name is one directory: `.` and the levels joined by `.`.
            let len = encoded.iter().map(|p| p.len() + 1).sum::<usize>();
            (len > NAME_MAX)
                .then(|| format!("{len} bytes as a Maildir++ directory name, more than {NAME_MAX}"))
        }
        Layout::Fs => encoded.iter().find_map(|p| {
            if fs_reserved(p) {
                Some(format!("level {p:?} cannot be a directory name here"))
            } else if p.len() > NAME_MAX {
                Some(format!(
                    "level {p:?} is longer than {NAME_MAX} bytes as a directory name"
                ))
            } else {
                None
            }
        }),
    }
}

/// The name a folder gets here for a mailbox another store calls `name` ([`crate::Store::fix_name`]):
/// Maildir++ turns each `.` inside a level into `alt`; `LAYOUT=fs` puts `_` before a reserved
/// level, as Dovecot does. `None` when the result still does not fit (too long).
pub(crate) fn fix_name(layout: Layout, name: &MailboxName, alt: char) -> Option<MailboxName> {
    if unfit(layout, name).is_none() {
        return Some(name.clone());
    }
    let fixed = match layout {
        Layout::MaildirPlusPlus => name.replace_chars(|c| c == '.', alt).ok()?,
        Layout::Fs => MailboxName::from_parts(name.parts().iter().map(|p| {
            if fs_reserved(&mutf7::encode(p)) {
                format!("_{p}")
            } else {
                p.clone()
            }
        }))
        .ok()?,
    };
    unfit(layout, &fixed).is_none().then_some(fixed)
}

fn mtime_ns(path: &Path) -> i128 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(-1)
}

/// What the directory and control files looked like: if it is unchanged since a scan that
/// happened well after the last change, the index is still right and the scan can be skipped.
fn signature(dir: &Path) -> (String, i128) {
    let times = [
        dir.join("cur"),
        dir.join("new"),
        dir.join(UIDLIST),
        dir.join(KEYWORDS),
    ]
    .map(|p| mtime_ns(&p));
    let newest = times.iter().copied().max().unwrap_or(0);
    (times.map(|t| t.to_string()).join(","), newest)
}

fn read_uidlist(dir: &Path) -> Result<Option<Uidlist>> {
    Uidlist::read(dir)
}

pub(crate) fn read_keywords(dir: &Path) -> Result<KeywordsFile> {
    KeywordsFile::read(dir).map(Option::unwrap_or_default)
}

fn uidvalidity_now() -> u32 {
    (now_ns() / 1_000_000_000) as u32
}

fn ensure_subdirs(dir: &Path) -> Result<()> {
    for sub in ["cur", "new", "tmp"] {
        let p = dir.join(sub);
        if !p.is_dir() {
            std::fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
    }
    Ok(())
}

/// A file in `cur/` or `new/`, named relative to its folder (`cur/<base>:2,<flags>`), found in a
/// [`Listing`] by its base name: one string per file, however it is looked up.
#[derive(Debug)]
pub(crate) struct Listed {
    path: String,
    base_end: usize,
}

/// Both sub-directories' files.
pub(crate) type Listing = std::collections::HashSet<Listed>;

/// Where a listed path's base name starts: after `cur/` or `new/`.
const SUB_LEN: usize = "cur/".len();

impl Listed {
    /// `path` is `cur/…` or `new/…`.
    fn new(path: String) -> Listed {
        let base_end = SUB_LEN + split_info(&path[SUB_LEN..]).0.len();
        Listed { path, base_end }
    }

    fn base(&self) -> &str {
        &self.path[SUB_LEN..self.base_end]
    }

    fn into_path(self) -> String {
        self.path
    }
}

impl PartialEq for Listed {
    fn eq(&self, other: &Listed) -> bool {
        self.base() == other.base()
    }
}

impl Eq for Listed {}

impl std::hash::Hash for Listed {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.base().hash(h);
    }
}

impl std::borrow::Borrow<str> for Listed {
    fn borrow(&self) -> &str {
        self.base()
    }
}

/// Lists `new/` then `cur/`; a base name in both counts as the `cur/` one. A missing one is
/// empty (only a dry run, which creates nothing, can meet one: a scan creates them first).
fn list_files(dir: &Path) -> Result<Listing> {
    let mut files = Listing::new();
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        let entries = match std::fs::read_dir(&d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            r => r.ctx(|| format!("listing {}", d.display()))?,
        };
        for entry in entries {
            let entry = entry.ctx(|| format!("listing {}", d.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!("ignoring {:?}: file name is not UTF-8", entry.path());
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let mut path = String::with_capacity(SUB_LEN + name.len());
            path.push_str(sub);
            path.push('/');
            path.push_str(name);
            files.replace(Listed::new(path));
        }
    }
    Ok(files)
}

/// The messages `list` names, taken out of `files`, in record order: a base name the list
/// names twice counts once, and what stays in `files` is mail no record names yet.
fn take_named(list: &Uidlist, files: &mut Listing, keywords: &KeywordsFile) -> Vec<Seen> {
    let mut seen = Vec::with_capacity(list.records.len());
    for rec in &list.records {
        let Some(file) = files.take(rec.base.as_str()) else {
            continue;
        };
        let file = file.into_path();
        let (flags, keywords) = flags_of(&file, keywords);
        seen.push(Seen {
            uid: rec.uid,
            guid: rec.guid().unwrap_or(&rec.base).to_owned(),
            file,
            flags,
            keywords,
            received: 0,
            pop3_uidl: rec.pop3_uidl().map(str::to_owned),
            pop3_order: rec.pop3_order(),
        });
    }
    seen
}

/// Flags and keywords of a file name, with the folder's keyword table.
pub(crate) fn flags_of(file: &str, keywords: &KeywordsFile) -> (Flags, Keywords) {
    let name = file.rsplit('/').next().unwrap_or(file);
    match split_info(name).1 {
        None => (Flags::EMPTY, Keywords::new()),
        Some(info) => {
            let info = filename::parse_info(info);
            let kws = info
                .keyword_letters
                .iter()
                .filter_map(|&l| keywords.name_of(l).map(str::to_owned))
                .collect();
            (info.flags, kws)
        }
    }
}

/// Scans one folder and brings the index up to date. Returns the folder and its GUID. With
/// `dry_run`, nothing on disk changes: no sub-directory is created, and new files get UIDs in
/// memory only.
pub(crate) fn scan_folder(
    index: &mut Index,
    name: &MailboxName,
    dir: &Path,
    dry_run: bool,
) -> Result<(Folder, Guid128)> {
    if !dry_run {
        ensure_subdirs(dir)?;
    }
    // Taken before anything is read: a change made while we read moves an mtime past it.
    let scan_time = now_ns();
    let (sig, newest) = signature(dir);
    if let Some(guid) = read_uidlist_guid(dir)
        && let Some(row) = index.mailbox(guid)?
        && !row.scan_signature.is_empty()
        && row.scan_signature == sig
    {
        return Ok((
            Folder {
                name: name.clone(),
                dir: dir.to_path_buf(),
                uidvalidity: row.uidvalidity,
                uidnext: row.uidnext,
                highest_modseq: row.highest_modseq,
                count: row.messages,
                digest: row.digest,
                loaded: false,
                messages: Vec::new(),
                files: BTreeMap::new(),
            },
            guid,
        ));
    }
    let mut list = read_uidlist(dir)?;
    let mut files = list_files(dir)?;
    // After the listing: every letter a listed name uses is in it.
    let mut keywords = read_keywords(dir)?;
    let mut seen = match &list {
        Some(l) => take_named(l, &mut files, &keywords),
        None => Vec::new(),
    };
    if list.as_ref().is_none_or(|l| l.mailbox_guid.is_none()) || !files.is_empty() {
        // Files no record names: the listing goes back together for assign_uids, which may
        // list the folder again.
        files.extend(seen.drain(..).map(|s| Listed::new(s.file)));
        let (assigned, mut listed) = assign_uids(dir, files, &sig, dry_run)?;
        keywords = read_keywords(dir)?;
        seen = take_named(&assigned, &mut listed, &keywords);
        list = Some(assigned);
    }
    let list = list.ok_or_else(|| Error::data(format!("{}: no uidlist", dir.display())))?;
    let guid = list.mailbox_guid.ok_or_else(|| {
        Error::data(format!(
            "{}: uidlist has no mailbox GUID",
            dir.join(UIDLIST).display()
        ))
    })?;
    let scan_signature = if scan_time - newest > SIGNATURE_MARGIN_NS {
        sig
    } else {
        String::new()
    };
    let r = reconcile(
        index,
        guid,
        name,
        list.uidvalidity,
        list.next_uid,
        seen,
        scan_signature,
    )?;
    Ok((
        Folder {
            name: name.clone(),
            dir: dir.to_path_buf(),
            uidvalidity: list.uidvalidity,
            uidnext: list.next_uid,
            highest_modseq: r.highest_modseq,
            count: r.messages.len() as u32,
            digest: r.digest,
            loaded: true,
            messages: r.messages,
            files: r.files,
        },
        guid,
    ))
}

/// Gives UIDs to files no uidlist names yet (mail an MDA delivered), and a GUID to a folder
/// that has none, under the uidlist lock, as Dovecot would on its next look.
///
/// `listed` is the listing the caller took after `listed_sig`: still right, and not taken
/// again, when `cur/` and `new/` did not change since. With `dry_run`, the UIDs are the ones
/// a real run would give, but kept in memory: no lock is taken and nothing is written.
fn assign_uids(
    dir: &Path,
    listed: Listing,
    listed_sig: &str,
    dry_run: bool,
) -> Result<(Uidlist, Listing)> {
    let _lock = if dry_run {
        None
    } else {
        Some(UidlistLock::acquire(dir, LOCK_TIMEOUT)?)
    };
    let dirs_of = |sig: &str| {
        sig.split(',')
            .take(2)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let unchanged = dirs_of(listed_sig) == dirs_of(&signature(dir).0);
    let (mut list, appendable) = uidlist::read_for_update(dir)?.unwrap_or_else(|| {
        let list = Uidlist {
            uidvalidity: uidvalidity_now(),
            next_uid: 1,
            mailbox_guid: None,
            extra_header: Vec::new(),
            records: Vec::new(),
        };
        (list, false)
    });
    let (old_len, old_next) = (list.records.len(), list.next_uid);
    let files = if unchanged { listed } else { list_files(dir)? };
    let had_guid = list.mailbox_guid.is_some();
    let mut changed = !had_guid;
    if !had_guid {
        list.mailbox_guid = Some(Guid128::generate());
    }
    let mut new: Vec<String> = {
        let known: std::collections::HashSet<&str> =
            list.records.iter().map(|r| r.base.as_str()).collect();
        files
            .iter()
            .map(Listed::base)
            .filter(|b| !known.contains(b))
            .map(str::to_owned)
            .collect()
    };
    // Dovecot's names start with the delivery time, so name order is arrival order.
    new.sort();
    for base in new {
        list.records.push(UidlistRecord {
            uid: list.next_uid,
            ext: Vec::new(),
            base,
        });
        list.next_uid += 1;
        changed = true;
    }
    if changed {
        // Records of files gone stay until a quarter of them are, as Dovecot keeps them: new
        // ones are appended meanwhile. A rewrite drops them.
        let gone = list
            .records
            .iter()
            .filter(|r| !files.contains(r.base.as_str()))
            .count();
        let append = appendable
            && gone * 4 < list.records.len()
            && had_guid
            && list.appends_to(old_len, old_next);
        if !append {
            list.records.retain(|r| files.contains(r.base.as_str()));
        }
        // Not flushed, as Dovecot does not: if a crash loses these UIDs, the files get new
        // ones on the next scan, and the next sync renumbers; no mail is lost either way.
        if !dry_run {
            if append {
                uidlist::append(dir, &list, old_len)?;
            } else {
                uidlist::write_atomic(dir, &list, false)?;
            }
        }
    }
    Ok((list, files))
}

/// Creates a new, empty folder with the given GUID and UIDVALIDITY.
pub(crate) fn create_folder(
    index: &mut Index,
    name: &MailboxName,
    dir: &Path,
    guid: Guid128,
    uidvalidity: u32,
    layout: Layout,
    fsync: bool,
) -> Result<Folder> {
    if dir.join(UIDLIST).exists() && !name.is_inbox() {
        return Err(Error::temp(format!(
            "cannot create mailbox {name}: {} already exists",
            dir.display()
        )));
    }
    ensure_subdirs(dir)?;
    if layout == Layout::MaildirPlusPlus && !name.is_inbox() {
        std::fs::write(dir.join("maildirfolder"), b"")
            .ctx(|| format!("creating {}/maildirfolder", dir.display()))?;
    }
    let _lock = UidlistLock::acquire(dir, LOCK_TIMEOUT)?;
    let list = Uidlist {
        uidvalidity: if uidvalidity == 0 {
            uidvalidity_now()
        } else {
            uidvalidity
        },
        next_uid: 1,
        mailbox_guid: Some(guid),
        extra_header: Vec::new(),
        records: Vec::new(),
    };
    uidlist::write_atomic(dir, &list, fsync)?;
    let tx = index.transaction()?;
    tx.delete_mailbox(guid)?;
    tx.put_mailbox(&MailboxRow {
        guid,
        name: name.to_string(),
        uidvalidity: list.uidvalidity,
        uidnext: 1,
        highest_modseq: 0,
        scan_signature: String::new(),
        messages: 0,
        digest: crate::content_digest(&[]),
    })?;
    tx.commit()?;
    Ok(Folder {
        name: name.clone(),
        dir: dir.to_path_buf(),
        uidvalidity: list.uidvalidity,
        uidnext: 1,
        highest_modseq: 0,
        count: 0,
        digest: crate::content_digest(&[]),
        loaded: true,
        messages: Vec::new(),
        files: BTreeMap::new(),
    })
}

/// The files that make a folder what it is (not its sub-folders in `LAYOUT=fs`).
const FOLDER_ENTRIES: [&str; 7] = [
    "cur",
    "new",
    "tmp",
    UIDLIST,
    KEYWORDS,
    "maildirfolder",
    "dovecot-uidlist.lock",
];

pub(crate) fn delete_folder(dir: &Path, layout: Layout, root: &Path) -> Result<()> {
    if dir == root {
        // INBOX cannot be deleted; empty it instead.
        for sub in ["cur", "new"] {
            let d = dir.join(sub);
            for e in std::fs::read_dir(&d)
                .ctx(|| format!("listing {}", d.display()))?
                .flatten()
            {
                std::fs::remove_file(e.path())
                    .ctx(|| format!("removing {}", e.path().display()))?;
            }
        }
        return Ok(());
    }
    match layout {
        Layout::MaildirPlusPlus => {
            // Rename first so that a crash halfway never leaves a half-deleted folder visible.
            let trash = root.join(format!("..boxsync-deleted-{}", Guid128::generate()));
            std::fs::rename(dir, &trash).ctx(|| format!("deleting {}", dir.display()))?;
            std::fs::remove_dir_all(&trash).ctx(|| format!("removing {}", trash.display()))
        }
        Layout::Fs => {
            for e in FOLDER_ENTRIES {
                let p = dir.join(e);
                if p.is_dir() {
                    std::fs::remove_dir_all(&p).ctx(|| format!("removing {}", p.display()))?;
                } else if p.exists() {
                    std::fs::remove_file(&p).ctx(|| format!("removing {}", p.display()))?;
                }
            }
            let _ = std::fs::remove_dir(dir);
            Ok(())
        }
    }
}

pub(crate) fn move_folder(from: &Path, to: &Path, layout: Layout) -> Result<()> {
    if to.join(UIDLIST).exists() || (layout == Layout::MaildirPlusPlus && to.exists()) {
        return Err(Error::temp(format!(
            "cannot rename {} to {}: target exists",
            from.display(),
            to.display()
        )));
    }
    match layout {
        Layout::MaildirPlusPlus => std::fs::rename(from, to)
            .ctx(|| format!("renaming {} to {}", from.display(), to.display())),
        Layout::Fs => {
            std::fs::create_dir_all(to).ctx(|| format!("creating {}", to.display()))?;
            for e in FOLDER_ENTRIES {
                let p = from.join(e);
                if p.exists() {
                    std::fs::rename(&p, to.join(e)).ctx(|| format!("moving {}", p.display()))?;
                }
            }
            let _ = std::fs::remove_dir(from);
            Ok(())
        }
    }
}

pub(crate) fn rewrite_mailbox_guid(dir: &Path, guid: Guid128, fsync: bool) -> Result<()> {
    let _lock = UidlistLock::acquire(dir, LOCK_TIMEOUT)?;
    let mut list = read_uidlist(dir)?
        .ok_or_else(|| Error::data(format!("{}: no dovecot-uidlist", dir.display())))?;
    list.mailbox_guid = Some(guid);
    uidlist::write_atomic(dir, &list, fsync)
}

/// The mailbox GUID from the uidlist's header line alone (the rest can be megabytes).
fn read_uidlist_guid(dir: &Path) -> Option<Guid128> {
    use std::io::BufRead;
    let f = std::fs::File::open(dir.join(UIDLIST)).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(f).read_line(&mut line).ok()?;
    let mut items = line.split_ascii_whitespace();
    if items.next()? != "3" {
        return None;
    }
    items.find_map(|i| i.strip_prefix('G').and_then(Guid128::parse_hex))
}

/// Fills a folder whose scan was skipped from the index.
pub(crate) fn load_folder(index: &Index, guid: Guid128, folder: &mut Folder) -> Result<()> {
    if folder.loaded {
        return Ok(());
    }
    // Maildir's received date is the file's mtime, read when the body is.
    (folder.messages, folder.files) = from_index(index.messages(guid)?, |_| 0);
    folder.loaded = true;
    Ok(())
}

pub(crate) fn reread_uidlist(dir: &Path) -> Result<Uidlist> {
    read_uidlist(dir)?
        .ok_or_else(|| Error::data(format!("{}: dovecot-uidlist vanished", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(layout: Layout, name: &str, alt: char) -> Option<String> {
        fix_name(layout, &MailboxName::parse(name).unwrap(), alt).map(|n| n.to_string())
    }

    #[test]
    fn maildir_plus_plus_turns_dots_into_the_alt_char() {
        let l = Layout::MaildirPlusPlus;
        assert_eq!(fix(l, "a.b", '_').as_deref(), Some("a_b"));
        assert_eq!(fix(l, "Work/x.y.z", '+').as_deref(), Some("Work/x+y+z"));
        assert_eq!(fix(l, "Work/x y", '_').as_deref(), Some("Work/x y"));
        assert_eq!(fix(l, "INBOX", '_').as_deref(), Some("INBOX"));
        // A leading dot is no hidden directory in Maildir++: it is inside `.NAME`.
        assert_eq!(fix(l, ".hidden/cur", '_').as_deref(), Some("_hidden/cur"));
        // The whole name is one directory name: too long is beyond repair.
        let long = format!("{}/{}", "a".repeat(150), "b".repeat(150));
        assert_eq!(fix(l, &long, '_'), None);
        assert_eq!(fix(l, "a.b", '.'), None, "an alt char '.' repairs nothing");
        let fixed = MailboxName::parse("a_b").unwrap();
        assert!(folder_dir(Path::new("/m"), l, &fixed).is_ok());
        let e = folder_dir(Path::new("/m"), l, &MailboxName::parse("a.b").unwrap());
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("Maildir++ uses as its separator")
        );
    }

    #[test]
    fn layout_fs_prefixes_reserved_levels() {
        let l = Layout::Fs;
        assert_eq!(fix(l, "a.b", '_').as_deref(), Some("a.b"));
        assert_eq!(fix(l, "Work/cur", '_').as_deref(), Some("Work/_cur"));
        assert_eq!(fix(l, "tmp/new", '+').as_deref(), Some("_tmp/_new"));
        assert_eq!(fix(l, ".hidden", '_').as_deref(), Some("_.hidden"));
        assert_eq!(
            fix(l, "Work/dovecot-uidlist", '_').as_deref(),
            Some("Work/_dovecot-uidlist")
        );
        assert_eq!(
            fix(l, "maildirfolder", '_').as_deref(),
            Some("_maildirfolder")
        );
        // Levels are separate directories: each may be long, none longer than a file name.
        let two = format!("{}/{}", "a".repeat(200), "b".repeat(200));
        assert_eq!(fix(l, &two, '_').as_deref(), Some(two.as_str()));
        // 100 of these are 200 bytes of UTF-8 but 269 of modified UTF-7.
        assert_eq!(fix(l, &"ø".repeat(100), '_'), None);
        for name in ["Work/_cur", "_.hidden"] {
            let n = MailboxName::parse(name).unwrap();
            assert!(folder_dir(Path::new("/m"), l, &n).is_ok(), "{name}");
        }
        for name in ["Work/cur", ".hidden", "dovecot.index.log"] {
            let n = MailboxName::parse(name).unwrap();
            assert!(folder_dir(Path::new("/m"), l, &n).is_err(), "{name}");
        }
    }
}
