//! Syncs whose other store is not in this process: the master over a child process or a tcp
//! connection, the far end (`dsync-server` on stdin/stdout, or one session of `server
//! --listen`), and the in-process wire link the tests switch on.

use crate::stores::{self, StoreSettings};
use boxsync_brain::link::Link;
use boxsync_brain::{Mode, Outcome, Role};
use boxsync_model::{Error, ExitCode, Result};
use boxsync_proto::{Finish, Record};
use boxsync_transport::net::Conn;
use boxsync_transport::rawlog::RawLog;
use boxsync_transport::{LinkOptions, StreamLink, doveadm, dry_run};
use std::path::Path;
use std::time::Duration;

/// Transport settings shared by both ends.
#[derive(Clone, Debug)]
pub struct Wire {
    pub timeout: Duration,
    pub rawlog: Option<RawLog>,
}

impl Wire {
    pub fn options(&self, store_root: &Path) -> LinkOptions {
        let mut o = LinkOptions::new(store_root.to_path_buf());
        o.timeout = self.timeout;
        o.rawlog = self.rawlog.clone();
        o
    }
}

/// Expands `%u` (user), `%n` (its local part), `%d` (its domain) and `%%` in a mail location.
pub fn expand_location(template: &str, user: &str) -> Result<String> {
    let (local, domain) = user.split_once('@').unwrap_or((user, ""));
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(user),
            Some('n') => out.push_str(local),
            Some('d') => out.push_str(domain),
            Some('%') => out.push('%'),
            other => {
                return Err(Error::Config(format!(
                    "mail_location {template:?}: unknown variable %{}",
                    other.map_or(String::new(), String::from)
                )));
            }
        }
    }
    Ok(out)
}

/// A user name that may go into a path: no separators, no parent references, no controls.
pub fn check_user(user: &str) -> Result<()> {
    let bad = user.is_empty()
        || user.len() > 255
        || user.contains('/')
        || user.contains("..")
        || user.starts_with(['.', '-', '~'])
        || user.chars().any(char::is_control);
    if bad {
        return Err(Error::NoUser(format!(
            "invalid user name {:?}",
            user.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// The slave's whole session on one link: learns the mode from the master's handshake,
/// opens (or creates) the user's store accordingly, and syncs. Failures go to the master in
/// a finish record, and are returned for our own log.
///
/// A master that asks for a dry run gets the store opened for one, which changes nothing, and
/// the confirmation and report of `boxsync_transport::dry_run` (the store is opened after
/// the handshake came, so it is never opened for writing first).
pub fn serve_dsync(
    mut link: StreamLink,
    location: &str,
    settings: &StoreSettings,
) -> (Result<Outcome>, Vec<String>) {
    let store = (|| {
        let (mode, dry_run) = match link.peek()? {
            Record::Handshake(h) => (boxsync_brain::settings_of(h).mode, h.dry_run),
            other => {
                return Err(Error::data(format!(
                    "dsync protocol error: expected the handshake, got {}",
                    other.letter()
                )));
            }
        };
        let is_source = matches!(
            mode,
            Mode::Backup {
                source: Role::Slave
            } | Mode::OneWay {
                source: Role::Slave
            }
        );
        if dry_run {
            let location = stores::MailLocation::parse(location, settings)?;
            if !is_source {
                location.check_writable()?;
            }
            let (store, log) = location.open_dry_run(!is_source)?;
            Ok((store, Some(log)))
        } else {
            Ok((stores::open(location, !is_source, settings)?, None))
        }
    })();
    let (mut store, dry_log) = match store {
        Ok((s, log)) => (s.in_namespace(&settings.namespace), log),
        Err(e) => {
            refuse(link, &e);
            return (Err(e), Vec::new());
        }
    };
    let mut messages: Vec<String> = store
        .scan_errors
        .iter()
        .map(|(name, e, _)| format!("mailbox {name}: {e}"))
        .collect();
    let result = match dry_log {
        Some(log) => {
            link.spool_in(store.spool.clone());
            let describe = store.store.describe();
            let mut dry = dry_run::SlaveLink::new(&mut link, describe, log);
            boxsync_brain::run(Role::Slave, &mut *store.store, &mut dry, None)
        }
        None => boxsync_brain::run(Role::Slave, &mut *store.store, &mut link, None),
    };
    let closed = link.finish();
    if let Ok(o) = &result {
        messages.extend(o.errors.iter().cloned());
    }
    if let Err(e) = closed {
        tracing::debug!("closing the link: {e}");
    }
    (result, messages)
}

/// `dsync-server` on stdin/stdout.
pub fn dsync_server_stdio(
    location: &str,
    settings: &StoreSettings,
    wire: &Wire,
) -> Result<ExitCode> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::temp(format!("stdin: {e}")))?;
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::temp(format!("stdout: {e}")))?;
    let link = StreamLink::new(
        std::fs::File::from(stdin),
        std::fs::File::from(stdout),
        || {},
        wire.options(&stores::spool_root(location, settings)),
    );
    let (result, messages) = serve_dsync(link, location, settings);
    for m in &messages {
        eprintln!("boxsync: Error: {m}");
    }
    let outcome = result?;
    Ok(outcome.exit_code())
}

/// Runs a whole command (`-S`) for a user: (user, command, arguments, stdout, stderr).
pub type CommandRunner = dyn Fn(&str, &str, &[String], &mut dyn std::io::Write, &mut dyn std::io::Write) -> ExitCode
    + Send
    + Sync;

/// One session of `server --listen`: authenticate, map the user to a store, sync (or run
/// the `-S` command the client sent).
pub fn listener_session(
    conn: Conn,
    peer: String,
    template: &str,
    password: &str,
    settings: &StoreSettings,
    wire: &Wire,
    run_command: &CommandRunner,
) {
    if let Err(e) = session(conn, &peer, template, password, settings, wire, run_command) {
        tracing::warn!("{peer}: {e}");
    }
}

fn session(
    mut conn: Conn,
    peer: &str,
    template: &str,
    password: &str,
    settings: &StoreSettings,
    wire: &Wire,
    run_command: &CommandRunner,
) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)));
    let request = doveadm::server_handshake(&mut conn, password, wire.rawlog.as_ref())?;
    conn.set_read_timeout(None);
    let write = conn.try_clone()?;
    let closer = write.try_clone()?;
    let (mut mux, log) = doveadm::multiplex(write);
    if request.command != "dsync-server" {
        let reply = command_reply(&request, peer, &log, run_command);
        let _ = std::io::Write::write_all(&mut mux, &reply);
        closer.shutdown_write();
        return Ok(());
    }
    let location =
        check_user(&request.user).and_then(|()| expand_location(template, &request.user));
    let spool = location
        .as_deref()
        .map(|l| stores::spool_root(l, settings))
        .unwrap_or_else(|_| std::env::temp_dir());
    let link = StreamLink::new(
        conn,
        mux,
        move || closer.shutdown_write(),
        wire.options(&spool),
    );
    let location = match location {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("{peer}: user {:?}: {e}", request.user);
            refuse(link, &e);
            return Ok(());
        }
    };
    tracing::info!("{peer}: dsync for user {} at {location}", request.user);
    let (result, messages) = serve_dsync(link, &location, settings);
    for m in &messages {
        tracing::warn!("{peer}: user {}: {m}", request.user);
        log.line(&format!("Error: {m}"));
    }
    match result {
        Ok(o) => tracing::info!(
            "{peer}: user {}: done, saved {} messages, expunged {}",
            request.user,
            o.saved,
            o.expunged
        ),
        Err(e) => {
            tracing::warn!("{peer}: user {}: {e}", request.user);
            log.line(&format!("Error: {e}"));
        }
    }
    Ok(())
}

/// Runs a client's `-S` command; its errors go to the log channel now, and the returned
/// bytes (its output, then `+` or `-<exit code>`) to channel 0.
fn command_reply<W: std::io::Write>(
    request: &doveadm::ServerRequest,
    peer: &str,
    log: &doveadm::LogChannel<W>,
    run_command: &CommandRunner,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = match check_user(&request.user) {
        Ok(()) => {
            tracing::info!(
                "{peer}: {} {:?} for user {}",
                request.command,
                request.args,
                request.user
            );
            run_command(
                &request.user,
                &request.command,
                &request.args,
                &mut out,
                &mut err,
            )
        }
        Err(e) => {
            err.extend_from_slice(format!("boxsync: Error: {e}\n").as_bytes());
            e.exit_code()
        }
    };
    for line in String::from_utf8_lossy(&err).lines() {
        log.line(line);
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(
        match code {
            ExitCode::Ok => "\n+\n".to_owned(),
            c => format!("\n-{}\n", c.code()),
        }
        .as_bytes(),
    );
    out
}

/// Tells the master why this session cannot sync, in place of the slave's handshake.
fn refuse(mut link: StreamLink, e: &Error) {
    let _ = link.send(Record::Finish(Finish {
        error: Some(e.to_string()),
        mail_error: boxsync_brain::mail_error_of(e.exit_code()),
        require_full_resync: false,
        dry_run: None,
    }));
    let _ = link.finish();
}

/// A link over a tcp/tls connection to a doveadm-protocol server, after the handshake.
pub fn tcp_link(conn: Conn, options: LinkOptions) -> Result<StreamLink> {
    let write = conn.try_clone()?;
    let closer = conn.try_clone()?;
    let read = doveadm::MultiplexReader::new(conn, "boxsync: dsync-remote".into());
    Ok(StreamLink::new(
        read,
        write,
        move || closer.shutdown_write(),
        options,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_expand_user_parts() {
        assert_eq!(
            expand_location("maildir:/srv/%d/%n/Maildir", "bob@example.org").unwrap(),
            "maildir:/srv/example.org/bob/Maildir"
        );
        assert_eq!(
            expand_location("maildir:/srv/mail/%u", "alice").unwrap(),
            "maildir:/srv/mail/alice"
        );
        assert!(expand_location("maildir:/x/%z", "a").is_err());
    }

    #[test]
    fn users_cannot_escape_their_store() {
        for bad in [
            "", "..", "a/b", "../etc", ".hidden", "-rf", "a\nb", "~root", "x..y",
        ] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "bob@example.org", "a.b-c_d"] {
            assert!(check_user(good).is_ok(), "{good:?}");
        }
    }
}
