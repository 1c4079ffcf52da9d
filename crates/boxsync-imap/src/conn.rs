//! The byte stream under the IMAP state machine: tcp or tls (rustls), with a per-read timeout
//! and an optional bandwidth limit. Everything here is async; the session drives it with its
//! own current-thread runtime, one `block_on` per I/O step.

use boxsync_model::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A connected stream. Boxed tls keeps the enum small; the tls state is large.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// After a failed tls upgrade the tcp stream is gone; every call fails.
    Closed,
}

impl Stream {
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Closed => Ok(0),
        }
    }

    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Tls(s) => {
                s.write_all(buf).await?;
                // tokio-rustls buffers plaintext until flushed; a command must leave now.
                s.flush().await
            }
            Stream::Closed => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    pub(crate) async fn shutdown(&mut self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Closed => Ok(()),
        };
    }
}

/// Connects tcp to `host:port`, trying each address in turn.
pub(crate) async fn connect_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let addrs = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| Error::temp(format!("imapc({host}): cannot resolve {host}: timed out")))?
        .map_err(|e| Error::temp(format!("imapc({host}): cannot resolve {host}: {e}")))?;
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = Some(e.to_string()),
            Err(_) => last = Some("timed out".to_owned()),
        }
    }
    Err(Error::temp(format!(
        "imapc({host}): cannot connect to {host}:{port}: {}",
        last.unwrap_or_else(|| "no address".to_owned())
    )))
}

/// Runs the tls handshake on `tcp`. A certificate the trust roots do not vouch for is
/// `Error::Permission`: retrying cannot fix it, and doveadm reports such refusals as
/// NOPERM too. Any other handshake failure (reset, timeout, protocol mismatch) is `Temp`.
pub(crate) async fn tls_handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::Config(format!("imapc({host}): not a valid TLS server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Err(_) => Err(Error::temp(format!(
            "imapc({host}): TLS handshake timed out"
        ))),
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            let cert_problem = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            if cert_problem {
                Err(Error::Permission(format!(
                    "imapc({host}): TLS certificate not trusted: {e}"
                )))
            } else {
                Err(Error::temp(format!(
                    "imapc({host}): TLS handshake failed: {e}"
                )))
            }
        }
    }
}

/// The rustls client configuration: trust roots from `ca_file` (PEM) or the system store,
/// or no verification at all when `verify` is false (`ssl_client_require_valid_cert = no`).
pub(crate) fn tls_config(
    host: &str,
    ca_file: Option<&Path>,
    verify: bool,
) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("imapc({host}): TLS: {e}")))?;
    if !verify {
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth();
        return Ok(Arc::new(config));
    }
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |e: &dyn std::fmt::Display| {
                Error::Config(format!("ssl_client_ca_file {}: {e}", path.display()))
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no certificates in it"));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(Error::Config(
                    "no trusted CA certificates on this system: set ssl_client_ca_file".into(),
                ));
            }
        }
    }
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// Accepts any certificate but still checks the handshake signatures, so the session is at
/// least bound to the key the server presented.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Limits the average rate of bytes moved in both directions together.
pub(crate) struct Throttle {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    pub(crate) fn new(rate: u64) -> Throttle {
        Throttle {
            rate: rate.max(1),
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// How long to wait after moving `n` more bytes so the average stays at the rate.
    pub(crate) fn account(&mut self, n: usize) -> Option<Duration> {
        self.bytes = self.bytes.saturating_add(n as u64);
        let due = Duration::try_from_secs_f64(self.bytes as f64 / self.rate as f64).ok()?;
        due.checked_sub(self.start.elapsed())
    }

    /// The largest read or write chunk, so one step never overshoots by more than ~1/4 s.
    pub(crate) fn chunk(&self) -> usize {
        usize::try_from(self.rate / 4)
            .unwrap_or(usize::MAX)
            .clamp(512, 64 * 1024)
    }
}

/// COMPRESS=DEFLATE (RFC 4978): raw deflate in both directions, each write flushed with a
/// sync flush so the server sees whole commands.
pub(crate) struct Deflate {
    compress: flate2::Compress,
    decompress: flate2::Decompress,
}

impl Deflate {
    pub(crate) fn new() -> Deflate {
        Deflate {
            compress: flate2::Compress::new(flate2::Compression::default(), false),
            decompress: flate2::Decompress::new(false),
        }
    }

    /// Compresses `input`; with `flush`, everything given so far can be inflated from what
    /// came out (a sync flush), else the compressor may keep some of it back.
    pub(crate) fn deflate(&mut self, mut input: &[u8], flush: bool) -> std::io::Result<Vec<u8>> {
        let mode = if flush {
            flate2::FlushCompress::Sync
        } else {
            flate2::FlushCompress::None
        };
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        loop {
            out.reserve(input.len().max(64));
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, &mut out, mode)
                .map_err(std::io::Error::other)?;
            let used = usize::try_from(self.compress.total_in() - before).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            // Spare room left means all input is taken (and the sync flush complete).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Inflates what was read. A deflate bomb can expand one read about a thousandfold
    /// (64 KiB to 64 MiB), which bounds the memory it can take.
    pub(crate) fn inflate(&mut self, mut input: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() * 4);
        loop {
            out.reserve(64 * 1024);
            let (before, produced) = (self.decompress.total_in(), out.len());
            let status = self
                .decompress
                .decompress_vec(input, &mut out, flate2::FlushDecompress::None)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let used = usize::try_from(self.decompress.total_in() - before).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            // No input taken although there was room: the stream is stuck; stop, not spin.
            if used == 0 && out.len() == produced && !input.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "deflate stream makes no progress",
                ));
            }
            if status == flate2::Status::StreamEnd
                || (input.is_empty() && out.len() < out.capacity())
            {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_round_trips_across_writes_and_split_reads() {
        let (mut client, mut server) = (Deflate::new(), Deflate::new());
        let mut wire = Vec::new();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for (part, flush) in [
            (&b"a1 NOOP\r\n"[..], true),
            (&big[..1000], false),
            (&big[1000..], true),
            (b"a2 LOGOUT\r\n", true),
        ] {
            wire.extend(client.deflate(part, flush).unwrap());
        }
        let mut plain = Vec::new();
        for piece in wire.chunks(777) {
            plain.extend(server.inflate(piece).unwrap());
        }
        let mut want = b"a1 NOOP\r\n".to_vec();
        want.extend(&big);
        want.extend(b"a2 LOGOUT\r\n");
        assert_eq!(plain, want);
        assert!(Deflate::new().inflate(b"\xff\xff\xff\xff garbage").is_err());
    }

    #[test]
    fn throttle_asks_for_a_wait_once_ahead_of_the_rate() {
        let mut t = Throttle::new(1000);
        assert!(t.account(10).is_none_or(|d| d < Duration::from_millis(20)));
        let wait = t.account(990).unwrap();
        assert!(wait > Duration::from_millis(900), "{wait:?}");
        assert_eq!(t.chunk(), 512);
    }
}
