//! IMAP modified UTF-7 (RFC 3501 §5.1.3), the encoding Dovecot uses for folder names on disk.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Encodes a UTF-8 name. Printable ASCII stands for itself (`&` becomes `&-`); everything else
/// is UTF-16BE in base64 with `,` for `/`, between `&` and `-`.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut pending, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

fn flush(pending: &mut Vec<u16>, out: &mut String) {
    if pending.is_empty() {
        return;
    }
    let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
    out.push('&');
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let digits = n + 1;
        for i in 0..digits {
            out.push(ALPHABET[((v >> (18 - 6 * i)) & 0x3f) as usize] as char);
        }
    }
    out.push('-');
    pending.clear();
}

/// Decodes a modified UTF-7 name, rejecting anything that a conforming encoder would not produce
/// (so that decode followed by encode gives back the same bytes).
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'&' {
            if !(0x20..0x7f).contains(&b) {
                return None;
            }
            out.push(b as char);
            i += 1;
            continue;
        }
        let end = i + 1 + bytes[i + 1..].iter().position(|&c| c == b'-')?;
        let run = &bytes[i + 1..end];
        if run.is_empty() {
            out.push('&');
        } else {
            out.push_str(&decode_run(run)?);
        }
        i = end + 1;
    }
    if encode(&out) != s {
        return None;
    }
    Some(out)
}

fn decode_run(run: &[u8]) -> Option<String> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut bytes = Vec::new();
    for &c in run {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    if bytes.len() % 2 != 0 || bits != 0 {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    let text = String::from_utf16(&units).ok()?;
    // A run that encodes printable ASCII is not canonical.
    if text.chars().any(|c| (' '..='~').contains(&c)) {
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_answers() {
        assert_eq!(encode("INBOX"), "INBOX");
        assert_eq!(encode("Prøjekt"), "Pr&APg-jekt");
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(encode("日本語"), "&ZeVnLIqe-");
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(decode("Pr&APg-jekt").as_deref(), Some("Prøjekt"));
        assert_eq!(decode("&ZeVnLIqe-").as_deref(), Some("日本語"));
        assert_eq!(decode("&-").as_deref(), Some("&"));
    }

    #[test]
    fn rejects_non_canonical() {
        assert_eq!(decode("&AGE-"), None); // "a" encoded in base64
        assert_eq!(decode("&ZeVnLIqe"), None); // unterminated
        assert_eq!(decode("&Zg-"), None); // odd byte count
        assert_eq!(decode("a\u{1}b"), None);
    }

    proptest! {
        #[test]
        fn round_trip(s in "\\PC{0,20}") {
            let enc = encode(&s);
            prop_assert!(enc.bytes().all(|b| (0x20..0x7f).contains(&b)));
            prop_assert_eq!(decode(&enc), Some(s));
        }
    }
}
