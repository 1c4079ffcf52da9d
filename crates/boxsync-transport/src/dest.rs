//! What the destination arguments of `sync`/`backup` mean, as doveadm reads them: a mail
//! location, `remote:[login@]host` and `remoteprefix:[login@]host` (through
//! `dsync_remote_cmd`), `tcp:host[:port]` and `tcps:host[:port]`, or a command to run.

use boxsync_model::{Error, Result};

/// The default `dsync_remote_cmd`, Dovecot's with our binary's name.
pub const DEFAULT_REMOTE_CMD: &str = "ssh -l%{login} %{host} boxsync dsync-server -u%u";

/// Mail formats that make an argument a mail location rather than a command.
const MAIL_FORMATS: &[&str] = &[
    "maildir", "mbox", "sdbox", "mdbox", "dbox", "imapc", "pop3c", "mailbox", "imap", "imaps",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A local mail location.
    Local(String),
    /// A command whose stdin/stdout speak the protocol. `prefix_user` is written first
    /// (`remoteprefix:`).
    Command {
        argv: Vec<String>,
        prefix_user: Option<String>,
    },
    /// A boxsync (or doveadm) listener.
    Tcp { host: String, port: u16, tls: bool },
}

/// Reads the destination arguments. `user` is `%u` (the `-u` user, else `$USER`).
pub fn parse(
    args: &[String],
    remote_cmd: &str,
    user: &str,
    default_port: Option<u16>,
) -> Result<Destination> {
    let Some(first) = args.first() else {
        return Err(Error::Usage("no destination given".into()));
    };
    if args.len() == 1 {
        if let Some(rest) = first.strip_prefix("remote:") {
            return remote(rest, remote_cmd, user, false);
        }
        if let Some(rest) = first.strip_prefix("remoteprefix:") {
            return remote(rest, remote_cmd, user, true);
        }
        if let Some(rest) = first.strip_prefix("tcp:") {
            return tcp(rest, false, default_port);
        }
        if let Some(rest) = first.strip_prefix("tcps:") {
            return tcp(rest, true, default_port);
        }
        if let Some((format, _)) = first.split_once(':')
            && MAIL_FORMATS.contains(&format)
        {
            return Ok(Destination::Local(first.clone()));
        }
    }
    if args.len() > 1
        && let Some((format, _)) = first.split_once(':')
        && MAIL_FORMATS.contains(&format)
    {
        return Err(Error::Usage(format!(
            "unexpected arguments after the mail location {first:?}: {:?}",
            &args[1..]
        )));
    }
    // One word with a '/' is a program to run, as in doveadm; when no such program exists it
    // is far more likely a mail location missing its format.
    if args.len() == 1 && !first.contains(' ') && first.contains('/') && !is_executable(first) {
        return Err(Error::Usage(format!(
            "destination {first:?} is neither a mail location nor a program to run \
             (a mail location names its format: maildir:{first})"
        )));
    }
    if args.len() > 1 || first.contains([' ', '/']) {
        let mut argv: Vec<String> = if args.len() == 1 {
            first.split_whitespace().map(str::to_owned).collect()
        } else {
            args.to_vec()
        };
        if argv.is_empty() {
            return Err(Error::Usage("the destination command is empty".into()));
        }
        if !argv.iter().any(|a| a == "dsync-server") {
            argv.push("dsync-server".into());
        }
        return Ok(Destination::Command {
            argv,
            prefix_user: None,
        });
    }
    Err(Error::Usage(format!(
        "destination {first:?} is neither a mail location (maildir:PATH), remote:HOST, \
         tcp:HOST:PORT, tcps:HOST:PORT nor a command"
    )))
}

fn is_executable(path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `remote:[login@]host`: `dsync_remote_cmd` with `%{login}`, `%{host}`, `%u`/`%{user}`
/// expanded; an argument whose variables all expand to nothing is dropped, as Dovecot does
/// (so `-l%{login}` disappears without a login).
fn remote(target: &str, remote_cmd: &str, user: &str, prefix: bool) -> Result<Destination> {
    let (login, host) = match target.split_once('@') {
        Some((l, h)) => (l, h),
        None => ("", target),
    };
    if host.is_empty() {
        return Err(Error::Usage(format!("remote:{target}: no host name")));
    }
    if host.starts_with('-') || login.starts_with('-') {
        return Err(Error::Usage(format!(
            "remote:{target}: a host or login may not start with '-'"
        )));
    }
    let mut argv = Vec::new();
    for word in remote_cmd.split_whitespace() {
        let (expanded, had_vars, all_empty) = expand(word, login, host, user)?;
        if had_vars && all_empty {
            continue;
        }
        argv.push(expanded);
    }
    if argv.is_empty() {
        return Err(Error::Config("dsync_remote_cmd is empty".into()));
    }
    Ok(Destination::Command {
        argv,
        prefix_user: prefix.then(|| user.to_owned()),
    })
}

/// Expands one word; says whether it had variables and whether they were all empty.
fn expand(word: &str, login: &str, host: &str, user: &str) -> Result<(String, bool, bool)> {
    let mut out = String::new();
    let mut had_vars = false;
    let mut all_empty = true;
    let mut rest = word;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| {
                Error::Config(format!("dsync_remote_cmd: unterminated %{{ in {word:?}"))
            })?;
            (&inner[..end], end + 2)
        } else {
            match after.chars().next() {
                Some(c) => (&after[..c.len_utf8()], c.len_utf8()),
                None => {
                    return Err(Error::Config(format!(
                        "dsync_remote_cmd: a lone % at the end of {word:?}"
                    )));
                }
            }
        };
        let value = match name {
            "%" => "%",
            "login" => login,
            "host" => host,
            "u" | "user" | "username" => user,
            other => {
                return Err(Error::Config(format!(
                    "dsync_remote_cmd: unknown variable %{{{other}}} in {word:?}"
                )));
            }
        };
        if name != "%" {
            had_vars = true;
            all_empty &= value.is_empty();
        }
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok((out, had_vars, all_empty))
}

fn tcp(target: &str, tls: bool, default_port: Option<u16>) -> Result<Destination> {
    let scheme = if tls { "tcps" } else { "tcp" };
    let (host, port) = if let Some(inner) = target.strip_prefix('[') {
        // [IPv6]:port
        let end = inner
            .find(']')
            .ok_or_else(|| Error::Usage(format!("{scheme}:{target}: unterminated [")))?;
        let port = inner[end + 1..].strip_prefix(':');
        (inner[..end].to_owned(), port)
    } else {
        match target.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_owned(), Some(p)),
            _ => (target.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(Error::Usage(format!("{scheme}:{target}: no host name")));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| Error::Usage(format!("{scheme}:{target}: bad port {p:?}")))?,
        None => default_port.ok_or_else(|| {
            Error::Config(format!(
                "{scheme}:{target}: no port (use {scheme}:HOST:PORT or -o doveadm_port=PORT)"
            ))
        })?,
    };
    Ok(Destination::Tcp { host, port, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Destination> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args, DEFAULT_REMOTE_CMD, "alice", None)
    }

    fn argv(d: Destination) -> Vec<String> {
        match d {
            Destination::Command { argv, .. } => argv,
            other => panic!("not a command: {other:?}"),
        }
    }

    #[test]
    fn mail_locations_stay_local() {
        assert_eq!(
            p(&["maildir:/srv/mail/a"]).unwrap(),
            Destination::Local("maildir:/srv/mail/a".into())
        );
        for url in [
            "imap://alice@mail.example.org/",
            "imaps://alice@[::1]:993/",
            "imapc:",
        ] {
            assert_eq!(p(&[url]).unwrap(), Destination::Local(url.into()), "{url}");
        }
    }

    #[test]
    fn extra_arguments_after_a_location_are_usage_errors() {
        assert!(matches!(p(&["maildir:/b", "extra"]), Err(Error::Usage(_))));
    }

    #[test]
    fn remote_drops_empty_login() {
        assert_eq!(
            argv(p(&["remote:backup.example.com"]).unwrap()),
            [
                "ssh",
                "backup.example.com",
                "boxsync",
                "dsync-server",
                "-ualice"
            ]
        );
        assert_eq!(
            argv(p(&["remote:vmail@backup.example.com"]).unwrap()),
            [
                "ssh",
                "-lvmail",
                "backup.example.com",
                "boxsync",
                "dsync-server",
                "-ualice"
            ]
        );
        match p(&["remoteprefix:h"]).unwrap() {
            Destination::Command { prefix_user, .. } => {
                assert_eq!(prefix_user.as_deref(), Some("alice"))
            }
            other => panic!("{other:?}"),
        }
        assert!(p(&["remote:-oProxyCommand=x"]).is_err(), "option injection");
    }

    #[test]
    fn commands_get_dsync_server() {
        assert_eq!(
            argv(p(&["ssh -i key mail@host boxsync -o mail_location=maildir:~/Maildir"]).unwrap()),
            [
                "ssh",
                "-i",
                "key",
                "mail@host",
                "boxsync",
                "-o",
                "mail_location=maildir:~/Maildir",
                "dsync-server"
            ]
        );
        assert_eq!(
            argv(p(&["doveadm", "-c", "C", "dsync-server", "-u", "alice"]).unwrap()),
            ["doveadm", "-c", "C", "dsync-server", "-u", "alice"]
        );
        assert_eq!(argv(p(&["/bin/sh"]).unwrap()), ["/bin/sh", "dsync-server"]);
        assert!(
            matches!(p(&["/backup/Maildir"]), Err(Error::Usage(m)) if m.contains("maildir:/backup/Maildir")),
            "a path that is no program hints at the format"
        );
    }

    #[test]
    fn tcp_addresses() {
        assert_eq!(
            p(&["tcp:replica.example.com:12345"]).unwrap(),
            Destination::Tcp {
                host: "replica.example.com".into(),
                port: 12345,
                tls: false
            }
        );
        assert_eq!(
            p(&["tcps:[::1]:12346"]).unwrap(),
            Destination::Tcp {
                host: "::1".into(),
                port: 12346,
                tls: true
            }
        );
        assert!(matches!(p(&["tcp:host"]), Err(Error::Config(_))));
        assert!(p(&["tcp:host:0"]).is_err());
        assert!(p(&["tcp:host:http"]).is_err());
        assert!(p(&["nonsense"]).is_err());
    }

    #[test]
    fn unknown_variables_are_config_errors() {
        let args = vec!["remote:h".to_owned()];
        assert!(matches!(
            parse(&args, "ssh %{nope} x", "a", None),
            Err(Error::Config(_))
        ));
    }
}
