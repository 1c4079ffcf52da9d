//! The command line: doveadm's global options (`-o`, `-v`, `-D`) before the command, then
//! `sync`/`backup` with dsync's flags, and the exit codes doveadm uses.

use boxsync_brain::{Mode, Role, Settings};
use boxsync_model::{Error, ExitCode, Result};
use boxsync_proto::{SyncType, state};
use boxsync_store::Location;
use boxsync_store::maildir::MaildirStore;
use clap::{Args, Parser, Subcommand};

/// Keeps two mail stores identical: two-way merge, one-way mirror, or one-way merge.
/// A reimplementation of Dovecot's dsync; exit codes are doveadm's (0 ok, 2 changed during sync:
/// run again, 64 usage, 65 bad data, 67 no such user, 68 not found, 75 temporary failure,
/// 77 permission denied, 78 configuration).
#[derive(Parser, Debug)]
#[command(name = "boxsync", version, disable_help_subcommand = true)]
struct Cli {
    /// Set a setting: mail_location=maildir:PATH[:LAYOUT=fs][:INDEX=DIR] (required for sync and
    /// backup), mail_fsync=optimized|always|never.
    #[arg(short = 'o', value_name = "SETTING=VALUE", global = true)]
    options: Vec<String>,
    /// Verbose: log what is done per mailbox.
    #[arg(short = 'v', global = true)]
    verbose: bool,
    /// Debug logging.
    #[arg(short = 'D', global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Two-way merge of the local store (mail_location) and DESTINATION; nothing is lost on
    /// either side. With -1, a one-way merge into DESTINATION that never modifies the source.
    #[command(visible_alias = "mirror")]
    Sync(SyncArgs),
    /// Make DESTINATION an exact copy of the local store (with -R, the other way round):
    /// mail and mailboxes only at the destination are deleted.
    Backup(BackupArgs),
}

#[derive(Args, Debug)]
struct Common {
    /// Full sync: compare every message of every mailbox, even where counters agree.
    #[arg(short = 'f')]
    full: bool,
    /// Reverse the direction: DESTINATION is the source.
    #[arg(short = 'R')]
    reverse: bool,
    /// Stateful sync: continue from STATE (printed on stdout by the previous run; '' to start).
    /// An invalid state falls back to a full sync with a warning.
    #[arg(short = 's', value_name = "STATE")]
    state: Option<String>,
    /// Sync only this mailbox (repeatable; `*` and `?` wildcards).
    #[arg(short = 'm', value_name = "MAILBOX")]
    mailbox: Vec<String>,
    /// Leave mailboxes matching MASK alone (repeatable; `*` and `?` wildcards).
    #[arg(short = 'x', value_name = "MASK")]
    exclude: Vec<String>,
    /// The other store: a mail location such as maildir:/backup/Maildir.
    #[arg(value_name = "DESTINATION")]
    destination: String,
}

#[derive(Args, Debug)]
struct SyncArgs {
    /// One-way merge: changes flow from the source into the destination only.
    #[arg(short = '1')]
    one_way: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct BackupArgs {
    #[command(flatten)]
    common: Common,
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => ExitCode::Usage.code(),
            };
        }
    };
    let level = if cli.debug {
        "debug"
    } else if cli.verbose {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOXSYNC_LOG")
                .unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        // No colour codes in logs and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    match run(cli) {
        Ok(code) => code.code(),
        Err(e) => {
            eprintln!("boxsync: Error: {e}");
            e.exit_code().code()
        }
    }
}

struct GlobalSettings {
    mail_location: Option<String>,
    fsync: bool,
}

fn settings(options: &[String]) -> Result<GlobalSettings> {
    let mut g = GlobalSettings {
        mail_location: None,
        fsync: true,
    };
    for o in options {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("-o {o}: expected SETTING=VALUE")))?;
        match k {
            "mail_location" => g.mail_location = Some(v.to_owned()),
            "mail_fsync" => {
                g.fsync = match v {
                    "optimized" | "always" => true,
                    "never" => false,
                    _ => {
                        return Err(Error::Config(format!(
                            "mail_fsync: unknown value {v:?} (optimized, always or never)"
                        )));
                    }
                }
            }
            _ => return Err(Error::Config(format!("unknown setting {k:?}"))),
        }
    }
    Ok(g)
}

fn run(cli: Cli) -> Result<ExitCode> {
    let global = settings(&cli.options)?;
    let (common, backup, one_way) = match cli.command {
        Command::Sync(a) => (a.common, false, a.one_way),
        Command::Backup(a) => (a.common, true, false),
    };
    let local_text = global.mail_location.ok_or_else(|| {
        Error::Config("mail_location is not set (use -o mail_location=maildir:PATH)".into())
    })?;
    let local_loc = Location::parse(&local_text)?;
    let dest_loc = Location::parse(&common.destination)?;
    if local_loc.root == dest_loc.root {
        return Err(Error::Usage(
            "source and destination are the same mail location".into(),
        ));
    }
    let source = if common.reverse {
        Role::Slave
    } else {
        Role::Master
    };
    let mode = if backup {
        Mode::Backup { source }
    } else if one_way {
        Mode::OneWay { source }
    } else {
        Mode::TwoWay
    };
    // A missing source is an error, never an empty store to mirror.
    let must_exist = |role: Role| !matches!(mode, Mode::TwoWay) && role == source;
    // The source first: when it is missing, the destination must not have been created.
    let (mut local, mut dest) = if must_exist(Role::Slave) {
        let dest = MaildirStore::open(&dest_loc, false, global.fsync)?;
        let local = MaildirStore::open(&local_loc, true, global.fsync)?;
        (local, dest)
    } else {
        let local = MaildirStore::open(&local_loc, !must_exist(Role::Master), global.fsync)?;
        let dest = MaildirStore::open(&dest_loc, true, global.fsync)?;
        (local, dest)
    };

    let mut sync_type = if common.full {
        SyncType::Full
    } else {
        SyncType::Changed
    };
    let mut saved_state = None;
    if let Some(text) = &common.state {
        match state::decode(text) {
            Ok(s) => {
                if !common.full {
                    sync_type = SyncType::State;
                }
                saved_state = Some(s);
            }
            Err(e) => {
                tracing::warn!("Saved sync state is invalid ({e}), falling back to full sync");
                sync_type = SyncType::Full;
            }
        }
    }
    let mut code = ExitCode::Ok;
    for store in [&local, &dest] {
        for (name, e) in &store.mailbox_errors {
            eprintln!(
                "boxsync: Error: {}: mailbox {name}: {e}",
                boxsync_store::Store::describe(store)
            );
            code = code.worst(e.exit_code());
        }
    }
    let settings = Settings {
        mode,
        sync_type,
        state: saved_state,
        mailboxes: common.mailbox,
        excludes: common.exclude,
    };
    let outcome = boxsync_brain::sync_local(&mut local, &mut dest, settings)?;
    for e in &outcome.errors {
        eprintln!("boxsync: Error: {e}");
    }
    tracing::info!(
        "saved {} messages ({} bytes), expunged {}, changed flags of {}",
        outcome.saved,
        outcome.bytes,
        outcome.expunged,
        outcome.flag_changes
    );
    code = code.worst(outcome.exit_code());
    if code == ExitCode::Changed {
        eprintln!(
            "boxsync: Warning: Mailbox changes caused a desync. You may want to run boxsync again."
        );
    }
    if common.state.is_some() {
        let text = if code == ExitCode::Ok || code == ExitCode::Changed {
            state::encode(&outcome.state)
        } else {
            String::new()
        };
        println!("{text}");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("boxsync").chain(args.iter().copied()))
    }

    #[test]
    fn doveadm_style_flags() {
        let c = parse(&[
            "-o",
            "mail_location=maildir:/a",
            "sync",
            "-1f",
            "-s",
            "",
            "maildir:/b",
        ])
        .unwrap();
        let Command::Sync(a) = c.command else {
            panic!()
        };
        assert!(a.one_way && a.common.full);
        assert_eq!(a.common.state.as_deref(), Some(""));
        let c = parse(&[
            "-o",
            "mail_location=maildir:/a",
            "backup",
            "-R",
            "-x",
            "Trash",
            "-x",
            "Spam*",
            "maildir:/b",
        ])
        .unwrap();
        let Command::Backup(a) = c.command else {
            panic!()
        };
        assert!(a.common.reverse);
        assert_eq!(a.common.exclude, ["Trash", "Spam*"]);
        assert!(parse(&["mirror", "maildir:/b"]).is_ok(), "dsync's old name");
        assert!(
            parse(&["backup", "-1", "maildir:/b"]).is_err(),
            "-1 is not a backup flag"
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(settings(&["mail_fsync=never".into()]).is_ok_and(|g| !g.fsync));
        assert!(matches!(
            settings(&["bogus=1".into()]),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            settings(&["noequals".into()]),
            Err(Error::Usage(_))
        ));
    }
}
