//! Changing mail: pipelined APPEND, STORE of flags, UID EXPUNGE.

use crate::mailbox::mailbox_arg;
use crate::session::{Incoming, What};
use crate::{Append, Session, StoreMode};
use boxsync_model::{Error, Result};
use imap_codec::CommandCodec;
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{Literal, LiteralMode, Tag};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::{Literal8, LiteralOrLiteral8};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, StatusKind, Tagged};
use imap_codec::imap_types::sequence::SequenceSet;
use std::borrow::Cow;
use std::collections::VecDeque;

/// A message up to this size goes out in the same write as its command line.
const SMALL_MESSAGE: usize = 64 * 1024;

impl Session {
    /// APPENDs every item to `mailbox`, pipelined: up to the window of commands in flight,
    /// items pulled from `items` only as the window allows, so only that many messages are
    /// in memory. Non-synchronizing literals with LITERAL+, else synchronizing ones (then
    /// each message waits for the server's `+`). Returns per item, in order, its new UID
    /// from `[APPENDUID]` (UIDPLUS), else `None`.
    ///
    /// On an error (from `items` or the server) the commands already in flight are
    /// finished first, then the first error is returned. Not retried: a repeated APPEND
    /// would duplicate the message. A server that refuses a synchronizing literal with NO
    /// instead of `+` gets no message for that command, which then counts as refused.
    ///
    /// The messages go out straight from the callers' buffers (see `send_append`), so a
    /// big message is in memory once, not again as an encoded command.
    pub fn append_many(
        &mut self,
        mailbox: &str,
        items: &mut dyn Iterator<Item = Result<Append<'_>>>,
    ) -> Result<Vec<Option<u32>>> {
        let what = What::new("APPEND", Some(mailbox));
        self.begin(&what)?;
        let target = mailbox_arg(mailbox)?;
        let mode = if self.has("LITERAL+") {
            LiteralMode::NonSync
        } else {
            LiteralMode::Sync
        };
        let binary = self.has("BINARY");
        let mut state = Appending {
            results: Vec::new(),
            inflight: VecDeque::new(),
            first_err: None,
        };
        let mut exhausted = false;
        loop {
            while state.first_err.is_none() && !exhausted && state.inflight.len() < self.window {
                match items.next() {
                    None => exhausted = true,
                    Some(Err(e)) => state.first_err = Some(e),
                    Some(Ok(item)) => {
                        let tag = self.new_tag();
                        let name = tag.inner().to_owned();
                        match append_line(tag, &target, &item, mode, binary, &self.host) {
                            Ok(line) => {
                                self.send_append(&mut state, name, line, item.body, mode, &what)?
                            }
                            Err(e) => state.first_err = Some(e),
                        }
                    }
                }
            }
            if state.inflight.is_empty() {
                break;
            }
            if let Incoming::Tagged(tagged) = self.next_in()? {
                state.settle(self, &what, tagged);
            }
        }
        match state.first_err {
            Some(e) => Err(e),
            None => Ok(state.results),
        }
    }

    /// Writes one APPEND: its line, then (after the server's `+` for a synchronizing
    /// literal) the message straight from the caller's buffer, so it is never copied into
    /// an encoded command. A NO instead of the `+` settles the command without the literal.
    fn send_append(
        &mut self,
        state: &mut Appending,
        tag: String,
        mut line: Vec<u8>,
        body: &[u8],
        mode: LiteralMode,
        what: &What,
    ) -> Result<()> {
        state.inflight.push_back((tag.clone(), state.results.len()));
        state.results.push(None);
        if mode == LiteralMode::Sync {
            self.write(&line)?;
            line.clear();
            loop {
                match self.next_in()? {
                    Incoming::Continue => break,
                    Incoming::Tagged(tagged) => {
                        let ours = tagged.tag.inner() == tag;
                        state.settle(self, what, tagged);
                        if ours {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
        // A small message goes out with its line in one write; a big one is not copied.
        if body.len() <= SMALL_MESSAGE {
            line.extend_from_slice(body);
            line.extend_from_slice(b"\r\n");
            self.write(&line)
        } else {
            if !line.is_empty() {
                self.write(&line)?;
            }
            self.write(body)?;
            self.write(b"\r\n")
        }
    }

    /// Sets, adds or removes `flags` on `uids` in the selected mailbox (`UID STORE ...
    /// FLAGS.SILENT`, so no FETCH comes back).
    pub fn store_flags(&mut self, uids: &str, flags: &[String], mode: StoreMode) -> Result<()> {
        if flags.is_empty() && mode != StoreMode::Replace {
            return Ok(());
        }
        let mailbox = self.selected.clone();
        let what = What::new("UID STORE", mailbox.as_deref());
        let body = CommandBody::Store {
            sequence_set: uid_set(uids)?,
            kind: match mode {
                StoreMode::Replace => StoreType::Replace,
                StoreMode::Add => StoreType::Add,
                StoreMode::Remove => StoreType::Remove,
            },
            response: StoreResponse::Silent,
            flags: parse_flags(flags)?,
            uid: true,
            modifiers: Vec::new(),
        };
        self.run(body, &what, &mut |_| Ok(())).map(drop)
    }

    /// Expunges `uids` from the selected mailbox: marks them `\Deleted`, then `UID EXPUNGE`
    /// (UIDPLUS), both in one round trip. UID EXPUNGE only removes messages that have
    /// `\Deleted`, hence the STORE. Without UIDPLUS a plain EXPUNGE follows instead, which
    /// also removes any other message already marked `\Deleted` in the mailbox; IMAP offers
    /// nothing better there.
    pub fn uid_expunge(&mut self, uids: &str) -> Result<()> {
        let mailbox = self.selected.clone();
        let set = uid_set(uids)?;
        let uidplus = self.has("UIDPLUS");
        let what = What::new(
            if uidplus { "UID EXPUNGE" } else { "EXPUNGE" },
            mailbox.as_deref(),
        );
        self.begin(&what)?;
        let store = CommandBody::Store {
            sequence_set: set.clone(),
            kind: StoreType::Add,
            response: StoreResponse::Silent,
            flags: vec![Flag::Deleted],
            uid: true,
            modifiers: Vec::new(),
        };
        let expunge = if uidplus {
            CommandBody::ExpungeUid { sequence_set: set }
        } else {
            CommandBody::Expunge
        };
        let store_tag = self.send(store);
        let expunge_tag = self.send(expunge);
        let stored = self.wait(&store_tag, &mut |_| Ok(()))?;
        let expunged = self.wait(&expunge_tag, &mut |_| Ok(()))?;
        self.check(stored, &What::new("UID STORE", mailbox.as_deref()))?;
        self.check(expunged, &what).map(drop)
    }
}

fn uid_set(uids: &str) -> Result<SequenceSet> {
    SequenceSet::try_from(uids)
        .map_err(|e| Error::Usage(format!("imapc: invalid UID set {uids:?}: {e:?}")))
}

/// Flags as IMAP flags; `\Recent` is left out since no client may set it.
fn parse_flags(flags: &[String]) -> Result<Vec<Flag<'static>>> {
    flags
        .iter()
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .map(|f| {
            Flag::try_from(f.as_str())
                .map(IntoStatic::into_static)
                .map_err(|e| Error::data(format!("imapc: invalid flag {f:?}: {e}")))
        })
        .collect()
}

/// The command line of an APPEND of `item`, up to and including its literal's `{n}` and CRLF.
/// imap-codec encodes the command with an empty literal, and the length is put in: encoding
/// the message itself would copy it.
fn append_line(
    tag: Tag<'static>,
    mailbox: &Mailbox<'static>,
    item: &Append,
    mode: LiteralMode,
    binary: bool,
    host: &str,
) -> Result<Vec<u8>> {
    let date = match item.internaldate {
        None => None,
        Some(secs) => {
            let utc = chrono::DateTime::from_timestamp(secs, 0)
                .ok_or_else(|| Error::data(format!("imapc: internal date {secs} out of range")))?;
            Some(DateTime::try_from(utc.fixed_offset()).map_err(|e| {
                Error::data(format!(
                    "imapc: internal date {secs} not expressible: {e:?}"
                ))
            })?)
        }
    };
    // A NUL byte cannot go in a plain literal; BINARY's literal8 (RFC 3516) takes it.
    let message = if item.body.contains(&0) {
        if !binary {
            return Err(Error::data(format!(
                "imapc({host}): message contains NUL bytes and the server has no BINARY"
            )));
        }
        LiteralOrLiteral8::Literal8(Literal8 {
            data: Cow::Borrowed(&[]),
            mode,
        })
    } else {
        // Without NUL bytes any message is a valid literal.
        let mut literal = Literal::unvalidated(&[][..]);
        literal.set_mode(mode);
        LiteralOrLiteral8::Literal(literal)
    };
    let command = Command {
        tag,
        body: CommandBody::Append {
            mailbox: mailbox.clone(),
            flags: parse_flags(&item.flags)?,
            date,
            message,
        },
    };
    let mut fragments = CommandCodec::default().encode(&command);
    let odd = || Error::Usage("imapc: APPEND encoded in an unexpected shape".into());
    let Some(Fragment::Line { data: mut line }) = fragments.next() else {
        return Err(odd());
    };
    // After the empty literal only the command's closing CRLF may follow.
    let rest: Vec<Fragment> = fragments.collect();
    let tail_ok = matches!(
        rest.as_slice(),
        [Fragment::Literal { data, .. }, Fragment::Line { data: end }]
            if data.is_empty() && end.as_slice() == b"\r\n"
    );
    let suffix: &[u8] = match mode {
        LiteralMode::Sync => b"{0}\r\n",
        LiteralMode::NonSync => b"{0+}\r\n",
    };
    if !tail_ok || !line.ends_with(suffix) {
        return Err(odd());
    }
    // The "0" of "{0}" becomes the message's length.
    let zero = line.len() - suffix.len() + 1;
    line.splice(zero..zero + 1, item.body.len().to_string().into_bytes());
    Ok(line)
}

/// What the pipelined APPENDs have come to so far.
struct Appending {
    results: Vec<Option<u32>>,
    /// Tag and index into `results` of each command waiting for its answer.
    inflight: VecDeque<(String, usize)>,
    first_err: Option<Error>,
}

impl Appending {
    /// Records the server's answer to one of the APPENDs.
    fn settle(&mut self, session: &mut Session, what: &What, tagged: Tagged) {
        let Some(pos) = self
            .inflight
            .iter()
            .position(|(t, _)| t == tagged.tag.inner())
        else {
            return;
        };
        let Some((_, index)) = self.inflight.remove(pos) else {
            return;
        };
        if tagged.body.kind == StatusKind::Ok {
            if let Some(Code::AppendUid { uid, .. }) = tagged.body.code {
                self.results[index] = Some(uid.get());
            }
        } else {
            let e = session.refusal(what, &tagged.body);
            self.first_err.get_or_insert(e);
        }
    }
}
