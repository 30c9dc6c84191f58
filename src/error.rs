//! The crate's one public error type.

use std::fmt;

/// What the caller can do about an [`Error`] (as SlateDB's RFC 0007: the kind tells the remedy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Checkpoint storage failed (network, disk, permissions); retrying may succeed.
    Storage,
    /// A file exists but its bytes are wrong: bad magic, version, checksum, length or encoding.
    Corrupt,
    /// A file or checkpoint that should exist does not.
    NotFound,
    /// The caller passed something that can never work (bad range, type mismatch, unknown state).
    InvalidArgument,
    /// The operation does not fit the current state (no current key, closed backend, unknown checkpoint).
    IllegalState,
    /// A coordinator of a newer generation of the job exists: this one must stop (it triggers, writes and
    /// deletes nothing more).
    Fenced,
}

/// Error of every fallible operation in this crate.
///
/// Errors about files name the file (its object-store path) in their message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Checkpoint storage returned an error for `path`.
    #[error("checkpoint storage failed on `{path}`: {source}")]
    Storage {
        /// Object-store path of the file.
        path: String,
        /// The underlying `object_store` error.
        #[source]
        source: object_store::Error,
    },
    /// The backend's local working directory failed on `path` (a disk error, or RocksDB's `message`).
    #[error("local state failed on `{path}`: {message}")]
    Local {
        /// Local file or directory, or the RocksDB operation.
        path: String,
        /// What the OS or RocksDB reported.
        message: String,
    },
    /// The file at `path` is corrupt or truncated.
    #[error("corrupt file `{path}`: {reason}")]
    Corrupt {
        /// Object-store path of the file (or a description of the in-memory buffer).
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The file at `path` does not exist.
    #[error("missing file `{path}`")]
    NotFound {
        /// Object-store path of the missing file.
        path: String,
    },
    /// An argument can never be valid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The call does not fit the current state.
    #[error("illegal state: {0}")]
    IllegalState(String),
    /// A coordinator of a newer generation of this job exists (`docs/protocol.md`, "Fencing"): this one
    /// (`generation`) triggers, completes and deletes nothing more; stop it. Kind [`ErrorKind::Fenced`].
    #[error(
        "a newer coordinator of this job exists (generation {newer}; this one is {generation}): stop this one"
    )]
    Fenced {
        /// This coordinator's generation.
        generation: u64,
        /// The newest generation found in storage.
        newer: u64,
    },
    /// A restored state cannot be read as registered: its kind, key, namespace or user key codec differs,
    /// or its value codec declares no migration from the stored one (Flink's
    /// `TypeSerializerSchemaCompatibility.incompatible()`). Kind [`ErrorKind::InvalidArgument`].
    #[error("state `{state}` is incompatible with its snapshot: {reason}")]
    IncompatibleSchema {
        /// Name of the state.
        state: String,
        /// What differs, with the registered and the stored identity.
        reason: String,
    },
}

impl Error {
    /// What the caller can do about this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Storage { .. } | Error::Local { .. } => ErrorKind::Storage,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::InvalidArgument(_) | Error::IncompatibleSchema { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::IllegalState(_) => ErrorKind::IllegalState,
            Error::Fenced { .. } => ErrorKind::Fenced,
        }
    }

    /// The path of the file this error is about, if it is about a file.
    pub fn path(&self) -> Option<&str> {
        match self {
            Error::Storage { path, .. }
            | Error::Local { path, .. }
            | Error::Corrupt { path, .. }
            | Error::NotFound { path } => Some(path),
            _ => None,
        }
    }

    pub(crate) fn corrupt(path: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Corrupt {
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }

    /// An error of the local working directory or of RocksDB.
    #[cfg_attr(
        not(feature = "rocksdb"),
        allow(dead_code, reason = "used by the LSM backend")
    )]
    pub(crate) fn local(path: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Local {
            path: path.to_string(),
            message: message.to_string(),
        }
    }

    /// Maps an `object_store` error on `path`: a missing object becomes [`Error::NotFound`].
    pub(crate) fn storage(path: impl fmt::Display, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound {
                path: path.to_string(),
            },
            source => Error::Storage {
                path: path.to_string(),
                source,
            },
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
