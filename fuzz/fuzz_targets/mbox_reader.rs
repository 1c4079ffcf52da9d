//! mbox files from hostile bytes: `MboxReader` in every flavour never panics, never reads
//! past the input and gives messages in order; the metadata header functions never panic; and
//! what the store writes reads back as it was — any message written as mboxrd (after another
//! in the same file) reads back the same, and a message given the metadata headers, written
//! and read as the store does (mboxrd, read back with `Flavor::Auto`), still shows a reader the
//! same message.
#![no_main]

use boxsync_store::mbox::format::{
    self, Flavor, MboxReader, parse_meta, rewrite_meta, strip_hidden, write_message,
};
use libfuzzer_sys::fuzz_target;

const FROM_A: &[u8] = b"From MAILER-DAEMON Fri Mar  1 09:00:00 2024";
const FROM_B: &[u8] = b"From sender@example.org Sat Mar  2 10:00:00 2024";

/// Reads `data` as an mbox of `flavor` to the end or the first error, checking what any
/// reader must hold, and the header functions on every message.
fn read_everything(data: &[u8], flavor: Flavor) {
    let mut last_offset = None;
    for m in MboxReader::new(data, flavor) {
        let Ok(m) = m else { break };
        let offset = usize::try_from(m.offset).expect("offset fits");
        assert!(offset < data.len(), "offset {offset} past the input");
        assert!(
            last_offset.is_none_or(|o| o < offset),
            "offsets must ascend"
        );
        last_offset = Some(offset);
        assert!(m.from_line.starts_with(b"From "));
        assert!(data[offset..].starts_with(&m.from_line));
        let meta = parse_meta(&m.body);
        let visible = strip_hidden(&m.body);
        assert!(visible.len() <= m.body.len());
        let again = rewrite_meta(&m.body, &meta);
        assert_eq!(parse_meta(&again).uid, meta.uid);
        let _ = format::pop3_uidl(&m.body);
        let _ = format::parse_from_line(&m.from_line);
    }
}

fuzz_target!(|data: &[u8]| {
    for flavor in [Flavor::Mboxrd, Flavor::Mboxo, Flavor::Mboxcl2, Flavor::Auto] {
        read_everything(data, flavor);
    }

    // mboxrd is reversible for any bytes: two messages, each read back as written.
    let mut file = Vec::new();
    let first = write_message(&mut file, FROM_A, data, Flavor::Mboxrd).expect("write");
    assert_eq!(first, file.len() as u64);
    write_message(&mut file, FROM_B, b"Subject: next\n\nx\n", Flavor::Mboxrd).expect("write");
    let msgs: Vec<_> = MboxReader::new(&file[..], Flavor::Mboxrd)
        .collect::<Result<_, _>>()
        .expect("read back");
    assert_eq!(msgs.len(), 2, "{file:?}");
    assert_eq!(msgs[0].body, data);
    assert_eq!(msgs[0].from_line, FROM_A);
    assert!(!msgs[0].truncated);
    assert_eq!(msgs[1].offset, first);
    assert_eq!(msgs[1].body, b"Subject: next\n\nx\n");

    // The store's way: the mail without the headers a folder keeps for itself, given them
    // with this folder's values, written as mboxrd, read back with Auto. A reader of the mail
    // must see what it saw before.
    let mail = strip_hidden(data);
    let meta = parse_meta(
        b"X-IMAPbase: 1700000000 0000000008 $Important Work\nX-UID: 7\nStatus: RO\n\
          X-Status: AF\nX-Keywords: Work\n\n",
    );
    assert!(meta.imapbase.is_some() && meta.uid == Some(7) && !meta.recent);
    let stored = rewrite_meta(&mail, &meta);
    let mut file = Vec::new();
    write_message(&mut file, FROM_A, &stored, Flavor::Mboxrd).expect("write");
    let msgs: Vec<_> = MboxReader::new(&file[..], Flavor::Auto)
        .collect::<Result<_, _>>()
        .expect("read back");
    assert_eq!(msgs.len(), 1);
    let back = parse_meta(&msgs[0].body);
    assert_eq!(back, meta, "the metadata changed");
    assert_eq!(
        strip_hidden(&msgs[0].body),
        mail,
        "what a reader sees changed"
    );
});
