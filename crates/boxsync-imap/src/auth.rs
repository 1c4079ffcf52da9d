//! Connecting: tcp/tls, the greeting, STARTTLS, CAPABILITY, login (LOGIN or SASL), and the
//! session setup after it (ID, ENABLE QRESYNC/CONDSTORE, NAMESPACE).

use crate::conn::{self, Stream};
use crate::session::{Incoming, Receiver, What, code_name};
use crate::{Config, Secret, Session, Ssl};
use boxsync_model::{Error, Result};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::{IString, NString, Vec1};
use imap_codec::imap_types::extensions::compress::CompressionAlgorithm;
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::response::{Capability, Code, Data, GreetingKind, StatusKind};
use imap_codec::imap_types::secret::Secret as WireSecret;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

impl Session {
    /// Connects, logs in and prepares the session.
    ///
    /// Errors: tcp connect refused, DNS failure or timeout: `Temp` naming host:port; a TLS
    /// certificate the trust roots do not vouch for: `Permission`; other TLS failures:
    /// `Temp`; STARTTLS asked for but not offered: `Config`; rejected credentials:
    /// `Permission`; a password file or command that fails: `Config`.
    pub fn connect(cfg: &Config) -> Result<Session> {
        let host = cfg.host.as_str();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::io("starting the IMAP client runtime", e))?;
        let port = match (cfg.port, cfg.ssl) {
            (0, Ssl::Imaps) => 993,
            (0, _) => 143,
            (p, _) => p,
        };
        let tls = match cfg.ssl {
            Ssl::No => None,
            Ssl::Imaps | Ssl::Starttls => Some(conn::tls_config(
                host,
                cfg.ca_file.as_deref(),
                cfg.ssl_verify,
            )?),
        };
        let tcp = rt.block_on(conn::connect_tcp(host, port, cfg.timeout))?;
        let stream = match (&tls, cfg.ssl) {
            (Some(config), Ssl::Imaps) => {
                let s = rt.block_on(conn::tls_handshake(tcp, host, config.clone(), cfg.timeout))?;
                Stream::Tls(Box::new(s))
            }
            _ => Stream::Tcp(tcp),
        };
        let mut session = Session::new(rt, stream, cfg);
        let preauth = session.greeting()?;
        if cfg.ssl == Ssl::Starttls {
            let Some(config) = tls else {
                return Err(Error::Config("imapc: STARTTLS without a TLS config".into()));
            };
            session.starttls(config)?;
        }
        if !preauth {
            if session.caps.is_empty() {
                session.capability()?;
            }
            session.login(cfg)?;
        }
        if cfg.compress && session.has("COMPRESS=DEFLATE") {
            session.compress()?;
        }
        session.setup()?;
        Ok(session)
    }

    /// Reads the greeting; returns whether it was PREAUTH.
    fn greeting(&mut self) -> Result<bool> {
        loop {
            if let Incoming::Greeting(greeting) = self.next_in()? {
                let text = greeting.text.inner();
                if text.contains("Dovecot") {
                    self.dovecot = true;
                }
                if let Some(Code::Capability(caps)) = &greeting.code {
                    self.set_caps(caps.as_ref());
                }
                return match greeting.kind {
                    GreetingKind::Ok => Ok(false),
                    GreetingKind::PreAuth => Ok(true),
                    GreetingKind::Bye => Err(Error::temp(format!(
                        "imapc({}): server refused the connection: {text}",
                        self.host
                    ))),
                };
            }
        }
    }

    fn set_caps(&mut self, caps: &[Capability]) {
        self.caps = caps
            .iter()
            .map(|c| c.to_string().to_ascii_uppercase())
            .collect();
    }

    pub(crate) fn capability(&mut self) -> Result<()> {
        let mut caps = None;
        self.run(
            CommandBody::Capability,
            &What::new("CAPABILITY", None),
            &mut |incoming| {
                if let Incoming::Data(Data::Capability(c), _) = incoming {
                    caps = Some(c);
                }
                Ok(())
            },
        )?;
        match caps {
            Some(caps) => {
                self.set_caps(caps.as_ref());
                Ok(())
            }
            None => Err(Error::data(format!(
                "imapc({}): no CAPABILITY in the answer to CAPABILITY",
                self.host
            ))),
        }
    }

    fn starttls(&mut self, config: Arc<rustls::ClientConfig>) -> Result<()> {
        if self.caps.is_empty() {
            self.capability()?;
        }
        if !self.has("STARTTLS") {
            return Err(Error::Config(format!(
                "imapc({}): ssl=starttls but the server does not offer STARTTLS",
                self.host
            )));
        }
        self.run(
            CommandBody::StartTLS,
            &What::new("STARTTLS", None),
            &mut |_| Ok(()),
        )?;
        let Stream::Tcp(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(Error::Usage(
                "imapc: STARTTLS on a stream that is not plain tcp".into(),
            ));
        };
        let tls = self
            .rt
            .block_on(conn::tls_handshake(tcp, &self.host, config, self.timeout))
            .map_err(|e| self.poison(e))?;
        self.stream = Stream::Tls(Box::new(tls));
        // Nothing said before the handshake may be trusted (RFC 3501 6.2.1): start over
        // with a fresh parser and forget the capabilities.
        self.rx = Receiver::new(&self.host, self.max_literal, false);
        self.caps.clear();
        self.capability()
    }

    fn login(&mut self, cfg: &Config) -> Result<()> {
        let secret = read_secret(&cfg.secret, &self.host)?;
        let mechanism = if cfg.sasl_mechanisms.is_empty() {
            (self.has("LOGINDISABLED") || cfg.master_user.is_some()).then(|| "PLAIN".to_owned())
        } else {
            // The first configured mechanism the server offers; else the first configured,
            // since some servers do not list every mechanism they accept.
            let offered = cfg
                .sasl_mechanisms
                .iter()
                .find(|m| self.has(&format!("AUTH={m}")));
            Some(
                offered
                    .unwrap_or(&cfg.sasl_mechanisms[0])
                    .to_ascii_uppercase(),
            )
        };
        let what = What::new("LOGIN", None);
        self.begin(&what)?;
        let done = match mechanism {
            None => {
                let body = CommandBody::login(cfg.user.as_str(), secret.as_str())
                    .map_err(|e| {
                        Error::Config(format!(
                            "imapc({}): user name or password cannot be sent with LOGIN: {e:?}",
                            self.host
                        ))
                    })?
                    .into_static();
                let tag = self.send(body);
                self.wait(&tag, &mut |_| Ok(()))?
            }
            Some(mechanism) => self.authenticate(&mechanism, cfg, &secret)?,
        };
        if done.kind != StatusKind::Ok {
            let code = code_name(done.code.as_ref());
            let text = done.text.inner();
            if code == "UNAVAILABLE" || code == "SERVERBUG" {
                return Err(Error::temp(format!(
                    "imapc({}): login for user {} failed, server trouble [{code}]: {text}",
                    self.host, cfg.user
                )));
            }
            return Err(Error::Permission(format!(
                "imapc({}): authentication failed for user {}: {text}",
                self.host, cfg.user
            )));
        }
        match &done.code {
            Some(Code::Capability(caps)) => self.set_caps(caps.as_ref()),
            _ => self.capability()?,
        }
        Ok(())
    }

    fn authenticate(
        &mut self,
        mechanism: &str,
        cfg: &Config,
        secret: &str,
    ) -> Result<imap_codec::imap_types::response::StatusBody<'static>> {
        let user = cfg.user.as_str();
        let port = self.stream_port();
        let (mech, first, mut later): (AuthMechanism, Option<Vec<u8>>, VecDeque<Vec<u8>>) =
            match mechanism {
                "PLAIN" => {
                    // authzid NUL authcid NUL password; a master user logs in for `user`.
                    let (authz, authc) = match &cfg.master_user {
                        Some(master) => (user, master.as_str()),
                        None => ("", user),
                    };
                    let ir = [authz.as_bytes(), authc.as_bytes(), secret.as_bytes()].join(&0u8);
                    (AuthMechanism::Plain, Some(ir), VecDeque::new())
                }
                "LOGIN" => (
                    AuthMechanism::Login,
                    None,
                    VecDeque::from([user.as_bytes().to_vec(), secret.as_bytes().to_vec()]),
                ),
                "XOAUTH2" => (
                    AuthMechanism::XOAuth2,
                    Some(format!("user={user}\x01auth=Bearer {secret}\x01\x01").into_bytes()),
                    VecDeque::new(),
                ),
                "OAUTHBEARER" => (
                    AuthMechanism::OAuthBearer,
                    Some(
                        format!(
                            "n,a={user},\x01host={}\x01port={port}\x01auth=Bearer {secret}\x01\x01",
                            self.host
                        )
                        .into_bytes(),
                    ),
                    VecDeque::new(),
                ),
                other => {
                    return Err(Error::Config(format!(
                        "imapc({}): unsupported SASL mechanism {other}",
                        self.host
                    )));
                }
            };
        // After the last step, a failing OAuth server sends an error challenge that wants an
        // empty answer (XOAUTH2) or a lone ^A (OAUTHBEARER, RFC 7628 3.2.3).
        let fallback: &[u8] = if mechanism == "OAUTHBEARER" {
            b"\x01"
        } else {
            b""
        };
        let body = match first {
            Some(ir) if self.has("SASL-IR") => CommandBody::authenticate_with_ir(mech, ir),
            Some(ir) => {
                later.push_front(ir);
                CommandBody::authenticate(mech)
            }
            None => CommandBody::authenticate(mech),
        }
        .into_static();
        let tag = self.send(body);
        loop {
            match self.next_in()? {
                Incoming::Tagged(t) if t.tag.inner() == tag => return Ok(t.body),
                Incoming::AuthContinue => {
                    let answer = later.pop_front().unwrap_or_else(|| fallback.to_vec());
                    let data = AuthenticateData::Continue(WireSecret::new(Cow::Owned(answer)));
                    if self.rx.client.set_authenticate_data(data).is_err() {
                        return Err(self.poison(Error::data(format!(
                            "imapc({}): unexpected AUTHENTICATE continuation",
                            self.host
                        ))));
                    }
                }
                _ => {}
            }
        }
    }

    fn stream_port(&self) -> u16 {
        match &self.stream {
            Stream::Tcp(s) => s.peer_addr().map(|a| a.port()).unwrap_or(0),
            Stream::Tls(s) => s.get_ref().0.peer_addr().map(|a| a.port()).unwrap_or(0),
            Stream::Closed => 0,
        }
    }

    /// Turns on COMPRESS=DEFLATE: everything after the tagged OK is raw deflate.
    fn compress(&mut self) -> Result<()> {
        let body = CommandBody::Compress {
            algorithm: CompressionAlgorithm::Deflate,
        };
        let r = self.run(body, &What::new("COMPRESS", None), &mut |_| Ok(()));
        if r.is_ok() {
            self.deflate = Some(crate::conn::Deflate::new());
        }
        self.soft(r)
    }

    /// ID, ENABLE and NAMESPACE; none of them is essential, so a NO is only logged.
    fn setup(&mut self) -> Result<()> {
        if self.has("ID") {
            let body = CommandBody::Id {
                parameters: Some(vec![
                    (
                        IString::try_from("name").map_err(|_| Error::Usage("ID".into()))?,
                        NString::try_from("boxsync").map_err(|_| Error::Usage("ID".into()))?,
                    ),
                    (
                        IString::try_from("version").map_err(|_| Error::Usage("ID".into()))?,
                        NString::try_from(env!("CARGO_PKG_VERSION"))
                            .map_err(|_| Error::Usage("ID".into()))?,
                    ),
                ]),
            }
            .into_static();
            let mut dovecot = false;
            let r = self.run(body, &What::new("ID", None), &mut |incoming| {
                if let Incoming::Data(
                    Data::Id {
                        parameters: Some(p),
                    },
                    _,
                ) = incoming
                {
                    dovecot |= p.iter().any(|(k, v)| {
                        k.as_ref().eq_ignore_ascii_case(b"name")
                            && v.0.as_ref().is_some_and(|v| {
                                v.as_ref()
                                    .windows(7)
                                    .any(|w| w.eq_ignore_ascii_case(b"dovecot"))
                            })
                    });
                }
                Ok(())
            });
            self.dovecot |= dovecot;
            self.soft(r)?;
        }
        if self.has("ENABLE") && (self.has("QRESYNC") || self.has("CONDSTORE")) {
            let wanted = if self.has("QRESYNC") {
                "QRESYNC"
            } else {
                "CONDSTORE"
            };
            let cap = CapabilityEnable::try_from(wanted)
                .map_err(|_| Error::Usage("ENABLE".into()))?
                .into_static();
            let body = CommandBody::Enable {
                capabilities: Vec1::from(cap),
            };
            let mut enabled = Vec::new();
            let r = self.run(body, &What::new("ENABLE", None), &mut |incoming| {
                if let Incoming::Data(Data::Enabled { capabilities }, _) = incoming {
                    enabled.extend(
                        capabilities
                            .iter()
                            .map(|c| c.to_string().to_ascii_uppercase()),
                    );
                }
                Ok(())
            });
            self.soft(r)?;
            self.qresync = enabled.iter().any(|c| c == "QRESYNC");
        }
        self.condstore = self.qresync || self.has("CONDSTORE");
        if self.has("NAMESPACE") {
            let mut personal = None;
            let r = self.run(
                CommandBody::Namespace,
                &What::new("NAMESPACE", None),
                &mut |incoming| {
                    if let Incoming::Data(Data::Namespace { personal: p, .. }, _) = incoming
                        && let Some(ns) = p.first()
                    {
                        let prefix = String::from_utf8_lossy(ns.prefix.as_ref()).into_owned();
                        personal = Some((prefix, ns.delimiter.as_ref().map(|d| d.inner())));
                    }
                    Ok(())
                },
            );
            self.soft(r)?;
            self.namespace = personal;
        }
        Ok(())
    }

    /// Keeps a refusal of an optional command from failing the connect.
    fn soft(&self, r: Result<impl Sized>) -> Result<()> {
        match r {
            Ok(_) => Ok(()),
            Err(e) if self.usable().is_ok() => {
                tracing::warn!("{e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The password or token, read fresh on each connect.
fn read_secret(secret: &Secret, host: &str) -> Result<String> {
    let mut value = match secret {
        Secret::Password(p) => return Ok(p.clone()),
        Secret::File(path) => std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "imapc({host}): cannot read the password file {}: {e}",
                path.display()
            ))
        })?,
        Secret::Command(cmd) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| {
                    Error::Config(format!(
                        "imapc({host}): cannot run the password command: {e}"
                    ))
                })?;
            if !out.status.success() {
                return Err(Error::Config(format!(
                    "imapc({host}): the password command failed ({})",
                    out.status
                )));
            }
            String::from_utf8(out.stdout).map_err(|_| {
                Error::Config(format!(
                    "imapc({host}): the password command printed something that is not UTF-8"
                ))
            })?
        }
    };
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}
