//! The doveadm-server protocol that `tcp:` and `tcps:` speak before the dsync records
//! (reference/dovecot-dsync.md §4.5): version lines, PLAIN authentication as user `doveadm`
//! with `doveadm_password`, the command line, and then the server→client direction wrapped in
//! multiplex packets (`[channel][u32 length][data]`; channel 0 data, channel `L` log lines).

use crate::rawlog::{Direction, RawLog};
use base64::Engine as _;
use boxsync_model::{Error, Result};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENT_VERSION: &str = "VERSION\tdoveadm-server\t1\t2";
const SERVER_VERSION: &str = "VERSION\tdoveadm-client\t1\t2";
/// Handshake lines are short; anything longer is not a doveadm client.
const MAX_HANDSHAKE_LINE: usize = 16 * 1024;
/// The largest multiplex packet accepted.
const MAX_PACKET: usize = 16 << 20;
const LOG_CHANNEL: u8 = b'L';
/// How long a wrong password waits before it is told, to slow down guessing.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(2);

/// Reads one line byte by byte, so that nothing after it is consumed.
pub fn read_line_raw<R: Read>(r: &mut R, max: usize) -> Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(0) => return Err(Error::temp("the connection ended in the middle of a line")),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                if line.len() >= max {
                    return Err(Error::data("doveadm protocol error: line too long"));
                }
                line.push(byte[0]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::temp("no answer from the other side in time (-T)"));
            }
            Err(e) => return Err(Error::temp(format!("reading from the other side: {e}"))),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| Error::data("doveadm protocol error: a handshake line is not UTF-8"))
}

fn write_line<W: Write>(w: &mut W, line: &str, log: Option<&RawLog>) -> Result<()> {
    if let Some(log) = log {
        log.line(Direction::Out, line.as_bytes());
    }
    w.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| w.flush())
        .map_err(|e| Error::temp(format!("writing to the other side: {e}")))
}

fn expect_line<R: Read>(r: &mut R, what: &str, log: Option<&RawLog>) -> Result<String> {
    let line = read_line_raw(r, MAX_HANDSHAKE_LINE)?.ok_or_else(|| {
        Error::temp(format!(
            "the other side closed the connection (waiting for {what})"
        ))
    })?;
    if let Some(log) = log {
        log.line(Direction::In, line.as_bytes());
    }
    Ok(line)
}

fn printable(s: &str) -> String {
    s.chars().take(80).flat_map(char::escape_debug).collect()
}

/// The client's half: version, authentication, the `dsync-server` command for `user`.
pub fn client_handshake<S: Read + Write>(
    stream: &mut S,
    user: &str,
    password: Option<&str>,
    log: Option<&RawLog>,
) -> Result<()> {
    client_command(
        stream,
        user,
        password,
        log,
        &["dsync-server".to_owned(), format!("-u{user}")],
    )
}

/// The client's half for any command: `command[0]` and its arguments run as `user`.
pub fn client_command<S: Read + Write>(
    stream: &mut S,
    user: &str,
    password: Option<&str>,
    log: Option<&RawLog>,
    command: &[String],
) -> Result<()> {
    write_line(stream, CLIENT_VERSION, log)?;
    let version = expect_line(stream, "the server's version", log)?;
    let mut fields = version.split('\t');
    if fields.next() != Some("VERSION")
        || fields.next() != Some("doveadm-client")
        || fields.next() != Some("1")
    {
        return Err(Error::data(format!(
            "the server is not a doveadm server: it said {:?}",
            printable(&version)
        )));
    }
    match expect_line(stream, "the authentication request", log)?.as_str() {
        "+" => {}
        "-" => {
            let password = password.ok_or_else(|| {
                Error::Config("the server wants a password: set -o doveadm_password=…".into())
            })?;
            let plain = format!("\0doveadm\0{password}");
            let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
            if let Some(log) = log {
                log.line(Direction::Out, b"PLAIN\t<password redacted>");
            }
            write_line(stream, &format!("PLAIN\t{encoded}"), None)?;
            match expect_line(stream, "the authentication result", log)?.as_str() {
                "+" => {}
                _ => {
                    return Err(Error::Permission(
                        "authentication failed: the server refused doveadm_password".into(),
                    ));
                }
            }
        }
        other => {
            return Err(Error::data(format!(
                "doveadm protocol error: unexpected {:?} instead of an authentication request",
                printable(other)
            )));
        }
    }
    if user.contains(['\t', '\n', '\r', '\0']) {
        return Err(Error::Usage(format!("bad user name {user:?}")));
    }
    if let Some(bad) = command
        .iter()
        .find(|a| a.contains(['\t', '\n', '\r', '\0']))
    {
        return Err(Error::Usage(format!(
            "an argument with a tab or line break cannot be sent: {bad:?}"
        )));
    }
    write_line(stream, &format!("\t{user}\t{}", command.join("\t")), log)
}

/// What an authenticated client asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerRequest {
    pub user: String,
    pub command: String,
    /// The command's arguments, after the command name.
    pub args: Vec<String>,
}

/// The server's half. A wrong password is answered after [`AUTH_FAILURE_DELAY`] and
/// reported as a permission error (the caller logs it with the peer's address).
pub fn server_handshake<S: Read + Write>(
    stream: &mut S,
    password: &str,
    log: Option<&RawLog>,
) -> Result<ServerRequest> {
    let version = read_line_raw(stream, MAX_HANDSHAKE_LINE)?
        .ok_or_else(|| Error::temp("the client closed the connection before its version"))?;
    let mut fields = version.split('\t');
    if fields.next() != Some("VERSION")
        || fields.next() != Some("doveadm-server")
        || fields.next() != Some("1")
    {
        return Err(Error::data(format!(
            "not a doveadm client: it said {:?}",
            printable(&version)
        )));
    }
    write_line(stream, SERVER_VERSION, log)?;
    write_line(stream, "-", log)?;
    let auth = read_line_raw(stream, MAX_HANDSHAKE_LINE)?
        .ok_or_else(|| Error::temp("the client closed the connection before authenticating"))?;
    if let Some(log) = log {
        log.line(Direction::In, b"PLAIN\t<password redacted>");
    }
    if !plain_matches(&auth, password) {
        std::thread::sleep(AUTH_FAILURE_DELAY);
        let _ = write_line(stream, "-", log);
        return Err(Error::Permission(
            "authentication failed: wrong user or doveadm_password".into(),
        ));
    }
    write_line(stream, "+", log)?;
    let command = expect_line(stream, "the command", log)?;
    let fields: Vec<&str> = command.split('\t').collect();
    if fields.len() < 3 {
        return Err(Error::data(format!(
            "doveadm protocol error: bad command line {:?}",
            printable(&command)
        )));
    }
    let mut user = fields[1].to_owned();
    for arg in &fields[3..] {
        if let Some(u) = arg.strip_prefix("-u")
            && !u.is_empty()
        {
            user = u.to_owned();
        }
    }
    Ok(ServerRequest {
        user,
        command: fields[2].to_owned(),
        args: fields[3..].iter().map(|a| (*a).to_owned()).collect(),
    })
}

/// Checks `PLAIN\t<base64(authzid \0 doveadm \0 password)>` in time independent of where
/// the password differs.
fn plain_matches(line: &str, password: &str) -> bool {
    let Some(encoded) = line.strip_prefix("PLAIN\t") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let mut parts = decoded.split(|&b| b == 0);
    let (Some(_authzid), Some(user), Some(given), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let expected = password.as_bytes();
    let mut diff = (given.len() != expected.len()) as u8;
    for (i, &b) in expected.iter().enumerate() {
        diff |= b ^ given.get(i).copied().unwrap_or(0);
    }
    user == b"doveadm" && diff == 0
}

/// The client's view of the server's multiplexed output: channel 0's bytes; log lines of
/// channel `L` are relayed to our stderr with `prefix`.
pub struct MultiplexReader<R> {
    inner: R,
    /// Bytes of the current channel-0 packet not yet returned.
    left: usize,
    prefix: String,
    log_line: Vec<u8>,
}

impl<R: Read> MultiplexReader<R> {
    pub fn new(inner: R, prefix: String) -> Self {
        MultiplexReader {
            inner,
            left: 0,
            prefix,
            log_line: Vec::new(),
        }
    }

    fn relay_log(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.log_line);
                if self.prefix.is_empty() {
                    eprintln!("{line}");
                } else {
                    eprintln!("{}: {line}", self.prefix);
                }
                self.log_line.clear();
            } else if self.log_line.len() < 64 * 1024 {
                self.log_line.push(b);
            }
        }
    }
}

impl<R: Read> Read for MultiplexReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.left > 0 {
                let want = buf.len().min(self.left);
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the connection ended inside a packet",
                    ));
                }
                self.left -= n;
                return Ok(n);
            }
            let mut header = [0u8; 5];
            let mut got = 0;
            while got < header.len() {
                match self.inner.read(&mut header[got..]) {
                    Ok(0) if got == 0 => return Ok(0),
                    Ok(0) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the connection ended inside a packet header",
                        ));
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if len > MAX_PACKET {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the server sent a packet of {len} bytes"),
                ));
            }
            if header[0] == 0 {
                self.left = len;
                continue;
            }
            let mut data = vec![0u8; len];
            self.inner.read_exact(&mut data)?;
            if header[0] == LOG_CHANNEL {
                self.relay_log(&data);
            }
        }
    }
}

/// The server's output: every write becomes channel-0 packets; [`LogChannel`] shares the
/// stream for log lines.
pub struct MultiplexWriter<W> {
    inner: Arc<Mutex<W>>,
}

/// Sends log lines to the client on channel `L`.
pub struct LogChannel<W> {
    inner: Arc<Mutex<W>>,
}

pub fn multiplex<W: Write>(inner: W) -> (MultiplexWriter<W>, LogChannel<W>) {
    let inner = Arc::new(Mutex::new(inner));
    (
        MultiplexWriter {
            inner: inner.clone(),
        },
        LogChannel { inner },
    )
}

fn packet<W: Write>(w: &Mutex<W>, channel: u8, data: &[u8]) -> std::io::Result<()> {
    let mut w = w
        .lock()
        .map_err(|_| std::io::Error::other("multiplex stream poisoned"))?;
    for chunk in data.chunks(MAX_PACKET) {
        let mut header = [channel, 0, 0, 0, 0];
        header[1..].copy_from_slice(&(chunk.len() as u32).to_be_bytes());
        w.write_all(&header)?;
        w.write_all(chunk)?;
    }
    w.flush()
}

impl<W: Write> Write for MultiplexWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        packet(&self.inner, 0, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> LogChannel<W> {
    pub fn line(&self, text: &str) {
        let _ = packet(&self.inner, LOG_CHANNEL, format!("{text}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn handshake_and_multiplex_round_trip() {
        let (mut c, mut s) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let req = server_handshake(&mut s, "sekrit", None).unwrap();
            let (mut w, log) = multiplex(s);
            log.line("hello from the server");
            w.write_all(b"VERSION\tdsync\t3\t5\n").unwrap();
            req
        });
        client_handshake(&mut c, "alice", Some("sekrit"), None).unwrap();
        let mut r = MultiplexReader::new(c, "test".into());
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "VERSION\tdsync\t3\t5\n");
        assert_eq!(
            server.join().unwrap(),
            ServerRequest {
                user: "alice".into(),
                command: "dsync-server".into(),
                args: vec!["-ualice".into()],
            }
        );
    }

    #[test]
    fn wrong_password_is_refused() {
        let (mut c, mut s) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || server_handshake(&mut s, "right", None));
        let e = client_handshake(&mut c, "alice", Some("wrong"), None).unwrap_err();
        assert!(matches!(e, Error::Permission(_)), "{e}");
        assert!(matches!(server.join().unwrap(), Err(Error::Permission(_))));
    }

    #[test]
    fn plain_checks_user_and_password() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(plain_matches(
            &format!("PLAIN\t{}", enc("\0doveadm\0pw")),
            "pw"
        ));
        assert!(!plain_matches(
            &format!("PLAIN\t{}", enc("\0root\0pw")),
            "pw"
        ));
        assert!(!plain_matches(
            &format!("PLAIN\t{}", enc("\0doveadm\0pw2")),
            "pw"
        ));
        assert!(!plain_matches(
            &format!("PLAIN\t{}", enc("\0doveadm\0p")),
            "pw"
        ));
        assert!(!plain_matches("PLAIN\t!!!", "pw"));
        assert!(!plain_matches("LOGIN\tx", "pw"));
    }
}
