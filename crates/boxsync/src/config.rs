//! boxsync's config file, in the syntax of Dovecot 2.3's `dovecot.conf`.
//!
//! Pure parsing: this module knows no setting names. It turns the file (and whatever it
//! includes) into settings and sections in file order, each remembering the file and line it
//! came from, so that the caller can validate names and point at the culprit.
//!
//! Syntax (Dovecot's `doc/wiki/ConfigFile.txt` and doc.dovecot.org "Config File Syntax"):
//! - `key = value`; the value runs to the end of the line, trimmed; `#` starts a comment
//!   unless the value is quoted (`"..."` with `\"`/`\\` escapes, or `'...'`).
//! - `key = \` continues on the next line; the line break and the whitespace around it
//!   become one space.
//! - `name {` or `name optional_name {` opens a section, `}` on its own line closes it;
//!   the contents must start on a new line (`name { key = value }` is an error, as in
//!   Dovecot); an empty `name { }` is accepted.
//! - `!include PATH` / `!include_try PATH`, relative to the including file's directory, with
//!   `*` and `?` wildcards in the file name (sorted; no match is not an error). The included
//!   settings land in the section where the `!include` stands.
//! - `key = <PATH` reads the value from a file (one trailing newline removed).
//! - `$name` in an unquoted value is replaced by the value of an earlier setting `name`,
//!   looked up in the open sections from the innermost outwards, then at top level.
//!
//! Self-contained (std only), so that the fuzz target can include it by path.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// How deep `!include` may nest.
const MAX_INCLUDE_DEPTH: usize = 20;
/// How deep sections may nest.
const MAX_SECTION_DEPTH: usize = 64;
/// Largest config file read.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Largest `<file` value.
const MAX_VALUE_FILE_BYTES: u64 = 1 << 20;
/// Largest single value after `$name` expansion.
const MAX_VALUE_BYTES: usize = 1 << 20;
/// Bytes read from files plus bytes of values stored, over one whole parse.
const MAX_TOTAL_BYTES: usize = 128 << 20;

/// A parse failure, at a file and a 1-based line (0 when there is no line, e.g. the top-level
/// file cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The parsed config: top-level settings and sections, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub settings: Vec<Setting>,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// `kind name { ... }`, e.g. `namespace inbox {` (kind `namespace`, name `inbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: String,
    pub name: Option<String>,
    pub settings: Vec<Setting>,
    pub sections: Vec<Section>,
    pub file: PathBuf,
    pub line: usize,
}

#[allow(dead_code)]
impl Config {
    /// The top-level setting `key`; the last one wins.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().rev().find(|s| s.key == key)
    }

    /// The top-level sections of one kind, in file order.
    pub fn sections_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Section> {
        self.sections.iter().filter(move |s| s.kind == kind)
    }
}

#[allow(dead_code)]
impl Section {
    /// The setting `key` directly inside this section; the last one wins.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().rev().find(|s| s.key == key)
    }

    /// The subsections of one kind, in file order.
    pub fn sections_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Section> {
        self.sections.iter().filter(move |s| s.kind == kind)
    }
}

/// Parses the config file at `path` and everything it includes.
#[allow(dead_code)]
pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
    let mut p = Parser::default();
    let text = p
        .read_limited(path, MAX_FILE_BYTES)
        .map_err(|e| err(path, 0, format!("cannot read config file: {e}")))?;
    p.parse_text(&text, path)?;
    Ok(p.finish())
}

/// Parses `text` as if it were the file `origin` (includes resolve against its directory).
#[allow(dead_code)]
pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let mut p = Parser::default();
    p.parse_text(text, origin)?;
    Ok(p.finish())
}

fn err(file: &Path, line: usize, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

#[derive(Default)]
struct Parser {
    top: Config,
    /// Open sections, outermost first.
    open: Vec<Section>,
    /// Files being parsed (canonical where possible), outermost first: loop detection.
    files: Vec<PathBuf>,
    /// Bytes read and stored so far (see `MAX_TOTAL_BYTES`).
    spent: usize,
}

impl Parser {
    fn finish(self) -> Config {
        self.top
    }

    fn spend(&mut self, n: usize, file: &Path, line: usize) -> Result<(), ConfigError> {
        self.spent = self.spent.saturating_add(n);
        if self.spent > MAX_TOTAL_BYTES {
            return Err(err(
                file,
                line,
                "config too large (total size limit exceeded)",
            ));
        }
        Ok(())
    }

    /// Reads a regular file of at most `limit` bytes as UTF-8.
    fn read_limited(&mut self, path: &Path, limit: u64) -> io::Result<String> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let mut buf = Vec::new();
        file.take(limit + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {limit} bytes"),
            ));
        }
        self.spent = self.spent.saturating_add(buf.len());
        if self.spent > MAX_TOTAL_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "total config size limit exceeded",
            ));
        }
        String::from_utf8(buf)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"))
    }

    fn parse_text(&mut self, text: &str, file: &Path) -> Result<(), ConfigError> {
        let key = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        self.files.push(key);
        let base_depth = self.open.len();
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();

        let mut lines = text.split('\n').enumerate();
        while let Some((idx, raw)) = lines.next() {
            let lineno = idx + 1;
            let first = trim(raw.strip_suffix('\r').unwrap_or(raw));
            if first.is_empty() || first.starts_with('#') {
                continue;
            }
            // Long lines: `\` at the end joins the next line, with one space between.
            let mut logical = first.to_string();
            while let Some(stripped) = logical.strip_suffix('\\') {
                let stripped = trim(stripped).to_string();
                let Some((_, next)) = lines.next() else {
                    logical = stripped;
                    break;
                };
                let next = trim(next.strip_suffix('\r').unwrap_or(next));
                logical = format!("{stripped} {next}");
                if logical.len() > MAX_VALUE_BYTES {
                    return Err(err(file, lineno, "continued line too long"));
                }
            }
            self.parse_line(&logical, file, &dir, lineno, base_depth)?;
        }

        if self.open.len() > base_depth {
            let s = self.open.last().expect("non-empty: deeper than base");
            return Err(err(
                &s.file,
                s.line,
                format!(
                    "section `{}` is not closed: missing `}}` before the end of {}",
                    describe_section(s),
                    file.display()
                ),
            ));
        }
        self.files.pop();
        Ok(())
    }

    fn parse_line(
        &mut self,
        line: &str,
        file: &Path,
        dir: &Path,
        lineno: usize,
        base_depth: usize,
    ) -> Result<(), ConfigError> {
        for (directive, must_exist) in [("!include_try", false), ("!include", true)] {
            if let Some(rest) = line.strip_prefix(directive)
                && (rest.is_empty() || rest.starts_with([' ', '\t']))
            {
                let tokens = tokenize(rest).map_err(|m| err(file, lineno, m))?;
                let [Token::Word(path)] = tokens.as_slice() else {
                    return Err(err(file, lineno, format!("{directive} needs one path")));
                };
                return self.include(path, must_exist, directive, file, dir, lineno);
            }
        }

        let key_end = line
            .find(|c: char| c.is_whitespace() || "={}#\"'".contains(c))
            .unwrap_or(line.len());
        let (key, rest) = line.split_at(key_end);
        let rest = trim(rest);
        if let Some(value) = rest.strip_prefix('=') {
            if key.is_empty() {
                return Err(err(file, lineno, "missing setting name before `=`"));
            }
            let value = self.value(trim(value), file, dir, lineno)?;
            self.spend(value.len() + key.len(), file, lineno)?;
            let setting = Setting {
                key: key.to_string(),
                value,
                file: file.to_path_buf(),
                line: lineno,
            };
            match self.open.last_mut() {
                Some(s) => s.settings.push(setting),
                None => self.top.settings.push(setting),
            }
            return Ok(());
        }

        let tokens = tokenize(line).map_err(|m| err(file, lineno, m))?;
        match tokens.as_slice() {
            [Token::Close] => {
                if self.open.len() <= base_depth {
                    return Err(err(file, lineno, "unexpected `}` without an open section"));
                }
                let done = self.open.pop().expect("non-empty: deeper than base");
                match self.open.last_mut() {
                    Some(parent) => parent.sections.push(done),
                    None => self.top.sections.push(done),
                }
                Ok(())
            }
            [Token::Word(kind), Token::Open, tail @ ..] => {
                let kind = kind.clone();
                self.open_section(kind, None, tail, file, lineno)
            }
            [Token::Word(kind), Token::Word(name), Token::Open, tail @ ..] => {
                let (kind, name) = (kind.clone(), Some(name.clone()));
                self.open_section(kind, name, tail, file, lineno)
            }
            _ => Err(err(
                file,
                lineno,
                format!("expected `key = value`, `name {{` or `}}`, found `{line}`"),
            )),
        }
    }

    fn open_section(
        &mut self,
        kind: String,
        name: Option<String>,
        tail: &[Token],
        file: &Path,
        lineno: usize,
    ) -> Result<(), ConfigError> {
        let one_line_empty = matches!(tail, [Token::Close]);
        if !tail.is_empty() && !one_line_empty {
            return Err(err(
                file,
                lineno,
                "a section's contents must start on the line after `{`",
            ));
        }
        if self.open.len() >= MAX_SECTION_DEPTH {
            return Err(err(file, lineno, "sections nested too deeply"));
        }
        self.spend(
            kind.len() + name.as_ref().map_or(0, String::len),
            file,
            lineno,
        )?;
        let section = Section {
            kind,
            name,
            settings: Vec::new(),
            sections: Vec::new(),
            file: file.to_path_buf(),
            line: lineno,
        };
        if one_line_empty {
            match self.open.last_mut() {
                Some(parent) => parent.sections.push(section),
                None => self.top.sections.push(section),
            }
        } else {
            self.open.push(section);
        }
        Ok(())
    }

    /// The value after `=`: quoted, `<file`, or plain with `$name` expansion.
    fn value(
        &mut self,
        raw: &str,
        file: &Path,
        dir: &Path,
        lineno: usize,
    ) -> Result<String, ConfigError> {
        if raw.starts_with(['"', '\'']) {
            let (value, rest) = unquote(raw).map_err(|m| err(file, lineno, m))?;
            let rest = trim(rest);
            if !rest.is_empty() && !rest.starts_with('#') {
                return Err(err(
                    file,
                    lineno,
                    format!("unexpected text after the quoted value: `{rest}`"),
                ));
            }
            return Ok(value);
        }
        let plain = trim(raw.split('#').next().unwrap_or(""));
        if let Some(path) = plain.strip_prefix('<') {
            let path = trim(path);
            if path.is_empty() {
                return Err(err(file, lineno, "`<` needs a file name"));
            }
            let full = dir.join(path);
            let mut text = self
                .read_limited(&full, MAX_VALUE_FILE_BYTES)
                .map_err(|e| err(file, lineno, format!("cannot read {}: {e}", full.display())))?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            return Ok(text);
        }
        self.expand(plain, file, lineno)
    }

    /// Replaces each `$name` by the value of the earlier setting `name`.
    fn expand(&self, plain: &str, file: &Path, lineno: usize) -> Result<String, ConfigError> {
        let mut out = String::new();
        let mut rest = plain;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 {
                out.push('$');
                rest = after;
                continue;
            }
            let name = &after[..name_len];
            let Some(value) = self.lookup(name) else {
                return Err(err(
                    file,
                    lineno,
                    format!("unknown variable `${name}`: no earlier setting `{name}`"),
                ));
            };
            out.push_str(value);
            if out.len() > MAX_VALUE_BYTES {
                return Err(err(file, lineno, "value too long after `$` expansion"));
            }
            rest = &after[name_len..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, name: &str) -> Option<&str> {
        self.open
            .iter()
            .rev()
            .map(|s| &s.settings)
            .chain(std::iter::once(&self.top.settings))
            .find_map(|settings| settings.iter().rev().find(|s| s.key == name))
            .map(|s| s.value.as_str())
    }

    fn include(
        &mut self,
        pattern: &str,
        must_exist: bool,
        directive: &str,
        file: &Path,
        dir: &Path,
        lineno: usize,
    ) -> Result<(), ConfigError> {
        if self.files.len() >= MAX_INCLUDE_DEPTH {
            return Err(err(
                file,
                lineno,
                format!("{directive}: includes nested deeper than {MAX_INCLUDE_DEPTH} levels"),
            ));
        }
        let full = dir.join(pattern);
        let paths = if has_wildcard(pattern) {
            expand_glob(&full).map_err(|m| err(file, lineno, format!("{directive}: {m}")))?
        } else {
            vec![full]
        };
        for path in paths {
            let canon = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if self.files.contains(&canon) {
                return Err(err(
                    file,
                    lineno,
                    format!(
                        "{directive}: include loop: {} is already being read",
                        path.display()
                    ),
                ));
            }
            let text = match self.read_limited(&path, MAX_FILE_BYTES) {
                Ok(text) => text,
                Err(e)
                    if !must_exist
                        && matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                        ) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(err(
                        file,
                        lineno,
                        format!("{directive}: cannot read {}: {e}", path.display()),
                    ));
                }
            };
            self.parse_text(&text, &path)?;
        }
        Ok(())
    }
}

fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r'])
}

fn describe_section(s: &Section) -> String {
    match &s.name {
        Some(name) => format!("{} {}", s.kind, name),
        None => s.kind.clone(),
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Open,
    Close,
}

/// Splits a non-setting line into words (bare or quoted), `{` and `}`; `#` ends the line.
fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = trim(line);
    while !rest.is_empty() {
        if rest.starts_with('#') {
            break;
        } else if let Some(r) = rest.strip_prefix('{') {
            tokens.push(Token::Open);
            rest = r;
        } else if let Some(r) = rest.strip_prefix('}') {
            tokens.push(Token::Close);
            rest = r;
        } else if rest.starts_with(['"', '\'']) {
            let (word, r) = unquote(rest)?;
            tokens.push(Token::Word(word));
            rest = r;
        } else {
            let end = rest
                .find(|c: char| c == ' ' || c == '\t' || "{}#\"'".contains(c))
                .unwrap_or(rest.len());
            tokens.push(Token::Word(rest[..end].to_string()));
            rest = &rest[end..];
        }
        rest = trim(rest);
    }
    Ok(tokens)
}

/// `s` starts with `"` or `'`: returns the unescaped contents and what follows the closing
/// quote. A backslash takes the next character literally.
fn unquote(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let Some((_, quote)) = chars.next() else {
        return Err("expected a quoted string".to_string());
    };
    let mut out = String::new();
    while let Some((_, c)) = chars.next() {
        if c == quote {
            return Ok((out, chars.as_str()));
        }
        if c == '\\' {
            match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => break,
            }
        } else {
            out.push(c);
        }
    }
    Err(format!("missing closing {quote} quote"))
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// `dir/pattern` with wildcards in the last component only: the matching entries, sorted.
/// Names starting with `.` match only a pattern starting with `.` (as glob(3)).
fn expand_glob(full: &Path) -> Result<Vec<PathBuf>, String> {
    let (Some(parent), Some(pattern)) = (full.parent(), full.file_name()) else {
        return Err(format!("bad path {}", full.display()));
    };
    if has_wildcard(&parent.to_string_lossy()) {
        return Err(format!(
            "wildcards are supported in the file name only: {}",
            full.display()
        ));
    }
    let pattern: Vec<char> = pattern.to_string_lossy().chars().collect();
    let list_dir = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let Ok(entries) = std::fs::read_dir(list_dir) else {
        return Ok(Vec::new()); // like glob(3): an unreadable directory matches nothing
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') && pattern.first() != Some(&'.') {
            continue;
        }
        let name: Vec<char> = name.chars().collect();
        if wildcard_match(&pattern, &name) {
            found.push(parent.join(entry.file_name()));
        }
    }
    found.sort();
    Ok(found)
}

/// `*` matches any run of characters, `?` any one character.
fn wildcard_match(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::fs;

    /// One line per setting, `file:line key=value`, sections as `file:line kind name {`,
    /// contents indented; file names relative to `base`.
    fn render(config: &Config, base: &Path) -> String {
        fn rel(file: &Path, base: &Path) -> String {
            file.strip_prefix(base)
                .unwrap_or(file)
                .display()
                .to_string()
        }
        fn settings(out: &mut String, list: &[Setting], indent: usize, base: &Path) {
            for s in list {
                let pad = "  ".repeat(indent);
                let (file, line) = (rel(&s.file, base), s.line);
                writeln!(
                    out,
                    "{pad}{file}:{line} {}={}",
                    s.key,
                    s.value.escape_debug()
                )
                .unwrap();
            }
        }
        fn sections(out: &mut String, list: &[Section], indent: usize, base: &Path) {
            for s in list {
                let pad = "  ".repeat(indent);
                let (file, line) = (rel(&s.file, base), s.line);
                writeln!(out, "{pad}{file}:{line} {} {{", describe_section(s)).unwrap();
                settings(out, &s.settings, indent + 1, base);
                sections(out, &s.sections, indent + 1, base);
                writeln!(out, "{pad}}}").unwrap();
            }
        }
        let mut out = String::new();
        settings(&mut out, &config.settings, 0, base);
        sections(&mut out, &config.sections, 0, base);
        out
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn parse_err(dir: &Path, main: &str) -> String {
        let e = parse_file(&dir.join(main)).unwrap_err();
        e.to_string().replace(&format!("{}/", dir.display()), "")
    }

    #[test]
    fn config_snapshot_dovecot_conf() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let main = write(
            d,
            "dovecot.conf",
            r#"## Dovecot configuration file
# comment line
protocols = imap lmtp   # trailing comment
listen=*
login_greeting = "Dovecot # ready "
base_dir = '/var/run/dovecot/'
empty =
mail_plugins = acl
!include conf.d/*.conf
!include_try local-missing.conf
mail_plugins = $mail_plugins quota
ssl_key = <private/ssl.key
long_setting = first \
    second \
  third
"#,
        );
        write(
            d,
            "conf.d/10-auth.conf",
            "userdb {\n  driver = passwd-file\n  args = scheme=CRYPT username_format=%u /etc/dovecot/users\n}\n",
        );
        write(
            d,
            "conf.d/10-mail.conf",
            "namespace inbox {\n  separator = /\n  prefix =\n  inbox = yes\n  mailbox \"Sent Messages\" {\n    special_use = \\Sent\n  }\n}\nprotocol imap {\n  mail_plugins = $mail_plugins imap_acl\n}\n",
        );
        write(d, "conf.d/README", "this is not included\n");
        write(d, "conf.d/.hidden.conf", "not = included\n");
        write(d, "private/ssl.key", "-----KEY-----\nline2\n");

        let config = parse_file(&main).unwrap();
        let expected = r#"dovecot.conf:3 protocols=imap lmtp
dovecot.conf:4 listen=*
dovecot.conf:5 login_greeting=Dovecot # ready 
dovecot.conf:6 base_dir=/var/run/dovecot/
dovecot.conf:7 empty=
dovecot.conf:8 mail_plugins=acl
dovecot.conf:11 mail_plugins=acl quota
dovecot.conf:12 ssl_key=-----KEY-----\nline2
dovecot.conf:13 long_setting=first second third
conf.d/10-auth.conf:1 userdb {
  conf.d/10-auth.conf:2 driver=passwd-file
  conf.d/10-auth.conf:3 args=scheme=CRYPT username_format=%u /etc/dovecot/users
}
conf.d/10-mail.conf:1 namespace inbox {
  conf.d/10-mail.conf:2 separator=/
  conf.d/10-mail.conf:3 prefix=
  conf.d/10-mail.conf:4 inbox=yes
  conf.d/10-mail.conf:5 mailbox Sent Messages {
    conf.d/10-mail.conf:6 special_use=\\Sent
  }
}
conf.d/10-mail.conf:9 protocol imap {
  conf.d/10-mail.conf:10 mail_plugins=acl imap_acl
}
"#;
        assert_eq!(render(&config, d), expected);
        assert_eq!(config.get("mail_plugins").unwrap().value, "acl quota");
        assert_eq!(config.get("nope"), None);
        let ns: Vec<_> = config.sections_of("namespace").collect();
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].name.as_deref(), Some("inbox"));
        assert_eq!(ns[0].get("prefix").unwrap().value, "");
    }

    #[test]
    fn config_snapshot_include_inside_section_and_nesting() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(
            d,
            "boxsync.conf",
            "a = 1\nservice imap-login {\n  inet_listener imap {\n    port = 143\n  }\n  !include svc.conf\n  x = $a$b-$\n}\nplugin { }\nremote 10.0.0.0/8 {\n}\n",
        );
        write(d, "svc.conf", "b = 2  \n# c = 3\n");
        let config = parse_file(&d.join("boxsync.conf")).unwrap();
        let expected = r#"boxsync.conf:1 a=1
boxsync.conf:2 service imap-login {
  svc.conf:1 b=2
  boxsync.conf:7 x=12-$
  boxsync.conf:3 inet_listener imap {
    boxsync.conf:4 port=143
  }
}
boxsync.conf:9 plugin {
}
boxsync.conf:10 remote 10.0.0.0/8 {
}
"#;
        assert_eq!(render(&config, d), expected);
    }

    #[test]
    fn config_parse_str_and_crlf() {
        let c = parse_str(
            "k = v\r\nq = \"a \\\"b\\\" \\\\ c\" # x\r\n",
            Path::new("/x/y.conf"),
        )
        .unwrap();
        assert_eq!(
            render(&c, Path::new("/x")),
            "y.conf:1 k=v\ny.conf:2 q=a \\\"b\\\" \\\\ c\n"
        );
    }

    #[test]
    fn config_errors_name_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let cases: &[(&str, &str)] = &[
            (
                "a = 1\nb = $a $nope\n",
                "m.conf:2: unknown variable `$nope`: no earlier setting `nope`",
            ),
            (
                "a = 1\n}\n",
                "m.conf:2: unexpected `}` without an open section",
            ),
            (
                "a {\n  b {\n  }\n",
                "m.conf:1: section `a` is not closed: missing `}` before the end of",
            ),
            ("x = <nofile\n", "m.conf:1: cannot read"),
            ("!include nofile.conf\n", "m.conf:1: !include: cannot read"),
            (
                "\n\n!include loop1.conf\n",
                "loop2.conf:1: !include: include loop",
            ),
            (
                "a { b = c }\n",
                "m.conf:1: a section's contents must start on the line",
            ),
            ("just words here\n", "m.conf:1: expected `key = value`"),
            ("k = \"open\n", "m.conf:1: missing closing \" quote"),
            (
                "k = \"a\" b\n",
                "m.conf:1: unexpected text after the quoted value",
            ),
            ("= v\n", "m.conf:1: missing setting name"),
            ("!include\n", "m.conf:1: !include needs one path"),
            (
                "!include x/*/y.conf\n",
                "m.conf:1: !include: wildcards are supported",
            ),
        ];
        write(d, "loop1.conf", "!include loop2.conf\n");
        write(d, "loop2.conf", "!include loop1.conf\n");
        for (text, want) in cases {
            write(d, "m.conf", text);
            let got = parse_err(d, "m.conf");
            assert!(
                got.starts_with(want),
                "for {text:?}: got {got:?}, want {want:?}"
            );
        }
        // An included file must close its own sections.
        write(d, "open.conf", "\nsec {\n");
        write(d, "m.conf", "outer {\n!include open.conf\n}\n");
        let got = parse_err(d, "m.conf");
        assert!(
            got.starts_with("open.conf:2: section `sec` is not closed"),
            "{got}"
        );
        // ... and cannot close the includer's.
        write(d, "close.conf", "}\n");
        write(d, "m.conf", "outer {\n!include close.conf\n}\n");
        assert_eq!(
            parse_err(d, "m.conf"),
            "close.conf:1: unexpected `}` without an open section"
        );
    }

    #[test]
    fn config_include_try_and_empty_glob_are_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(
            d,
            "m.conf",
            "!include_try missing.conf\n!include nodir/*.conf\n!include_try none*.conf\na = 1\n",
        );
        let c = parse_file(&d.join("m.conf")).unwrap();
        assert_eq!(render(&c, d), "m.conf:4 a=1\n");
    }

    #[test]
    fn config_self_include_and_depth_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "self.conf", "!include self.conf\n");
        assert!(parse_err(d, "self.conf").starts_with("self.conf:1: !include: include loop"));
        // A chain deeper than the limit, without a loop.
        for i in 0..30 {
            write(
                d,
                &format!("c{i}.conf"),
                &format!("!include c{}.conf\n", i + 1),
            );
        }
        write(d, "c30.conf", "a = 1\n");
        let got = parse_err(d, "c0.conf");
        assert!(got.contains("nested deeper than 20"), "{got}");
        // Exponential `$` growth stops at the value limit.
        let mut text = String::from("a = xxxxxxxxxxxxxxxx\n");
        for _ in 0..40 {
            text.push_str("a = $a$a\n");
        }
        assert!(
            parse_str(&text, Path::new("/nonexistent/m.conf"))
                .unwrap_err()
                .message
                .contains("too long")
        );
        // Deep section nesting is an error, not a stack overflow.
        let deep = "a {\n".repeat(100_000);
        assert!(parse_str(&deep, Path::new("/nonexistent/m.conf")).is_err());
    }

    #[test]
    fn config_wildcard_match() {
        let m = |p: &str, n: &str| {
            wildcard_match(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("*.conf", "10-auth.conf"));
        assert!(m("*", ""));
        assert!(m("a?c*", "abcdef"));
        assert!(!m("*.conf", "10-auth.conf.ext"));
        assert!(m("*.conf*", "10-auth.conf.ext"));
        assert!(!m("x*", "y"));
    }

    #[test]
    fn config_never_panics_on_odd_input() {
        let origin = Path::new("/nonexistent-boxsync-dir/m.conf");
        for text in [
            "",
            "\\",
            "a = \\",
            "{",
            "}",
            "{}",
            "a b c {",
            "\"",
            "'",
            "a = '\\",
            "$",
            "a=$",
            "!include",
            "!include_try *",
            "k = <",
            "k = < ",
            "\u{feff}é = ü #",
            "a \"b\" {\n}",
            "!include_trything",
            "a=\"x\"#c",
            "\r\n\r",
            "a { } x",
        ] {
            let _ = parse_str(text, origin);
        }
    }
}
