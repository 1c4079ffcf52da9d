//! Locking an mbox file the way MDAs and Dovecot expect: readers take an fcntl read lock;
//! writers take the dotlock (`FILE.lock`, created exclusively) and then an fcntl write lock,
//! Dovecot's defaults (`mbox_read_locks = fcntl`, `mbox_write_locks = dotlock fcntl`).

use boxsync_model::{Error, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long to wait for another program's lock.
const WAIT: Duration = Duration::from_secs(60);
/// A dotlock older than this whose file has not changed meanwhile is left over from a
/// crashed program (Dovecot's `mbox_dotlock_change_timeout` is two minutes).
const STALE_DOTLOCK: Duration = Duration::from_secs(120);

/// A held lock; released on drop.
pub(crate) struct MboxLock {
    file: File,
    dotlock: Option<PathBuf>,
}

impl MboxLock {
    /// The open, locked mbox file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for MboxLock {
    fn drop(&mut self) {
        // The fcntl lock goes with the descriptor; the dotlock must be removed by hand.
        if let Some(p) = &self.dotlock {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn dotlock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

fn fcntl_lock(file: &File, write: bool, path: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        // SAFETY: an all-zero flock is valid; the fields that matter are set below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = if write { libc::F_WRLCK } else { libc::F_RDLCK } as _;
        fl.l_whence = libc::SEEK_SET as _;
        // SAFETY: the descriptor is valid while `file` lives; `fl` is a valid flock.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        let busy = matches!(
            err.raw_os_error(),
            Some(libc::EAGAIN) | Some(libc::EACCES) | Some(libc::EINTR)
        );
        if !busy {
            return Err(Error::io(format!("locking {}", path.display()), err));
        }
        if start.elapsed() > WAIT {
            return Err(Error::temp(format!(
                "{} is locked by another program (waited {} s for its fcntl lock)",
                path.display(),
                WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Takes the shared read lock on an existing mbox file.
pub(crate) fn read_lock(path: &Path) -> Result<MboxLock> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    fcntl_lock(&file, false, path)?;
    Ok(MboxLock {
        file,
        dotlock: None,
    })
}

fn take_dotlock(path: &Path) -> Result<PathBuf> {
    let lock = dotlock_path(path);
    let start = Instant::now();
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => return Ok(lock),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                let file_age = std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_some_and(|a| a > STALE_DOTLOCK)
                    && file_age.is_none_or(|a| a > STALE_DOTLOCK)
                {
                    tracing::warn!("removing stale dotlock {}", lock.display());
                    let _ = std::fs::remove_file(&lock);
                    continue;
                }
                if start.elapsed() > WAIT {
                    return Err(Error::temp(format!(
                        "{} is locked by another program (waited {} s for {})",
                        path.display(),
                        WAIT.as_secs(),
                        lock.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(Error::io(
                    format!(
                        "creating the dotlock {} (the directory must be writable)",
                        lock.display()
                    ),
                    e,
                ));
            }
        }
    }
}

/// Takes the dotlock and the fcntl write lock, creating the mbox file when it is missing.
pub(crate) fn write_lock(path: &Path) -> Result<MboxLock> {
    let dotlock = take_dotlock(path)?;
    let guard = MboxLock {
        file: match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
        {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&dotlock);
                return Err(Error::io(format!("opening {}", path.display()), e));
            }
        },
        dotlock: Some(dotlock),
    };
    fcntl_lock(&guard.file, true, path)?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_waits_for_the_dotlock_and_a_stale_one_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("box");
        let held = write_lock(&p).unwrap();
        assert!(dir.path().join("box.lock").exists());
        let t = std::thread::spawn({
            let p = p.clone();
            move || {
                let start = Instant::now();
                let _l = write_lock(&p).unwrap();
                start.elapsed()
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
        assert!(t.join().unwrap() >= Duration::from_millis(250));
        assert!(!dir.path().join("box.lock").exists());

        // A dotlock left by a crash three minutes ago, on a file untouched as long.
        std::fs::write(dir.path().join("box.lock"), b"").unwrap();
        let old = SystemTime::now() - Duration::from_secs(180);
        for f in ["box.lock", "box"] {
            File::options()
                .write(true)
                .open(dir.path().join(f))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let start = Instant::now();
        drop(write_lock(&p).unwrap());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
