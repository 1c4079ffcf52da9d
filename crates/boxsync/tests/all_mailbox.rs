//! `-a ALLMAILBOX`: mail a side lacks but has in its all mailbox (by GUID) is copied from
//! there, not sent by the other side; the result is the same as without `-a`.

mod common;
mod support;

use common::{Dir, boxsync, maildir, message};
use std::path::Path;
use std::process::Output;
use support::{Folder, Mail, code, content_of, describe, write_maildir};

fn run(local: &Path, args: &[&str], dest: &Path) -> Output {
    let out = boxsync()
        .arg("-v")
        .args(["-o", &format!("mail_location={}", maildir(local))])
        .args(["-o", "mail_fsync=never"])
        .args(args)
        .arg(maildir(dest))
        .output()
        .expect("run boxsync");
    assert_eq!(code(&out), 0, "{}", describe(&out));
    out
}

/// Files a message into INBOX under the name it has in `All Mail`: the same message (the
/// same GUID) in two mailboxes, as a copy or a Gmail label makes it.
fn file_again(root: &Path, nth: usize) {
    let cur = root.join(".All Mail").join("cur");
    let mut names: Vec<_> = std::fs::read_dir(&cur)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let name = &names[nth];
    std::fs::hard_link(cur.join(name), root.join("cur").join(name)).unwrap();
}

#[test]
fn mail_in_the_all_mailbox_is_copied_from_there() {
    let d = Dir::new();
    let (a, b, c) = (d.join("a"), d.join("b"), d.join("c"));
    write_maildir(
        &a,
        &[
            Folder::new("INBOX", Vec::new()),
            Folder::new(
                "All Mail",
                (1..=3).map(|i| Mail::new(message(i), "S")).collect(),
            ),
        ],
    );
    run(&a, &["backup"], &b);
    run(&a, &["backup"], &c);
    file_again(&a, 2);

    let out = run(&a, &["backup", "-a", "All Mail"], &b);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "mailbox INBOX: 1 messages copied from All Mail instead of from the other side"
        ),
        "{err}"
    );
    // Without -a the same mail comes from the other side, and the stores end the same.
    let out = run(&a, &["backup"], &c);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("copied from All Mail"));
    assert_eq!(content_of(&b), content_of(&a));
    assert_eq!(content_of(&c), content_of(&a));
    assert_eq!(content_of(&b)["INBOX"].len(), 1);

    // A second run has nothing to do.
    let out = run(&a, &["backup", "-a", "All Mail"], &b);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 messages copied"));
}
