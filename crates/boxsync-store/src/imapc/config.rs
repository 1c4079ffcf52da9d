//! An IMAP account as a mail location: `imapc:[INDEXDIR]` with Dovecot's `imapc_*` settings, or
//! `imap://user@host[:port]/` and `imaps://user@host[:port]/`, where the URL overrides the
//! host, port, user and TLS settings.

use crate::location::expand_home;
use boxsync_imap::{Config, Secret, Ssl};
use boxsync_model::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Dovecot's default `imapc_cmd_timeout` is 5 minutes; a sync that waits that long for one
/// reply is better told quickly that the server is gone.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest message boxsync takes from a server: bigger literals are refused before any
/// memory is set aside for them.
const MAX_MESSAGE_SIZE: u64 = 1 << 30;

#[derive(Clone, Debug)]
pub struct ImapcLocation {
    pub config: Config,
    /// Where boxsync keeps what the server cannot: mailbox GUIDs, modseqs, the expunge
    /// journal, and the UIDs the other side knows each message by.
    pub index_dir: PathBuf,
    /// `dsync_hashed_headers`: the headers whose hash names a message when the server offers
    /// no GUID.
    pub hashed_headers: Vec<String>,
    /// `imapc_max_connections`: connections used at once (one for changes, the rest fetch).
    pub max_connections: usize,
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err(Error::Config(format!("{key}={value}: expected yes or no"))),
    }
}

fn parse_size(key: &str, value: &str) -> Result<u64> {
    let (digits, mult) = match value.trim().to_ascii_lowercase() {
        v if v.ends_with('k') => (v[..v.len() - 1].to_owned(), 1024),
        v if v.ends_with('m') => (v[..v.len() - 1].to_owned(), 1024 * 1024),
        v if v.ends_with('g') => (v[..v.len() - 1].to_owned(), 1024 * 1024 * 1024),
        v => (v, 1),
    };
    digits.trim().parse::<u64>().map(|n| n * mult).map_err(|_| {
        Error::Config(format!(
            "{key}={value}: expected a size such as 100k or 10M"
        ))
    })
}

impl ImapcLocation {
    /// Whether `text` names an IMAP account rather than a directory.
    pub fn is_imap(text: &str) -> bool {
        text == "imapc"
            || text.starts_with("imapc:")
            || text.starts_with("imap://")
            || text.starts_with("imaps://")
    }

    /// Parses `text` with the `imapc_*` settings that `setting` looks up.
    pub fn parse(text: &str, setting: &dyn Fn(&str) -> Option<String>) -> Result<ImapcLocation> {
        let get = |key: &str| setting(key).filter(|v| !v.is_empty());
        let mut host = get("imapc_host");
        let mut port: u16 = match get("imapc_port") {
            Some(p) => p
                .parse()
                .map_err(|_| Error::Config(format!("imapc_port={p}: not a port number")))?,
            None => 0,
        };
        let mut user = get("imapc_user");
        let mut ssl = match get("imapc_ssl").as_deref() {
            None | Some("no") => Ssl::No,
            Some("imaps") => Ssl::Imaps,
            Some("starttls") => Ssl::Starttls,
            Some(other) => {
                return Err(Error::Config(format!(
                    "imapc_ssl={other}: expected no, imaps or starttls"
                )));
            }
        };
        let mut index_dir = None;
        if let Some(rest) = text
            .strip_prefix("imap://")
            .map(|r| (r, false))
            .or_else(|| text.strip_prefix("imaps://").map(|r| (r, true)))
        {
            let (rest, tls) = rest;
            if tls {
                ssl = Ssl::Imaps;
            }
            let authority = rest.split('/').next().unwrap_or("");
            let (who, hostport) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            if let Some(u) = who {
                if u.contains(':') {
                    // The location is not repeated: it holds the password.
                    return Err(Error::Usage(
                        "the mail location's URL holds a password: put it in imapc_password, \
                         imapc_password_file or imapc_password_command instead"
                            .into(),
                    ));
                }
                user = Some(percent_decode(u));
            }
            let (h, p) = match hostport.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                    h,
                    Some(p.parse::<u16>().map_err(|_| {
                        Error::Usage(format!("mail location {text:?}: bad port {p:?}"))
                    })?),
                ),
                _ => (hostport, None),
            };
            let h = h.trim_start_matches('[').trim_end_matches(']');
            if h.is_empty() {
                return Err(Error::Usage(format!("mail location {text:?} has no host")));
            }
            host = Some(h.to_owned());
            port = p.unwrap_or(0);
        } else {
            let rest = text
                .strip_prefix("imapc")
                .map(|r| r.strip_prefix(':').unwrap_or(r))
                .ok_or_else(|| Error::Usage(format!("mail location {text:?} is not imapc:")))?;
            if !rest.is_empty() {
                index_dir = Some(expand_home(rest.split(':').next().unwrap_or(rest)));
            }
        }
        let host = host.ok_or_else(|| {
            Error::Config(format!(
                "mail location {text:?}: imapc_host is not set (use -o imapc_host=HOST)"
            ))
        })?;
        let user = user.ok_or_else(|| {
            Error::Config(format!(
                "mail location {text:?}: imapc_user is not set (use -o imapc_user=NAME)"
            ))
        })?;
        let secret = if let Some(p) = setting("imapc_password") {
            Secret::Password(p)
        } else if let Some(f) = get("imapc_password_file") {
            Secret::File(expand_home(&f))
        } else if let Some(c) = get("imapc_password_command") {
            Secret::Command(c)
        } else {
            return Err(Error::Config(format!(
                "mail location {text:?}: no password (set imapc_password, imapc_password_file \
                 or imapc_password_command)"
            )));
        };
        let ssl_verify = match get("imapc_ssl_verify") {
            Some(v) => parse_bool("imapc_ssl_verify", &v)?,
            None => true,
        };
        let sasl_mechanisms = get("imapc_sasl_mechanisms")
            .map(|v| {
                v.split([' ', ','])
                    .filter(|m| !m.is_empty())
                    .map(|m| m.to_ascii_uppercase())
                    .collect()
            })
            .unwrap_or_default();
        let max_bytes_per_second = match get("imapc_max_bytes_per_second") {
            Some(v) => Some(parse_size("imapc_max_bytes_per_second", &v)?).filter(|&n| n > 0),
            None => None,
        };
        let max_connections = match get("imapc_max_connections") {
            Some(v) => v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                Error::Config(format!(
                    "imapc_max_connections={v}: expected a number above 0"
                ))
            })?,
            None => 2,
        };
        let timeout = match get("imapc_cmd_timeout") {
            Some(v) => {
                Duration::from_secs(v.trim_end_matches('s').trim().parse().map_err(|_| {
                    Error::Config(format!("imapc_cmd_timeout={v}: expected seconds"))
                })?)
            }
            None => DEFAULT_TIMEOUT,
        };
        let hashed_headers = get("dsync_hashed_headers")
            .map(|v| {
                v.split([' ', ','])
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| vec!["Date".to_owned(), "Message-ID".to_owned()]);
        let index_dir = index_dir.unwrap_or_else(|| default_index_dir(&user, &host, port));
        Ok(ImapcLocation {
            config: Config {
                host,
                port,
                ssl,
                ssl_verify,
                ca_file: get("ssl_client_ca_file").map(|f| expand_home(f.trim_start_matches('<'))),
                user,
                master_user: get("imapc_master_user"),
                secret,
                sasl_mechanisms,
                timeout,
                max_bytes_per_second,
                max_message_size: MAX_MESSAGE_SIZE,
                ..Config::new(
                    String::new(),
                    String::new(),
                    Secret::Password(String::new()),
                )
            },
            index_dir,
            hashed_headers,
            max_connections,
        })
    }

    pub fn index_path(&self) -> PathBuf {
        self.index_dir.join("boxsync.index.sqlite")
    }

    /// `imapc:user@host:port`, for messages (never the password).
    pub fn describe(&self) -> String {
        let c = &self.config;
        let port = if c.port == 0 {
            match c.ssl {
                Ssl::Imaps => 993,
                _ => 143,
            }
        } else {
            c.port
        };
        format!("imapc:{}@{}:{}", c.user, c.host, port)
    }
}

/// `$XDG_STATE_HOME/boxsync/imapc/USER@HOST:PORT` (`~/.local/state/…` by default): one index
/// per account, so two accounts never share UIDs or GUIDs.
fn default_index_dir(user: &str, host: &str, port: u16) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| expand_home("~/.local/state"));
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect()
    };
    let name = if port == 0 {
        format!("{}@{}", safe(user), safe(host))
    } else {
        format!("{}@{}:{port}", safe(user), safe(host))
    };
    base.join("boxsync").join("imapc").join(name)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            let b = (hi * 16 + lo) as u8;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn imapc_takes_the_settings() {
        let s = settings(&[
            ("imapc_host", "imap.example.com"),
            ("imapc_user", "alice"),
            ("imapc_password", "pw"),
            ("imapc_ssl", "imaps"),
            ("imapc_max_bytes_per_second", "10M"),
        ]);
        let l = ImapcLocation::parse("imapc:", &s).unwrap();
        assert_eq!(l.config.host, "imap.example.com");
        assert!(matches!(l.config.ssl, Ssl::Imaps));
        assert_eq!(l.config.max_bytes_per_second, Some(10 * 1024 * 1024));
        assert_eq!(l.describe(), "imapc:alice@imap.example.com:993");
        assert!(
            l.index_dir
                .ends_with("boxsync/imapc/alice@imap.example.com")
        );
        let l = ImapcLocation::parse("imapc:/var/idx", &s).unwrap();
        assert_eq!(l.index_dir, PathBuf::from("/var/idx"));
    }

    #[test]
    fn urls_override_host_port_user_and_tls() {
        let s = settings(&[("imapc_password", "pw"), ("imapc_user", "bob")]);
        let l = ImapcLocation::parse("imaps://al%40ice@mail.example.org:1993/", &s).unwrap();
        assert_eq!(l.config.user, "al@ice");
        assert_eq!(l.config.host, "mail.example.org");
        assert_eq!(l.config.port, 1993);
        assert!(matches!(l.config.ssl, Ssl::Imaps));
        let l = ImapcLocation::parse("imap://mail.example.org", &s).unwrap();
        assert_eq!(l.config.user, "bob");
        assert_eq!(l.config.port, 0);
        assert!(matches!(l.config.ssl, Ssl::No));
    }

    #[test]
    fn missing_and_bad_settings_name_the_setting() {
        let e = ImapcLocation::parse("imapc:", &settings(&[])).unwrap_err();
        assert!(e.to_string().contains("imapc_host"), "{e}");
        let e = ImapcLocation::parse(
            "imapc:",
            &settings(&[("imapc_host", "h"), ("imapc_user", "u")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
        let e = ImapcLocation::parse(
            "imapc:",
            &settings(&[
                ("imapc_host", "h"),
                ("imapc_user", "u"),
                ("imapc_password", "p"),
                ("imapc_ssl", "maybe"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("imapc_ssl"), "{e}");
        let e = ImapcLocation::parse("imap://u:secret@h/", &settings(&[("imapc_password", "p")]))
            .unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
