//! How a log is opened: segment limits, durability, the IO backend and what recovery does
//! with corruption. Every field has a default that suits a production service.

use crate::{Error, Result, io::SimDisk, record};

/// The end of a log's offset space: `next_offset()` never exceeds it, so the last record a
/// log can hold has offset `OFFSET_LIMIT - 1`. It is `i64::MAX` (Kafka's range), which
/// leaves room for `base + entries` of any segment without overflow.
pub(crate) const OFFSET_LIMIT: u64 = i64::MAX as u64;

/// When an append is acknowledged relative to the data reaching stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge once the record is written to the page cache. A killed process loses
    /// nothing; a lost machine may lose the records since the last sync (segments are
    /// synced when they roll and when the log closes).
    None,
    /// Acknowledge on write, and `fdatasync` in the background every `interval_ms` or after
    /// `bytes` unsynced bytes, whichever comes first.
    Interval {
        /// Longest time between syncs while there are unsynced records.
        interval_ms: u64,
        /// Sync once this many bytes are unsynced.
        bytes: u64,
    },
    /// Acknowledge only after an `fdatasync` that covers the record. Syncs are group
    /// commits, pipelined with writes: the appender keeps writing while a sync runs.
    Always,
}

/// Which IO backend performs appends.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// io_uring where the kernel allows it, otherwise `pwrite` (the reason is logged).
    #[default]
    Auto,
    /// io_uring; opening fails if the kernel does not allow it.
    IoUring,
    /// Plain `pwrite(2)`.
    Pwrite,
    /// An in-memory disk that keeps written and durable bytes apart, for tests.
    Simulated(SimDisk),
}

/// What recovery does when it finds corruption inside a sealed (non-active) segment.
/// A torn or corrupt tail of the active segment is always cut off: it holds the records
/// that were being written when the process stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnCorruption {
    /// Refuse to open, naming the file and byte position (the default: an operator decides).
    #[default]
    Fail,
    /// Cut the log at the first corrupt record: it and every later record are dropped.
    Truncate,
}

/// Everything needed to open a log.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest store file of a segment, header included. At most `u32::MAX`.
    pub store_bytes_max: u64,
    /// Largest index file of a segment, header included; the segment rolls when the next
    /// entry would not fit.
    pub index_bytes_max: u64,
    /// Offset of the first record of a new, empty log. At most `i64::MAX`.
    pub initial_offset: u64,
    /// Largest value accepted in one record.
    pub record_bytes_max: u32,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// The append backend.
    pub backend: Backend,
    /// What recovery does with corruption inside sealed segments.
    pub on_corruption: OnCorruption,
    /// Verify every record of every segment on open, not just the active segment and the
    /// last record of each sealed one. Slower to open; finds corruption before reads do.
    pub verify_on_open: bool,
    /// Upper bound on the bytes one group commit writes. Past about 1 MiB the buffer
    /// falls out of the CPU caches before the kernel copies it, and appends get slower
    /// (measured with `benches/examples/append_profile.rs`).
    pub batch_bytes_max: usize,
    /// With `None` and `Interval` durability: each time this many bytes have been appended
    /// since the last start, start writing them to the disk without waiting for it
    /// (`sync_file_range`, in whole 64 KiB blocks, on the syncer's thread, which with `None`
    /// starts with the first writeback). The disk then works while the log appends, so the
    /// next `fdatasync` (an interval's, a roll's, [`Log::sync`]'s, the close's) has little
    /// left to wait for, and the page cache never holds much dirty log. Acknowledgements
    /// do not change: nothing is durable before a sync. A writeback that fails poisons the
    /// log, as a failed sync does. `0` leaves writeback to the kernel. (`Always` syncs every
    /// group at once and ignores it.)
    ///
    /// [`Log::sync`]: crate::Log::sync
    pub writeback_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store_bytes_max: 1 << 30,
            index_bytes_max: 10 << 20,
            initial_offset: 0,
            record_bytes_max: 1 << 20,
            durability: Durability::None,
            backend: Backend::Auto,
            on_corruption: OnCorruption::Fail,
            verify_on_open: false,
            batch_bytes_max: 1 << 20,
            writeback_bytes: 256 << 10,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<()> {
        use crate::{index, store};
        let fail = |why: String| Err(Error::InvalidConfig(why));
        if self.initial_offset > OFFSET_LIMIT {
            return fail(format!("initial_offset {} exceeds {OFFSET_LIMIT}", self.initial_offset));
        }
        if self.store_bytes_max > u64::from(u32::MAX) {
            return fail(format!("store_bytes_max {} exceeds {}", self.store_bytes_max, u32::MAX));
        }
        if self.record_bytes_max > record::VALUE_LEN_LIMIT {
            return fail(format!(
                "record_bytes_max {} exceeds what a frame holds ({})",
                self.record_bytes_max,
                record::VALUE_LEN_LIMIT
            ));
        }
        let largest = store::HEADER_LEN as u64 + record::frame_len(self.record_bytes_max as usize) as u64;
        if self.store_bytes_max < largest {
            return fail(format!(
                "store_bytes_max {} cannot hold one record of record_bytes_max {} ({largest} bytes with headers)",
                self.store_bytes_max, self.record_bytes_max
            ));
        }
        if index::capacity(self.index_bytes_max) == 0 {
            return fail(format!("index_bytes_max {} cannot hold one index entry", self.index_bytes_max));
        }
        if let Durability::Interval { interval_ms, bytes } = self.durability
            && (interval_ms == 0 || bytes == 0)
        {
            return fail("durability interval needs interval_ms > 0 and bytes > 0".into());
        }
        if self.batch_bytes_max == 0 {
            return fail("batch_bytes_max must be > 0".into());
        }
        Ok(())
    }
}
