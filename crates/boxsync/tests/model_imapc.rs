//! The model test with an IMAP account on one side. Side A is a Maildir, side B an account on
//! a real Dovecot imapd; both are changed at random through real Dovecot (`doveadm save`,
//! `flags replace`, `expunge`), and synced by the boxsync binary in every mode (two-way,
//! backup, `-1`), both directions, every type (fast, full, stateful), with the IMAP account
//! as the destination or as the local side. After every sync the stores are read back as
//! Dovecot holds them and checked:
//!
//! 1. two-way: both sides hold the same mailboxes with the same messages and flags, no
//!    message twice, nothing lost that was not expunged, and a message whose flags only one
//!    side changed since the last two-way sync has that side's flags;
//! 2. backup: the destination equals the source, and the source is unchanged;
//! 3. `-1`: the source is unchanged, and mail delivered to it since the last sync is in the
//!    destination;
//! 4. the same sync again exits 0 and changes nothing.
//!
//! The engine's own model test (`model.rs`) runs far more cases on two Maildirs; this one is
//! slower (each operation is a process) and runs `BOXSYNC_MODEL_IMAP_CASES` cases (default 6)
//! of `BOXSYNC_MODEL_IMAP_OPS` operations (default 16). A failure prints the case's seed and
//! the operations so far.

mod common;
mod support;

use common::imapd::Imapd;
use common::{Dir, boxsync, maildir, message};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Output;
use support::{Rng, code, describe, read_maildir};

const FOLDERS: [&str; 3] = ["INBOX", "Work", "Entwürfe"];
const FLAGS: [&str; 6] = [
    "\\Seen",
    "\\Flagged",
    "\\Answered",
    "\\Draft",
    "$Work",
    "$Home",
];

/// Mailbox → message number → flags, as Dovecot holds the store.
type Content = BTreeMap<String, BTreeMap<usize, BTreeSet<String>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    A,
    B,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    TwoWay,
    Backup,
    OneWay,
}

struct World {
    im: Imapd,
    dir: Dir,
    next: usize,
    /// Messages that must survive the next two-way sync.
    live: BTreeSet<usize>,
    /// Messages expunged since the last two-way sync or backup: a `-1` does not settle them.
    expunged: BTreeSet<usize>,
    /// Messages delivered per side since the last sync that carried them over.
    delivered: HashMap<Side, BTreeSet<usize>>,
    /// Flags set per side since the last two-way sync: message → flags.
    flagged: HashMap<Side, BTreeMap<usize, BTreeSet<String>>>,
    /// `-s` states per (kind, from, account is local).
    states: HashMap<(Kind, Side, bool), String>,
    trace: Vec<String>,
}

fn number_of(body: &[u8]) -> usize {
    let text = String::from_utf8_lossy(body);
    let start = text.find("test message number ").expect("a test message") + 20;
    text[start..]
        .split(',')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a message number")
}

fn content_of(root: &Path) -> Content {
    let view = read_maildir(root);
    assert!(view.problems.is_empty(), "{:#?}", view.problems);
    view.mailboxes
        .into_iter()
        .map(|(name, mb)| {
            let msgs = mb
                .messages
                .into_values()
                .map(|m| (number_of(&m.body), m.flags))
                .collect();
            (name, msgs)
        })
        .collect()
}

fn numbers(c: &Content) -> Vec<usize> {
    let mut all: Vec<usize> = c.values().flat_map(|m| m.keys().copied()).collect();
    all.sort_unstable();
    all
}

impl World {
    fn new(im: Imapd) -> World {
        let dir = Dir::new();
        let w = World {
            im,
            dir,
            next: 1,
            live: BTreeSet::new(),
            expunged: BTreeSet::new(),
            delivered: HashMap::new(),
            flagged: HashMap::new(),
            states: HashMap::new(),
            trace: Vec::new(),
        };
        for side in [Side::A, Side::B] {
            for f in &FOLDERS[1..] {
                w.im.dovecot().mailbox_create(&w.loc(side), f);
            }
        }
        w
    }

    fn loc(&self, side: Side) -> String {
        match side {
            Side::A => maildir(&self.dir.join("Maildir")),
            Side::B => self.im.user_location("alice"),
        }
    }

    fn root(&self, side: Side) -> PathBuf {
        let loc = self.loc(side);
        PathBuf::from(loc["maildir:".len()..].split(':').next().unwrap())
    }

    fn imapc(&self) -> String {
        format!("imapc:{}", self.dir.join("idx").display())
    }

    /// What Dovecot holds on a side (every mailbox opened first, so that Dovecot has written
    /// the uidlist of an empty one).
    fn content(&self, side: Side) -> Content {
        self.im.dovecot().mailbox_status(&self.loc(side));
        content_of(&self.root(side))
    }

    fn rows(&self, side: Side) -> Vec<(String, u32, usize)> {
        self.im
            .dovecot()
            .fetch_fields(&self.loc(side), "mailbox uid hdr.message-id", &["ALL"])
            .into_iter()
            .filter_map(|r| {
                // Message-ID: <N.SECS@boxsync.test>
                let id = r.get("hdr.message-id")?;
                let n = id.trim_start_matches('<').split('.').next()?.parse().ok()?;
                Some((r["mailbox"].clone(), r["uid"].parse().ok()?, n))
            })
            .collect()
    }

    fn deliver(&mut self, side: Side, folder: usize) {
        let n = self.next;
        self.next += 1;
        let f = FOLDERS[folder % FOLDERS.len()];
        self.trace.push(format!("deliver {n} into {side:?} {f}"));
        self.im.dovecot().save(&self.loc(side), f, &message(n));
        self.live.insert(n);
        self.delivered.entry(side).or_default().insert(n);
    }

    fn set_flags(&mut self, side: Side, pick: usize, bits: usize) {
        let rows = self.rows(side);
        if rows.is_empty() {
            return;
        }
        let (mailbox, uid, n) = rows[pick % rows.len()].clone();
        let flags: BTreeSet<String> = FLAGS
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, f)| f.to_string())
            .collect();
        self.trace.push(format!(
            "flags {flags:?} on {n} ({side:?} {mailbox} UID {uid})"
        ));
        let text = flags.iter().cloned().collect::<Vec<_>>().join(" ");
        self.im
            .dovecot()
            .flags_replace(&self.loc(side), &mailbox, uid, &text);
        self.flagged.entry(side).or_default().insert(n, flags);
    }

    fn expunge(&mut self, side: Side, pick: usize) {
        let rows = self.rows(side);
        if rows.is_empty() {
            return;
        }
        let (mailbox, uid, n) = rows[pick % rows.len()].clone();
        self.trace
            .push(format!("expunge {n} ({side:?} {mailbox} UID {uid})"));
        self.im.dovecot().expunge(&self.loc(side), &mailbox, uid);
        self.live.remove(&n);
        self.expunged.insert(n);
        for m in self.flagged.values_mut() {
            m.remove(&n);
        }
    }

    /// Runs one sync from the CLI; the IMAP account is the destination or, with
    /// `account_local`, the local side.
    fn run_sync(&mut self, kind: Kind, from: Side, ty: u8, account_local: bool) -> Output {
        let (local, remote) = if account_local {
            (Side::B, Side::A)
        } else {
            (Side::A, Side::B)
        };
        let location = |s: Side| {
            if s == Side::B {
                self.imapc()
            } else {
                self.loc(Side::A)
            }
        };
        let mut cmd = boxsync();
        cmd.arg("-o")
            .arg(format!("mail_location={}", location(local)))
            .args(self.im.imapc_args("alice"));
        cmd.arg(match kind {
            Kind::Backup => "backup",
            _ => "sync",
        });
        if kind == Kind::OneWay {
            cmd.arg("-1");
        }
        if kind != Kind::TwoWay && from != local {
            cmd.arg("-R");
        }
        let key = (kind, from, account_local);
        match ty {
            1 => {
                cmd.arg("-f");
            }
            2 => {
                cmd.arg("-s")
                    .arg(self.states.get(&key).cloned().unwrap_or_default());
            }
            _ => {}
        }
        cmd.arg(location(remote));
        let out = cmd.output().expect("run boxsync");
        if ty == 2 && code(&out) == 0 {
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            self.states.insert(key, state);
        }
        out
    }

    fn sync(&mut self, kind: Kind, from: Side, ty: u8, account_local: bool) -> Result<(), String> {
        self.trace.push(format!(
            "{kind:?} from {from:?}, type {ty}, account local: {account_local}"
        ));
        let before = [self.content(Side::A), self.content(Side::B)];
        let out = self.run_sync(kind, from, ty, account_local);
        let mut c = code(&out);
        if c == 2 {
            // Changed during the sync: dsync's answer is to run it again.
            c = code(&self.run_sync(kind, from, ty, account_local));
        }
        if c != 0 {
            return Err(format!("exit {c}: {}", describe(&out)));
        }
        let after = [self.content(Side::A), self.content(Side::B)];
        let to = match from {
            Side::A => Side::B,
            Side::B => Side::A,
        };
        let (src, dst) = (from as usize, to as usize);
        match kind {
            Kind::TwoWay => {
                if after[0] != after[1] {
                    return Err(format!(
                        "two-way: the sides differ\nA: {:?}\nB: {:?}",
                        after[0], after[1]
                    ));
                }
                let all = numbers(&after[0]);
                let unique: BTreeSet<usize> = all.iter().copied().collect();
                if unique.len() != all.len() {
                    return Err(format!("two-way: a message twice: {all:?}"));
                }
                let lost: Vec<&usize> = self.live.difference(&unique).collect();
                if !lost.is_empty() {
                    return Err(format!("two-way: lost {lost:?}"));
                }
                for side in [Side::A, Side::B] {
                    let other = if side == Side::A { Side::B } else { Side::A };
                    let theirs = self.flagged.get(&other).cloned().unwrap_or_default();
                    for (n, flags) in self.flagged.get(&side).cloned().unwrap_or_default() {
                        if theirs.contains_key(&n) {
                            continue;
                        }
                        let now = after[0].values().find_map(|m| m.get(&n));
                        if now.is_some_and(|f| *f != flags) {
                            return Err(format!(
                                "two-way: message {n}'s flags {flags:?} from {side:?} became {now:?}"
                            ));
                        }
                    }
                }
                self.live = unique;
                self.expunged.clear();
                self.delivered.clear();
                self.flagged.clear();
            }
            Kind::Backup => {
                if after[src] != before[src] {
                    return Err("backup changed its source".into());
                }
                if after[dst] != after[src] {
                    return Err(format!(
                        "backup: the destination differs\nsource: {:?}\ndestination: {:?}",
                        after[src], after[dst]
                    ));
                }
                self.live = numbers(&after[src]).into_iter().collect();
                self.expunged.clear();
                self.delivered.clear();
                self.flagged.clear();
            }
            Kind::OneWay => {
                if after[src] != before[src] {
                    return Err("-1 changed its source".into());
                }
                let have: BTreeSet<usize> = numbers(&after[dst]).into_iter().collect();
                let src_has: BTreeSet<usize> = numbers(&after[src]).into_iter().collect();
                for n in self.delivered.get(&from).cloned().unwrap_or_default() {
                    if src_has.contains(&n) && !have.contains(&n) {
                        return Err(format!("-1: message {n} did not reach the destination"));
                    }
                }
                // A side's expunge since the last two-way sync still reaches the other side
                // with the next one.
                self.live = have
                    .union(&src_has)
                    .filter(|n| !self.expunged.contains(n))
                    .copied()
                    .collect();
                self.delivered.remove(&from);
            }
        }
        // The same sync again changes nothing.
        let again = self.run_sync(kind, from, ty, account_local);
        if code(&again) != 0 {
            return Err(format!("the rerun: {}", describe(&again)));
        }
        let rerun = [self.content(Side::A), self.content(Side::B)];
        if rerun != after {
            return Err(format!(
                "the rerun changed the stores\nbefore: {after:?}\nafter: {rerun:?}"
            ));
        }
        Ok(())
    }

    fn step(&mut self, rng: &mut Rng) -> Result<(), String> {
        let side = if rng.chance(50) { Side::A } else { Side::B };
        match rng.range(0, 9) {
            0..=2 => self.deliver(side, rng.range(0, 2) as usize),
            3..=4 => self.set_flags(side, rng.range(0, 100) as usize, rng.range(0, 64) as usize),
            5 => self.expunge(side, rng.range(0, 100) as usize),
            _ => {
                let kind = match rng.range(0, 3) {
                    0 | 1 => Kind::TwoWay,
                    2 => Kind::Backup,
                    _ => Kind::OneWay,
                };
                let ty = rng.range(0, 2) as u8;
                let local = rng.chance(30);
                self.sync(kind, side, ty, local)?;
            }
        }
        Ok(())
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_changes_and_syncs_with_an_imap_account() {
    let cases = env_number("BOXSYNC_MODEL_IMAP_CASES", 6);
    let ops = env_number("BOXSYNC_MODEL_IMAP_OPS", 16);
    for case in 0..cases {
        let Some(im) = Imapd::start_with(&["alice"]) else {
            return;
        };
        let seed = 0x1ac0_0000 + case;
        let mut rng = Rng::new(seed);
        let mut w = World::new(im);
        let mut result = Ok(());
        for _ in 0..ops {
            result = w.step(&mut rng);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = w.sync(Kind::TwoWay, Side::A, 1, false);
        }
        if let Err(e) = result {
            panic!(
                "case {case} (seed {seed:#x}) failed: {e}\noperations:\n  {}",
                w.trace.join("\n  ")
            );
        }
    }
}
