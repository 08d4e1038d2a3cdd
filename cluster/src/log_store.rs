//! openraft's log storage ([`RaftLogStorage`] and [`RaftLogReader`]) over the engine's [`Log`].
//!
//! The Raft log *is* the record log: each openraft entry is one engine entry at the same
//! `(term, index)`, written once, made durable by the engine's group commit:
//!
//! | openraft payload | engine kind  | engine payload            | `timestamp_ms`         |
//! |------------------|--------------|---------------------------|------------------------|
//! | `Normal(Record)` | `Data`       | the record's value        | the leader's timestamp |
//! | `Blank`          | `Blank`      | empty                     | 0                      |
//! | `Membership(m)`  | `Membership` | `m` in a versioned layout | 0                      |
//!
//! The vote and the committed log id live in the engine's metadata file.
//! [`LogStore`] and [`LogReader`] are both thin handles on one [`Log`], so a reader sees an
//! entry as soon as `append` returns, whichever handle it was taken from.
//!
//! How each contract is honoured:
//!
//! - **`append`** hands the entries to the engine, returns once the engine says they are
//!   published (readable through every handle), and calls [`IOFlushed::io_completed`] from the
//!   engine's durability callback, that is after the `fdatasync` covering them, or with its
//!   error (the engine is then poisoned and every later call fails).
//! - **No hole**: the engine accepts an append only at its next index, with contiguous indexes
//!   and terms that do not decrease; recovery stops at the first gap or term decrease. An
//!   append to a pristine log (no entries, nothing purged) that starts above its next index
//!   (the storage suite does this; openraft does not) first purges up to the index before it,
//!   so the log still reads as `(last_purged, last]` with nothing missing.
//! - **`save_vote`** is durable before it returns and never overtakes an earlier append: the
//!   engine waits until every earlier append is durable, then writes the vote.
//! - **`truncate_after`** removes the tail newest first and is durable before it returns.
//! - **`purge`** is logical: Raft stops reading the entries, which stay in the engine as the
//!   records consumers read (openraft purges up to a snapshot's last entry, and here the
//!   snapshot's data *is* those entries). Only retention deletes records: once the state
//!   machine applied a retention decision, a purge also deletes the entries below it, in
//!   whole segments ([`LogStore::delete_retained`]). A purge at or below the last one moves
//!   nothing. Purging past the last entry is the engine's purge, durable
//!   before it returns: it leaves an empty log whose next index follows the purged id. The
//!   logical purge point is not persisted (openraft allows it): after a restart Raft sees the
//!   engine's purge point again, with every entry above it present.
//! - **`get_log_state`**: `last_purged_log_id` is the later of the logical and the engine's
//!   purge points; `last_log_id` is the last present entry, or the purged id when no entry is
//!   present. It ignores the state machine.
//! - **`save_committed`** / **`read_committed`**: kept in the engine's metadata, which writes it
//!   with its next metadata write (a vote, a purge, a truncation) or on close: best effort, as
//!   openraft allows. A restarted node re-applies up to the committed id it finds; after a
//!   crash that may be older than what it had applied, and it catches up once it learns the
//!   cluster's commit (reads must wait for `Raft::wait_for_recovery` until then).
//! - **Reads** (`try_get_log_entries`) return every entry of the range the log holds: purged
//!   entries at the start and entries not yet appended at the end are absent, and a gap
//!   anywhere else is an error, never a silent hole. The engine reads one segment per call, so
//!   a read across segments is several calls; each is atomic, and openraft never truncates a
//!   range it is reading (a leader does not truncate its own log, and applied entries are
//!   committed). `limited_get_log_entries` is one engine call: one segment, about
//!   [`READ_BATCH_BYTES`] of frames, and at least one entry of a non-empty range the log
//!   holds.
//! - **`read_vote`** (on the reader) reads the same metadata `save_vote` wrote.
//!
//! Calls that wait for an `fdatasync` (`save_vote`, `truncate_after`, `purge`) run on the
//! runtime's blocking pool, so they never stall an async worker.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use ringlog_engine::{EntryId, Log};

use crate::codec::{self, entry_id, from_entry_id};
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// Frame bytes one `limited_get_log_entries` returns at most (it returns at least one entry).
pub const READ_BATCH_BYTES: usize = 1 << 20;

/// openraft's [`RaftLogStorage`] over a ringlog engine [`Log`].
#[derive(Clone)]
pub struct LogStore {
    log: Log,
    /// The logical purge point (see the module docs), shared with the readers.
    purged: Arc<Mutex<Option<LogId>>>,
    /// The latest retention decision applied (the state machine's): records below it may go
    /// once Raft has purged them.
    retention: Option<tokio::sync::watch::Receiver<u64>>,
}

/// openraft's [`RaftLogReader`] over a ringlog engine [`Log`]: a cheap clone of the store's
/// handle, for replication tasks and the apply path.
#[derive(Clone)]
pub struct LogReader {
    log: Log,
    purged: Arc<Mutex<Option<LogId>>>,
}

impl LogStore {
    /// A log store over `log`. The log should be opened with `Durability::Always` when the
    /// cluster promises that an acknowledged record survives a power loss on a majority.
    pub fn new(log: Log) -> Self {
        LogStore { log, purged: Arc::default(), retention: None }
    }

    /// Deletes the records below each retention decision `retention` brings (from the state
    /// machine), once Raft has purged their entries.
    pub fn deleting_below(mut self, retention: tokio::sync::watch::Receiver<u64>) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Deletes what retention decided and Raft has purged: every entry below the decided
    /// index that is at or below the logical purge point goes, in whole segments (the engine's
    /// purge). Called after each purge, and by the node when a decision arrives.
    pub async fn delete_retained(&self) -> io::Result<()> {
        let retain_from = self.retention.as_ref().map_or(0, |r| *r.borrow());
        let Some(logical) = *self.purged.lock().unwrap() else { return Ok(()) };
        let Some(upto) = retain_from.checked_sub(1).map(|last| last.min(logical.index)) else {
            return Ok(());
        };
        let deleted = self.log.meta().purged.map(|p| p.index);
        if deleted.is_some_and(|d| d >= upto) || upto < self.log.first_index() {
            return Ok(());
        }
        let log = self.log.clone();
        blocking(move || {
            let Some(id) = log.read_entries(upto, upto + 1, 0)?.first().map(|e| e.id) else { return Ok(()) };
            log.purge(id)
        })
        .await
    }

    /// The engine log underneath, for the record reads of `log.v1` consumers.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

/// The engine's errors, as openraft's storage traits want them. The one place they are mapped.
pub(crate) fn io_error(e: ringlog_engine::Error) -> io::Error {
    io::Error::other(e)
}

/// Runs a call that waits for the disk on the runtime's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ringlog_engine::Result<T> + Send + 'static,
) -> io::Result<T> {
    TypeConfig::spawn_blocking(f).await?.map_err(io_error)
}

/// `[start, end)` of a range of log indexes.
fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// Reads the entries in `[start, end)` the log holds: all of them, or with `limited` the first
/// engine read's worth (one segment, about [`READ_BATCH_BYTES`], at least one entry). Checks the
/// engine's no-hole promise on the way.
/// The later of the logical purge point and the engine's.
fn last_purged(log: &Log, logical: &Mutex<Option<LogId>>) -> Option<LogId> {
    let logical = *logical.lock().unwrap();
    logical.max(log.meta().purged.map(from_entry_id))
}

fn read(
    log: &Log,
    purged: &Mutex<Option<LogId>>,
    start: u64,
    end: u64,
    limited: bool,
) -> io::Result<Vec<Entry>> {
    let start = start.max(purged.lock().unwrap().map_or(0, |p| p.index + 1));
    let mut out = Vec::new();
    let mut next = start;
    while next < end {
        let max_bytes = if limited { READ_BATCH_BYTES } else { usize::MAX };
        let entries = log.read_entries(next, end, max_bytes).map_err(io_error)?;
        if entries.is_empty() {
            break;
        }
        for e in entries {
            let index = e.id.index;
            // Only the first entry of all may come later than asked (the ones before are purged).
            let in_place = if out.is_empty() { index >= next } else { index == next };
            if !in_place || index >= end {
                return Err(io::Error::other(format!(
                    "engine returned entry {index} where {next} was due, reading [{start}, {end}): a hole"
                )));
            }
            next = index + 1;
            out.push(codec::from_engine(e)?);
        }
        if limited {
            break;
        }
    }
    Ok(out)
}

/// The id of the last entry the log holds.
fn last_entry_id(log: &Log) -> io::Result<Option<EntryId>> {
    log.last_entry_id().map_err(io_error)
}

fn read_vote(log: &Log) -> io::Result<Option<Vote>> {
    log.meta().vote.map(|b| codec::decode_vote(&b)).transpose()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = index_range(&range);
        read(&self.log, &self.purged, start, end, false)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        read_vote(&self.log)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        read(&self.log, &self.purged, start, end, true)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id = last_purged(&self.log, &self.purged);
        let last_log_id = last_entry_id(&self.log)?.map(from_entry_id).max(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { log: self.log.clone(), purged: self.purged.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let bytes = codec::encode_vote(vote);
        let log = self.log.clone();
        blocking(move || log.save_vote(bytes)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        self.log.save_committed(committed.as_ref().map(entry_id)).map_err(io_error)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.log.meta().committed.map(from_entry_id))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().map(codec::to_engine).collect();
        let Some(first) = entries.first().map(|e| e.id) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        // Only an append past the next index asks whether the log is pristine (a disk read).
        if first.index > self.log.next_index()
            && self.log.meta().purged.is_none()
            && last_entry_id(&self.log)?.is_none()
        {
            // A log that never held anything asked to start above its next index. openraft
            // never does this (a follower that installs a snapshot purges up to it first), but
            // the storage suite does (it appends index 1 or 2 to a fresh log). Everything below
            // is absent, which is what a purge up to the entry before says; the engine appends
            // only at its next index, so record that purge first. After a purge, a gap is a
            // hole and the engine refuses it.
            let upto = EntryId { term: first.term, index: first.index - 1 };
            let log = self.log.clone();
            blocking(move || log.purge(upto)).await?;
        }
        let published = self
            .log
            .append_entries(entries, move |durable| callback.io_completed(durable.map_err(io_error)))
            .map_err(io_error)?;
        published.await.map_err(io_error)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let index = last_log_id.map(|id| id.index);
        let log = self.log.clone();
        blocking(move || log.truncate_after(index)).await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        if last_purged(&self.log, &self.purged).is_some_and(|p| p.index >= log_id.index) {
            return self.delete_retained().await; // Purged already: purges only move forward.
        }
        if log_id.index < self.log.next_index() {
            *self.purged.lock().unwrap() = Some(log_id);
            return self.delete_retained().await;
        }
        // Past the last entry: the log continues after it.
        let upto = entry_id(&log_id);
        let log = self.log.clone();
        blocking(move || log.purge(upto)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_ranges_are_half_open() {
        assert_eq!(index_range(&(3..7)), (3, 7));
        assert_eq!(index_range(&(3..=7)), (3, 8));
        assert_eq!(index_range(&(..7)), (0, 7));
        assert_eq!(index_range(&(3..)), (3, u64::MAX));
        assert_eq!(index_range(&(..=u64::MAX)), (0, u64::MAX));
        assert_eq!(index_range(&(Bound::Excluded(3), Bound::Unbounded)), (4, u64::MAX));
    }
}
