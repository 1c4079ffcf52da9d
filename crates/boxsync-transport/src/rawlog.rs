//! `-r FILE`: a raw log of both directions of a conversation, in the layout of Dovecot's
//! rawlogs (`<unix time> O: line` for what we sent, `I:` for what we received), so that the
//! two can be compared line by line. Passwords never reach it: the doveadm handshake logs its
//! authentication line redacted, outside the tee.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    fn tag(self) -> &'static [u8] {
        match self {
            Direction::In => b"I: ",
            Direction::Out => b"O: ",
        }
    }
}

/// A shared raw log file. Write errors are ignored: the log must never fail a sync.
#[derive(Clone, Debug)]
pub struct RawLog {
    file: Arc<Mutex<File>>,
}

impl RawLog {
    pub fn create(path: &Path) -> std::io::Result<RawLog> {
        let file = File::create(path)?;
        Ok(RawLog {
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Logs one whole line (without its LF).
    pub fn line(&self, dir: Direction, line: &[u8]) {
        let mut w = LineState::default();
        self.write(dir, &mut w, line);
        self.write(dir, &mut w, b"\n");
    }

    fn write(&self, dir: Direction, state: &mut LineState, bytes: &[u8]) {
        let Ok(mut f) = self.file.lock() else {
            return;
        };
        let mut out = Vec::with_capacity(bytes.len() + 32);
        for part in bytes.split_inclusive(|&b| b == b'\n') {
            if state.at_line_start {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                out.extend_from_slice(
                    format!("{}.{:06} ", now.as_secs(), now.subsec_micros()).as_bytes(),
                );
                out.extend_from_slice(dir.tag());
            }
            out.extend_from_slice(part);
            state.at_line_start = part.ends_with(b"\n");
        }
        let _ = f.write_all(&out);
    }
}

#[derive(Debug)]
struct LineState {
    at_line_start: bool,
}

impl Default for LineState {
    fn default() -> Self {
        LineState {
            at_line_start: true,
        }
    }
}

/// A reader or writer that copies what passes through into a raw log.
pub struct Tee<T> {
    inner: T,
    log: Option<RawLog>,
    dir: Direction,
    state: LineState,
}

impl<T> Tee<T> {
    pub fn new(inner: T, log: Option<RawLog>, dir: Direction) -> Tee<T> {
        Tee {
            inner,
            log,
            dir,
            state: LineState::default(),
        }
    }
}

impl<T: Read> Read for Tee<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(log) = &self.log {
            log.write(self.dir, &mut self.state, &buf[..n]);
        }
        Ok(n)
    }
}

impl<T: Write> Write for Tee<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(log) = &self.log {
            log.write(self.dir, &mut self.state, &buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stamped_and_tagged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw");
        let log = RawLog::create(&path).unwrap();
        let mut w = Tee::new(Vec::new(), Some(log.clone()), Direction::Out);
        w.write_all(b"VERSION\tdsync").unwrap();
        w.write_all(b"\t3\t5\nH").unwrap();
        w.write_all(b"x\n").unwrap();
        log.line(Direction::In, b"PLAIN\t<redacted>");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(" O: VERSION\tdsync\t3\t5"), "{text}");
        assert!(lines[1].ends_with(" O: Hx"), "{text}");
        assert!(lines[2].ends_with(" I: PLAIN\t<redacted>"), "{text}");
        assert_eq!(w.inner, b"VERSION\tdsync\t3\t5\nHx\n");
    }
}
