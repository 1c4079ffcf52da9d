//! Message body streams: any body survives DotEncoder → DotDecoder whatever the chunking, and
//! raw peer bytes never make the DotDecoder panic or overrun.
#![no_main]

use boxsync_proto::wire::{DotDecoder, DotEncoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split) % (body.len() + 1);

    // Round trip, the body encoded in two chunks and the stream decoded in two other ones, with
    // the next record line right behind the stream.
    let mut enc = DotEncoder::new();
    let mut stream = Vec::new();
    enc.encode(&body[..cut], &mut stream);
    enc.encode(&body[cut..], &mut stream);
    enc.finish(&mut stream);
    let end = stream.len();
    stream.extend_from_slice(b"F\n");
    let dec_cut = (usize::from(split) * 7) % (stream.len() + 1);
    let mut dec = DotDecoder::new();
    let mut back = Vec::new();
    let (used, done) = dec.decode(&stream[..dec_cut], &mut back).unwrap();
    let consumed = if done {
        used
    } else {
        assert_eq!(used, dec_cut);
        let (more, done) = dec.decode(&stream[dec_cut..], &mut back).unwrap();
        assert!(done);
        used + more
    };
    assert_eq!(consumed, end);
    assert_eq!(back, body);

    // Raw input, as a hostile peer would send it.
    let mut dec = DotDecoder::new();
    let mut out = Vec::new();
    let (used, done) = dec.decode(&body[..cut], &mut out).unwrap();
    assert!(used <= cut && (done || used == cut));
    if !done {
        let (more, _) = dec.decode(&body[cut..], &mut out).unwrap();
        assert!(more <= body.len() - cut);
    }
    assert!(out.len() <= body.len());
});
