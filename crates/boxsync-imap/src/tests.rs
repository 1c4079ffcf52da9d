//! Conversations with a scripted fake server on 127.0.0.1: each test plays the server's
//! side line by line and checks what the client sent and what the API returned.

use crate::{Append, Config, GuidItem, MetaRequest, Secret, Session, StoreMode};
use boxsync_model::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

/// One step of the server's script.
enum Step {
    /// Read one command (literals included) and check that, after its tag, it starts
    /// with this text.
    Recv(&'static str),
    /// Send this text; `%N` becomes the tag of the N-th command received (from 0).
    Send(&'static str),
    /// Read one line only (a literal it announces is neither asked for nor read) and check
    /// it as `Recv` does.
    RecvLine(&'static str),
    /// Close the connection.
    Close,
}
use Step::{Close, Recv, RecvLine, Send};

struct Fake {
    port: u16,
    thread: JoinHandle<Vec<String>>,
}

impl Fake {
    fn start(script: Vec<Step>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            play(stream, script)
        });
        Fake { port, thread }
    }

    /// The commands the client sent, without tags.
    fn finish(self) -> Vec<String> {
        self.thread.join().unwrap()
    }

    fn config(&self) -> Config {
        let mut cfg = Config::new("127.0.0.1", "alice", Secret::Password("pass".into()));
        cfg.port = self.port;
        cfg.timeout = Duration::from_secs(5);
        cfg
    }
}

fn play(stream: TcpStream, script: Vec<Step>) -> Vec<String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut tags: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    for step in script {
        match step {
            Recv(expected) | RecvLine(expected) => {
                let command = if matches!(step, RecvLine(_)) {
                    let mut line = String::new();
                    reader
                        .read_line(&mut line)
                        .ok()
                        .filter(|&n| n > 0)
                        .map(|_| line.trim_end_matches("\r\n").to_owned())
                } else {
                    read_command(&mut reader, &mut out)
                };
                let Some(command) = command else {
                    panic!("client closed; expected {expected:?}")
                };
                // SASL responses are untagged lines.
                let (tag, rest) = command.split_once(' ').unwrap_or(("", &command));
                assert!(
                    rest.starts_with(expected),
                    "expected {expected:?}, got {rest:?}"
                );
                tags.push(tag.to_owned());
                seen.push(rest.to_owned());
            }
            Send(text) => {
                let mut text = text.to_owned();
                for (i, tag) in tags.iter().enumerate().rev() {
                    text = text.replace(&format!("%{i}"), tag);
                }
                if out.write_all(text.as_bytes()).is_err() {
                    break;
                }
            }
            Close => break,
        }
    }
    seen
}

/// One command with its literals; answers `+` to synchronizing literals.
fn read_command(reader: &mut BufReader<TcpStream>, out: &mut TcpStream) -> Option<String> {
    let mut command = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        command.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).into_owned();
        let Some(open) = text
            .trim_end()
            .strip_suffix('}')
            .and_then(|t| t.rfind('{').map(|i| (t, i)))
        else {
            break;
        };
        let (t, i) = open;
        let spec = &t[i + 1..];
        let (n, sync) = match spec.strip_suffix('+') {
            Some(n) => (n.parse::<usize>().ok()?, false),
            None => (spec.parse::<usize>().ok()?, true),
        };
        if sync {
            out.write_all(b"+ go ahead\r\n").ok()?;
        }
        let mut literal = vec![0; n];
        reader.read_exact(&mut literal).ok()?;
        command.extend_from_slice(&literal);
    }
    let s = String::from_utf8_lossy(&command);
    Some(s.trim_end_matches("\r\n").to_owned())
}

const GREETING: &str = "* OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS AUTH=PLAIN] Fake ready.\r\n";

/// Greeting and LOGIN with these capabilities after login (command 0 is LOGIN).
fn login(caps: &'static str) -> Vec<Step> {
    vec![Send(GREETING), Recv("LOGIN alice pass"), Send(caps)]
}

const CAPS: &str = "%0 OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS] Logged in\r\n";

fn connect(fake: &Fake) -> Session {
    let mut s = Session::connect(&fake.config()).unwrap();
    s.backoff = Duration::from_millis(5);
    s
}

#[test]
fn login_ok_then_logout() {
    let mut script = login(CAPS);
    script.extend([Recv("LOGOUT"), Send("* BYE bye\r\n%1 OK done\r\n")]);
    let fake = Fake::start(script);
    let s = connect(&fake);
    assert!(s.has("uidplus"));
    assert!(s.has("LITERAL+"));
    assert!(!s.has("QRESYNC"));
    assert!(!s.qresync_enabled());
    s.logout();
    assert_eq!(fake.finish()[1], "LOGOUT");
}

#[test]
fn authentication_failed_is_permission() {
    let fake = Fake::start(vec![
        Send(GREETING),
        Recv("LOGIN alice pass"),
        Send("%0 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
    ]);
    let e = Session::connect(&fake.config()).err().unwrap();
    assert!(matches!(e, Error::Permission(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("alice") && text.contains("Authentication failed."),
        "{text}"
    );
    assert!(!text.contains("pass\""), "{text}");
    fake.finish();
}

#[test]
fn password_from_a_command_and_sasl_plain() {
    let fake = Fake::start(vec![
        Send(GREETING),
        // base64("\0alice\0s3cret")
        Recv("AUTHENTICATE PLAIN"),
        Send("+ \r\n"),
        Recv("AGFsaWNlAHMzY3JldA=="),
        Send("%0 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
    ]);
    let mut cfg = fake.config();
    cfg.secret = Secret::Command("printf 's3cret\\n'".into());
    cfg.sasl_mechanisms = vec!["PLAIN".into()];
    let s = Session::connect(&cfg).unwrap();
    assert!(!s.has("UIDPLUS"));
    drop(s);
    fake.finish();
}

#[test]
fn list_status_in_one_round_trip() {
    let mut script =
        login("%0 OK [CAPABILITY IMAP4rev1 LIST-EXTENDED LIST-STATUS SPECIAL-USE] Logged in\r\n");
    script.extend([
        Recv("LIST \"\" * RETURN (SUBSCRIBED SPECIAL-USE STATUS (MESSAGES UIDNEXT UIDVALIDITY))"),
        Send(concat!(
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" INBOX\r\n",
            "* STATUS INBOX (MESSAGES 2 UIDNEXT 5 UIDVALIDITY 1700000000)\r\n",
            "* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n",
            "* STATUS \"Sent\" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 1700000001)\r\n",
            "* LIST (\\Noselect \\HasChildren) \"/\" \"&AMk-t&AOk-\"\r\n",
            "* 3 EXISTS\r\n",
            "%1 OK List completed.\r\n",
        )),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    let list = s.list().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].name, "INBOX");
    assert!(list[0].subscribed);
    assert_eq!(list[0].attributes, vec!["\\HasNoChildren"]);
    assert_eq!(list[0].separator, Some('/'));
    let st = list[0].status.unwrap();
    assert_eq!(
        (st.messages, st.uidnext, st.uidvalidity),
        (2, 5, 1700000000)
    );
    assert!(list[1].has_attribute("\\sent"));
    assert!(!list[1].subscribed);
    assert_eq!(list[1].status.unwrap().uidvalidity, 1700000001);
    assert_eq!(list[2].name, "&AMk-t&AOk-");
    assert!(list[2].has_attribute("\\Noselect"));
    assert_eq!(list[2].status, None);
    drop(s);
    fake.finish();
}

#[test]
fn list_without_extensions_merges_lsub() {
    let mut script = login(CAPS);
    script.extend([
        Recv("LIST \"\" *"),
        Recv("LSUB \"\" *"),
        Send(concat!(
            "* LIST () \".\" INBOX\r\n",
            "* LIST () \".\" Work\r\n",
            "%1 OK done\r\n",
            "* LSUB () \".\" Work\r\n",
            "* LSUB () \".\" Gone\r\n",
            "%2 OK done\r\n",
        )),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    let list = s.list().unwrap();
    let names: Vec<_> = list
        .iter()
        .map(|e| (e.name.as_str(), e.subscribed))
        .collect();
    assert_eq!(
        names,
        vec![("INBOX", false), ("Work", true), ("Gone", true)]
    );
    assert!(list[2].has_attribute("\\NonExistent"));
    drop(s);
    fake.finish();
}

fn qresync_login() -> Vec<Step> {
    let mut script = login(
        "%0 OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS ENABLE CONDSTORE QRESYNC] Logged in\r\n",
    );
    script.extend([
        Recv("ENABLE QRESYNC"),
        Send("* ENABLED QRESYNC\r\n%1 OK Enabled.\r\n"),
    ]);
    script
}

#[test]
fn select_with_qresync_reports_vanished_and_changed() {
    let mut script = qresync_login();
    script.extend([
        Recv("SELECT INBOX (QRESYNC (67890007 20050715194045000))"),
        Send(concat!(
            "* 10 EXISTS\r\n",
            "* OK [UIDVALIDITY 67890007] UIDs valid\r\n",
            "* OK [UIDNEXT 600] Predicted next UID\r\n",
            "* OK [HIGHESTMODSEQ 20050715194045319] Highest\r\n",
            "* VANISHED (EARLIER) 41,43:45,118\r\n",
            "* 49 FETCH (UID 117 FLAGS (\\Seen \\Answered \\Recent) MODSEQ (90060115194045001))\r\n",
            "%2 OK [READ-WRITE] Select completed.\r\n",
        )),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    assert!(s.qresync_enabled() && s.condstore_enabled());
    let sel = s
        .select("INBOX", false, Some((67890007, 20050715194045000)))
        .unwrap();
    assert_eq!(sel.uidvalidity, 67890007);
    assert_eq!(sel.uidnext, 600);
    assert_eq!(sel.exists, 10);
    assert_eq!(sel.highestmodseq, Some(20050715194045319));
    assert_eq!(sel.vanished, vec![41, 43, 44, 45, 118]);
    assert_eq!(sel.changed.len(), 1);
    assert_eq!(sel.changed[0].uid, 117);
    assert_eq!(sel.changed[0].flags, vec!["\\Seen", "\\Answered"]);
    assert_eq!(sel.changed[0].modseq, Some(90060115194045001));
    drop(s);
    fake.finish();
}

#[test]
fn fetch_meta_with_x_guid_flags_modseq_date_size_and_vanished() {
    let mut script = qresync_login();
    script.extend([
        Recv("EXAMINE INBOX (CONDSTORE)"),
        Send("* OK [UIDVALIDITY 5] x\r\n%2 OK [READ-ONLY] done\r\n"),
        Recv(
            "UID FETCH 1:10 (X-GUID UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Message-ID)]) (CHANGEDSINCE 7 VANISHED)",
        ),
        Send(concat!(
            "* VANISHED 4:5\r\n",
            "* 1 FETCH (UID 3 X-GUID 0c9a3e0a8b3a5f64c5230000a6d0f5e4 FLAGS (\\Seen $Work \\Recent) MODSEQ (12) ",
            "INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 ",
            "BODY[HEADER.FIELDS (MESSAGE-ID)] {21}\r\nMessage-ID: <a@b>\r\n\r\n)\r\n",
            "* 2 FETCH (UID 99 FLAGS (\\Deleted))\r\n",
            "* 7 EXPUNGE\r\n",
            "%3 OK Fetch completed.\r\n",
        )),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    s.select("INBOX", true, None).unwrap();
    let fields = vec!["Message-ID".to_owned()];
    let req = MetaRequest {
        guid: Some(GuidItem::XGuid),
        header_fields: Some(&fields),
        changed_since: Some(7),
        vanished: true,
        internaldate_and_size: true,
    };
    let (metas, vanished) = s.fetch_meta("1:10", &req).unwrap();
    assert_eq!(vanished, vec![4, 5]);
    assert_eq!(metas.len(), 1, "UID 99 was not asked for: {metas:?}");
    let m = &metas[0];
    assert_eq!(m.uid, 3);
    assert_eq!(m.guid.as_deref(), Some("0c9a3e0a8b3a5f64c5230000a6d0f5e4"));
    assert_eq!(m.flags, vec!["\\Seen", "$Work"]);
    assert_eq!(m.modseq, Some(12));
    assert_eq!(m.internaldate, Some(837596665));
    assert_eq!(m.size, Some(4286));
    assert_eq!(m.header.as_deref(), Some(&b"Message-ID: <a@b>\r\n\r\n"[..]));
    drop(s);
    fake.finish();
}

fn with_window(fake: &Fake, window: usize) -> Session {
    let mut cfg = fake.config();
    cfg.pipeline_window = window;
    Session::connect(&cfg).unwrap()
}

#[test]
fn fetch_bodies_pipelined_in_order_with_a_missing_uid() {
    let mut script = login(CAPS);
    script.extend([
        Recv("SELECT INBOX"),
        Send("* OK [UIDVALIDITY 5] x\r\n%1 OK done\r\n"),
        // Window 2: two commands arrive before any answer.
        Recv("UID FETCH 3 BODY.PEEK[]"),
        Recv("UID FETCH 4 BODY.PEEK[]"),
        Send(concat!(
            "* 1 FETCH (UID 3 BODY[] {5}\r\nhello)\r\n",
            "%2 OK done\r\n",
            "* 9 FETCH (FLAGS (\\Seen) UID 77)\r\n",
            "%3 OK no such message\r\n",
        )),
        Recv("UID FETCH 5 BODY.PEEK[]"),
        Send("* 2 FETCH (UID 5 BODY[] {3}\r\nabc)\r\n%4 OK done\r\n"),
    ]);
    let fake = Fake::start(script);
    let mut s = with_window(&fake, 2);
    s.select("INBOX", false, None).unwrap();
    s.fetch_bodies_begin(&[3, 4, 5]).unwrap();
    let mut got = Vec::new();
    while let Some(item) = s.fetch_bodies_next().unwrap() {
        got.push(item);
    }
    assert_eq!(
        got,
        vec![
            (3, Some(b"hello".to_vec())),
            (4, None),
            (5, Some(b"abc".to_vec()))
        ]
    );
    drop(s);
    fake.finish();
}

#[test]
fn append_many_pipelined_returns_appenduids() {
    let mut script = login(CAPS);
    script.extend([
        Recv("APPEND Work (\\Seen) \"01-Jan-2020 00:00:00 +0000\" {5+}\r\nhello"),
        Recv("APPEND Work {3+}\r\nabc"),
        Send(concat!(
            "%1 OK [APPENDUID 38505 3955] Append completed.\r\n",
            "%2 OK [APPENDUID 38505 3956] Append completed.\r\n",
        )),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    let mut items = vec![
        Ok(Append {
            flags: vec!["\\Seen".into(), "\\Recent".into()],
            internaldate: Some(1577836800),
            body: b"hello",
        }),
        Ok(Append {
            flags: vec![],
            internaldate: None,
            body: b"abc",
        }),
    ]
    .into_iter();
    let uids = s.append_many("Work", &mut items).unwrap();
    assert_eq!(uids, vec![Some(3955), Some(3956)]);
    drop(s);
    fake.finish();
}

#[test]
fn append_with_synchronizing_literals_and_over_quota() {
    let mut script = login("%0 OK [CAPABILITY IMAP4rev1] Logged in\r\n");
    script.extend([
        Recv("APPEND INBOX {5}\r\nhello"),
        Send("%1 OK Append completed.\r\n"),
        Recv("APPEND INBOX {3}\r\nabc"),
        Send("%2 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n"),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    let mut items = [&b"hello"[..], b"abc"].into_iter().map(|body| {
        Ok(Append {
            body,
            ..Append::default()
        })
    });
    let e = s.append_many("INBOX", &mut items).unwrap_err();
    assert!(matches!(e, Error::Temp(_)), "{e:?}");
    assert!(e.to_string().contains("over quota"), "{e}");
    drop(s);
    fake.finish();
}

#[test]
fn a_synchronizing_literal_refused_before_the_plus_leaves_the_session_usable() {
    let mut script = login("%0 OK [CAPABILITY IMAP4rev1] Logged in\r\n");
    script.extend([
        RecvLine("APPEND Gone {5}"),
        Send("%1 NO [TRYCREATE] Mailbox doesn't exist: Gone\r\n"),
        Recv("STATUS Gone (MESSAGES UIDNEXT UIDVALIDITY"),
        Send("* STATUS Gone (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 7)\r\n%2 OK done\r\n"),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    let mut items = std::iter::once(Ok(Append {
        body: b"hello",
        ..Append::default()
    }));
    let e = s.append_many("Gone", &mut items).unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert_eq!(s.status("Gone").unwrap().uidvalidity, 7);
    drop(s);
    fake.finish();
}

#[test]
fn big_and_binary_messages_go_out_whole() {
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| b"abc\r\nxyz"[(i % 8) as usize])
        .collect();
    let mut expected_big = format!("APPEND Work {{{}+}}\r\n", big.len()).into_bytes();
    expected_big.extend_from_slice(&big);
    let expected_big: &'static str = String::from_utf8(expected_big).unwrap().leak();
    let mut script = login("%0 OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS BINARY] Logged in\r\n");
    script.extend([
        Recv(expected_big),
        Recv("APPEND Work ~{5+}\r\nhe\0lo"),
        Send(concat!(
            "%1 OK [APPENDUID 9 1] Append completed.\r\n",
            "%2 OK [APPENDUID 9 2] Append completed.\r\n",
        )),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    let mut items = [&big[..], b"he\0lo"].into_iter().map(|body| {
        Ok(Append {
            body,
            ..Append::default()
        })
    });
    let uids = s.append_many("Work", &mut items).unwrap();
    assert_eq!(uids, vec![Some(1), Some(2)]);
    drop(s);
    let seen = fake.finish();
    assert_eq!(seen[1].len(), expected_big.len());
}

/// The receive path gets the server's bytes in pieces of any size; responses come out whole
/// and in order, a body literal intact.
#[test]
fn responses_split_anywhere_come_out_whole_and_in_order() {
    use crate::session::{Incoming, Receiver, Step as RxStep};
    use imap_codec::imap_types::fetch::MessageDataItem;
    use imap_codec::imap_types::response::Data;
    let body: Vec<u8> = (0..200_000u32)
        .map(|i| match i % 50 {
            48 => b'\r',
            49 => b'\n',
            n => b'!' + ((n * 7 + i / 50) % 90) as u8,
        })
        .collect();
    let mut wire = b"* OK [CAPABILITY IMAP4rev1] hi\r\n".to_vec();
    wire.extend(format!("* 7 FETCH (UID 70 BODY[] {{{}}}\r\n", body.len()).as_bytes());
    wire.extend(&body);
    wire.extend(b" FLAGS (\\Seen))\r\n");
    wire.extend(b"* 8 FETCH (UID 80 X-GUID abc BODY[HEADER.FIELDS (A)] {5}\r\nA: b\n)\r\n");
    wire.extend(b"b1 OK done\r\n* 9 EXISTS\n");
    for piece in [1, 2, 3, 61, 977, 65536] {
        let mut rx = Receiver::new("test", 1 << 20, true);
        let mut got = Vec::new();
        let mut error = None;
        'feed: for chunk in wire.chunks(piece) {
            rx.push(chunk).unwrap();
            loop {
                match rx.step() {
                    Ok(RxStep::In(incoming)) => got.push(incoming),
                    Ok(RxStep::Out(_)) => {}
                    Ok(RxStep::NeedInput) => break,
                    Err(e) => {
                        error = Some(e.to_string());
                        break 'feed;
                    }
                }
            }
        }
        assert_eq!(got.len(), 4, "piece {piece}: {got:?}");
        assert!(matches!(got[0], Incoming::Greeting(_)), "{:?}", got[0]);
        let Incoming::Data(Data::Fetch { seq, items }, _) = &got[1] else {
            panic!("{:?}", got[1])
        };
        assert_eq!(seq.get(), 7);
        let items = items.as_ref();
        assert!(matches!(items[0], MessageDataItem::Uid(u) if u.get() == 70));
        let MessageDataItem::BodyExt { data, .. } = &items[1] else {
            panic!("{items:?}")
        };
        assert!(data.0.as_ref().unwrap().as_ref() == body, "piece {piece}");
        assert!(matches!(items[2], MessageDataItem::Flags(_)), "{items:?}");
        let Incoming::Data(Data::Fetch { items, .. }, ext) = &got[2] else {
            panic!("{:?}", got[2])
        };
        assert_eq!(ext.x_guid.as_deref(), Some("abc"));
        let MessageDataItem::BodyExt { data, .. } = &items.as_ref()[1] else {
            panic!("{items:?}")
        };
        assert_eq!(data.0.as_ref().unwrap().as_ref(), b"A: b\n");
        assert!(matches!(&got[3], Incoming::Tagged(t) if t.tag.inner() == "b1"));
        let error = error.expect("a response ending in a bare LF is refused");
        assert!(error.contains("LF"), "{error}");
    }
}

#[test]
fn store_and_uid_expunge() {
    let mut script = login(CAPS);
    script.extend([
        Recv("UID STORE 1:3 +FLAGS.SILENT (\\Flagged $Work)"),
        Send("%1 OK done\r\n"),
        Recv("UID STORE 2 +FLAGS.SILENT (\\Deleted)"),
        Recv("UID EXPUNGE 2"),
        Send("%2 OK done\r\n* 2 EXPUNGE\r\n%3 OK done\r\n"),
        Recv("CREATE \"A b\""),
        Send("%4 OK done\r\n"),
        Recv("RENAME \"A b\" C"),
        Send("%5 OK done\r\n"),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    s.store_flags("1:3", &["\\Flagged".into(), "$Work".into()], StoreMode::Add)
        .unwrap();
    s.uid_expunge("2").unwrap();
    s.create("A b").unwrap();
    s.rename("A b", "C").unwrap();
    drop(s);
    fake.finish();
}

#[test]
fn huge_literal_announcement_is_refused_at_once() {
    for announced in ["{999999999999}", "{4000000000}"] {
        let mut script = login(CAPS);
        script.extend([
            Recv("SELECT INBOX"),
            Send("* OK [UIDVALIDITY 5] x\r\n%1 OK done\r\n"),
            Recv("UID FETCH 3 BODY.PEEK[]"),
            Send(match announced {
                "{999999999999}" => "* 1 FETCH (UID 3 BODY[] {999999999999}\r\n",
                _ => "* 1 FETCH (UID 3 BODY[] {4000000000}\r\n",
            }),
            // Keep the connection open: the client must not wait for the literal.
            Recv("never"),
        ]);
        let fake = Fake::start(script);
        let mut s = connect(&fake);
        s.select("INBOX", false, None).unwrap();
        s.fetch_bodies_begin(&[3]).unwrap();
        let e = s.fetch_bodies_next().unwrap_err();
        assert!(matches!(e, Error::Data(_)), "{announced}: {e:?}");
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
        // The session is unusable afterwards.
        assert!(matches!(s.status("INBOX"), Err(Error::Temp(_))));
        drop(s);
        let _ = fake.thread.join();
    }
}

#[test]
fn unrequested_fetch_uid_is_a_data_error() {
    let mut script = login(CAPS);
    script.extend([
        Recv("SELECT INBOX"),
        Send("* OK [UIDVALIDITY 5] x\r\n%1 OK done\r\n"),
        Recv("UID FETCH 3 BODY.PEEK[]"),
        Send("* 1 FETCH (UID 7 BODY[] {2}\r\nhi)\r\n%2 OK done\r\n"),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    s.select("INBOX", false, None).unwrap();
    s.fetch_bodies_begin(&[3]).unwrap();
    let e = s.fetch_bodies_next().unwrap_err();
    assert!(matches!(e, Error::Data(_)), "{e:?}");
    assert!(e.to_string().contains("UID 7"), "{e}");
    drop(s);
    fake.finish();
}

#[test]
fn connection_closed_mid_literal_is_temp() {
    let mut script = login(CAPS);
    script.extend([
        Recv("SELECT INBOX"),
        Send("* OK [UIDVALIDITY 5] x\r\n%1 OK done\r\n"),
        Recv("UID FETCH 3 BODY.PEEK[]"),
        Send("* 1 FETCH (UID 3 BODY[] {100}\r\nabc"),
        Close,
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    s.select("INBOX", false, None).unwrap();
    s.fetch_bodies_begin(&[3]).unwrap();
    let e = s.fetch_bodies_next().unwrap_err();
    assert!(matches!(e, Error::Temp(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("connection lost during UID FETCH INBOX"),
        "{e}"
    );
    drop(s);
    fake.finish();
}

#[test]
fn throttled_status_is_retried() {
    let mut script = login(CAPS);
    script.extend([
        Recv("STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)"),
        Send("%1 NO [THROTTLED] Slow down\r\n"),
        Recv("STATUS INBOX"),
        Send("%2 NO [UNAVAILABLE] Busy\r\n"),
        Recv("STATUS INBOX"),
        Send("* STATUS INBOX (MESSAGES 4 UIDNEXT 9 UIDVALIDITY 3)\r\n%3 OK done\r\n"),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    let st = s.status("INBOX").unwrap();
    assert_eq!((st.messages, st.uidnext, st.uidvalidity), (4, 9, 3));
    drop(s);
    fake.finish();
}

#[test]
fn throttled_gives_up_after_three_retries() {
    let mut script = login(CAPS);
    for i in 1..=4 {
        script.push(Recv("STATUS INBOX"));
        script.push(Send(match i {
            1 => "%1 NO [THROTTLED] Slow down\r\n",
            2 => "%2 NO [THROTTLED] Slow down\r\n",
            3 => "%3 NO [THROTTLED] Slow down\r\n",
            _ => "%4 NO [THROTTLED] Slow down\r\n",
        }));
    }
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    let e = s.status("INBOX").unwrap_err();
    assert!(matches!(e, Error::Temp(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("STATUS INBOX") && text.contains("Slow down"),
        "{text}"
    );
    assert!(text.contains("3 retries"), "{text}");
    drop(s);
    fake.finish();
}

#[test]
fn missing_mailbox_is_not_found_and_other_refusals_are_data() {
    let mut script = login(CAPS);
    script.extend([
        Recv("SELECT Nope"),
        Send("%1 NO [NONEXISTENT] Mailbox doesn't exist: Nope\r\n"),
        // Dovecot 2.3 says only NO: a LIST tells whether the mailbox is there.
        Recv("STATUS Gone"),
        Send("%2 NO Mailbox doesn't exist: Gone\r\n"),
        Recv("LIST \"\" Gone"),
        Send("%3 OK done\r\n"),
        Recv("SELECT Locked"),
        Send("%4 NO Permission denied\r\n"),
        Recv("LIST \"\" Locked"),
        Send("* LIST () \"/\" Locked\r\n%5 OK done\r\n"),
        Recv("DELETE INBOX"),
        Send("%6 NO INBOX can't be deleted.\r\n"),
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    let e = s.select("Nope", false, None).unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    let e = s.status("Gone").unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    let e = s.select("Locked", false, None).unwrap_err();
    assert!(matches!(e, Error::Data(_)), "{e:?}");
    let e = s.delete("INBOX").unwrap_err();
    assert!(matches!(e, Error::Data(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "imapc(127.0.0.1): DELETE INBOX failed: INBOX can't be deleted."
    );
    drop(s);
    fake.finish();
}

#[test]
fn bye_is_temp() {
    let mut script = login(CAPS);
    script.extend([
        Recv("STATUS INBOX"),
        Send("* BYE Server shutting down.\r\n"),
        Close,
    ]);
    let fake = Fake::start(script);
    let mut s = connect(&fake);
    let e = s.status("INBOX").unwrap_err();
    assert!(matches!(e, Error::Temp(_)), "{e:?}");
    assert!(e.to_string().contains("Server shutting down."), "{e}");
    drop(s);
    fake.finish();
}

#[test]
fn refused_connection_is_temp_naming_host_and_port() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut cfg = Config::new("127.0.0.1", "alice", Secret::Password("x".into()));
    cfg.port = port;
    let e = Session::connect(&cfg).err().unwrap();
    assert!(matches!(e, Error::Temp(_)), "{e:?}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn fuzz_entry_point_survives_hostile_input() {
    let samples: [&[u8]; 9] = [
        b"",
        b"* OK hi\r\n* 1 FETCH (UID 1 X-GUID \"unterminated\r\n",
        b"* 1 FETCH (UID 1 BODY[] {4000000000}\r\n",
        b"* VANISHED (EARLIER) 1:4294967295\r\n",
        b"* VANISHED 1:*\r\n",
        b"* LIST (\\X) NIL {3}\r\n\xff\xfe\xfd\r\n",
        b"* 1 FETCH (X-GUID a X-GUID b (\r\n* STATUS a (UIDNEXT 0)\r\n",
        b"+ \r\nA1 OK\r\n* BYE\r\n\n\n\r\n{",
        b"* 1 FETCH (UID 1 EMAILID (x) X-GM-MSGID 99999999999999999999999 FLAGS ())\r\n",
    ];
    for s in samples {
        crate::parse_response_bytes_for_fuzz(s);
    }
    // Cheap pseudo-random bytes biased towards IMAP syntax.
    let alphabet = b"* ()[]{}\"\\\r\n0123456789UIDFETCHX-GUIDBODYLIST+:,";
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..2000 {
        let mut data = b"* 1 FETCH (".to_vec();
        for _ in 0..(x % 64) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        crate::parse_response_bytes_for_fuzz(&data);
    }
}
