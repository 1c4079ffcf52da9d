//! Maildirs in the shapes Dovecot and other programs leave them: `LAYOUT=fs`, POP3 UIDLs and
//! order in the uidlist, Courier-style version 1 uidlists, mail dropped into `new/` by an MDA.

mod common;

use common::{Dir, boxsync, dovecot_or_skip, maildir, message};
use std::path::Path;

fn run(local: &str, args: &[&str], dest: &str) -> std::process::Output {
    let out = boxsync()
        .args([
            "-o",
            &format!("mail_location={local}"),
            "-o",
            "mail_fsync=never",
        ])
        .args(args)
        .arg(dest)
        .output()
        .expect("run boxsync");
    assert_eq!(
        out.status.code(),
        Some(0),
        "boxsync {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn maildir_dirs(root: &Path) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
}

#[test]
fn layout_fs_store_made_by_dovecot_backs_up_to_both_layouts() {
    let Some(dovecot) = dovecot_or_skip() else {
        return;
    };
    let dir = Dir::new();
    let src = format!("{}:LAYOUT=fs", maildir(&dir.join("src")));
    dovecot.save(&src, "INBOX", &message(1));
    dovecot.mailbox_create(&src, "Work/Prøjekt");
    dovecot.save(&src, "Work/Prøjekt", &message(2));
    dovecot.flags_add(&src, "Work/Prøjekt", 1, "\\Seen $Later");
    let fs_dst = format!("{}:LAYOUT=fs", maildir(&dir.join("fs")));
    let pp_dst = maildir(&dir.join("pp"));
    run(&src, &["backup"], &fs_dst);
    run(&src, &["backup"], &pp_dst);
    let want = dovecot.fetch(&src);
    assert_eq!(want.len(), 2);
    assert_eq!(dovecot.fetch(&fs_dst), want);
    assert_eq!(dovecot.fetch(&pp_dst), want);
    assert!(
        dir.join("fs/Work/Pr&APg-jekt/cur").is_dir(),
        "nested directories in LAYOUT=fs"
    );
    assert!(
        dir.join("pp/.Work.Pr&APg-jekt/cur").is_dir(),
        "dotted directory in Maildir++"
    );
}

#[test]
fn pop3_uidls_and_order_are_carried_across() {
    let dir = Dir::new();
    let src = dir.join("src");
    maildir_dirs(&src);
    let names = [
        "1700000000.M1P1.host,S=10,W=10",
        "1700000001.M1P1.host,S=10,W=10",
    ];
    for n in names {
        write(&src.join("cur").join(format!("{n}:2,S")), b"Subject: x");
    }
    write(
        &src.join("dovecot-uidlist"),
        format!(
            "3 V1700000000 N8 G0123456789abcdef0123456789abcdef\n5 P+OK-uidl-a O1 :{}\n7 PUIDL-B O2 :{}\n",
            names[0], names[1]
        )
        .as_bytes(),
    );
    run(&maildir(&src), &["backup"], &maildir(&dir.join("dst")));
    let list = std::fs::read_to_string(dir.join("dst/dovecot-uidlist")).unwrap();
    assert!(
        list.starts_with("3 V1700000000 N8 G0123456789abcdef0123456789abcdef"),
        "{list}"
    );
    assert!(
        list.contains(&format!("5 P+OK-uidl-a O1 :{}", names[0])),
        "{list}"
    );
    assert!(
        list.contains(&format!("7 PUIDL-B O2 :{}", names[1])),
        "{list}"
    );
    if let Some(dovecot) = dovecot_or_skip() {
        let fields = "uid pop3.uidl pop3.order";
        let a = dovecot.fetch_fields(&maildir(&src), fields, &["ALL"]);
        let b = dovecot.fetch_fields(&maildir(&dir.join("dst")), fields, &["ALL"]);
        assert_eq!(a, b);
        assert_eq!(
            b[0].get("pop3.uidl").map(String::as_str),
            Some("+OK-uidl-a")
        );
    }
}

#[test]
fn version_1_uidlist_is_read() {
    let dir = Dir::new();
    let src = dir.join("src");
    maildir_dirs(&src);
    write(&src.join("cur/1000.a.host:2,S"), b"Subject: one\n\n1\n");
    write(&src.join("cur/1001.b.host:2,"), b"Subject: two\n\n2\n");
    write(
        &src.join("dovecot-uidlist"),
        b"1 1234 20\n10 1000.a.host:2,S\n12 1001.b.host:2,\n",
    );
    run(&maildir(&src), &["backup"], &maildir(&dir.join("dst")));
    let list = std::fs::read_to_string(dir.join("dst/dovecot-uidlist")).unwrap();
    assert!(list.starts_with("3 V1234 N20 "), "{list}");
    let uids: Vec<&str> = list
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(uids, ["10", "12"]);
}

#[test]
fn mail_delivered_between_syncs_is_picked_up() {
    let dir = Dir::new();
    let (a, b) = (dir.join("a"), dir.join("b"));
    maildir_dirs(&a);
    write(&a.join("new/1700000000.M1P1.mda"), &message(1));
    run(&maildir(&a), &["sync"], &maildir(&b));
    // An MDA delivers on both sides; a mail client flags and expunges on one.
    write(&a.join("new/1700000100.M1P1.mda"), &message(2));
    write(&b.join("new/1700000200.M1P1.mda"), &message(3));
    run(&maildir(&a), &["sync"], &maildir(&b));
    for side in [&a, &b] {
        let files: Vec<_> = ["cur", "new"]
            .iter()
            .flat_map(|d| std::fs::read_dir(side.join(d)).unwrap())
            .collect();
        assert_eq!(files.len(), 3, "{}", side.display());
    }
    let list_a = std::fs::read_to_string(a.join("dovecot-uidlist")).unwrap();
    let list_b = std::fs::read_to_string(b.join("dovecot-uidlist")).unwrap();
    let uids = |l: &str| {
        l.lines()
            .skip(1)
            .map(|x| x.split(' ').next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(uids(&list_a), uids(&list_b));
    assert_eq!(uids(&list_a).len(), 3);
}
