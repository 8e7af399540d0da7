//! The one error type of the core. Every variant maps to one stable code string
//! (`Error::code`), which the binding hands to JS as `DurablyError.code`; the
//! message says what went wrong and what to do. `docs/errors.md` documents each code
//! and a test fails when one is missing there.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("no task with id \"{task}\" is registered in this process; define it with task({{ id: \"{task}\", run }}) and import the module before triggering it (check the id for typos)")]
    UnknownTask { task: String },

    #[error("{what} is not JSON: {reason}")]
    PayloadNotJson { what: String, reason: String },

    #[error("{what} is {size} bytes, over the limit of {limit} bytes; store large data elsewhere (a file, a bucket) and pass a reference, or raise configure({{ maxPayloadBytes }})")]
    PayloadTooLarge {
        what: String,
        size: usize,
        limit: usize,
    },

    #[error("{what} is nested {depth} levels deep, over the limit of {limit}; flatten it (durably reads payloads and event data to match events and compute keys)")]
    PayloadTooDeep {
        what: String,
        depth: usize,
        limit: usize,
    },

    #[error("{}", locked_message(path, *here))]
    DataDirLocked {
        path: PathBuf,
        /// Open in this process (else: another process holds it).
        here: bool,
    },

    #[error("option `{option}`: {reason}")]
    BadDuration { option: String, reason: String },

    #[error("option `{option}`: {reason}")]
    BadOption { option: String, reason: String },

    #[error("option `{option}`: {reason}")]
    BadCron { option: String, reason: String },

    #[error("no run with id \"{id}\" exists in this store (runs that ended longer ago than their retention, 7 days by default, are removed)")]
    RunNotFound { id: String },

    #[error("illegal run transition: a {from} run cannot take `{input}` (this is a bug in durably, please report it)")]
    IllegalTransition {
        from: &'static str,
        input: &'static str,
    },

    #[error("the store at {path} was written by a newer durably (schema {found}, this build reads up to {supported}); upgrade durably")]
    SchemaTooNew {
        path: String,
        found: u32,
        supported: u32,
    },

    #[error("store error: {0}")]
    Store(String),

    #[error("the disk of the store is full ({0}); nothing was written: free space on it, and durably carries on by itself (acknowledged work is safe)")]
    DiskFull(String),

    #[error("the data folder {} is not a durably store: {reason}; durably writes nothing there. Point configure({{ dataDir }}) or DURABLY_DATA_DIR at a new or empty folder (it is created when missing), or at a folder durably created", path.display())]
    NotAStore { path: PathBuf, reason: String },

    #[error("the engine is shut down; call start() again to reopen it")]
    Closed,

    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout { what: String, ms: u64 },

    #[error("internal error: {0} (this is a bug in durably, please report it)")]
    Internal(String),
}

fn locked_message(path: &std::path::Path, here: bool) -> String {
    if here {
        format!("the data folder {} is already open in this process (another durably engine uses it); one folder serves one engine: give this one its own folder with configure({{ dataDir }})", path.display())
    } else {
        format!("the data folder {} is in use by another process (another server on this machine, or a leftover dev server); only one process can use a data folder at a time: when it exits this one takes over (a rolling deploy), or stop it, or give this process its own folder with configure({{ dataDir }}) or DURABLY_DATA_DIR", path.display())
    }
}

impl Error {
    /// The stable code JS sees as `err.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownTask { .. } => "E_UNKNOWN_TASK",
            Error::PayloadNotJson { .. } => "E_PAYLOAD_NOT_JSON",
            Error::PayloadTooLarge { .. } => "E_PAYLOAD_TOO_LARGE",
            Error::PayloadTooDeep { .. } => "E_PAYLOAD_TOO_DEEP",
            Error::DataDirLocked { .. } => "E_DATA_DIR_LOCKED",
            Error::BadDuration { .. } => "E_BAD_DURATION",
            Error::BadOption { .. } => "E_BAD_OPTION",
            Error::BadCron { .. } => "E_BAD_CRON",
            Error::RunNotFound { .. } => "E_RUN_NOT_FOUND",
            Error::IllegalTransition { .. } => "E_ILLEGAL_TRANSITION",
            Error::SchemaTooNew { .. } => "E_SCHEMA_TOO_NEW",
            Error::Store(_) => "E_STORE",
            Error::DiskFull(_) => "E_DISK_FULL",
            Error::NotAStore { .. } => "E_NOT_A_STORE",
            Error::Closed => "E_CLOSED",
            Error::Timeout { .. } => "E_TIMEOUT",
            Error::Internal(_) => "E_INTERNAL",
        }
    }

    /// Every code the core can produce; `docs/errors.md` must document each one.
    pub const CODES: &'static [&'static str] = &[
        "E_UNKNOWN_TASK",
        "E_PAYLOAD_NOT_JSON",
        "E_PAYLOAD_TOO_LARGE",
        "E_PAYLOAD_TOO_DEEP",
        "E_DATA_DIR_LOCKED",
        "E_BAD_DURATION",
        "E_BAD_OPTION",
        "E_BAD_CRON",
        "E_RUN_NOT_FOUND",
        "E_ILLEGAL_TRANSITION",
        "E_SCHEMA_TOO_NEW",
        "E_STORE",
        "E_DISK_FULL",
        "E_NOT_A_STORE",
        "E_CLOSED",
        "E_TIMEOUT",
        "E_INTERNAL",
        // Stored as the error of a run, not returned by a call:
        "E_RUN_POISONED",
    ];

    pub fn bad_option(option: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadOption {
            option: option.into(),
            reason: reason.into(),
        }
    }
}

/// ENOSPC (and EDQUOT): the disk, or the user's quota on it, is full.
pub(crate) fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == std::io::ErrorKind::StorageFull
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => io.into(),
            other => Error::Store(other.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if is_full(&e) {
            Error::DiskFull(e.to_string())
        } else {
            Error::Store(e.to_string())
        }
    }
}
