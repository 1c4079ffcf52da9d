//! Properties of the wire codec: every record survives encode → decode, whatever order the
//! peer announces its keys in; escaping and dot-stuffing invert exactly for any bytes and any
//! chunking; and no input, however hostile, makes the decoders panic.

use boxsync_model::{Flags, Guid128, MailboxName};
use boxsync_proto::wire::{self, Decoded, DotDecoder, DotEncoder, PeerSchemas};
use boxsync_proto::{
    ChangeType, Deletes, DryRunReport, Existence, Finish, Handshake, KeywordChange, Mail, MailBody,
    MailChange, MailRequest, MailboxRecord, MailboxState, Record, SyncType, TreeNode,
};
use proptest::prelude::*;
use proptest::sample::Index;

struct NoBytes;

impl MailBody for NoBytes {
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(std::io::empty()))
    }
}

/// Debug, but complete for Mail (whose Debug leaves fields out) and without its body.
fn describe(r: &Record) -> String {
    match r {
        Record::Mail(m) => format!(
            "Mail {:?} {} {:?} {:?} {} {}",
            m.guid, m.uid, m.pop3_uidl, m.pop3_order, m.received_date, m.saved_date,
        ),
        other => format!("{other:?}"),
    }
}

fn preamble_lines() -> Vec<Vec<u8>> {
    wire::preamble()
        .strip_suffix(b"\n")
        .unwrap()
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn peer_of(lines: &[Vec<u8>]) -> PeerSchemas {
    let mut peer = PeerSchemas::new();
    let mut done = false;
    for l in lines {
        assert!(!done);
        done = peer.feed_line(l).unwrap();
    }
    assert!(done);
    peer
}

fn our_peer() -> PeerSchemas {
    peer_of(&preamble_lines())
}

fn line_of(r: &Record) -> Vec<u8> {
    let mut line = Vec::new();
    wire::encode(r, &mut line);
    assert_eq!(line.pop(), Some(b'\n'));
    assert!(!line.contains(&b'\n'), "{}", line.escape_ascii());
    line
}

fn arb_guid() -> impl Strategy<Value = Guid128> {
    any::<[u8; 16]>().prop_map(Guid128)
}

fn arb_name() -> impl Strategy<Value = MailboxName> {
    prop::collection::vec("[^/\\p{Cc}]{1,12}", 1..4)
        .prop_filter_map("valid mailbox name", |parts| {
            MailboxName::from_parts(parts).ok()
        })
}

/// Lists that are not exactly one empty string (that one reads back as an empty list, as in
/// Dovecot).
fn arb_list() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(any::<String>(), 0..4)
        .prop_filter("lone empty element", |v| !(v.len() == 1 && v[0].is_empty()))
}

fn arb_flags() -> impl Strategy<Value = Flags> {
    (0u8..=Flags::ALL.0).prop_map(Flags)
}

fn arb_handshake() -> impl Strategy<Value = Handshake> {
    (
        any::<String>(),
        prop_oneof![
            Just(SyncType::Full),
            Just(SyncType::Changed),
            Just(SyncType::State)
        ],
        any::<(bool, bool, bool)>(),
        prop::collection::vec(any::<String>(), 0..4),
        arb_list(),
        any::<u32>(),
    )
        .prop_map(
            |(
                hostname,
                sync_type,
                (backup_send, backup_recv, no_backup_overwrite),
                boxes,
                ex,
                lock,
            )| {
                Handshake {
                    hostname,
                    sync_type,
                    backup_send,
                    backup_recv,
                    no_backup_overwrite,
                    sync_boxes: boxes,
                    exclude_mailboxes: ex,
                    lock_timeout: lock,
                    sync_box_guid: boxsync_model::Guid128::ZERO,
                    no_mail_sync: false,
                    sync_since_timestamp: 0,
                    sync_until_timestamp: 0,
                    sync_max_size: 0,
                    sync_flags: None,
                    dry_run: lock % 2 == 1,
                    ns_prefix: (lock % 5 == 0).then(|| format!("p{}.", lock % 7)),
                    virtual_all_box: (lock % 11 == 0).then(|| "All Mail".to_owned()),
                    alt_char: char::from_u32(lock % 0x11_0000).filter(|_| lock % 3 == 0),
                }
            },
        )
}

fn arb_state() -> impl Strategy<Value = MailboxState> {
    (arb_guid(), any::<(u32, u32, u64, u64, u32)>()).prop_map(|(g, (v, u, m, p, c))| MailboxState {
        mailbox_guid: g,
        last_uidvalidity: v,
        last_common_uid: u,
        last_common_modseq: m,
        last_common_pvt_modseq: p,
        last_messages_count: c,
    })
}

fn arb_node() -> impl Strategy<Value = TreeNode> {
    (
        arb_name(),
        prop_oneof![
            Just(Existence::Exists),
            Just(Existence::Nonexistent),
            Just(Existence::Deleted)
        ],
        prop_oneof![Just(Guid128::ZERO), arb_guid()],
        any::<(u32, u32, i64, bool, i64)>(),
    )
        .prop_map(
            |(name, existence, mailbox_guid, (v, n, r, s, sc))| TreeNode {
                name,
                existence,
                mailbox_guid,
                uid_validity: v,
                uid_next: n,
                last_renamed_or_created: r,
                subscribed: s,
                last_subscription_change: sc,
            },
        )
}

fn arb_deletes() -> impl Strategy<Value = Deletes> {
    let list = || prop::collection::vec((arb_guid(), any::<i64>()), 0..4);
    (list(), list(), list()).prop_map(|(mailboxes, dirs, unsubscribes)| Deletes {
        mailboxes,
        dirs,
        unsubscribes,
    })
}

fn arb_mailbox() -> impl Strategy<Value = MailboxRecord> {
    (
        arb_guid(),
        any::<(u32, u32, u32, u32, u64, u64)>(),
        any::<(bool, bool, Option<u64>)>(),
    )
        .prop_map(
            |(g, (v, n, c, r, h, p), (lost, ignore, digest))| MailboxRecord {
                mailbox_guid: g,
                uid_validity: v,
                uid_next: n,
                messages_count: c,
                first_recent_uid: r,
                highest_modseq: h,
                highest_pvt_modseq: p,
                mailbox_lost: lost,
                mailbox_ignore: ignore,
                content_digest: digest,
            },
        )
}

fn arb_change() -> impl Strategy<Value = MailChange> {
    let kw = prop_oneof![
        any::<String>().prop_map(KeywordChange::Add),
        any::<String>().prop_map(KeywordChange::Remove),
        any::<String>().prop_map(KeywordChange::Final),
        any::<String>().prop_map(KeywordChange::AddFinal),
    ];
    (
        prop_oneof![
            Just(ChangeType::Save),
            Just(ChangeType::Expunge),
            Just(ChangeType::FlagChange)
        ],
        any::<(u32, String, u64)>(),
        (arb_flags(), arb_flags(), arb_flags()),
        any::<bool>(),
        prop::collection::vec(kw, 0..4),
        // All ones is Dovecot's "size unknown", which reads back as 0.
        (any::<i64>(), 0..u64::MAX),
    )
        .prop_map(
            |(change_type, (uid, guid, modseq), (add, remove, fin), reset, kws, (rt, vs))| {
                MailChange {
                    change_type,
                    uid,
                    guid,
                    modseq,
                    add_flags: add,
                    remove_flags: remove,
                    final_flags: fin,
                    keywords_reset: reset,
                    keyword_changes: kws,
                    received_timestamp: rt,
                    virtual_size: vs,
                }
            },
        )
}

fn arb_mail() -> impl Strategy<Value = Mail> {
    (
        any::<(String, u32)>(),
        // An empty UIDL reads back as none, as Dovecot sends none.
        prop::option::of(".+"),
        any::<(Option<u32>, i64, i64, bool)>(),
    )
        .prop_map(
            |((guid, uid), pop3_uidl, (pop3_order, rd, sd, body))| Mail {
                guid,
                uid,
                pop3_uidl,
                pop3_order,
                received_date: rd,
                saved_date: sd,
                body: body.then(|| Box::new(NoBytes) as Box<dyn MailBody>),
            },
        )
}

fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        arb_handshake().prop_map(|h| Record::Handshake(Box::new(h))),
        arb_state().prop_map(Record::State),
        arb_node().prop_map(Record::Node),
        arb_deletes().prop_map(Record::Deletes),
        arb_mailbox().prop_map(Record::Mailbox),
        arb_change().prop_map(Record::Change),
        any::<(String, u32)>().prop_map(|(guid, uid)| Record::Request(MailRequest { guid, uid })),
        arb_mail().prop_map(Record::Mail),
        (
            any::<(Option<String>, u32, bool)>(),
            prop::option::of((any::<String>(), arb_list()))
        )
            .prop_map(|((error, mail_error, r), dry_run)| {
                Record::Finish(Finish {
                    error,
                    mail_error,
                    require_full_resync: r,
                    dry_run: dry_run.map(|(store, lines)| DryRunReport { store, lines }),
                })
            }),
        Just(()).prop_map(|()| Record::End),
    ]
}

fn has_body(r: &Record) -> bool {
    matches!(r, Record::Mail(m) if m.body.is_some())
}

/// Bytes rich in what the codecs treat specially.
fn arb_tricky_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(b'.'),
            4 => Just(b'\r'),
            4 => Just(b'\n'),
            2 => Just(b'\t'),
            2 => Just(1u8),
            2 => Just(2u8),
            1 => Just(0u8),
            6 => any::<u8>(),
        ],
        0..max,
    )
}

/// `data` cut at the given places.
fn chunks<'a>(data: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
    at.push(0);
    at.push(data.len());
    at.sort_unstable();
    at.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

/// Feeds `stream` in chunks; returns the body, the bytes consumed, and whether it ended.
fn dot_decode_chunked(stream: &[u8], cuts: &[Index]) -> (Vec<u8>, usize, bool) {
    let mut dec = DotDecoder::new();
    let mut body = Vec::new();
    let mut consumed = 0;
    for chunk in chunks(stream, cuts) {
        let (used, done) = dec.decode(chunk, &mut body).unwrap();
        assert!(used <= chunk.len());
        consumed += used;
        if done {
            return (body, consumed, true);
        }
        assert_eq!(used, chunk.len(), "an unfinished decoder takes every byte");
    }
    (body, consumed, false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn records_round_trip(record in arb_record()) {
        let line = line_of(&record);
        let (decoded, stream) = wire::decode(&our_peer(), &line).unwrap();
        let Decoded::Record(back) = decoded else { panic!("{decoded:?}") };
        prop_assert_eq!(describe(&back), describe(&record));
        prop_assert_eq!(stream, has_body(&record));
    }

    /// A peer may announce its keys in any order; values are found by name.
    #[test]
    fn records_decode_by_the_peers_key_order(record in arb_record(), seed in any::<u64>()) {
        prop_assume!(!matches!(record, Record::End));
        let line = line_of(&record);
        let mut lines = preamble_lines();
        let at = lines.iter().position(|l| l[0] == line[0]).unwrap();
        let keys: Vec<Vec<u8>> = lines[at][1..].split(|&b| b == b'\t').map(<[u8]>::to_vec).collect();
        // A permutation from the seed (a shuffle strategy cannot depend on the record's type).
        let mut order: Vec<usize> = (0..keys.len()).collect();
        let mut s = seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut values: Vec<&[u8]> = if line.len() > 1 {
            line[1..].split(|&b| b == b'\t').collect()
        } else {
            Vec::new()
        };
        values.resize(keys.len(), b"\x02");
        let mut schema = vec![line[0]];
        schema.extend(order.iter().map(|&i| keys[i].as_slice()).collect::<Vec<_>>().join(&b'\t'));
        lines[at] = schema;
        let mut permuted = vec![line[0]];
        permuted.extend(order.iter().map(|&i| values[i]).collect::<Vec<_>>().join(&b'\t'));
        let (decoded, stream) = wire::decode(&peer_of(&lines), &permuted).unwrap();
        let Decoded::Record(back) = decoded else { panic!("{decoded:?}") };
        prop_assert_eq!(describe(&back), describe(&record));
        prop_assert_eq!(stream, has_body(&record));
    }

    #[test]
    fn escaping_round_trips(value in prop_oneof![arb_tricky_bytes(64), any::<Vec<u8>>()]) {
        let mut escaped = Vec::new();
        wire::escape(&value, &mut escaped);
        prop_assert!(!escaped.iter().any(|b| matches!(b, b'\t' | b'\r' | b'\n' | 0)));
        prop_assert_ne!(escaped.as_slice(), b"\x02");
        prop_assert_eq!(wire::unescape(&escaped).unwrap(), value);
    }

    #[test]
    fn dot_stuffing_round_trips(
        body in prop_oneof![arb_tricky_bytes(300), any::<Vec<u8>>()],
        enc_cuts in prop::collection::vec(any::<Index>(), 0..6),
        dec_cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let mut enc = DotEncoder::new();
        let mut stream = Vec::new();
        for chunk in chunks(&body, &enc_cuts) {
            enc.encode(chunk, &mut stream);
        }
        enc.finish(&mut stream);
        let end = stream.len();
        // The next record line follows the stream directly.
        stream.extend_from_slice(b"F\n");
        let (back, consumed, done) = dot_decode_chunked(&stream, &dec_cuts);
        prop_assert!(done);
        prop_assert_eq!(consumed, end);
        prop_assert_eq!(back, body);
    }

    #[test]
    fn dot_decoder_takes_any_bytes(
        input in prop_oneof![arb_tricky_bytes(300), any::<Vec<u8>>()],
        cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let (body, consumed, done) = dot_decode_chunked(&input, &cuts);
        prop_assert!(consumed <= input.len());
        prop_assert!(done || consumed == input.len());
        prop_assert!(body.len() <= consumed);
    }

    /// Hostile lines: never a panic, and whatever decodes re-encodes to the same record.
    #[test]
    fn decode_takes_any_line(line in prop_oneof![
        any::<Vec<u8>>(),
        (
            prop::sample::select(b"HSNDBACRMFcXZ.".to_vec()),
            prop::collection::vec(
                prop_oneof![
                    Just(b"\x02".to_vec()),
                    Just(Vec::new()),
                    Just(b"0123456789abcdef0123456789abcdef".to_vec()),
                    Just(b"INBOX\x01tsub".to_vec()),
                    Just(b"18446744073709551616".to_vec()),
                    prop::sample::select(vec![&b"s"[..], b"y", b"n", b"f", b"+kw", b"ff"])
                        .prop_map(<[u8]>::to_vec),
                    "[0-9a-f]{1,20}".prop_map(String::into_bytes),
                    arb_tricky_bytes(12),
                ],
                0..16,
            ),
        )
            .prop_map(|(letter, fields)| {
                let mut line = vec![letter];
                line.extend(fields.join(&b'\t'));
                line
            }),
    ]) {
        let peer = our_peer();
        if let Ok((Decoded::Record(first), _)) = wire::decode(&peer, &line) {
            let again = line_of(&first);
            let (decoded, _) = wire::decode(&peer, &again).unwrap();
            let Decoded::Record(second) = decoded else { panic!("{decoded:?}") };
            prop_assert_eq!(describe(&second), describe(&first));
        }
    }

    #[test]
    fn schemas_take_any_lines(lines in prop::collection::vec(
        prop_oneof![any::<Vec<u8>>(), arb_tricky_bytes(40), Just(b".".to_vec())],
        0..8,
    )) {
        let mut peer = PeerSchemas::new();
        let _ = peer.feed_line(b"VERSION\tdsync\t3\t5");
        for l in &lines {
            if peer.feed_line(l).is_err() {
                break;
            }
        }
        let mut fresh = PeerSchemas::new();
        for l in &lines {
            let _ = fresh.feed_line(l);
        }
    }
}
