//! Proves the shared test harness (`tests/common`) against real Dovecot: what it saves,
//! flags, renames and deletes is what doveadm reports back, parsed correctly.

mod common;

use common::{Dir, dovecot_or_skip, maildir, message, parse_tab};

#[test]
fn save_three_messages_and_fetch_rows() {
    let Some(dc) = dovecot_or_skip() else { return };
    let dir = Dir::new();
    let loc = maildir(&dir.join("Maildir"));
    for n in 1..=3 {
        dc.save(&loc, "INBOX", &message(n));
    }
    let rows = dc.fetch(&loc);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.mailbox, "INBOX");
        assert_eq!(row.uid, i as u32 + 1);
        assert!(!row.guid.is_empty(), "{row:?}");
        // Freshly saved mail is \Recent, which fetch() drops.
        assert_eq!(row.flags, Vec::<String>::new(), "{row:?}");
    }
    let mut guids: Vec<&str> = rows.iter().map(|r| r.guid.as_str()).collect();
    guids.dedup();
    assert_eq!(guids.len(), 3, "GUIDs must differ: {rows:#?}");

    let ids = dc.fetch_fields(
        &loc,
        "uid hdr.message-id hdr.subject",
        &["mailbox", "INBOX", "uid", "2"],
    );
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids[0]["uid"], "2");
    assert!(ids[0]["hdr.message-id"].starts_with("<2."), "{ids:?}");
    assert_eq!(ids[0]["hdr.subject"], "Test message 2");
}

#[test]
fn flags_and_keywords_are_normalized() {
    let Some(dc) = dovecot_or_skip() else { return };
    let dir = Dir::new();
    let loc = maildir(&dir.join("Maildir"));
    for n in 1..=3 {
        dc.save(&loc, "INBOX", &message(n));
    }
    dc.flags_add(&loc, "INBOX", 2, "\\Seen \\Flagged $Important");
    dc.flags_add(&loc, "INBOX", 3, "\\Answered");
    dc.flags_remove(&loc, "INBOX", 2, "\\Flagged");
    dc.flags_replace(&loc, "INBOX", 3, "\\Seen \\Deleted");
    let flags: Vec<(u32, Vec<String>)> = dc
        .fetch(&loc)
        .into_iter()
        .map(|r| (r.uid, r.flags))
        .collect();
    assert_eq!(
        flags,
        vec![
            (1, vec![]),
            (2, vec!["$Important".to_owned(), "\\Seen".to_owned()]),
            (3, vec!["\\Deleted".to_owned(), "\\Seen".to_owned()]),
        ]
    );
    // The keyword reached the Maildir as Dovecot writes it.
    let keywords = std::fs::read_to_string(dir.join("Maildir/dovecot-keywords")).unwrap();
    assert_eq!(keywords, "0 $Important\n");
}

#[test]
fn create_rename_delete_and_status() {
    let Some(dc) = dovecot_or_skip() else { return };
    let dir = Dir::new();
    let loc = maildir(&dir.join("Maildir"));
    dc.save(&loc, "INBOX", &message(1));
    dc.mailbox_create(&loc, "Work/Prøjekt");
    dc.mailbox_subscribe(&loc, "Work/Prøjekt");
    dc.save(&loc, "Work/Prøjekt", &message(2));
    dc.save(&loc, "Work/Prøjekt", &message(3));
    dc.expunge(&loc, "Work/Prøjekt", 1);
    dc.mailbox_create(&loc, "Trash");
    // Maildir++ folder names are modified UTF-7 on disk.
    assert!(dir.join("Maildir/.Work.Pr&APg-jekt/cur").is_dir());

    dc.mailbox_rename(&loc, "Work/Prøjekt", "Archive/2024");
    dc.mailbox_delete(&loc, "Trash");

    let status = dc.mailbox_status(&loc);
    let names: Vec<&str> = status.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, ["Archive/2024", "INBOX"], "{status:?}");
    for (name, uidvalidity, _, _) in &status {
        assert!(*uidvalidity > 0, "{name}: {status:?}");
    }
    let (_, _, uidnext, messages) = &status[0];
    assert_eq!((*uidnext, *messages), (3, 1), "{status:?}");
    let (_, _, uidnext, messages) = &status[1];
    assert_eq!((*uidnext, *messages), (2, 1), "{status:?}");
    // `mailbox list` names the hierarchy-only parent too.
    assert_eq!(dc.mailbox_list(&loc), ["Archive", "Archive/2024", "INBOX"]);

    let rows = dc.fetch(&loc);
    let where_: Vec<(&str, u32)> = rows.iter().map(|r| (r.mailbox.as_str(), r.uid)).collect();
    assert_eq!(where_, [("Archive/2024", 2), ("INBOX", 1)]);
}

#[test]
fn doveadm_backup_reference_copies_everything() {
    let Some(dc) = dovecot_or_skip() else { return };
    let dir = Dir::new();
    let src = maildir(&dir.join("src"));
    let dst = maildir(&dir.join("dst"));
    dc.save(&src, "INBOX", &message(1));
    dc.mailbox_create(&src, "Work");
    dc.save(&src, "Work", &message(2));
    dc.flags_add(&src, "Work", 1, "\\Seen $Label1");

    let out = dc.sync(&src, &dst, &["backup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dc.fetch(&src), dc.fetch(&dst));
    assert_eq!(dc.mailbox_status(&src), dc.mailbox_status(&dst));

    // A stateful sync prints the state string that a later `-s` run starts from.
    let out = dc.sync(&src, &dst, &["sync", "-s", ""]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

#[test]
fn parse_tab_known_answers() {
    let text = "mailbox\tuid\tguid\tflags\n\
                INBOX\t1\tabc\t\\Flagged \\Recent $Work\n\
                Work/Prøjekt\t7\tdef\t\n";
    let rows = parse_tab(text);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["flags"], "\\Flagged \\Recent $Work");
    assert_eq!(rows[1]["mailbox"], "Work/Prøjekt");
    assert_eq!(rows[1]["flags"], "");
    assert_eq!(
        common::dovecot::normalize_flags(&rows[0]["flags"]),
        ["$Work", "\\Flagged"]
    );
    assert!(parse_tab("").is_empty());
    assert!(parse_tab("mailbox\tuid\n").is_empty());
}

#[test]
fn message_is_unique_per_number() {
    let a = String::from_utf8(message(1)).unwrap();
    let b = String::from_utf8(message(2)).unwrap();
    assert_ne!(a, b);
    assert!(a.contains("Date: Fri, 01 Mar 2024 10:00:07 +0000\n"), "{a}");
    assert!(a.contains("\n\nHello,\n"), "header and body separated: {a}");
    assert!(
        common::boxsync()
            .get_program()
            .to_string_lossy()
            .ends_with("boxsync")
    );
}
