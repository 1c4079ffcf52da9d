//! A self-contained real Dovecot for tests: a config under a temporary directory, `doveadm`
//! mail commands against any mail location, and parsers for `doveadm -f tab` output.
//!
//! No daemon is needed: doveadm opens the stores itself. As root, Dovecot refuses to access
//! mail as uid 0 or gid 0 (`Mail access for users with GID 0 not permitted`, then `Mail access
//! not allowed for root` even with `first_valid_uid = 0`), so it runs as uid/gid 5000 and every
//! store is handed to that uid (created if missing, `chown -R`) before each doveadm command.
//! As any other user, Dovecot runs as that user and nothing is chowned.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The uid and gid Dovecot accesses mail as when the tests run as root.
const ROOT_MAIL_ID: u32 = 5000;

/// The user name doveadm reports; without `-u` it takes it from `USER` (exit 64 if unset).
const USER: &str = "boxsync";

/// Whether `doveadm` can be run on this machine.
pub fn dovecot_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("doveadm")
            .arg("-c")
            .arg("/dev/null")
            .arg("help")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// A fresh `Dovecot`, or `None` (with a note on stderr) when doveadm is missing; on CI
/// (`CI` set and not `false`) a missing doveadm is a failure, not a skip.
pub fn dovecot_or_skip() -> Option<Dovecot> {
    if dovecot_available() {
        return Some(Dovecot::new());
    }
    let on_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(
        !on_ci,
        "doveadm is not installed, but CI requires the Dovecot tests to run"
    );
    eprintln!("skipping: doveadm is not installed (apt-get install dovecot-core dovecot-imapd)");
    None
}

/// A Dovecot configuration under its own temporary directory, for doveadm mail commands.
pub struct Dovecot {
    base: tempfile::TempDir,
    conf: PathBuf,
    home: PathBuf,
    /// `Some((uid, gid))` when stores must be chowned to Dovecot's mail uid before use.
    chown_to: Option<(u32, u32)>,
}

impl Dovecot {
    /// Writes `dovecot.conf` (base, state, log and home directories) into a fresh temporary
    /// directory.
    pub fn new() -> Dovecot {
        let base = tempfile::Builder::new()
            .prefix("boxsync-dovecot-")
            .tempdir()
            .expect("create Dovecot base directory");
        let root = base.path().to_path_buf();
        for dir in ["run", "state", "log", "home"] {
            std::fs::create_dir(root.join(dir)).expect("create Dovecot directory");
        }
        // Our own ids, read from something we just created: no libc call needed.
        let meta = std::fs::metadata(&root).expect("stat Dovecot base directory");
        let (mail_uid, mail_gid, chown_to) = if meta.uid() == 0 {
            (
                ROOT_MAIL_ID,
                ROOT_MAIL_ID,
                Some((ROOT_MAIL_ID, ROOT_MAIL_ID)),
            )
        } else {
            (meta.uid(), meta.gid(), None)
        };
        let conf = root.join("dovecot.conf");
        let home = root.join("home");
        let r = root.display();
        let text = format!(
            "# Written by boxsync's test harness (tests/common/dovecot.rs).\n\
             base_dir = {r}/run\n\
             state_dir = {r}/state\n\
             log_path = {r}/log/dovecot.log\n\
             protocols = imap\n\
             listen = 127.0.0.1\n\
             ssl = no\n\
             first_valid_uid = 1\n\
             first_valid_gid = 1\n\
             mail_uid = {mail_uid}\n\
             mail_gid = {mail_gid}\n\
             mail_location = maildir:{r}/home/Maildir\n\
             # Tests need no durability; this keeps them fast.\n\
             mail_fsync = never\n\
             namespace inbox {{\n\
             \x20 inbox = yes\n\
             \x20 separator = /\n\
             \x20 prefix =\n\
             \x20 mailbox Drafts {{\n    special_use = \\Drafts\n  }}\n\
             \x20 mailbox Sent {{\n    special_use = \\Sent\n  }}\n\
             \x20 mailbox Trash {{\n    special_use = \\Trash\n  }}\n\
             \x20 mailbox Junk {{\n    special_use = \\Junk\n  }}\n\
             }}\n"
        );
        std::fs::write(&conf, text).expect("write dovecot.conf");
        let dovecot = Dovecot {
            base,
            conf,
            home,
            chown_to,
        };
        // TempDir is 0700 and root's; the mail uid must enter it and write its home and logs.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .expect("chmod Dovecot base directory");
        if let Some(ids) = chown_to {
            chown_tree(&root, ids);
        }
        dovecot
    }

    /// The directory holding `dovecot.conf` and Dovecot's run, state, log and home directories.
    pub fn base(&self) -> &Path {
        self.base.path()
    }

    /// The path of `dovecot.conf`, for `doveadm -c`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// `doveadm -c CONF -o mail_location=LOC` with `USER` and `HOME` set, its stores prepared;
    /// append the doveadm command and its arguments.
    pub fn doveadm(&self, mail_location: &str) -> Command {
        self.prepare(mail_location);
        let mut cmd = Command::new("doveadm");
        cmd.arg("-c")
            .arg(&self.conf)
            .arg("-o")
            .arg(format!("mail_location={mail_location}"))
            .env("USER", USER)
            .env("HOME", &self.home)
            .stdin(Stdio::null());
        cmd
    }

    /// Makes every directory a mail location names exist and belong to Dovecot's mail uid.
    ///
    /// Stores are created here because Dovecot, running as the mail uid, could not create
    /// them inside a directory that root owns. Call again after boxsync (as root) wrote files
    /// that Dovecot will have to change; `doveadm` and `sync` do it for you.
    pub fn prepare(&self, mail_location: &str) {
        let Some(ids) = self.chown_to else { return };
        for (path, is_dir) in location_paths(mail_location) {
            if is_dir && !path.exists() {
                std::fs::create_dir_all(&path)
                    .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
            }
            if path.exists() {
                make_traversable(&path);
                chown_tree(&path, ids);
            }
        }
    }

    /// Saves `raw_message` into `mailbox` (`doveadm save -m`).
    pub fn save(&self, loc: &str, mailbox: &str, raw_message: &[u8]) {
        let mut cmd = self.doveadm(loc);
        cmd.args(["save", "-m", mailbox]);
        run(&mut cmd, Some(raw_message));
    }

    /// Adds the space-separated `flags` (system flags and keywords) to message `uid`.
    pub fn flags_add(&self, loc: &str, mailbox: &str, uid: u32, flags: &str) {
        self.flags_cmd(loc, "add", mailbox, uid, flags);
    }

    /// Removes the space-separated `flags` from message `uid`.
    pub fn flags_remove(&self, loc: &str, mailbox: &str, uid: u32, flags: &str) {
        self.flags_cmd(loc, "remove", mailbox, uid, flags);
    }

    /// Replaces the flags of message `uid` with the space-separated `flags`.
    pub fn flags_replace(&self, loc: &str, mailbox: &str, uid: u32, flags: &str) {
        self.flags_cmd(loc, "replace", mailbox, uid, flags);
    }

    /// `doveadm flags VERB FLAGS mailbox MAILBOX uid UID`.
    fn flags_cmd(&self, loc: &str, verb: &str, mailbox: &str, uid: u32, flags: &str) {
        let mut cmd = self.doveadm(loc);
        cmd.args(["flags", verb, flags, "mailbox", mailbox, "uid"])
            .arg(uid.to_string());
        run(&mut cmd, None);
    }

    /// Expunges message `uid` from `mailbox`.
    pub fn expunge(&self, loc: &str, mailbox: &str, uid: u32) {
        let mut cmd = self.doveadm(loc);
        cmd.args(["expunge", "mailbox", mailbox, "uid"])
            .arg(uid.to_string());
        run(&mut cmd, None);
    }

    /// Creates mailbox `name` (hierarchy separator `/`), not subscribed.
    pub fn mailbox_create(&self, loc: &str, name: &str) {
        let mut cmd = self.doveadm(loc);
        cmd.args(["mailbox", "create", name]);
        run(&mut cmd, None);
    }

    /// Subscribes to mailbox `name`.
    pub fn mailbox_subscribe(&self, loc: &str, name: &str) {
        let mut cmd = self.doveadm(loc);
        cmd.args(["mailbox", "subscribe", name]);
        run(&mut cmd, None);
    }

    /// Unsubscribes from mailbox `name`.
    pub fn mailbox_unsubscribe(&self, loc: &str, name: &str) {
        let mut cmd = self.doveadm(loc);
        cmd.args(["mailbox", "unsubscribe", name]);
        run(&mut cmd, None);
    }

    /// Renames mailbox `old` to `new`.
    pub fn mailbox_rename(&self, loc: &str, old: &str, new: &str) {
        let mut cmd = self.doveadm(loc);
        cmd.args(["mailbox", "rename", old, new]);
        run(&mut cmd, None);
    }

    /// Deletes mailbox `name` with its messages.
    pub fn mailbox_delete(&self, loc: &str, name: &str) {
        let mut cmd = self.doveadm(loc);
        cmd.args(["mailbox", "delete", name]);
        run(&mut cmd, None);
    }

    /// The mailbox names `doveadm mailbox list` prints, sorted; this includes parents that
    /// exist only as hierarchy (e.g. `Archive` for `Archive/2024`).
    pub fn mailbox_list(&self, loc: &str) -> Vec<String> {
        let mut cmd = self.doveadm(loc);
        cmd.args(["mailbox", "list"]);
        let out = run(&mut cmd, None);
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    /// The subscribed mailbox names, sorted.
    pub fn subscriptions(&self, loc: &str) -> Vec<String> {
        let mut cmd = self.doveadm(loc);
        cmd.args(["mailbox", "list", "-s"]);
        let out = run(&mut cmd, None);
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    /// Every message as Dovecot sees it (mailbox, uid, guid, flags), normalized: `\Recent`
    /// dropped, flags sorted, rows sorted by (mailbox, uid).
    pub fn fetch(&self, loc: &str) -> Vec<FetchRow> {
        let mut rows: Vec<FetchRow> = self
            .fetch_fields(loc, "mailbox uid guid flags", &["ALL"])
            .into_iter()
            .map(|r| FetchRow {
                mailbox: field(&r, "mailbox").to_owned(),
                uid: number(&r, "uid"),
                guid: field(&r, "guid").to_owned(),
                flags: normalize_flags(field(&r, "flags")),
            })
            .collect();
        rows.sort();
        rows
    }

    /// `doveadm -f tab fetch FIELDS QUERY…` as one map per message, keyed by field name.
    ///
    /// The tab format does not escape values, so only ask for fields without tabs or line
    /// breaks (`hdr.subject` of a folded header would break the rows).
    pub fn fetch_fields(
        &self,
        loc: &str,
        fields: &str,
        query: &[&str],
    ) -> Vec<BTreeMap<String, String>> {
        let mut cmd = self.doveadm(loc);
        cmd.args(["-f", "tab", "fetch", fields]).args(query);
        let out = run(&mut cmd, None);
        parse_tab(&String::from_utf8_lossy(&out.stdout))
    }

    /// Every mailbox's (name, UIDVALIDITY, UIDNEXT, message count), sorted by name.
    pub fn mailbox_status(&self, loc: &str) -> Vec<(String, u32, u32, u32)> {
        let mut cmd = self.doveadm(loc);
        cmd.args([
            "-f",
            "tab",
            "mailbox",
            "status",
            "messages uidvalidity uidnext",
            "*",
        ]);
        let out = run(&mut cmd, None);
        let mut rows: Vec<(String, u32, u32, u32)> =
            parse_tab(&String::from_utf8_lossy(&out.stdout))
                .iter()
                .map(|r| {
                    (
                        field(r, "mailbox").to_owned(),
                        number(r, "uidvalidity"),
                        number(r, "uidnext"),
                        number(r, "messages"),
                    )
                })
                .collect();
        rows.sort();
        rows
    }

    /// Runs real dsync: `doveadm … -o mail_location=LOC_A <args[0]> <args[1..]> LOC_B`, where
    /// `args[0]` is `sync` or `backup`. Returns the output whatever the exit status (2 and 75
    /// mean something to dsync); panics only when doveadm cannot be started.
    pub fn sync(&self, loc_a: &str, loc_b: &str, args: &[&str]) -> Output {
        assert!(
            matches!(args.first(), Some(&"sync") | Some(&"backup")),
            "Dovecot::sync: the first argument must be `sync` or `backup`, got {args:?}"
        );
        self.prepare(loc_b);
        let mut cmd = self.doveadm(loc_a);
        cmd.args(args).arg(loc_b);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }
}

impl Default for Dovecot {
    fn default() -> Self {
        Dovecot::new()
    }
}

/// One message as `doveadm fetch 'mailbox uid guid flags'` shows it, normalized.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FetchRow {
    /// The mailbox name in UTF-8 with `/` as separator.
    pub mailbox: String,
    /// The message's UID.
    pub uid: u32,
    /// The message's GUID (for Maildir without a `G` uidlist field: the file's base name).
    pub guid: String,
    /// System flags and keywords, sorted, without `\Recent`.
    pub flags: Vec<String>,
}

/// Parses `doveadm -f tab` output: a header line of field names, then one tab-separated line
/// per record. Blank lines are skipped; missing trailing fields read as empty.
pub fn parse_tab(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split('\t').collect();
    lines
        .map(|line| {
            let mut values = line.split('\t');
            names
                .iter()
                .map(|name| ((*name).to_owned(), values.next().unwrap_or("").to_owned()))
                .collect()
        })
        .collect()
}

/// Space-separated flags without `\Recent`, sorted.
pub fn normalize_flags(flags: &str) -> Vec<String> {
    let mut v: Vec<String> = flags
        .split(' ')
        .filter(|f| !f.is_empty() && !f.eq_ignore_ascii_case("\\Recent"))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// The value of column `name`; panics when doveadm did not print that column.
fn field<'a>(row: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    row.get(name)
        .unwrap_or_else(|| panic!("doveadm output has no `{name}` column: {row:?}"))
}

/// The value of column `name` as a number; panics when it is not one.
fn number(row: &BTreeMap<String, String>, name: &str) -> u32 {
    let v = field(row, name);
    v.parse()
        .unwrap_or_else(|e| panic!("doveadm `{name}` is not a number: {v:?}: {e}"))
}

/// Runs `cmd` with `stdin` (or nothing) as input; panics with its stderr unless it succeeds.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input)
            .unwrap_or_else(|e| panic!("write stdin of {cmd:?}: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstderr:\n{}\nstdout:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    out
}

/// The filesystem paths in a mail location (`driver:PATH[:KEY=VALUE…]`), each with whether it
/// is a directory to create when missing (`INBOX=` of mbox names a file).
fn location_paths(loc: &str) -> Vec<(PathBuf, bool)> {
    let mut parts = loc.split(':');
    let driver = parts.next().unwrap_or("");
    if driver == "imapc" {
        return Vec::new();
    }
    let mut paths = Vec::new();
    if let Some(root) = parts.next().filter(|p| p.starts_with('/')) {
        paths.push((PathBuf::from(root), true));
    }
    for opt in parts {
        if let Some((key, value)) = opt.split_once('=')
            && value.starts_with('/')
        {
            match key {
                "INDEX" | "CONTROL" | "VOLATILEDIR" | "ALT" => {
                    paths.push((PathBuf::from(value), true));
                }
                "INBOX" => paths.push((PathBuf::from(value), false)),
                _ => {}
            }
        }
    }
    paths
}

/// Gives others search (x) permission on the ancestors of `path` inside the temporary
/// directory (TempDir makes them 0700), so Dovecot's mail uid can reach `path`. Ancestors
/// elsewhere are left alone: a test store outside the temporary directory is the test's care.
fn make_traversable(path: &Path) {
    let tmp = std::env::temp_dir();
    for dir in path.ancestors().skip(1) {
        if !dir.starts_with(&tmp) || dir == tmp {
            break;
        }
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011));
        }
    }
}

/// `chown -R uid:gid path`, not following symbolic links.
fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let entries = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("read directory {}: {e}", path.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read directory {}: {e}", path.display()));
            chown_tree(&entry.path(), (uid, gid));
        }
    }
}
