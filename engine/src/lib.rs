//! ringlog's storage engine: a durable, segmented, append-only commit log.
//!
//! A [`Log`] is a directory of segments; each segment is a store file of CRC-checked
//! record frames and a memory-mapped offset index. One appender thread batches the
//! appends of every caller into large writes (group commit) through a pluggable IO
//! backend (io_uring where the kernel allows it, `pwrite` otherwise), and acknowledges
//! each append when its [`Durability`] is met. Reads run on the caller's thread:
//! [`Log::read_from`] returns records, [`Log::read_each`] lends them one by one. Opening a
//! log recovers it from whatever an earlier run left: torn tails are cut, indexes are
//! checked and rebuilt. The on-disk format is documented in `docs/format.md`.
//!
//! The same log is a Raft log store: [`Log::append_entries`] places [`Entry`]s at the
//! index and term the caller chose, [`Log::truncate_after`] and [`Log::purge`] cut either
//! end, and [`Log::save_vote`] keeps the vote in a small metadata file. Records are the
//! data entries; their offsets skip the others.
//!
//! ```
//! use ringlog_engine::{Config, Durability, Log};
//!
//! let dir = tempfile::tempdir()?;
//! let config = Config { durability: Durability::Always, ..Config::default() };
//! let log = Log::open(dir.path(), config.clone())?;
//! let first = log.append(&b"hello"[..])?;
//! log.append_batch(vec![b"a"[..].into(), b"b"[..].into()])?;
//! assert_eq!(log.read(first)?.value, &b"hello"[..]);
//! assert_eq!(log.next_offset(), 3);
//! log.close()?;
//!
//! let log = Log::open(dir.path(), config)?; // recovers every record
//! assert_eq!(log.highest_offset(), Some(2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod appender;
mod config;
mod entry;
mod error;
mod header;
mod index;
mod io;
mod log;
mod meta;
mod offsets;
pub mod record;
mod recovery;
mod segment;
mod store;

pub use config::{Backend, Config, Durability, OnCorruption};
pub use entry::{Entry, EntryId, EntryKind};
pub use error::{Error, Result};
pub use io::{SimDisk, SimFault, SimWriteback};
pub use log::{
    AppendFuture, AppendTicket, BatchLimits, FilePart, Log, LogFiles, LogReader, Published, PublishedFuture,
    Retention, SYNC_LATENCY_BOUNDS_US, Staging, Stats,
};
pub use meta::Meta;
pub use record::{Record, RecordRef};
pub use recovery::RecoveryReport;
