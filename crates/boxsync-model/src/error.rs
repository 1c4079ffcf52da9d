//! Errors and doveadm's exit codes (`doveadm-protocol.h`, sysexits.h).

use std::fmt;

/// The process exit codes boxsync shares with doveadm, so scripts written for dsync keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitCode {
    Ok,
    /// The sync finished but something changed during it: run it again.
    Changed,
    Usage,
    DataErr,
    NoUser,
    NotFound,
    TempFail,
    NoPerm,
    Config,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Changed => 2,
            ExitCode::Usage => 64,
            ExitCode::DataErr => 65,
            ExitCode::NoUser => 67,
            ExitCode::NotFound => 68,
            ExitCode::TempFail => 75,
            ExitCode::NoPerm => 77,
            ExitCode::Config => 78,
        }
    }

    /// The exit code for a number another boxsync reported (`-S`); unknown numbers are
    /// temporary failures.
    pub fn from_code(code: i32) -> ExitCode {
        [
            ExitCode::Ok,
            ExitCode::Changed,
            ExitCode::Usage,
            ExitCode::DataErr,
            ExitCode::NoUser,
            ExitCode::NotFound,
            ExitCode::TempFail,
            ExitCode::NoPerm,
            ExitCode::Config,
        ]
        .into_iter()
        .find(|c| c.code() == code)
        .unwrap_or(ExitCode::TempFail)
    }

    /// The code that wins when several results are combined: a temporary failure
    /// overrides everything (as in doveadm), then any other failure, then "changed".
    pub fn worst(self, other: ExitCode) -> ExitCode {
        fn rank(c: ExitCode) -> u8 {
            match c {
                ExitCode::Ok => 0,
                ExitCode::Changed => 1,
                ExitCode::TempFail => 3,
                _ => 2,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// What went wrong, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    NotFound(String),
    /// No such user, or a user name that cannot be one.
    #[error("{0}")]
    NoUser(String),
    #[error("{0}")]
    Permission(String),
    /// Corrupt or impossible input: a broken file, an invalid name, a peer that breaks the protocol.
    #[error("{0}")]
    Data(String),
    /// Something that may work on a later try: I/O trouble, locks held, a lost peer.
    #[error("{0}")]
    Temp(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Error {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    pub fn data(msg: impl fmt::Display) -> Error {
        Error::Data(msg.to_string())
    }

    pub fn temp(msg: impl fmt::Display) -> Error {
        Error::Temp(msg.to_string())
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Config(_) => ExitCode::Config,
            Error::NotFound(_) => ExitCode::NotFound,
            Error::NoUser(_) => ExitCode::NoUser,
            Error::Permission(_) => ExitCode::NoPerm,
            Error::Data(_) => ExitCode::DataErr,
            Error::Temp(_) => ExitCode::TempFail,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied => ExitCode::NoPerm,
                std::io::ErrorKind::NotFound => ExitCode::NotFound,
                std::io::ErrorKind::InvalidData => ExitCode::DataErr,
                _ => ExitCode::TempFail,
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a description of what was being done to an I/O result.
pub trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tempfail_overrides_other_failures() {
        assert_eq!(
            ExitCode::DataErr.worst(ExitCode::TempFail),
            ExitCode::TempFail
        );
        assert_eq!(
            ExitCode::TempFail.worst(ExitCode::DataErr),
            ExitCode::TempFail
        );
        assert_eq!(
            ExitCode::Changed.worst(ExitCode::DataErr),
            ExitCode::DataErr
        );
        assert_eq!(ExitCode::Ok.worst(ExitCode::Changed), ExitCode::Changed);
    }
}
