//! Dovecot's Maildir metadata files — file names, `dovecot-uidlist`, `dovecot-keywords`,
//! `subscriptions`, `dovecot.mailbox.log` — and the dotlock and atomic replace they share.

pub mod filename;
pub mod keywords;
pub mod mailbox_log;
pub mod subscriptions;
pub mod uidlist;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use boxsync_model::{Error, Result};

/// A dotlock untouched for this long belongs to a process that died: Dovecot uses the same
/// limit for `dovecot-uidlist.lock`, so both programs give up on a dead holder alike.
pub(crate) const DOTLOCK_STALE: Duration = Duration::from_secs(120);

/// A dotlock still empty this long after its creation lost its writer between creating and
/// filling it (a kill in that instant): every writer, boxsync or Dovecot, fills its lock at
/// once. Waiting [`DOTLOCK_STALE`] for it made the next sync time out.
const EMPTY_DOTLOCK_STALE: Duration = Duration::from_secs(5);

/// Short enough that a waiter notices a released lock quickly, long enough not to spin.
const DOTLOCK_RETRY: Duration = Duration::from_millis(10);

/// How long a replace of `dovecot-keywords` or `subscriptions` waits for another writer. Their
/// holders keep the lock only for one small write, so waiting this long means a stuck holder.
const REPLACE_TIMEOUT: Duration = Duration::from_secs(30);

/// A Dovecot-style dotlock: a file created with `O_CREAT|O_EXCL` next to the file it guards.
/// Dropping it removes the file.
pub(crate) struct DotLock {
    path: PathBuf,
    file: File,
    /// False once the lock file has been renamed into place or removed.
    armed: bool,
}

impl DotLock {
    /// Creates `path` exclusively, waiting up to `timeout` for its holder and breaking it once
    /// it is stale. Two waiters can both judge one lock stale and the slower one then removes
    /// the faster one's fresh lock; every mtime-based dotlock (Dovecot's too) shares that
    /// window, which needs a holder dead for two minutes to open.
    pub(crate) fn acquire(path: &Path, mode: u32, timeout: Duration) -> Result<DotLock> {
        let start = Instant::now();
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)
            {
                Ok(file) => {
                    return Ok(DotLock {
                        path: path.to_path_buf(),
                        file,
                        armed: true,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("creating lock file {}", path.display()),
                        e,
                    ));
                }
            }
            if lock_is_stale(path)? {
                match fs::remove_file(path) {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(Error::io(
                            format!("removing stale lock file {}", path.display()),
                            e,
                        ));
                    }
                }
            }
            if start.elapsed() >= timeout {
                return Err(Error::Temp(format!(
                    "{}: still locked by another process after {} ms",
                    path.display(),
                    timeout.as_millis()
                )));
            }
            std::thread::sleep(DOTLOCK_RETRY);
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes Dovecot's `pid:host` into a lock that only guards (not one whose content becomes
    /// the new file), so that a killed holder's lock is broken at once instead of after
    /// [`DOTLOCK_STALE`].
    pub(crate) fn note_holder(&mut self) {
        let _ = write!(self.file, "{}:{}", std::process::id(), hostname());
    }

    /// Refreshes the lock's mtime so that others keep seeing a live holder.
    pub(crate) fn touch(&self) -> Result<()> {
        self.file
            .set_modified(SystemTime::now())
            .map_err(|e| Error::io(format!("touching lock file {}", self.path.display()), e))
    }

    /// Removes the lock file, reporting failure (dropping the lock cannot).
    pub(crate) fn release(mut self) -> Result<()> {
        self.armed = false;
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                format!("removing lock file {}", self.path.display()),
                e,
            )),
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if self.armed {
            // Nothing can be reported from drop; a lock file left behind goes stale and is
            // broken by the next writer after DOTLOCK_STALE.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// This machine's name, as Dovecot writes it into lock files and file names.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether a lock file names a process of this machine that no longer runs (a killed sync).
fn holder_is_dead(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string(path) else {
        return false;
    };
    let Some((pid, host)) = text.trim().split_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    host == hostname() && pid > 0 && process_is_gone(pid)
}

/// Whether no process with this id runs on this machine.
pub(crate) fn process_is_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Whether the lock file at `path` is old enough to break. A file that vanished in between
/// counts as stale, so that the caller retries at once.
fn lock_is_stale(path: &Path) -> Result<bool> {
    if holder_is_dead(path) {
        return Ok(true);
    }
    let (modified, empty) = match fs::metadata(path).and_then(|m| Ok((m.modified()?, m.len() == 0)))
    {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => {
            return Err(Error::io(
                format!("checking lock file {}", path.display()),
                e,
            ));
        }
    };
    // A writer fills its lock right after creating it (with its holder, or with the new
    // content, as Dovecot does): one still empty after a while lost its writer in between.
    let stale_after = if empty {
        EMPTY_DOTLOCK_STALE
    } else {
        DOTLOCK_STALE
    };
    // An mtime in the future (clock skew between hosts sharing the store) is not stale.
    Ok(SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|age| age >= stale_after))
}

/// The mode for files created in `dir`: the directory's permissions without the execute
/// bits, as Dovecot derives them, so that a group-shared mailbox stays group-readable.
pub(crate) fn file_mode(dir: &Path) -> u32 {
    fs::metadata(dir)
        .map(|m| m.permissions().mode() & 0o666)
        .unwrap_or(0o600)
        | 0o600
}

/// Makes a rename or create inside `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsyncing directory {}", dir.display()), e))
}

/// Writes `bytes` to `dir/tmp_name` and renames it over `dir/name`. The caller must hold the
/// lock that guards `name`, since `tmp_name` is shared by all writers.
pub(crate) fn replace_via_tmp(
    dir: &Path,
    name: &str,
    tmp_name: &str,
    bytes: &[u8],
    fsync: bool,
) -> Result<()> {
    let tmp = dir.join(tmp_name);
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(file_mode(dir))
            .open(&tmp)?;
        file.write_all(bytes)?;
        if fsync {
            file.sync_all()?;
        }
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", tmp.display()), e));
    }
    let target = dir.join(name);
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(
            format!("renaming {} to {}", tmp.display(), target.display()),
            e,
        ));
    }
    if fsync {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Replaces `dir/name` under Dovecot's dotlock `name.lock`, so that Dovecot writers of the
/// same file wait for us and neither loses the other's update. Unlike Dovecot, which writes
/// the new content into the lock file itself, the lock holds `pid:host` and the content goes
/// through `name.boxsync-tmp`: a writer killed meanwhile leaves a lock that the next writer
/// sees is dead at once, instead of one that blocks everybody until it goes stale.
pub(crate) fn replace_via_dotlock(dir: &Path, name: &str, bytes: &[u8], fsync: bool) -> Result<()> {
    let lock_path = dir.join(format!("{name}.lock"));
    let mut lock = DotLock::acquire(&lock_path, file_mode(dir), REPLACE_TIMEOUT)?;
    lock.note_holder();
    replace_via_tmp(dir, name, &format!("{name}.boxsync-tmp"), bytes, fsync)?;
    lock.release()
}

/// Reads `path`, or `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// Splits file content into lines for the line-based parsers: LF-terminated, the last line's
/// LF optional, numbered from 1 for error messages.
pub(crate) fn numbered_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let empty = bytes.is_empty();
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line))
        .filter(move |_| !empty)
}

/// A line as UTF-8, or an `Error::Data` naming the file and line.
pub(crate) fn line_str<'a>(line: &'a [u8], path: &Path, n: usize) -> Result<&'a str> {
    std::str::from_utf8(line)
        .map_err(|_| Error::Data(format!("{} line {n}: not valid UTF-8", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_lines_handles_missing_final_lf_and_empty_input() {
        let lines: Vec<_> = numbered_lines(b"a\nb").collect();
        assert_eq!(lines, vec![(1, &b"a"[..]), (2, &b"b"[..])]);
        let lines: Vec<_> = numbered_lines(b"a\n\nb\n").collect();
        assert_eq!(lines, vec![(1, &b"a"[..]), (2, &b""[..]), (3, &b"b"[..])]);
        assert_eq!(numbered_lines(b"").count(), 0);
        // A lone LF is one empty line, which parsers may reject.
        assert_eq!(
            numbered_lines(b"\n").collect::<Vec<_>>(),
            vec![(1, &b""[..])]
        );
    }

    #[test]
    fn dotlock_excludes_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let lock = DotLock::acquire(&path, 0o600, Duration::ZERO).unwrap();
        assert!(path.exists());
        let err = DotLock::acquire(&path, 0o600, Duration::from_millis(30))
            .err()
            .unwrap();
        assert!(
            matches!(err, Error::Temp(ref m) if m.contains("x.lock")),
            "{err}"
        );
        drop(lock);
        assert!(!path.exists());
        DotLock::acquire(&path, 0o600, Duration::ZERO)
            .unwrap()
            .release()
            .unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn stale_dotlock_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let old = File::create(&path).unwrap();
        old.set_modified(SystemTime::now() - DOTLOCK_STALE - Duration::from_secs(1))
            .unwrap();
        let lock = DotLock::acquire(&path, 0o600, Duration::ZERO).unwrap();
        lock.touch().unwrap();
        assert!(!lock_is_stale(lock.path()).unwrap());
    }

    #[test]
    fn an_empty_dotlock_is_broken_after_seconds_a_filled_one_after_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let (empty, filled) = (dir.path().join("e.lock"), dir.path().join("f.lock"));
        let ago = SystemTime::now() - EMPTY_DOTLOCK_STALE - Duration::from_secs(1);
        File::create(&empty).unwrap().set_modified(ago).unwrap();
        let mut f = File::create(&filled).unwrap();
        // Dovecot's way: the new content goes into the lock itself.
        f.write_all(b"3 V1 N1\n").unwrap();
        f.set_modified(ago).unwrap();
        assert!(lock_is_stale(&empty).unwrap());
        assert!(!lock_is_stale(&filled).unwrap());
        File::create(&empty).unwrap();
        assert!(
            !lock_is_stale(&empty).unwrap(),
            "a writer may be about to fill it"
        );
    }

    #[test]
    fn replace_via_dotlock_leaves_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        replace_via_dotlock(dir.path(), "f", b"one", true).unwrap();
        replace_via_dotlock(dir.path(), "f", b"two", false).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"two");
        assert!(!dir.path().join("f.lock").exists());
    }
}
