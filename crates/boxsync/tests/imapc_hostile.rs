//! The boxsync binary against a scripted fake IMAP server that misbehaves: a UIDNEXT lower
//! than the UIDs it lists, a body FETCH for a UID nobody asked for, an enormous literal, a
//! connection that dies in the middle of every body, garbage instead of a greeting. Every
//! case must end with a clean result or a clean refusal: the right exit code, a message on
//! stderr that names the server and the problem, no panic, bounded time and memory, a
//! destination Maildir from an earlier good run left as it was (byte for byte but for the
//! uidlist's next UID), and a later good run that brings in what failed.

mod common;
mod support;

use common::{Dir, boxsync};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::tree_bytes;

/// The fake server's UIDVALIDITY (it never changes).
const UIDVALIDITY: u32 = 1_700_000_000;

/// How the fake answers a `UID FETCH n BODY.PEEK[]` for a UID in `hostile_uids`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyMode {
    /// Like a real server.
    Normal,
    /// A FETCH with a body for UID 777, which was never listed or asked for, then OK.
    WrongUid,
    /// `BODY[] {N}` with this N, then nothing more (the connection stays open).
    Huge(u64),
    /// `BODY[] {size}` and half of the body, then the connection is closed.
    Cut,
}

/// What the fake server has and how it behaves.
#[derive(Clone)]
struct Behaviour {
    /// The raw greeting (with CRLF).
    greeting: Vec<u8>,
    /// Capabilities after the greeting and after LOGIN.
    caps: &'static str,
    /// INBOX's messages: (UID, flags, body with CRLF line ends).
    messages: Vec<(u32, &'static str, Vec<u8>)>,
    /// The UIDNEXT that STATUS and SELECT report; `None` says the truth (max UID + 1).
    uidnext: Option<u32>,
    body: BodyMode,
    /// The UIDs whose body fetch follows `body`; the others are answered normally.
    hostile_uids: Vec<u32>,
}

const PLAIN_CAPS: &str = "IMAP4rev1 LITERAL+ UIDPLUS ID NAMESPACE";
const LIST_STATUS_CAPS: &str =
    "IMAP4rev1 LITERAL+ UIDPLUS ID NAMESPACE LIST-EXTENDED LIST-STATUS SPECIAL-USE";

impl Behaviour {
    fn new(caps: &'static str, messages: Vec<(u32, &'static str, Vec<u8>)>) -> Behaviour {
        Behaviour {
            greeting: format!("* OK [CAPABILITY {caps} AUTH=PLAIN] Fake IMAP ready.\r\n")
                .into_bytes(),
            caps,
            messages,
            uidnext: None,
            body: BodyMode::Normal,
            hostile_uids: Vec::new(),
        }
    }

    fn uidnext(&self) -> u32 {
        self.uidnext
            .unwrap_or_else(|| self.messages.iter().map(|m| m.0 + 1).max().unwrap_or(1))
    }
}

/// A fake IMAP server on 127.0.0.1 that serves every connection (each on its own thread)
/// until the test ends, recording every command it got.
struct Fake {
    port: u16,
    connections: Arc<AtomicUsize>,
    commands: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn start(behaviour: Behaviour) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), commands.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                count.fetch_add(1, Ordering::SeqCst);
                let (b, log) = (behaviour.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &b, &log));
            }
        });
        Fake {
            port,
            connections,
            commands,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

/// What the fake does after a command.
enum Reply {
    Send(Vec<u8>),
    /// Sends this, then closes the connection.
    SendAndClose(Vec<u8>),
    /// Sends this, then answers nothing more (discarding what the client sends) until the
    /// client goes away.
    SendAndStall(Vec<u8>),
}

fn serve(stream: TcpStream, b: &Behaviour, log: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    if out.write_all(&b.greeting).is_err() {
        return;
    }
    while let Some(line) = read_command(&mut reader, &mut out) {
        log.lock().unwrap().push(line.clone());
        let (tag, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let upper = rest.to_ascii_uppercase();
        match answer(b, tag, rest, &upper) {
            Reply::Send(bytes) => {
                if out.write_all(&bytes).is_err() || upper.starts_with("LOGOUT") {
                    return;
                }
            }
            Reply::SendAndClose(bytes) => {
                let _ = out.write_all(&bytes);
                let _ = out.shutdown(std::net::Shutdown::Both);
                return;
            }
            Reply::SendAndStall(bytes) => {
                let _ = out.write_all(&bytes);
                // Whatever the client sends now goes unanswered; its closing ends this.
                let mut sink = [0u8; 4096];
                while matches!(reader.get_mut().read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// The fake's answer to one command (`rest` is the command after its tag).
fn answer(b: &Behaviour, tag: &str, rest: &str, upper: &str) -> Reply {
    let caps = b.caps;
    let n = b.messages.len();
    let uidnext = b.uidnext();
    let ok = |text: &str| format!("{tag} OK {text}\r\n").into_bytes();
    let status =
        format!("* STATUS INBOX (MESSAGES {n} UIDNEXT {uidnext} UIDVALIDITY {UIDVALIDITY})\r\n");
    let mut out = Vec::new();
    if upper.starts_with("CAPABILITY") {
        out.extend(format!("* CAPABILITY {caps} AUTH=PLAIN\r\n").bytes());
        out.extend(ok("Capability completed."));
    } else if upper.starts_with("LOGIN") {
        out.extend(ok(&format!("[CAPABILITY {caps}] Logged in")));
    } else if upper.starts_with("ID") {
        out.extend(b"* ID (\"name\" \"Fake\")\r\n");
        out.extend(ok("ID completed."));
    } else if upper.starts_with("NAMESPACE") {
        out.extend(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
        out.extend(ok("Namespace completed."));
    } else if upper.starts_with("LIST") {
        out.extend(b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n");
        if upper.contains("RETURN") && upper.contains("STATUS") {
            out.extend(status.bytes());
        }
        out.extend(ok("List completed."));
    } else if upper.starts_with("LSUB") {
        out.extend(b"* LSUB () \"/\" INBOX\r\n");
        out.extend(ok("Lsub completed."));
    } else if upper.starts_with("STATUS") {
        out.extend(status.bytes());
        out.extend(ok("Status completed."));
    } else if upper.starts_with("SELECT") || upper.starts_with("EXAMINE") {
        out.extend(
            format!(
                "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
                 * {n} EXISTS\r\n* 0 RECENT\r\n\
                 * OK [UIDVALIDITY {UIDVALIDITY}] UIDs valid\r\n\
                 * OK [UIDNEXT {uidnext}] Predicted next UID\r\n"
            )
            .bytes(),
        );
        out.extend(ok("[READ-ONLY] Select completed."));
    } else if let Some(args) = upper.strip_prefix("UID FETCH ") {
        let args = &rest[rest.len() - args.len()..];
        let (set, items) = args.split_once(' ').unwrap_or((args, ""));
        let items_upper = items.to_ascii_uppercase();
        if items_upper.contains("X-GUID") {
            // As a server without Dovecot's extension answers.
            out.extend(
                format!("{tag} BAD Error in IMAP command: Unknown FETCH item X-GUID\r\n").bytes(),
            );
            return Reply::Send(out);
        }
        let max = b.messages.iter().map(|m| m.0).max().unwrap_or(0);
        let wanted = b
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| in_set(set, m.0, max));
        if items_upper.contains("BODY.PEEK[]") {
            for (i, (uid, _, body)) in wanted {
                let seq = i + 1;
                let mode = if b.hostile_uids.contains(uid) {
                    b.body
                } else {
                    BodyMode::Normal
                };
                match mode {
                    BodyMode::Normal | BodyMode::WrongUid => {
                        let shown = if mode == BodyMode::WrongUid {
                            777
                        } else {
                            *uid
                        };
                        out.extend(
                            format!("* {seq} FETCH (UID {shown} BODY[] {{{}}}\r\n", body.len())
                                .bytes(),
                        );
                        out.extend(body);
                        out.extend(b")\r\n");
                    }
                    BodyMode::Huge(size) => {
                        out.extend(
                            format!("* {seq} FETCH (UID {uid} BODY[] {{{size}}}\r\n").bytes(),
                        );
                        out.extend(body);
                        return Reply::SendAndStall(out);
                    }
                    BodyMode::Cut => {
                        out.extend(
                            format!("* {seq} FETCH (UID {uid} BODY[] {{{}}}\r\n", body.len())
                                .bytes(),
                        );
                        out.extend(&body[..body.len() / 2]);
                        return Reply::SendAndClose(out);
                    }
                }
            }
            out.extend(ok("Fetch completed."));
        } else {
            // BODY.PEEK[HEADER.FIELDS (...)] is answered as BODY[HEADER.FIELDS (...)].
            let header_item = items.find("BODY.PEEK[HEADER.FIELDS").map(|at| {
                let tail = &items[at..];
                let end = tail.find(']').map_or(tail.len(), |e| e + 1);
                tail[..end].replacen("BODY.PEEK[", "BODY[", 1)
            });
            for (i, (uid, flags, body)) in wanted {
                let mut line = format!("* {} FETCH (UID {uid} FLAGS ({flags})", i + 1).into_bytes();
                if items_upper.contains("INTERNALDATE") {
                    line.extend(
                        format!(
                            " INTERNALDATE \"01-Mar-2024 09:00:00 +0000\" RFC822.SIZE {}",
                            body.len()
                        )
                        .bytes(),
                    );
                }
                if let Some(item) = &header_item {
                    let header = header_fields(body);
                    line.extend(format!(" {item} {{{}}}\r\n", header.len()).bytes());
                    line.extend(header);
                }
                line.extend(b")\r\n");
                out.extend(line);
            }
            out.extend(ok("Fetch completed."));
        }
    } else if upper.starts_with("LOGOUT") {
        out.extend(b"* BYE Logging out\r\n");
        out.extend(ok("Logout completed."));
    } else if upper.starts_with("NOOP") {
        out.extend(ok("NOOP completed."));
    } else {
        out.extend(format!("{tag} BAD Unknown command.\r\n").bytes());
    }
    Reply::Send(out)
}

/// Whether `uid` is in the IMAP sequence set `set` (`*` is the largest UID).
fn in_set(set: &str, uid: u32, max: u32) -> bool {
    let value = |s: &str| {
        if s == "*" {
            max
        } else {
            s.parse().unwrap_or(0)
        }
    };
    set.split(',').any(|part| match part.split_once(':') {
        Some((a, b)) => {
            let (a, b) = (value(a), value(b));
            (a.min(b)..=a.max(b)).contains(&uid)
        }
        None => value(part) == uid,
    })
}

/// The Date and Message-ID lines of a CRLF message and the blank line after them, as
/// `BODY[HEADER.FIELDS (Date Message-ID)]` returns them.
fn header_fields(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for line in text.split("\r\n") {
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("date:") || lower.starts_with("message-id:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// One command with its literals (answering `+` to synchronizing ones), without CRLF.
fn read_command(reader: &mut BufReader<TcpStream>, out: &mut TcpStream) -> Option<String> {
    let mut command = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        command.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).into_owned();
        let Some((t, i)) = text
            .trim_end()
            .strip_suffix('}')
            .and_then(|t| t.rfind('{').map(|i| (t, i)))
        else {
            break;
        };
        let spec = &t[i + 1..];
        let (n, sync) = match spec.strip_suffix('+') {
            Some(n) => (n.parse::<usize>().ok()?, false),
            None => (spec.parse::<usize>().ok()?, true),
        };
        if sync {
            out.write_all(b"+ go ahead\r\n").ok()?;
        }
        let mut literal = vec![0; n];
        reader.read_exact(&mut literal).ok()?;
        command.extend_from_slice(&literal);
    }
    Some(
        String::from_utf8_lossy(&command)
            .trim_end_matches("\r\n")
            .to_owned(),
    )
}

/// A test message with CRLF line ends, as a server sends it.
fn crlf_message(n: usize) -> Vec<u8> {
    String::from_utf8(common::message(n))
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes()
}

/// How a run of the binary ended.
struct Run {
    code: i32,
    stderr: String,
    elapsed: Duration,
    /// Peak resident set size in KiB (from wait4's rusage).
    max_rss_kib: i64,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {} after {:?}, peak RSS {} KiB\n--- stderr ---\n{}",
            self.code, self.elapsed, self.max_rss_kib, self.stderr
        )
    }

    /// A failure that was handled: one of `codes`, no panic, and a message that names the
    /// server and says `words`.
    fn assert_clean_failure(&self, codes: &[i32], words: &[&str]) {
        assert!(
            codes.contains(&self.code),
            "wanted exit {codes:?}: {}",
            self.describe()
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.describe());
        assert!(
            self.stderr.contains("127.0.0.1"),
            "the message does not name the server: {}",
            self.describe()
        );
        let lower = self.stderr.to_lowercase();
        for w in words {
            assert!(
                lower.contains(&w.to_lowercase()),
                "stderr does not say {w:?}: {}",
                self.describe()
            );
        }
    }
}

/// The wall-clock limit of one run: the server side of every case answers at once, and the
/// command timeout is 5 s, so a run that takes longer is stuck.
const RUN_LIMIT: Duration = Duration::from_secs(15);

/// Runs `boxsync -o mail_location=maildir:LOCAL <fake's imapc settings> backup -R
/// imapc:INDEX`, killing it after [`RUN_LIMIT`].
fn backup_from(fake: &Fake, local: &Path, index: &Path) -> Run {
    backup_with_timeout(fake, local, index, 5)
}

/// [`backup_from`] with `imapc_cmd_timeout` set to `timeout` seconds.
fn backup_with_timeout(fake: &Fake, local: &Path, index: &Path, timeout: u32) -> Run {
    let mut cmd = boxsync();
    cmd.arg("-o")
        .arg(format!("mail_location=maildir:{}", local.display()));
    for opt in [
        "imapc_host=127.0.0.1".to_owned(),
        format!("imapc_port={}", fake.port),
        "imapc_user=u".to_owned(),
        "imapc_password=p".to_owned(),
        format!("imapc_cmd_timeout={timeout}"),
    ] {
        cmd.arg("-o").arg(opt);
    }
    cmd.arg("backup")
        .arg("-R")
        .arg(format!("imapc:{}", index.display()));
    run_bounded(cmd)
}

/// Runs `cmd`, killing it after [`RUN_LIMIT`]; reaps it with wait4(2) itself, for the
/// rusage that std's `wait` does not give.
#[allow(clippy::zombie_processes)]
fn run_bounded(mut cmd: std::process::Command) -> Run {
    use std::process::Stdio;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run boxsync");
    let mut stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: wait4 on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if !killed && start.elapsed() > RUN_LIMIT {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    let stderr = reader.join().unwrap();
    assert!(
        !killed,
        "boxsync did not finish within {RUN_LIMIT:?}\n--- stderr ---\n{stderr}"
    );
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Run {
        code,
        stderr,
        elapsed,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// INBOX with messages 1..=3 (UIDs 1..=3), the third one seen.
fn three_messages() -> Vec<(u32, &'static str, Vec<u8>)> {
    vec![
        (1, "", crlf_message(1)),
        (2, "\\Flagged", crlf_message(2)),
        (3, "\\Seen", crlf_message(3)),
    ]
}

/// A destination made by a good backup of a fake with [`three_messages`], and its index.
struct Previous {
    dir: Dir,
    tree: BTreeMap<String, Option<Vec<u8>>>,
}

impl Previous {
    fn local(&self) -> std::path::PathBuf {
        self.dir.join("Maildir")
    }

    fn index(&self) -> std::path::PathBuf {
        self.dir.join("idx")
    }

    fn make(caps: &'static str) -> Previous {
        let dir = Dir::new();
        let fake = Fake::start(Behaviour::new(caps, three_messages()));
        let run = backup_from(&fake, &dir.join("Maildir"), &dir.join("idx"));
        assert_eq!(run.code, 0, "the good backup: {}", run.describe());
        let view = support::read_maildir(&dir.join("Maildir"));
        assert_eq!(view.message_count(), 3, "{view:#?}");
        let tree = tree_bytes(&dir.join("Maildir"));
        Previous { dir, tree }
    }

    /// The destination must be byte for byte what the good backup left, except that the
    /// uidlist's next UID may have moved up past the message that could not be read (the
    /// brain takes the source's UIDNEXT even when one message failed, as dsync does).
    fn assert_intact(&self, what: &str) {
        let uidlist_without_next = |t: &BTreeMap<String, Option<Vec<u8>>>| {
            let mut t = t.clone();
            if let Some(Some(bytes)) = t.get_mut("dovecot-uidlist") {
                let text = String::from_utf8_lossy(bytes).into_owned();
                let (header, rest) = text.split_once('\n').unwrap_or((&text, ""));
                let header: Vec<&str> = header.split(' ').filter(|f| !f.starts_with('N')).collect();
                *bytes = format!("{}\n{rest}", header.join(" ")).into_bytes();
            }
            t
        };
        let now = tree_bytes(&self.local());
        support::assert_same_tree(
            &uidlist_without_next(&self.tree),
            &uidlist_without_next(&now),
            what,
        );
    }

    /// A good run against a server with UIDs 1..=4 brings the fourth message in under the
    /// server's UID, and a rerun changes nothing.
    fn assert_recovers(&self) {
        let mut messages = three_messages();
        messages.push((4, "", crlf_message(4)));
        let fake = Fake::start(Behaviour::new(PLAIN_CAPS, messages));
        let run = backup_from(&fake, &self.local(), &self.index());
        assert_eq!(run.code, 0, "the good run after: {}", run.describe());
        let view = support::read_maildir(&self.local());
        assert!(view.problems.is_empty(), "{:#?}", view.problems);
        let inbox = &view.mailboxes["INBOX"];
        assert_eq!(
            inbox.messages.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "UIDs after the good run"
        );
        assert_eq!(inbox.messages[&4].body, common::message(4));
        let before = tree_bytes(&self.local());
        let run = backup_from(&fake, &self.local(), &self.index());
        assert_eq!(run.code, 0, "the rerun: {}", run.describe());
        support::assert_same_tree(&before, &tree_bytes(&self.local()), "the rerun");
    }
}

/// The fake of a later run: the three messages plus UID 4, whose body fetch is hostile.
fn with_hostile_fourth(caps: &'static str, mode: BodyMode) -> Behaviour {
    let mut messages = three_messages();
    messages.push((4, "", crlf_message(4)));
    let mut b = Behaviour::new(caps, messages);
    b.body = mode;
    b.hostile_uids = vec![4];
    b
}

#[test]
fn a_uidnext_below_the_listed_uids_still_syncs_correctly() {
    // The store numbers messages itself (the brain never trusts the server's UIDNEXT), so
    // the right result is a correct backup with the server's UIDs and a local UIDNEXT above
    // them, both with STATUS and with LIST-STATUS.
    for caps in [PLAIN_CAPS, LIST_STATUS_CAPS] {
        let d = Dir::new();
        let messages = vec![
            (5, "\\Seen", crlf_message(5)),
            (9, "", crlf_message(9)),
            (10, "\\Answered", crlf_message(10)),
        ];
        let mut b = Behaviour::new(caps, messages);
        b.uidnext = Some(3);
        let fake = Fake::start(b.clone());
        let (local, index) = (d.join("Maildir"), d.join("idx"));
        let run = backup_from(&fake, &local, &index);
        assert_eq!(run.code, 0, "{caps}: {}", run.describe());
        assert!(!run.stderr.contains("panicked"), "{}", run.describe());
        let view = support::read_maildir(&local);
        assert!(view.problems.is_empty(), "{:#?}", view.problems);
        let inbox = &view.mailboxes["INBOX"];
        assert_eq!(inbox.uidvalidity, UIDVALIDITY);
        assert_eq!(
            inbox.messages.keys().copied().collect::<Vec<_>>(),
            vec![5, 9, 10],
            "{caps}"
        );
        for (uid, flags, _) in &b.messages {
            let m = &inbox.messages[uid];
            assert_eq!(
                m.body,
                common::message(*uid as usize),
                "{caps}: body of {uid}"
            );
            let want: std::collections::BTreeSet<String> =
                flags.split_whitespace().map(str::to_owned).collect();
            assert_eq!(m.flags, want, "{caps}: flags of {uid}");
        }
        let next = uidlist_next_uid(&local.join("dovecot-uidlist"));
        assert!(
            next > 10,
            "{caps}: local UIDNEXT {next} is not above UID 10"
        );

        // A new message while the server still lies: it arrives, nothing is duplicated.
        b.messages.push((11, "", crlf_message(11)));
        let fake = Fake::start(b.clone());
        let run = backup_from(&fake, &local, &index);
        assert_eq!(run.code, 0, "{caps}, second run: {}", run.describe());
        let view = support::read_maildir(&local);
        assert!(view.problems.is_empty(), "{:#?}", view.problems);
        assert_eq!(
            view.mailboxes["INBOX"]
                .messages
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            vec![5, 9, 10, 11],
            "{caps}"
        );
        // And a rerun changes nothing.
        let before = tree_bytes(&local);
        let run = backup_from(&fake, &local, &index);
        assert_eq!(run.code, 0, "{caps}, rerun: {}", run.describe());
        support::assert_same_tree(&before, &tree_bytes(&local), "the rerun");
    }
}

/// The next UID of a `dovecot-uidlist` as Dovecot reads it: the header's `N…`, or past the
/// last record when appended records went beyond it.
fn uidlist_next_uid(path: &Path) -> u32 {
    let text = std::fs::read_to_string(path).unwrap();
    let header = text.lines().next().unwrap_or("");
    let after_last = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(' ').next()?.parse::<u32>().ok())
        .max()
        .map_or(0, |uid| uid + 1);
    header
        .split(' ')
        .find_map(|f| f.strip_prefix('N'))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no N in the uidlist header {header:?}"))
        .max(after_last)
}

#[test]
fn a_body_for_a_uid_never_asked_for_is_refused() {
    let prev = Previous::make(PLAIN_CAPS);
    let fake = Fake::start(with_hostile_fourth(PLAIN_CAPS, BodyMode::WrongUid));
    let run = backup_from(&fake, &prev.local(), &prev.index());
    eprintln!("{}", run.describe());
    // The client calls this a protocol violation (Error::Data, 65), but a body that cannot be
    // read reaches the brain as an I/O error of kind Other, which is a temporary failure (75).
    // Either is a clean refusal; 65 would match the client's documented mapping.
    run.assert_clean_failure(&[65, 75], &["UID 777", "not requested"]);
    prev.assert_intact("the destination after a FETCH for UID 777");
    prev.assert_recovers();
}

#[test]
fn an_enormous_literal_is_refused_without_allocating_it() {
    for size in [99_999_999_999u64, 4_000_000_000, 2_000_000_000] {
        let prev = Previous::make(PLAIN_CAPS);
        let fake = Fake::start(with_hostile_fourth(PLAIN_CAPS, BodyMode::Huge(size)));
        let run = backup_from(&fake, &prev.local(), &prev.index());
        eprintln!("{size}: {}", run.describe());
        // Beyond u32 the literal announcement is not even a literal to imap-codec: the line
        // is refused as unparseable; below it the literal guard names the limit. Either way
        // the message shows what the server sent. Exit code: see the UID 777 case.
        let words: &[&str] = if size > u64::from(u32::MAX) {
            &["unparseable response", "{99999999999}"]
        } else {
            &["literal", "limit"]
        };
        run.assert_clean_failure(&[65, 75], words);
        // Refused as soon as announced: not by the 5 s command timeout, and without
        // setting memory aside for it (the whole process stays far below 1 GB).
        assert!(
            run.elapsed < Duration::from_secs(4),
            "{size}: {}",
            run.describe()
        );
        assert!(
            run.max_rss_kib < 200 * 1024,
            "{size}: peak RSS {} KiB",
            run.max_rss_kib
        );
        prev.assert_intact("the destination after an enormous literal");
    }
}

#[test]
fn a_connection_cut_in_every_body_ends_with_75_and_no_loop() {
    let prev = Previous::make(PLAIN_CAPS);
    let fake = Fake::start(with_hostile_fourth(PLAIN_CAPS, BodyMode::Cut));
    let run = backup_from(&fake, &prev.local(), &prev.index());
    eprintln!("{}", run.describe());
    run.assert_clean_failure(&[75], &["connection lost during UID FETCH"]);
    // One connection for the changes, one for bodies, one more try: a handful, not a loop.
    let fetches = fake
        .commands()
        .iter()
        .filter(|c| c.contains("BODY.PEEK[]"))
        .count();
    assert!(
        fake.connections() <= 6 && fetches <= 4,
        "{} connections, {fetches} body fetches: {:#?}",
        fake.connections(),
        fake.commands()
    );
    prev.assert_intact("the destination after cut connections");
    prev.assert_recovers();
}

#[test]
fn garbage_instead_of_a_greeting_is_refused() {
    for garbage in [
        &b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n"[..],
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        b"\x00\x01\x02\xff\xfe garbage \x80\x81\r\n",
    ] {
        let prev = Previous::make(PLAIN_CAPS);
        let mut b = Behaviour::new(PLAIN_CAPS, three_messages());
        b.greeting = garbage.to_vec();
        let fake = Fake::start(b);
        let run = backup_from(&fake, &prev.local(), &prev.index());
        eprintln!("{}", run.describe());
        run.assert_clean_failure(&[65], &["unparseable response from server"]);
        assert!(
            run.elapsed < Duration::from_secs(4),
            "waited for a timeout: {}",
            run.describe()
        );
        assert!(fake.commands().is_empty(), "{:?}", fake.commands());
        prev.assert_intact("the destination after a garbage greeting");
    }
}

#[test]
fn a_literal_that_never_arrives_times_out_once_per_connection() {
    // 500 MB is below the 1 GiB limit, so the client waits for it; the server sends a few
    // bytes and then nothing. The command timeout (2 s) ends the wait, the body connection is
    // tried once more, and the run fails as temporary without holding the literal's size.
    let prev = Previous::make(PLAIN_CAPS);
    let fake = Fake::start(with_hostile_fourth(PLAIN_CAPS, BodyMode::Huge(500_000_000)));
    let run = backup_with_timeout(&fake, &prev.local(), &prev.index(), 2);
    eprintln!("{}", run.describe());
    run.assert_clean_failure(&[75], &["no answer for 2 s"]);
    assert!(
        run.elapsed < Duration::from_secs(9),
        "more than two timeouts: {}",
        run.describe()
    );
    assert!(
        run.max_rss_kib < 200 * 1024,
        "peak RSS {} KiB",
        run.max_rss_kib
    );
    prev.assert_intact("the destination after a literal that never came");
    prev.assert_recovers();
}
