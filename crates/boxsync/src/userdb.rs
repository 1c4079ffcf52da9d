//! User databases and user selection: Dovecot's `passwd-file` and `passwd` userdbs with their
//! `default_fields`/`override_fields`, the `%u %n %d %h` variables, and the user masks and
//! user files behind doveadm's `-u`, `-A` and `-F`.

// The CLI does not use the userdb yet; these items are its API.
#![allow(dead_code)]

use boxsync_model::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a userdb lookup returns about one user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub home: Option<String>,
    /// The mail location (`mail` field), overriding `mail_location`.
    pub mail: Option<String>,
    /// Where `-d` syncs to (`mail_replica` field).
    pub mail_replica: Option<String>,
    /// Every other userdb field, without its `userdb_` prefix.
    pub extra: BTreeMap<String, String>,
}

impl User {
    fn named(name: &str) -> User {
        User {
            name: name.to_string(),
            ..User::default()
        }
    }

    /// Stores one userdb field where it belongs.
    fn set_field(&mut self, key: &str, value: &str, origin: &str) -> Result<()> {
        match key {
            "uid" => self.uid = parse_id(value, "uid", origin)?,
            "gid" => self.gid = parse_id(value, "gid", origin)?,
            "home" => self.home = non_empty(value),
            "mail" => self.mail = non_empty(value),
            "mail_replica" => self.mail_replica = non_empty(value),
            _ => {
                self.extra.insert(key.to_string(), value.to_string());
            }
        }
        Ok(())
    }
}

/// One userdb driver with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Userdb {
    /// Dovecot's `passwd-file`: `user:password:uid:gid:gecos:home:shell:extra_fields`.
    /// The path may hold `%u`/`%n`/`%d` for one file per domain.
    PasswdFile {
        path_template: String,
        username_format: Option<String>,
    },
    /// System users, read from a file in `/etc/passwd` format.
    Passwd { path: PathBuf },
}

/// A configured `userdb { }` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserdbConfig {
    pub driver: Userdb,
    /// Applied before the user's own fields, which may replace them.
    pub default_fields: Vec<(String, String)>,
    /// Applied after the user's own fields, replacing them.
    pub override_fields: Vec<(String, String)>,
}

const DRIVERS: &str = "passwd-file, passwd";

impl UserdbConfig {
    /// Builds a userdb from the settings of its section: `driver`, `args`, `default_fields`
    /// and `override_fields`.
    pub fn from_settings(
        driver: &str,
        args: &str,
        default_fields: &str,
        override_fields: &str,
    ) -> Result<UserdbConfig> {
        let driver = match driver {
            "passwd-file" => parse_passwd_file_args(args)?,
            "passwd" => {
                // Dovecot's passwd args (`blocking=`) only tune how NSS is called.
                if let Some(bad) = args
                    .split_whitespace()
                    .find(|a| !a.starts_with("blocking="))
                {
                    return Err(Error::Config(format!(
                        "userdb passwd: unknown argument {bad:?}"
                    )));
                }
                Userdb::Passwd {
                    path: PathBuf::from("/etc/passwd"),
                }
            }
            other => {
                return Err(Error::Config(format!(
                    "userdb driver {other} is not supported ({DRIVERS})"
                )));
            }
        };
        Ok(UserdbConfig {
            driver,
            default_fields: parse_fields(default_fields, "default_fields")?,
            override_fields: parse_fields(override_fields, "override_fields")?,
        })
    }

    /// Looks a user up. `Ok(None)` means "not in this userdb": the caller tries the next
    /// userdb and finally reports `Error::NoUser` (exit 67).
    pub fn lookup(&self, name: &str) -> Result<Option<User>> {
        let own = match &self.driver {
            Userdb::PasswdFile {
                path_template,
                username_format,
            } => lookup_passwd_file(path_template, username_format.as_deref(), name)?,
            Userdb::Passwd { path } => lookup_passwd(path, name)?,
        };
        let Some(own) = own else {
            return Ok(None);
        };
        let mut fields: Vec<(String, String)> = self.default_fields.clone();
        fields.extend(own);
        fields.extend(self.override_fields.iter().cloned());
        build_user(name, &fields).map(Some)
    }

    /// Every user name this userdb holds, in file order (`-A`).
    pub fn iterate(&self) -> Result<Vec<String>> {
        match &self.driver {
            Userdb::PasswdFile { path_template, .. } => {
                if path_template.contains('%') {
                    return Err(Error::Config(format!(
                        "userdb passwd-file {path_template}: a path with variables cannot be \
                         iterated (-A); use -u or -F"
                    )));
                }
                let text = read_db(Path::new(path_template))?;
                let mut names: Vec<String> = Vec::new();
                for line in db_lines(&text) {
                    let name = line.split(':').next().unwrap_or_default();
                    if !name.is_empty() && !names.iter().any(|n| n == name) {
                        names.push(name.to_string());
                    }
                }
                Ok(names)
            }
            Userdb::Passwd { path } => {
                let text = read_db(path)?;
                Ok(db_lines(&text)
                    .filter_map(|l| l.split(':').next())
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect())
            }
        }
    }
}

/// `[scheme=..] [username_format=..] PATH`: the rest after the options is the path.
fn parse_passwd_file_args(args: &str) -> Result<Userdb> {
    let mut username_format = None;
    let mut rest = args.trim();
    loop {
        let (token, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if let Some(format) = token.strip_prefix("username_format=") {
            username_format = Some(format.to_string());
        } else if !token.starts_with("scheme=") {
            break;
        }
        rest = after.trim_start();
    }
    if rest.is_empty() {
        return Err(Error::Config(format!(
            "userdb passwd-file: args {args:?} name no file"
        )));
    }
    Ok(Userdb::PasswdFile {
        path_template: rest.to_string(),
        username_format,
    })
}

/// Space-separated `key=value` fields; a bare key means an empty value, as in Dovecot.
fn parse_fields(text: &str, setting: &str) -> Result<Vec<(String, String)>> {
    text.split_whitespace()
        .map(|field| {
            let (key, value) = field.split_once('=').unwrap_or((field, ""));
            if key.is_empty() {
                return Err(Error::Config(format!(
                    "{setting}: field {field:?} has no name"
                )));
            }
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

/// Applies fields in order (later ones win), expanding `%` variables in their values the way
/// Dovecot does for userdb fields. `home` is expanded first so the others can use `%h`.
fn build_user(name: &str, fields: &[(String, String)]) -> Result<User> {
    let base = User::named(name);
    let home = fields
        .iter()
        .rev()
        .find(|(k, _)| k == "home")
        .map(|(_, v)| expand_vars(v, &base))
        .transpose()?;
    let mut vars = base.clone();
    vars.home = home.as_deref().and_then(non_empty);
    let mut user = base;
    for (key, value) in fields {
        let value = if key == "home" {
            value.clone()
        } else {
            expand_vars(value, &vars)?
        };
        user.set_field(key, &value, &format!("userdb field {key}"))?;
    }
    user.home = vars.home;
    Ok(user)
}

fn lookup_passwd_file(
    path_template: &str,
    username_format: Option<&str>,
    name: &str,
) -> Result<Option<Vec<(String, String)>>> {
    let who = User::named(name);
    let templated = path_template.contains('%');
    if templated && !safe_in_path(name) {
        return Err(Error::NoUser(format!(
            "user name {name:?} cannot be used in the passwd-file path {path_template}"
        )));
    }
    let path = expand_vars(path_template, &who)?;
    let key = match username_format {
        Some(format) => expand_vars(format, &who)?,
        None => name.to_string(),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        // A domain without its own file simply has no users.
        Err(e) if templated && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(db_error(Path::new(&path), e)),
    };
    // Like Dovecot, the first line for a user wins over later duplicates.
    let Some((number, line)) =
        db_lines_numbered(&text).find(|(_, l)| l.split(':').next() == Some(&key))
    else {
        return Ok(None);
    };
    parse_passwd_file_line(line)
        .map(Some)
        .map_err(|e| Error::data(format!("{path} line {number}: {e}")))
}

/// The userdb fields of one passwd-file line; only `userdb_` extra fields are the userdb's,
/// the others (`nopassword`, `allow_nets=`, …) belong to the passdb.
fn parse_passwd_file_line(line: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut parts = line.splitn(8, ':');
    let _user = parts.next();
    let _password = parts.next();
    let uid = parts.next().unwrap_or_default();
    let gid = parts.next().unwrap_or_default();
    let _gecos = parts.next();
    let home = parts.next().unwrap_or_default();
    let _shell = parts.next();
    let extra = parts.next().unwrap_or_default();
    let mut fields = Vec::new();
    for (key, value) in [("uid", uid), ("gid", gid), ("home", home)] {
        if !value.is_empty() {
            if key != "home" && value.parse::<u32>().is_err() {
                return Err(format!("{key} {value:?} is not a number"));
            }
            fields.push((key.to_string(), value.to_string()));
        }
    }
    for field in extra.split_whitespace() {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        if let Some(key) = key.strip_prefix("userdb_").filter(|k| !k.is_empty()) {
            fields.push((key.to_string(), value.to_string()));
        }
    }
    Ok(fields)
}

fn lookup_passwd(path: &Path, name: &str) -> Result<Option<Vec<(String, String)>>> {
    let text = read_db(path)?;
    let Some((number, line)) =
        db_lines_numbered(&text).find(|(_, l)| l.split(':').next() == Some(name))
    else {
        return Ok(None);
    };
    let parts: Vec<&str> = line.split(':').collect();
    if parts.len() < 6 {
        return Err(Error::data(format!(
            "{} line {number}: not name:password:uid:gid:gecos:home:shell",
            path.display()
        )));
    }
    for (key, value) in [("uid", parts[2]), ("gid", parts[3])] {
        if value.parse::<u32>().is_err() {
            return Err(Error::data(format!(
                "{} line {number}: {key} {value:?} is not a number",
                path.display()
            )));
        }
    }
    Ok(Some(vec![
        ("uid".to_string(), parts[2].to_string()),
        ("gid".to_string(), parts[3].to_string()),
        ("home".to_string(), parts[5].to_string()),
    ]))
}

fn read_db(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| db_error(path, e))
}

/// A userdb that cannot be read fails the lookup as an internal error, which doveadm reports
/// as a temporary failure, never as "no such user".
fn db_error(path: &Path, e: std::io::Error) -> Error {
    Error::temp(format!("userdb {}: {e}", path.display()))
}

fn db_lines(text: &str) -> impl Iterator<Item = &str> {
    db_lines_numbered(text).map(|(_, l)| l)
}

/// Lines with their 1-based numbers, without empty and `#` comment lines.
fn db_lines_numbered(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
}

/// A name whose parts go into a file path must not climb out of the directory.
fn safe_in_path(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('/')
        && !name.contains('\0')
        && name.split('@').all(|part| !part.starts_with('.'))
}

fn parse_id(value: &str, what: &str, origin: &str) -> Result<Option<u32>> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| Error::data(format!("{origin}: {what} {value:?} is not a number")))
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// Expands a template for a user: a leading `~` or `~/` is the home, then `%u` (name),
/// `%n` (before `@`), `%d` (after `@`), `%h` (home), `%%`, the long forms `%{user}`,
/// `%{username}`, `%{domain}`, `%{home}`, and `%L` before a variable to lowercase it.
pub fn expand(template: &str, user: &User) -> Result<String> {
    if template == "~" || template.starts_with("~/") {
        let home = home_of(template, user)?;
        let rest = expand_vars(&template[1..], user)?;
        return Ok(format!("{home}{rest}"));
    }
    expand_vars(template, user)
}

/// [`expand`] without the `~`: userdb field values keep a `~` for the mail location to expand.
fn expand_vars(template: &str, user: &User) -> Result<String> {
    let unknown = |var: &str| Error::Config(format!("{template}: unknown variable %{var}"));
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut next = chars.next().ok_or_else(|| unknown(""))?;
        let lower = next == 'L';
        if lower {
            next = chars.next().ok_or_else(|| unknown("L"))?;
        }
        let value: String = match next {
            '%' if !lower => "%".to_string(),
            'u' => user.name.clone(),
            'n' => local_part(&user.name).to_string(),
            'd' => domain_part(&user.name).to_string(),
            'h' => home_of(template, user)?.to_string(),
            '{' => {
                let rest = chars.as_str();
                let end = rest
                    .find('}')
                    .ok_or_else(|| unknown(&format!("{{{rest}")))?;
                let name = &rest[..end];
                let value = match name {
                    "user" => user.name.clone(),
                    "username" => local_part(&user.name).to_string(),
                    "domain" => domain_part(&user.name).to_string(),
                    "home" => home_of(template, user)?.to_string(),
                    _ => return Err(unknown(&format!("{{{name}}}"))),
                };
                chars = rest[end + 1..].chars();
                value
            }
            other => {
                let var = if lower {
                    format!("L{other}")
                } else {
                    other.to_string()
                };
                return Err(unknown(&var));
            }
        };
        if lower {
            out.push_str(&value.to_lowercase());
        } else {
            out.push_str(&value);
        }
    }
    Ok(out)
}

fn home_of<'a>(template: &str, user: &'a User) -> Result<&'a str> {
    user.home
        .as_deref()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Error::Config(format!(
                "{template}: user {} has no home directory",
                user.name
            ))
        })
}

fn local_part(name: &str) -> &str {
    name.split_once('@').map_or(name, |(local, _)| local)
}

fn domain_part(name: &str) -> &str {
    name.split_once('@').map_or("", |(_, domain)| domain)
}

/// doveadm's `-u` user mask: `*` matches any run of characters, `?` any one character.
pub fn matches_mask(mask: &str, name: &str) -> bool {
    let mask: Vec<char> = mask.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut m, mut n) = (0, 0);
    // Where the last `*` was and how much of the name it has taken: backtrack there.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match mask.get(m) {
            Some('*') => {
                star = Some((m, n));
                m += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                m += 1;
                n += 1;
            }
            _ => match star {
                Some((sm, sn)) => {
                    m = sm + 1;
                    n = sn + 1;
                    star = Some((sm, sn + 1));
                }
                None => return false,
            },
        }
    }
    mask[m..].iter().all(|&c| c == '*')
}

/// The users of `-F FILE`: one per line; empty lines and `#` comments are skipped, and
/// anything after a TAB on a line is ignored.
pub fn read_user_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("-F {}", path.display()), e))?;
    Ok(text
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxsync_model::ExitCode;

    fn user(name: &str, home: Option<&str>) -> User {
        User {
            home: home.map(str::to_string),
            ..User::named(name)
        }
    }

    fn passwd_file(dir: &Path, file: &str, text: &str) -> UserdbConfig {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        UserdbConfig::from_settings("passwd-file", path.to_str().unwrap(), "", "").unwrap()
    }

    const USERS: &str = "\
# virtual users
alice@example.org:{PLAIN}pw:1000:1001::/home/alice::userdb_mail=maildir:~/Maildir userdb_mail_replica=tcp:peer userdb_quota_rule=*:storage=1G nopassword allow_nets=10.0.0.0/8

bob:{PLAIN}pw
carol:pw:1002:1003
dave:pw:1004:1005:Dave D:/home/dave
erin:pw:::gecos:/home/erin:/bin/false
alice@example.org:pw:9:9::/elsewhere
";

    #[test]
    fn passwd_file_lines_of_every_length() {
        assert_eq!(parse_passwd_file_line("bob").unwrap(), vec![]);
        assert_eq!(parse_passwd_file_line("bob:pw").unwrap(), vec![]);
        assert_eq!(
            parse_passwd_file_line("carol:pw:1:2").unwrap(),
            vec![("uid".into(), "1".into()), ("gid".into(), "2".into())]
        );
        assert_eq!(
            parse_passwd_file_line(
                "d:pw:1:2:g:/h:/bin/sh:userdb_mail=mbox:~/mail nopassword userdb_x userdb_=y"
            )
            .unwrap(),
            vec![
                ("uid".into(), "1".into()),
                ("gid".into(), "2".into()),
                ("home".into(), "/h".into()),
                ("mail".into(), "mbox:~/mail".into()),
                ("x".into(), "".into()),
            ]
        );
        assert!(parse_passwd_file_line("e:pw:vmail:1").is_err());
    }

    #[test]
    fn passwd_file_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let db = passwd_file(dir.path(), "users", USERS);
        let alice = db.lookup("alice@example.org").unwrap().unwrap();
        assert_eq!(alice.uid, Some(1000));
        assert_eq!(alice.gid, Some(1001));
        // The first line wins over the later duplicate.
        assert_eq!(alice.home.as_deref(), Some("/home/alice"));
        assert_eq!(alice.mail.as_deref(), Some("maildir:~/Maildir"));
        assert_eq!(alice.mail_replica.as_deref(), Some("tcp:peer"));
        // passdb fields (no userdb_ prefix) are not the userdb's.
        assert_eq!(
            alice.extra,
            BTreeMap::from([("quota_rule".into(), "*:storage=1G".into())])
        );
        assert_eq!(db.lookup("bob").unwrap().unwrap(), User::named("bob"));
        let erin = db.lookup("erin").unwrap().unwrap();
        assert_eq!((erin.uid, erin.home.as_deref()), (None, Some("/home/erin")));
        assert_eq!(db.lookup("nobody").unwrap(), None);
        assert_eq!(db.lookup("# virtual users").unwrap(), None);
        assert_eq!(
            db.iterate().unwrap(),
            ["alice@example.org", "bob", "carol", "dave", "erin"]
        );
    }

    #[test]
    fn passwd_file_args_and_username_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "alice:pw:1:1::/home/alice\n").unwrap();
        let args = format!("scheme=CRYPT username_format=%n {}", path.display());
        let db = UserdbConfig::from_settings("passwd-file", &args, "", "").unwrap();
        assert_eq!(
            db.driver,
            Userdb::PasswdFile {
                path_template: path.display().to_string(),
                username_format: Some("%n".into())
            }
        );
        let found = db.lookup("alice@example.org").unwrap().unwrap();
        assert_eq!(found.name, "alice@example.org");
        assert_eq!(found.home.as_deref(), Some("/home/alice"));

        let err = UserdbConfig::from_settings("passwd-file", "scheme=CRYPT", "", "").unwrap_err();
        assert_eq!(err.exit_code(), ExitCode::Config);
        let err = UserdbConfig::from_settings("sql", "x", "", "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "userdb driver sql is not supported (passwd-file, passwd)"
        );
        assert_eq!(err.exit_code(), ExitCode::Config);
    }

    #[test]
    fn missing_file_fails_temporarily() {
        let dir = tempfile::tempdir().unwrap();
        let args = dir.path().join("absent").display().to_string();
        let db = UserdbConfig::from_settings("passwd-file", &args, "", "").unwrap();
        assert_eq!(db.lookup("a").unwrap_err().exit_code(), ExitCode::TempFail);
        assert_eq!(db.iterate().unwrap_err().exit_code(), ExitCode::TempFail);
    }

    #[test]
    fn per_domain_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("example.org")).unwrap();
        std::fs::write(
            dir.path().join("example.org/passwd"),
            "alice:pw:1:1::/home/%d/%n\n",
        )
        .unwrap();
        let args = format!("username_format=%n {}/%d/passwd", dir.path().display());
        let db = UserdbConfig::from_settings("passwd-file", &args, "", "").unwrap();
        let alice = db.lookup("alice@example.org").unwrap().unwrap();
        // Variables in fields are expanded too.
        assert_eq!(alice.home.as_deref(), Some("/home/example.org/alice"));
        assert_eq!(db.lookup("alice@other.example").unwrap(), None);
        assert_eq!(db.lookup("bob@example.org").unwrap(), None);
        let err = db.lookup("x@../example.org").unwrap_err();
        assert_eq!(err.exit_code(), ExitCode::NoUser);
        let err = db.iterate().unwrap_err();
        assert_eq!(err.exit_code(), ExitCode::Config);
        assert!(err.to_string().contains("cannot be iterated"), "{err}");
    }

    #[test]
    fn passwd_driver() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(
            &path,
            "root:x:0:0:root:/root:/bin/bash\nvmail:x:5000:5000:Mail:/var/vmail:/usr/sbin/nologin\n",
        )
        .unwrap();
        let mut db =
            UserdbConfig::from_settings("passwd", "blocking=no", "mail=maildir:%h/Mail", "")
                .unwrap();
        assert_eq!(
            db.driver,
            Userdb::Passwd {
                path: "/etc/passwd".into()
            }
        );
        db.driver = Userdb::Passwd { path };
        let vmail = db.lookup("vmail").unwrap().unwrap();
        assert_eq!((vmail.uid, vmail.gid), (Some(5000), Some(5000)));
        assert_eq!(vmail.home.as_deref(), Some("/var/vmail"));
        assert_eq!(vmail.mail.as_deref(), Some("maildir:/var/vmail/Mail"));
        assert_eq!(db.lookup("alice").unwrap(), None);
        assert_eq!(db.iterate().unwrap(), ["root", "vmail"]);
        assert!(UserdbConfig::from_settings("passwd", "/etc/passwd", "", "").is_err());
    }

    #[test]
    fn default_then_own_then_override_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(
            &path,
            "a:pw:1:1::/home/a::userdb_mail=mbox:~/mail userdb_quota_rule=own\nb:pw:2:2\n",
        )
        .unwrap();
        let db = UserdbConfig::from_settings(
            "passwd-file",
            path.to_str().unwrap(),
            "mail=maildir:%h/Maildir quota_rule=default uid=7",
            "home=/virtual/%u quota_rule=*:storage=2G",
        )
        .unwrap();
        let a = db.lookup("a").unwrap().unwrap();
        assert_eq!(a.uid, Some(1));
        assert_eq!(a.home.as_deref(), Some("/virtual/a"));
        assert_eq!(a.mail.as_deref(), Some("mbox:~/mail"));
        assert_eq!(a.extra["quota_rule"], "*:storage=2G");
        let b = db.lookup("b").unwrap().unwrap();
        assert_eq!(b.uid, Some(2));
        // %h in a default field is the final home, set by override_fields.
        assert_eq!(b.mail.as_deref(), Some("maildir:/virtual/b/Maildir"));

        let err = UserdbConfig::from_settings("passwd", "", "=x", "").unwrap_err();
        assert_eq!(err.exit_code(), ExitCode::Config);
    }

    #[test]
    fn expand_variables() {
        let u = user("Alice@Example.org", Some("/home/alice"));
        let e = |t: &str| expand(t, &u).unwrap();
        assert_eq!(
            e("%u|%n|%d|%h|%%"),
            "Alice@Example.org|Alice|Example.org|/home/alice|%"
        );
        assert_eq!(
            e("%{user}|%{username}|%{domain}|%{home}"),
            "Alice@Example.org|Alice|Example.org|/home/alice"
        );
        assert_eq!(e("%Lu %Ln %Ld"), "alice@example.org alice example.org");
        assert_eq!(e("~"), "/home/alice");
        assert_eq!(e("~/Maildir/%n"), "/home/alice/Maildir/Alice");
        assert_eq!(e("maildir:~/Maildir"), "maildir:~/Maildir");
        assert_eq!(e("~bob"), "~bob");
        assert_eq!(expand("%d", &user("local", None)).unwrap(), "");
        assert_eq!(expand("%n", &user("local", None)).unwrap(), "local");

        for bad in ["%x", "%", "%L", "%{nope}", "%{user", "%L%"] {
            let err = expand(bad, &u).unwrap_err();
            assert_eq!(err.exit_code(), ExitCode::Config, "{bad}");
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
        for needs_home in ["~", "~/x", "%h", "%{home}"] {
            let err = expand(needs_home, &user("a", None)).unwrap_err();
            assert_eq!(err.exit_code(), ExitCode::Config);
            assert!(err.to_string().contains(needs_home), "{err}");
        }
    }

    #[test]
    fn user_masks() {
        assert!(matches_mask("*@example.org", "alice@example.org"));
        assert!(matches_mask("*@example.org", "@example.org"));
        assert!(!matches_mask("*@example.org", "alice@example.com"));
        assert!(matches_mask("a?ice", "alice"));
        assert!(!matches_mask("a?ice", "aice"));
        assert!(!matches_mask("a?ice", "allice"));
        assert!(matches_mask("*", ""));
        assert!(matches_mask("*", "anyone"));
        assert!(matches_mask("a*b*c", "aXbYbZc"));
        assert!(!matches_mask("a*b*c", "aXbYbZ"));
        assert!(matches_mask("alice", "alice"));
        assert!(!matches_mask("alice", "Alice"));
        assert!(!matches_mask("", "a"));
    }

    #[test]
    fn user_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(
            &path,
            "alice\n\n# comment\nbob@example.org\textra\r\n  carol  \n",
        )
        .unwrap();
        assert_eq!(
            read_user_file(&path).unwrap(),
            ["alice", "bob@example.org", "carol"]
        );
        let err = read_user_file(&dir.path().join("absent")).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
