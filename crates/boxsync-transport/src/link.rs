//! A brain's link over a byte stream: the wire codec of `boxsync_proto::wire` with one thread
//! that writes and one that reads, so that both brains may send whole lists before reading
//! (as over the in-process channel) without the two sides blocking each other on full pipes.
//!
//! Memory stays bounded whatever the peer sends: lines are capped at `wire::MAX_LINE`, message
//! bodies go to spool files beyond a small size, and the reader stops reading while the brain
//! has not taken what was read.

use crate::rawlog::{Direction, RawLog, Tee};
use boxsync_brain::link::Link;
use boxsync_model::{Error, Result};
use boxsync_proto::wire::{self, Decoded, DotDecoder, DotEncoder, PeerSchemas};
use boxsync_proto::{MailBody, Record};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bodies up to this size stay in memory; larger ones go to a spool file.
const MEMORY_BODY: usize = 64 * 1024;
/// Records read ahead of the brain. With `MEMORY_BODY`, at most a few MiB.
const READ_AHEAD: usize = 64;
const IO_BUFFER: usize = 64 * 1024;

/// How a stream link behaves.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// `-T`: how long to wait for the other side before giving up (exit 75).
    pub timeout: Duration,
    /// Where bodies larger than `MEMORY_BODY` are spooled until the store saves them.
    pub spool_dir: PathBuf,
    /// `-r`: a raw log of both directions.
    pub rawlog: Option<RawLog>,
    /// A body larger than this is refused as a protocol error.
    pub max_body: u64,
}

impl LinkOptions {
    pub fn new(spool_dir: PathBuf) -> LinkOptions {
        LinkOptions {
            timeout: Duration::from_secs(600),
            spool_dir,
            rawlog: None,
            max_body: 16 << 30,
        }
    }
}

/// One end of a link over a byte stream.
pub struct StreamLink {
    out: Option<mpsc::Sender<Record>>,
    inbox: mpsc::Receiver<Result<Record>>,
    writer: Option<std::thread::JoinHandle<()>>,
    write_error: Arc<Mutex<Option<Error>>>,
    /// Messages the writer could not read to send (see [`StreamLink::send_errors`]).
    send_errors: Arc<Mutex<Vec<Error>>>,
    timeout: Duration,
    /// A record taken by [`StreamLink::peek`], handed out by the next `recv`.
    peeked: Option<Record>,
    /// Where the reader spools bodies: `LinkOptions::spool_dir` until
    /// [`StreamLink::spool_in`] moves it.
    spool_dir: Arc<Mutex<PathBuf>>,
}

impl StreamLink {
    /// Starts the reader and writer threads. `close` runs once everything sent has been
    /// written: it ends the write direction (a socket's shutdown, a pipe's close) so that the
    /// peer sees the end of the conversation.
    pub fn new<R, W>(
        read: R,
        write: W,
        close: impl FnOnce() + Send + 'static,
        options: LinkOptions,
    ) -> StreamLink
    where
        R: Read + Send + 'static,
        W: Write + Send + 'static,
    {
        let (out_tx, out_rx) = mpsc::channel::<Record>();
        let (in_tx, in_rx) = mpsc::sync_channel::<Result<Record>>(READ_AHEAD);
        let write_error = Arc::new(Mutex::new(None));
        let writer_error = write_error.clone();
        let send_errors = Arc::new(Mutex::new(Vec::new()));
        let writer_send_errors = send_errors.clone();
        let rawlog = options.rawlog.clone();
        let writer = std::thread::Builder::new()
            .name("link-writer".into())
            .spawn(move || {
                let sink = Tee::new(write, rawlog, Direction::Out);
                if let Err(e) = write_records(sink, out_rx, &writer_send_errors) {
                    tracing::debug!("link writer: {e}");
                    if let Ok(mut slot) = writer_error.lock() {
                        *slot = Some(e);
                    }
                }
                close();
            });
        let reader_options = options.clone();
        let spool_dir = Arc::new(Mutex::new(options.spool_dir.clone()));
        let reader_spool = spool_dir.clone();
        let reader = std::thread::Builder::new()
            .name("link-reader".into())
            .spawn(move || {
                let source = Tee::new(read, reader_options.rawlog.clone(), Direction::In);
                if let Err(e) = read_records(source, &in_tx, &reader_options, &reader_spool) {
                    let _ = in_tx.send(Err(e));
                }
            });
        let spawn_failed = writer.is_err() || reader.is_err();
        let link = StreamLink {
            out: Some(out_tx),
            inbox: in_rx,
            writer: writer.ok(),
            write_error,
            send_errors,
            timeout: options.timeout,
            peeked: None,
            spool_dir,
        };
        if spawn_failed {
            // Without its threads the link reports the peer gone on first use.
            tracing::error!("could not start the link's threads");
        }
        link
    }

    /// Receives the next record and keeps it for the next `recv`: the server learns from the
    /// master's handshake which store to open before the brain starts.
    pub fn peek(&mut self) -> Result<&Record> {
        let r = match self.peeked.take() {
            Some(r) => r,
            None => self.recv()?,
        };
        Ok(self.peeked.insert(r))
    }

    /// Spools bodies received from now on in `dir`: a server learns from the master's
    /// handshake that it serves a dry run, whose store must not see even a spool file.
    pub fn spool_in(&self, dir: PathBuf) {
        match self.spool_dir.lock() {
            Ok(mut d) => *d = dir,
            // The reader only reads the path; a panic there left it whole.
            Err(poisoned) => *poisoned.into_inner() = dir,
        }
    }

    /// Waits until every record sent is written and the write direction is closed.
    pub fn finish(mut self) -> Result<()> {
        self.out = None;
        if let Some(w) = self.writer.take() {
            // The writer ends once the channel is drained; a peer that stops reading makes it
            // block, which the process's own exit ends.
            let _ = w.join();
        }
        self.take_write_error().map_or(Ok(()), Err)
    }

    /// Messages that could not be read when their turn to be sent came: each was sent as "no
    /// longer there" and is this side's error (a slave reports them in its finish record).
    pub fn send_errors(&self) -> Vec<Error> {
        self.send_errors
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    fn take_write_error(&self) -> Option<Error> {
        self.write_error.lock().ok().and_then(|mut e| e.take())
    }

    fn gone(&self) -> Error {
        self.take_write_error()
            .unwrap_or_else(|| Error::temp("the connection to the other side is closed"))
    }
}

impl Drop for StreamLink {
    fn drop(&mut self) {
        // Let the writer drain and close the stream without waiting for it here.
        self.out = None;
    }
}

impl Link for StreamLink {
    fn send(&mut self, record: Record) -> Result<()> {
        let Some(out) = &self.out else {
            return Err(self.gone());
        };
        if out.send(record).is_err() {
            return Err(self.gone());
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<Record> {
        if let Some(r) = self.peeked.take() {
            return Ok(r);
        }
        match self.inbox.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::temp(format!(
                "no data from the other side for {} seconds (-T); giving up",
                self.timeout.as_secs()
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.gone()),
        }
    }
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::temp(format!("{what}: {e}"))
}

/// The writer thread: our greeting, then every record the brain sends, bodies streamed from
/// their files. It flushes only when the brain has nothing more queued.
fn write_records<W: Write>(
    sink: W,
    records: mpsc::Receiver<Record>,
    send_errors: &Mutex<Vec<Error>>,
) -> Result<()> {
    let mut w = BufWriter::with_capacity(IO_BUFFER, sink);
    let fail = |e| io_error("writing to the other side", e);
    w.write_all(&wire::preamble()).map_err(fail)?;
    let mut line = Vec::with_capacity(256);
    let mut chunk = vec![0u8; IO_BUFFER];
    let mut stuffed = Vec::with_capacity(IO_BUFFER + IO_BUFFER / 2);
    loop {
        let record = match records.try_recv() {
            Ok(r) => r,
            Err(mpsc::TryRecvError::Empty) => {
                w.flush().map_err(fail)?;
                match records.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        let mut record = record;
        // A body that cannot be opened now is sent as "no longer there": the receiver skips
        // the message, this side reports it, and the next sync tries again.
        let mut reader = None;
        if let Record::Mail(m) = &mut record
            && let Some(body) = &m.body
        {
            match body.open() {
                Ok(r) => reader = Some(r),
                Err(e) => {
                    let what = format!(
                        "reading UID {}{} to send it",
                        m.uid,
                        body.local_path()
                            .map(|p| format!(" ({})", p.display()))
                            .unwrap_or_default()
                    );
                    if let Ok(mut errors) = send_errors.lock() {
                        errors.push(Error::io(what, e));
                    }
                    m.body = None;
                }
            }
        }
        // A slave's finish record carries its result: add what only the writer saw.
        if let Record::Finish(f) = &mut record
            && let Ok(mut errors) = send_errors.lock()
            && !errors.is_empty()
        {
            let mut code = boxsync_model::ExitCode::Ok;
            let mut texts: Vec<String> = f.error.take().into_iter().collect();
            for e in errors.drain(..) {
                code = code.worst(e.exit_code());
                texts.push(e.to_string());
            }
            f.error = Some(texts.join("; "));
            if f.mail_error == 0 {
                f.mail_error = boxsync_brain::mail_error_of(code);
            }
        }
        line.clear();
        wire::encode(&record, &mut line);
        w.write_all(&line).map_err(fail)?;
        if let Some(mut r) = reader {
            let mut enc = DotEncoder::new();
            loop {
                let n = match r.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Half a body is on the wire: the stream cannot be repaired.
                        return Err(Error::temp(format!(
                            "reading a message body to send failed: {e}"
                        )));
                    }
                };
                stuffed.clear();
                enc.encode(&chunk[..n], &mut stuffed);
                w.write_all(&stuffed).map_err(fail)?;
            }
            stuffed.clear();
            enc.finish(&mut stuffed);
            w.write_all(&stuffed).map_err(fail)?;
        }
    }
    w.flush().map_err(fail)?;
    Ok(())
}

/// Reads one LF-terminated line (without the LF). `None` at a clean end of stream.
pub(crate) fn read_line<R: BufRead>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_failure(e)),
        };
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(Error::temp(
                "the connection ended in the middle of a line from the other side",
            ));
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if line.len() + i > max {
                    return Err(too_long(max));
                }
                line.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                return Ok(Some(line));
            }
            None => {
                let n = buf.len();
                if line.len() + n > max {
                    return Err(too_long(max));
                }
                line.extend_from_slice(buf);
                r.consume(n);
            }
        }
    }
}

fn too_long(max: usize) -> Error {
    Error::data(format!(
        "dsync protocol error: the other side sent a line longer than {max} bytes"
    ))
}

fn read_failure(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            Error::temp("no data from the other side in time (-T); giving up")
        }
        _ => io_error("reading from the other side", e),
    }
}

/// The reader thread: the peer's greeting, then records until the peer says it is done, the
/// stream ends, or the brain stops listening.
fn read_records<R: Read>(
    source: R,
    records: &mpsc::SyncSender<Result<Record>>,
    options: &LinkOptions,
    spool_dir: &Mutex<PathBuf>,
) -> Result<()> {
    let mut r = BufReader::with_capacity(IO_BUFFER, source);
    let mut schemas = PeerSchemas::new();
    loop {
        let line = read_line(&mut r, wire::MAX_LINE)?.ok_or_else(|| {
            Error::temp("the other side closed the connection before the dsync greeting")
        })?;
        if schemas.feed_line(&line)? {
            break;
        }
    }
    loop {
        let Some(line) = read_line(&mut r, wire::MAX_LINE)? else {
            return Err(Error::temp("the other side closed the connection"));
        };
        let (decoded, stream) = wire::decode(&schemas, &line)?;
        let body = if stream {
            let dir = match spool_dir.lock() {
                Ok(d) => d.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            Some(read_body(&mut r, options, &dir)?)
        } else {
            None
        };
        let record = match decoded {
            Decoded::Record(Record::Mail(mut m)) => {
                m.body = body.map(|mut b| {
                    b.received = m.received_date;
                    Box::new(b) as Box<dyn MailBody>
                });
                Record::Mail(m)
            }
            Decoded::Record(r) => r,
            Decoded::Done => return Ok(()),
            Decoded::Ignored => continue,
        };
        if records.send(Ok(record)).is_err() {
            // The brain is done with this link.
            return Ok(());
        }
    }
}

/// A received body: in memory when small, otherwise in a spool file removed on drop.
struct SpooledBody {
    data: Spooled,
    size: u64,
    /// The size with every bare LF counted as CRLF (IMAP's RFC822.SIZE).
    vsize: u64,
    received: i64,
}

enum Spooled {
    Memory(Arc<[u8]>),
    File(tempfile::TempPath),
}

impl MailBody for SpooledBody {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(match &self.data {
            Spooled::Memory(b) => Box::new(std::io::Cursor::new(b.clone())),
            Spooled::File(p) => Box::new(std::fs::File::open(p)?),
        })
    }

    fn local_path(&self) -> Option<&Path> {
        match &self.data {
            Spooled::Memory(_) => None,
            Spooled::File(p) => Some(p),
        }
    }

    fn received(&self) -> Option<i64> {
        (self.received > 0).then_some(self.received)
    }

    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn link_to(&self, dest: &Path) -> std::io::Result<Option<(u64, u64)>> {
        match &self.data {
            Spooled::Memory(_) => Ok(None),
            Spooled::File(p) => {
                std::fs::hard_link(p, dest)?;
                Ok(Some((self.size, self.vsize)))
            }
        }
    }
}

fn read_body<R: BufRead>(
    r: &mut R,
    options: &LinkOptions,
    spool_dir: &Path,
) -> Result<SpooledBody> {
    let mut dec = DotDecoder::new();
    let mut memory = Vec::new();
    let mut file: Option<(BufWriter<std::fs::File>, tempfile::TempPath)> = None;
    let mut spooled = 0u64;
    let (mut bare_lf, mut prev_cr, mut counted) = (0u64, false, 0usize);
    let spool_error = |e: std::io::Error| {
        Error::temp(format!(
            "spooling a received message under {}: {e}",
            spool_dir.display()
        ))
    };
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_failure(e)),
        };
        if buf.is_empty() {
            return Err(Error::temp(
                "the connection ended in the middle of a message body (unterminated stream)",
            ));
        }
        let (used, done) = dec.decode(buf, &mut memory)?;
        r.consume(used);
        for &b in &memory[counted..] {
            if b == b'\n' && !prev_cr {
                bare_lf += 1;
            }
            prev_cr = b == b'\r';
        }
        counted = memory.len();
        if file.is_none() && memory.len() > MEMORY_BODY {
            // In a Maildir's tmp/ when there is one: Dovecot clears what a killed run leaves.
            let tmp = spool_dir.join("tmp");
            let dir = if tmp.is_dir() {
                tmp.as_path()
            } else {
                spool_dir
            };
            let (f, path) = tempfile::Builder::new()
                .prefix("boxsync-spool-")
                .tempfile_in(dir)
                .map_err(spool_error)?
                .into_parts();
            file = Some((BufWriter::with_capacity(IO_BUFFER, f), path));
        }
        if let Some((f, _)) = &mut file {
            f.write_all(&memory).map_err(spool_error)?;
            spooled += memory.len() as u64;
            memory.clear();
            counted = 0;
        }
        let total = spooled + memory.len() as u64;
        if total > options.max_body {
            return Err(Error::data(format!(
                "dsync protocol error: a message body from the other side is larger than {} bytes",
                options.max_body
            )));
        }
        if done {
            let data = match file {
                Some((f, path)) => {
                    f.into_inner().map_err(|e| spool_error(e.into_error()))?;
                    Spooled::File(path)
                }
                None => Spooled::Memory(memory.into()),
            };
            return Ok(SpooledBody {
                data,
                size: total,
                vsize: total + bare_lf,
                received: 0,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxsync_proto::Mail;
    use boxsync_proto::wire::DotEncoder;

    /// A link whose peer "sent" `bytes` and then closed; what we send is discarded.
    fn link_reading(bytes: Vec<u8>, options: LinkOptions) -> StreamLink {
        StreamLink::new(std::io::Cursor::new(bytes), std::io::sink(), || {}, options)
    }

    fn mail_line(guid: &str, uid: u32) -> Vec<u8> {
        struct NoBody;
        impl MailBody for NoBody {
            fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
                Ok(Box::new(std::io::empty()))
            }
        }
        let mut line = Vec::new();
        wire::encode(
            &Record::Mail(Mail {
                guid: guid.into(),
                uid,
                pop3_uidl: None,
                pop3_order: None,
                received_date: 1_700_000_000,
                saved_date: 0,
                body: Some(Box::new(NoBody)),
            }),
            &mut line,
        );
        line
    }

    fn stuffed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = DotEncoder::new();
        enc.encode(body, &mut out);
        enc.finish(&mut out);
        out
    }

    fn options(dir: &Path) -> LinkOptions {
        let mut o = LinkOptions::new(dir.to_path_buf());
        o.timeout = Duration::from_secs(5);
        o
    }

    #[test]
    fn bodies_arrive_whole_in_memory_or_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let small = b"Subject: small\n\n.leading dot\n".to_vec();
        let big: Vec<u8> = (0..300_000u32)
            .map(|i| b"abc\n."[(i % 5) as usize])
            .collect();
        let mut bytes = wire::preamble();
        for (uid, body) in [(1, &small), (2, &big)] {
            bytes.extend(mail_line("g", uid));
            bytes.extend(stuffed(body));
        }
        let mut link = link_reading(bytes, options(dir.path()));
        for (uid, body) in [(1, &small), (2, &big)] {
            let Record::Mail(m) = link.recv().unwrap() else {
                panic!("not a mail")
            };
            assert_eq!(m.uid, uid);
            let b = m.body.expect("a body");
            assert_eq!(
                b.local_path().is_some(),
                uid == 2,
                "only big bodies are spooled"
            );
            let mut got = Vec::new();
            b.open().unwrap().read_to_end(&mut got).unwrap();
            assert!(got == *body, "body of UID {uid} differs");
            // A spooled body is handed to the store by a link, with its sizes.
            let dest = dir.path().join(format!("saved-{uid}"));
            let bare_lf = body.iter().filter(|&&c| c == b'\n').count() as u64;
            let sizes = (body.len() as u64, body.len() as u64 + bare_lf);
            match b.link_to(&dest).unwrap() {
                Some(got) => {
                    assert_eq!(got, sizes);
                    assert!(std::fs::read(&dest).unwrap() == *body);
                    std::fs::remove_file(&dest).unwrap();
                }
                None => assert_eq!(uid, 1, "only the small body stays in memory"),
            }
        }
        // Spool files go when their records do.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn an_unterminated_body_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = wire::preamble();
        bytes.extend(mail_line("g", 1));
        bytes.extend_from_slice(b"Subject: cut\n\nno end in sight\n");
        let mut link = link_reading(bytes, options(dir.path()));
        let e = link.recv().unwrap_err();
        assert!(e.to_string().contains("unterminated"), "{e}");
        assert_eq!(e.exit_code(), boxsync_model::ExitCode::TempFail);
    }

    #[test]
    fn a_body_over_the_limit_is_a_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = wire::preamble();
        bytes.extend(mail_line(
            "1700000000.M1P1.h,S=99999999999,W=99999999999",
            1,
        ));
        bytes.extend(stuffed(&vec![b'x'; 500_000]));
        let mut o = options(dir.path());
        o.max_body = 100_000;
        let mut link = link_reading(bytes, o);
        let e = link.recv().unwrap_err();
        assert!(e.to_string().contains("larger than 100000"), "{e}");
        assert_eq!(e.exit_code(), boxsync_model::ExitCode::DataErr);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(
            left.is_empty(),
            "the partial spool file is removed: {left:?}"
        );
    }

    #[test]
    fn a_silent_peer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut o = options(dir.path());
        o.timeout = Duration::from_millis(300);
        let w = a.try_clone().unwrap();
        let mut link = StreamLink::new(a, w, || {}, o);
        let started = std::time::Instant::now();
        let e = link.recv().unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(e.to_string().contains("-T"), "{e}");
    }
}
