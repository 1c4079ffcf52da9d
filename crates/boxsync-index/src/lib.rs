//! The index of one store: a SQLite file (WAL mode) holding, per mailbox, UIDVALIDITY, UIDNEXT,
//! HIGHESTMODSEQ and the scan signature of its directories, and per message its UID, GUID, file,
//! flags, keywords, modseq and the flags both sides agreed on at the last sync; plus the expunge
//! journal. The mail files stay the truth for content: the index is refreshed from them before
//! every sync, and an admin can read it with `sqlite3`.

use boxsync_model::{Error, Flags, Guid128, Keywords, Modseq, Result, Uid};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mailbox (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highest_modseq INTEGER NOT NULL,
    scan_signature TEXT NOT NULL DEFAULT '',
    messages INTEGER NOT NULL DEFAULT 0,
    digest INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS message (
    mailbox TEXT NOT NULL,
    uid INTEGER NOT NULL,
    guid TEXT NOT NULL,
    file TEXT NOT NULL,
    flags INTEGER NOT NULL,
    keywords TEXT NOT NULL,
    modseq INTEGER NOT NULL,
    base_flags INTEGER,
    base_keywords TEXT,
    pop3_uidl TEXT,
    pop3_order INTEGER,
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS expunged (
    mailbox TEXT NOT NULL,
    uid INTEGER NOT NULL,
    guid TEXT NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
";

/// A mailbox's counters as the index last saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxRow {
    pub guid: Guid128,
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: Modseq,
    pub scan_signature: String,
    /// How many messages, and the digest of them, when the scan signature was recorded.
    pub messages: u32,
    pub digest: u64,
}

/// One message as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRow {
    pub uid: Uid,
    pub guid: String,
    /// The file name relative to the mailbox directory (`cur/…` or `new/…`).
    pub file: String,
    pub flags: Flags,
    pub keywords: Keywords,
    pub modseq: Modseq,
    /// The flags and keywords both sides had when this message was last synced.
    pub base: Option<(Flags, Keywords)>,
    pub pop3_uidl: Option<String>,
    pub pop3_order: Option<u32>,
}

/// One message row as SQLite holds it, borrowed while [`Index::visit_messages`] looks at it:
/// comparing a row with what the files show needs no copy of its strings.
#[derive(Clone, Copy, Debug)]
pub struct MessageRowRef<'a> {
    pub uid: Uid,
    pub guid: &'a str,
    pub file: &'a str,
    pub flags: Flags,
    /// The keywords as stored: names separated by spaces.
    pub keywords: &'a str,
    pub modseq: Modseq,
    pub base_flags: Option<u8>,
    pub base_keywords: Option<&'a str>,
    pub pop3_uidl: Option<&'a str>,
    pub pop3_order: Option<u32>,
}

impl MessageRowRef<'_> {
    /// Whether the row's keywords are exactly `keywords`.
    pub fn keywords_are(&self, keywords: &Keywords) -> bool {
        let stored = self.keywords.split(' ').filter(|k| !k.is_empty());
        // boxsync writes them sorted and once each; a row written otherwise is compared as a set.
        stored.eq(keywords.iter().map(String::as_str)) || split_keywords(self.keywords) == *keywords
    }

    pub fn base(&self) -> Option<(Flags, Keywords)> {
        self.base_flags
            .map(|f| (Flags(f), split_keywords(self.base_keywords.unwrap_or(""))))
    }

    pub fn to_row(&self) -> MessageRow {
        MessageRow {
            uid: self.uid,
            guid: self.guid.to_owned(),
            file: self.file.to_owned(),
            flags: self.flags,
            keywords: split_keywords(self.keywords),
            modseq: self.modseq,
            base: self.base(),
            pop3_uidl: self.pop3_uidl.map(str::to_owned),
            pop3_order: self.pop3_order,
        }
    }
}

/// An entry of the expunge journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpungedRow {
    pub uid: Uid,
    pub guid: String,
    pub modseq: Modseq,
}

pub struct Index {
    conn: Connection,
}

fn sql_err(path: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Error::temp(format!("index {path} is locked by another process: {e}"))
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            ) =>
        {
            Error::data(format!(
                "index {path} is corrupt ({e}); delete it to rebuild it from the mail files"
            ))
        }
        _ => Error::temp(format!("index {path}: {e}")),
    }
}

/// Refuses an index a newer boxsync wrote.
fn check_version(conn: &Connection, shown: &str, db: &str) -> Result<()> {
    let version: i64 = conn
        .query_row(&format!("PRAGMA {db}.user_version"), [], |r| r.get(0))
        .map_err(sql_err(shown))?;
    if version > SCHEMA_VERSION {
        return Err(Error::Config(format!(
            "index {shown} was written by a newer boxsync (schema {version}); delete it to rebuild it"
        )));
    }
    Ok(())
}

/// A copy of an index file and its write-ahead log in a private temporary directory, removed
/// when dropped.
struct TempCopy {
    dir: std::path::PathBuf,
    db: std::path::PathBuf,
}

impl TempCopy {
    fn of(path: &Path) -> Result<TempCopy> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "boxsync-dry-run-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |what: String| move |e| Error::io(what, e);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let copy = TempCopy {
            db: dir.join("index.sqlite"),
            dir,
        };
        std::fs::copy(path, &copy.db).map_err(io(format!("copying {}", path.display())))?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = std::path::PathBuf::from(wal);
        if wal.exists() {
            std::fs::copy(&wal, copy.dir.join("index.sqlite-wal"))
                .map_err(io(format!("copying {}", wal.display())))?;
        }
        Ok(copy)
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn join_keywords(k: &Keywords) -> String {
    k.iter().map(String::as_str).collect::<Vec<_>>().join(" ")
}

fn split_keywords(s: &str) -> Keywords {
    s.split(' ')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Index {
    /// Opens (creating if needed) the index at `path`. With `durable`, the WAL is flushed at
    /// checkpoints; without, never (as `mail_fsync=never` asks).
    pub fn open(path: &Path, durable: bool) -> Result<Index> {
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(sql_err(&shown))?;
        // NORMAL in WAL mode may lose the last commits on power loss but never corrupts: the
        // index can then only know less than the files, and the next scan learns it again.
        let sync = if durable { "NORMAL" } else { "OFF" };
        conn.execute_batch(&format!(
            "PRAGMA busy_timeout = 30000; PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};"
        ))
        .map_err(sql_err(&shown))?;
        check_version(&conn, &shown, "main")?;
        conn.execute_batch(SCHEMA).map_err(sql_err(&shown))?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(sql_err(&shown))?;
        Ok(Index { conn })
    }

    /// An index in memory holding what the file at `path` holds, for a dry run: changes go to
    /// memory only, and neither the file nor its directory is written (not even a `-shm`). A
    /// missing file gives an empty index.
    ///
    /// The file and its write-ahead log are copied to a private temporary directory first and
    /// read from there, so that commits still in the log are seen without SQLite touching the
    /// original.
    pub fn open_in_memory_copy(path: &Path) -> Result<Index> {
        let shown = path.display().to_string();
        let conn = Connection::open_in_memory().map_err(sql_err(&shown))?;
        conn.execute_batch(SCHEMA).map_err(sql_err(&shown))?;
        if !path.exists() {
            return Ok(Index { conn });
        }
        let copy = TempCopy::of(path)?;
        let copied = copy.db.display().to_string();
        conn.execute("ATTACH DATABASE ?1 AS src", params![copied])
            .map_err(sql_err(&shown))?;
        check_version(&conn, &shown, "src")?;
        // A file that never got its tables (an empty one) gets them in the copy.
        conn.execute_batch(&SCHEMA.replace("EXISTS ", "EXISTS src."))
            .map_err(sql_err(&shown))?;
        conn.execute_batch(
            "INSERT INTO main.mailbox SELECT * FROM src.mailbox;
             INSERT INTO main.message SELECT * FROM src.message;
             INSERT INTO main.expunged SELECT * FROM src.expunged;
             DETACH DATABASE src;",
        )
        .map_err(sql_err(&shown))?;
        drop(copy);
        Ok(Index { conn })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        sql_err(self.conn.path().unwrap_or("(index)"))
    }

    pub fn mailbox(&self, guid: Guid128) -> Result<Option<MailboxRow>> {
        self.conn
            .prepare_cached(
                "SELECT name, uidvalidity, uidnext, highest_modseq, scan_signature, messages, digest
                 FROM mailbox WHERE guid = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![guid.to_string()], |r| {
                    Ok(MailboxRow {
                        guid,
                        name: r.get(0)?,
                        uidvalidity: r.get(1)?,
                        uidnext: r.get(2)?,
                        highest_modseq: r.get::<_, i64>(3)? as u64,
                        scan_signature: r.get(4)?,
                        messages: r.get(5)?,
                        digest: r.get::<_, i64>(6)? as u64,
                    })
                })
                .optional()
            })
            .map_err(self.err())
    }

    /// Every mailbox the index knows, by GUID order: a store without its own place for mailbox
    /// GUIDs (an IMAP account) keeps them here only.
    pub fn all_mailboxes(&self) -> Result<Vec<MailboxRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT guid, name, uidvalidity, uidnext, highest_modseq, scan_signature, messages, digest
                 FROM mailbox ORDER BY guid",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let guid: String = r.get(0)?;
                Ok((
                    guid,
                    MailboxRow {
                        guid: Guid128::default(),
                        name: r.get(1)?,
                        uidvalidity: r.get(2)?,
                        uidnext: r.get(3)?,
                        highest_modseq: r.get::<_, i64>(4)? as u64,
                        scan_signature: r.get(5)?,
                        messages: r.get(6)?,
                        digest: r.get::<_, i64>(7)? as u64,
                    },
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (guid, mut row) = row.map_err(self.err())?;
            // A row whose key is not a GUID was not written by boxsync: skip it, the store
            // then sees that mailbox as new.
            if let Some(g) = Guid128::parse_hex(&guid) {
                row.guid = g;
                out.push(row);
            }
        }
        Ok(out)
    }

    /// The messages of a mailbox in UID order.
    pub fn messages(&self, mailbox: Guid128) -> Result<Vec<MessageRow>> {
        let mut rows = Vec::new();
        self.visit_messages(mailbox, |r| {
            rows.push(r.to_row());
            Ok(())
        })?;
        Ok(rows)
    }

    /// Calls `visit` with each message of a mailbox in UID order, borrowed from SQLite. An
    /// error from `visit` stops the walk and is returned.
    pub fn visit_messages(
        &self,
        mailbox: Guid128,
        mut visit: impl FnMut(MessageRowRef<'_>) -> Result<()>,
    ) -> Result<()> {
        let err = self.err();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT uid, guid, file, flags, keywords, modseq, base_flags, base_keywords,
                        pop3_uidl, pop3_order
                 FROM message WHERE mailbox = ?1 ORDER BY uid",
            )
            .map_err(&err)?;
        let mut rows = stmt.query(params![mailbox.to_string()]).map_err(&err)?;
        while let Some(r) = rows.next().map_err(&err)? {
            let text = |i: usize| -> rusqlite::Result<&str> {
                r.get_ref(i)?.as_str().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        i,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })
            };
            let opt_text = |i: usize| -> rusqlite::Result<Option<&str>> {
                r.get_ref(i)?.as_str_or_null().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        i,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })
            };
            let row = (|| {
                Ok(MessageRowRef {
                    uid: r.get(0)?,
                    guid: text(1)?,
                    file: text(2)?,
                    flags: Flags(r.get(3)?),
                    keywords: text(4)?,
                    modseq: r.get::<_, i64>(5)? as u64,
                    base_flags: r.get(6)?,
                    base_keywords: opt_text(7)?,
                    pop3_uidl: opt_text(8)?,
                    pop3_order: r.get(9)?,
                })
            })()
            .map_err(&err)?;
            visit(row)?;
        }
        Ok(())
    }

    /// The expunge journal of a mailbox, entries newer than `since`, in UID order.
    pub fn expunged_since(&self, mailbox: Guid128, since: Modseq) -> Result<Vec<ExpungedRow>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT uid, guid, modseq FROM expunged WHERE mailbox = ?1 AND modseq > ?2 ORDER BY uid")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![mailbox.to_string(), since as i64], |r| {
                Ok(ExpungedRow {
                    uid: r.get(0)?,
                    guid: r.get(1)?,
                    modseq: r.get::<_, i64>(2)? as u64,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())
    }

    /// Starts a batch of changes that land together or not at all.
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        let path = self.conn.path().unwrap_or("(index)").to_owned();
        let tx = self.conn.transaction().map_err(sql_err(&path))?;
        Ok(Transaction { tx, path })
    }
}

/// Changes to the index, committed at once.
pub struct Transaction<'a> {
    tx: rusqlite::Transaction<'a>,
    path: String,
}

impl Transaction<'_> {
    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        sql_err(&self.path)
    }

    pub fn put_mailbox(&self, row: &MailboxRow) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO mailbox (guid, name, uidvalidity, uidnext, highest_modseq, scan_signature, messages, digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(guid) DO UPDATE SET name = ?2, uidvalidity = ?3, uidnext = ?4,
                     highest_modseq = ?5, scan_signature = ?6, messages = ?7, digest = ?8",
            )
            .and_then(|mut s| {
                s.execute(params![
                    row.guid.to_string(),
                    row.name,
                    row.uidvalidity,
                    row.uidnext,
                    row.highest_modseq as i64,
                    row.scan_signature,
                    row.messages,
                    row.digest as i64
                ])
            })
            .map_err(self.err())?;
        Ok(())
    }

    /// Forgets a mailbox and everything in it.
    pub fn delete_mailbox(&self, guid: Guid128) -> Result<()> {
        let g = guid.to_string();
        for table in ["message", "expunged"] {
            self.tx
                .execute(
                    &format!("DELETE FROM {table} WHERE mailbox = ?1"),
                    params![g],
                )
                .map_err(self.err())?;
        }
        self.tx
            .execute("DELETE FROM mailbox WHERE guid = ?1", params![g])
            .map_err(self.err())?;
        Ok(())
    }

    /// Moves every row of a mailbox to a new GUID (when the two sides agree on another GUID).
    pub fn rekey_mailbox(&self, old: Guid128, new: Guid128) -> Result<()> {
        let (o, n) = (old.to_string(), new.to_string());
        for table in ["message", "expunged"] {
            self.tx
                .execute(
                    &format!("UPDATE {table} SET mailbox = ?2 WHERE mailbox = ?1"),
                    params![o, n],
                )
                .map_err(self.err())?;
        }
        self.tx
            .execute(
                "UPDATE mailbox SET guid = ?2 WHERE guid = ?1",
                params![o, n],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub fn put_message(&self, mailbox: Guid128, m: &MessageRow) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO message
                 (mailbox, uid, guid, file, flags, keywords, modseq, base_flags, base_keywords,
                  pop3_uidl, pop3_order)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    mailbox.to_string(),
                    m.uid,
                    m.guid,
                    m.file,
                    m.flags.0,
                    join_keywords(&m.keywords),
                    m.modseq as i64,
                    m.base.as_ref().map(|b| b.0.0),
                    m.base.as_ref().map(|b| join_keywords(&b.1)),
                    m.pop3_uidl,
                    m.pop3_order,
                ])
            })
            .map_err(self.err())?;
        // A UID that holds a message is not expunged. Only a backup gives a UID again (its
        // destination follows the source's UIDNEXT down); a journal entry left behind would
        // expunge the restored mail on the peer, or ask the source for a mail it never had.
        self.tx
            .prepare_cached("DELETE FROM expunged WHERE mailbox = ?1 AND uid = ?2")
            .and_then(|mut s| s.execute(params![mailbox.to_string(), m.uid]))
            .map_err(self.err())?;
        Ok(())
    }

    pub fn delete_message(&self, mailbox: Guid128, uid: Uid) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM message WHERE mailbox = ?1 AND uid = ?2")
            .and_then(|mut s| s.execute(params![mailbox.to_string(), uid]))
            .map_err(self.err())?;
        Ok(())
    }

    pub fn add_expunged(&self, mailbox: Guid128, e: &ExpungedRow) -> Result<()> {
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO expunged (mailbox, uid, guid, modseq) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute(params![mailbox.to_string(), e.uid, e.guid, e.modseq as i64]))
            .map_err(self.err())?;
        Ok(())
    }

    pub fn commit(self) -> Result<()> {
        let path = self.path;
        self.tx.commit().map_err(sql_err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_journal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("i.sqlite"), false).unwrap();
        let g = Guid128::generate();
        let kw: Keywords = ["$Important".to_owned(), "Work".to_owned()].into();
        let m = MessageRow {
            uid: 3,
            guid: "abc".into(),
            file: "cur/abc:2,S".into(),
            flags: Flags::SEEN,
            keywords: kw.clone(),
            modseq: 7,
            base: Some((Flags::EMPTY, Keywords::new())),
            pop3_uidl: Some("UIDL1".into()),
            pop3_order: None,
        };
        let tx = idx.transaction().unwrap();
        tx.put_mailbox(&MailboxRow {
            guid: g,
            name: "INBOX".into(),
            uidvalidity: 5,
            uidnext: 4,
            highest_modseq: 7,
            scan_signature: String::new(),
            messages: 1,
            digest: 0,
        })
        .unwrap();
        tx.put_message(g, &m).unwrap();
        tx.add_expunged(
            g,
            &ExpungedRow {
                uid: 2,
                guid: "old".into(),
                modseq: 6,
            },
        )
        .unwrap();
        tx.commit().unwrap();
        assert_eq!(idx.messages(g).unwrap(), vec![m]);
        assert_eq!(idx.expunged_since(g, 5).unwrap().len(), 1);
        assert_eq!(idx.expunged_since(g, 6).unwrap().len(), 0);
        assert_eq!(idx.mailbox(g).unwrap().unwrap().uidnext, 4);
    }

    #[test]
    fn garbage_file_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = Index::open(&path, false).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn in_memory_copy_sees_the_file_and_never_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        let g = Guid128::generate();
        let row = MailboxRow {
            guid: g,
            name: "INBOX".into(),
            uidvalidity: 5,
            uidnext: 4,
            highest_modseq: 7,
            scan_signature: String::new(),
            messages: 1,
            digest: 0,
        };
        // Kept open so that the commit stays in the write-ahead log.
        let mut real = Index::open(&path, false).unwrap();
        let tx = real.transaction().unwrap();
        tx.put_mailbox(&row).unwrap();
        tx.commit().unwrap();
        let listing = |d: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.file_name(), std::fs::read(e.path()).unwrap())
                })
                .collect();
            v.sort();
            v
        };
        let before = listing(dir.path());
        let mut copy = Index::open_in_memory_copy(&path).unwrap();
        assert_eq!(copy.mailbox(g).unwrap(), Some(row.clone()));
        let tx = copy.transaction().unwrap();
        tx.delete_mailbox(g).unwrap();
        tx.commit().unwrap();
        assert_eq!(copy.mailbox(g).unwrap(), None);
        drop(copy);
        assert_eq!(listing(dir.path()), before);
        assert_eq!(real.mailbox(g).unwrap(), Some(row));

        let empty = Index::open_in_memory_copy(&dir.path().join("missing.sqlite")).unwrap();
        assert!(empty.all_mailboxes().unwrap().is_empty());
        assert!(!dir.path().join("missing.sqlite").exists());
    }
}
