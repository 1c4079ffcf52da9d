//! Live progress for `-v`: the brains say which mailbox they are in and how much mail it has
//! to move, and count every message as it is saved or sent. What is shown, and how, is the
//! caller's business (the CLI draws a bar or prints lines).
//!
//! Every message is counted once, by the side that sees it arrive whole: the side that saves
//! it, or, when the other side is a remote process whose counts never reach this one, the side
//! that sends it ([`ProgressHandle::counts_sends`]).

use boxsync_model::MailboxName;
use boxsync_proto::MailBody;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a sync reports as it goes.
pub trait Progress: Send + Sync {
    /// The master begins mailbox `position` (from 1) of `count`.
    fn mailbox_started(&self, name: &MailboxName, position: usize, count: usize);
    /// The messages this mailbox will copy, in both directions (known once both sides'
    /// requests are in).
    fn planned(&self, messages: u64);
    /// Bytes of mail read for copying.
    fn bytes(&self, n: u64);
    /// One message copied.
    fn message_done(&self);
    /// The master is done with the mailbox it began last.
    fn mailbox_finished(&self);
}

/// A [`Progress`] in the brain's settings.
#[derive(Clone)]
pub struct ProgressHandle {
    pub sink: Arc<dyn Progress>,
    /// Whether this brain counts what it sends: true when the other side is in another
    /// process (its saves are never seen here); false when both brains share the handle.
    pub counts_sends: bool,
}

impl std::fmt::Debug for ProgressHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressHandle")
            .field("counts_sends", &self.counts_sends)
            .finish_non_exhaustive()
    }
}

/// A body whose reading is counted: bytes as they are read, and the message once, when it
/// has been read to its end. Later readings of the same body (a retry, a second instance)
/// count nothing.
pub(crate) struct CountedBody {
    inner: Box<dyn MailBody>,
    sink: Arc<dyn Progress>,
    done: Arc<AtomicBool>,
}

impl CountedBody {
    pub(crate) fn new(inner: Box<dyn MailBody>, sink: Arc<dyn Progress>) -> CountedBody {
        CountedBody {
            inner,
            sink,
            done: Default::default(),
        }
    }

    /// What counts the message once the saves of it are done.
    pub(crate) fn finisher(&self) -> Finisher {
        Finisher {
            sink: self.sink.clone(),
            done: self.done.clone(),
            size: self.inner.size(),
        }
    }
}

/// Counts a message whose saves succeeded, if no reading counted it already.
pub(crate) struct Finisher {
    sink: Arc<dyn Progress>,
    done: Arc<AtomicBool>,
    size: Option<u64>,
}

impl Finisher {
    /// A body copied by the kernel or hard-linked is never read here: its size is all there
    /// is to count.
    pub(crate) fn finish(&self) {
        if !self.done.swap(true, Ordering::Relaxed) {
            self.sink.bytes(self.size.unwrap_or(0));
            self.sink.message_done();
        }
    }
}

struct CountedReader {
    inner: Box<dyn std::io::Read + Send>,
    sink: Arc<dyn Progress>,
    done: Arc<AtomicBool>,
}

impl MailBody for CountedBody {
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let inner = self.inner.open()?;
        Ok(Box::new(CountedReader {
            inner,
            sink: self.sink.clone(),
            done: self.done.clone(),
        }))
    }

    fn local_path(&self) -> Option<&std::path::Path> {
        self.inner.local_path()
    }

    fn received(&self) -> Option<i64> {
        self.inner.received()
    }

    fn size(&self) -> Option<u64> {
        self.inner.size()
    }

    fn link_to(&self, dest: &std::path::Path) -> std::io::Result<Option<(u64, u64)>> {
        self.inner.link_to(dest)
    }
}

impl std::io::Read for CountedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.done.load(Ordering::Relaxed) {
            if n == 0 {
                if !buf.is_empty() && !self.done.swap(true, Ordering::Relaxed) {
                    self.sink.message_done();
                }
            } else {
                self.sink.bytes(n as u64);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Tally(Mutex<(u64, u64)>);

    impl Progress for Tally {
        fn mailbox_started(&self, _: &MailboxName, _: usize, _: usize) {}
        fn planned(&self, _: u64) {}
        fn bytes(&self, n: u64) {
            self.0.lock().unwrap().0 += n;
        }
        fn message_done(&self) {
            self.0.lock().unwrap().1 += 1;
        }
        fn mailbox_finished(&self) {}
    }

    struct Bytes(Vec<u8>);

    impl MailBody for Bytes {
        fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
            Ok(Box::new(std::io::Cursor::new(self.0.clone())))
        }
        fn size(&self) -> Option<u64> {
            Some(self.0.len() as u64)
        }
    }

    #[test]
    fn a_body_read_twice_counts_once() {
        let tally = Arc::new(Tally::default());
        let body = CountedBody::new(Box::new(Bytes(vec![b'x'; 10_000])), tally.clone());
        for _ in 0..2 {
            let mut out = Vec::new();
            body.open().unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out.len(), 10_000);
        }
        body.finisher().finish();
        assert_eq!(*tally.0.lock().unwrap(), (10_000, 1));
    }

    #[test]
    fn a_body_never_read_counts_its_size_when_finished() {
        let tally = Arc::new(Tally::default());
        let body = CountedBody::new(Box::new(Bytes(vec![b'x'; 123])), tally.clone());
        body.finisher().finish();
        body.finisher().finish();
        assert_eq!(*tally.0.lock().unwrap(), (123, 1));
    }
}
