//! `--dry-run` in the stores: opening both sides in dry-run mode and running the real brain
//! changes no byte and no mtime of either tree (Maildir and mbox, with new mail, flag changes,
//! an expunge, a new folder, a file in `new/` without a UID and an mbox message without
//! X-UID), and the counts it reports are the ones the real sync then has.

use boxsync_brain::{Mode, Outcome, Role, Settings, sync_local};
use boxsync_proto::SyncType;
use boxsync_store::dry_run::{DryRun, DryRunLog};
use boxsync_store::maildir::MaildirStore;
use boxsync_store::mbox::{MboxLocation, MboxStore};
use boxsync_store::{Location, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: a@example.org\nTo: b@example.org\nSubject: test {n}\n\
         Message-ID: <{n}@dry.run>\nDate: Fri, 1 Mar 2024 09:00:00 +0000\n\n\
         this is test message number {n}.\n"
    )
    .into_bytes()
}

/// Every path under a root with its bytes (files only) and mtime.
type Snapshot = BTreeMap<PathBuf, (Option<Vec<u8>>, SystemTime)>;

fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let bytes = if meta.is_dir() {
                stack.push(e.path());
                None
            } else {
                Some(std::fs::read(e.path()).unwrap())
            };
            out.insert(e.path(), (bytes, meta.modified().unwrap()));
        }
        let meta = std::fs::metadata(&dir).unwrap();
        out.insert(dir, (None, meta.modified().unwrap()));
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Peer {
    Maildir,
    Mbox,
}

struct Scenario {
    _tmp: tempfile::TempDir,
    a: Location,
    b_root: PathBuf,
    peer: Peer,
}

impl Scenario {
    fn open_b(&self, dry: Option<&DryRunLog>) -> Box<dyn Store + Send> {
        match (self.peer, dry) {
            (Peer::Maildir, None) => {
                Box::new(MaildirStore::open(&self.b_maildir(), true, false).unwrap())
            }
            (Peer::Maildir, Some(log)) => Box::new(DryRun::new(
                MaildirStore::open_dry_run(&self.b_maildir()).unwrap(),
                log.clone(),
            )),
            (Peer::Mbox, None) => Box::new(MboxStore::open(&self.b_mbox(), true, false).unwrap()),
            (Peer::Mbox, Some(log)) => Box::new(DryRun::new(
                MboxStore::open_dry_run(&self.b_mbox()).unwrap(),
                log.clone(),
            )),
        }
    }

    fn open_a(&self, dry: Option<&DryRunLog>) -> Box<dyn Store + Send> {
        match dry {
            None => Box::new(MaildirStore::open(&self.a, false, false).unwrap()),
            Some(log) => Box::new(DryRun::new(
                MaildirStore::open_dry_run(&self.a).unwrap(),
                log.clone(),
            )),
        }
    }

    fn b_maildir(&self) -> Location {
        Location::parse(&format!("maildir:{}", self.b_root.display())).unwrap()
    }

    fn b_mbox(&self) -> MboxLocation {
        MboxLocation::parse(&format!("mbox:{}", self.b_root.display())).unwrap()
    }

    fn sync(&self, mode: Mode, dry: Option<&DryRunLog>) -> Outcome {
        let mut a = self.open_a(dry);
        let mut b = self.open_b(dry);
        let settings = Settings {
            mode,
            sync_type: SyncType::Full,
            state: None,
            mailboxes: Vec::new(),
            excludes: Vec::new(),
            lock_timeout: 5,
            filter: Default::default(),
            progress: None,
            alt_char: '_',
            virtual_all_box: None,
        };
        let outcome = sync_local(&mut *a, &mut *b, settings).unwrap();
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        outcome
    }

    fn snapshot(&self) -> [Snapshot; 2] {
        [snapshot(&self.a.root), snapshot(&self.b_root)]
    }
}

/// A name whose Maildir info has `letter` added (letters stay in order).
fn with_flag(name: &str, letter: char) -> String {
    let (base, info) = name.split_once(":2,").unwrap_or((name, ""));
    let mut letters: Vec<char> = info.chars().chain([letter]).collect();
    letters.sort_unstable();
    letters.dedup();
    format!("{base}:2,{}", letters.into_iter().collect::<String>())
}

/// The file under `dir/cur` or `dir/new` holding message `n`.
fn file_of(dir: &Path, n: usize) -> PathBuf {
    let needle = format!("test message number {n}.");
    for sub in ["cur", "new"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if String::from_utf8_lossy(&std::fs::read(&p).unwrap()).contains(&needle) {
                return p;
            }
        }
    }
    panic!("message {n} not in {}", dir.display())
}

fn add_flag(dir: &Path, n: usize, letter: char) {
    let p = file_of(dir, n);
    let name = p.file_name().unwrap().to_str().unwrap();
    let to = dir.join("cur").join(with_flag(name, letter));
    std::fs::rename(&p, to).unwrap();
}

fn deliver(dir: &Path, n: usize) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join(format!("new/1709283600.M{n}P1.test")), message(n)).unwrap();
}

/// A with INBOX (1–4) and Work (5–6), synced once to B, then changed on both sides.
fn scenario(peer: Peer) -> Scenario {
    let tmp = tempfile::tempdir().unwrap();
    let a_root = tmp.path().join("a");
    for n in 1..=4 {
        deliver(&a_root, n);
    }
    for n in 5..=6 {
        deliver(&a_root.join(".Work"), n);
    }
    let s = Scenario {
        a: Location::parse(&format!("maildir:{}", a_root.display())).unwrap(),
        b_root: tmp.path().join("b"),
        _tmp: tmp,
        peer,
    };
    s.sync(Mode::TwoWay, None);

    // A: a flag change, a deleted message, new mail in new/ without a UID, a new folder.
    add_flag(&a_root, 1, 'F');
    std::fs::remove_file(file_of(&a_root, 2)).unwrap();
    deliver(&a_root, 7);
    deliver(&a_root.join(".Fresh"), 8);
    add_flag(&a_root.join(".Work"), 5, 'S');
    // B: new mail and a flag change.
    match peer {
        Peer::Maildir => {
            deliver(&s.b_root, 9);
            add_flag(&s.b_root, 3, 'S');
        }
        Peer::Mbox => {
            // Mail an MDA appended: no X-UID.
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(s.b_root.join("inbox"))
                .unwrap();
            f.write_all(b"From MAILER-DAEMON Fri Mar  1 09:00:00 2024\n")
                .unwrap();
            f.write_all(&message(9)).unwrap();
            f.write_all(b"\n").unwrap();
        }
    }
    s
}

fn check(peer: Peer, mode: Mode) {
    let s = scenario(peer);
    let before = s.snapshot();
    let log = DryRunLog::new();
    let dry = s.sync(mode, Some(&log));
    let after = s.snapshot();
    for (side, (b, a)) in ["A", "B"].iter().zip(before.iter().zip(after.iter())) {
        assert_eq!(
            b.keys().collect::<Vec<_>>(),
            a.keys().collect::<Vec<_>>(),
            "{peer:?} {mode:?}: the paths of {side} changed"
        );
        for (path, was) in b {
            assert!(
                a[path] == *was,
                "{peer:?} {mode:?}: {} changed",
                path.display()
            );
        }
    }
    let lines = log.lines();
    assert!(
        lines.iter().any(|l| l == "would create mailbox Fresh"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("would save ")),
        "{lines:?}"
    );

    let real = s.sync(mode, None);
    let counts = |o: &Outcome| (o.saved, o.expunged, o.flag_changes);
    assert_eq!(
        counts(&dry),
        counts(&real),
        "{peer:?} {mode:?}: dry run said {lines:#?}"
    );
    assert!(dry.saved > 0 && dry.expunged > 0 && dry.flag_changes > 0);
    // The real run did change the trees, so the snapshot comparison above means something.
    assert_ne!(s.snapshot(), before);
}

#[test]
fn maildir_to_maildir_two_way() {
    check(Peer::Maildir, Mode::TwoWay);
}

#[test]
fn maildir_to_maildir_backup() {
    check(
        Peer::Maildir,
        Mode::Backup {
            source: Role::Master,
        },
    );
}

#[test]
fn maildir_to_mbox_two_way() {
    check(Peer::Mbox, Mode::TwoWay);
}

#[test]
fn maildir_to_mbox_backup() {
    check(
        Peer::Mbox,
        Mode::Backup {
            source: Role::Master,
        },
    );
}

#[test]
fn a_missing_destination_stays_missing() {
    let s = scenario(Peer::Maildir);
    for peer in [Peer::Maildir, Peer::Mbox] {
        let fresh = Scenario {
            a: s.a.clone(),
            b_root: s.b_root.with_file_name("nowhere"),
            _tmp: tempfile::tempdir().unwrap(),
            peer,
        };
        let before = snapshot(&s.a.root);
        let log = DryRunLog::new();
        let dry = fresh.sync(
            Mode::Backup {
                source: Role::Master,
            },
            Some(&log),
        );
        assert!(!fresh.b_root.exists());
        assert_eq!(snapshot(&s.a.root), before);
        assert!(dry.saved > 0, "{:?}", log.lines());
        let real = fresh.sync(
            Mode::Backup {
                source: Role::Master,
            },
            None,
        );
        assert_eq!(
            (dry.saved, dry.expunged, dry.flag_changes),
            (real.saved, real.expunged, real.flag_changes),
            "{peer:?}: {:#?}",
            log.lines()
        );
        std::fs::remove_dir_all(&fresh.b_root).unwrap();
    }
}
