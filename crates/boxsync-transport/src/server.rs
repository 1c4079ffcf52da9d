//! `server --listen ADDR:PORT|PATH`: accepts doveadm-protocol clients on tcp (optionally over
//! TLS) or on a UNIX socket (a path: anything with a '/') and
//! runs one session per connection on a blocking thread. A semaphore caps the sessions at
//! once (further clients wait in the listen queue); SIGTERM or SIGINT stops accepting and
//! lets the running sessions finish.

use crate::net::{Conn, tls_accept};
use boxsync_model::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

pub struct ListenOptions {
    pub listen: String,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub max_sessions: usize,
    pub handshake_timeout: Duration,
    /// How long running sessions may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
}

/// Runs until SIGTERM/SIGINT. `session` runs once per accepted connection.
pub fn serve<F>(options: ListenOptions, session: F) -> Result<()>
where
    F: Fn(Conn, String) + Send + Sync + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::temp(format!("starting the listener: {e}")))?;
    let session = Arc::new(session);
    let result = rt.block_on(async move {
        let listener = Listener::bind(&options.listen).await?;
        let local = listener.describe();
        tracing::warn!(
            "listening on {local}{}",
            if options.tls.is_some() { " (TLS)" } else { "" }
        );
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| Error::temp(format!("installing a SIGTERM handler: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| Error::temp(format!("installing a SIGINT handler: {e}")))?;
        let limit = Arc::new(tokio::sync::Semaphore::new(options.max_sessions.max(1)));
        let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (accepted, peer) = tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                },
            };
            let session = session.clone();
            let acceptor = acceptor.clone();
            let timeout = options.handshake_timeout;
            sessions.spawn(async move {
                let conn = match (accepted, acceptor) {
                    (Accepted::Tcp(tcp), Some(acceptor)) => {
                        match tls_accept(tcp, acceptor, timeout).await {
                            Ok(unix) => Conn::Unix(unix),
                            Err(e) => {
                                tracing::warn!("{peer}: TLS handshake failed: {e}");
                                return;
                            }
                        }
                    }
                    (Accepted::Tcp(tcp), None) => {
                        let _ = tcp.set_nodelay(true);
                        match tcp.into_std().and_then(|s| {
                            s.set_nonblocking(false)?;
                            Ok(s)
                        }) {
                            Ok(s) => Conn::Tcp(s),
                            Err(e) => {
                                tracing::warn!("{peer}: {e}");
                                return;
                            }
                        }
                    }
                    (Accepted::Unix(u), _) => match u.into_std().and_then(|s| {
                        s.set_nonblocking(false)?;
                        Ok(s)
                    }) {
                        Ok(s) => Conn::Unix(s),
                        Err(e) => {
                            tracing::warn!("{peer}: {e}");
                            return;
                        }
                    },
                };
                let _ = tokio::task::spawn_blocking(move || session(conn, peer)).await;
                drop(permit);
            });
            // Reap finished sessions as we go.
            while sessions.try_join_next().is_some() {}
        }
        listener.close();
        if !sessions.is_empty() {
            tracing::warn!(
                "shutting down: waiting up to {} s for {} running session(s)",
                options.shutdown_grace.as_secs(),
                sessions.len()
            );
            let wait_all = async { while sessions.join_next().await.is_some() {} };
            if tokio::time::timeout(options.shutdown_grace, wait_all)
                .await
                .is_err()
            {
                tracing::warn!("sessions still running; stopping anyway");
            }
        }
        tracing::warn!("stopped");
        Ok(())
    });
    // Sessions past the grace period are abandoned: every write they made so far is durable.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Listener {
    async fn bind(listen: &str) -> Result<Listener> {
        if listen.contains('/') {
            let path = std::path::PathBuf::from(listen);
            // A socket file left by a server that died; a live one answers connects.
            if std::os::unix::net::UnixStream::connect(&path).is_err() {
                let _ = std::fs::remove_file(&path);
            }
            let l = tokio::net::UnixListener::bind(&path)
                .map_err(|e| Error::temp(format!("cannot listen on {listen}: {e}")))?;
            // Whoever may reach the socket still has to authenticate.
            return Ok(Listener::Unix(l, path));
        }
        tokio::net::TcpListener::bind(listen)
            .await
            .map(Listener::Tcp)
            .map_err(|e| Error::temp(format!("cannot listen on {listen}: {e}")))
    }

    fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string()),
            Listener::Unix(_, p) => p.display().to_string(),
        }
    }

    async fn accept(&self) -> std::io::Result<(Accepted, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Accepted::Tcp(s), peer.to_string()))
            }
            Listener::Unix(l, p) => {
                let (s, _) = l.accept().await?;
                Ok((Accepted::Unix(s), format!("unix:{}", p.display())))
            }
        }
    }

    fn close(self) {
        if let Listener::Unix(l, p) = self {
            drop(l);
            let _ = std::fs::remove_file(p);
        }
    }
}
