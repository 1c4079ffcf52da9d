//! The sync engine. Two symmetric brains, one per store, exchange dsync records over a [`Link`]
//! in Dovecot's order (reference §4.4): handshake, states, tree, then per mailbox `B`, `C`, `R`,
//! `M` and `S`, and `F` at the end. Both run the same decisions on the same records, so each
//! changes only its own store and the two agree without a coordinator.

pub mod link;
pub mod mails;
pub mod progress;
pub mod tree;

use boxsync_model::{Error, ExitCode, Flags, Guid128, Keywords, MailboxName, Modseq, Result, Uid};
use boxsync_proto::{
    ChangeType, Deletes, Existence, Finish, Handshake, Mail, MailBody, MailChange, MailRequest,
    MailboxRecord, MailboxState, Record, SyncType, TreeNode,
};
use boxsync_store::{HeaderUpdate, Store};
use link::Link;
use mails::{Action, SideChanges};
use std::collections::{BTreeMap, HashMap};

/// Which brain: the master runs the command and leads; the slave follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Slave,
}

impl Role {
    pub fn index(self) -> usize {
        match self {
            Role::Master => 0,
            Role::Slave => 1,
        }
    }
}

/// The three kinds of sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `sync`: merge both ways.
    TwoWay,
    /// `backup`: the destination becomes a copy of `source`.
    Backup { source: Role },
    /// `sync -1`: merge into the destination, never changing `source`.
    OneWay { source: Role },
}

/// What the master asks for; the slave takes it from the handshake.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub sync_type: SyncType,
    /// The `-s` state (stateful sync); `None` otherwise.
    pub state: Option<Vec<MailboxState>>,
    /// `-m`: only these mailboxes.
    pub mailboxes: Vec<String>,
    /// `-x`: leave these alone (`*` and `?` wildcards).
    pub excludes: Vec<String>,
    /// `-l`: seconds to wait for the user's sync lock; 0 for no lock.
    pub lock_timeout: u32,
    /// `-g`, `-t`, `-e`, `-I`, `-O`: which mailboxes and which missing mail to sync.
    pub filter: Filter,
    /// `-C`, `dsync_alt_char`: replaces, in the other side's mailbox names, what this side's
    /// store cannot hold (see [`tree::repair_names`]). The slave takes the master's.
    pub alt_char: char,
    /// `-a`: a mailbox holding every message, from which a side copies mail it lacks by GUID
    /// rather than asking the other side (a message moved between mailboxes is not sent
    /// again). Its name as the brain joins levels (`/`).
    pub virtual_all_box: Option<String>,
    /// `-v`: where to report progress. Never sent: a slave has its own or none.
    pub progress: Option<progress::ProgressHandle>,
}

/// doveadm's sync filters. As in Dovecot (`dsync_mailbox_import_want_change()`), the date,
/// size and flag filters only decide whether a side *saves* a mail it is missing: mail both
/// sides have is matched, flagged and expunged as usual, and a backup destination still loses
/// mail the source does not have. Both sides hold the same filter (it travels in the
/// handshake), so both plan the same.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `-g GUID`: only the mailbox with this GUID.
    pub box_guid: Option<Guid128>,
    /// `-g ""`: the mailbox list only, no mail.
    pub no_mail_sync: bool,
    /// `-t`: received at or after this UNIX time (0: no limit).
    pub since: i64,
    /// `-e`: received at or before this UNIX time (0: no limit).
    pub until: i64,
    /// `-I`: virtual size (CRLF line ends) at most this many bytes (0: no limit).
    pub max_size: u64,
    /// `-O`: Dovecot's form: a system flag (`\Seen`) or keyword, `-` first for "without".
    pub flag: Option<String>,
}

impl Filter {
    fn needs_received(&self) -> bool {
        self.since > 0 || self.until > 0
    }

    fn needs_size(&self) -> bool {
        self.max_size > 0
    }

    /// Whether a side missing the mail of this `C` record saves it.
    pub fn wants(&self, c: &MailChange) -> bool {
        if self.since > 0 && c.received_timestamp < self.since {
            return false;
        }
        if self.until > 0 && c.received_timestamp > self.until {
            return false;
        }
        if self.max_size > 0 && c.virtual_size > self.max_size {
            return false;
        }
        if let Some(flag) = &self.flag {
            let (without, name) = match flag.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, flag.as_str()),
            };
            let has = if name.starts_with('\\') {
                // \Recent is valid but never kept, so no mail has it.
                Flags::from_imap_name(name).is_some_and(|f| c.final_flags.contains(f))
            } else {
                c.final_keywords().any(|k| k.eq_ignore_ascii_case(name))
            };
            if has == without {
                return false;
            }
        }
        true
    }
}

/// What a brain reports at the end.
#[derive(Debug, Default)]
pub struct Outcome {
    pub exit: Option<ExitCode>,
    pub state: Vec<MailboxState>,
    pub errors: Vec<String>,
    pub saved: u64,
    pub expunged: u64,
    pub flag_changes: u64,
    pub bytes: u64,
    /// Mail this side sent for the other to save: what the other side saved, when its own
    /// counts do not reach this outcome (a remote sync).
    pub sent: u64,
    pub changed_during_sync: bool,
    /// The failure the other side reported in its finish record.
    pub remote_error: Option<String>,
}

impl Outcome {
    pub fn exit_code(&self) -> ExitCode {
        let mut code = self.exit.unwrap_or(ExitCode::Ok);
        if self.changed_during_sync {
            code = code.worst(ExitCode::Changed);
        }
        code
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned())
}

/// Matches a mailbox name against a `-x`/`-m` mask with `*` and `?`.
pub fn mask_matches(mask: &str, name: &str) -> bool {
    fn go(m: &[char], n: &[char]) -> bool {
        match (m.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&m[1..], n) || (!n.is_empty() && go(m, &n[1..])),
            (Some('?'), Some(_)) => go(&m[1..], &n[1..]),
            (Some(a), Some(b)) => a == b && go(&m[1..], &n[1..]),
            _ => false,
        }
    }
    let m: Vec<char> = mask.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&m, &n) || (mask.eq_ignore_ascii_case("INBOX") && name == "INBOX")
}

/// `-g`: whether a mailbox with this GUID is the one asked for.
fn guid_selected(settings: &Settings, guid: Guid128) -> bool {
    settings.filter.box_guid.is_none_or(|g| g == guid)
}

fn selected(settings: &Settings, name: &MailboxName) -> bool {
    let n = name.to_string();
    (settings.mailboxes.is_empty() || settings.mailboxes.iter().any(|m| mask_matches(m, &n)))
        && !settings.excludes.iter().any(|x| mask_matches(x, &n))
}

/// Runs a local sync: two brains in one process, the slave on its own thread.
pub fn sync_local(
    master: &mut dyn Store,
    slave: &mut (dyn Store + Send),
    settings: Settings,
) -> Result<Outcome> {
    let (mut a, mut b) = link::pair();
    // Both brains count what they save, so neither counts what it sends.
    let mut settings = settings;
    if let Some(p) = &mut settings.progress {
        p.counts_sends = false;
    }
    let slave_progress = settings.progress.clone();
    std::thread::scope(|scope| {
        let slave_thread = scope.spawn(move || {
            let mut outcome = Outcome::default();
            let result = run_inner(
                Role::Slave,
                slave,
                &mut b,
                None,
                slave_progress,
                &mut outcome,
            );
            finish_run(result, &mut b, outcome)
        });
        let master_result = run(Role::Master, master, &mut a, Some(settings));
        drop(a);
        let slave_result = slave_thread
            .join()
            .map_err(|_| Error::temp("the slave brain panicked"))?;
        // When the slave failed, its own error is the cause; the master only saw the echo.
        let slave_outcome = slave_result?;
        let mut outcome = master_result?;
        outcome.errors.extend(slave_outcome.errors);
        if let Some(code) = slave_outcome.exit {
            outcome.exit = Some(outcome.exit.unwrap_or(ExitCode::Ok).worst(code));
        }
        outcome.changed_during_sync |= slave_outcome.changed_during_sync;
        outcome.saved += slave_outcome.saved;
        outcome.expunged += slave_outcome.expunged;
        outcome.flag_changes += slave_outcome.flag_changes;
        outcome.bytes += slave_outcome.bytes;
        // The slave's saves are counted above: what the master sent is the same mail.
        outcome.sent = 0;
        Ok(outcome)
    })
}

/// A body that remembers whether reading it failed, to tell an unreadable message (skip it)
/// from a failing destination (stop).
struct WatchedBody {
    inner: Box<dyn MailBody>,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct WatchedReader {
    inner: Box<dyn std::io::Read + Send>,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl WatchedBody {
    fn new(inner: Box<dyn MailBody>) -> WatchedBody {
        WatchedBody {
            inner,
            failed: Default::default(),
        }
    }

    fn read_failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl MailBody for WatchedBody {
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        match self.inner.open() {
            Ok(inner) => Ok(Box::new(WatchedReader {
                inner,
                failed: self.failed.clone(),
            })),
            Err(e) => {
                self.failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
        }
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

impl std::io::Read for WatchedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = self.inner.read(buf);
        if r.is_err() {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

/// Receives records of one kind up to the end of the list; `pick` returns what is not of
/// that kind.
fn recv_list<T>(
    link: &mut dyn Link,
    kind: &str,
    pick: impl Fn(Record) -> std::result::Result<T, Record>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    loop {
        match link.recv()? {
            Record::End => return Ok(out),
            r => out.push(pick(r).map_err(|r| unexpected(r, kind))?),
        }
    }
}

/// The error for a record that should not come now. A finish record in the middle carries
/// the other side's failure, which is the one worth reporting.
fn unexpected(r: Record, expected: &str) -> Error {
    match r {
        Record::Finish(f) => remote_failure(&f),
        r => protocol(format!("expected {expected}, got {}", r.letter())),
    }
}

/// Dovecot's `enum mail_error` numbers carry the exit code across the link.
pub fn mail_error_of(code: ExitCode) -> u32 {
    match code {
        ExitCode::Ok | ExitCode::Changed => 0,
        ExitCode::TempFail => 1,
        ExitCode::NoPerm => 5,
        ExitCode::NotFound | ExitCode::NoUser => 7,
        ExitCode::DataErr => 12,
        _ => 3,
    }
}

fn remote_failure(f: &Finish) -> Error {
    let msg = format!(
        "the other side failed: {}",
        f.error.as_deref().unwrap_or("no reason given")
    );
    match f.mail_error {
        5 => Error::Permission(msg),
        7 => Error::NotFound(msg),
        3 | 4 | 8 | 11 | 12 | 13 => Error::Data(msg),
        _ => Error::Temp(msg),
    }
}

fn protocol(msg: String) -> Error {
    Error::data(format!("dsync protocol error: {msg}"))
}

/// Runs one brain to the end. The master passes its settings; the slave receives them.
pub fn run(
    role: Role,
    store: &mut dyn Store,
    link: &mut dyn Link,
    settings: Option<Settings>,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let result = run_inner(role, store, link, settings, None, &mut outcome);
    finish_run(result, link, outcome)
}

/// A failed brain tells its peer, so that it ends instead of hanging.
fn finish_run(result: Result<()>, link: &mut dyn Link, outcome: Outcome) -> Result<Outcome> {
    if let Err(e) = result {
        // Tell a waiting peer, so it ends instead of hanging.
        let _ = link.send(Record::Finish(Finish {
            error: Some(e.to_string()),
            mail_error: mail_error_of(e.exit_code()),
            require_full_resync: false,
            dry_run: None,
        }));
        return Err(e);
    }
    Ok(outcome)
}

fn handshake_of(settings: &Settings) -> Handshake {
    let (backup_send, backup_recv, no_backup_overwrite) = match settings.mode {
        Mode::TwoWay => (false, false, false),
        Mode::Backup {
            source: Role::Master,
        } => (true, false, false),
        Mode::Backup {
            source: Role::Slave,
        } => (false, true, false),
        Mode::OneWay {
            source: Role::Master,
        } => (true, false, true),
        Mode::OneWay {
            source: Role::Slave,
        } => (false, true, true),
    };
    Handshake {
        hostname: hostname(),
        ns_prefix: None,
        sync_type: settings.sync_type,
        backup_send,
        backup_recv,
        no_backup_overwrite,
        sync_boxes: settings.mailboxes.clone(),
        exclude_mailboxes: settings.excludes.clone(),
        lock_timeout: settings.lock_timeout,
        sync_box_guid: settings.filter.box_guid.unwrap_or(Guid128::ZERO),
        no_mail_sync: settings.filter.no_mail_sync,
        sync_since_timestamp: settings.filter.since,
        sync_until_timestamp: settings.filter.until,
        sync_max_size: settings.filter.max_size,
        sync_flags: settings.filter.flag.clone(),
        alt_char: Some(settings.alt_char),
        virtual_all_box: settings.virtual_all_box.clone(),
        // Asked for by the transport that carries a remote dry run (boxsync_transport::dry_run).
        dry_run: false,
    }
}

/// Two boxsync ends name mailboxes under their namespace prefixes: when those differ, one
/// side's `Mail/Sent` is a new mailbox to the other, so both stop before the trees meet. (A
/// Dovecot peer does not say; it must be configured alike.)
fn check_namespace(store: &dyn Store, peer: &Handshake) -> Result<()> {
    let Some(theirs) = &peer.ns_prefix else {
        return Ok(());
    };
    let mine = store.namespace_prefix();
    if !boxsync_store::namespace::same_prefix(&mine, theirs) {
        return Err(Error::Config(format!(
            "the namespace prefixes differ: {mine:?} here, {theirs:?} on the other side (give \
             both sides the same namespace settings)"
        )));
    }
    Ok(())
}

/// The settings a slave takes from the master's handshake.
pub fn settings_of(h: &Handshake) -> Settings {
    let source = if h.backup_send {
        Some(Role::Master)
    } else if h.backup_recv {
        Some(Role::Slave)
    } else {
        None
    };
    let mode = match (source, h.no_backup_overwrite) {
        (None, _) => Mode::TwoWay,
        (Some(source), false) => Mode::Backup { source },
        (Some(source), true) => Mode::OneWay { source },
    };
    Settings {
        mode,
        sync_type: h.sync_type,
        state: None,
        mailboxes: h.sync_boxes.clone(),
        excludes: h.exclude_mailboxes.clone(),
        lock_timeout: h.lock_timeout,
        filter: Filter {
            box_guid: (!h.sync_box_guid.is_zero()).then_some(h.sync_box_guid),
            no_mail_sync: h.no_mail_sync,
            since: h.sync_since_timestamp,
            until: h.sync_until_timestamp,
            max_size: h.sync_max_size,
            flag: h.sync_flags.clone(),
        },
        // A master that sends none (an old Dovecot) leaves us Dovecot's default.
        alt_char: h.alt_char.unwrap_or(boxsync_model::name::DEFAULT_ALT_CHAR),
        virtual_all_box: h.virtual_all_box.clone(),
        progress: None,
    }
}

fn run_inner(
    role: Role,
    store: &mut dyn Store,
    link: &mut dyn Link,
    settings: Option<Settings>,
    slave_progress: Option<progress::ProgressHandle>,
    outcome: &mut Outcome,
) -> Result<()> {
    // Handshake.
    let peer_host;
    let mut settings = match (role, settings) {
        (Role::Master, Some(s)) => {
            let mut mine = handshake_of(&s);
            mine.ns_prefix = Some(store.namespace_prefix());
            link.send(Record::Handshake(Box::new(mine)))?;
            match link.recv()? {
                Record::Handshake(h) => {
                    check_namespace(store, &h)?;
                    peer_host = h.hostname;
                    s
                }
                r => return Err(unexpected(r, "handshake")),
            }
        }
        _ => {
            let mut mine = Handshake::plain(hostname());
            mine.ns_prefix = Some(store.namespace_prefix());
            link.send(Record::Handshake(Box::new(mine)))?;
            match link.recv()? {
                Record::Handshake(h) => {
                    check_namespace(store, &h)?;
                    peer_host = h.hostname.clone();
                    Settings {
                        progress: slave_progress,
                        ..settings_of(&h)
                    }
                }
                r => return Err(unexpected(r, "handshake")),
            }
        }
    };
    // -l: the side whose host name sorts lower locks the user (the master when they are
    // equal), as Dovecot decides, so that exactly one lock guards the pair.
    let my_host = hostname();
    let _lock = if settings.lock_timeout > 0
        && (my_host < peer_host || (my_host == peer_host && role == Role::Master))
    {
        Some(store.lock_sync(std::time::Duration::from_secs(u64::from(
            settings.lock_timeout,
        )))?)
    } else {
        None
    };

    // States from the last sync.
    let mut states: HashMap<Guid128, MailboxState> = HashMap::new();
    if settings.sync_type == SyncType::State {
        if role == Role::Master {
            for s in settings.state.take().unwrap_or_default() {
                states.insert(s.mailbox_guid, s);
                link.send(Record::State(s))?;
            }
            link.send(Record::End)?;
        } else {
            let received = recv_list(link, "state", |r| match r {
                Record::State(s) => Ok(s),
                r => Err(r),
            })?;
            states.extend(received.into_iter().map(|s| (s.mailbox_guid, s)));
        }
    }

    // Trees.
    let mine = local_tree(store, &settings);
    for n in &mine.nodes {
        link.send(Record::Node(n.clone()))?;
    }
    link.send(Record::End)?;
    link.send(Record::Deletes(mine.deletes.clone()))?;
    let mut theirs = tree::TreeSide::default();
    loop {
        match link.recv()? {
            Record::Node(n) => {
                if !n.mailbox_guid.is_zero()
                    && theirs
                        .nodes
                        .iter()
                        .any(|o| o.mailbox_guid == n.mailbox_guid)
                {
                    return Err(protocol(format!(
                        "remote sent duplicate mailbox GUID {}",
                        n.mailbox_guid
                    )));
                }
                theirs.nodes.push(n)
            }
            Record::End => break,
            r => return Err(unexpected(r, "tree node")),
        }
    }
    match link.recv()? {
        Record::Deletes(d) => theirs.deletes = d,
        r => return Err(unexpected(r, "deletes")),
    }
    let alt = settings.alt_char;
    for (from, to) in tree::repair_names(&mut theirs.nodes, alt, |n| store.fix_name(n, alt)) {
        tracing::debug!("the other side's mailbox {from:?} is {to:?} here (alt char {alt:?})");
    }
    let (master_tree, slave_tree) = if role == Role::Master {
        (&mine, &theirs)
    } else {
        (&theirs, &mine)
    };
    let plan = tree::plan(master_tree, slave_tree, settings.mode);
    apply_tree(role, store, &plan, &settings, outcome);

    // Mailboxes, in the master's order.
    let protected = match settings.mode {
        Mode::Backup { source } | Mode::OneWay { source } => Some(source),
        Mode::TwoWay => None,
    };
    let dest_skips = |guid: &Guid128| protected.is_some() && plan.dest_skip.contains(guid);
    // A -1 destination keeps mailboxes the source never had: the source ignores them, as
    // dsync does, rather than failing to open them.
    let my_record = |store: &dyn Store, guid: Guid128| {
        let mut r = mailbox_record(store, guid);
        if r.mailbox_lost && protected == Some(role) {
            r.mailbox_lost = false;
            r.mailbox_ignore = true;
        }
        r
    };
    if role == Role::Master {
        // -g "": the mailbox list only.
        let boxes = if settings.filter.no_mail_sync {
            &[][..]
        } else {
            &plan.boxes[..]
        };
        let progress = settings.progress.clone();
        for (position, b) in boxes.iter().enumerate() {
            if dest_skips(&b.guid) {
                continue;
            }
            if let Some(p) = &progress {
                p.sink.mailbox_started(&b.name, position + 1, boxes.len());
            }
            let mine = my_record(store, b.guid);
            link.send(Record::Mailbox(mine.clone()))?;
            let theirs = match link.recv()? {
                Record::Mailbox(r) => r,
                r => return Err(unexpected(r, "mailbox")),
            };
            sync_mailbox(
                role, store, link, &settings, &states, &b.name, &mine, &theirs, outcome,
            )?;
            if let Some(p) = &progress {
                p.sink.mailbox_finished();
            }
        }
        flush_store(store, outcome)?;
        link.send(Record::End)?;
        match link.recv()? {
            Record::Finish(f) => {
                if f.error.is_some() {
                    // In one process the slave's own outcome carries these errors; over a
                    // link they are all the master learns.
                    let e = remote_failure(&f);
                    outcome.exit = Some(outcome.exit.unwrap_or(ExitCode::Ok).worst(e.exit_code()));
                    outcome.remote_error = Some(e.to_string());
                }
            }
            r => return Err(unexpected(r, "finish")),
        }
    } else {
        loop {
            match link.recv()? {
                Record::Mailbox(theirs) => {
                    let name = plan
                        .boxes
                        .iter()
                        .find(|b| b.guid == theirs.mailbox_guid)
                        .map(|b| b.name.clone());
                    let mine = my_record(store, theirs.mailbox_guid);
                    link.send(Record::Mailbox(mine.clone()))?;
                    let name = name.unwrap_or_else(MailboxName::inbox);
                    sync_mailbox(
                        role, store, link, &settings, &states, &name, &theirs, &mine, outcome,
                    )?;
                }
                Record::End => break,
                r => return Err(unexpected(r, "mailbox")),
            }
        }
        flush_store(store, outcome)?;
        let error = (!outcome.errors.is_empty()).then(|| outcome.errors.join("; "));
        let mail_error = mail_error_of(outcome.exit.unwrap_or(ExitCode::Ok));
        link.send(Record::Finish(Finish {
            error,
            mail_error,
            require_full_resync: false,
            dry_run: None,
        }))?;
    }
    Ok(())
}

/// Makes what the store's writers left waiting durable, before the master gives out a state
/// and before the slave reports that it is done.
fn flush_store(store: &mut dyn Store, outcome: &mut Outcome) -> Result<()> {
    let report = store.flush()?;
    outcome.changed_during_sync |= report.changed_during_sync;
    Ok(())
}

fn local_tree(store: &dyn Store, settings: &Settings) -> tree::TreeSide {
    let t = store.tombstones();
    let nodes = store
        .mailboxes()
        .into_iter()
        .filter(|m| selected(settings, &m.name) && guid_selected(settings, m.guid))
        .map(|m| TreeNode {
            name: m.name,
            existence: Existence::Exists,
            mailbox_guid: m.guid,
            uid_validity: m.uidvalidity,
            uid_next: m.uidnext,
            last_renamed_or_created: m.last_renamed_or_created,
            subscribed: m.subscribed,
            last_subscription_change: m.last_subscription_change,
        })
        .collect::<Vec<_>>();
    let mut nodes = nodes;
    for name in store.broken_mailboxes() {
        nodes.push(TreeNode {
            name,
            existence: Existence::Nonexistent,
            mailbox_guid: Guid128::ZERO,
            uid_validity: 0,
            uid_next: 0,
            last_renamed_or_created: 0,
            subscribed: false,
            last_subscription_change: 0,
        });
    }
    tree::TreeSide {
        nodes,
        deletes: Deletes {
            mailboxes: t.mailboxes,
            dirs: Vec::new(),
            unsubscribes: t.unsubscribes,
        },
    }
}

fn record_error(outcome: &mut Outcome, e: Error) {
    outcome.exit = Some(outcome.exit.unwrap_or(ExitCode::Ok).worst(e.exit_code()));
    outcome.errors.push(e.to_string());
}

/// Changes this side's tree to the planned one: merges, deletes, renames (through temporary
/// names where targets are taken), creates, then subscriptions. Failures are reported and the
/// sync goes on with what exists.
fn apply_tree(
    role: Role,
    store: &mut dyn Store,
    plan: &tree::TreePlan,
    settings: &Settings,
    outcome: &mut Outcome,
) {
    let mode = settings.mode;
    // Mailboxes outside -m/-x, and ones a side could not read, are not this sync's business.
    // -g: the other mailboxes are not in either tree, and not this sync's business either.
    let other_boxes: Vec<MailboxName> = match settings.filter.box_guid {
        Some(_) => store
            .mailboxes()
            .into_iter()
            .filter(|m| !guid_selected(settings, m.guid))
            .map(|m| m.name)
            .collect(),
        None => Vec::new(),
    };
    let other_box = |name: &MailboxName| other_boxes.contains(name);
    let leave_alone = |name: &MailboxName| {
        !selected(settings, name) || other_box(name) || plan.untouchable.contains(name)
    };
    let protected = match mode {
        Mode::Backup { source } | Mode::OneWay { source } => source == role,
        Mode::TwoWay => false,
    };
    if protected {
        return;
    }
    for (old, new) in &plan.guid_merges {
        if store.mailboxes().iter().any(|m| m.guid == *old)
            && let Err(e) = store.change_mailbox_guid(*old, *new)
        {
            record_error(outcome, e);
        }
    }
    let wanted: HashMap<Guid128, &tree::FinalBox> =
        plan.boxes.iter().map(|b| (b.guid, b)).collect();
    let skip_create = matches!(mode, Mode::OneWay { .. });
    for m in store.mailboxes() {
        let kept_by_one_way_destination = skip_create && plan.dest_skip.contains(&m.guid);
        if !wanted.contains_key(&m.guid) && !kept_by_one_way_destination && !leave_alone(&m.name) {
            if m.name.is_inbox() && !matches!(mode, Mode::Backup { .. }) {
                continue;
            }
            if let Err(e) = store.delete_mailbox(m.guid) {
                record_error(outcome, e);
            }
        }
    }
    // Renames: first out of the way of each other, then into place.
    let mut moving = Vec::new();
    for m in store.mailboxes() {
        if let Some(b) = wanted.get(&m.guid)
            && b.name != m.name
        {
            moving.push((m.guid, m.name.clone(), b.name.clone()));
        }
    }
    let taken =
        |store: &dyn Store, name: &MailboxName| store.mailboxes().iter().any(|m| &m.name == name);
    for (guid, _, to) in &moving {
        let result = if taken(store, to) {
            let tmp = MailboxName::from_parts([format!("boxsync-rename-{guid}")]);
            tmp.and_then(|t| store.rename_mailbox(*guid, &t))
        } else {
            store.rename_mailbox(*guid, to)
        };
        if let Err(e) = result {
            record_error(outcome, e);
        }
    }
    for (guid, _, to) in &moving {
        let at = store
            .mailboxes()
            .into_iter()
            .find(|m| m.guid == *guid)
            .map(|m| m.name);
        if at.as_ref().is_some_and(|n| n != to)
            && let Err(e) = store.rename_mailbox(*guid, to)
        {
            record_error(outcome, e);
        }
    }
    let have: Vec<_> = store.mailboxes();
    // Parents before their children: a store where a folder cannot both hold mail and have
    // sub-folders (mbox) then refuses the child, whatever the GUIDs' order.
    let mut by_name: Vec<_> = plan.boxes.iter().collect();
    by_name.sort_by(|a, b| a.name.parts().cmp(b.name.parts()));
    for b in by_name {
        if plan.dest_skip.contains(&b.guid) {
            continue;
        }
        if !have.iter().any(|m| m.guid == b.guid) {
            if let Some(existing) = have.iter().find(|m| m.name == b.name) {
                // The name is held by a mailbox the plan did not expect (INBOX cannot be
                // deleted): take it over with the agreed GUID.
                if let Err(e) = store.change_mailbox_guid(existing.guid, b.guid) {
                    record_error(outcome, e);
                }
            } else if let Err(e) = store.create_mailbox(&b.name, b.guid, b.uidvalidity) {
                record_error(outcome, e);
            }
        }
    }
    for b in &plan.boxes {
        if let Some(m) = store.mailboxes().into_iter().find(|m| m.guid == b.guid)
            && m.subscribed != b.subscribed
            && let Err(e) = store.set_subscribed(&b.name, b.subscribed)
        {
            record_error(outcome, e);
        }
    }
}

fn mailbox_record(store: &dyn Store, guid: Guid128) -> MailboxRecord {
    match store.mailboxes().into_iter().find(|m| m.guid == guid) {
        Some(m) => MailboxRecord {
            mailbox_guid: guid,
            uid_validity: m.uidvalidity,
            uid_next: m.uidnext,
            messages_count: m.messages,
            first_recent_uid: m.uidnext,
            highest_modseq: m.highest_modseq,
            highest_pvt_modseq: 0,
            mailbox_lost: false,
            mailbox_ignore: false,
            content_digest: Some(m.digest),
        },
        None => MailboxRecord {
            mailbox_guid: guid,
            mailbox_lost: true,
            ..Default::default()
        },
    }
}

/// A message as this side holds it: GUID, flags, keywords, flags of the last sync.
type LocalMessage = (String, Flags, Keywords, Option<(Flags, Keywords)>);

fn matches_state(b: &MailboxRecord, s: &MailboxState) -> bool {
    b.uid_validity == s.last_uidvalidity
        && b.uid_next.saturating_sub(1) == s.last_common_uid
        && b.highest_modseq == s.last_common_modseq
        && b.messages_count == s.last_messages_count
}

fn can_continue_from(b: &MailboxRecord, s: &MailboxState) -> bool {
    b.uid_validity == s.last_uidvalidity
        && b.uid_next.saturating_sub(1) >= s.last_common_uid
        && b.highest_modseq >= s.last_common_modseq
}

/// This side's `C` list: every message (or, from a state, those changed since) and the journal.
fn export_changes(
    store: &dyn Store,
    guid: Guid128,
    since: Option<&MailboxState>,
    filter: &Filter,
) -> Result<Vec<MailChange>> {
    let (lcu, lcm) = since.map_or((0, 0), |s| (s.last_common_uid, s.last_common_modseq));
    let mut out = Vec::new();
    for m in store.messages(guid)? {
        if since.is_none() || m.uid > lcu || m.modseq > lcm {
            out.push(filter_fields(
                store,
                guid,
                m,
                filter,
                mails::change_record(
                    m.uid,
                    &m.guid,
                    m.flags,
                    &m.keywords,
                    m.modseq,
                    m.base.as_ref(),
                ),
            )?);
        }
    }
    for e in store.expunged_since(guid, lcm)? {
        out.push(MailChange {
            change_type: ChangeType::Expunge,
            uid: e.uid,
            guid: e.guid,
            modseq: e.modseq,
            add_flags: Flags::EMPTY,
            remove_flags: Flags::EMPTY,
            final_flags: Flags::EMPTY,
            keywords_reset: false,
            keyword_changes: Vec::new(),
            received_timestamp: 0,
            virtual_size: 0,
        });
    }
    Ok(out)
}

/// Adds what the filters look at to a `C` record: the received date and the virtual size, as
/// Dovecot's exporter does only when a filter needs them (reading them may mean a stat or
/// reading the whole body).
fn filter_fields(
    store: &dyn Store,
    mailbox: Guid128,
    m: &boxsync_store::Message,
    filter: &Filter,
    mut c: MailChange,
) -> Result<MailChange> {
    if !filter.needs_received() && !filter.needs_size() {
        return Ok(c);
    }
    let body = store.body(mailbox, m.uid)?;
    if filter.needs_received() {
        let received = if m.received != 0 {
            m.received
        } else {
            body.received().unwrap_or(0)
        };
        // Dovecot sends 1 for an unknown date: 0 would mean "not sent".
        c.received_timestamp = received.max(1);
    }
    if filter.needs_size() {
        c.virtual_size = virtual_size(&*body)
            .map_err(|e| Error::temp(format!("reading UID {} for its size: {e}", m.uid)))?;
    }
    Ok(c)
}

/// The size with CRLF line ends (IMAP's RFC822.SIZE), which `-I` compares.
fn virtual_size(body: &dyn boxsync_proto::MailBody) -> std::io::Result<u64> {
    use std::io::Read;
    let mut r = body.open()?;
    let mut buf = [0u8; 64 * 1024];
    let (mut size, mut prev) = (0u64, 0u8);
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(size);
        }
        for &b in &buf[..n] {
            if b == b'\n' && prev != b'\r' {
                size += 1;
            }
            size += 1;
            prev = b;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sync_mailbox(
    role: Role,
    store: &mut dyn Store,
    link: &mut dyn Link,
    settings: &Settings,
    states: &HashMap<Guid128, MailboxState>,
    name: &MailboxName,
    master_b: &MailboxRecord,
    slave_b: &MailboxRecord,
    outcome: &mut Outcome,
) -> Result<()> {
    let guid = master_b.mailbox_guid;
    let mine = if role == Role::Master {
        master_b
    } else {
        slave_b
    };
    if master_b.mailbox_lost
        || slave_b.mailbox_lost
        || master_b.mailbox_ignore
        || slave_b.mailbox_ignore
    {
        if mine.mailbox_lost {
            // Its creation failed (and was reported) or it vanished during the sync.
            tracing::debug!("mailbox {name} ({guid}) is missing on this side");
            outcome.changed_during_sync = true;
        }
        return Ok(());
    }
    let state = states.get(&guid);
    let same = |a: &MailboxRecord, b: &MailboxRecord| {
        a.uid_validity == b.uid_validity
            && a.uid_next == b.uid_next
            && a.messages_count == b.messages_count
            && a.highest_modseq == b.highest_modseq
            && (a.content_digest.is_none()
                || b.content_digest.is_none()
                || a.content_digest == b.content_digest)
    };
    // A peer without the content digest is Dovecot: both sides must take the same decision,
    // so follow its rule (dsync_boxes_need_sync): skip only a fast sync whose six counters
    // are all equal.
    let dovecot_peer = master_b.content_digest.is_none() || slave_b.content_digest.is_none();
    if dovecot_peer && !matches!(settings.mode, Mode::TwoWay) {
        // Dovecot's backup conversation is one-sided (the receiver sends no changes), which
        // these brains do not speak yet: stop before anything is written rather than wait.
        return Err(Error::data(
            "backup and sync -1 with Dovecot's dsync on the other end are not supported yet \
             (two-way sync is); run boxsync on both ends for a backup",
        ));
    }
    let skip = match (settings.sync_type, state) {
        (SyncType::Full, _) => false,
        (SyncType::State, _) if dovecot_peer => false,
        (SyncType::State, Some(s)) => matches_state(master_b, s) && matches_state(slave_b, s),
        _ if dovecot_peer => {
            same(master_b, slave_b)
                && master_b.first_recent_uid == slave_b.first_recent_uid
                && master_b.highest_pvt_modseq == slave_b.highest_pvt_modseq
        }
        _ => same(master_b, slave_b),
    };
    if skip {
        // Both sides hold the same flags: that is the base the next per-flag merge needs.
        store.record_agreed_flags(guid)?;
        if role == Role::Master {
            outcome.state.push(state_after(guid, master_b, slave_b));
        }
        return Ok(());
    }
    let incremental = match (settings.sync_type, state) {
        (SyncType::State, Some(s)) => {
            can_continue_from(master_b, s) && can_continue_from(slave_b, s)
        }
        _ => false,
    };
    let since = if incremental { state } else { None };
    if settings.sync_type == SyncType::State
        && state.is_some()
        && !incremental
        && role == Role::Master
    {
        tracing::warn!(
            "mailbox {name}: the saved state is older than the mailbox, doing a full sync of it"
        );
    }

    // A: mailbox attributes. boxsync keeps none, but Dovecot's conversation has an attribute
    // list before the changes, so both sides send an empty one and skip what they receive.
    link.send(Record::End)?;
    recv_list(link, "attribute list end", Err::<(), _>)?;

    // C: both lists. A stateful backup's source reads the destination's list first: mail the
    // destination lost since the last sync is unchanged on the source, so not in its list,
    // and the source adds it (with its flags) for the destination to take again.
    store.load(guid)?;
    let lcu = since.map_or(0, |s| s.last_common_uid);
    let source_first =
        since.is_some() && matches!(settings.mode, Mode::Backup { source } if source == role);
    let mut my_changes = export_changes(store, guid, since, &settings.filter)?;
    if !source_first {
        for c in &my_changes {
            link.send(Record::Change(c.clone()))?;
        }
        link.send(Record::End)?;
    }
    let their_changes = recv_list(link, "change", |r| match r {
        Record::Change(c) => Ok(c),
        r => Err(r),
    })?;
    if source_first {
        let lost: std::collections::HashSet<Uid> = their_changes
            .iter()
            .filter(|c| c.change_type == ChangeType::Expunge && c.uid <= lcu)
            .map(|c| c.uid)
            .collect();
        let listed: std::collections::HashSet<Uid> = my_changes
            .iter()
            .filter(|c| c.change_type != ChangeType::Expunge)
            .map(|c| c.uid)
            .collect();
        for m in store.messages(guid)? {
            if lost.contains(&m.uid) && !listed.contains(&m.uid) {
                my_changes.push(filter_fields(
                    store,
                    guid,
                    m,
                    &settings.filter,
                    mails::change_record(
                        m.uid,
                        &m.guid,
                        m.flags,
                        &m.keywords,
                        m.modseq,
                        m.base.as_ref(),
                    ),
                )?);
            }
        }
        for c in &my_changes {
            link.send(Record::Change(c.clone()))?;
        }
        link.send(Record::End)?;
    }
    let mine_side = SideChanges::new(my_changes, mine.uid_next);
    let theirs_b = if role == Role::Master {
        slave_b
    } else {
        master_b
    };
    let their_flags: HashMap<Uid, (Flags, Keywords)> = their_changes
        .iter()
        .filter(|c| c.change_type != ChangeType::Expunge)
        .map(|c| {
            let kws = c.final_keywords().map(str::to_owned).collect();
            (c.uid, (c.final_flags, kws))
        })
        .collect();
    let theirs_side = SideChanges::new(their_changes, theirs_b.uid_next);
    let (ms, ss) = if role == Role::Master {
        (&mine_side, &theirs_side)
    } else {
        (&theirs_side, &mine_side)
    };
    let plan = mails::plan_filtered(ms, ss, settings.mode, lcu, &|c| settings.filter.wants(c));
    let my_actions = &plan.actions[role.index()];

    // Decisions both sides make the same way.
    let source = match settings.mode {
        Mode::Backup { source } | Mode::OneWay { source } => Some(source),
        Mode::TwoWay => None,
    };
    let uidvalidity = match source {
        Some(Role::Master) => master_b.uid_validity,
        Some(Role::Slave) => slave_b.uid_validity,
        None => {
            if master_b.uid_validity == slave_b.uid_validity {
                master_b.uid_validity
            } else if master_b.messages_count != slave_b.messages_count {
                if master_b.messages_count > slave_b.messages_count {
                    master_b.uid_validity
                } else {
                    slave_b.uid_validity
                }
            } else {
                master_b.uid_validity.max(slave_b.uid_validity)
            }
        }
    };
    let max_h = master_b.highest_modseq.max(slave_b.highest_modseq);
    let new_h: Modseq = match settings.mode {
        Mode::Backup { source } => {
            if source == Role::Master {
                master_b.highest_modseq
            } else {
                slave_b.highest_modseq
            }
        }
        _ => max_h + u64::from(!plan.is_empty()),
    };

    // R: what I need from the other side.
    // A stateful -1 lists only what changed since the last sync, so a new mail of the source
    // may be one this side has had all along under another UID (-1 syncs both ways part the
    // two sides' UIDs), which a full list would have linked: it is not copied again.
    let already: std::collections::HashSet<String> =
        if matches!(settings.mode, Mode::OneWay { .. }) && since.is_some() {
            store
                .messages(guid)?
                .iter()
                .map(|m| m.guid.clone())
                .collect()
        } else {
            Default::default()
        };
    let mut wanted: BTreeMap<Uid, Vec<(Uid, String, Flags, Keywords)>> = BTreeMap::new();
    for a in my_actions {
        if let Action::Save {
            uid,
            from,
            guid,
            flags,
            keywords,
        } = a
            && !already.contains(guid)
        {
            wanted
                .entry(*from)
                .or_default()
                .push((*uid, guid.clone(), *flags, keywords.clone()));
        }
    }
    let local_copies = copies_from_all_box(store, guid, settings, &mut wanted)?;
    if !local_copies.is_empty() {
        tracing::info!(
            "mailbox {name}: {} messages copied from {} instead of from the other side",
            local_copies.len(),
            settings.virtual_all_box.as_deref().unwrap_or_default()
        );
    }
    for (from, saves) in &wanted {
        link.send(Record::Request(MailRequest {
            guid: saves[0].1.clone(),
            uid: *from,
        }))?;
    }
    link.send(Record::End)?;
    let requests = recv_list(link, "request", |r| match r {
        Record::Request(r) => Ok(r),
        r => Err(r),
    })?;
    // M: answer theirs.
    let my_messages: HashMap<Uid, &boxsync_store::Message> =
        store.messages(guid)?.iter().map(|m| (m.uid, m)).collect();
    let mut answers = Vec::with_capacity(requests.len());
    for r in &requests {
        let found = my_messages
            .get(&r.uid)
            .filter(|m| m.guid == r.guid)
            .map(|m| (m.pop3_uidl.clone(), m.pop3_order));
        let body = match found {
            Some(_) => Some(store.body(guid, r.uid)?),
            None => None,
        };
        let (pop3_uidl, pop3_order) = found.unwrap_or((None, None));
        let body = match (body, &settings.progress) {
            (Some(b), Some(p)) if p.counts_sends => {
                Some(Box::new(progress::CountedBody::new(b, p.sink.clone())) as Box<dyn MailBody>)
            }
            (body, _) => body,
        };
        let received_date = body.as_ref().and_then(|b| b.received()).unwrap_or(0);
        answers.push(Mail {
            guid: r.guid.clone(),
            uid: r.uid,
            pop3_uidl,
            pop3_order,
            received_date,
            saved_date: 0,
            body,
        });
    }
    drop(my_messages);
    if role == Role::Master
        && let Some(p) = &settings.progress
    {
        let to_send = answers.iter().filter(|a| a.body.is_some()).count();
        p.sink.planned((wanted.len() + to_send) as u64);
    }
    for a in answers {
        if a.body.is_some() {
            outcome.sent += 1;
        }
        link.send(Record::Mail(a))?;
    }
    link.send(Record::End)?;

    // Apply my half.
    let protected = source == Some(role);
    let writes_needed = !protected
        && (!my_actions.is_empty()
            || !wanted.is_empty()
            || !local_copies.is_empty()
            || mine.uid_validity != uidvalidity
            || mine.uid_next != plan.uidnext
            || mine.highest_modseq != new_h);
    let local: HashMap<Uid, LocalMessage> = store
        .messages(guid)?
        .iter()
        .map(|m| {
            (
                m.uid,
                (m.guid.clone(), m.flags, m.keywords.clone(), m.base.clone()),
            )
        })
        .collect();
    let header = HeaderUpdate {
        uidvalidity,
        uidnext: plan.uidnext,
        highest_modseq: new_h,
        change_modseq: new_h,
    };
    let mut report = boxsync_store::WriteReport::default();
    if writes_needed {
        let mut writer = store.writer(guid, header)?;
        for (saves, body) in local_copies {
            let body = WatchedBody::new(body);
            let origin = Origin {
                received: body.received().unwrap_or(0),
                pop3_uidl: None,
                pop3_order: None,
            };
            save_instances(&mut *writer, &saves, &body, &origin, outcome, |e| {
                Error::data(format!("mailbox {name}: copying from the all mailbox: {e}"))
            })?;
        }
        let mut received_mail = 0usize;
        loop {
            match link.recv()? {
                Record::Mail(mail) => {
                    received_mail += 1;
                    // Dovecot names a mail by its GUID alone and leaves the UID unset.
                    let saves = if mail.uid == 0 {
                        wanted.values().find(|s| s[0].1 == mail.guid)
                    } else {
                        wanted.get(&mail.uid)
                    };
                    let Some(saves) = saves else {
                        return Err(protocol(format!(
                            "remote sent mail UID {} ({}) that was not requested",
                            mail.uid, mail.guid
                        )));
                    };
                    let Some(body) = mail.body else {
                        // Expunged on the other side meanwhile.
                        outcome.changed_during_sync = true;
                        continue;
                    };
                    let (body, finisher) = match &settings.progress {
                        Some(p) => {
                            let counted = progress::CountedBody::new(body, p.sink.clone());
                            let finisher = counted.finisher();
                            (WatchedBody::new(Box::new(counted)), Some(finisher))
                        }
                        None => (WatchedBody::new(body), None),
                    };
                    let origin = Origin {
                        received: mail.received_date,
                        pop3_uidl: mail.pop3_uidl,
                        pop3_order: mail.pop3_order,
                    };
                    let read_error = |e| {
                        let what = format!(
                            "mailbox {name}: reading UID {}{} on the other side",
                            mail.uid,
                            body.local_path()
                                .map(|p| format!(" ({})", p.display()))
                                .unwrap_or_default()
                        );
                        match e {
                            Error::Io { source, .. } => Error::io(what, source),
                            e => Error::data(format!("{what}: {e}")),
                        }
                    };
                    let all_saved =
                        save_instances(&mut *writer, saves, &body, &origin, outcome, read_error)?;
                    if all_saved && let Some(f) = finisher {
                        f.finish();
                    }
                }
                Record::End => break,
                r => return Err(unexpected(r, "mail")),
            }
        }
        if received_mail != wanted.len() {
            outcome.changed_during_sync = true;
        }
        // A writer sets flags before it renumbers, and records bases after: the flags of a
        // renumbered message go to its old UID, its base to its new one.
        let moved_from: HashMap<Uid, Uid> = my_actions
            .iter()
            .filter_map(|a| match a {
                Action::Move { from, to } => Some((*to, *from)),
                _ => None,
            })
            .collect();
        for a in my_actions {
            match a {
                Action::Expunge { uid, guid: g } => {
                    if local.get(uid).is_some_and(|l| l.0 == *g) {
                        writer.expunge(*uid);
                    }
                }
                Action::SetFlags {
                    uid,
                    guid: g,
                    flags,
                    keywords,
                } => {
                    let at = moved_from.get(uid).copied().unwrap_or(*uid);
                    if let Some(l) = local.get(&at).filter(|l| l.0 == *g) {
                        if l.1 != *flags || l.2 != *keywords {
                            writer.set_flags(at, *flags, keywords.clone());
                        }
                        // A -1 source keeps its old base, so a destination's base is what
                        // the source has: then next time only what the destination changed
                        // since counts as its change, and the merge comes out the same.
                        let base = match (settings.mode, their_flags.get(uid)) {
                            (Mode::OneWay { .. }, Some(theirs)) => theirs.clone(),
                            _ => (*flags, keywords.clone()),
                        };
                        if l.3.as_ref() != Some(&base) {
                            writer.set_base(*uid, base.0, base.1);
                        }
                    }
                }
                Action::RevertFlags { uid } => {
                    if let Some((_, f, k, Some(base))) = local.get(uid)
                        && (*f, k) != (base.0, &base.1)
                    {
                        writer.set_flags(*uid, base.0, base.1.clone());
                    }
                }
                Action::Move { from, to } => writer.move_uid(*from, *to),
                Action::Save { .. } => {}
            }
        }
        report = writer.finish()?;
    } else {
        loop {
            match link.recv()? {
                Record::Mail(_) => {}
                Record::End => break,
                r => return Err(unexpected(r, "mail")),
            }
        }
    }
    if report.saved + report.expunged + report.flag_changes > 0 {
        tracing::info!(
            "{} mailbox {name}: saved {} ({} bytes), expunged {}, changed flags of {}",
            if role == Role::Master {
                "local"
            } else {
                "destination"
            },
            report.saved,
            report.bytes,
            report.expunged,
            report.flag_changes
        );
    }
    outcome.saved += report.saved;
    outcome.expunged += report.expunged;
    outcome.flag_changes += report.flag_changes;
    outcome.bytes += report.bytes;
    outcome.changed_during_sync |= report.changed_during_sync;

    // S: the state both now share.
    let after = mailbox_record(store, guid);
    let my_state = MailboxState {
        mailbox_guid: guid,
        last_uidvalidity: uidvalidity,
        last_common_uid: after.uid_next.saturating_sub(1),
        last_common_modseq: after.highest_modseq,
        last_common_pvt_modseq: 0,
        last_messages_count: after.messages_count,
    };
    link.send(Record::State(my_state))?;
    let their_state = match link.recv()? {
        Record::State(s) => s,
        r => return Err(unexpected(r, "state")),
    };
    if role == Role::Master {
        let (m, s) = (my_state, their_state);
        outcome.state.push(MailboxState {
            mailbox_guid: guid,
            last_uidvalidity: m.last_uidvalidity,
            last_common_uid: m.last_common_uid.min(s.last_common_uid),
            last_common_modseq: m.last_common_modseq.min(s.last_common_modseq),
            last_common_pvt_modseq: 0,
            last_messages_count: m.last_messages_count.min(s.last_messages_count),
        });
    }
    Ok(())
}

/// What a saved message keeps from where it came from, besides its body.
struct Origin {
    received: i64,
    pop3_uidl: Option<String>,
    pop3_order: Option<u32>,
}

/// Saves every instance (UID, GUID, flags, keywords) of one message from `body`. One
/// unreadable message is that message's problem: it is reported (`read_error` says where it
/// was read), the rest are copied, and the next run tries it again; a failing destination
/// stops the sync. Returns whether every instance was saved.
fn save_instances(
    writer: &mut dyn boxsync_store::MailboxWriter,
    saves: &[(Uid, String, Flags, Keywords)],
    body: &WatchedBody,
    origin: &Origin,
    outcome: &mut Outcome,
    read_error: impl Fn(Error) -> Error,
) -> Result<bool> {
    let mut all_saved = true;
    for (uid, guid, flags, keywords) in saves {
        let meta = boxsync_store::SaveMeta {
            uid: *uid,
            guid: guid.clone(),
            flags: *flags,
            keywords: keywords.clone(),
            received: origin.received,
            pop3_uidl: origin.pop3_uidl.clone(),
            pop3_order: origin.pop3_order,
        };
        match writer.save(meta, body) {
            Ok(()) => writer.set_base(*uid, *flags, keywords.clone()),
            Err(e) if body.read_failed() => {
                record_error(outcome, read_error(e));
                all_saved = false;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(all_saved)
}

/// One message's saves into this mailbox, with the body they come from.
type Copy = (Vec<(Uid, String, Flags, Keywords)>, Box<dyn MailBody>);

/// `-a`: takes out of `wanted` the mail this side's all mailbox has (by GUID), with bodies
/// read from there. Nothing when `-a` is not given, this side has no such mailbox, or it is
/// the mailbox being synced.
fn copies_from_all_box(
    store: &mut dyn Store,
    mailbox: Guid128,
    settings: &Settings,
    wanted: &mut BTreeMap<Uid, Vec<(Uid, String, Flags, Keywords)>>,
) -> Result<Vec<Copy>> {
    let Some(all_name) = &settings.virtual_all_box else {
        return Ok(Vec::new());
    };
    let Some(all) = store
        .mailboxes()
        .into_iter()
        .find(|m| m.name.to_string() == *all_name)
        .map(|m| m.guid)
        .filter(|g| *g != mailbox)
    else {
        return Ok(Vec::new());
    };
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    store.load(all)?;
    let by_guid: HashMap<String, Uid> = store
        .messages(all)?
        .iter()
        .filter(|m| !m.guid.is_empty())
        .map(|m| (m.guid.clone(), m.uid))
        .collect();
    let mut copies = Vec::new();
    let mut taken = Vec::new();
    for (from, saves) in wanted.iter() {
        if let Some(uid) = by_guid.get(&saves[0].1) {
            copies.push((saves.clone(), store.body(all, *uid)?));
            taken.push(*from);
        }
    }
    for from in taken {
        wanted.remove(&from);
    }
    Ok(copies)
}

fn state_after(guid: Guid128, m: &MailboxRecord, s: &MailboxRecord) -> MailboxState {
    MailboxState {
        mailbox_guid: guid,
        last_uidvalidity: m.uid_validity,
        last_common_uid: m.uid_next.min(s.uid_next).saturating_sub(1),
        last_common_modseq: m.highest_modseq.min(s.highest_modseq),
        last_common_pvt_modseq: 0,
        last_messages_count: m.messages_count.min(s.messages_count),
    }
}
