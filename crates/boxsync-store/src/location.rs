//! Mail locations in Dovecot's syntax: `maildir:PATH[:LAYOUT=fs][:INDEX=DIR]`, `imapc:[INDEXDIR]`,
//! and the URLs `imap://user@host[:port]/` and `imaps://user@host[:port]/`.

use boxsync_model::{Error, Result};
use std::path::{Path, PathBuf};

/// How folders are laid out under a Maildir root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `.Folder.Sub` directories beside INBOX's `cur/new/tmp` (Dovecot's default).
    MaildirPlusPlus,
    /// Nested directories `Folder/Sub/{cur,new,tmp}`.
    Fs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub root: PathBuf,
    pub layout: Layout,
    /// Where the index lives (the root unless `INDEX=` says otherwise).
    pub index_dir: PathBuf,
}

pub(crate) fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/"));
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(p),
    }
}

impl Location {
    /// Parses a `maildir:` location; any other format is named in the error (the other stores
    /// parse their own).
    pub fn parse(text: &str) -> Result<Location> {
        let (kind, rest) = text.split_once(':').ok_or_else(|| {
            Error::Usage(format!(
                "mail location {text:?} has no format prefix (expected maildir:PATH)"
            ))
        })?;
        if kind != "maildir" {
            return Err(Error::Usage(format!(
                "mail location {text:?}: format {kind:?} is not supported (supported: maildir, mbox, \
                 sdbox and mdbox to read, imapc)"
            )));
        }
        let mut parts = rest.split(':');
        let path = parts.next().unwrap_or("");
        if path.is_empty() {
            return Err(Error::Usage(format!("mail location {text:?} has no path")));
        }
        let root = expand_home(path);
        let mut loc = Location {
            index_dir: root.clone(),
            root,
            layout: Layout::MaildirPlusPlus,
        };
        for opt in parts {
            match opt.split_once('=') {
                Some(("LAYOUT", "fs")) => loc.layout = Layout::Fs,
                Some(("LAYOUT", "maildir++")) => loc.layout = Layout::MaildirPlusPlus,
                Some(("INDEX", dir)) if !dir.is_empty() => loc.index_dir = expand_home(dir),
                // Settings Dovecot knows that do not change what boxsync reads or writes.
                Some(("CONTROL" | "VOLATILEDIR" | "INBOX", _)) => {}
                _ => {
                    return Err(Error::Usage(format!(
                        "mail location {text:?}: unsupported option {opt:?}"
                    )));
                }
            }
        }
        Ok(loc)
    }

    pub fn index_path(&self) -> PathBuf {
        self.index_dir.join("boxsync.index.sqlite")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dovecot_locations() {
        let l = Location::parse("maildir:/srv/mail:LAYOUT=fs:INDEX=/var/idx").unwrap();
        assert_eq!(l.root, PathBuf::from("/srv/mail"));
        assert_eq!(l.layout, Layout::Fs);
        assert_eq!(
            l.index_path(),
            PathBuf::from("/var/idx/boxsync.index.sqlite")
        );
        assert_eq!(
            Location::parse("maildir:/m").unwrap().layout,
            Layout::MaildirPlusPlus
        );
        assert!(Location::parse("/just/a/path").is_err());
        assert!(
            Location::parse("pop3c:/x")
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        assert!(Location::parse("maildir:/m:BOGUS=1").is_err());
    }
}
