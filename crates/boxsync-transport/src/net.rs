//! tcp and tls connections. TLS runs in tokio (rustls), bridged to one end of a UNIX socket
//! pair, so that the protocol code above stays blocking and sees one kind of stream whatever
//! the transport: plain tcp is a `TcpStream`, tls the bridged `UnixStream`.

use boxsync_model::{Error, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A connected byte stream.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    pub fn try_clone(&self) -> Result<Conn> {
        let r = match self {
            Conn::Tcp(s) => s.try_clone().map(Conn::Tcp),
            Conn::Unix(s) => s.try_clone().map(Conn::Unix),
        };
        r.map_err(|e| Error::temp(format!("duplicating a socket: {e}")))
    }

    pub fn shutdown_write(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    /// A timeout for reads during the handshake (the link has its own for records).
    pub fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// Connects to `host:port`, trying each address; with `tls`, verifies the server's
/// certificate against `ca_file` (PEM) or the system's roots.
pub fn connect(
    host: &str,
    port: u16,
    tls: Option<Option<&Path>>,
    timeout: Duration,
) -> Result<Conn> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::NotFound(format!("cannot resolve {host}: {e}")))?;
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        Error::temp(format!(
            "cannot connect to {host}:{port}: {}",
            last.map_or_else(|| "no address".to_owned(), |e| e.to_string())
        ))
    })?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Conn::Tcp(tcp)),
        Some(ca_file) => {
            let config = client_config(ca_file)?;
            tls_client(tcp, host, port, config, timeout).map(Conn::Unix)
        }
    }
}

fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                Error::Config(format!("ssl_client_ca_file {}: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    Error::Config(format!("ssl_client_ca_file {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    Error::Config(format!("ssl_client_ca_file {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(Error::Config(format!(
                    "ssl_client_ca_file {}: no certificates in it",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(Error::Config(
                    "no trusted CA certificates on this system: set -o ssl_client_ca_file=PATH"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Loads `ssl_cert` and `ssl_key` (Dovecot's `<path` form accepted).
pub fn server_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>> {
    let cert_path = Path::new(cert.strip_prefix('<').unwrap_or(cert));
    let key_path = Path::new(key.strip_prefix('<').unwrap_or(key));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Config(format!("ssl_cert {}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "ssl_cert {}: no certificate in it",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| Error::Config(format!("ssl_key {}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("ssl_cert/ssl_key: {e}")))?;
    Ok(Arc::new(config))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::temp(format!("starting the TLS thread: {e}")))
}

/// The TLS handshake on our thread's behalf, then a bridge thread copying between the TLS
/// stream and a socket pair. Returns our end once the handshake succeeded.
fn tls_client(
    tcp: TcpStream,
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<UnixStream> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::Usage(format!("{host} is not a valid TLS server name: {e}")))?;
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| Error::temp(format!("creating a socket pair: {e}")))?;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<()>>();
    let rt = runtime()?;
    let peer = format!("{host}:{port}");
    std::thread::Builder::new()
        .name("tls-client".into())
        .spawn(move || {
            rt.block_on(async move {
                let setup = async {
                    tcp.set_nonblocking(true)?;
                    theirs.set_nonblocking(true)?;
                    Ok::<_, std::io::Error>((
                        tokio::net::TcpStream::from_std(tcp)?,
                        tokio::net::UnixStream::from_std(theirs)?,
                    ))
                };
                let (tcp, mut unix) = match setup.await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = done_tx.send(Err(Error::temp(format!("TLS setup: {e}"))));
                        return;
                    }
                };
                let connector = tokio_rustls::TlsConnector::from(config);
                let handshake = tokio::time::timeout(timeout, connector.connect(name, tcp)).await;
                let mut tls = match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        let _ = done_tx.send(Err(tls_error(&peer, &e)));
                        return;
                    }
                    Err(_) => {
                        let _ = done_tx.send(Err(Error::temp(format!(
                            "TLS handshake with {peer} timed out"
                        ))));
                        return;
                    }
                };
                let _ = done_tx.send(Ok(()));
                if let Err(e) = tokio::io::copy_bidirectional(&mut tls, &mut unix).await {
                    tracing::debug!("tls bridge to {peer}: {e}");
                }
            })
        })
        .map_err(|e| Error::temp(format!("starting the TLS thread: {e}")))?;
    done_rx
        .recv()
        .map_err(|_| Error::temp("the TLS thread ended"))??;
    Ok(ours)
}

fn tls_error(peer: &str, e: &std::io::Error) -> Error {
    let text = e.to_string();
    if text.contains("certificate") || text.contains("Certificate") {
        Error::temp(format!(
            "TLS: the certificate of {peer} is not trusted ({text}); \
             set -o ssl_client_ca_file=CA.pem to the CA that signed it"
        ))
    } else {
        Error::temp(format!("TLS handshake with {peer} failed: {text}"))
    }
}

/// Server side: a TLS handshake on an accepted connection, then a bridge task; returns the
/// blocking end for the session.
pub async fn tls_accept(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    timeout: Duration,
) -> std::io::Result<UnixStream> {
    let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
    let (ours, theirs) = UnixStream::pair()?;
    theirs.set_nonblocking(true)?;
    let mut unix = tokio::net::UnixStream::from_std(theirs)?;
    tokio::spawn(async move {
        let mut tls = tls;
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut unix).await;
    });
    Ok(ours)
}
