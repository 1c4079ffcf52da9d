//! Syncs across a process or machine boundary, end to end with the real binary: the command
//! transport (`… dsync-server` as the destination), `remote:` through `dsync_remote_cmd` with
//! a stand-in for ssh, tcp and tls on loopback against `server --listen` (a throwaway CA made
//! by the test with openssl), wrong passwords, untrusted certificates, connections cut in
//! either direction, and hostile peers.

mod common;
mod support;

use common::{Dir, boxsync, maildir, message};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::{
    Folder, Mail, Rng, assert_same_store, assert_same_tree, code, describe, read_maildir,
    sized_message, tree_bytes, write_maildir,
};

const BIN: &str = env!("CARGO_BIN_EXE_boxsync");

/// A store with folders, flags, keywords and a non-ASCII name (`Work/Prøjekt`, stored in
/// modified UTF-7).
fn source(root: &Path) {
    write_maildir(
        root,
        &[
            Folder::new(
                "INBOX",
                vec![
                    Mail::new(message(1), "S"),
                    Mail::new(message(2), "FS"),
                    Mail::new(message(3), ""),
                ],
            ),
            Folder::new(
                "Work/Pr&APg-jekt",
                vec![Mail::new(message(10), "RSa"), Mail::new(message(11), "b")],
            ),
        ],
    );
}

/// A store of `n` messages of about `size` bytes each, for cutting transfers.
fn big_source(root: &Path, n: usize, size: usize) {
    let mut rng = Rng::new(7);
    let mails = (0..n)
        .map(|i| {
            Mail::new(
                sized_message(i, size, &mut rng),
                if i % 2 == 0 { "S" } else { "" },
            )
        })
        .collect();
    write_maildir(root, &[Folder::new("INBOX", mails)]);
}

fn local(args: &mut Command, root: &Path) {
    args.arg("-o")
        .arg(format!("mail_location={}", maildir(root)))
        .args(["-o", "mail_fsync=never"]);
}

fn server_cmd(root: &Path) -> String {
    format!(
        "{BIN} -o mail_location={} -o mail_fsync=never dsync-server",
        maildir(root)
    )
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run boxsync")
}

fn ok(out: Output) -> Output {
    assert_eq!(code(&out), 0, "{}", describe(&out));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_no_duplicates(root: &Path) {
    let view = read_maildir(root);
    for (body, n) in view.body_counts() {
        assert_eq!(
            n,
            1,
            "a message is stored {n} times in {}: {:?}",
            root.display(),
            String::from_utf8_lossy(&body[..body.len().min(120)])
        );
    }
}

#[test]
fn command_transport_backs_up_and_syncs_both_ways() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    source(&a);
    let mut c = boxsync();
    local(&mut c, &a);
    ok(run(c.arg("backup").arg(server_cmd(&b))));
    assert_same_store(&read_maildir(&a), &read_maildir(&b));

    // Changes on both sides cross in a two-way sync, the command given as several arguments.
    support::deliver(&a, "INBOX", &message(20), "");
    support::deliver(&b, "Work/Pr&APg-jekt", &message(21), "F");
    let mut c = boxsync();
    local(&mut c, &a);
    c.arg("sync").args([
        BIN,
        "-o",
        &format!("mail_location={}", maildir(&b)),
        "dsync-server",
    ]);
    ok(run(&mut c));
    let (va, vb) = (read_maildir(&a), read_maildir(&b));
    assert_same_store(&va, &vb);
    assert_eq!(va.message_count(), 7);
}

#[test]
fn stateful_sync_over_a_command_prints_a_state_that_continues() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    source(&a);
    let mut c = boxsync();
    local(&mut c, &a);
    let out = ok(run(c.args(["sync", "-s", ""]).arg(server_cmd(&b))));
    let state = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!state.is_empty());
    support::deliver(&b, "INBOX", &message(30), "S");
    let mut c = boxsync();
    local(&mut c, &a);
    ok(run(c.args(["sync", "-s", &state]).arg(server_cmd(&b))));
    assert_same_store(&read_maildir(&a), &read_maildir(&b));
    assert_eq!(read_maildir(&a).message_count(), 6);
}

#[test]
fn remote_runs_dsync_remote_cmd_through_ssh() {
    let d = Dir::new();
    let a = d.join("a");
    source(&a);
    // A stand-in for ssh: records its arguments, drops -l LOGIN and the host, runs the rest.
    let ssh = d.join("fake-ssh");
    let args_log = d.join("ssh-args");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\ncase \"$1\" in -l*) shift;; esac\nshift\nexec \"$@\"\n",
            args_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let users = d.join("users");
    let remote_cmd = format!(
        "{} -l%{{login}} %{{host}} {BIN} -o mail_location=maildir:{}/%u -o mail_fsync=never dsync-server -u%u",
        ssh.display(),
        users.display()
    );
    let mut c = boxsync();
    local(&mut c, &a);
    c.arg("-o")
        .arg(format!("dsync_remote_cmd={remote_cmd}"))
        .args(["backup", "-u", "alice", "remote:vmail@backup.example.com"]);
    ok(run(&mut c));
    let logged = std::fs::read_to_string(&args_log).unwrap();
    let logged: Vec<&str> = logged.lines().collect();
    assert_eq!(
        &logged[..2],
        ["-lvmail", "backup.example.com"],
        "{logged:?}"
    );
    assert_eq!(logged.last(), Some(&"-ualice"));
    assert_same_store(&read_maildir(&a), &read_maildir(&users.join("alice")));

    // Without a login, -l%{login} disappears, as in Dovecot.
    let mut c = boxsync();
    local(&mut c, &a);
    c.arg("-o")
        .arg(format!("dsync_remote_cmd={remote_cmd}"))
        .args(["sync", "-u", "alice", "remote:backup.example.com"]);
    ok(run(&mut c));
    let logged = std::fs::read_to_string(&args_log).unwrap();
    assert_eq!(logged.lines().next(), Some("backup.example.com"));
}

#[test]
fn a_missing_remote_command_is_a_clear_error() {
    let d = Dir::new();
    let a = d.join("a");
    source(&a);
    let mut c = boxsync();
    local(&mut c, &a);
    let out = run(c.args(["sync", "/nonexistent/boxsync-remote dsync-server"]));
    assert_eq!(code(&out), 78, "{}", describe(&out));
    assert!(
        stderr(&out).contains("/nonexistent/boxsync-remote"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_remote_that_fails_reports_its_error_and_exit_code() {
    let d = Dir::new();
    let a = d.join("a");
    source(&a);
    // backup -R: the remote is the source, and it does not exist.
    let missing = d.join("missing");
    let mut c = boxsync();
    local(&mut c, &a);
    let out = run(c.args(["backup", "-R"]).arg(server_cmd(&missing)));
    assert_eq!(code(&out), 68, "{}", describe(&out));
    assert!(
        stderr(&out).contains("does not exist"),
        "{}",
        describe(&out)
    );
    assert!(!missing.exists(), "a missing source must not be created");
}

/// A running `server --listen`, stopped with SIGTERM on drop.
struct Server {
    child: Child,
    port: u16,
    log: Arc<std::sync::Mutex<String>>,
}

impl Server {
    fn start(users: &Path, extra: &[String]) -> Server {
        Server::start_at(users, extra, "127.0.0.1:0")
    }

    fn start_at(users: &Path, extra: &[String], listen: &str) -> Server {
        let mut child = boxsync()
            .arg("-o")
            .arg(format!("mail_location=maildir:{}/%u", users.display()))
            .args(["-o", "mail_fsync=never", "-o", "doveadm_password=sekrit"])
            .args(extra)
            .args(["server", "--listen", listen])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("the server exited before listening")
                .unwrap();
            if let Some(addr) = line.split("listening on ").nth(1) {
                let addr = addr.split_whitespace().next().unwrap();
                break addr.rsplit(':').next().unwrap().parse().unwrap_or(0);
            }
        };
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Server { child, port, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tcp_sync(a: &Path, args: &[&str], password: &str, extra: &[String]) -> Output {
    let mut c = boxsync();
    local(&mut c, a);
    c.arg("-o").arg(format!("doveadm_password={password}"));
    c.args(extra);
    run(c.args(args))
}

#[test]
fn tcp_sync_against_the_listener() {
    let d = Dir::new();
    let (a, users) = (d.join("a"), d.join("users"));
    source(&a);
    let server = Server::start(&users, &[]);
    let dest = format!("tcp:127.0.0.1:{}", server.port);
    let raw = d.join("raw.log");
    ok(tcp_sync(
        &a,
        &["backup", "-u", "alice", "-r", raw.to_str().unwrap(), &dest],
        "sekrit",
        &[],
    ));
    assert_same_store(&read_maildir(&a), &read_maildir(&users.join("alice")));
    // The raw log has both directions and the dsync records, never the password (plain
    // or as the base64 of "\0doveadm\0sekrit" the PLAIN line carries).
    let log = String::from_utf8_lossy(&std::fs::read(&raw).unwrap()).into_owned();
    assert!(log.contains(" O: VERSION\tdoveadm-server"), "{log}");
    assert!(log.contains(" I: VERSION\tdsync\t3\t5"), "{log}");
    assert!(log.contains("PLAIN\t<password redacted>"), "{log}");
    assert!(!log.contains("sekrit") && !log.contains("AGRvdmVhZG0Ac2Vrcml0"));

    support::deliver(&users.join("alice"), "INBOX", &message(40), "");
    ok(tcp_sync(&a, &["sync", "-u", "alice", &dest], "sekrit", &[]));
    assert_same_store(&read_maildir(&a), &read_maildir(&users.join("alice")));
    assert_eq!(read_maildir(&a).message_count(), 6);

    // A wrong password: refused, reported, nothing created for that user.
    let out = tcp_sync(&a, &["sync", "-u", "bob", &dest], "wrong", &[]);
    assert_eq!(code(&out), 77, "{}", describe(&out));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        describe(&out)
    );
    assert!(!users.join("bob").exists());
    // A user name that would leave the users' directory is refused.
    let out = tcp_sync(&a, &["sync", "-u", "../escape", &dest], "sekrit", &[]);
    assert_ne!(code(&out), 0, "{}", describe(&out));
    assert!(!d.join("escape").exists());
    let status = server.stop();
    assert!(
        status.success(),
        "SIGTERM ends the server cleanly: {status}"
    );
}

#[test]
fn tcp_refused_password_is_logged_by_the_server() {
    let d = Dir::new();
    let (a, users) = (d.join("a"), d.join("users"));
    source(&a);
    let server = Server::start(&users, &[]);
    let dest = format!("tcp:127.0.0.1:{}", server.port);
    let out = tcp_sync(&a, &["sync", "-u", "carol", &dest], "nope", &[]);
    assert_eq!(code(&out), 77, "{}", describe(&out));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        server.log().contains("authentication failed"),
        "{}",
        server.log()
    );
}

/// A throwaway CA and a certificate for 127.0.0.1 and localhost, made with openssl.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_ca: PathBuf,
}

/// The test CA and localhost certificate of the imapd harness, plus a second CA that signed
/// nothing of ours (for the "untrusted certificate" cases).
fn make_pki(dir: &Path) -> Pki {
    let ca = common::imapd::make_pki(dir);
    let other_ca = common::imapd::make_pki(&dir.join("other"));
    Pki {
        ca,
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        other_ca,
    }
}

#[test]
fn tcps_with_a_trusted_and_an_untrusted_certificate() {
    let d = Dir::new();
    let (a, users) = (d.join("a"), d.join("users"));
    source(&a);
    let pki = make_pki(&d.join("pki"));
    let server = Server::start(
        &users,
        &[
            "-o".into(),
            format!("ssl_cert=<{}", pki.cert.display()),
            "-o".into(),
            format!("ssl_key=<{}", pki.key.display()),
        ],
    );
    let dest = format!("tcps:127.0.0.1:{}", server.port);
    let trust = |ca: &Path| {
        vec![
            "-o".to_owned(),
            format!("ssl_client_ca_file={}", ca.display()),
        ]
    };
    ok(tcp_sync(
        &a,
        &["backup", "-u", "alice", &dest],
        "sekrit",
        &trust(&pki.ca),
    ));
    assert_same_store(&read_maildir(&a), &read_maildir(&users.join("alice")));

    // Signed by a CA we do not trust: refused, with a message that says so.
    let out = tcp_sync(
        &a,
        &["sync", "-u", "bob", &dest],
        "sekrit",
        &trust(&pki.other_ca),
    );
    assert_eq!(code(&out), 75, "{}", describe(&out));
    assert!(stderr(&out).contains("not trusted"), "{}", describe(&out));
    assert!(!users.join("bob").exists());
    // The certificate names 127.0.0.1 and localhost, not this name.
    let other_name = format!("tcps:127.0.0.2:{}", server.port);
    let out = tcp_sync(
        &a,
        &["sync", "-u", "bob", &other_name],
        "sekrit",
        &trust(&pki.ca),
    );
    assert_ne!(code(&out), 0, "{}", describe(&out));
    assert!(!users.join("bob").exists());
}

/// A tcp proxy that forwards both ways and cuts the connection once `limit` bytes went in
/// direction `upstream` (client → server when true).
fn cutting_proxy(target: u16, upstream: bool, limit: usize) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_flag = cut.clone();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
        let pump = |mut from: TcpStream,
                    mut to: TcpStream,
                    limit: Option<usize>,
                    flag: Arc<AtomicBool>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let mut total = 0;
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(l) = limit
                        && total + n >= l
                    {
                        let _ = to.write_all(&buf[..l - total]);
                        flag.store(true, Ordering::SeqCst);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                    total += n;
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Write);
            })
        };
        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let up = pump(client, server, upstream.then_some(limit), cut_flag.clone());
        let down = pump(s2, c2, (!upstream).then_some(limit), cut_flag);
        let _ = up.join();
        let _ = down.join();
    });
    (port, cut)
}

fn cut_and_converge(upstream: bool) {
    let d = Dir::new();
    let (a, users) = (d.join("a"), d.join("users"));
    // 3 MiB on each side: the cut lands in the middle of message bodies either way.
    big_source(&a, 60, 50_000);
    let alice = users.join("alice");
    let mut rng = Rng::new(99);
    let mails = (100..160)
        .map(|i| Mail::new(sized_message(i, 50_000, &mut rng), ""))
        .collect();
    write_maildir(&alice, &[Folder::new("INBOX", mails)]);
    let server = Server::start(&users, &[]);
    let (proxy, cut) = cutting_proxy(server.port, upstream, 1_500_000);
    let out = tcp_sync(
        &a,
        &[
            "sync",
            "-T",
            "20",
            "-u",
            "alice",
            &format!("tcp:127.0.0.1:{proxy}"),
        ],
        "sekrit",
        &[],
    );
    assert!(
        cut.load(Ordering::SeqCst),
        "the proxy never cut: {}",
        describe(&out)
    );
    assert_eq!(code(&out), 75, "{}", describe(&out));
    assert!(!stderr(&out).is_empty());
    // The server's session may still be winding down; the next run must converge anyway.
    std::thread::sleep(Duration::from_millis(300));
    let dest = format!("tcp:127.0.0.1:{}", server.port);
    let mut last = None;
    for _ in 0..3 {
        let out = tcp_sync(&a, &["sync", "-u", "alice", &dest], "sekrit", &[]);
        let c = code(&out);
        last = Some(out);
        if c == 0 {
            break;
        }
    }
    let out = last.unwrap();
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let (va, vb) = (read_maildir(&a), read_maildir(&alice));
    assert_same_store(&va, &vb);
    assert_eq!(va.message_count(), 120);
    assert_no_duplicates(&a);
    assert_no_duplicates(&alice);
}

#[test]
fn a_cut_towards_the_server_ends_with_75_and_the_rerun_converges() {
    cut_and_converge(true);
}

#[test]
fn a_cut_towards_the_client_ends_with_75_and_the_rerun_converges() {
    cut_and_converge(false);
}

#[test]
fn a_peer_that_stops_answering_times_out() {
    let d = Dir::new();
    let a = d.join("a");
    source(&a);
    let mut c = boxsync();
    local(&mut c, &a);
    let started = std::time::Instant::now();
    let out = run(c.args(["sync", "-T", "2", "sh", "-c", "sleep 30", "dsync-server"]));
    assert_eq!(code(&out), 75, "{}", describe(&out));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(stderr(&out).contains("-T"), "{}", describe(&out));
}

/// Dovecot 2.3's greeting, as recorded from a real `doveadm dsync-server`.
fn dovecot_preamble() -> Vec<u8> {
    b"VERSION\tdsync\t3\t5\n\
Hhostname\tsync_ns_prefix\tsync_box\tsync_box_guid\tsync_type\tdebug\tsync_visible_namespaces\texclude_mailboxes\tsend_mail_requests\tbackup_send\tbackup_recv\tlock_timeout\tno_mail_sync\tno_backup_overwrite\tpurge_remote\tno_notify\tsync_since_timestamp\tsync_max_size\tsync_flags\tsync_until_timestamp\tvirtual_all_box\tempty_hdr_workaround\timport_commit_msgs_interval\thashed_headers\talt_char\n\
Smailbox_guid\tlast_uidvalidity\tlast_common_uid\tlast_common_modseq\tlast_common_pvt_modseq\tlast_messages_count\tchanges_during_sync\n\
Nname\texistence\tmailbox_guid\tuid_validity\tuid_next\tlast_renamed_or_created\tsubscribed\tlast_subscription_change\n\
Dhierarchy_sep\tescape_char\tmailboxes\tdirs\tunsubscribes\n\
Bmailbox_guid\tuid_validity\tuid_next\tmessages_count\tfirst_recent_uid\thighest_modseq\thighest_pvt_modseq\tmailbox_lost\tmailbox_ignore\tcache_fields\thave_guids\thave_save_guids\thave_only_guid128\n\
Atype\tkey\tvalue\tstream\tdeleted\tlast_change\tmodseq\n\
Ctype\tuid\tguid\thdr_hash\tmodseq\tpvt_modseq\tadd_flags\tremove_flags\tfinal_flags\tkeywords_reset\tkeyword_changes\treceived_timestamp\tvirtual_size\n\
Rguid\tuid\n\
Mguid\tuid\tpop3_uidl\tpop3_order\treceived_date\tsaved_date\tstream\n\
Ferror\tmail_error\trequire_full_resync\n\
cname\tdecision\tlast_used\n\
.\n"
    .to_vec()
}

/// Runs a sync against a fake far end that sends `script` after its greeting and a
/// handshake, and returns the result; asserts nothing outside the two stores changed.
fn against_hostile_peer(after_handshake: &[u8]) -> Output {
    let d = Dir::new();
    let a = d.join("store");
    source(&a);
    let outside = d.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"untouched").unwrap();
    let mut script = dovecot_preamble();
    script.extend_from_slice(b"Hevil\n");
    script.extend_from_slice(after_handshake);
    let file = d.join("peer-bytes");
    std::fs::write(&file, &script).unwrap();
    let before = tree_bytes(d.path());
    let mut c = boxsync();
    local(&mut c, &a);
    let out = run(c.args([
        "sync",
        "-T",
        "10",
        "sh",
        "-c",
        "cat \"$0\"; cat >/dev/null",
        file.to_str().unwrap(),
        "dsync-server",
    ]));
    // The store itself may have gained boxsync's index; nothing else may change.
    let mut after = tree_bytes(d.path());
    let mut before = before;
    before.retain(|k, _| !k.starts_with("store"));
    after.retain(|k, _| !k.starts_with("store"));
    assert_same_tree(&before, &after, "the directory around the store");
    out
}

fn assert_protocol_error(out: &Output) {
    assert_eq!(code(out), 65, "{}", describe(out));
    assert!(stderr(out).contains("protocol error"), "{}", describe(out));
}

/// Other control characters (`bell\x07`, `del\x7f`) are no protocol error: the receiving side
/// replaces them with its alt char, as Dovecot does (tests/alt_char.rs).
#[test]
fn hostile_mailbox_names_are_protocol_errors() {
    let guid = "30a483158664026b893a000083ecc375";
    for name in [&b"..\x01t..\x01tetc"[..], b"a/b", b"..", b"x\x010y"] {
        let mut line = b"N".to_vec();
        line.extend_from_slice(name);
        line.extend_from_slice(format!("\ty\t{guid}\t1\t2\n.\nD/\t%\n").as_bytes());
        let out = against_hostile_peer(&line);
        assert_protocol_error(&out);
    }
}

#[test]
fn duplicate_mailbox_guids_are_protocol_errors() {
    let guid = "30a483158664026b893a000083ecc375";
    let script = format!("NOne\ty\t{guid}\t1\t2\nNTwo\ty\t{guid}\t1\t2\n.\nD/\t%\n");
    assert_protocol_error(&against_hostile_peer(script.as_bytes()));
}

#[test]
fn records_out_of_order_are_protocol_errors() {
    let script = b"Rsomeguid\t1\n.\n";
    assert_protocol_error(&against_hostile_peer(script));
}

#[test]
fn an_endless_line_is_a_protocol_error_with_bounded_memory() {
    let mut script = b"N".to_vec();
    script.extend(std::iter::repeat_n(b'a', 3 << 20));
    let out = against_hostile_peer(&script);
    assert_protocol_error(&out);
    assert!(stderr(&out).contains("longer than"), "{}", describe(&out));
}

#[test]
fn a_garbage_greeting_is_refused() {
    let d = Dir::new();
    let a = d.join("store");
    source(&a);
    let mut c = boxsync();
    local(&mut c, &a);
    let out = run(c.args([
        "sync",
        "sh",
        "-c",
        "echo HELLO; cat >/dev/null",
        "dsync-server",
    ]));
    assert_protocol_error(&out);
}

#[test]
fn dash_l_waits_for_the_user_lock_then_gives_up() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    source(&a);
    let mut c = boxsync();
    local(&mut c, &a);
    ok(run(c.args(["sync", "-l", "5"]).arg(server_cmd(&b))));
    // Another sync of the same user holds the lock (both hosts are this one: the master
    // locks, in its own store).
    let lock = a.join("boxsync-sync.lock");
    assert!(lock.exists());
    let holder = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
    holder.lock().unwrap();
    let started = std::time::Instant::now();
    let mut c = boxsync();
    local(&mut c, &a);
    let out = run(c.args(["sync", "-l", "1"]).arg(server_cmd(&b)));
    drop(holder);
    assert_eq!(code(&out), 75, "{}", describe(&out));
    assert!(
        stderr(&out).contains("another sync holds"),
        "{}",
        describe(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut c = boxsync();
    local(&mut c, &a);
    ok(run(c.args(["sync", "-l", "1"]).arg(server_cmd(&b))));
}

#[test]
fn dash_capital_s_runs_the_sync_on_a_listener() {
    let d = Dir::new();
    let (users, replicas) = (d.join("users"), d.join("replicas"));
    source(&users.join("alice"));
    let socket = d.join("boxsync.sock");
    let server = Server::start_at(&users, &[], socket.to_str().unwrap());
    let replica = Server::start(&replicas, &[]);
    let replica_dest = format!("tcp:127.0.0.1:{}", replica.port);
    // The client needs no store of its own: the listener syncs alice's store with the replica.
    let run_s = |args: &[&str]| {
        boxsync()
            .args(["-o", "doveadm_password=sekrit"])
            .args(args)
            .output()
            .expect("run boxsync")
    };
    let out = run_s(&[
        "sync",
        "-S",
        socket.to_str().unwrap(),
        "-u",
        "alice",
        "-s",
        "",
        &replica_dest,
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !state.is_empty(),
        "the state comes back on stdout: {}",
        describe(&out)
    );
    assert_same_store(
        &read_maildir(&users.join("alice")),
        &read_maildir(&replicas.join("alice")),
    );

    // A local destination would let a client reach beyond the user's store: refused.
    let elsewhere = d.join("elsewhere");
    let out = run_s(&[
        "backup",
        "-S",
        socket.to_str().unwrap(),
        "-u",
        "alice",
        &maildir(&elsewhere),
    ]);
    assert_eq!(code(&out), 64, "{}", describe(&out));
    assert!(stderr(&out).contains("-S"), "{}", describe(&out));
    assert!(!elsewhere.exists());
    // The same authentication as tcp: a wrong password is refused.
    let out = boxsync()
        .args([
            "-o",
            "doveadm_password=wrong",
            "sync",
            "-S",
            socket.to_str().unwrap(),
        ])
        .args(["-u", "alice", &replica_dest])
        .output()
        .unwrap();
    assert_eq!(code(&out), 77, "{}", describe(&out));
    drop(replica);
    assert!(server.stop().success());
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

#[test]
fn the_listener_runs_at_most_server_max_sessions_at_once() {
    let d = Dir::new();
    let (a, users) = (d.join("a"), d.join("users"));
    source(&a);
    let server = Server::start(&users, &["-o".into(), "server_max_sessions=1".into()]);
    let dest = format!("tcp:127.0.0.1:{}", server.port);
    // A client that connects and says nothing holds the only session.
    let idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = tcp_sync(
        &a,
        &["sync", "-T", "2", "-u", "alice", &dest],
        "sekrit",
        &[],
    );
    assert_eq!(
        code(&out),
        75,
        "the second client waits, then times out: {}",
        describe(&out)
    );
    assert!(!users.join("alice").exists());
    // Once it leaves, the next client is served.
    drop(idle);
    ok(tcp_sync(&a, &["sync", "-u", "alice", &dest], "sekrit", &[]));
    assert_same_store(&read_maildir(&a), &read_maildir(&users.join("alice")));
}
