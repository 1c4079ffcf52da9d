//! FETCH items imap-codec cannot parse yet: Dovecot's `X-GUID`, RFC 8474 `EMAILID` and
//! Gmail's `X-GM-MSGID`. imap-next hands over the bytes of a response it could not decode;
//! if that is an untagged FETCH, these items are lifted out of its line fragments (never
//! out of literals: imap-codec's fragmentizer tells the two apart, and quoted strings and
//! `[..]` sections are skipped) and imap-codec decodes the rest. Everything else stays
//! imap-codec's job: this module only recognises three item names and their one-token values.
//!
//! Also here: status responses whose human-readable text has 8-bit bytes. IMAP4rev1 text
//! is 7-bit, but Dovecot puts UTF-8 mailbox names in it ("NO [NONEXISTENT] Mailbox
//! doesn't exist: Prøjekt"); refusing those would turn a plain NO into a broken session.

use imap_codec::ResponseCodec;
use imap_codec::decode::Decoder;
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer};
use imap_codec::imap_types::response::{Data, Response, Status};

/// The extension items found in one FETCH response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ext {
    pub(crate) x_guid: Option<String>,
    pub(crate) email_id: Option<String>,
    pub(crate) gm_msgid: Option<String>,
}

impl Ext {
    pub(crate) fn guid(&self, item: crate::GuidItem) -> Option<String> {
        match item {
            crate::GuidItem::XGuid => self.x_guid.clone(),
            crate::GuidItem::EmailId => self.email_id.clone(),
            crate::GuidItem::GmMsgId => self.gm_msgid.clone(),
        }
    }
}

/// The FETCH item name to request for `item`, as it goes on the wire.
pub(crate) fn item_name(item: crate::GuidItem) -> &'static str {
    match item {
        crate::GuidItem::XGuid => "X-GUID",
        crate::GuidItem::EmailId => "EMAILID",
        crate::GuidItem::GmMsgId => "X-GM-MSGID",
    }
}

/// Decodes `message` (one complete response, literals included) as an untagged FETCH after
/// taking the extension items out. `None` if it is not such a response or still does not
/// parse.
pub(crate) fn decode_fetch(message: &[u8]) -> Option<(Data<'static>, Ext)> {
    if !message.starts_with(b"* ") {
        return None;
    }
    // The message is already bounded by imap-next's max response size.
    let mut fragmentizer = Fragmentizer::without_max_message_size();
    fragmentizer.enqueue_bytes(message);
    let mut out = Vec::with_capacity(message.len());
    let mut ext = Ext::default();
    let mut found = false;
    loop {
        let fragment = fragmentizer.progress()?;
        let bytes = fragmentizer.fragment_bytes(fragment);
        match fragment {
            FragmentInfo::Line { .. } => found |= strip_items(bytes, &mut out, &mut ext)?,
            FragmentInfo::Literal { .. } => out.extend_from_slice(bytes),
        }
        if fragmentizer.is_message_complete() {
            break;
        }
    }
    if !found {
        return None;
    }
    let (rest, response) = ResponseCodec::default().decode_static(&out).ok()?;
    match response {
        Response::Data(data @ Data::Fetch { .. }) if rest.is_empty() => Some((data, ext)),
        _ => None,
    }
}

/// Decodes a one-line status response (`tag OK|NO|BAD ...`, `* OK|NO|BAD|BYE ...`) whose
/// text has 8-bit bytes, with each such byte replaced by `?`.
pub(crate) fn decode_status_8bit(message: &[u8]) -> Option<Status<'static>> {
    let line = message.strip_suffix(b"\r\n")?;
    if line.contains(&b'\n') || line.contains(&b'\r') || line.is_ascii() {
        return None;
    }
    let mut words = line.splitn(3, |&b| b == b' ');
    let (_tag, kind) = (words.next()?, words.next()?);
    let status_word = [&b"OK"[..], b"NO", b"BAD", b"BYE"]
        .iter()
        .any(|w| kind.eq_ignore_ascii_case(w));
    if !status_word {
        return None;
    }
    let mut clean: Vec<u8> = line
        .iter()
        .map(|&b| if b.is_ascii() { b } else { b'?' })
        .collect();
    clean.extend_from_slice(b"\r\n");
    match ResponseCodec::default().decode_static(&clean).ok()? {
        ([], Response::Status(status)) => Some(status),
        _ => None,
    }
}

/// Copies `line` to `out` without the extension items, recording their values in `ext`.
/// Returns whether any was found, `None` for a line that cannot be a FETCH response.
fn strip_items(line: &[u8], out: &mut Vec<u8>, ext: &mut Ext) -> Option<bool> {
    let mut found = false;
    let mut brackets = 0usize;
    // Set after "(" whose first item was taken out: the space before the next item goes.
    let mut after_open = false;
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if b == b'"' {
            let end = i + quoted_len(&line[i..])?;
            out.extend_from_slice(&line[i..end]);
            i = end;
            after_open = false;
            continue;
        }
        match b {
            b'[' => brackets += 1,
            b']' => brackets = brackets.saturating_sub(1),
            _ => {}
        }
        if brackets == 0
            && (b == b' ' || b == b'(')
            && let Some(len) = take_item(&line[i + 1..], ext)
        {
            found = true;
            if b == b'(' {
                out.push(b'(');
                after_open = true;
            }
            i += 1 + len;
            continue;
        }
        if after_open && b == b' ' {
            after_open = false;
            i += 1;
            continue;
        }
        after_open = false;
        out.push(b);
        i += 1;
    }
    Some(found)
}

/// If `s` starts with an extension item, stores its value and returns the item's length.
fn take_item(s: &[u8], ext: &mut Ext) -> Option<usize> {
    let after = |name: &str| -> Option<&[u8]> {
        let n = name.len();
        (s.len() > n && s[..n].eq_ignore_ascii_case(name.as_bytes()) && s[n] == b' ')
            .then(|| &s[n + 1..])
    };
    if let Some(v) = after("X-GUID") {
        let (value, len) = astring_token(v)?;
        ext.x_guid = value;
        Some("X-GUID ".len() + len)
    } else if let Some(v) = after("EMAILID") {
        // emailid-resp = "EMAILID" SP "(" objectid ")"
        let inner = v.strip_prefix(b"(")?;
        let end = inner.iter().position(|&c| c == b')')?;
        let id = &inner[..end];
        if id.is_empty()
            || !id
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_".contains(c))
        {
            return None;
        }
        ext.email_id = Some(String::from_utf8_lossy(id).into_owned());
        Some("EMAILID ".len() + end + 2)
    } else if let Some(v) = after("X-GM-MSGID") {
        let len = v.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        ext.gm_msgid = Some(String::from_utf8_lossy(&v[..len]).into_owned());
        Some("X-GM-MSGID ".len() + len)
    } else {
        None
    }
}

/// An atom or a quoted string at the start of `s` (NIL gives `None`), with its length.
fn astring_token(s: &[u8]) -> Option<(Option<String>, usize)> {
    if s.first() == Some(&b'"') {
        let len = quoted_len(s)?;
        let mut value = Vec::with_capacity(len);
        let mut escaped = false;
        for &c in &s[1..len - 1] {
            if escaped || c != b'\\' {
                value.push(c);
                escaped = false;
            } else {
                escaped = true;
            }
        }
        return Some((Some(String::from_utf8(value).ok()?), len));
    }
    let len = s
        .iter()
        .take_while(|&&c| c > b' ' && c < 0x7f && !b"(){}\"\\%*]".contains(&c))
        .count();
    if len == 0 {
        return None;
    }
    let token = std::str::from_utf8(&s[..len]).ok()?;
    let value = (!token.eq_ignore_ascii_case("NIL")).then(|| token.to_owned());
    Some((value, len))
}

/// The length of the quoted string at the start of `s`, quotes included.
fn quoted_len(s: &[u8]) -> Option<usize> {
    let mut escaped = false;
    for (i, &c) in s.iter().enumerate().skip(1) {
        match c {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i + 1),
            b'\r' | b'\n' => return None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::fetch::MessageDataItem;

    #[test]
    fn x_guid_is_lifted_out_and_the_rest_decodes() {
        let msg = b"* 3 FETCH (UID 7 X-GUID 0c9a3e0a8b3a5f64c5230000a6d0f5e4 FLAGS (\\Seen))\r\n";
        let (data, ext) = decode_fetch(msg).unwrap();
        assert_eq!(
            ext.x_guid.as_deref(),
            Some("0c9a3e0a8b3a5f64c5230000a6d0f5e4")
        );
        let Data::Fetch { items, .. } = data else {
            panic!("not a fetch")
        };
        assert!(matches!(items.as_ref()[0], MessageDataItem::Uid(u) if u.get() == 7));
        assert_eq!(items.as_ref().len(), 2);
    }

    #[test]
    fn items_first_in_the_list_and_other_kinds() {
        let msg = b"* 1 FETCH (EMAILID (M6d99ac3275bb4e) X-GM-MSGID 1278455344230334865 UID 2)\r\n";
        let (_, ext) = decode_fetch(msg).unwrap();
        assert_eq!(ext.email_id.as_deref(), Some("M6d99ac3275bb4e"));
        assert_eq!(ext.gm_msgid.as_deref(), Some("1278455344230334865"));
    }

    #[test]
    fn literal_and_section_contents_are_not_touched() {
        let msg = b"* 1 FETCH (UID 2 BODY[HEADER.FIELDS (X-GUID)] {14}\r\nX-GUID abc\r\n\r\n X-GUID \"q\\\"x\")\r\n";
        let (data, ext) = decode_fetch(msg).unwrap();
        assert_eq!(ext.x_guid.as_deref(), Some("q\"x"));
        let Data::Fetch { items, .. } = data else {
            panic!("not a fetch")
        };
        let MessageDataItem::BodyExt { data, .. } = &items.as_ref()[1] else {
            panic!("no body")
        };
        assert_eq!(
            data.0.as_ref().map(|d| d.as_ref()),
            Some(&b"X-GUID abc\r\n\r\n"[..])
        );
    }

    #[test]
    fn status_text_with_utf8_decodes() {
        let msg = "b5 NO [NONEXISTENT] Mailbox doesn't exist: Work/Prøjekt\r\n";
        let Some(Status::Tagged(t)) = decode_status_8bit(msg.as_bytes()) else {
            panic!("not decoded")
        };
        assert_eq!(t.body.text.inner(), "Mailbox doesn't exist: Work/Pr??jekt");
        assert!(decode_status_8bit("* 1 FETCH (UID 1 FLAGS (ø))\r\n".as_bytes()).is_none());
    }

    #[test]
    fn other_responses_are_left_alone() {
        assert!(decode_fetch(b"* 1 FETCH (UID 2 X-UNKNOWN 3)\r\n").is_none());
        assert!(decode_fetch(b"A1 OK X-GUID 3\r\n").is_none());
        assert!(decode_fetch(b"* 1 FETCH (X-GUID 3)\r\n").is_none());
    }
}
