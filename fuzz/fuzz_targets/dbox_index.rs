//! Dovecot index files from hostile bytes: the index parser and the log replay never panic and
//! keep their invariants (UIDs ascending and below the next UID), and a log replayed in two
//! pieces, the second continuing where the first stopped (as boxsync continues from an index
//! file's log position), ends in the same state as one replay of the whole log.
#![no_main]

use boxsync_store::dbox::index::{self, MailIndex};
use libfuzzer_sys::fuzz_target;

fn check_invariants(index: &MailIndex) {
    let mut last = 0;
    for rec in &index.records {
        assert!(rec.uid > last, "UIDs must ascend");
        last = rec.uid;
        assert!(index.record_keywords(rec).count() <= index.keywords.len());
    }
    if last != 0 {
        assert!(
            last < index.next_uid(),
            "next UID {} <= UID {last}",
            index.next_uid()
        );
    }
}

/// What a reader of the index sees (the replay budget aside).
fn state(index: &MailIndex) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        index.uid_validity(),
        index.next_uid(),
        &index.records,
        &index.extensions,
        &index.keywords,
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    // The bytes as an index file, with themselves as its log.
    if let Ok(mut parsed) = index::parse_index(bytes) {
        check_invariants(&parsed);
        if parsed.apply_log(bytes, 0).is_ok() {
            check_invariants(&parsed);
        }
    }

    // The bytes as a log.
    let Ok(whole) = index::replay_log(bytes) else {
        return;
    };
    check_invariants(&whole);
    let Ok(header) = index::parse_log_header(bytes) else {
        panic!("replay_log accepted a log whose header does not parse");
    };
    let tail = bytes.len() - header.hdr_size;
    let cut = header.hdr_size + (usize::from(split) * 4) % (tail + 1);
    let mut pieces = MailIndex::empty(header.indexid);
    let Ok(end) = pieces.apply_log(&bytes[..cut], 0) else {
        return;
    };
    assert!(end.offset <= cut);
    // The second piece fails when it uses an extension introduced in the first (the index
    // position of a real index file is never inside a transaction).
    if pieces.apply_log(bytes, end.offset).is_ok() {
        assert_eq!(state(&pieces), state(&whole));
    }
});
