//! The session core: the receive path (imap-next's client behind a literal guard), the tokio
//! driver that moves the bytes, command execution, and the mapping of server answers to
//! errors and retries.

use crate::conn::{Deflate, Stream, Throttle};
use crate::ext::{self, Ext};
use boxsync_model::{Error, Result};
use imap_codec::decode::Decoder;
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LineEnding};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{IString, Literal, NString, Tag, Vec1};
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::{
    Code, Data, Greeting, Response, Status, StatusBody, StatusKind, Tagged,
};
use imap_codec::{CommandCodec, ResponseCodec};
use imap_next::client::{Client, Event, Options};
use imap_next::{Interrupt, Io, State};
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

/// Room for the response line around the largest literal we accept.
const RESPONSE_HEADROOM: u64 = 64 * 1024;
/// How much is compressed at a time before it is written.
const DEFLATE_PIECE: usize = 256 * 1024;
/// Retries of an idempotent command the server refused as busy.
pub(crate) const RETRIES: u32 = 3;

/// One thing the server said, as the commands need it.
#[derive(Debug)]
pub(crate) enum Incoming {
    Greeting(Greeting<'static>),
    /// Untagged data; `Ext` holds FETCH items imap-codec does not know.
    Data(Data<'static>, Ext),
    /// Untagged OK/NO/BAD, e.g. `* OK [UIDVALIDITY 3]`.
    Untagged(StatusBody<'static>),
    Tagged(Tagged<'static>),
    /// A `+` in an AUTHENTICATE exchange.
    AuthContinue,
    /// A `+` nobody asked for.
    Continue,
    Bye(String),
}

/// What the receive path needs from the driver next.
pub(crate) enum Step {
    In(Incoming),
    Out(Vec<u8>),
    NeedInput,
}

/// The sans-I/O half of a session: imap-next's client behind our own framing.
///
/// Every byte from the server goes through an imap-codec fragmentizer that only finds
/// response boundaries (it keeps no bytes); the bytes of the response under way are collected
/// here, once. A complete response that decodes as untagged data (a FETCH with a message body,
/// above all) is decoded here, straight from that buffer, and its largest literal is moved
/// out of the buffer instead of copied, so a message body is in memory once. Everything else
/// (greeting, statuses, continuation requests) goes to imap-next, one whole response at a
/// time, so its state machine sees exactly what it would have seen. Untagged data means
/// nothing to imap-next's client state, which is why it can bypass it.
///
/// The framing also refuses an oversized literal as soon as its `{n}` line is complete, so a
/// hostile server cannot make us read (or wait for) gigabytes.
pub(crate) struct Receiver {
    pub(crate) client: Client,
    frame: Fragmentizer,
    /// The bytes of the response under way.
    msg: Vec<u8>,
    /// Whether a line of the response under way ended in a bare LF.
    msg_lf: bool,
    /// Complete responses not handed on yet, with their bare-LF flag.
    complete: VecDeque<(Vec<u8>, bool)>,
    /// Whether the greeting went by (until then everything goes to imap-next).
    greeted: bool,
    max_literal: u64,
    host: String,
}

impl Receiver {
    pub(crate) fn new(host: &str, max_literal: u64, expect_greeting: bool) -> Receiver {
        let mut options = Options::default();
        options.max_response_size =
            u32::try_from(max_literal.saturating_add(RESPONSE_HEADROOM)).unwrap_or(u32::MAX);
        options.discard_greeting = !expect_greeting;
        Receiver {
            client: Client::new(options),
            // Size 0: the framing keeps no message bytes, only fragment boundaries.
            frame: Fragmentizer::new(0),
            msg: Vec::new(),
            msg_lf: false,
            complete: VecDeque::new(),
            greeted: !expect_greeting,
            max_literal,
            host: host.to_owned(),
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.frame.enqueue_bytes(bytes);
        let mut at = 0;
        loop {
            // No fragment completed: the fragmentizer took all the rest into this response.
            let Some(fragment) = self.frame.progress() else {
                self.msg.extend_from_slice(&bytes[at..]);
                return self.check_size();
            };
            let end = match fragment {
                FragmentInfo::Line { end, .. } | FragmentInfo::Literal { end, .. } => end,
            };
            // Fragment offsets count from the start of the response, as `msg` does.
            let take = end.saturating_sub(self.msg.len()).min(bytes.len() - at);
            self.msg.extend_from_slice(&bytes[at..at + take]);
            at += take;
            self.check_size()?;
            if let FragmentInfo::Line {
                announcement,
                ending,
                ..
            } = fragment
            {
                self.msg_lf |= ending == LineEnding::Lf;
                match announcement {
                    Some(announcement) => {
                        let length = u64::from(announcement.length);
                        if length > self.max_literal {
                            return Err(Error::data(format!(
                                "imapc({}): server announced a {length}-byte literal, more \
                                 than the {}-byte limit",
                                self.host, self.max_literal
                            )));
                        }
                        // Room for the whole literal and a closing line now, so a big body
                        // is not grown (and copied) step by step. Only a hint: if the room
                        // cannot be had, the buffer grows as the bytes come.
                        let _ = self
                            .msg
                            .try_reserve_exact((announcement.length as usize).saturating_add(64));
                    }
                    None => {
                        let msg = std::mem::take(&mut self.msg);
                        self.complete.push_back((msg, self.msg_lf));
                        self.msg_lf = false;
                    }
                }
            }
        }
    }

    /// imap-next refuses a response this long; refuse it before reading the rest of it.
    fn check_size(&self) -> Result<()> {
        if self.msg.len() as u64 > self.max_literal.saturating_add(RESPONSE_HEADROOM) {
            return Err(Error::data(format!(
                "imapc({}): response too long from server: {}",
                self.host,
                excerpt(&self.msg)
            )));
        }
        Ok(())
    }

    pub(crate) fn step(&mut self) -> Result<Step> {
        loop {
            match self.client.next() {
                Ok(event) => {
                    if let Some(incoming) = from_event(event) {
                        if matches!(incoming, Incoming::Greeting(_)) {
                            self.greeted = true;
                        }
                        return Ok(Step::In(incoming));
                    }
                }
                Err(Interrupt::Io(Io::Output(bytes))) => return Ok(Step::Out(bytes)),
                // imap-next is done with everything it was given: the next response.
                Err(Interrupt::Io(Io::NeedMoreInput)) => {
                    let Some((msg, lf)) = self.complete.pop_front() else {
                        return Ok(Step::NeedInput);
                    };
                    let msg = if self.greeted && !lf {
                        match take_data(msg) {
                            Ok(incoming) => return Ok(Step::In(incoming)),
                            Err(msg) => msg,
                        }
                    } else {
                        msg
                    };
                    self.client.enqueue_input(&msg);
                }
                Err(Interrupt::Error(e)) => return self.undecodable(e).map(Step::In),
            }
        }
    }

    /// A response imap-codec could not decode: maybe a FETCH with extension items.
    fn undecodable(&self, e: imap_next::client::Error) -> Result<Incoming> {
        use imap_next::client::Error as E;
        let (what, bytes) = match &e {
            E::MalformedMessage { discarded_bytes } => {
                let bytes = discarded_bytes.declassify();
                if let Some((data, ext)) = ext::decode_fetch(bytes) {
                    return Ok(Incoming::Data(data, ext));
                }
                if let Some(status) = ext::decode_status_8bit(bytes) {
                    return Ok(from_status(status));
                }
                ("unparseable response", discarded_bytes.declassify())
            }
            E::ExpectedCrlfGotLf { discarded_bytes } => (
                "response ends lines with LF, not CRLF",
                discarded_bytes.declassify(),
            ),
            E::ResponseTooLong { discarded_bytes } => {
                ("response too long", discarded_bytes.declassify())
            }
        };
        Err(Error::data(format!(
            "imapc({}): {what} from server: {}",
            self.host,
            excerpt(bytes)
        )))
    }
}

fn from_event(event: Event) -> Option<Incoming> {
    Some(match event {
        Event::GreetingReceived { greeting } => Incoming::Greeting(greeting),
        Event::DataReceived { data } => Incoming::Data(data, Ext::default()),
        Event::StatusReceived { status }
        | Event::CommandRejected { status, .. }
        | Event::AuthenticateStatusReceived { status, .. } => from_status(status),
        Event::AuthenticateContinuationRequestReceived { .. } => Incoming::AuthContinue,
        Event::ContinuationRequestReceived { .. } => Incoming::Continue,
        Event::CommandSent { .. }
        | Event::AuthenticateStarted { .. }
        | Event::IdleCommandSent { .. }
        | Event::IdleAccepted { .. }
        | Event::IdleRejected { .. }
        | Event::IdleDoneSent { .. } => return None,
    })
}

fn from_status(status: Status<'static>) -> Incoming {
    match status {
        Status::Untagged(body) => Incoming::Untagged(body),
        Status::Tagged(tagged) => Incoming::Tagged(tagged),
        Status::Bye(bye) => Incoming::Bye(bye.text.inner().to_owned()),
    }
}

/// Decodes `msg` if it is untagged data. The largest literal of a FETCH (the message body)
/// is moved out of `msg` rather than copied: the buffer is cut down to it in place. Anything
/// else comes back unchanged for imap-next.
fn take_data(mut msg: Vec<u8>) -> std::result::Result<Incoming, Vec<u8>> {
    let (data, ext, body) = match ResponseCodec::default().decode(&msg) {
        Ok((&[], Response::Data(data))) => match data {
            Data::Fetch { seq, items } => {
                let (items, body) = lift_literal(items.into_inner(), &msg);
                (
                    Data::Fetch {
                        seq,
                        items: Vec1::unvalidated(items),
                    },
                    Ext::default(),
                    body,
                )
            }
            other => (other.into_static(), Ext::default(), None),
        },
        Ok(_) => return Err(msg),
        // Maybe a FETCH with items imap-codec does not know (X-GUID and friends).
        Err(_) => match ext::decode_fetch(&msg) {
            Some((data, ext)) => (data, ext, None),
            None => return Err(msg),
        },
    };
    let Some((index, range)) = body else {
        return Ok(Incoming::Data(data, ext));
    };
    let Data::Fetch { seq, items } = data else {
        unreachable!("only a FETCH has a literal lifted out");
    };
    msg.truncate(range.end);
    msg.drain(..range.start);
    let mut items = items.into_inner();
    if let Some(MessageDataItem::BodyExt { data, .. }) = items.get_mut(index) {
        // The bytes imap-codec just accepted as this literal.
        *data = NString(Some(IString::Literal(Literal::unvalidated(msg))));
    }
    Ok(Incoming::Data(
        Data::Fetch {
            seq,
            items: Vec1::unvalidated(items),
        },
        ext,
    ))
}

/// The items made `'static`, except the largest literal body section borrowed from `msg`,
/// which is left empty: its index and where it lies in `msg` come back.
fn lift_literal(
    items: Vec<MessageDataItem<'_>>,
    msg: &[u8],
) -> (
    Vec<MessageDataItem<'static>>,
    Option<(usize, std::ops::Range<usize>)>,
) {
    let base = msg.as_ptr() as usize;
    let mut best: Option<(usize, std::ops::Range<usize>)> = None;
    for (i, item) in items.iter().enumerate() {
        if let MessageDataItem::BodyExt {
            data: NString(Some(IString::Literal(literal))),
            ..
        } = item
        {
            let bytes = literal.data();
            // Where the literal lies in `msg`, if it lies there (imap-codec borrows it).
            let range = (bytes.as_ptr() as usize)
                .checked_sub(base)
                .and_then(|start| Some(start..start.checked_add(bytes.len())?))
                .filter(|r| r.end <= msg.len());
            if let Some(range) = range
                && best.as_ref().is_none_or(|(_, b)| b.len() < range.len())
            {
                best = Some((i, range));
            }
        }
    }
    let items = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            MessageDataItem::BodyExt {
                section,
                origin,
                data: _,
            } if best.as_ref().is_some_and(|(b, _)| *b == i) => MessageDataItem::BodyExt {
                section: section.map(IntoStatic::into_static),
                origin,
                data: NString(None),
            },
            other => other.into_static(),
        })
        .collect();
    (items, best)
}

/// The start of some server bytes, printable, for an error message.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(120)];
    let mut s: String = head.escape_ascii().to_string();
    if bytes.len() > head.len() {
        s.push_str("...");
    }
    s
}

/// A command and its mailbox, for messages: "SELECT INBOX".
pub(crate) struct What<'a> {
    pub(crate) cmd: &'static str,
    pub(crate) mailbox: Option<&'a str>,
}

impl<'a> What<'a> {
    pub(crate) fn new(cmd: &'static str, mailbox: Option<&'a str>) -> What<'a> {
        What { cmd, mailbox }
    }
}

impl fmt::Display for What<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mailbox {
            Some(m) => write!(f, "{} {m}", self.cmd),
            None => f.write_str(self.cmd),
        }
    }
}

/// A connection to one IMAP server, logged in. Every method blocks.
pub struct Session {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) stream: Stream,
    pub(crate) rx: Receiver,
    pub(crate) host: String,
    pub(crate) timeout: Duration,
    pub(crate) throttle: Option<Throttle>,
    buf: Vec<u8>,
    /// Upper-cased capability names.
    pub(crate) caps: BTreeSet<String>,
    pub(crate) dovecot: bool,
    pub(crate) qresync: bool,
    pub(crate) condstore: bool,
    pub(crate) namespace: Option<(String, Option<char>)>,
    pub(crate) window: usize,
    pub(crate) max_literal: u64,
    next_tag: u64,
    /// The command under way, for "connection lost during ...".
    pub(crate) doing: String,
    /// Why the connection cannot be used any more.
    broken: Option<String>,
    pub(crate) bodies: Option<crate::fetch::BodyFetch>,
    /// The selected mailbox, for messages.
    pub(crate) selected: Option<String>,
    /// First wait before retrying a busy server; doubles each time.
    pub(crate) backoff: Duration,
    /// Set when the last refusal was [THROTTLED] or [UNAVAILABLE].
    throttled: bool,
    /// Present once COMPRESS=DEFLATE is active.
    pub(crate) deflate: Option<Deflate>,
}

impl Session {
    pub(crate) fn new(rt: tokio::runtime::Runtime, stream: Stream, cfg: &crate::Config) -> Session {
        let max_literal = cfg.max_message_size;
        Session {
            rt,
            stream,
            rx: Receiver::new(&cfg.host, max_literal, true),
            host: cfg.host.clone(),
            timeout: cfg.timeout,
            throttle: cfg.max_bytes_per_second.map(Throttle::new),
            buf: vec![0; 64 * 1024],
            caps: BTreeSet::new(),
            dovecot: false,
            qresync: false,
            condstore: false,
            namespace: None,
            window: if cfg.pipeline_window == 0 {
                16
            } else {
                cfg.pipeline_window
            },
            max_literal,
            next_tag: 0,
            doing: "connect".to_owned(),
            broken: None,
            bodies: None,
            selected: None,
            backoff: Duration::from_secs(1),
            throttled: false,
            deflate: None,
        }
    }

    /// Fails if an earlier error left the conversation in an unknown state.
    pub(crate) fn usable(&self) -> Result<()> {
        match &self.broken {
            Some(why) => Err(Error::temp(format!(
                "imapc({}): connection unusable after an earlier error: {why}",
                self.host
            ))),
            None => Ok(()),
        }
    }

    /// Marks the session unusable and passes the error on.
    pub(crate) fn poison(&mut self, e: Error) -> Error {
        if self.broken.is_none() {
            self.broken = Some(e.to_string());
        }
        e
    }

    fn lost(&mut self, detail: &str) -> Error {
        let e = Error::temp(format!(
            "imapc({}): connection lost during {}: {detail}",
            self.host, self.doing
        ));
        self.poison(e)
    }

    fn read_more(&mut self) -> Result<()> {
        let chunk = self
            .throttle
            .as_ref()
            .map_or(self.buf.len(), Throttle::chunk)
            .min(self.buf.len());
        let timeout = self.timeout;
        let Session {
            rt, stream, buf, ..
        } = self;
        let read = rt.block_on(async {
            tokio::time::timeout(timeout, stream.read(&mut buf[..chunk])).await
        });
        let n = match read {
            Err(_) => {
                let e = Error::temp(format!(
                    "imapc({}): no answer for {} s during {}",
                    self.host,
                    timeout.as_secs(),
                    self.doing
                ));
                return Err(self.poison(e));
            }
            Ok(Err(e)) => return Err(self.lost(&e.to_string())),
            Ok(Ok(0)) => return Err(self.lost("closed by server")),
            Ok(Ok(n)) => n,
        };
        let pushed = match self.deflate.as_mut() {
            None => self.rx.push(&self.buf[..n]),
            Some(d) => match d.inflate(&self.buf[..n]) {
                Ok(plain) => self.rx.push(&plain),
                Err(e) => Err(Error::data(format!(
                    "imapc({}): bad compressed data from server: {e}",
                    self.host
                ))),
            },
        };
        if let Err(e) = pushed {
            return Err(self.poison(e));
        }
        self.pace(n);
        Ok(())
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.deflate.is_none() {
            return self.write_wire(bytes);
        }
        // A piece at a time, so a big message is not held compressed as a whole as well;
        // the last piece flushes, so the server sees all of `bytes`.
        let mut pieces = bytes.chunks(DEFLATE_PIECE).peekable();
        while let Some(piece) = pieces.next() {
            let last = pieces.peek().is_none();
            let deflated = match self.deflate.as_mut() {
                Some(d) => d
                    .deflate(piece, last)
                    .map_err(|e| Error::io("compressing", e))?,
                None => piece.to_vec(),
            };
            self.write_wire(&deflated)?;
        }
        Ok(())
    }

    /// Writes bytes as they go on the wire (compressed already, if at all).
    fn write_wire(&mut self, bytes: &[u8]) -> Result<()> {
        let chunk = self
            .throttle
            .as_ref()
            .map_or(bytes.len().max(1), Throttle::chunk);
        for part in bytes.chunks(chunk) {
            let timeout = self.timeout;
            let Session { rt, stream, .. } = self;
            let written =
                rt.block_on(async { tokio::time::timeout(timeout, stream.write_all(part)).await });
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.lost(&e.to_string())),
                Err(_) => return Err(self.lost("write timed out")),
            }
            self.pace(part.len());
        }
        Ok(())
    }

    fn pace(&mut self, n: usize) {
        if let Some(wait) = self.throttle.as_mut().and_then(|t| t.account(n)) {
            std::thread::sleep(wait);
        }
    }

    /// The next thing the server says, writing queued commands on the way.
    pub(crate) fn next_in(&mut self) -> Result<Incoming> {
        loop {
            let step = match self.rx.step() {
                Ok(step) => step,
                Err(e) => return Err(self.poison(e)),
            };
            match step {
                Step::In(Incoming::Bye(text)) => {
                    let e = Error::temp(format!(
                        "imapc({}): server closed the connection during {}: {text}",
                        self.host, self.doing
                    ));
                    return Err(self.poison(e));
                }
                Step::In(incoming) => return Ok(incoming),
                Step::Out(bytes) => self.write(&bytes)?,
                Step::NeedInput => self.read_more()?,
            }
        }
    }

    pub(crate) fn new_tag(&mut self) -> Tag<'static> {
        self.next_tag += 1;
        // Invariant: "b" followed by digits is a valid tag.
        Tag::unvalidated(format!("b{}", self.next_tag))
    }

    /// Queues a command; it goes out during the next `next_in`.
    pub(crate) fn send(&mut self, body: CommandBody<'static>) -> String {
        let tag = self.new_tag();
        let name = tag.inner().to_owned();
        self.rx.client.enqueue_command(Command { tag, body });
        name
    }

    /// Sends a command imap-types cannot express completely: imap-codec encodes `body`, and
    /// `extend` adds the extension's text to the encoded line (before its CRLF). Only for
    /// commands without literals, sent while imap-next has nothing queued.
    pub(crate) fn send_extended(
        &mut self,
        body: CommandBody<'static>,
        extend: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<String> {
        let tag = self.new_tag();
        let name = tag.inner().to_owned();
        let mut line = Vec::new();
        for fragment in CommandCodec::default().encode(&Command { tag, body }) {
            match fragment {
                Fragment::Line { data } => line.extend_from_slice(&data),
                Fragment::Literal { .. } => {
                    return Err(Error::Usage(format!(
                        "imapc({}): {} needs a literal; not supported here",
                        self.host, self.doing
                    )));
                }
            }
        }
        if !line.ends_with(b"\r\n") {
            return Err(Error::Usage("imapc: encoded command without CRLF".into()));
        }
        line.truncate(line.len() - 2);
        extend(&mut line)?;
        line.extend_from_slice(b"\r\n");
        self.write(&line)?;
        Ok(name)
    }

    /// Reads until the tagged answer to `tag`, handing everything else to `on`.
    pub(crate) fn wait(
        &mut self,
        tag: &str,
        on: &mut dyn FnMut(Incoming) -> Result<()>,
    ) -> Result<StatusBody<'static>> {
        loop {
            match self.next_in()? {
                Incoming::Tagged(tagged) if tagged.tag.inner() == tag => return Ok(tagged.body),
                Incoming::Tagged(tagged) => {
                    tracing::debug!(tag = tagged.tag.inner(), "imapc: answer for an unknown tag");
                }
                other => {
                    if let Err(e) = on(other) {
                        return Err(self.poison(e));
                    }
                }
            }
        }
    }

    /// Sends `body`, waits for its answer, and turns a NO/BAD into an error.
    pub(crate) fn run(
        &mut self,
        body: CommandBody<'static>,
        what: &What,
        on: &mut dyn FnMut(Incoming) -> Result<()>,
    ) -> Result<StatusBody<'static>> {
        self.begin(what)?;
        let tag = self.send(body);
        let done = self.wait(&tag, on)?;
        self.check(done, what)
    }

    /// Common start of every command: the session must be usable, a pending body fetch is
    /// finished first (its responses would be in the way).
    pub(crate) fn begin(&mut self, what: &What) -> Result<()> {
        self.usable()?;
        if self.bodies.is_some() {
            self.drain_bodies()?;
        }
        self.doing = what.to_string();
        Ok(())
    }

    pub(crate) fn check(
        &mut self,
        done: StatusBody<'static>,
        what: &What,
    ) -> Result<StatusBody<'static>> {
        if done.kind == StatusKind::Ok {
            Ok(done)
        } else {
            Err(self.refusal(what, &done))
        }
    }

    /// The error for a tagged NO or BAD.
    pub(crate) fn refusal(&mut self, what: &What, done: &StatusBody) -> Error {
        let host = &self.host;
        let text = done.text.inner();
        let code = code_name(done.code.as_ref());
        match code.as_str() {
            "UNAVAILABLE" | "THROTTLED" => {
                self.throttled = true;
                Error::temp(format!(
                    "imapc({host}): {what} failed, server busy [{code}]: {text}"
                ))
            }
            "OVERQUOTA" | "LIMIT" => Error::temp(format!(
                "imapc({host}): {what} failed: over quota [{code}]: {text}"
            )),
            "NONEXISTENT" | "TRYCREATE" => Error::NotFound(format!(
                "imapc({host}): {what} failed: mailbox does not exist: {text}"
            )),
            _ => Error::data(format!("imapc({host}): {what} failed: {text}")),
        }
    }

    /// Runs `f` again after [THROTTLED]/[UNAVAILABLE], waiting 1 s, 2 s, 4 s. Only for
    /// commands that can be repeated without harm (FETCH, STATUS, LIST, SELECT).
    pub(crate) fn retrying<T>(
        &mut self,
        mut f: impl FnMut(&mut Session) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            self.throttled = false;
            match f(self) {
                Err(e) if self.throttled && self.broken.is_none() => {
                    if attempt == RETRIES {
                        return Err(Error::temp(format!(
                            "{e} (gave up after {RETRIES} retries)"
                        )));
                    }
                    let wait = self.backoff * 2u32.pow(attempt);
                    tracing::info!("imapc({}): server busy, retrying in {wait:?}", self.host);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Case-insensitive: "UIDPLUS", "LITERAL+", "AUTH=PLAIN".
    pub fn has(&self, capability: &str) -> bool {
        self.caps.contains(&capability.to_ascii_uppercase())
    }

    /// Whether QRESYNC was enabled (so SELECT takes QRESYNC and FETCH takes VANISHED).
    pub fn qresync_enabled(&self) -> bool {
        self.qresync
    }

    /// Whether mod-sequences are available: CONDSTORE enabled, or advertised (a SELECT
    /// with the CONDSTORE parameter then turns it on).
    pub fn condstore_enabled(&self) -> bool {
        self.condstore
    }

    /// Whether the server is Dovecot (from its greeting or ID), which answers `X-GUID`
    /// without advertising it.
    pub fn is_dovecot(&self) -> bool {
        self.dovecot
    }

    /// The personal namespace's prefix and separator, when the server has NAMESPACE.
    pub fn namespace(&self) -> Option<(String, Option<char>)> {
        self.namespace.clone()
    }

    /// Logs out politely; errors do not matter any more.
    pub fn logout(mut self) {
        if self.usable().is_ok() {
            let what = What::new("LOGOUT", None);
            if self.begin(&what).is_ok() {
                let tag = self.send(CommandBody::Logout);
                // The BYE before the tagged OK ends the wait with an error; fine.
                let _ = self.wait(&tag, &mut |_| Ok(()));
            }
        }
        let Session { rt, stream, .. } = &mut self;
        rt.block_on(stream.shutdown());
    }
}

/// The response code's name, upper-cased: "TRYCREATE", "THROTTLED"; "" for none.
pub(crate) fn code_name(code: Option<&Code>) -> String {
    match code {
        None => String::new(),
        Some(Code::OverQuota) => "OVERQUOTA".into(),
        Some(Code::TryCreate) => "TRYCREATE".into(),
        Some(Code::Other(other)) => {
            let raw = other.inner();
            let end = raw.iter().position(|&b| b == b' ').unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).to_ascii_uppercase()
        }
        Some(_) => "KNOWN".into(),
    }
}

/// Feeds arbitrary server bytes through the response path of a session (literal guard,
/// imap-next, imap-codec, the extension-item fallback, and the conversion into this
/// crate's types). For a fuzz target: it must never panic, whatever the input.
pub fn parse_response_bytes_for_fuzz(data: &[u8]) {
    let mut rx = Receiver::new("fuzz", 1 << 20, data.first() == Some(&b'*'));
    let (a, b) = data.split_at(data.len() / 2);
    for chunk in [a, b] {
        if rx.push(chunk).is_err() {
            return;
        }
        // Every step consumes input, so this ends; errors skip one response, as imap-next
        // allows, to reach more of the input.
        for _ in 0..data.len() + 1 {
            match rx.step() {
                Ok(Step::In(Incoming::Data(data, ext))) => crate::fetch::exercise(&data, &ext),
                Ok(Step::In(_)) | Ok(Step::Out(_)) | Err(_) => {}
                Ok(Step::NeedInput) => break,
            }
        }
    }
}
