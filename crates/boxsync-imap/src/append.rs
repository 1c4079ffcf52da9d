//! Changing mail: pipelined APPEND, STORE of flags, UID EXPUNGE.

use crate::mailbox::mailbox_arg;
use crate::session::{Incoming, What};
use crate::{Append, Session, StoreMode};
use boxsync_model::{Error, Result};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::{Literal, LiteralMode};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::{Literal8, LiteralOrLiteral8};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, StatusKind};
use imap_codec::imap_types::sequence::SequenceSet;
use std::borrow::Cow;
use std::collections::VecDeque;

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
    /// instead of `+` leaves imap-next waiting, so then the session is unusable afterwards.
    pub fn append_many(
        &mut self,
        mailbox: &str,
        items: &mut dyn Iterator<Item = Result<Append>>,
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
        let mut results = Vec::new();
        let mut inflight: VecDeque<(String, usize)> = VecDeque::new();
        let mut first_err = None;
        let mut exhausted = false;
        loop {
            while first_err.is_none() && !exhausted && inflight.len() < self.window {
                match items.next() {
                    None => exhausted = true,
                    Some(Err(e)) => first_err = Some(e),
                    Some(Ok(item)) => match append_body(&target, item, mode, binary, &self.host) {
                        Ok(body) => {
                            let tag = self.send(body);
                            inflight.push_back((tag, results.len()));
                            results.push(None);
                        }
                        Err(e) => first_err = Some(e),
                    },
                }
            }
            if inflight.is_empty() {
                break;
            }
            let Incoming::Tagged(tagged) = self.next_in()? else {
                continue;
            };
            let Some(pos) = inflight.iter().position(|(t, _)| t == tagged.tag.inner()) else {
                continue;
            };
            let Some((_, index)) = inflight.remove(pos) else {
                continue;
            };
            if tagged.body.kind == StatusKind::Ok {
                if let Some(Code::AppendUid { uid, .. }) = tagged.body.code {
                    results[index] = Some(uid.get());
                }
            } else {
                let e = self.refusal(&what, &tagged.body);
                if mode == LiteralMode::Sync {
                    // imap-next still waits for a "+" for this literal; nothing queued
                    // behind it will ever go out.
                    return Err(self.poison(e));
                }
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(results),
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

fn append_body(
    mailbox: &Mailbox<'static>,
    item: Append,
    mode: LiteralMode,
    binary: bool,
    host: &str,
) -> Result<CommandBody<'static>> {
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
            data: Cow::Owned(item.body),
            mode,
        })
    } else {
        let mut literal = Literal::try_from(item.body)
            .map_err(|e| Error::data(format!("imapc({host}): message not sendable: {e}")))?;
        literal.set_mode(mode);
        LiteralOrLiteral8::Literal(literal)
    };
    Ok(CommandBody::Append {
        mailbox: mailbox.clone(),
        flags: parse_flags(&item.flags)?,
        date,
        message,
    }
    .into_static())
}
