//! Both brains in one process, talking through the wire codec over a socket pair: the
//! tests' switch (`BOXSYNC_TEST_WIRE=1`) runs every local sync this way, so that the whole
//! engine suite also checks the wire.

use crate::link::{LinkOptions, StreamLink};
use boxsync_brain::{Outcome, Role, Settings};
use boxsync_model::{Error, ExitCode, Result};
use boxsync_store::Store;
use std::os::unix::net::UnixStream;

/// Runs a sync between two local stores as `sync_local` does, but only what crosses the
/// wire reaches the master: the slave's errors come back in its finish record (and are
/// printed on stderr, as a remote's would be).
pub fn sync_over_socketpair(
    master: &mut dyn Store,
    slave: &mut (dyn Store + Send),
    settings: Settings,
    master_options: LinkOptions,
    slave_options: LinkOptions,
) -> Result<Outcome> {
    let (a, b) =
        UnixStream::pair().map_err(|e| Error::temp(format!("creating a socket pair: {e}")))?;
    let link_a = socket_link(a, master_options)?;
    let mut link_b = socket_link(b, slave_options)?;
    std::thread::scope(|scope| {
        let slave_thread = scope.spawn(move || {
            let result = boxsync_brain::run(Role::Slave, slave, &mut link_b, None);
            let _ = link_b.finish();
            if let Ok(o) = &result {
                for e in &o.errors {
                    eprintln!("boxsync: dsync-remote: Error: {e}");
                }
            }
        });
        let outcome = run_master(master, link_a, settings);
        let _ = slave_thread.join();
        outcome
    })
}

/// Runs the master brain over `link`, closes it, and adds the messages its writer could not
/// read to send (see [`StreamLink::send_errors`]) to the outcome.
pub fn run_master(store: &mut dyn Store, link: StreamLink, settings: Settings) -> Result<Outcome> {
    master_over(link, |link| {
        boxsync_brain::run(Role::Master, store, link, Some(settings))
    })
}

/// Runs `brain` (the master, on `link` or a wrapper of it) and ends the link as
/// [`run_master`] says.
pub(crate) fn master_over(
    mut link: StreamLink,
    brain: impl FnOnce(&mut dyn boxsync_brain::link::Link) -> Result<Outcome>,
) -> Result<Outcome> {
    let result = brain(&mut link);
    // Complete: the slave's finish record comes only after it received every mail we sent.
    let send_errors = link.send_errors();
    if let Err(e) = link.finish() {
        tracing::debug!("closing the link: {e}");
    }
    let mut outcome = result?;
    for e in send_errors {
        outcome.exit = Some(outcome.exit.unwrap_or(ExitCode::Ok).worst(e.exit_code()));
        outcome.errors.push(e.to_string());
    }
    Ok(outcome)
}

/// A link over one end of a UNIX socket (pair or connection).
pub fn socket_link(s: UnixStream, options: LinkOptions) -> Result<StreamLink> {
    let dup = |s: &UnixStream| {
        s.try_clone()
            .map_err(|e| Error::temp(format!("duplicating a socket: {e}")))
    };
    let write = dup(&s)?;
    let closer = dup(&s)?;
    Ok(StreamLink::new(
        s,
        write,
        move || {
            let _ = closer.shutdown(std::net::Shutdown::Write);
        },
        options,
    ))
}
