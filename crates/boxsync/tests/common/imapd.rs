//! A real Dovecot IMAP server on loopback for integration tests: `dovecot -F -c CONF` with
//! only the imap protocol, a plain port (STARTTLS offered) and an imaps port on 127.0.0.1,
//! passwd-file users with password `pass` and Maildir stores, a throwaway CA that signed the
//! server's certificate, stopped (and waited for) on drop.
//!
//! The daemon shares its configuration with the [`Dovecot`] helper it carries: the helper's
//! `dovecot.conf` is overwritten with the daemon's, so `doveadm` mail commands through
//! [`Imapd::dovecot`] see the same settings (namespace, special-use mailboxes) as the imapd
//! while it runs. That works because the configuration sets no `doveadm_port` (with one,
//! every doveadm mail command would ask the daemon for a passdb lookup) and doveadm without
//! `-u` does no userdb lookup.
//!
//! Running as root, Dovecot accesses mail as uid/gid 5000 (`mail_uid`, and in the users file),
//! the login and internal processes run as the packaged `dovenull`/`dovecot` users; as any
//! other user, everything runs as that user.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dovecot::{Dovecot, dovecot_available};

/// The uid and gid Dovecot accesses mail as when the tests run as root (as in dovecot.rs).
const ROOT_MAIL_ID: u32 = 5000;

/// Every user's password.
pub const PASSWORD: &str = "pass";

/// How long the server may take to greet before `start` gives up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Attempts at starting when the chosen ports turn out to be taken.
const START_ATTEMPTS: usize = 5;

/// A running Dovecot imapd; stopped on drop.
pub struct Imapd {
    child: Option<Child>,
    port: u16,
    tls_port: u16,
    users: Vec<String>,
    /// The users' Maildirs use `LAYOUT=fs` (a name may hold a '.') instead of Maildir++.
    layout_fs: bool,
    /// Where the daemon's own files are (run, state, tls, users, home): the helper's base.
    root: PathBuf,
    ca: PathBuf,
    /// Declared last: its temporary directory goes after the daemon stopped.
    dovecot: Dovecot,
}

/// Whether the `dovecot` daemon binary can be run on this machine.
pub fn imapd_available() -> bool {
    dovecot_available()
        && Command::new("dovecot")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

impl Imapd {
    /// A server with users `alice` and `bob`, or `None` (with a note on stderr) when Dovecot
    /// is not installed; on CI a missing Dovecot is a failure.
    pub fn start() -> Option<Imapd> {
        Imapd::start_with(&["alice", "bob"])
    }

    /// A server with these users, each with password `pass`, home `BASE/home/USER` and
    /// `mail_location = maildir:~/Maildir`. `None` (with a note on stderr) when Dovecot is not
    /// installed; panics, with Dovecot's log, when it is installed but does not come up.
    pub fn start_with(users: &[&str]) -> Option<Imapd> {
        Imapd::start_configured(users, false)
    }

    /// Like [`Imapd::start`], with `maildir:~/Maildir:LAYOUT=fs` stores: mailbox names on
    /// this server may hold a '.', which Maildir++ cannot.
    pub fn start_layout_fs() -> Option<Imapd> {
        Imapd::start_configured(&["alice", "bob"], true)
    }

    fn start_configured(users: &[&str], layout_fs: bool) -> Option<Imapd> {
        if !imapd_available() {
            let on_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(
                !on_ci,
                "dovecot is not installed, but CI requires the Dovecot tests to run"
            );
            eprintln!(
                "skipping: dovecot is not installed (apt-get install dovecot-core dovecot-imapd)"
            );
            return None;
        }
        let dovecot = Dovecot::new();
        let root = dovecot.base().to_path_buf();
        let ca = make_pki(&root.join("tls"));
        // Dovecot::new() gave the base to the mail uid; what we just made is ours.
        let ids = Ids::of(&root.join("tls"));
        let mut lines = String::new();
        for user in users {
            assert!(
                !user.is_empty() && user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "user names must be plain words: {user:?}"
            );
            let home = root.join("home").join(user);
            std::fs::create_dir_all(&home).expect("create user home");
            ids.give(&home);
            lines.push_str(&format!(
                "{user}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::\n",
                uid = ids.mail_uid,
                gid = ids.mail_gid,
                home = home.display()
            ));
        }
        std::fs::write(root.join("users"), lines).expect("write users file");
        let mut imapd = Imapd {
            child: None,
            port: 0,
            tls_port: 0,
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            layout_fs,
            root,
            ca,
            dovecot,
        };
        for attempt in 1..=START_ATTEMPTS {
            let (port, tls_port) = free_ports();
            imapd.port = port;
            imapd.tls_port = tls_port;
            imapd.write_config(&ids);
            match imapd.launch() {
                Ok(()) => return Some(imapd),
                Err(log) if log.contains("Address already in use") && attempt < START_ATTEMPTS => {
                    continue;
                }
                Err(log) => panic!("Dovecot imapd did not start:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The plain IMAP port (STARTTLS offered, plaintext LOGIN allowed).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The imaps port (TLS from the first byte).
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The CA certificate (PEM) that signed the server's certificate for `localhost` and
    /// 127.0.0.1.
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }

    /// The doveadm helper, configured like the daemon, for preparing and inspecting stores.
    pub fn dovecot(&self) -> &Dovecot {
        &self.dovecot
    }

    /// The users this server knows.
    pub fn users(&self) -> &[String] {
        &self.users
    }

    /// `maildir:BASE/home/USER/Maildir` (with `:LAYOUT=fs` from [`Imapd::start_layout_fs`]):
    /// the store the imapd serves for `user`, for
    /// [`Dovecot::save`], [`Dovecot::fetch`] and the like.
    pub fn user_location(&self, user: &str) -> String {
        assert!(
            self.users.iter().any(|u| u == user),
            "{user} is not a user of this server ({:?})",
            self.users
        );
        format!(
            "maildir:{}{}",
            self.user_maildir(user).display(),
            self.layout_suffix()
        )
    }

    /// What the mail locations of this server's users end with.
    fn layout_suffix(&self) -> &'static str {
        if self.layout_fs { ":LAYOUT=fs" } else { "" }
    }

    /// The directory of `user`'s Maildir.
    pub fn user_maildir(&self, user: &str) -> PathBuf {
        self.root.join("home").join(user).join("Maildir")
    }

    /// `-o` options that point Dovecot's imapc (and boxsync's) at this server as `user`,
    /// over plain IMAP.
    pub fn imapc_args(&self, user: &str) -> Vec<String> {
        self.imapc_args_port(user, self.port)
    }

    /// Like [`Imapd::imapc_args`], over TLS: `ssl` is `imaps` (the imaps port) or `starttls`
    /// (the plain port), and the CA file is trusted.
    pub fn imapc_tls_args(&self, user: &str, ssl: &str) -> Vec<String> {
        let port = match ssl {
            "imaps" => self.tls_port,
            "starttls" => self.port,
            other => panic!("imapc_ssl must be imaps or starttls, not {other:?}"),
        };
        let mut args = self.imapc_args_port(user, port);
        for opt in [
            format!("imapc_ssl={ssl}"),
            format!("ssl_client_ca_file={}", self.ca.display()),
        ] {
            args.push("-o".to_owned());
            args.push(opt);
        }
        args
    }

    fn imapc_args_port(&self, user: &str, port: u16) -> Vec<String> {
        [
            "imapc_host=127.0.0.1".to_owned(),
            format!("imapc_port={port}"),
            format!("imapc_user={user}"),
            format!("imapc_password={PASSWORD}"),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect()
    }

    /// Dovecot's log so far (the daemon's log file and what the master printed).
    pub fn log(&self) -> String {
        let mut text = String::new();
        for name in ["log/dovecot.log", "log/master.out"] {
            if let Ok(s) = std::fs::read_to_string(self.root.join(name)) {
                text.push_str(&format!("--- {name}\n{s}"));
            }
        }
        text
    }

    /// A plain connection to the server, logged in as `user` (panics if that fails).
    pub fn login(&self, user: &str) -> RawImap {
        let mut conn = RawImap::connect(self.port);
        conn.ok(&format!("LOGIN {user} {PASSWORD}"));
        conn
    }

    /// Writes the daemon's configuration over the helper's `dovecot.conf`.
    fn write_config(&self, ids: &Ids) {
        let r = self.root.display();
        let text = format!(
            "# Written by boxsync's test harness (tests/common/imapd.rs).\n\
             base_dir = {r}/run\n\
             state_dir = {r}/state\n\
             log_path = {r}/log/dovecot.log\n\
             protocols = imap\n\
             listen = 127.0.0.1\n\
             default_internal_user = {internal}\n\
             default_login_user = {login}\n\
             first_valid_uid = 1\n\
             first_valid_gid = 1\n\
             mail_uid = {uid}\n\
             mail_gid = {gid}\n\
             ssl = yes\n\
             ssl_cert = <{r}/tls/server.pem\n\
             ssl_key = <{r}/tls/server.key\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             mail_max_userip_connections = 100\n\
             login_trusted_networks = 127.0.0.0/8\n\
             # Answer failed logins at once: no delay, no growing per-IP penalty (which\n\
             # is off when its anvil socket does not exist).\n\
             auth_failure_delay = 0\n\
             service anvil {{\n  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {r}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = username_format=%u {r}/users\n}}\n\
             mail_location = maildir:~/Maildir{layout}\n\
             # Tests need no durability; this keeps them fast.\n\
             mail_fsync = never\n\
             namespace inbox {{\n\
             \x20 inbox = yes\n\
             \x20 separator = /\n\
             \x20 prefix =\n\
             \x20 mailbox Drafts {{\n    special_use = \\Drafts\n  }}\n\
             \x20 mailbox Sent {{\n    special_use = \\Sent\n  }}\n\
             \x20 mailbox Trash {{\n    special_use = \\Trash\n  }}\n\
             \x20 mailbox Junk {{\n    special_use = \\Junk\n  }}\n\
             }}\n\
             service imap-login {{\n\
             \x20 inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
             \x20 inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n\
             }}\n\
             # No inet listeners but imap: nothing else may take a port.\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = 0\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n\
             service submission-login {{\n  inet_listener submission {{\n    port = 0\n  }}\n}}\n\
             service managesieve-login {{\n  inet_listener sieve {{\n    port = 0\n  }}\n}}\n",
            internal = ids.internal_user,
            login = ids.login_user,
            uid = ids.mail_uid,
            gid = ids.mail_gid,
            port = self.port,
            tls_port = self.tls_port,
            layout = self.layout_suffix(),
        );
        std::fs::write(self.dovecot.conf(), text).expect("write dovecot.conf");
    }

    /// Starts `dovecot -F` and waits for the greeting; on failure returns the log, with the
    /// process stopped.
    fn launch(&mut self) -> Result<(), String> {
        let out = std::fs::File::create(self.root.join("log/master.out"))
            .expect("create master output file");
        let err = out.try_clone().expect("clone master output file");
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(self.dovecot.conf())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group, so that stop() can reach every process it starts.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dovecot: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("dovecot exited with {status}\n{}", self.log()));
            }
            if greets(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "no IMAP greeting on 127.0.0.1:{} within {} s\n{}",
                    self.port,
                    START_TIMEOUT.as_secs(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon and waits for it: SIGTERM to its process group (the master and the
    /// processes it started), SIGKILL after 10 s.
    ///
    /// Terminating the children along with the master saves a second: a master that finds
    /// children still running at shutdown tells them to close their listeners and sleeps
    /// 1 s before it exits.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The group was made for this child (process_group(0)): its id is the child's.
        let group = -i32::try_from(child.id()).expect("pid fits in i32");
        // SAFETY: kill(2) with a process group id; no memory is involved.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for Imapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something on `port` accepts a connection and greets with `* OK`.
fn greets(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line.starts_with("* OK")
}

/// Two ports that were free a moment ago (both held at once, so they differ).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    let ports = (
        a.local_addr().expect("local address").port(),
        b.local_addr().expect("local address").port(),
    );
    drop((a, b));
    ports
}

/// Who Dovecot runs as.
struct Ids {
    mail_uid: u32,
    mail_gid: u32,
    internal_user: String,
    login_user: String,
    /// Whether files must be handed to the mail uid (running as root).
    chown: bool,
}

impl Ids {
    /// As root: mail as 5000, services as the packaged users. Otherwise: all as ourselves.
    /// `ours` is a file this process created.
    fn of(ours: &Path) -> Ids {
        let meta = std::fs::metadata(ours).expect("stat a file of ours");
        if meta.uid() == 0 {
            Ids {
                mail_uid: ROOT_MAIL_ID,
                mail_gid: ROOT_MAIL_ID,
                internal_user: "dovecot".to_owned(),
                login_user: "dovenull".to_owned(),
                chown: true,
            }
        } else {
            let name = user_name(meta.uid());
            Ids {
                mail_uid: meta.uid(),
                mail_gid: meta.gid(),
                internal_user: name.clone(),
                login_user: name,
                chown: false,
            }
        }
    }

    /// Hands `path` to the mail uid when running as root.
    fn give(&self, path: &Path) {
        if self.chown {
            std::os::unix::fs::lchown(path, Some(self.mail_uid), Some(self.mail_gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}

/// The login name of `uid`, from the passwd database (`id -nu`).
fn user_name(uid: u32) -> String {
    let out = Command::new("id")
        .arg("-nu")
        .arg(uid.to_string())
        .output()
        .expect("run id -nu");
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!name.is_empty(), "uid {uid} has no name");
    name
}

/// Makes a throwaway CA and a certificate for `localhost`/127.0.0.1 it signed (EC P-256,
/// which is quick to generate) in `dir`; returns the CA certificate's path. The server's
/// certificate and key are `server.pem` and `server.key` there.
pub fn make_pki(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create tls directory");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=boxsync test imapd CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write certificate extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "server.pem",
        ],
    );
    dir.join("ca.pem")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bare-bones IMAP client over a plain `TcpStream`, for tests: sends tagged commands and
/// collects the response lines (literals inlined).
pub struct RawImap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
    /// The greeting line, without CRLF.
    pub greeting: String,
}

impl RawImap {
    /// Connects to 127.0.0.1:`port` and reads the greeting.
    pub fn connect(port: u16) -> RawImap {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set read timeout");
        let writer = stream.try_clone().expect("clone stream");
        let mut conn = RawImap {
            reader: BufReader::new(stream),
            writer,
            tag: 0,
            greeting: String::new(),
        };
        conn.greeting = conn.read_line();
        conn
    }

    /// Sends `command` with a fresh tag; returns the untagged lines and the tagged status
    /// (`OK …`, `NO …` or `BAD …`, without the tag).
    pub fn command(&mut self, command: &str) -> (Vec<String>, String) {
        let (lines, status) = self.command_raw(command);
        let lines = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        (lines, status)
    }

    /// Like [`RawImap::command`], with the untagged lines as bytes (literals inlined after
    /// their `{n}` and a CRLF).
    pub fn command_raw(&mut self, command: &str) -> (Vec<Vec<u8>>, String) {
        self.tag += 1;
        let tag = format!("t{} ", self.tag);
        self.writer
            .write_all(format!("{tag}{command}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {command:?}: {e}"));
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line_raw();
            if let Some(status) = line.strip_prefix(tag.as_bytes()) {
                return (untagged, String::from_utf8_lossy(status).into_owned());
            }
            untagged.push(line);
        }
    }

    /// Like [`RawImap::command`], panicking unless the status is OK; returns the untagged
    /// lines.
    pub fn ok(&mut self, command: &str) -> Vec<String> {
        let (lines, status) = self.command(command);
        assert!(
            status.starts_with("OK"),
            "{command:?} answered {status:?} after {lines:#?}"
        );
        lines
    }

    /// The first literal of the answer to `command` (which must succeed), e.g. the body of
    /// `UID FETCH 1 BODY.PEEK[]`.
    pub fn literal(&mut self, command: &str) -> Vec<u8> {
        let (lines, status) = self.command_raw(command);
        assert!(status.starts_with("OK"), "{command:?} answered {status:?}");
        for line in &lines {
            let Some(open) = line.windows(3).position(|w| w == b"}\r\n") else {
                continue;
            };
            let size = literal_size(&line[..=open]).expect("a literal size before CRLF");
            let start = open + 3;
            return line[start..start + size].to_vec();
        }
        panic!(
            "no literal in the answer to {command:?}: {:?}",
            lines
                .iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<Vec<_>>()
        );
    }

    fn read_line(&mut self) -> String {
        String::from_utf8_lossy(&self.read_line_raw()).into_owned()
    }

    /// One response line without CRLF; a literal `{n}` at its end is read and inlined, after
    /// a CRLF, with the rest of the line.
    fn read_line_raw(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        loop {
            let mut part = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut part)
                .unwrap_or_else(|e| panic!("read from imapd: {e}"));
            assert!(
                n > 0,
                "imapd closed the connection after {:?}",
                String::from_utf8_lossy(&line)
            );
            if part.ends_with(b"\n") {
                part.pop();
                if part.ends_with(b"\r") {
                    part.pop();
                }
            }
            let literal = literal_size(&part);
            line.extend_from_slice(&part);
            let Some(size) = literal else { break };
            let mut data = vec![0; size];
            self.reader
                .read_exact(&mut data)
                .unwrap_or_else(|e| panic!("read literal: {e}"));
            line.extend_from_slice(b"\r\n");
            line.extend_from_slice(&data);
        }
        line
    }
}

/// The size of the literal announced at the end of `line` (`{123}` or `{123+}`).
fn literal_size(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Runs boxsync with `-o mail_location=LOCAL`, an account's settings and `args`.
pub fn run_boxsync(local: &str, account: &[String], args: &[&str]) -> std::process::Output {
    let mut cmd = super::boxsync();
    cmd.arg("-o").arg(format!("mail_location={local}"));
    cmd.args(account);
    cmd.args(args);
    cmd.output().expect("run boxsync")
}

/// `args` with `imapc_port` replaced by `port` (to go through a proxy).
pub fn with_port(args: &[String], port: u16) -> Vec<String> {
    args.iter()
        .map(|a| {
            if a.starts_with("imapc_port=") {
                format!("imapc_port={port}")
            } else {
                a.clone()
            }
        })
        .collect()
}
