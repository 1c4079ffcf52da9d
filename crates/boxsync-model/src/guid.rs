//! 128-bit GUIDs, as Dovecot uses them for mailboxes (32 lowercase hex digits on the wire).

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Guid128(pub [u8; 16]);

impl Guid128 {
    pub const ZERO: Guid128 = Guid128([0; 16]);

    /// A fresh random GUID. Dovecot's own are time+pid+host based, but peers treat them as opaque.
    pub fn generate() -> Guid128 {
        Guid128(*uuid::Uuid::new_v4().as_bytes())
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parses exactly 32 hex digits (either case).
    pub fn parse_hex(s: &str) -> Option<Guid128> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, chunk) in b.chunks(2).enumerate() {
            let hi = (chunk[0] as char).to_digit(16)?;
            let lo = (chunk[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Guid128(out))
    }

    /// The first 16 bytes of SHA-1 of a name: how `dovecot.mailbox.log` and `D` records name
    /// directories and subscriptions.
    pub fn sha128_of(name: &str) -> Guid128 {
        use sha1::{Digest, Sha1};
        let digest = Sha1::digest(name.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Guid128(out)
    }
}

impl fmt::Display for Guid128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let g = Guid128::parse_hex("0123456789abcdef0123456789ABCDEF").unwrap();
        assert_eq!(g.to_string(), "0123456789abcdef0123456789abcdef");
        assert!(Guid128::parse_hex("0123").is_none());
        assert!(Guid128::parse_hex("zz23456789abcdef0123456789abcdef").is_none());
    }

    #[test]
    fn generated_guids_differ() {
        assert_ne!(Guid128::generate(), Guid128::generate());
        assert!(!Guid128::generate().is_zero());
    }
}
