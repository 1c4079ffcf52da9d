//! The values of doveadm's sync filters, parsed as doveadm parses them: `-t`/`-e` dates
//! (`mail_parse_human_timestamp()`), `-I` sizes (the settings size syntax), `-O` flags and
//! `-g` mailbox GUIDs. Each parser is a clap value parser, so a bad value is a usage error
//! naming its flag.

use boxsync_model::{Flags, Guid128};

/// `-t`/`-e`: a UNIX time. Accepts, in doveadm's order: `YYYY-MM-DD` (local midnight), an IMAP
/// date `1-Mar-2024` (midnight UTC), a UNIX time, or an interval back from now (`30 days`,
/// `2 weeks`, `12h`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    parse_time_at(s, now)
}

fn parse_time_at(s: &str, now: i64) -> Result<i64, String> {
    if let Some((y, m, d)) = iso_date(s) {
        return local_midnight(y, m, d).ok_or_else(|| format!("date out of range: {s}"));
    }
    if let Some((y, m, d)) = imap_date(s) {
        return Ok(days_from_civil(y, m, d) * 86_400);
    }
    if let Some(t) = unix_time(s) {
        return Ok(t);
    }
    match interval_secs(s) {
        Some(secs) => Ok(now - secs),
        None => Err(format!(
            "'{s}' is not a date (YYYY-MM-DD, 1-Mar-2024, a UNIX time or an interval such as \
             '30 days')"
        )),
    }
}

/// `-I`: bytes, with an optional unit `B`, `k`, `M`, `G`, `T` (powers of 1024; `kB`, `KiB`
/// too). 0 means no limit.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size '{s}' (a number with an optional unit: 100k, 10M)");
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let num: u64 = s[..digits].parse().map_err(|_| bad())?;
    let rest = s[digits..].trim_start_matches(' ');
    let mut chars = rest.chars();
    let multiply: u64 = match chars.next().map(|c| c.to_ascii_uppercase()) {
        None => 1,
        Some('B') => {
            if chars.next().is_some() {
                return Err(bad());
            }
            1
        }
        Some(unit) => {
            let power = match unit {
                'K' => 1,
                'M' => 2,
                'G' => 3,
                'T' => 4,
                _ => return Err(bad()),
            };
            let mut tail = chars.as_str();
            for c in ['i', 'b'] {
                if tail.starts_with(c) || tail.starts_with(c.to_ascii_uppercase()) {
                    tail = &tail[1..];
                }
            }
            if !tail.is_empty() {
                return Err(bad());
            }
            1024u64.pow(power)
        }
    };
    num.checked_mul(multiply)
        .ok_or_else(|| format!("size is too large: {s}"))
}

/// `-O`: one flag or keyword, `-` first for "mail without it". System flags must be valid.
pub fn parse_flag(s: &str) -> Result<String, String> {
    if s.contains(' ') {
        return Err("only one flag is supported".into());
    }
    let name = s.strip_prefix('-').unwrap_or(s);
    if name.starts_with('\\')
        && Flags::from_imap_name(name).is_none()
        && !name.eq_ignore_ascii_case("\\Recent")
    {
        return Err(format!("invalid system flag '{name}'"));
    }
    Ok(s.to_owned())
}

/// `-g`: which mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoxGuid {
    /// `-g ""`: sync the mailbox list, no mail.
    ListOnly,
    Guid(Guid128),
}

pub fn parse_box_guid(s: &str) -> Result<BoxGuid, String> {
    if s.is_empty() {
        return Ok(BoxGuid::ListOnly);
    }
    match Guid128::parse_hex(s) {
        Some(g) if !g.is_zero() => Ok(BoxGuid::Guid(g)),
        _ => Err(format!("'{s}' is not a mailbox GUID (32 hex digits)")),
    }
}

impl std::fmt::Display for BoxGuid {
    /// The form [`parse_box_guid`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoxGuid::ListOnly => Ok(()),
            BoxGuid::Guid(g) => write!(f, "{g}"),
        }
    }
}

fn iso_date(s: &str) -> Option<(i64, u32, u32)> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) {
        return None;
    }
    if !digits(5..7) || !digits(8..10) {
        return None;
    }
    Some((
        s[0..4].parse().ok()?,
        s[5..7].parse().ok()?,
        s[8..10].parse().ok()?,
    ))
}

/// `d-Mon-yyyy` or `dd-Mon-yyyy` (a leading space allowed), the date alone.
fn imap_date(s: &str) -> Option<(i64, u32, u32)> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let s = s.strip_prefix(' ').unwrap_or(s);
    let (day, rest) = s.split_once('-')?;
    if day.is_empty() || day.len() > 2 || !day.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (month, year) = rest.split_once('-')?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))?;
    if year.len() != 4 || !year.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((year.parse().ok()?, month as u32 + 1, day.parse().ok()?))
}

fn unix_time(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The settings time syntax: a number, spaces, and a unit that is a prefix of `secs`,
/// `seconds`, `mins`, `minutes`, `hours`, `days` or `weeks` (any case), or `ms`-style
/// milliseconds in whole seconds.
fn interval_secs(s: &str) -> Option<i64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let num: u64 = s[..digits].parse().ok()?;
    let unit = s[digits..].trim_start_matches(' ').to_ascii_lowercase();
    let prefix_of = |words: &[&str]| words.iter().any(|w| w.starts_with(unit.as_str()));
    let multiply: u64 = match unit.chars().next() {
        None => return None,
        Some('s') if prefix_of(&["secs", "seconds"]) => 1,
        Some('m') if prefix_of(&["mins", "minutes"]) => 60,
        Some('m') if prefix_of(&["msecs", "mseconds", "millisecs", "milliseconds"]) => {
            return num.is_multiple_of(1000).then_some((num / 1000) as i64);
        }
        Some('h') if prefix_of(&["hours"]) => 3600,
        Some('d') if prefix_of(&["days"]) => 86_400,
        Some('w') if prefix_of(&["weeks"]) => 7 * 86_400,
        _ => return None,
    };
    // Dovecot keeps intervals in an unsigned int.
    let secs = num.checked_mul(multiply)?;
    (secs <= u64::from(u32::MAX)).then_some(secs as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (out-of-range days roll over, as
/// `timegm` does).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Midnight of a date in the local time zone, as doveadm's `mktime()` of a zeroed `tm`.
fn local_midnight(y: i64, m: u32, d: u32) -> Option<i64> {
    // SAFETY: an all-zero `tm` is a valid value of the plain C struct; `mktime` only reads
    // and normalizes the struct we own, and reads the process's time zone.
    let t = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = i32::try_from(y - 1900).ok()?;
        tm.tm_mon = m as i32 - 1;
        tm.tm_mday = d as i32;
        libc::mktime(&mut tm)
    };
    (t != -1).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn times_in_every_form() {
        // The tests run in the process's time zone; compare the local form with mktime.
        assert_eq!(
            parse_time_at("2024-03-01", NOW),
            Ok(local_midnight(2024, 3, 1).unwrap())
        );
        assert_eq!(parse_time_at("1-Mar-2024", NOW), Ok(1_709_251_200));
        assert_eq!(parse_time_at("01-mar-2024", NOW), Ok(1_709_251_200));
        assert_eq!(parse_time_at(" 1-Mar-2024", NOW), Ok(1_709_251_200));
        assert_eq!(parse_time_at("29-Feb-2000", NOW), Ok(951_782_400));
        assert_eq!(parse_time_at("1709251200", NOW), Ok(1_709_251_200));
        assert_eq!(parse_time_at("0", NOW), Ok(0));
    }

    #[test]
    fn intervals_count_back_from_now() {
        assert_eq!(parse_time_at("30 days", NOW), Ok(NOW - 30 * 86_400));
        assert_eq!(parse_time_at("2 weeks", NOW), Ok(NOW - 14 * 86_400));
        assert_eq!(parse_time_at("12 hours", NOW), Ok(NOW - 12 * 3600));
        assert_eq!(parse_time_at("12h", NOW), Ok(NOW - 12 * 3600));
        assert_eq!(parse_time_at("5 MINS", NOW), Ok(NOW - 300));
        assert_eq!(parse_time_at("90s", NOW), Ok(NOW - 90));
        assert_eq!(parse_time_at("1 day", NOW), Ok(NOW - 86_400));
        assert_eq!(parse_time_at("2000ms", NOW), Ok(NOW - 2));
    }

    #[test]
    fn bad_times() {
        for bad in [
            "",
            "yesterday",
            "30",
            "30 dayz",
            "30 years",
            "2024-3-1",
            "1-Mars-2024",
            "1-Mar-24",
            "1500ms",
            "99999999999 days",
        ] {
            if bad == "30" {
                // A bare number is a UNIX time.
                assert_eq!(parse_time_at(bad, NOW), Ok(30));
                continue;
            }
            assert!(parse_time_at(bad, NOW).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("100k"), Ok(100 * 1024));
        assert_eq!(parse_size("2 K"), Ok(2048));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert_eq!(parse_size("2kb"), Ok(2048));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        for bad in ["", "k", "10 X", "10kx", "10BB", "-1", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags() {
        for good in [
            "\\Seen",
            "-\\Seen",
            "\\flagged",
            "$Label1",
            "-Junk",
            "\\Recent",
        ] {
            assert_eq!(parse_flag(good).as_deref(), Ok(good));
        }
        assert!(parse_flag("\\Important").is_err());
        assert!(parse_flag("-\\Bogus").is_err());
        assert!(parse_flag("\\Seen \\Flagged").is_err());
    }

    #[test]
    fn box_guids() {
        let g = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_box_guid(g),
            Ok(BoxGuid::Guid(Guid128::parse_hex(g).unwrap()))
        );
        assert_eq!(parse_box_guid(g).unwrap().to_string(), g);
        assert_eq!(parse_box_guid(""), Ok(BoxGuid::ListOnly));
        assert_eq!(BoxGuid::ListOnly.to_string(), "");
        assert!(parse_box_guid("INBOX").is_err());
        assert!(parse_box_guid(&"0".repeat(32)).is_err());
    }
}
