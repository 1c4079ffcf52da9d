//! One command for many users, as doveadm runs it: who (`-u USER`, `-u MASK`, `-A`, `-F FILE`),
//! found in which userdb, several at once, each reported on its own, the exit code the worst.

use crate::userdb::{self, User, UserdbConfig};
use boxsync_model::{Error, ExitCode, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// Which users a command runs for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// `-u NAME`, or nobody named: `$USER`.
    One(String),
    /// `-u MASK` with `*` or `?`.
    Mask(String),
    /// `-A`.
    All,
    /// `-F FILE`.
    File(PathBuf),
}

impl Selection {
    /// From the flags; `-A` and `-F` exclude `-u` and each other.
    pub fn from_flags(user: Option<&str>, all: bool, file: Option<PathBuf>) -> Result<Selection> {
        match (user, all, file) {
            (None, false, None) => Ok(Selection::One(default_user())),
            (Some(u), false, None) if u.contains(['*', '?']) => Ok(Selection::Mask(u.to_owned())),
            (Some(u), false, None) => Ok(Selection::One(u.to_owned())),
            (None, true, None) => Ok(Selection::All),
            (None, false, Some(f)) => Ok(Selection::File(f)),
            _ => Err(Error::Usage("-u, -A and -F exclude each other".into())),
        }
    }

    /// Whether this is more than one named user (several runs, each reported).
    pub fn is_many(&self) -> bool {
        !matches!(self, Selection::One(_))
    }
}

/// The login name, as doveadm takes it when no `-u` is given.
pub fn default_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".to_owned())
}

/// The user names a selection stands for, in the order of the userdbs (duplicates once).
pub fn names(selection: &Selection, userdbs: &[UserdbConfig]) -> Result<Vec<String>> {
    let listed = |userdbs: &[UserdbConfig]| -> Result<Vec<String>> {
        if userdbs.is_empty() {
            return Err(Error::Config(
                "-A and -u MASK need a userdb to list users (a userdb { } section in the \
                 config file, -c FILE)"
                    .into(),
            ));
        }
        let mut all = Vec::new();
        for db in userdbs {
            for n in db.iterate()? {
                if !all.contains(&n) {
                    all.push(n);
                }
            }
        }
        Ok(all)
    };
    match selection {
        Selection::One(name) => Ok(vec![name.clone()]),
        Selection::Mask(mask) => Ok(listed(userdbs)?
            .into_iter()
            .filter(|n| userdb::matches_mask(mask, n))
            .collect()),
        Selection::All => listed(userdbs),
        Selection::File(path) => userdb::read_user_file(path),
    }
}

/// The user as the userdbs know it (the first that does), or, with no userdb at all, a user
/// known only by name (the home from `$HOME` when it is the login user).
pub fn resolve(name: &str, userdbs: &[UserdbConfig]) -> Result<User> {
    for db in userdbs {
        if let Some(u) = db.lookup(name)? {
            return Ok(u);
        }
    }
    if !userdbs.is_empty() {
        return Err(Error::NoUser(format!("user {name:?} is not in any userdb")));
    }
    let home = (name == default_user())
        .then(|| std::env::var("HOME").ok())
        .flatten();
    Ok(User {
        name: name.to_owned(),
        uid: None,
        gid: None,
        home,
        mail: None,
        mail_replica: None,
        extra: Default::default(),
    })
}

/// Runs `run_one` for every user, at most `parallel` at once. Each user's messages are
/// printed together, after a line naming the user, then one result line; the exit code is
/// the worst of all (doveadm's rule: one failing user does not stop the others).
pub fn run_all<F>(names: &[String], parallel: usize, run_one: F, err: &mut dyn Write) -> ExitCode
where
    F: Fn(&str, &mut Vec<u8>) -> Result<ExitCode> + Sync,
{
    let next = Mutex::new(0usize);
    let workers = parallel.clamp(1, names.len().max(1));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Vec<u8>, ExitCode, f64)>();
    let mut worst = ExitCode::Ok;
    std::thread::scope(|s| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let (next, run_one) = (&next, &run_one);
            s.spawn(move || {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(name) = names.get(i) else { break };
                    let start = std::time::Instant::now();
                    let mut buf = Vec::new();
                    let code = match run_one(name, &mut buf) {
                        Ok(code) => code,
                        Err(e) => {
                            let _ = writeln!(buf, "boxsync: Error: {e}");
                            e.exit_code()
                        }
                    };
                    if done_tx
                        .send((i, buf, code, start.elapsed().as_secs_f64()))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        // Printed here, one user at a time, as each finishes.
        for (i, buf, code, secs) in done_rx {
            worst = worst.worst(code);
            let _ = err.write_all(&buf);
            let _ = writeln!(
                err,
                "boxsync: user {}: {} (exit {}, {secs:.1} s)",
                names[i],
                match code {
                    ExitCode::Ok => "done",
                    ExitCode::Changed => "done, but mail changed during the sync: run again",
                    _ => "FAILED",
                },
                code.code(),
            );
        }
    });
    worst
}

/// A mail location for `user`: its variables expanded (`%u`, `%n`, `%d`, `%h`, …) and a `~`
/// that starts a path in it (`maildir:~/Maildir`, `INBOX=~/mail/inbox`) made the user's home.
/// Without a known home, `~` is left for the location's own parsing, which reads `$HOME`.
pub fn expand_location(template: &str, user: &User) -> Result<String> {
    let homed = match &user.home {
        Some(home) => template
            .split(':')
            .map(|part| {
                let (key, value) = match part.split_once('=') {
                    Some((k, v)) if !k.contains('~') => (Some(k), v),
                    _ => (None, part),
                };
                let value = match value.strip_prefix('~') {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                        format!("{home}{rest}")
                    }
                    _ => value.to_owned(),
                };
                match key {
                    Some(k) => format!("{k}={value}"),
                    None => value,
                }
            })
            .collect::<Vec<_>>()
            .join(":"),
        None => template.to_owned(),
    };
    userdb::expand(&homed, user)
}

/// How many users run at once by default: one per CPU, as the work is mostly I/O.
pub fn default_parallel() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, home: Option<&str>) -> User {
        User {
            name: name.to_owned(),
            uid: None,
            gid: None,
            home: home.map(str::to_owned),
            mail: None,
            mail_replica: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn flags_make_a_selection() {
        assert_eq!(
            Selection::from_flags(Some("alice"), false, None).unwrap(),
            Selection::One("alice".into())
        );
        assert_eq!(
            Selection::from_flags(Some("*@example.org"), false, None).unwrap(),
            Selection::Mask("*@example.org".into())
        );
        assert_eq!(
            Selection::from_flags(Some("a?ice"), false, None).unwrap(),
            Selection::Mask("a?ice".into())
        );
        assert_eq!(
            Selection::from_flags(None, true, None).unwrap(),
            Selection::All
        );
        assert!(Selection::from_flags(Some("a"), true, None).is_err());
        assert!(Selection::from_flags(None, true, Some("f".into())).is_err());
        assert!(!Selection::One("a".into()).is_many());
        assert!(Selection::All.is_many());
    }

    #[test]
    fn all_users_without_a_userdb_is_a_config_error() {
        let e = names(&Selection::All, &[]).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Config, "{e}");
        assert_eq!(names(&Selection::One("bob".into()), &[]).unwrap(), ["bob"]);
    }

    #[test]
    fn a_tilde_starting_a_path_is_the_users_home() {
        let alice = user("alice@example.org", Some("/home/alice"));
        assert_eq!(
            expand_location("maildir:~/Maildir:INDEX=~/idx", &alice).unwrap(),
            "maildir:/home/alice/Maildir:INDEX=/home/alice/idx"
        );
        assert_eq!(
            expand_location("mbox:~/mail:INBOX=/var/mail/%n", &alice).unwrap(),
            "mbox:/home/alice/mail:INBOX=/var/mail/alice"
        );
        // Not at the start of a path: left alone.
        assert_eq!(
            expand_location("maildir:/srv/~x/%d", &alice).unwrap(),
            "maildir:/srv/~x/example.org"
        );
        // Without a home, `~` is left for the location's own parsing ($HOME).
        let bob = user("bob", None);
        assert_eq!(
            expand_location("maildir:~/Maildir", &bob).unwrap(),
            "maildir:~/Maildir"
        );
        assert!(expand_location("maildir:%h/Maildir", &bob).is_err());
    }

    #[test]
    fn every_user_runs_once_and_the_worst_exit_code_wins() {
        let names: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
        let seen = Mutex::new(Vec::new());
        let mut err = Vec::new();
        let code = run_all(
            &names,
            4,
            |name, buf| {
                seen.lock().unwrap().push(name.to_owned());
                writeln!(buf, "working on {name}").unwrap();
                match name {
                    "u7" => Err(Error::NotFound("u7's store is gone".into())),
                    "u3" => Ok(ExitCode::Changed),
                    _ => Ok(ExitCode::Ok),
                }
            },
            &mut err,
        );
        assert_eq!(code, ExitCode::NotFound);
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(seen, want);
        let text = String::from_utf8(err).unwrap();
        // Each user's lines together, followed by its result.
        assert!(text.contains("working on u7\nboxsync: Error: u7's store is gone\nboxsync: user u7: FAILED (exit 68"), "{text}");
        assert!(
            text.contains("working on u0\nboxsync: user u0: done (exit 0"),
            "{text}"
        );
        assert!(
            text.contains("boxsync: user u3: done, but mail changed"),
            "{text}"
        );
    }
}
