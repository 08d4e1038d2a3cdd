//! What the log counts about itself, for metrics and tests.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds, in microseconds, of the buckets of [`Stats::sync_latency_buckets`]; the
/// last bucket counts everything slower than the last bound.
pub const SYNC_LATENCY_BOUNDS_US: [u64; 12] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000];

/// Counters the log keeps about itself (for metrics and tests).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) records_appended: AtomicU64,
    pub(crate) bytes_appended: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) sync_nanos: AtomicU64,
    pub(crate) sync_latency: [AtomicU64; SYNC_LATENCY_BOUNDS_US.len() + 1],
    pub(crate) waiter_wakeups: AtomicU64,
    pub(crate) segments_dropped: AtomicU64,
    pub(crate) bytes_dropped: AtomicU64,
}

impl Counters {
    /// Counts one successful `fdatasync` that took `elapsed`.
    pub(crate) fn record_sync(&self, elapsed: Duration) {
        let micros = elapsed.as_micros() as u64;
        let bucket = SYNC_LATENCY_BOUNDS_US.partition_point(|&bound| bound < micros);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_nanos.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        self.sync_latency[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of the log's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Records appended since open.
    pub records_appended: u64,
    /// Store bytes appended since open (frames, headers included).
    pub bytes_appended: u64,
    /// Group-commit writes since open.
    pub writes: u64,
    /// `fdatasync` calls since open.
    pub syncs: u64,
    /// Time spent in `fdatasync`, in nanoseconds.
    pub sync_nanos: u64,
    /// `fdatasync` calls by duration: bucket `i` counts syncs that took at most
    /// [`SYNC_LATENCY_BOUNDS_US`]`[i]` microseconds (and more than the bound before); the
    /// last bucket counts the slower ones.
    pub sync_latency_buckets: [u64; SYNC_LATENCY_BOUNDS_US.len() + 1],
    /// Times a waiting reader was woken (by an append, close or poisoning).
    pub waiter_wakeups: u64,
    /// Sealed segments dropped from the front since open (retention, `truncate_before`,
    /// a Raft purge).
    pub segments_dropped: u64,
    /// Store bytes of those segments.
    pub bytes_dropped: u64,
}
