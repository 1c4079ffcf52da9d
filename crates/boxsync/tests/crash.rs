//! Crash safety: `boxsync` killed with SIGKILL at random points, several times in a row, with
//! durability on (the default), then left to finish. Nothing may be lost or doubled, the
//! source of a backup must not change, and a further run must have nothing to do.
//!
//! The kill points come from a seeded generator; set `BOXSYNC_CRASH_SEED` to replay a run
//! (the seed in use is printed on stderr, shown when a test fails).

mod common;
mod support;

use common::{Dir, boxsync, maildir};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{
    Folder, Mail, Rng, StoreView, assert_same_store, assert_same_tree, code, describe, folder_dir,
    read_maildir, sized_message, tree_bytes, write_maildir,
};

/// Kills that must land while the process is still running.
const KILLS: usize = 5;

fn seed() -> u64 {
    let seed = std::env::var("BOXSYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0b0c_5ac4);
    eprintln!("BOXSYNC_CRASH_SEED={seed}");
    seed
}

/// `boxsync -o mail_location=maildir:LOCAL ARGS… maildir:OTHER`, durability on.
fn command(local: &Path, args: &[&str], other: &Path) -> Command {
    let mut cmd = boxsync();
    cmd.arg("-o")
        .arg(format!("mail_location={}", maildir(local)))
        .args(args)
        .arg(maildir(other));
    cmd
}

fn run_ok(local: &Path, args: &[&str], other: &Path) -> Output {
    let out = command(local, args, other).output().expect("run boxsync");
    assert_eq!(code(&out), 0, "boxsync {args:?}: {}", describe(&out));
    out
}

/// Removes the `dovecot-uidlist.lock` files a killed run left under `roots`, returning how
/// many. Works around the bug pinned by `stale_uidlist_lock_of_a_dead_process_is_broken_at_once`:
/// without it every later run waits 60 s for the dead holder and fails with 75, for the two
/// minutes until the lock counts as stale.
fn remove_dead_locks(roots: &[&Path]) -> usize {
    let mut n = 0;
    let mut stack: Vec<std::path::PathBuf> = roots.iter().map(|r| r.to_path_buf()).collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name() == "dovecot-uidlist.lock" {
                std::fs::remove_file(&p).expect("remove a dead run's lock");
                n += 1;
            } else if p.is_dir()
                && !["cur", "new", "tmp"].contains(&&*e.file_name().to_string_lossy())
            {
                stack.push(p);
            }
        }
    }
    n
}

/// Starts the command again and again, killing it with SIGKILL after a random 50–800 ms
/// (less once runs finish sooner),
/// until `KILLS` kills have hit a running process. When a run finishes first (a fast
/// machine), `more_work` gives the next runs something to do and the kills go on. Returns how
/// many runs finished on their own.
fn kill_repeatedly(
    cmd: &mut Command,
    rng: &mut Rng,
    stores: &[&Path],
    more_work: &mut dyn FnMut(&mut Rng),
) -> usize {
    let mut killed = 0;
    let mut finished = 0;
    let mut log = Vec::new();
    // Kill delays are drawn below this; a run that finishes first lowers it to its own
    // length, so that a fast machine still gets killed mid-run.
    let mut upper: u64 = 800;
    while killed < KILLS {
        assert!(
            finished < 20,
            "the run keeps finishing before the kill: {log:?}"
        );
        let delay = Duration::from_millis(rng.range((upper / 16).max(5), upper));
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start boxsync");
        let deadline = Instant::now() + delay;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match status {
            Some(status) => {
                finished += 1;
                upper = upper.min((started.elapsed().as_millis() as u64 * 9 / 10).max(10));
                log.push(format!(
                    "finished with {status} before {delay:?}: more work"
                ));
                more_work(rng);
            }
            None => {
                child.kill().expect("SIGKILL boxsync");
                child.wait().expect("reap boxsync");
                killed += 1;
                let locks = remove_dead_locks(stores);
                log.push(format!("killed after {delay:?}, {locks} locks left"));
            }
        }
    }
    eprintln!("kills: {log:#?}");
    finished
}

/// Five folders of the given sizes (varied, so that kills find commits at varied points),
/// messages of 1–50 KB with assorted flags and keywords; a third of the files named as
/// programs other than Dovecot name them (no sizes in the name).
fn generate(root: &Path, sizes: [usize; 5], rng: &mut Rng) {
    const FLAGS: [&str; 8] = ["", "S", "S", "FS", "RS", "Sa", "b", "DSab"];
    let names = ["INBOX", "Archive", "Work", "Lists/rust", "Sent"];
    let mut n = 0;
    let folders: Vec<Folder> = names
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(f, (name, count))| {
            let mails = (0..count)
                .map(|_| {
                    n += 1;
                    let size = rng.range(1 << 10, 50 << 10) as usize;
                    let flags = FLAGS[rng.range(0, FLAGS.len() as u64 - 1) as usize];
                    Mail {
                        plain_name: rng.chance(33),
                        ..Mail::new(sized_message(n, size, rng), flags)
                    }
                })
                .collect();
            let mut folder = Folder::new(name, mails);
            folder.uid_step = 1 + f as u32 % 2;
            folder
        })
        .collect();
    write_maildir(root, &folders);
}

/// Asserts a store has no stray or missing files and no message twice.
fn assert_clean(view: &StoreView, what: &str) {
    assert!(view.problems.is_empty(), "{what}: {:#?}", view.problems);
    let mut places: BTreeMap<&[u8], Vec<String>> = BTreeMap::new();
    for (name, mb) in &view.mailboxes {
        for (uid, m) in &mb.messages {
            places
                .entry(&m.body)
                .or_default()
                .push(format!("{name} UID {uid} GUID {}", m.guid));
        }
    }
    let doubled: Vec<&Vec<String>> = places.values().filter(|p| p.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "{what}: {} messages doubled, e.g. {:#?}",
        doubled.len(),
        &doubled[..doubled.len().min(3)]
    );
}

/// Files left in any `tmp/` of a store.
fn tmp_debris(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if e.file_name() == "tmp" {
                    n += std::fs::read_dir(&p).unwrap().count();
                } else {
                    stack.push(p);
                }
            }
        }
    }
    n
}

/// A further run with `-v`: exit 0, nothing saved, expunged or flagged, nothing changed.
fn assert_nothing_left_to_do(local: &Path, args: &[&str], other: &Path) {
    let (tl, to) = (tree_bytes(local), tree_bytes(other));
    let mut v = vec!["-v"];
    v.extend_from_slice(args);
    let out = run_ok(local, &v, other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0 messages copied (0 B), 0 expunged, 0 re-flagged"),
        "the further run did something: {}",
        describe(&out)
    );
    assert_same_tree(&tl, &tree_bytes(local), "the local store on a further run");
    assert_same_tree(&to, &tree_bytes(other), "the other store on a further run");
}

#[test]
fn backup_killed_repeatedly_then_finished_is_exact() {
    let start = Instant::now();
    let mut rng = Rng::new(seed());
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    generate(&src, [1400, 200, 800, 450, 1150], &mut rng);
    assert_eq!(read_maildir(&src).message_count(), 4000);
    eprintln!("generated in {:?}", start.elapsed());

    // The source as it must stay; the test's own additions (more work for a fast machine)
    // are taken into it after checking that the runs so far changed nothing.
    let mut before = tree_bytes(&src);
    let mut n = 1_000_000;
    let mut more_mail = |rng: &mut Rng| {
        assert_same_tree(&before, &tree_bytes(&src), "the source");
        for folder in ["INBOX", "Work"] {
            let bodies: Vec<Vec<u8>> = (0..300)
                .map(|_| {
                    n += 1;
                    let size = rng.range(1 << 10, 50 << 10) as usize;
                    sized_message(n, size, rng)
                })
                .collect();
            let mails: Vec<(&[u8], &str)> = bodies.iter().map(|b| (b.as_slice(), "S")).collect();
            support::deliver_all(&src, folder, &mails, true);
        }
        before = tree_bytes(&src);
    };
    let finished = kill_repeatedly(
        &mut command(&src, &["backup"], &dst),
        &mut rng,
        &[&src, &dst],
        &mut more_mail,
    );
    eprintln!(
        "killed {KILLS} times ({finished} runs finished) by {:?}",
        start.elapsed()
    );
    run_ok(&src, &["backup"], &dst);

    let copy = read_maildir(&dst);
    assert_clean(&copy, "the destination");
    assert_same_store(&read_maildir(&src), &copy);
    assert_same_tree(&before, &tree_bytes(&src), "the source");
    eprintln!(
        "{} files left in tmp/ (see killed_runs_leave_no_debris_in_tmp)",
        tmp_debris(&dst)
    );
    assert_nothing_left_to_do(&src, &["backup"], &dst);
    eprintln!("done in {:?}", start.elapsed());
}

/// What the stores should hold after the sync: per mailbox, every body with its flags.
type Expected = BTreeMap<String, BTreeMap<Vec<u8>, std::collections::BTreeSet<String>>>;

fn content(view: &StoreView) -> Expected {
    view.mailboxes
        .iter()
        .map(|(name, mb)| {
            let bodies = mb
                .messages
                .values()
                .map(|m| (m.body.clone(), m.flags.clone()))
                .collect();
            (name.clone(), bodies)
        })
        .collect()
}

/// The files of a folder's `cur/`, by content.
fn files_by_body(root: &Path, folder: &str) -> BTreeMap<Vec<u8>, std::path::PathBuf> {
    std::fs::read_dir(folder_dir(root, folder).join("cur"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (std::fs::read(&p).unwrap(), p)
        })
        .collect()
}

/// Renames a file to carry `letters` as its flags.
fn set_letters(file: &Path, letters: &str) {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let base = name.split(':').next().unwrap();
    std::fs::rename(file, file.with_file_name(format!("{base}:2,{letters}"))).unwrap();
}

#[test]
fn two_way_sync_killed_repeatedly_then_finished_loses_and_doubles_nothing() {
    two_way_crash(true);
}

#[test]
fn two_way_sync_of_mail_without_dovecot_names_killed_repeatedly_loses_and_doubles_nothing() {
    two_way_crash(false);
}

/// Both sides change, then a two-way sync is killed repeatedly and finished. New mail is
/// named as Dovecot names it (with `,S=` and `,W=`) when `dovecot_names`, else as other
/// programs do.
fn two_way_crash(dovecot_names: bool) {
    let start = Instant::now();
    let mut rng = Rng::new(seed() ^ 0x5717c);
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    generate(&a, [300, 300, 300, 300, 300], &mut rng);
    // B starts as a copy of A, made without fsync to save time.
    let out = command(&a, &["-o", "mail_fsync=never", "backup"], &b)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let original = content(&read_maildir(&a));
    let mut expected = original.clone();

    // Both sides change: new mail (some still without a UID, in new/), flag changes,
    // expunges, and on B a new folder.
    let mut n = 100_000;
    let new_mail = |rng: &mut Rng, expected: &mut Expected, n: &mut usize, count: usize| {
        for (side, folders) in [(&a, ["INBOX", "Work"]), (&b, ["INBOX", "Archive"])] {
            for folder in folders {
                let mut delivered = Vec::new();
                for i in 0..count {
                    *n += 1;
                    let size = rng.range(1 << 10, 50 << 10) as usize;
                    let body = sized_message(*n, size, rng);
                    if i % 5 == 0 {
                        let dir = folder_dir(side, folder).join("new");
                        let sizes = if dovecot_names {
                            support::dovecot_sizes(&body)
                        } else {
                            String::new()
                        };
                        let name = format!("{}.M{n}P7.mda{sizes}", 1_800_000_000 + *n);
                        std::fs::write(dir.join(name), &body).unwrap();
                        let flags = Default::default();
                        expected.get_mut(folder).unwrap().insert(body, flags);
                    } else {
                        let seen = ["\\Seen".to_owned()].into();
                        expected.get_mut(folder).unwrap().insert(body.clone(), seen);
                        delivered.push(body);
                    }
                }
                let mails: Vec<(&[u8], &str)> =
                    delivered.iter().map(|b| (b.as_slice(), "S")).collect();
                support::deliver_all(side, folder, &mails, dovecot_names);
            }
        }
    };
    new_mail(&mut rng, &mut expected, &mut n, 700);
    let fresh: Vec<Mail> = (0..400)
        .map(|_| {
            n += 1;
            let size = rng.range(1 << 10, 50 << 10) as usize;
            Mail::new(sized_message(n, size, &mut rng), "F")
        })
        .collect();
    expected.insert(
        "FromB".to_owned(),
        fresh
            .iter()
            .map(|m| (m.body.clone(), ["\\Flagged".to_owned()].into()))
            .collect(),
    );
    write_maildir(&b, &[Folder::new("FromB", fresh)]);
    for (side, folder) in [(&a, "Lists/rust"), (&b, "Sent")] {
        let files = files_by_body(side, folder);
        for body in original[folder].keys().take(40) {
            set_letters(&files[body], "FRS");
            let flags = ["\\Answered", "\\Flagged", "\\Seen"]
                .map(str::to_owned)
                .into();
            expected
                .get_mut(folder)
                .unwrap()
                .insert(body.clone(), flags);
        }
    }
    // Expunged by another program: the file goes, its uidlist record stays for a while.
    for (side, folder) in [(&a, "Archive"), (&b, "Work")] {
        let files = files_by_body(side, folder);
        for body in original[folder].keys().rev().take(30) {
            std::fs::remove_file(&files[body]).unwrap();
            expected.get_mut(folder).unwrap().remove(body);
        }
    }
    eprintln!("prepared in {:?}", start.elapsed());

    let mut more_mail = |rng: &mut Rng| new_mail(rng, &mut expected, &mut n, 500);
    let finished = kill_repeatedly(
        &mut command(&a, &["sync"], &b),
        &mut rng,
        &[&a, &b],
        &mut more_mail,
    );
    eprintln!(
        "killed {KILLS} times ({finished} runs finished) by {:?}",
        start.elapsed()
    );
    run_ok(&a, &["sync"], &b);

    let (va, vb) = (read_maildir(&a), read_maildir(&b));
    assert_clean(&va, "side A");
    assert_clean(&vb, "side B");
    assert_same_store(&va, &vb);
    let got = content(&va);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (name, want) in &expected {
        let have = &got[name];
        let lost = want.keys().filter(|b| !have.contains_key(*b)).count();
        let extra = have.keys().filter(|b| !want.contains_key(*b)).count();
        assert_eq!((lost, extra), (0, 0), "{name}: (lost, unexpected) messages");
        for (body, flags) in want {
            assert_eq!(&have[body], flags, "{name}: flags of a message");
        }
    }
    eprintln!(
        "{} files left in tmp/ (see killed_runs_leave_no_debris_in_tmp)",
        tmp_debris(&a) + tmp_debris(&b)
    );
    assert_nothing_left_to_do(&a, &["sync"], &b);
    eprintln!("done in {:?}", start.elapsed());
}

/// The host name, as Dovecot writes it into a dotlock (`<pid>:<host>`).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0, "gethostname");
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[test]
fn stale_uidlist_lock_of_a_dead_process_is_broken_at_once() {
    let mut rng = Rng::new(seed());
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    generate(&src, [2, 2, 2, 2, 2], &mut rng);
    let out = command(&src, &["-o", "mail_fsync=never", "backup"], &dst)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", describe(&out));
    support::deliver(&src, "Work", &sized_message(99, 2000, &mut rng), "S");
    // The lock a crashed Dovecot (or boxsync) on this host left behind: its holder is gone.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(
        folder_dir(&dst, "Work").join("dovecot-uidlist.lock"),
        format!("{dead_pid}:{}", hostname()),
    )
    .unwrap();
    let mut child = command(&src, &["backup"], &dst)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("still waiting for the dead process's lock after 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_same_store(&read_maildir(&src), &read_maildir(&dst));
}

/// Regression: files a killed run wrote into tmp/ were never removed.
#[test]
fn killed_runs_leave_no_debris_in_tmp() {
    let mut rng = Rng::new(seed());
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    generate(&src, [120, 120, 120, 120, 120], &mut rng);
    for _ in 0..3 {
        let mut child = command(&src, &["backup"], &dst)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(100, 300)));
        child.kill().unwrap();
        child.wait().unwrap();
        remove_dead_locks(&[&dst]);
    }
    run_ok(&src, &["backup"], &dst);
    assert_same_store(&read_maildir(&src), &read_maildir(&dst));
    run_ok(&src, &["backup"], &dst);
    assert_eq!(tmp_debris(&dst), 0, "files left in tmp/");
}

/// Regression: the next backup renumbered the source's messages around the orphans, exit 2.
#[test]
fn crash_between_rename_and_uidlist_write_recovers_in_one_run() {
    let mut rng = Rng::new(seed());
    let d = Dir::new();
    let (src, dst) = (d.join("src"), d.join("dst"));
    // Archive has UIDs 1, 3, 5, …
    generate(&src, [3, 8, 3, 3, 3], &mut rng);
    run_ok(&src, &["backup"], &dst);
    // What a crash after the renames and before the uidlist write leaves: the files in cur/,
    // a uidlist without their records, an index that never saw them (rebuilt from the files).
    let uidlist = folder_dir(&dst, "Archive").join("dovecot-uidlist");
    let text = std::fs::read_to_string(&uidlist).unwrap();
    let header: Vec<String> = text
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .map(|i| {
            if i.starts_with('N') {
                "N1".to_owned()
            } else {
                i.to_owned()
            }
        })
        .collect();
    std::fs::write(&uidlist, format!("{}\n", header.join(" "))).unwrap();
    for e in std::fs::read_dir(&dst).unwrap() {
        let p = e.unwrap().path();
        if support::is_index_file(&p.to_string_lossy()) {
            std::fs::remove_file(p).unwrap();
        }
    }
    let out = command(&src, &["backup"], &dst).output().unwrap();
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_same_store(&read_maildir(&src), &read_maildir(&dst));
}

/// Regression: a crash between moving a file into cur/ and writing the uidlist lost the
/// file's GUID (its G field) when the file was not named after it, and the next two-way sync
/// copied the message back. The uidlist is now written before the move; this is the state a
/// crash between the two leaves: the record (with its G field) and the file still in tmp/.
#[test]
fn crash_between_uidlist_write_and_rename_does_not_duplicate() {
    let d = Dir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    // A message named as an MDA names it: no sizes, so B stores it under a name of its own
    // and records A's GUID in its uidlist's G field.
    let mut inbox = Folder::new(
        "INBOX",
        vec![Mail::new(b"Subject: y\n\nplain\n".to_vec(), "S")],
    );
    inbox.mails[0].plain_name = true;
    write_maildir(&a, &[inbox.clone()]);
    inbox.mails.clear();
    write_maildir(&b, &[inbox]);
    run_ok(&a, &["sync"], &b);
    assert!(
        std::fs::read_to_string(b.join("dovecot-uidlist"))
            .unwrap()
            .contains(" G")
    );
    // The crash: the file back in tmp/, the index row never written.
    for e in std::fs::read_dir(b.join("cur")).unwrap() {
        let p = e.unwrap().path();
        std::fs::rename(&p, b.join("tmp").join(p.file_name().unwrap())).unwrap();
    }
    for e in std::fs::read_dir(&b).unwrap() {
        let p = e.unwrap().path();
        if support::is_index_file(&p.to_string_lossy()) {
            std::fs::remove_file(p).unwrap();
        }
    }
    run_ok(&a, &["sync"], &b);
    let (va, vb) = (read_maildir(&a), read_maildir(&b));
    assert_clean(&va, "side A");
    assert_clean(&vb, "side B");
    assert_eq!(va.message_count(), 1, "{va:#?}");
    assert_eq!(vb.message_count(), 1, "{vb:#?}");
}
