//! The connection between two brains. In one process it is a pair of channels carrying
//! records as Rust values; the remote transports will put the same records on a byte stream.

use boxsync_model::{Error, Result};
use boxsync_proto::Record;
use std::sync::mpsc;

pub trait Link: Send {
    fn send(&mut self, record: Record) -> Result<()>;
    fn recv(&mut self) -> Result<Record>;
}

/// One end of an in-process link.
pub struct ChannelLink {
    tx: mpsc::Sender<Record>,
    rx: mpsc::Receiver<Record>,
}

/// Two connected ends. Sends never block, so both brains may send whole lists before reading.
pub fn pair() -> (ChannelLink, ChannelLink) {
    let (a_tx, b_rx) = mpsc::channel();
    let (b_tx, a_rx) = mpsc::channel();
    (
        ChannelLink { tx: a_tx, rx: a_rx },
        ChannelLink { tx: b_tx, rx: b_rx },
    )
}

impl Link for ChannelLink {
    fn send(&mut self, record: Record) -> Result<()> {
        self.tx
            .send(record)
            .map_err(|_| Error::temp("the other side of the sync went away"))
    }

    fn recv(&mut self) -> Result<Record> {
        self.rx
            .recv()
            .map_err(|_| Error::temp("the other side of the sync went away"))
    }
}
