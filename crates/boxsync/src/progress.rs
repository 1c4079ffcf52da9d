//! What `-v` shows while a sync runs: per mailbox, the messages and bytes copied, the rate and
//! the time left. On a terminal that is a live bar per user (several users run at once);
//! otherwise (a log, a pipe, cron) a plain line every [`LINE_INTERVAL`] and one when a mailbox
//! that copied mail is done, so that a log shows where a long run stands without escape codes.

use boxsync_brain::progress::{Progress, ProgressHandle};
use boxsync_model::MailboxName;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often a plain progress line is written while a mailbox is copied.
const LINE_INTERVAL: Duration = Duration::from_secs(10);

/// How often a bar's text (rate, time left) is recomputed; the bar itself redraws at its own
/// pace.
const BAR_TEXT_INTERVAL: Duration = Duration::from_millis(250);

/// The bars of every user shown at once, when stderr is a terminal.
fn bars() -> Option<&'static MultiProgress> {
    static BARS: OnceLock<Option<MultiProgress>> = OnceLock::new();
    BARS.get_or_init(|| {
        std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
    })
    .as_ref()
}

/// Writes a log line to stderr without tearing a bar: the bars step aside while it is written.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match bars() {
            Some(bars) => bars.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One user's progress. Dropping it takes its bar off the screen.
pub struct Meter {
    user: String,
    bar: Option<ProgressBar>,
    now: Mutex<Current>,
}

/// The mailbox being copied.
struct Current {
    name: String,
    position: usize,
    count: usize,
    planned: u64,
    done: u64,
    bytes: u64,
    started: Instant,
    last_line: Instant,
    last_text: Instant,
}

impl Meter {
    /// A meter for `user`'s sync, with a bar when stderr is a terminal.
    pub fn new(user: &str) -> Arc<Meter> {
        let bar = bars().map(|bars| {
            let bar = bars.add(ProgressBar::new(0));
            // The template is a constant, checked by a test: it cannot fail here.
            if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(user.to_owned());
            bar
        });
        let now = Instant::now();
        Arc::new(Meter {
            user: user.to_owned(),
            bar,
            now: Mutex::new(Current {
                name: String::new(),
                position: 0,
                count: 0,
                planned: 0,
                done: 0,
                bytes: 0,
                started: now,
                last_line: now,
                last_text: now,
            }),
        })
    }

    /// The handle the brain takes; `counts_sends` is settled by the brain (see
    /// [`ProgressHandle`]).
    pub fn handle(self: &Arc<Meter>) -> ProgressHandle {
        ProgressHandle {
            sink: self.clone(),
            counts_sends: true,
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        // A panic while holding the lock leaves plain counters, still fine to show.
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn line(&self, c: &Current, finished: bool) {
        let text = describe(c, Instant::now(), finished);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "boxsync: {}: {} ({}/{}): {text}",
            self.user, c.name, c.position, c.count
        );
    }

    fn redraw(&self, c: &mut Current, force: bool) {
        let now = Instant::now();
        match &self.bar {
            Some(bar) => {
                bar.set_position(c.done);
                if force || now.duration_since(c.last_text) >= BAR_TEXT_INTERVAL {
                    c.last_text = now;
                    bar.set_message(format!(
                        "{} ({}/{}) {}",
                        c.name,
                        c.position,
                        c.count,
                        rate_and_time_left(c, now)
                    ));
                }
            }
            None => {
                if now.duration_since(c.last_line) >= LINE_INTERVAL {
                    c.last_line = now;
                    self.line(c, false);
                }
            }
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            if let Some(bars) = bars() {
                bars.remove(bar);
            }
        }
    }
}

impl Progress for Meter {
    fn mailbox_started(&self, name: &MailboxName, position: usize, count: usize) {
        let mut c = self.current();
        let now = Instant::now();
        *c = Current {
            name: name.to_string(),
            position,
            count,
            planned: 0,
            done: 0,
            bytes: 0,
            started: now,
            last_line: now,
            last_text: now,
        };
        if let Some(bar) = &self.bar {
            bar.set_position(0);
            bar.set_length(0);
        }
        self.redraw(&mut c, true);
    }

    fn planned(&self, messages: u64) {
        let mut c = self.current();
        c.planned = messages;
        // Mail is timed from here: the listing before it is not copying.
        c.started = Instant::now();
        if let Some(bar) = &self.bar {
            bar.set_length(messages);
        }
        self.redraw(&mut c, true);
    }

    fn bytes(&self, n: u64) {
        let mut c = self.current();
        c.bytes += n;
        self.redraw(&mut c, false);
    }

    fn message_done(&self) {
        let mut c = self.current();
        c.done += 1;
        self.redraw(&mut c, false);
    }

    fn mailbox_finished(&self) {
        let c = self.current();
        if self.bar.is_none() && c.done > 0 {
            self.line(&c, true);
        }
    }
}

const BAR_TEMPLATE: &str = "{prefix} [{bar:25}] {pos}/{len} {wide_msg}";

/// `1200/5000 messages, 80.0 MiB, 12.1 MiB/s, 18 s left`, or at the end
/// `5000/5000 messages, 300.0 MiB, 15.0 MiB/s, 20.0 s`.
fn describe(c: &Current, now: Instant, finished: bool) -> String {
    let tail = if finished {
        format!(
            "{}, {:.1} s",
            rate(c, now),
            now.duration_since(c.started).as_secs_f64()
        )
    } else {
        rate_and_time_left(c, now)
    };
    format!(
        "{}/{} messages, {}, {tail}",
        c.done,
        c.planned.max(c.done),
        crate::cli::human_bytes(c.bytes)
    )
}

fn rate(c: &Current, now: Instant) -> String {
    let secs = now.duration_since(c.started).as_secs_f64();
    if secs < 0.001 {
        return "- B/s".to_owned();
    }
    format!(
        "{}/s",
        crate::cli::human_bytes((c.bytes as f64 / secs) as u64)
    )
}

/// The rate so far, and the time left if the rest goes at the pace of what is done.
fn rate_and_time_left(c: &Current, now: Instant) -> String {
    let elapsed = now.duration_since(c.started).as_secs_f64();
    let left = if c.done == 0 || c.planned <= c.done {
        "time left unknown".to_owned()
    } else {
        let secs = elapsed / c.done as f64 * (c.planned - c.done) as f64;
        format!("{} left", human_duration(secs))
    };
    format!("{}, {left}", rate(c, now))
}

/// `42 s`, `3 min 5 s`, `2 h 10 min`.
fn human_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(planned: u64, done: u64, bytes: u64, secs: u64) -> (Current, Instant) {
        let started = Instant::now();
        let c = Current {
            name: "INBOX".into(),
            position: 1,
            count: 3,
            planned,
            done,
            bytes,
            started,
            last_line: started,
            last_text: started,
        };
        (c, started + Duration::from_secs(secs))
    }

    #[test]
    fn the_bar_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn a_line_says_how_far_how_fast_and_how_long() {
        let (c, now) = current(5000, 1000, 100 << 20, 10);
        assert_eq!(
            describe(&c, now, false),
            "1000/5000 messages, 100.0 MiB, 10.0 MiB/s, 40 s left"
        );
        let (c, now) = current(5000, 5000, 300 << 20, 20);
        assert_eq!(
            describe(&c, now, true),
            "5000/5000 messages, 300.0 MiB, 15.0 MiB/s, 20.0 s"
        );
    }

    #[test]
    fn nothing_done_yet_has_no_time_left() {
        let (c, now) = current(10, 0, 0, 0);
        assert_eq!(
            describe(&c, now, false),
            "0/10 messages, 0 B, - B/s, time left unknown"
        );
    }

    #[test]
    fn durations_read_as_a_person_reads_them() {
        assert_eq!(human_duration(42.4), "42 s");
        assert_eq!(human_duration(185.0), "3 min 5 s");
        assert_eq!(human_duration(7800.0), "2 h 10 min");
    }
}
