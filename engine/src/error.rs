//! The engine's one error type.
//!
//! Corruption names the file and byte position where it starts; IO failures say what the
//! engine was doing. A failed write or sync poisons the log (see [`Error::Poisoned`]).

use std::{io, path::PathBuf, sync::Arc};

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The offset has not been written yet (it is at or past the log's next offset).
    #[error("offset out of range: {offset} (the next offset to be written is {next})")]
    OffsetNotWritten {
        /// The offset asked for.
        offset: u64,
        /// The offset the next append will get.
        next: u64,
    },
    /// The offset was dropped by retention (it is below the lowest retained offset).
    #[error("offset out of range: {offset} (the lowest retained offset is {lowest})")]
    OffsetBelowLowest {
        /// The offset asked for.
        offset: u64,
        /// The lowest offset still in the log.
        lowest: u64,
    },
    /// A record is larger than the configured limit.
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Length of the value.
        len: usize,
        /// The configured `record_bytes_max`.
        max: u32,
    },
    /// A batch is larger than one segment holds (batches never span segments, so that
    /// each is appended whole or not at all).
    #[error(
        "batch of {records} records and {bytes} bytes exceeds one segment ({records_max} records, {bytes_max} bytes)"
    )]
    BatchTooLarge {
        /// Records in the batch.
        records: usize,
        /// Frame bytes the batch needs.
        bytes: u64,
        /// Records one segment's index holds.
        records_max: usize,
        /// Frame bytes one segment's store holds.
        bytes_max: u64,
    },
    /// The append would take the log past the end of its offset space (`i64::MAX`).
    #[error("offsets exhausted: the next offset is {next}, and a log's offsets end at {limit}")]
    OffsetsExhausted {
        /// The offset the append would have started at.
        next: u64,
        /// The end of the offset space.
        limit: u64,
    },
    /// A batch append was given no records.
    #[error("a batch must hold at least one record")]
    EmptyBatch,
    /// Bytes on disk are not what the log wrote.
    #[error("corrupt {}: at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte position in the file where the corruption starts.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The disk is full. Nothing of the failed append was kept; appends resume once space is
    /// freed.
    #[error("disk full while appending to {}: {source}", path.display())]
    DiskFull {
        /// The store file being appended to.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
    /// An IO operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing, with the file.
        context: String,
        /// The error from the operating system.
        source: io::Error,
    },
    /// An earlier write or sync failed, so what is on disk is unknown: every append fails
    /// until the log is reopened (which recovers from what the disk really holds).
    #[error("log is poisoned by an earlier failure ({0}); reopen it to recover")]
    Poisoned(Arc<str>),
    /// The log was closed.
    #[error("log is closed")]
    Closed,
    /// Another process (or another open `Log` in this one) has the data directory open.
    #[error("data directory {} is in use ({holder}); stop the other ringlog first", dir.display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// Who holds it, where known (`locked by process 1234`).
        holder: String,
    },
    /// An entry given to `append_entries` does not continue the log.
    #[error("entry at index {index} cannot be appended: {reason}")]
    InvalidEntry {
        /// The entry's index.
        index: u64,
        /// Why not.
        reason: String,
    },
    /// The entries being read were removed by a suffix truncation meanwhile.
    #[error("entry {index} was removed by a truncation while it was read; read again")]
    Truncated {
        /// The first index of the read.
        index: u64,
    },
    /// The configuration cannot work.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Entries cannot be shipped or installed as asked (see `Log::files_through` and
    /// `Staging::install`).
    #[error("snapshot files: {0}")]
    Snapshot(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, position: u64, reason: impl ToString) -> Self {
        Error::Corrupt { path: path.into(), position, reason: reason.to_string() }
    }

    /// A copy for a second caller affected by the same failure (errors are not `Clone`:
    /// an IO error's source is copied as its kind and message).
    pub(crate) fn duplicate(&self) -> Error {
        let io = |source: &io::Error| io::Error::new(source.kind(), source.to_string());
        match self {
            Error::OffsetNotWritten { offset, next } => {
                Error::OffsetNotWritten { offset: *offset, next: *next }
            }
            Error::OffsetBelowLowest { offset, lowest } => {
                Error::OffsetBelowLowest { offset: *offset, lowest: *lowest }
            }
            Error::RecordTooLarge { len, max } => Error::RecordTooLarge { len: *len, max: *max },
            Error::BatchTooLarge { records, bytes, records_max, bytes_max } => Error::BatchTooLarge {
                records: *records,
                bytes: *bytes,
                records_max: *records_max,
                bytes_max: *bytes_max,
            },
            Error::OffsetsExhausted { next, limit } => Error::OffsetsExhausted { next: *next, limit: *limit },
            Error::EmptyBatch => Error::EmptyBatch,
            Error::Corrupt { path, position, reason } => {
                Error::Corrupt { path: path.clone(), position: *position, reason: reason.clone() }
            }
            Error::DiskFull { path, source } => Error::DiskFull { path: path.clone(), source: io(source) },
            Error::Io { context, source } => Error::Io { context: context.clone(), source: io(source) },
            Error::Poisoned(reason) => Error::Poisoned(Arc::clone(reason)),
            Error::Closed => Error::Closed,
            Error::Locked { dir, holder } => Error::Locked { dir: dir.clone(), holder: holder.clone() },
            Error::InvalidEntry { index, reason } => {
                Error::InvalidEntry { index: *index, reason: reason.clone() }
            }
            Error::Truncated { index } => Error::Truncated { index: *index },
            Error::InvalidConfig(why) => Error::InvalidConfig(why.clone()),
            Error::Snapshot(why) => Error::Snapshot(why.clone()),
        }
    }

    /// Whether the error means the offset is outside the log (below or past its ends).
    pub fn is_out_of_range(&self) -> bool {
        matches!(self, Error::OffsetNotWritten { .. } | Error::OffsetBelowLowest { .. })
    }
}

/// Adds "what was being done" to IO results.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::io(what(), source))
    }
}
