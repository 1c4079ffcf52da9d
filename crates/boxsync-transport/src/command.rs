//! The far end as a child process (`ssh … boxsync dsync-server`, or any command) speaking the
//! protocol on its stdin and stdout. Its stdin and stdout are one end of a socket pair, so
//! our side can shut down its write direction while still reading. Its stderr is relayed into
//! our log line by line.

use crate::link::{LinkOptions, StreamLink};
use boxsync_model::{Error, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running far end.
pub struct RemoteProcess {
    child: std::process::Child,
    relay: Option<std::thread::JoinHandle<()>>,
    program: String,
}

/// Starts `argv` with the protocol on its stdin/stdout. With `prefix_user`
/// (`remoteprefix:`), `<user>\n` is written first, for a wrapper that picks the user.
pub fn spawn(
    argv: &[String],
    prefix_user: Option<&str>,
    log_prefix: String,
    options: LinkOptions,
) -> Result<(StreamLink, RemoteProcess)> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::Config("the remote command is empty".into()));
    };
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| Error::temp(format!("creating a socket pair: {e}")))?;
    let theirs_out = theirs
        .try_clone()
        .map_err(|e| Error::temp(format!("duplicating a socket: {e}")))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let msg = format!("cannot run the remote command {program:?}: {e}");
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Config(msg)
            } else {
                Error::temp(msg)
            }
        })?;
    let relay = child.stderr.take().map(|stderr| {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                eprintln!("{log_prefix}: {}", String::from_utf8_lossy(&line));
            }
        })
    });
    let mut write = ours
        .try_clone()
        .map_err(|e| Error::temp(format!("duplicating a socket: {e}")))?;
    if let Some(user) = prefix_user {
        write
            .write_all(format!("{user}\n").as_bytes())
            .map_err(|e| Error::temp(format!("writing to the remote command: {e}")))?;
    }
    let closer = ours
        .try_clone()
        .map_err(|e| Error::temp(format!("duplicating a socket: {e}")))?;
    let link = StreamLink::new(
        ours,
        write,
        move || {
            let _ = closer.shutdown(std::net::Shutdown::Write);
        },
        options,
    );
    Ok((
        link,
        RemoteProcess {
            child,
            relay,
            program: program.clone(),
        },
    ))
}

impl RemoteProcess {
    /// Waits for the far end to exit, killing it after `timeout`. Returns its exit code,
    /// `None` when a signal ended it.
    pub fn wait(mut self, timeout: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(Error::temp(format!(
                        "the remote command {:?} did not exit; killed it",
                        self.program
                    )));
                }
                Err(e) => return Err(Error::temp(format!("waiting for the remote command: {e}"))),
            }
        };
        if let Some(relay) = self.relay.take() {
            let _ = relay.join();
        }
        Ok(status.code())
    }

    /// Ends the far end at once (after a failure on our side). Its stderr relay is left to
    /// end on its own: a grandchild (`sh -c …`) may hold the pipe open.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
