//! Retention: dropping whole sealed segments from the front of the log, below an offset
//! or by size and age, and sealing an idle active segment so that it can age out. The
//! active segment is never dropped.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::Log;
use crate::{appender::Message, entry::EntryKind, error::Result, segment::Segment};

/// Retention limits for [`Log::apply_retention`]. The active segment is never dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Drop the oldest segments while the log's store bytes exceed this.
    pub max_bytes: Option<u64>,
    /// Drop segments whose newest record is older than this.
    pub max_age: Option<Duration>,
}

impl Log {
    /// Drops every sealed segment whose records all lie below `offset`; the active segment
    /// is never dropped. Returns the number of segments dropped.
    pub fn truncate_before(&self, offset: u64) -> Result<usize> {
        let index = self.shared().offsets().index_of(offset);
        self.shared().drop_front(|segment| segment.next_index() <= index)
    }

    /// Drops the oldest sealed segments that break a retention limit.
    pub fn apply_retention(&self, retention: Retention) -> Result<usize> {
        let segments: Vec<Arc<Segment>> = self.shared().segments().clone();
        let count = breaking(&segments, retention, now_ms());
        let Some(last) = count.checked_sub(1).map(|i| segments[i].next_index()) else { return Ok(0) };
        self.shared().drop_front(|segment| segment.next_index() <= last)
    }

    /// The index retention would keep the log from, without dropping anything: the first
    /// index of the oldest segment that breaks no limit, when older ones do. A cluster's
    /// leader decides retention with it and replicates the decision.
    pub fn retention_point(&self, retention: Retention) -> Option<u64> {
        let segments: Vec<Arc<Segment>> = self.shared().segments().clone();
        let count = breaking(&segments, retention, now_ms());
        (count > 0).then(|| segments[count].base())
    }
}

/// How many of the oldest sealed segments of `segments` break a limit of `retention` (the
/// active segment never does). It reads segments (for their newest record's time): call it
/// on a copy of the list, not under its lock.
fn breaking(segments: &[Arc<Segment>], retention: Retention, now_ms: u64) -> usize {
    let mut total: u64 = segments.iter().map(|s| s.size()).sum();
    let sealed = &segments[..segments.len().saturating_sub(1)];
    sealed
        .iter()
        .take_while(|segment| {
            let over_size = retention.max_bytes.is_some_and(|max| total > max);
            let too_old = retention.max_age.is_some_and(|age| {
                newest_timestamp_ms(segment)
                    .is_some_and(|ts| now_ms.saturating_sub(ts) > age.as_millis() as u64)
            });
            if over_size || too_old {
                total -= segment.size();
            }
            over_size || too_old
        })
        .count()
}

impl Log {
    /// Seals the active segment if its oldest record is older than `age`, so that a quiet
    /// log still ages out (age retention never drops the active segment). A segment without
    /// records is left alone.
    pub fn roll_if_older(&self, age: Duration) -> Result<()> {
        let cutoff_ms = now_ms().saturating_sub(age.as_millis() as u64);
        self.call(|reply| Message::RollIfOlder(cutoff_ms, reply))
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Timestamp of a segment's last record.
/// Only records count: a Raft blank or membership entry may carry no time (0), which would
/// make a segment look ancient.
fn newest_timestamp_ms(segment: &Segment) -> Option<u64> {
    let mut index = segment.next_index();
    while index > segment.base() {
        index -= 1;
        let entry = segment.read_entries(index, 1, 0).ok()?.pop()?;
        if entry.kind == EntryKind::Data {
            return Some(entry.timestamp_ms);
        }
    }
    None
}
