//! doveadm's sync filters `-t`, `-e`, `-O`, `-I` and `-g`: on copies of one Maildir,
//! `boxsync backup FILTER` selects exactly the mail real `doveadm backup FILTER` selects, and
//! bad filter values are usage errors naming their flag.

mod common;
mod support;

use common::{Dir, Dovecot, boxsync, dovecot_or_skip, maildir};
use std::path::Path;
use std::time::{Duration, SystemTime};
use support::{
    Content, Folder, Mail, code, content_of, copy_tree, describe, folder_dir, write_maildir,
};

const DAY: u64 = 86_400;

/// UNIX time of a UTC date at noon (far from any time zone's midnight).
fn noon(y: i64, m: u32, d: u32) -> u64 {
    let days = {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(m);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
        era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
    };
    (days * 86_400 + 43_200) as u64
}

/// A message of exactly `size` bytes with LF line ends, `lines` lines long (so its virtual
/// size is `size + lines`), told apart by `tag`.
fn body(tag: &str, size: usize, lines: usize) -> Vec<u8> {
    // Three header lines (with the blank one), then the rest spread over the body lines.
    let mut m = format!("Subject: {tag}\nMessage-ID: <{tag}@filters>\n\n").into_bytes();
    let n = lines - 3;
    let room = size - m.len();
    for i in 0..n {
        let len = room / n + usize::from(i < room % n);
        m.extend(std::iter::repeat_n(b'x', len - 1));
        m.push(b'\n');
    }
    assert_eq!(m.len(), size, "{tag}");
    m
}

/// The source store: INBOX and Work, messages with received dates (file times), sizes,
/// flags and keywords (`a` = `$Important`, `b` = `Work`) that each filter splits.
fn source(root: &Path) -> u128 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // (tag, size, lines, flags, received)
    let inbox = [
        ("old-seen", 600, 10, "S", noon(2023, 12, 1)),
        ("jan-flagged-important", 700, 10, "Fa", noon(2024, 1, 10)),
        ("feb-big-seen-flagged", 5000, 50, "FS", noon(2024, 2, 15)),
        // 2030 bytes, 2080 with CRLF: over 2k only by its virtual size.
        ("mar-crlf-over-2k", 2030, 50, "b", noon(2024, 3, 10)),
        // Exactly 2048 with CRLF: not larger than 2k.
        ("apr-exactly-2k", 2008, 40, "Sb", noon(2024, 4, 1)),
        ("yesterday-unseen", 800, 10, "", now - DAY),
    ];
    let work = [
        ("work-old-flagged", 900, 10, "FS", noon(2024, 1, 20)),
        ("work-new", 1000, 10, "a", now - 2 * DAY),
    ];
    let mails = |list: &[(&str, usize, usize, &str, u64)]| -> Vec<Mail> {
        list.iter()
            .map(|(tag, size, lines, flags, _)| Mail::new(body(tag, *size, *lines), flags))
            .collect()
    };
    let folders = [
        Folder::new("INBOX", mails(&inbox)),
        Folder::new("Work", mails(&work)),
    ];
    write_maildir(root, &folders);
    for (folder, list) in [("INBOX", &inbox[..]), ("Work", &work[..])] {
        let cur = folder_dir(root, folder).join("cur");
        for entry in std::fs::read_dir(&cur).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let (_, _, _, _, received) = list
                .iter()
                .find(|(tag, ..)| bytes.starts_with(format!("Subject: {tag}\n").as_bytes()))
                .unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(*received))
                .unwrap();
        }
    }
    folders[1].guid
}

/// The subjects in each non-empty mailbox (with flags and bytes compared separately).
fn subjects(c: &Content) -> Vec<(String, Vec<String>)> {
    c.iter()
        .filter(|(_, msgs)| !msgs.is_empty())
        .map(|(name, msgs)| {
            let mut tags: Vec<String> = msgs
                .iter()
                .map(|(_, b)| {
                    let line = b.split(|&c| c == b'\n').next().unwrap();
                    String::from_utf8_lossy(&line[b"Subject: ".len()..]).into_owned()
                })
                .collect();
            tags.sort();
            (name.clone(), tags)
        })
        .collect()
}

fn non_empty(c: Content) -> Content {
    c.into_iter().filter(|(_, m)| !m.is_empty()).collect()
}

/// Runs `doveadm ARGS` and `boxsync ARGS` (`backup` or `sync` first) from fresh copies of one
/// source into fresh Maildirs; asserts both destinations hold the same mail, which is `want`,
/// and (for `sync`) that both sources still hold the same mail.
fn same_as_doveadm(
    dovecot: &Dovecot,
    dir: &Dir,
    case: &str,
    args: &[&str],
    want: &[(&str, &[&str])],
) {
    let src = dir.join("src");
    let (ds, bs) = (
        dir.join(format!("{case}-ds")),
        dir.join(format!("{case}-bs")),
    );
    copy_tree(&src, &ds);
    copy_tree(&src, &bs);
    let (dd, bd) = (
        dir.join(format!("{case}-dd")),
        dir.join(format!("{case}-bd")),
    );

    let out = dovecot.sync(&maildir(&ds), &maildir(&dd), args);
    assert_eq!(code(&out), 0, "doveadm {args:?}: {}", describe(&out));

    let out = boxsync()
        .args(["-o", &format!("mail_location={}", maildir(&bs))])
        .args(["-o", "mail_fsync=never"])
        .args(args)
        .arg(maildir(&bd))
        .output()
        .expect("run boxsync");
    assert_eq!(code(&out), 0, "boxsync {args:?}: {}", describe(&out));
    assert_eq!(
        subjects(&content_of(&bs)),
        subjects(&content_of(&ds)),
        "sources after {args:?}"
    );
    let kept: usize = content_of(&bs).values().map(Vec::len).sum();
    assert_eq!(kept, 8, "the source keeps all its mail");

    let (dc, bc) = (non_empty(content_of(&dd)), non_empty(content_of(&bd)));
    let want: Vec<(String, Vec<String>)> = want
        .iter()
        .map(|(name, tags)| {
            let mut tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            tags.sort();
            (name.to_string(), tags)
        })
        .collect();
    assert_eq!(subjects(&dc), want, "doveadm {args:?}");
    assert_eq!(subjects(&bc), want, "boxsync {args:?}");
    assert_eq!(bc, dc, "flags and bytes after {args:?}");
}

#[test]
fn each_filter_selects_exactly_what_doveadm_selects() {
    let Some(dovecot) = dovecot_or_skip() else {
        return;
    };
    let dir = Dir::new();
    let work_guid = source(&dir.join("src"));
    let all_work: &[&str] = &["work-old-flagged", "work-new"];
    let g = format!("{work_guid:032x}");

    same_as_doveadm(
        &dovecot,
        &dir,
        "since",
        &["backup", "-t", "2024-02-01"],
        &[
            (
                "INBOX",
                &[
                    "feb-big-seen-flagged",
                    "mar-crlf-over-2k",
                    "apr-exactly-2k",
                    "yesterday-unseen",
                ],
            ),
            ("Work", &["work-new"]),
        ],
    );
    same_as_doveadm(
        &dovecot,
        &dir,
        "since-interval",
        &["backup", "-t", "30 days"],
        &[("INBOX", &["yesterday-unseen"]), ("Work", &["work-new"])],
    );
    same_as_doveadm(
        &dovecot,
        &dir,
        "until",
        &["backup", "-e", "1-Feb-2024"],
        &[
            ("INBOX", &["old-seen", "jan-flagged-important"]),
            ("Work", &["work-old-flagged"]),
        ],
    );
    same_as_doveadm(
        &dovecot,
        &dir,
        "flagged",
        &["backup", "-O", "\\Flagged"],
        &[
            ("INBOX", &["jan-flagged-important", "feb-big-seen-flagged"]),
            ("Work", &["work-old-flagged"]),
        ],
    );
    same_as_doveadm(
        &dovecot,
        &dir,
        "unseen",
        &["backup", "-O", "-\\Seen"],
        &[
            (
                "INBOX",
                &[
                    "jan-flagged-important",
                    "mar-crlf-over-2k",
                    "yesterday-unseen",
                ],
            ),
            ("Work", &["work-new"]),
        ],
    );
    same_as_doveadm(
        &dovecot,
        &dir,
        "keyword",
        &["backup", "-O", "$Important"],
        &[
            ("INBOX", &["jan-flagged-important"]),
            ("Work", &["work-new"]),
        ],
    );
    same_as_doveadm(
        &dovecot,
        &dir,
        "size",
        &["backup", "-I", "2k"],
        &[
            (
                "INBOX",
                &[
                    "old-seen",
                    "jan-flagged-important",
                    "apr-exactly-2k",
                    "yesterday-unseen",
                ],
            ),
            ("Work", all_work),
        ],
    );
    same_as_doveadm(
        &dovecot,
        &dir,
        "guid",
        &["backup", "-g", &g],
        &[("Work", all_work)],
    );
    same_as_doveadm(&dovecot, &dir, "list-only", &["backup", "-g", ""], &[]);
    // Two-way: the empty side takes only what the filter selects, the other side keeps all.
    same_as_doveadm(
        &dovecot,
        &dir,
        "two-way",
        &["sync", "-O", "-\\Seen"],
        &[
            (
                "INBOX",
                &[
                    "jan-flagged-important",
                    "mar-crlf-over-2k",
                    "yesterday-unseen",
                ],
            ),
            ("Work", &["work-new"]),
        ],
    );
}

/// Dovecot filters only what a side would save: mail the destination already has stays, and
/// mail the source no longer has still goes (`dsync_mailbox_import_want_change()`).
#[test]
fn filters_leave_mail_both_sides_have_alone() {
    let Some(dovecot) = dovecot_or_skip() else {
        return;
    };
    let dir = Dir::new();
    source(&dir.join("src"));
    let (ds, bs) = (dir.join("ds"), dir.join("bs"));
    copy_tree(&dir.join("src"), &ds);
    copy_tree(&dir.join("src"), &bs);
    let (dd, bd) = (dir.join("dd"), dir.join("bd"));
    let run_boxsync = |args: &[&str]| {
        let out = boxsync()
            .args(["-o", &format!("mail_location={}", maildir(&bs))])
            .args(["-o", "mail_fsync=never", "backup"])
            .args(args)
            .arg(maildir(&bd))
            .output()
            .expect("run boxsync");
        assert_eq!(code(&out), 0, "boxsync {args:?}: {}", describe(&out));
    };
    let run_doveadm = |args: &[&str]| {
        let mut all = vec!["backup"];
        all.extend_from_slice(args);
        let out = dovecot.sync(&maildir(&ds), &maildir(&dd), &all);
        assert_eq!(code(&out), 0, "doveadm {all:?}: {}", describe(&out));
    };
    // A first, full backup; then a filtered one after the source lost a mail.
    run_doveadm(&[]);
    run_boxsync(&[]);
    // The source loses one mail the destination has.
    for src in [&ds, &bs] {
        let cur = folder_dir(src, "INBOX").join("cur");
        for entry in std::fs::read_dir(&cur).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::read(&path)
                .unwrap()
                .starts_with(b"Subject: yesterday-unseen\n")
            {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    run_doveadm(&["-O", "\\Flagged"]);
    run_boxsync(&["-O", "\\Flagged"]);
    let want = vec![
        (
            "INBOX".to_owned(),
            vec![
                "apr-exactly-2k".to_owned(),
                "feb-big-seen-flagged".to_owned(),
                "jan-flagged-important".to_owned(),
                "mar-crlf-over-2k".to_owned(),
                "old-seen".to_owned(),
            ],
        ),
        (
            "Work".to_owned(),
            vec!["work-new".to_owned(), "work-old-flagged".to_owned()],
        ),
    ];
    let (dc, bc) = (non_empty(content_of(&dd)), non_empty(content_of(&bd)));
    assert_eq!(subjects(&dc), want, "doveadm");
    assert_eq!(subjects(&bc), want, "boxsync");
    assert_eq!(bc, dc);
}

#[test]
fn bad_filter_values_are_usage_errors_naming_the_flag() {
    let dir = Dir::new();
    write_maildir(&dir.join("a"), &[Folder::new("INBOX", Vec::new())]);
    for (flag, value) in [
        ("-t", "someday"),
        ("-e", "32-Foo-2024"),
        ("-I", "10 parsecs"),
        ("-O", "\\Bogus"),
        ("-O", "\\Seen \\Flagged"),
        ("-g", "INBOX"),
    ] {
        let out = boxsync()
            .args(["-o", &format!("mail_location={}", maildir(&dir.join("a")))])
            .args(["backup", flag, value])
            .arg(maildir(&dir.join("b")))
            .output()
            .expect("run boxsync");
        assert_eq!(code(&out), 64, "{flag} {value}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
    let out = boxsync()
        .args(["-o", &format!("mail_location={}", maildir(&dir.join("a")))])
        .args(["backup", "-t", "2024-03-02", "-e", "2024-03-01"])
        .arg(maildir(&dir.join("b")))
        .output()
        .expect("run boxsync");
    assert_eq!(code(&out), 64, "{}", describe(&out));
    assert!(!dir.join("b").exists(), "nothing written on a usage error");
}
