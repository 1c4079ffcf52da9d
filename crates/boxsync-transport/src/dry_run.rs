//! `--dry-run` across a link: the master asks the far side to change nothing, goes on only
//! when the far side says it will, and gets back what the far side's store would have
//! changed.
//!
//! The brains know nothing of dry runs: each side opens its store in its no-write mode and
//! wraps it in `boxsync_store::dry_run::DryRun`, so the same engine runs and the stores
//! report instead of writing. Across a link the two ends must also agree that the far side
//! did that, which is what the link wrappers here add, at the edge where records are sent
//! and received:
//!
//! - the master's handshake carries boxsync's `x_dry_run` key ([`MasterLink`]); a boxsync
//!   slave that opened its store for a dry run sets the same key in its own handshake
//!   ([`SlaveLink`]), and sends its report in its finish record (`x_dry_run_store`,
//!   `x_dry_run_lines`), which only a master that asked for a dry run gets;
//! - a master whose peer does not set the key (Dovecot's `dsync-server` ignores unknown
//!   keys, an older boxsync does too) stops at the peer's handshake with a usage error (exit
//!   64, as when a local dry run is refused). Nothing has been changed then: both sides
//!   have sent only their handshakes, and a slave changes its store only after it has the
//!   master's mailbox tree, which is never sent.
//!
//! Dovecot's peers see only two more keys in our schema lines, which they skip as they skip
//! every `x_` key of ours.

use crate::link::StreamLink;
use crate::pair;
use boxsync_brain::link::Link;
use boxsync_brain::{Outcome, Role, Settings};
use boxsync_model::{Error, Result};
use boxsync_proto::{DryRunReport, Record, wire};
use boxsync_store::Store;
use boxsync_store::dry_run::DryRunLog;

/// How many bytes of report lines a slave sends at most. The finish record is one line of at
/// most `wire::MAX_LINE` bytes, and escaping a nested list (escaped twice) at most triples a
/// byte; a quarter leaves room for that and the record's other fields.
const REPORT_BUDGET: usize = wire::MAX_LINE / 4;

/// The master's end of a remote dry run (see the module documentation).
pub struct MasterLink<'a> {
    inner: &'a mut dyn Link,
    confirmed: bool,
    report: Option<DryRunReport>,
}

impl<'a> MasterLink<'a> {
    pub fn new(inner: &'a mut dyn Link) -> MasterLink<'a> {
        MasterLink {
            inner,
            confirmed: false,
            report: None,
        }
    }

    /// What the far side reported in its finish record, once it came.
    pub fn take_report(&mut self) -> Option<DryRunReport> {
        self.report.take()
    }
}

impl Link for MasterLink<'_> {
    fn send(&mut self, mut record: Record) -> Result<()> {
        if let Record::Handshake(h) = &mut record {
            h.dry_run = true;
        }
        self.inner.send(record)
    }

    fn recv(&mut self) -> Result<Record> {
        let mut record = self.inner.recv()?;
        match &mut record {
            Record::Handshake(h) if !self.confirmed => {
                if !h.dry_run {
                    return Err(unconfirmed(&h.hostname));
                }
                self.confirmed = true;
            }
            Record::Finish(f) if self.confirmed => self.report = f.dry_run.take(),
            _ => {}
        }
        Ok(record)
    }
}

/// The refusal of a far side that did not promise to change nothing.
fn unconfirmed(hostname: &str) -> Error {
    Error::Usage(format!(
        "--dry-run: the other side ({}) did not confirm a dry run, so it would change its \
         store; stopped before the sync, nothing was changed. A dry run needs boxsync's \
         dsync-server on the other side (Dovecot's does not know one)",
        // The peer's words, so no control characters reach the terminal.
        hostname
            .chars()
            .filter(|c| !c.is_control())
            .take(80)
            .collect::<String>()
    ))
}

/// The slave's end of a remote dry run: confirms it in its handshake and reports the lines of
/// `log` in its finish record (see the module documentation). Use it only for a store opened
/// for a dry run, and only when the master's handshake asked for one.
pub struct SlaveLink<'a> {
    inner: &'a mut dyn Link,
    store: String,
    log: DryRunLog,
}

impl<'a> SlaveLink<'a> {
    /// `store` describes the store the lines are about, as the master will print it.
    pub fn new(inner: &'a mut dyn Link, store: String, log: DryRunLog) -> SlaveLink<'a> {
        SlaveLink { inner, store, log }
    }
}

impl Link for SlaveLink<'_> {
    fn send(&mut self, mut record: Record) -> Result<()> {
        match &mut record {
            Record::Handshake(h) => h.dry_run = true,
            Record::Finish(f) => {
                f.dry_run = Some(DryRunReport {
                    store: self.store.clone(),
                    lines: bounded(self.log.lines()),
                })
            }
            _ => {}
        }
        self.inner.send(record)
    }

    fn recv(&mut self) -> Result<Record> {
        self.inner.recv()
    }
}

/// The lines that fit in [`REPORT_BUDGET`], then one that says how many did not. The far
/// side's log has them all (each is logged as it is made, seen with `-v`).
fn bounded(lines: Vec<String>) -> Vec<String> {
    let mut used = 0;
    let fit = lines
        .iter()
        .position(|l| {
            used += l.len() + 1;
            used > REPORT_BUDGET
        })
        .unwrap_or(lines.len());
    let left_out = lines.len() - fit;
    let mut lines = lines;
    lines.truncate(fit);
    if left_out > 0 {
        lines.push(format!(
            "... and {left_out} more changes, too many to send back (run the dsync-server with -v to log them all)"
        ));
    }
    lines
}

/// Runs the master brain of a remote dry run over `link` (as [`pair::run_master`] does a
/// real sync) and returns the far side's report with the outcome. `store` must have been
/// opened for a dry run.
pub fn run_master(
    store: &mut dyn Store,
    link: StreamLink,
    settings: Settings,
) -> Result<(Outcome, Option<DryRunReport>)> {
    let mut report = None;
    let outcome = pair::master_over(link, |link| {
        let mut dry = MasterLink::new(link);
        let result = boxsync_brain::run(Role::Master, store, &mut dry, Some(settings));
        report = dry.take_report();
        result
    })?;
    Ok((outcome, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxsync_proto::{Finish, Handshake};

    #[test]
    fn the_master_asks_and_stops_unless_the_slave_confirms() {
        let (mut a, mut b) = boxsync_brain::link::pair();
        let mut master = MasterLink::new(&mut a);
        master
            .send(Record::Handshake(Box::new(Handshake::plain("m".into()))))
            .unwrap();
        let Record::Handshake(asked) = b.recv().unwrap() else {
            panic!("not a handshake")
        };
        assert!(asked.dry_run, "the master asks for a dry run");

        // A peer that ignores the key (Dovecot, an older boxsync) answers without it.
        b.send(Record::Handshake(Box::new(Handshake::plain(
            "dovecot".into(),
        ))))
        .unwrap();
        let e = master.recv().unwrap_err();
        assert_eq!(e.exit_code(), boxsync_model::ExitCode::Usage);
        assert!(e.to_string().contains("did not confirm"), "{e}");
    }

    #[test]
    fn a_confirming_slave_reports_in_its_finish_record() {
        let (mut a, mut b) = boxsync_brain::link::pair();
        let log = DryRunLog::new();
        let mut master = MasterLink::new(&mut a);
        let mut slave = SlaveLink::new(&mut b, "maildir:/x (dry run)".into(), log.clone());
        slave
            .send(Record::Handshake(Box::new(Handshake::plain("s".into()))))
            .unwrap();
        let Record::Handshake(h) = master.recv().unwrap() else {
            panic!("not a handshake")
        };
        assert!(h.dry_run, "the slave confirms");
        // The brains would run here; the slave's store writes its lines to the log.
        let finish = Finish::default();
        slave.send(Record::Finish(finish)).unwrap();
        let Record::Finish(f) = master.recv().unwrap() else {
            panic!("not a finish record")
        };
        assert_eq!(f.dry_run, None, "the master keeps the report for itself");
        let report = master.take_report().unwrap();
        assert_eq!(report.store, "maildir:/x (dry run)");
        assert!(report.lines.is_empty(), "nothing would change");
    }

    #[test]
    fn a_long_report_is_cut_to_what_one_record_carries() {
        let line = "would save 1 message (1.0 KiB) into ".to_owned() + &"x".repeat(60);
        let lines: Vec<String> = (0..20_000).map(|i| format!("{line}{i}")).collect();
        let total = lines.len();
        let cut = bounded(lines.clone());
        let kept = cut.len() - 1;
        assert!(kept > 1000 && kept < total, "{kept}");
        assert_eq!(cut[..kept], lines[..kept]);
        assert!(
            cut[kept].contains(&format!("{} more changes", total - kept)),
            "{}",
            cut[kept]
        );
        let mut encoded = Vec::new();
        wire::encode(
            &Record::Finish(Finish {
                dry_run: Some(DryRunReport {
                    store: "s".into(),
                    lines: cut,
                }),
                ..Finish::default()
            }),
            &mut encoded,
        );
        assert!(encoded.len() < wire::MAX_LINE);
        // A short one goes whole.
        assert_eq!(bounded(lines[..3].to_vec()), lines[..3]);
    }
}
