//! One record line from a hostile peer: decoding never panics, and whatever decodes survives
//! encode → decode unchanged.
#![no_main]

use boxsync_proto::Record;
use boxsync_proto::wire::{self, Decoded, PeerSchemas};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static PEER: LazyLock<PeerSchemas> = LazyLock::new(|| {
    let mut peer = PeerSchemas::new();
    let preamble = wire::preamble();
    let mut done = false;
    for line in preamble[..preamble.len() - 1].split(|&b| b == b'\n') {
        done = peer.feed_line(line).expect("our own preamble parses");
    }
    assert!(done);
    peer
});

/// Debug, but complete for Mail (whose Debug leaves fields out).
fn describe(r: &Record) -> String {
    match r {
        Record::Mail(m) => format!(
            "Mail {:?} {} {:?} {:?} {} {} {}",
            m.guid,
            m.uid,
            m.pop3_uidl,
            m.pop3_order,
            m.received_date,
            m.saved_date,
            m.body.is_some()
        ),
        other => format!("{other:?}"),
    }
}

fuzz_target!(|line: &[u8]| {
    let Ok((Decoded::Record(first), _)) = wire::decode(&PEER, line) else {
        return;
    };
    let mut again = Vec::new();
    wire::encode(&first, &mut again);
    assert_eq!(again.pop(), Some(b'\n'));
    assert!(!again.contains(&b'\n'), "an unescaped LF in {:?}", again);
    match wire::decode(&PEER, &again) {
        Ok((Decoded::Record(second), _)) => assert_eq!(describe(&first), describe(&second)),
        other => panic!("our encoding of {first:?} decodes to {other:?}"),
    }
});
