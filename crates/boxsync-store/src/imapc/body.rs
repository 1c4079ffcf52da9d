//! Message bodies from the server, fetched on a connection of their own.
//!
//! The brain asks for every body it will send before it opens the first one, so the fetcher
//! knows the whole list: the first open starts one pipelined stream of `UID FETCH … BODY.PEEK[]`
//! for everything asked for in that mailbox, and each open takes its body off the stream in
//! turn. Bodies arrive in the order asked, so at most the few that a reader skipped are held.
//! A lost connection is opened again and the stream resumed from the first body not yet taken.

use super::ServerRef;
use boxsync_imap::{Config, Session};
use boxsync_model::{Error, Result};
use boxsync_proto::MailBody;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};

/// How many bodies one stream asks for at most; the next open starts the next stream.
const STREAM_LIMIT: usize = 500;

pub(crate) struct Fetcher {
    config: Config,
    session: Option<Session>,
    selected: Option<String>,
    /// Asked for but not yet streamed, per mailbox, in the order asked.
    registered: HashMap<String, VecDeque<u32>>,
    /// The stream in progress: its mailbox and the UIDs still to arrive.
    streaming: Option<(String, HashSet<u32>)>,
    /// Bodies that arrived before they were opened (`None`: gone from the server).
    ready: HashMap<(String, u32), Option<Vec<u8>>>,
}

impl Fetcher {
    pub fn new(config: Config) -> Fetcher {
        Fetcher {
            config,
            session: None,
            selected: None,
            registered: HashMap::new(),
            streaming: None,
            ready: HashMap::new(),
        }
    }

    fn session(&mut self) -> Result<&mut Session> {
        if self.session.is_none() {
            self.session = Some(Session::connect(&self.config)?);
            self.selected = None;
        }
        Ok(self.session.as_mut().expect("just connected"))
    }

    /// Reads what is left of the current stream, keeping the bodies for later opens.
    fn finish_stream(&mut self) -> Result<()> {
        if let Some((mailbox, _)) = self.streaming.take() {
            while let Some((uid, body)) = self.session()?.fetch_bodies_next()? {
                self.ready.insert((mailbox.clone(), uid), body);
            }
        }
        Ok(())
    }

    /// Starts a stream in `mailbox` that begins with `first`.
    fn start_stream(&mut self, mailbox: &str, first: u32) -> Result<()> {
        self.finish_stream()?;
        let queue = self.registered.entry(mailbox.to_owned()).or_default();
        let mut uids = vec![first];
        queue.retain(|&u| u != first);
        while uids.len() < STREAM_LIMIT
            && let Some(u) = queue.pop_front()
        {
            if !self.ready.contains_key(&(mailbox.to_owned(), u)) {
                uids.push(u);
            }
        }
        if self.selected.as_deref() != Some(mailbox) {
            self.session()?.select(mailbox, true, None)?;
            self.selected = Some(mailbox.to_owned());
        }
        self.session()?.fetch_bodies_begin(&uids)?;
        self.streaming = Some((mailbox.to_owned(), uids.into_iter().collect()));
        Ok(())
    }

    fn take(&mut self, mailbox: &str, uid: u32) -> Result<Option<Vec<u8>>> {
        if let Some(body) = self.ready.remove(&(mailbox.to_owned(), uid)) {
            return Ok(body);
        }
        let in_stream =
            matches!(&self.streaming, Some((m, left)) if m == mailbox && left.contains(&uid));
        if !in_stream {
            self.start_stream(mailbox, uid)?;
        }
        loop {
            let next = self.session()?.fetch_bodies_next()?;
            let Some((got, body)) = next else {
                // The stream ended without it: the server never answered for it.
                self.streaming = None;
                return Ok(None);
            };
            if let Some((_, left)) = &mut self.streaming {
                left.remove(&got);
            }
            if got == uid {
                return Ok(body);
            }
            self.ready.insert((mailbox.to_owned(), got), body);
        }
    }

    /// [`Fetcher::take`], once more on a new connection when the connection was lost.
    fn take_retrying(&mut self, mailbox: &str, uid: u32) -> Result<Option<Vec<u8>>> {
        match self.take(mailbox, uid) {
            Err(Error::Temp(msg)) => {
                tracing::warn!("{msg}; connecting again");
                self.reset();
                self.take(mailbox, uid)
            }
            r => r,
        }
    }

    /// Forgets the connection and the stream; UIDs that did not arrive are asked for again.
    fn reset(&mut self) {
        if let Some((mailbox, left)) = self.streaming.take() {
            let queue = self.registered.entry(mailbox).or_default();
            let mut left: Vec<u32> = left.into_iter().collect();
            left.sort_unstable();
            for u in left.into_iter().rev() {
                queue.push_front(u);
            }
        }
        self.session = None;
        self.selected = None;
    }
}

/// Notes that the body at `sref` will be opened, and returns it.
pub(crate) fn register(
    fetcher: &Arc<Mutex<Fetcher>>,
    mailbox: &str,
    sref: &ServerRef,
) -> Result<Box<dyn MailBody>> {
    let mut f = fetcher
        .lock()
        .map_err(|_| Error::temp("imapc body fetcher poisoned by an earlier panic"))?;
    f.registered
        .entry(mailbox.to_owned())
        .or_default()
        .push_back(sref.uid);
    Ok(Box::new(ImapBody {
        fetcher: Arc::clone(fetcher),
        mailbox: mailbox.to_owned(),
        uid: sref.uid,
        received: sref.received,
    }))
}

struct ImapBody {
    fetcher: Arc<Mutex<Fetcher>>,
    mailbox: String,
    uid: u32,
    received: i64,
}

impl MailBody for ImapBody {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        let mut f = self
            .fetcher
            .lock()
            .map_err(|_| std::io::Error::other("imapc body fetcher poisoned"))?;
        match f.take_retrying(&self.mailbox, self.uid) {
            Ok(Some(bytes)) => Ok(Box::new(std::io::Cursor::new(lf_line_ends(bytes)))),
            Ok(None) => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "message UID {} of {} is gone from the server",
                    self.uid, self.mailbox
                ),
            )),
            // A server that breaks the protocol is bad data (exit 65), anything else may work
            // on a later try (75).
            Err(e @ Error::Data(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            )),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    fn received(&self) -> Option<i64> {
        (self.received > 0).then_some(self.received)
    }

    // No size(): the server's RFC822.SIZE counts CRLF line ends, the bytes handed on do not.
}

/// CRLF line ends to LF, in place. IMAP always sends CRLF; Dovecot stores LF unless
/// `mail_save_crlf` says otherwise, so a message that went into an account as LF comes back
/// out byte for byte.
pub(crate) fn lf_line_ends(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut w = 0;
    for r in 0..bytes.len() {
        let b = bytes[r];
        if b == b'\r' && bytes.get(r + 1) == Some(&b'\n') {
            continue;
        }
        bytes[w] = b;
        w += 1;
    }
    bytes.truncate(w);
    bytes
}

/// The size of `bytes` with every line ending in CRLF, as a server's RFC822.SIZE counts it.
pub(crate) fn crlf_size(bytes: &[u8]) -> u64 {
    let mut size = bytes.len() as u64;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            size += 1;
        }
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends() {
        assert_eq!(lf_line_ends(b"a\r\nb\rc\n\r\n".to_vec()), b"a\nb\rc\n\n");
        assert_eq!(crlf_size(b"a\nb\r\n"), 6);
        assert_eq!(crlf_size(b"\n"), 2);
    }
}
