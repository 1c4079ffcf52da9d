//! The command line: doveadm's global options (`-o`, `-v`, `-D`) before the command, then
//! `sync`/`backup` with dsync's flags, and the exit codes doveadm uses.

use crate::filters;
use crate::stores::{self, MailLocation, StoreSettings};
use crate::{remote, users};
use boxsync_brain::{Filter, Mode, Role, Settings};
use boxsync_model::{Error, ExitCode, Result};
use boxsync_proto::{DryRunReport, SyncType, state};
use boxsync_store::dry_run::DryRunLog;
use boxsync_transport::rawlog::RawLog;
use boxsync_transport::{command, dest, doveadm, net, server};
use clap::{Args, Parser, Subcommand};
use std::io::Write;

/// Keeps two mail stores identical: two-way merge, one-way mirror, or one-way merge.
/// A reimplementation of Dovecot's dsync; exit codes are doveadm's (0 ok, 2 changed during sync:
/// run again, 64 usage, 65 bad data, 67 no such user, 68 not found, 75 temporary failure,
/// 77 permission denied, 78 configuration).
#[derive(Parser, Debug)]
#[command(name = "boxsync", version, disable_help_subcommand = true)]
struct Cli {
    /// Set a setting: mail_location=maildir:PATH[:LAYOUT=fs][:INDEX=DIR] or
    /// mbox:ROOT[:INBOX=PATH] or sdbox:ROOT / mdbox:ROOT (read only)[:INDEX=DIR] or
    /// imapc:[INDEXDIR] or imap[s]://USER@HOST[:PORT]/ (`%u`, `%n`, `%d` expand to the user),
    /// mail_fsync=optimized|always|never, dsync_remote_cmd=COMMAND, doveadm_password=SECRET,
    /// doveadm_port=PORT, ssl_client_ca_file=PEM, ssl_cert=<PEM, ssl_key=<PEM,
    /// server_max_sessions=N; for IMAP accounts imapc_host, imapc_port, imapc_user,
    /// imapc_master_user, imapc_password, imapc_password_file, imapc_password_command,
    /// imapc_ssl=no|imaps|starttls, imapc_ssl_verify=yes|no,
    /// imapc_sasl_mechanisms=PLAIN|LOGIN|XOAUTH2|OAUTHBEARER, imapc_max_connections=N,
    /// imapc_max_bytes_per_second=SIZE, imapc_cmd_timeout=SECS, dsync_hashed_headers=NAMES,
    /// dsync_alt_char=CHAR.
    #[arg(short = 'o', value_name = "SETTING=VALUE", global = true)]
    options: Vec<String>,
    /// Read settings from FILE, in dovecot.conf syntax (`key = value`, `!include`, `<file`
    /// values, `userdb { }` sections); default /etc/boxsync/boxsync.conf when it exists. -o
    /// overrides it. `boxsync help settings` lists every setting.
    #[arg(short = 'c', value_name = "FILE", global = true)]
    config: Option<std::path::PathBuf>,
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
    /// The far end of a remote sync: speaks the dsync protocol on stdin/stdout for the store
    /// of mail_location; with --listen, a tcp server for `tcp:`/`tcps:` clients.
    #[command(name = "dsync-server", visible_alias = "server")]
    DsyncServer(ServerArgs),
    /// `help settings`: every setting boxsync knows, with its default.
    Help {
        /// What to explain: settings.
        #[arg(value_name = "TOPIC")]
        topic: Option<String>,
    },
}

/// How a conversation with another process goes: shared by both ends.
#[derive(Args, Debug, Clone)]
struct WireArgs {
    /// I/O timeout in seconds: a silent other side ends the sync with exit 75.
    #[arg(short = 'T', value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// Write a raw log of the conversation (both directions, passwords redacted) to FILE.
    #[arg(short = 'r', value_name = "FILE")]
    rawlog: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// The user whose store to serve (`%u` in mail_location); default $USER.
    #[arg(short = 'u', value_name = "USER")]
    user: Option<String>,
    #[command(flatten)]
    wire: WireArgs,
    /// Accepted for doveadm compatibility (notify a replicator); ignored.
    #[arg(short = 'U')]
    notify: bool,
    /// Accepted for doveadm compatibility; ignored.
    #[arg(short = 'E')]
    legacy: bool,
    /// Listen on ADDR:PORT for tcp (or, with ssl_cert and ssl_key, TLS) clients that
    /// authenticate with doveadm_password; each client's user maps to mail_location.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Option<String>,
}

#[derive(Args, Debug, Clone)]
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
    /// Sync only this mailbox (repeatable; `*` and `?` wildcards, or '\Sent' for the
    /// mailboxes of that special use). Names are written with the namespace's prefix and
    /// separator.
    #[arg(short = 'm', value_name = "MAILBOX")]
    mailbox: Vec<String>,
    /// Leave mailboxes matching MASK alone (repeatable; as for -m).
    #[arg(short = 'x', value_name = "MASK")]
    exclude: Vec<String>,
    /// Sync the namespace with this prefix (repeatable). boxsync syncs the private namespace
    /// on mail_location; another is an error (not supported yet).
    #[arg(short = 'n', value_name = "PREFIX")]
    namespace: Vec<String>,
    /// Sync all visible namespaces: the private one on mail_location; the others are
    /// reported as skipped (not supported yet).
    #[arg(short = 'N')]
    all_namespaces: bool,
    /// The user (`%u` in mail_location and dsync_remote_cmd); default $USER. With `*` or `?`,
    /// every user of the userdbs the mask matches.
    #[arg(short = 'u', value_name = "USER|MASK")]
    user: Option<String>,
    /// Every user of the userdbs (`userdb { }` in the config file).
    #[arg(short = 'A')]
    all_users: bool,
    /// Every user named in FILE, one per line.
    #[arg(short = 'F', value_name = "FILE")]
    user_file: Option<std::path::PathBuf>,
    /// The destination is the user's mail_replica (a userdb field).
    #[arg(short = 'd')]
    replica: bool,
    /// Report what the sync would change (on stdout, a line per change) and change nothing
    /// on either side: not the mail, not the index, not an IMAP account. A remote other side
    /// must be boxsync's dsync-server, which reports its own lines; with another the sync
    /// stops before anything is changed (exit 64). Not with -s.
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Purge the destination after the sync (doveadm's -P): no store of boxsync needs one,
    /// so nothing is done.
    #[arg(short = 'P')]
    purge: bool,
    /// Notify a replicator (doveadm's -U): accepted; boxsync's replicator comes later.
    #[arg(short = 'U')]
    notify: bool,
    #[command(flatten)]
    wire: WireArgs,
    /// Run the whole command on a boxsync listener (`server --listen`) at a UNIX socket PATH
    /// or HOST:PORT instead of here, authenticating with doveadm_password. Its destination
    /// must be remote (remote:, tcp:, tcps:); the listener syncs the user's own store.
    #[arg(short = 'S', value_name = "PATH|HOST:PORT")]
    server: Option<String>,
    /// Lock the user for the sync, waiting up to SECS for another sync to finish (the side
    /// whose host name sorts lower takes the lock, as in Dovecot).
    #[arg(short = 'l', value_name = "SECS", default_value_t = 0)]
    lock_timeout: u32,
    /// Copy only mail received at or after TIME: YYYY-MM-DD, 1-Mar-2024, a UNIX time, or an
    /// interval back from now ('30 days'). Mail both sides have is synced as usual.
    #[arg(short = 't', value_name = "TIME", value_parser = filters::parse_time)]
    since: Option<i64>,
    /// Copy only mail received at or before TIME (forms as for -t).
    #[arg(short = 'e', value_name = "TIME", value_parser = filters::parse_time)]
    until: Option<i64>,
    /// Copy only mail having FLAG (a system flag such as '\Seen', or a keyword); '-FLAG':
    /// only mail without it.
    #[arg(
        short = 'O',
        value_name = "FLAG",
        allow_hyphen_values = true,
        value_parser = filters::parse_flag
    )]
    flag: Option<String>,
    /// Copy only mail of at most SIZE (with CRLF line ends): 100k, 10M.
    #[arg(short = 'I', value_name = "SIZE", value_parser = filters::parse_size)]
    max_size: Option<u64>,
    /// Sync only the mailbox with this GUID; '' syncs the mailbox list only, no mail.
    #[arg(short = 'g', value_name = "GUID", value_parser = filters::parse_box_guid)]
    box_guid: Option<filters::BoxGuid>,
    /// The character that replaces what a destination cannot store in a mailbox name (a '.'
    /// in Maildir++, control characters, an IMAP server's separator); default '_', or the
    /// dsync_alt_char setting. A remote end uses the one given here.
    #[arg(short = 'C', value_name = "ALTCHAR", value_parser = parse_alt_char)]
    alt_char: Option<char>,
    /// A mailbox holding every message (a virtual '\All' mailbox, Gmail's 'All Mail', or
    /// '\All'): mail this side lacks is copied from there by GUID instead of being sent by
    /// the other side, so a message moved between mailboxes is not transferred again.
    #[arg(short = 'a', value_name = "ALLMAILBOX")]
    all_mailbox: Option<String>,
    /// The other store: a mail location (maildir:/backup/Maildir), remote:[LOGIN@]HOST,
    /// remoteprefix:[LOGIN@]HOST, tcp:HOST[:PORT], tcps:HOST[:PORT], or a command (several
    /// arguments, or one with a space or '/') that runs `dsync-server` on the other store.
    #[arg(value_name = "DESTINATION", num_args = 0.., trailing_var_arg = true)]
    destination: Vec<String>,
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
    let cli = match parse_args(std::env::args_os()) {
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
        // Log lines must not tear the -v progress bars.
        .with_writer(|| crate::progress::LogWriter)
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

/// Parses the command line. clap keeps only the `-o` given after the command when there are
/// some on both sides of it; the ones before it are put back in front (a later one wins).
fn parse_args<I, T>(args: I) -> std::result::Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let mut cli = Cli::try_parse_from(&args)?;
    let before = options_before_the_command(&args);
    if !before.is_empty() && cli.options != before {
        let after = std::mem::take(&mut cli.options);
        cli.options = before;
        cli.options.extend(after);
    }
    Ok(cli)
}

/// The `-o` values in front of the command word (the global flags are `-o`, `-c`, `-v`, `-D`,
/// bundled as `-vD` or `-oKEY=VALUE`).
fn options_before_the_command(args: &[std::ffi::OsString]) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(word) = words.next() {
        let Some(flags) = word.strip_prefix('-').filter(|f| !f.is_empty()) else {
            break;
        };
        if flags.starts_with('-') {
            // --help, --version: nothing more to collect.
            break;
        }
        for (i, c) in flags.char_indices() {
            match c {
                'v' | 'D' => continue,
                'o' | 'c' => {
                    let rest = &flags[i + 1..];
                    let value = if rest.is_empty() {
                        words.next().map(|w| w.into_owned())
                    } else {
                        Some(rest.to_owned())
                    };
                    if c == 'o'
                        && let Some(v) = value
                    {
                        out.push(v);
                    }
                    break;
                }
                _ => return out,
            }
        }
    }
    out
}

#[derive(Clone)]
struct GlobalSettings {
    mail_location: Option<String>,
    fsync: bool,
    remote_cmd: String,
    doveadm_password: Option<String>,
    doveadm_port: Option<u16>,
    ssl_client_ca_file: Option<String>,
    ssl_cert: Option<String>,
    ssl_key: Option<String>,
    max_sessions: usize,
    /// Settings for IMAP locations, kept as given.
    imapc: std::collections::BTreeMap<String, String>,
    /// `userdb { }` sections, in order.
    userdbs: Vec<crate::userdb::UserdbConfig>,
    /// `sync_parallel_users`: how many users run at once.
    parallel_users: usize,
    /// `-v`: a summary line per user.
    verbose: bool,
    /// `dsync_alt_char`; `-C` overrides it.
    alt_char: char,
    /// `namespace NAME { }` sections, in order.
    namespaces: Vec<crate::namespaces::NamespaceConfig>,
    /// The namespace a `dsync-server` names its store's mailboxes in.
    namespace: boxsync_store::namespace::Namespace,
}

impl GlobalSettings {
    fn store_settings(&self) -> StoreSettings {
        let mut s = StoreSettings::new(self.fsync);
        s.imapc = self.imapc.clone();
        s.namespace = self.namespace.clone();
        if let Some(ca) = &self.ssl_client_ca_file {
            s.imapc.insert("ssl_client_ca_file".into(), ca.clone());
        }
        s
    }
}

fn settings(options: &[String], config: Option<&crate::config::Config>) -> Result<GlobalSettings> {
    let mut g = GlobalSettings {
        mail_location: None,
        fsync: true,
        remote_cmd: dest::DEFAULT_REMOTE_CMD.to_owned(),
        doveadm_password: None,
        doveadm_port: None,
        ssl_client_ca_file: None,
        ssl_cert: None,
        ssl_key: None,
        max_sessions: 10,
        imapc: Default::default(),
        userdbs: Vec::new(),
        parallel_users: crate::users::default_parallel(),
        verbose: false,
        alt_char: boxsync_model::name::DEFAULT_ALT_CHAR,
        namespaces: Vec::new(),
        namespace: Default::default(),
    };
    if let Some(config) = config {
        for setting in &config.settings {
            apply_setting(&mut g, &setting.key, &setting.value).map_err(|e| {
                Error::Config(format!("{}:{}: {e}", setting.file.display(), setting.line))
            })?;
        }
        for section in &config.sections {
            let at = format!("{}:{}", section.file.display(), section.line);
            match section.kind.as_str() {
                "userdb" => {
                    let get = |k: &str| {
                        section
                            .settings
                            .iter()
                            .rev()
                            .find(|x| x.key == k)
                            .map_or("", |x| x.value.as_str())
                    };
                    if let Some(x) = section.settings.iter().find(|x| {
                        !["driver", "args", "default_fields", "override_fields"]
                            .contains(&x.key.as_str())
                    }) {
                        return Err(Error::Config(format!(
                            "{}:{}: unknown userdb setting {:?}",
                            x.file.display(),
                            x.line,
                            x.key
                        )));
                    }
                    let db = crate::userdb::UserdbConfig::from_settings(
                        get("driver"),
                        get("args"),
                        get("default_fields"),
                        get("override_fields"),
                    )
                    .map_err(|e| Error::Config(format!("{at}: {e}")))?;
                    g.userdbs.push(db);
                }
                "namespace" => g
                    .namespaces
                    .push(crate::namespaces::NamespaceConfig::from_section(section)?),
                other => {
                    return Err(Error::Config(format!(
                        "{at}: section {other:?} is not supported (boxsync knows userdb {{ }} \
                         and namespace {{ }})"
                    )));
                }
            }
        }
    }
    for o in options {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("-o {o}: expected SETTING=VALUE")))?;
        apply_setting(&mut g, k, v)?;
    }
    g.namespace = crate::namespaces::select(&g.namespaces, &[], false)?
        .0
        .namespace();
    Ok(g)
}

/// Every setting boxsync knows, with its default and what it does: `boxsync help settings`.
const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "mail_location",
        "",
        "the local store: maildir:PATH[:LAYOUT=fs][:INDEX=DIR], mbox:ROOT[:INBOX=PATH], sdbox:ROOT, mdbox:ROOT (read only), imapc:[INDEXDIR], imap[s]://USER@HOST[:PORT]/; %u %n %d %h ~ expand per user",
    ),
    (
        "mail_fsync",
        "optimized",
        "optimized or always: saves are flushed in batches before they are recorded; never: no flushing",
    ),
    (
        "dsync_remote_cmd",
        dest::DEFAULT_REMOTE_CMD,
        "the command that runs the far end for remote: destinations",
    ),
    (
        "doveadm_password",
        "",
        "the shared secret of tcp:/tcps: connections and of the listener",
    ),
    (
        "doveadm_port",
        "",
        "the port of tcp:/tcps: destinations without one",
    ),
    (
        "ssl_client_ca_file",
        "",
        "CA certificates trusted for tcps: and imaps",
    ),
    ("ssl_cert", "", "<PEM: the listener's certificate (tcps:)"),
    ("ssl_key", "", "<PEM: the listener's key (tcps:)"),
    (
        "server_max_sessions",
        "10",
        "how many clients the listener serves at once",
    ),
    (
        "sync_parallel_users",
        "the number of CPUs",
        "how many users -A, -F and -u MASK sync at once",
    ),
    ("imapc_host", "", "IMAP server of imapc: locations"),
    ("imapc_port", "143 or 993", "its port"),
    ("imapc_user", "", "the login (default the user)"),
    (
        "imapc_master_user",
        "",
        "a master user to log in as the user",
    ),
    ("imapc_password", "", "the password"),
    (
        "imapc_password_file",
        "",
        "a file holding the password (read at every login)",
    ),
    (
        "imapc_password_command",
        "",
        "a command printing the password or token (run at every login)",
    ),
    ("imapc_ssl", "no", "no, imaps or starttls"),
    ("imapc_ssl_verify", "yes", "verify the server's certificate"),
    (
        "imapc_sasl_mechanisms",
        "",
        "PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER (default LOGIN)",
    ),
    (
        "imapc_max_connections",
        "2",
        "connections reading changed mailboxes at once",
    ),
    (
        "imapc_max_bytes_per_second",
        "",
        "a bandwidth limit (SIZE: 100k, 10M)",
    ),
    (
        "imapc_cmd_timeout",
        "120",
        "seconds before a silent server fails the sync (exit 75)",
    ),
    (
        "dsync_hashed_headers",
        "Date Message-ID",
        "headers whose hash names a message without a GUID",
    ),
    (
        "dsync_alt_char",
        "_",
        "replaces what a store cannot hold in a mailbox name received from the other side (control characters, '.' in Maildir++, an IMAP server's separator); -C overrides it",
    ),
];

/// `userdb { }` settings, for `boxsync help settings`.
const USERDB_SETTINGS: &[(&str, &str)] = &[
    (
        "driver",
        "passwd-file (Dovecot's user:password:uid:gid:gecos:home:shell:extra format) or passwd (system users)",
    ),
    (
        "args",
        "passwd-file: [username_format=%u] PATH (PATH may hold %d, %n, %u)",
    ),
    (
        "default_fields",
        "fields every user gets unless it has its own: mail=maildir:%h/Maildir",
    ),
    ("override_fields", "fields every user gets, over its own"),
];

fn help_settings(out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "Settings, in the config file (-c FILE, default /etc/boxsync/boxsync.conf) or -o KEY=VALUE:\n"
    );
    for (k, default, what) in SETTINGS {
        let _ = writeln!(out, "  {k}");
        let _ = writeln!(out, "      {what}");
        if !default.is_empty() {
            let _ = writeln!(out, "      default: {default}");
        }
    }
    let _ = writeln!(
        out,
        "\nIn userdb {{ }} sections (several: tried in order):\n"
    );
    for (k, what) in USERDB_SETTINGS {
        let _ = writeln!(out, "  {k}\n      {what}");
    }
    let _ = writeln!(
        out,
        "\nUser fields boxsync reads: home, mail (the user's mail_location), mail_replica (-d)."
    );
    let _ = writeln!(
        out,
        "\nIn namespace NAME {{ }} sections (dovecot.conf's): type, prefix, separator, inbox, \
         location, hidden, disabled, alias_for (list, subscriptions, order, ignore_on_failure \
         are accepted), and mailbox NAME {{ special_use = \\Sent }} (auto, autoexpunge, \
         comment accepted). boxsync syncs the private namespace on mail_location: its prefix \
         names every mailbox but INBOX, -m/-x masks use its separator, and '\\Sent'-style \
         masks its special_use (without mailbox sections, Dovecot's shipped list)."
    );
}

fn apply_setting(g: &mut GlobalSettings, k: &str, v: &str) -> Result<()> {
    {
        let number = |what: &str| {
            v.parse::<u64>()
                .map_err(|_| Error::Config(format!("{what}: {v:?} is not a number")))
        };
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
            "dsync_remote_cmd" => g.remote_cmd = v.to_owned(),
            "doveadm_password" => g.doveadm_password = Some(v.to_owned()),
            "doveadm_port" => {
                g.doveadm_port = Some(
                    u16::try_from(number(k)?)
                        .map_err(|_| Error::Config(format!("doveadm_port {v} is too large")))?,
                )
            }
            "ssl_client_ca_file" => g.ssl_client_ca_file = Some(v.to_owned()),
            "ssl_cert" => g.ssl_cert = Some(v.to_owned()),
            "ssl_key" => g.ssl_key = Some(v.to_owned()),
            "server_max_sessions" => g.max_sessions = number(k)?.max(1) as usize,
            "sync_parallel_users" => g.parallel_users = number(k)?.max(1) as usize,
            "dsync_alt_char" => {
                g.alt_char = boxsync_model::name::parse_alt_char(v)
                    .map_err(|e| Error::Config(format!("dsync_alt_char: {e}")))?
            }
            k if stores::is_imapc_setting(k) => {
                g.imapc.insert(k.to_owned(), v.to_owned());
            }
            _ => {
                return Err(Error::Config(format!(
                    "unknown setting {k:?} (boxsync help settings lists them)"
                )));
            }
        }
    }
    Ok(())
}

/// Where the config file is when -c does not say.
const DEFAULT_CONFIG: &str = "/etc/boxsync/boxsync.conf";

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Help { topic } = &cli.command {
        return match topic.as_deref() {
            Some("settings") => {
                help_settings(&mut std::io::stdout());
                Ok(ExitCode::Ok)
            }
            other => Err(Error::Usage(format!(
                "help {}: unknown topic (try: boxsync --help, boxsync help settings)",
                other.unwrap_or("")
            ))),
        };
    }
    let config_path = cli.config.clone().or_else(|| {
        let p = std::path::PathBuf::from(DEFAULT_CONFIG);
        p.exists().then_some(p)
    });
    let config = match &config_path {
        Some(p) => Some(crate::config::parse_file(p).map_err(|e| Error::Config(e.to_string()))?),
        None => None,
    };
    let mut global = settings(&cli.options, config.as_ref())?;
    global.verbose = cli.verbose || cli.debug;
    match cli.command {
        Command::Help { .. } => unreachable!("answered above"),
        Command::Sync(a) => sync(
            global,
            a.common,
            false,
            a.one_way,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        ),
        Command::Backup(a) => sync(
            global,
            a.common,
            true,
            false,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        ),
        Command::DsyncServer(a) => server(global, a),
    }
}

/// A byte count as a person reads it: `812 B`, `12.3 KiB`, `1.0 GiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `%u`: the -u user, else the login name, as doveadm takes it.
fn user_of(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".to_owned())
}

fn wire_of(timeout: u64, rawlog: Option<&std::path::Path>) -> Result<remote::Wire> {
    let rawlog = match rawlog {
        Some(p) => Some(
            RawLog::create(p)
                .map_err(|e| Error::io(format!("creating raw log {}", p.display()), e))?,
        ),
        None => None,
    };
    Ok(remote::Wire {
        timeout: std::time::Duration::from_secs(timeout.max(1)),
        rawlog,
    })
}

fn server(global: GlobalSettings, args: ServerArgs) -> Result<ExitCode> {
    let wire = wire_of(args.wire.timeout, args.wire.rawlog.as_deref())?;
    let _ = (args.notify, args.legacy);
    // Like Dovecot's autodetection, a server told no mail_location serves ~/Maildir.
    let template = global
        .mail_location
        .clone()
        .unwrap_or_else(|| "maildir:~/Maildir".to_owned());
    match args.listen {
        None => {
            let user = user_of(args.user);
            let location = remote::expand_location(&template, &user)?;
            remote::dsync_server_stdio(&location, &global.store_settings(), &wire)
        }
        Some(listen) => {
            let password = global.doveadm_password.clone().ok_or_else(|| {
                Error::Config("server --listen needs -o doveadm_password=SECRET".into())
            })?;
            let tls = match (&global.ssl_cert, &global.ssl_key) {
                (Some(c), Some(k)) => Some(net::server_config(c, k)?),
                (None, None) => None,
                _ => {
                    return Err(Error::Config("TLS needs both ssl_cert and ssl_key".into()));
                }
            };
            let options = server::ListenOptions {
                listen,
                tls,
                max_sessions: global.max_sessions,
                handshake_timeout: std::time::Duration::from_secs(30),
                shutdown_grace: std::time::Duration::from_secs(60),
            };
            let store_settings = global.store_settings();
            let command_template = template.clone();
            let runner: Box<remote::CommandRunner> =
                Box::new(move |user, command, args, out, err| {
                    serve_command(&global, &command_template, user, command, args, out, err)
                });
            server::serve(options, move |conn, peer| {
                remote::listener_session(
                    conn,
                    peer,
                    &template,
                    &password,
                    &store_settings,
                    &wire,
                    &*runner,
                )
            })?;
            Ok(ExitCode::Ok)
        }
    }
}

/// Runs `sync`/`backup` for the users selected (`-u`, `-A`, `-F`); the state (with -s, one
/// user only) goes to `out`, errors and warnings to `err`.
fn sync(
    global: GlobalSettings,
    common: Common,
    backup: bool,
    one_way: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode> {
    let selection = users::Selection::from_flags(
        common.user.as_deref(),
        common.all_users,
        common.user_file.clone(),
    )?;
    if !selection.is_many() {
        return sync_user(global, common, backup, one_way, out, err);
    }
    if common.state.is_some() || common.server.is_some() {
        return Err(Error::Usage(
            "-s and -S take one user, not -A, -F or -u MASK".into(),
        ));
    }
    let names = users::names(&selection, &global.userdbs)?;
    if names.is_empty() {
        let _ = writeln!(err, "boxsync: Warning: no user selected");
        return Ok(ExitCode::Ok);
    }
    let global = &global;
    let common = &common;
    Ok(users::run_all(
        &names,
        global.parallel_users,
        |name, buf| {
            let mut one = common.clone();
            one.user = Some(name.to_owned());
            one.all_users = false;
            one.user_file = None;
            // A user's report (--dry-run) follows its messages.
            let mut report = Vec::new();
            let code = sync_user(global.clone(), one, backup, one_way, &mut report, buf);
            buf.extend_from_slice(&report);
            code
        },
        err,
    ))
}

/// `sync`/`backup` for one user.
fn sync_user(
    global: GlobalSettings,
    mut common: Common,
    backup: bool,
    one_way: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode> {
    if let Some(target) = &common.server {
        return run_on_server(&global, &common, target, backup, one_way, out);
    }
    let started = std::time::Instant::now();
    let user = user_of(common.user.clone());
    let account = users::resolve(&user, &global.userdbs)?;
    if common.replica {
        let replica = account.mail_replica.clone().ok_or_else(|| {
            Error::Config(format!("-d: user {user} has no mail_replica in the userdb"))
        })?;
        common.destination = vec![replica];
    } else if common.destination.is_empty() {
        return Err(Error::Usage(
            "a DESTINATION is required (or -d for the user's mail_replica)".into(),
        ));
    }
    let local_text = account
        .mail
        .clone()
        .or_else(|| global.mail_location.clone())
        .ok_or_else(|| {
            Error::Config("mail_location is not set (use -o mail_location=maildir:PATH)".into())
        })?;
    let local_text = users::expand_location(&local_text, &account)?;
    let store_settings = global.store_settings();
    // Parsed before anything is opened, so that a bad location never creates the other store.
    let local_loc = MailLocation::parse(&local_text, &store_settings)?;
    let destination = dest::parse(
        &common.destination,
        &global.remote_cmd,
        &user,
        global.doveadm_port,
    )?;
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
    let (namespace, skipped) =
        crate::namespaces::select(&global.namespaces, &common.namespace, common.all_namespaces)?;
    for w in skipped {
        let _ = writeln!(err, "boxsync: Warning: {w}");
    }
    let ns = namespace.namespace();
    let mailboxes = namespace.masks(&common.mailbox);
    if !common.mailbox.is_empty() && mailboxes.is_empty() {
        // -m named only special uses no mailbox has: nothing is selected, as in doveadm.
        return Ok(ExitCode::Ok);
    }
    let filter = filter_of(&common)?;
    // -v: live progress, taken off the screen before the summary line.
    let meter = global.verbose.then(|| crate::progress::Meter::new(&user));
    let settings = Settings {
        mode,
        sync_type,
        state: saved_state,
        mailboxes,
        excludes: namespace.masks(&common.exclude),
        lock_timeout: common.lock_timeout,
        filter,
        progress: meter.as_ref().map(|m| m.handle()),
        alt_char: common.alt_char.unwrap_or(global.alt_char),
        virtual_all_box: common
            .all_mailbox
            .as_ref()
            .and_then(|a| namespace.masks(std::slice::from_ref(a)).into_iter().next()),
    };
    let wire = wire_of(common.wire.timeout, common.wire.rawlog.as_deref())?;
    let mut code = ExitCode::Ok;
    let report_scan = |opened: &stores::Opened, code: &mut ExitCode, err: &mut dyn Write| {
        for (name, e, exit) in &opened.scan_errors {
            let _ = writeln!(
                err,
                "boxsync: Error: {}: mailbox {name}: {e}",
                opened.store.describe()
            );
            *code = code.worst(*exit);
        }
    };
    // The tests' switch: a local sync through the wire codec (see remote::sync_over_socketpair).
    let wire_local = std::env::var_os("BOXSYNC_WIRE_LOCAL").is_some_and(|v| v == "1");
    // In one process the slave's errors are already in the outcome; otherwise its finish
    // record is all we have.
    let slave_merged = matches!(destination, dest::Destination::Local(_)) && !wire_local;
    // A side the sync writes to must be one boxsync can write (not a dbox).
    if !must_exist(Role::Master) {
        local_loc.check_writable()?;
    }
    if common.dry_run && common.state.is_some() {
        return Err(Error::Usage(
            "--dry-run has no new state to print: leave out -s".into(),
        ));
    }
    // --dry-run: what each store would change, printed after the sync. A far side's lines
    // come back in its finish record (see boxsync_transport::dry_run).
    let mut dry_logs: Vec<(String, DryRunLog)> = Vec::new();
    let mut far_report: Option<DryRunReport> = None;
    let outcome = match destination {
        dest::Destination::Local(text) => {
            let dest_text = users::expand_location(&text, &account)?;
            let dest_loc = MailLocation::parse(&dest_text, &store_settings)?;
            if local_loc.identity() == dest_loc.identity() {
                return Err(Error::Usage(
                    "source and destination are the same mail location".into(),
                ));
            }
            if !must_exist(Role::Slave) {
                dest_loc.check_writable()?;
            }
            // The source first: when it is missing, the destination must not have been created.
            let (local, dest) = if common.dry_run {
                let (local, local_log) = local_loc.open_dry_run(!must_exist(Role::Master))?;
                let (dest, dest_log) = dest_loc.open_dry_run(!must_exist(Role::Slave))?;
                dry_logs.push((local.store.describe(), local_log));
                dry_logs.push((dest.store.describe(), dest_log));
                (local, dest)
            } else if must_exist(Role::Slave) {
                let (dest, local) = stores::open_both(&dest_loc, false, &local_loc, global.fsync)?;
                (local, dest)
            } else {
                let create = !must_exist(Role::Master);
                stores::open_both(&local_loc, create, &dest_loc, global.fsync)?
            };
            report_scan(&local, &mut code, err);
            report_scan(&dest, &mut code, err);
            let (mut local, mut dest) = (local.in_namespace(&ns), dest.in_namespace(&ns));
            let outcome = if wire_local {
                boxsync_transport::sync_over_socketpair(
                    &mut *local.store,
                    &mut *dest.store,
                    settings,
                    wire.options(&local.spool),
                    wire.options(&dest.spool),
                )?
            } else {
                boxsync_brain::sync_local(&mut *local.store, &mut *dest.store, settings)?
            };
            stores::close_both(local, dest);
            outcome
        }
        dest::Destination::Command { argv, prefix_user } => {
            let local = open_local(
                &local_loc,
                !must_exist(Role::Master),
                global.fsync,
                common.dry_run,
                &mut dry_logs,
            )?;
            report_scan(&local, &mut code, err);
            let mut local = local.in_namespace(&ns);
            tracing::debug!("running {argv:?}");
            let (link, process) = command::spawn(
                &argv,
                prefix_user.as_deref(),
                format!("boxsync: dsync-remote({user})"),
                wire.options(&local.spool),
            )?;
            let outcome = master_over(
                &mut *local.store,
                link,
                settings,
                common.dry_run,
                &mut far_report,
            );
            match outcome {
                Ok(o) => {
                    match process.wait(std::time::Duration::from_secs(30)) {
                        Ok(Some(0)) => {}
                        Ok(Some(c)) => tracing::debug!("the remote command exited with {c}"),
                        Ok(None) => tracing::debug!("the remote command was killed by a signal"),
                        Err(e) => tracing::warn!("{e}"),
                    }
                    o
                }
                Err(e) => {
                    process.kill();
                    return Err(e);
                }
            }
        }
        dest::Destination::Tcp { host, port, tls } => {
            let local = open_local(
                &local_loc,
                !must_exist(Role::Master),
                global.fsync,
                common.dry_run,
                &mut dry_logs,
            )?;
            report_scan(&local, &mut code, err);
            let mut local = local.in_namespace(&ns);
            let ca = global
                .ssl_client_ca_file
                .as_deref()
                .map(std::path::Path::new);
            let mut conn = net::connect(&host, port, tls.then_some(ca), wire.timeout)?;
            conn.set_read_timeout(Some(wire.timeout));
            doveadm::client_handshake(
                &mut conn,
                &user,
                global.doveadm_password.as_deref(),
                wire.rawlog.as_ref(),
            )?;
            conn.set_read_timeout(None);
            let link = remote::tcp_link(conn, wire.options(&local.spool))?;
            master_over(
                &mut *local.store,
                link,
                settings,
                common.dry_run,
                &mut far_report,
            )?
        }
    };
    drop(meter);
    let far_lines = far_report.map(|r| (r.store, r.lines));
    for (store, lines) in dry_logs
        .iter()
        .map(|(store, log)| (store.clone(), log.lines()))
        .chain(far_lines)
    {
        if lines.is_empty() {
            let _ = writeln!(out, "dry run: {store}: nothing would change");
        }
        for line in lines {
            let _ = writeln!(out, "dry run: {store}: {line}");
        }
    }
    for e in &outcome.errors {
        let _ = writeln!(err, "boxsync: Error: {e}");
    }
    if let Some(e) = &outcome.remote_error
        && !slave_merged
    {
        let _ = writeln!(err, "boxsync: Error: {e}");
    }
    if global.verbose {
        let _ = writeln!(
            err,
            "boxsync: {user}: {} mailboxes, {} messages copied ({}), {} expunged, {} re-flagged, {:.1} s",
            outcome.state.len(),
            outcome.saved + outcome.sent,
            human_bytes(outcome.bytes),
            outcome.expunged,
            outcome.flag_changes,
            started.elapsed().as_secs_f64()
        );
    }
    code = code.worst(outcome.exit_code());
    if code == ExitCode::Changed {
        let _ = writeln!(
            err,
            "boxsync: Warning: Mailbox changes caused a desync. You may want to run boxsync again."
        );
    }
    if common.state.is_some() {
        let text = if code == ExitCode::Ok || code == ExitCode::Changed {
            state::encode(&outcome.state)
        } else {
            String::new()
        };
        let _ = writeln!(out, "{text}");
    }
    Ok(code)
}

/// The local store of a remote sync: for a dry run opened in its no-write mode, its log added
/// to `dry_logs`.
fn open_local(
    location: &MailLocation,
    create: bool,
    fsync: bool,
    dry_run: bool,
    dry_logs: &mut Vec<(String, DryRunLog)>,
) -> Result<stores::Opened> {
    if !dry_run {
        return location.open(create, fsync);
    }
    let (opened, log) = location.open_dry_run(create)?;
    dry_logs.push((opened.store.describe(), log));
    Ok(opened)
}

/// Runs the master over a link to a far side; for a dry run, one that must confirm it (or the
/// sync stops at the handshakes), whose report goes to `far`.
fn master_over(
    store: &mut dyn boxsync_store::Store,
    link: boxsync_transport::StreamLink,
    settings: Settings,
    dry_run: bool,
    far: &mut Option<DryRunReport>,
) -> Result<boxsync_brain::Outcome> {
    if !dry_run {
        return boxsync_transport::run_master(store, link, settings);
    }
    let (outcome, report) = boxsync_transport::dry_run::run_master(store, link, settings)?;
    *far = report;
    Ok(outcome)
}

/// The `sync`/`backup` command line to run on a listener for `-S`: the parsed options,
/// without `-S`, `-u` (the handshake names the user) and `-r` (a path on this machine).
/// `-g`, `-t`, `-e`, `-I`, `-O` as the brains take them.
/// `-C`: one character that can stand in a mailbox name (clap reports the error, exit 64).
fn parse_alt_char(s: &str) -> std::result::Result<char, String> {
    boxsync_model::name::parse_alt_char(s).map_err(|e| e.to_string())
}

fn filter_of(common: &Common) -> Result<Filter> {
    let (since, until) = (common.since.unwrap_or(0), common.until.unwrap_or(0));
    if since > 0 && until > 0 && since > until {
        return Err(Error::Usage(
            "-t: start date is later than -e end date".into(),
        ));
    }
    Ok(Filter {
        box_guid: match common.box_guid {
            Some(filters::BoxGuid::Guid(g)) => Some(g),
            _ => None,
        },
        no_mail_sync: common.box_guid == Some(filters::BoxGuid::ListOnly),
        since,
        until,
        max_size: common.max_size.unwrap_or(0),
        flag: common.flag.clone(),
    })
}

fn args_for_server(common: &Common, backup: bool, one_way: bool) -> Vec<String> {
    let mut args = vec![if backup { "backup" } else { "sync" }.to_owned()];
    for (on, flag) in [
        (one_way, "-1"),
        (common.full, "-f"),
        (common.reverse, "-R"),
        (common.dry_run, "--dry-run"),
    ] {
        if on {
            args.push(flag.to_owned());
        }
    }
    let mut option = |flag: &str, value: &str| {
        args.push(flag.to_owned());
        args.push(value.to_owned());
    };
    if let Some(state) = &common.state {
        option("-s", state);
    }
    for m in &common.mailbox {
        option("-m", m);
    }
    for x in &common.exclude {
        option("-x", x);
    }
    option("-T", &common.wire.timeout.to_string());
    if common.lock_timeout > 0 {
        option("-l", &common.lock_timeout.to_string());
    }
    // Resolved values (an interval is a time by now), in forms the parsers read back.
    if let Some(t) = common.since {
        option("-t", &t.to_string());
    }
    if let Some(t) = common.until {
        option("-e", &t.to_string());
    }
    if let Some(f) = &common.flag {
        option("-O", f);
    }
    if let Some(size) = common.max_size {
        option("-I", &size.to_string());
    }
    if let Some(g) = common.box_guid {
        option("-g", &g.to_string());
    }
    if let Some(a) = &common.all_mailbox {
        option("-a", a);
    }
    if let Some(c) = common.alt_char {
        option("-C", &c.to_string());
    }
    args.extend(common.destination.iter().cloned());
    args
}

/// `-S`: runs this command on a boxsync listener; its output comes back on channel 0
/// followed by `+` or `-<exit code>`, its log lines on channel `L`.
fn run_on_server(
    global: &GlobalSettings,
    common: &Common,
    target: &str,
    backup: bool,
    one_way: bool,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let user = user_of(common.user.clone());
    let timeout = std::time::Duration::from_secs(common.wire.timeout.max(1));
    let mut conn = if target.contains('/') {
        std::os::unix::net::UnixStream::connect(target)
            .map(net::Conn::Unix)
            .map_err(|e| Error::temp(format!("cannot connect to {target}: {e}")))?
    } else {
        let (host, port) = target
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| Error::Usage(format!("-S {target}: expected PATH or HOST:PORT")))?;
        net::connect(host, port, None, timeout)?
    };
    conn.set_read_timeout(Some(timeout));
    // -r logs this conversation with the listener.
    let wire = wire_of(common.wire.timeout, common.wire.rawlog.as_deref())?;
    doveadm::client_command(
        &mut conn,
        &user,
        global.doveadm_password.as_deref(),
        wire.rawlog.as_ref(),
        &args_for_server(common, backup, one_way),
    )?;
    let mut reader = doveadm::MultiplexReader::new(conn, String::new());
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut data)
        .map_err(|e| Error::temp(format!("reading the result from {target}: {e}")))?;
    let text = data.strip_suffix(b"\n").unwrap_or(&data);
    let (body, status) = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => (&data[..i], &text[i + 1..]),
        None => (&data[..0], text),
    };
    let code = match status {
        b"+" => ExitCode::Ok,
        s if s.starts_with(b"-") => std::str::from_utf8(&s[1..])
            .ok()
            .and_then(|n| n.parse().ok())
            .map_or(ExitCode::TempFail, ExitCode::from_code),
        _ => {
            return Err(Error::temp(format!(
                "{target} ended without a result (the connection was cut?)"
            )));
        }
    };
    let _ = out.write_all(body);
    if !body.is_empty() && !body.ends_with(b"\n") {
        let _ = out.write_all(b"\n");
    }
    Ok(code)
}

/// A command a client of `server --listen` asked to run here with `-S`: only syncs of the
/// user's own store with a remote other side, so that no client reaches beyond that store.
fn serve_command(
    global: &GlobalSettings,
    template: &str,
    user: &str,
    command: &str,
    args: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> ExitCode {
    let result = (|| {
        let argv = std::iter::once("boxsync".to_owned())
            .chain(std::iter::once(command.to_owned()))
            .chain(args.iter().cloned());
        let cli = Cli::try_parse_from(argv).map_err(|e| Error::Usage(e.to_string()))?;
        let (common, backup, one_way) = match cli.command {
            Command::Sync(a) => (a.common, false, a.one_way),
            Command::Backup(a) => (a.common, true, false),
            Command::DsyncServer(_) | Command::Help { .. } => {
                return Err(Error::Usage(format!("{command} cannot be run with -S")));
            }
        };
        // The listener serves the user that authenticated, never a selection of others.
        if common.all_users || common.user_file.is_some() || common.user.is_some() {
            return Err(Error::Usage(
                "-u, -A and -F cannot be passed on to the listener".into(),
            ));
        }
        if common.server.is_some() || common.wire.rawlog.is_some() {
            return Err(Error::Usage(
                "-S and -r cannot be passed on to the listener".into(),
            ));
        }
        let parsed = dest::parse(
            &common.destination,
            &global.remote_cmd,
            user,
            global.doveadm_port,
        )?;
        let remote_only = matches!(parsed, dest::Destination::Tcp { .. })
            || matches!(common.destination.as_slice(),
                [d] if d.starts_with("remote:") || d.starts_with("remoteprefix:"));
        if !remote_only {
            return Err(Error::Usage(
                "with -S the destination must be remote:, remoteprefix:, tcp: or tcps: \
                 (the server syncs only the user's own store)"
                    .into(),
            ));
        }
        let settings = GlobalSettings {
            mail_location: Some(remote::expand_location(template, user)?),
            ..global.clone()
        };
        let mut common = common;
        common.user = Some(user.to_owned());
        sync(settings, common, backup, one_way, out, err)
    })();
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "boxsync: Error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("boxsync").chain(args.iter().copied()))
    }

    #[test]
    fn help_settings_names_every_setting_the_imap_stores_accept() {
        // Two lists that must agree: the one `-o` checks and the one `help settings` prints.
        for k in stores::IMAPC_SETTINGS {
            assert!(
                SETTINGS.iter().any(|(n, _, _)| n == k),
                "{k} is not in SETTINGS"
            );
        }
    }

    #[test]
    fn byte_counts_read_as_a_person_reads_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
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
    fn dash_capital_c_takes_one_usable_character_and_passes_it_on() {
        for (args, want) in [
            (&["backup", "-C", "+", "maildir:/b"][..], Some('+')),
            (&["sync", "-C+", "maildir:/b"], Some('+')),
            (&["sync", "-1C", "ø", "maildir:/b"], Some('ø')),
            (&["sync", "maildir:/b"], None),
        ] {
            let c = parse(args).unwrap();
            let (Command::Sync(SyncArgs { common, .. }) | Command::Backup(BackupArgs { common })) =
                c.command
            else {
                panic!("{args:?}")
            };
            assert_eq!(common.alt_char, want, "{args:?}");
            let passed = args_for_server(&common, false, false);
            let back =
                Cli::try_parse_from(std::iter::once("boxsync".to_owned()).chain(passed)).unwrap();
            let Command::Sync(b) = back.command else {
                panic!()
            };
            assert_eq!(b.common.alt_char, want, "{args:?} passed to a listener");
        }
        for bad in ["", "ab", "/", ".", "\n"] {
            let e = parse(&["backup", "-C", bad, "maildir:/b"]).unwrap_err();
            assert!(e.to_string().contains("alt char"), "-C {bad:?}: {e}");
        }
        // The setting, and -C over it.
        let g = settings(&["dsync_alt_char=~".into()], None).unwrap();
        assert_eq!(g.alt_char, '~');
        assert_eq!(
            settings(&[], None).unwrap().alt_char,
            boxsync_model::name::DEFAULT_ALT_CHAR
        );
        assert!(matches!(
            settings(&["dsync_alt_char=".into()], None),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn dash_capital_s_passes_on_the_parsed_options_but_not_local_ones() {
        let c = parse(&[
            "sync",
            "-1",
            "-f",
            "-s",
            "",
            "-m",
            "INBOX",
            "-x",
            "Trash",
            "-S",
            "/run/b.sock",
            "-u",
            "alice",
            "-r",
            "/tmp/raw",
            "-l",
            "5",
            "tcp:h:1",
        ])
        .unwrap();
        let Command::Sync(a) = c.command else {
            panic!()
        };
        let args = args_for_server(&a.common, false, a.one_way);
        assert_eq!(
            args,
            [
                "sync", "-1", "-f", "-s", "", "-m", "INBOX", "-x", "Trash", "-T", "600", "-l", "5",
                "tcp:h:1"
            ]
        );
        // The listener parses it back to the same options.
        let back = Cli::try_parse_from(std::iter::once("boxsync".to_owned()).chain(args)).unwrap();
        let Command::Sync(b) = back.command else {
            panic!()
        };
        assert!(b.one_way && b.common.full && b.common.server.is_none());
        assert_eq!(b.common.state.as_deref(), Some(""));
        assert_eq!(b.common.destination, ["tcp:h:1"]);

        // A dry run stays one on the listener (regression: it ran a real sync there).
        let c = parse(&["backup", "--dry-run", "-S", "/run/b.sock", "tcp:h:1"]).unwrap();
        let Command::Backup(a) = c.command else {
            panic!()
        };
        let args = args_for_server(&a.common, true, false);
        assert_eq!(args, ["backup", "--dry-run", "-T", "600", "tcp:h:1"]);
        let back = Cli::try_parse_from(std::iter::once("boxsync".to_owned()).chain(args)).unwrap();
        let Command::Backup(b) = back.command else {
            panic!()
        };
        assert!(b.common.dry_run);
    }

    #[test]
    fn filter_flags_parse_and_pass_on_to_a_listener() {
        let g = "0123456789abcdef0123456789abcdef";
        let c = parse(&[
            "backup",
            "-t",
            "2 days",
            "-e",
            "1-Mar-2030",
            "-O",
            "-\\Seen",
            "-I",
            "2k",
            "-g",
            g,
            "tcp:h:1",
        ])
        .unwrap();
        let Command::Backup(a) = c.command else {
            panic!()
        };
        let f = filter_of(&a.common).unwrap();
        assert!(f.since > 0 && f.until == 1_898_553_600);
        assert_eq!(f.flag.as_deref(), Some("-\\Seen"));
        assert_eq!(f.max_size, 2048);
        assert_eq!(f.box_guid.map(|g| g.to_string()).as_deref(), Some(g));
        assert!(!f.no_mail_sync);
        let args = args_for_server(&a.common, true, false);
        let back = Cli::try_parse_from(std::iter::once("boxsync".to_owned()).chain(args)).unwrap();
        let Command::Backup(b) = back.command else {
            panic!()
        };
        assert_eq!(filter_of(&b.common).unwrap(), f);

        let c = parse(&["sync", "-g", "", "maildir:/b"]).unwrap();
        let Command::Sync(a) = c.command else {
            panic!()
        };
        assert!(filter_of(&a.common).unwrap().no_mail_sync);
        let args = args_for_server(&a.common, false, false);
        assert!(args.windows(2).any(|w| w == ["-g", ""]));

        for bad in [
            &["sync", "-t", "someday", "maildir:/b"][..],
            &["sync", "-I", "2x", "maildir:/b"],
            &["sync", "-O", "\\Bogus", "maildir:/b"],
            &["sync", "-g", "INBOX", "maildir:/b"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let c = parse(&["sync", "-t", "2030-01-02", "-e", "2030-01-01", "maildir:/b"]).unwrap();
        let Command::Sync(a) = c.command else {
            panic!()
        };
        assert!(matches!(filter_of(&a.common), Err(Error::Usage(_))));
    }

    #[test]
    fn settings_are_checked() {
        assert!(settings(&["mail_fsync=never".into()], None).is_ok_and(|g| !g.fsync));
        assert!(matches!(
            settings(&["bogus=1".into()], None),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            settings(&["noequals".into()], None),
            Err(Error::Usage(_))
        ));
    }
}

/// One test per flag, in the order the flags are defined above (ripgrep's rule: a flag is not
/// done until a test parses it). What each flag then does is tested end to end in `tests/`.
#[cfg(test)]
mod flag_tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        match parse_args(std::iter::once("boxsync").chain(args.iter().copied())) {
            Ok(c) => c,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    /// `backup FLAGS maildir:/b`, parsed.
    fn backup(flags: &[&str]) -> Common {
        let mut args = vec!["backup"];
        args.extend_from_slice(flags);
        args.push("maildir:/b");
        match parse(&args).command {
            Command::Backup(b) => b.common,
            _ => panic!("not a backup"),
        }
    }

    fn server(flags: &[&str]) -> ServerArgs {
        let mut args = vec!["dsync-server"];
        args.extend_from_slice(flags);
        match parse(&args).command {
            Command::DsyncServer(s) => s,
            _ => panic!("not a server"),
        }
    }

    fn refused(args: &[&str]) -> bool {
        Cli::try_parse_from(std::iter::once("boxsync").chain(args.iter().copied())).is_err()
    }

    #[test]
    fn dash_o_sets_settings_and_repeats() {
        let c = parse(&["-o", "a=1", "backup", "-o", "b=2", "maildir:/b"]);
        assert_eq!(c.options, ["a=1", "b=2"]);
        let c = parse(&[
            "-vo",
            "a=1",
            "-oc=3",
            "-c",
            "f",
            "backup",
            "-o",
            "b=2",
            "maildir:/b",
        ]);
        assert_eq!(c.options, ["a=1", "c=3", "b=2"]);
        let c = parse(&["-o", "a=1", "-o", "b=2", "backup", "maildir:/b"]);
        assert_eq!(c.options, ["a=1", "b=2"]);
        // A command destination's own -o is not boxsync's.
        let c = parse(&[
            "-o",
            "a=1",
            "backup",
            "ssh",
            "-o",
            "Port=2",
            "h",
            "dsync-server",
        ]);
        assert_eq!(c.options, ["a=1"]);
    }

    #[test]
    fn dash_c_names_the_config_file() {
        let c = parse(&["-c", "/etc/x.conf", "backup", "maildir:/b"]);
        assert_eq!(
            c.config.as_deref(),
            Some(std::path::Path::new("/etc/x.conf"))
        );
    }

    #[test]
    fn dash_v_and_dash_capital_d_before_or_after_the_command() {
        let c = parse(&["-v", "backup", "maildir:/b"]);
        assert!(c.verbose && !c.debug);
        let c = parse(&["backup", "-D", "maildir:/b"]);
        assert!(c.debug && !c.verbose);
    }

    #[test]
    fn dash_f_full_sync() {
        assert!(backup(&["-f"]).full);
        assert!(!backup(&[]).full);
    }

    #[test]
    fn dash_capital_r_reverses() {
        assert!(backup(&["-R"]).reverse);
    }

    #[test]
    fn dash_s_takes_a_state_even_an_empty_one() {
        assert_eq!(backup(&["-s", ""]).state.as_deref(), Some(""));
        assert_eq!(backup(&["-s", "AQID"]).state.as_deref(), Some("AQID"));
        assert!(refused(&["backup", "-s"]));
    }

    #[test]
    fn dash_m_repeats() {
        assert_eq!(
            backup(&["-m", "INBOX", "-m", "\\Sent"]).mailbox,
            ["INBOX", "\\Sent"]
        );
    }

    #[test]
    fn dash_x_repeats() {
        assert_eq!(
            backup(&["-x", "Trash", "-x", "Lists/*"]).exclude,
            ["Trash", "Lists/*"]
        );
    }

    #[test]
    fn dash_n_repeats_and_dash_capital_n_is_a_switch() {
        assert_eq!(backup(&["-n", "", "-n", "Mail."]).namespace, ["", "Mail."]);
        assert!(backup(&["-N"]).all_namespaces);
    }

    #[test]
    fn dash_u_takes_a_user_or_a_mask() {
        assert_eq!(
            backup(&["-u", "*@example.org"]).user.as_deref(),
            Some("*@example.org")
        );
    }

    #[test]
    fn dash_capital_a_all_users() {
        assert!(backup(&["-A"]).all_users);
    }

    #[test]
    fn dash_capital_f_names_a_user_file() {
        let c = backup(&["-F", "users.txt"]);
        assert_eq!(
            c.user_file.as_deref(),
            Some(std::path::Path::new("users.txt"))
        );
    }

    #[test]
    fn dash_d_takes_the_mail_replica() {
        let c = match parse(&["sync", "-u", "alice", "-d"]).command {
            Command::Sync(s) => s.common,
            _ => panic!(),
        };
        assert!(c.replica && c.destination.is_empty());
    }

    #[test]
    fn dash_dash_dry_run() {
        assert!(backup(&["--dry-run"]).dry_run);
    }

    #[test]
    fn dash_capital_p_and_dash_capital_u_are_accepted() {
        let c = backup(&["-P", "-U"]);
        assert!(c.purge && c.notify);
    }

    #[test]
    fn dash_capital_t_and_dash_r_shape_the_wire() {
        let c = backup(&["-T", "30", "-r", "/tmp/raw"]);
        assert_eq!(c.wire.timeout, 30);
        assert_eq!(
            c.wire.rawlog.as_deref(),
            Some(std::path::Path::new("/tmp/raw"))
        );
        assert_eq!(backup(&[]).wire.timeout, 600, "doveadm's default");
        assert!(refused(&["backup", "-T", "soon", "maildir:/b"]));
    }

    #[test]
    fn dash_capital_s_names_a_listener() {
        assert_eq!(
            backup(&["-S", "host:2000"]).server.as_deref(),
            Some("host:2000")
        );
    }

    #[test]
    fn dash_l_takes_seconds() {
        assert_eq!(backup(&["-l", "30"]).lock_timeout, 30);
        assert_eq!(backup(&[]).lock_timeout, 0);
        assert!(refused(&["backup", "-l", "-1", "maildir:/b"]));
    }

    #[test]
    fn dash_t_and_dash_e_take_dates() {
        let c = backup(&["-t", "2024-01-01", "-e", "1700000000"]);
        assert!(c.since.is_some_and(|t| t > 1_700_000_000));
        assert_eq!(c.until, Some(1_700_000_000));
        assert!(refused(&["backup", "-t", "yesterday-ish", "maildir:/b"]));
    }

    #[test]
    fn dash_capital_o_takes_a_flag_or_its_negation() {
        assert_eq!(backup(&["-O", "\\Seen"]).flag.as_deref(), Some("\\Seen"));
        assert_eq!(backup(&["-O", "-$Label"]).flag.as_deref(), Some("-$Label"));
        assert!(refused(&["backup", "-O", "\\Nonsense", "maildir:/b"]));
    }

    #[test]
    fn dash_capital_i_takes_a_size() {
        assert_eq!(backup(&["-I", "10k"]).max_size, Some(10 * 1024));
        assert!(refused(&["backup", "-I", "ten", "maildir:/b"]));
    }

    #[test]
    fn dash_g_takes_a_guid_or_nothing() {
        let g = "0123456789abcdef0123456789abcdef";
        assert!(matches!(
            backup(&["-g", g]).box_guid,
            Some(filters::BoxGuid::Guid(_))
        ));
        assert_eq!(
            backup(&["-g", ""]).box_guid,
            Some(filters::BoxGuid::ListOnly)
        );
        assert!(refused(&["backup", "-g", "xyz", "maildir:/b"]));
    }

    #[test]
    fn the_destination_may_be_a_command_of_several_words() {
        let c = match parse(&["backup", "ssh", "host", "boxsync", "dsync-server"]).command {
            Command::Backup(b) => b.common,
            _ => panic!(),
        };
        assert_eq!(c.destination, ["ssh", "host", "boxsync", "dsync-server"]);
    }

    #[test]
    fn dash_a_names_the_all_mailbox() {
        assert_eq!(
            backup(&["-a", "All Mail"]).all_mailbox.as_deref(),
            Some("All Mail")
        );
    }

    #[test]
    fn dash_1_is_a_sync_flag_only() {
        match parse(&["sync", "-1", "maildir:/b"]).command {
            Command::Sync(s) => assert!(s.one_way),
            _ => panic!(),
        }
        assert!(refused(&["backup", "-1", "maildir:/b"]));
    }

    #[test]
    fn server_flags() {
        let s = server(&["-u", "alice", "-U", "-E", "-T", "5"]);
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert!(s.notify && s.legacy);
        assert_eq!(s.wire.timeout, 5);
        let s = server(&["--listen", "127.0.0.1:2000"]);
        assert_eq!(s.listen.as_deref(), Some("127.0.0.1:2000"));
    }
}
