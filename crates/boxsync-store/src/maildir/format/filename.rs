//! Maildir file names in Dovecot's flavour:
//! `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>,W=<vsize>:2,<flag letters>[,<other>]`.

use std::time::{SystemTime, UNIX_EPOCH};

use boxsync_model::Flags;

/// The system flags' Maildir letters. The array is in ASCII order of the letters, which is
/// the order Dovecot keeps them in a name.
const FLAG_LETTERS: [(u8, Flags); 5] = [
    (b'D', Flags::DRAFT),
    (b'F', Flags::FLAGGED),
    (b'R', Flags::ANSWERED),
    (b'S', Flags::SEEN),
    (b'T', Flags::DELETED),
];

/// Splits a file name into its base (everything before the first `:`) and the info that
/// follows `:2,`. A name with a `:` of another kind (Maildir's experimental `:1,`) has no info
/// we understand, but its base is still the part before the `:`.
pub fn split_info(name: &str) -> (&str, Option<&str>) {
    match name.split_once(':') {
        None => (name, None),
        Some((base, rest)) => (base, rest.strip_prefix("2,")),
    }
}

/// The flags part of a name (what follows `:2,`), decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Info {
    pub flags: Flags,
    /// `a`..=`z`, sorted and without duplicates; `dovecot-keywords` maps them to names.
    pub keyword_letters: Vec<u8>,
    /// Flag letters we do not know, then everything from the first `,` on, verbatim: other
    /// programs put them there, and a rename must not drop them.
    pub unknown: String,
}

impl Info {
    /// The info string for this value, as [`format_info`] builds it.
    pub fn format(&self) -> String {
        format_info(self.flags, &self.keyword_letters, &self.unknown)
    }
}

/// Decodes the info that follows `:2,`.
pub fn parse_info(info: &str) -> Info {
    let (letters, tail) = match info.find(',') {
        Some(i) => info.split_at(i),
        None => (info, ""),
    };
    let mut out = Info::default();
    for c in letters.chars() {
        match FLAG_LETTERS.iter().find(|(l, _)| char::from(*l) == c) {
            Some((_, flag)) => out.flags = out.flags.union(*flag),
            None if c.is_ascii_lowercase() => out.keyword_letters.push(c as u8),
            None => out.unknown.push(c),
        }
    }
    out.keyword_letters.sort_unstable();
    out.keyword_letters.dedup();
    out.unknown.push_str(tail);
    out
}

/// Builds the info part of a name: `2,` then every flag letter — system, unknown and keyword
/// letters merged — in ASCII order without duplicates, then the `,…` tail kept in `unknown`.
/// Flag bits without a letter (none today) are left out.
pub fn format_info(flags: Flags, keyword_letters: &[u8], unknown: &str) -> String {
    let (unknown_letters, tail) = match unknown.find(',') {
        Some(i) => unknown.split_at(i),
        None => (unknown, ""),
    };
    let mut letters: Vec<char> = FLAG_LETTERS
        .iter()
        .filter(|(_, f)| flags.contains(*f))
        .map(|(l, _)| char::from(*l))
        .chain(keyword_letters.iter().map(|&l| char::from(l)))
        .chain(unknown_letters.chars())
        .collect();
    letters.sort_unstable();
    letters.dedup();
    let mut out = String::with_capacity(2 + letters.len() + tail.len());
    out.push_str("2,");
    out.extend(letters);
    out.push_str(tail);
    out
}

/// The physical (`,S=`) and virtual (`,W=`) sizes a base name carries, if any. An info part
/// is ignored, so a whole file name may be passed too.
pub fn base_sizes(base: &str) -> (Option<u64>, Option<u64>) {
    let base = split_info(base).0;
    let mut size = None;
    let mut vsize = None;
    for field in base.split(',').skip(1) {
        if let Some(v) = field.strip_prefix("S=") {
            size = parse_decimal(v).or(size);
        } else if let Some(v) = field.strip_prefix("W=") {
            vsize = parse_decimal(v).or(vsize);
        }
    }
    (size, vsize)
}

/// Digits only: `u64::from_str` would also take a leading `+`.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A fresh base name, `<secs>.M<usecs>P<pid>Q<counter>.<host>`. Time and pid make it unique
/// across processes, `counter` (which the caller increments per name) within one; `/` and
/// `:` in the host name are escaped as Dovecot does, since they would end the name early.
pub fn new_base(now: SystemTime, pid: u32, counter: u64, hostname: &str) -> String {
    // A clock before 1970 gives 0 rather than failing: uniqueness comes from pid and counter.
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut host = String::with_capacity(hostname.len());
    for c in hostname.chars() {
        match c {
            '/' => host.push_str("\\057"),
            ':' => host.push_str("\\072"),
            c => host.push(c),
        }
    }
    format!(
        "{}.M{}P{}Q{}.{}",
        since.as_secs(),
        since.subsec_micros(),
        pid,
        counter,
        host
    )
}

/// `base` with the physical and virtual sizes appended, so that Dovecot need not stat or read
/// the file to learn them.
pub fn with_sizes(base: &str, size: u64, vsize: u64) -> String {
    format!("{base},S={size},W={vsize}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// File names real Dovecot 2.3 wrote (see tests/fixtures/dovecot/make.sh): `\Seen kw1` on
    /// the first, `\Answered \Flagged kw2 $Work` on the second.
    const DOVECOT_NAMES: &str = include_str!("../../../tests/fixtures/dovecot/inbox/filenames");

    #[test]
    fn split_info_cases() {
        assert_eq!(split_info("123.M4P5.host"), ("123.M4P5.host", None));
        assert_eq!(split_info("b,S=1:2,FS"), ("b,S=1", Some("FS")));
        assert_eq!(split_info("b:2,"), ("b", Some("")));
        assert_eq!(split_info("b:1,xyz"), ("b", None));
        assert_eq!(split_info("b:2,S:junk"), ("b", Some("S:junk")));
    }

    #[test]
    fn parse_info_known_answers() {
        let i = parse_info("DFRST");
        assert_eq!(i.flags, Flags::ALL);
        assert!(i.keyword_letters.is_empty() && i.unknown.is_empty());

        let i = parse_info("PScab,extra,stuff");
        assert_eq!(i.flags, Flags::SEEN);
        assert_eq!(i.keyword_letters, b"abc");
        assert_eq!(i.unknown, "P,extra,stuff");

        let i = parse_info("aa");
        assert_eq!(i.keyword_letters, b"a");
        assert_eq!(parse_info(""), Info::default());
    }

    #[test]
    fn format_info_sorts_ascii() {
        assert_eq!(format_info(Flags::EMPTY, &[], ""), "2,");
        let flags = Flags::SEEN.union(Flags::DRAFT).union(Flags::ANSWERED);
        assert_eq!(format_info(flags, b"cb", "P"), "2,DPRSbc");
        assert_eq!(format_info(Flags::DELETED, b"a", "1,x=y"), "2,1Ta,x=y");
    }

    #[test]
    fn canonical_info_round_trips() {
        for info in [
            "",
            "S",
            "DFRST",
            "FRbc",
            "PSa",
            "Sa,foo",
            ",only-tail",
            "2Tz",
        ] {
            assert_eq!(parse_info(info).format(), format!("2,{info}"), "{info}");
        }
    }

    #[test]
    fn dovecot_names() {
        let names: Vec<&str> = DOVECOT_NAMES.lines().collect();
        assert_eq!(names.len(), 2);
        let (base, info) = split_info(names[0]);
        let info = parse_info(info.unwrap());
        assert_eq!(info.flags, Flags::SEEN);
        assert_eq!(info.keyword_letters, b"a");
        assert_eq!(format!("{base}:{}", info.format()), names[0]);
        assert_eq!(base_sizes(base), (Some(130), Some(137)));

        let (base, info) = split_info(names[1]);
        let info = parse_info(info.unwrap());
        assert_eq!(info.flags, Flags::FLAGGED.union(Flags::ANSWERED));
        assert_eq!(info.keyword_letters, b"bc");
        assert_eq!(format!("{base}:{}", info.format()), names[1]);
        assert_eq!(base_sizes(names[1]), (Some(130), Some(137)));
    }

    #[test]
    fn sizes() {
        assert_eq!(base_sizes("1.M2P3.h"), (None, None));
        assert_eq!(base_sizes("1.M2P3.h,W=9"), (None, Some(9)));
        assert_eq!(base_sizes("1.M2P3.h,S=+5,W=x"), (None, None));
        let b = with_sizes("1.M2P3.h", 130, 137);
        assert_eq!(b, "1.M2P3.h,S=130,W=137");
        assert_eq!(base_sizes(&b), (Some(130), Some(137)));
    }

    #[test]
    fn new_base_format() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_319_362_057_899);
        assert_eq!(
            new_base(t, 7523, 4, "mx/1:a"),
            "1795319362.M57899P7523Q4.mx\\0571\\072a"
        );
        let a = new_base(t, 1, 1, "h");
        let b = new_base(t, 1, 2, "h");
        assert_ne!(a, b);
        assert_eq!(split_info(&a).0, a);
    }
}
