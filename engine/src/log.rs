//! The log: a directory of segments behind a cheap, cloneable, `Send + Sync` handle.
//!
//! Two views of one sequence of entries: records by offset (producers and consumers; only
//! data entries have offsets) and entries by index (a Raft log store: entries at the
//! index and term the caller chose, suffix truncation, purge, vote and committed in the
//! metadata file). A single node only ever writes data entries, so its offsets are its
//! indexes.
//!
//! Appends, truncation and purge go to the appender thread (see `appender`); reads run on
//! the caller's thread against published state and never wait for the appender. Tailing
//! readers wait on an event the appender fires each time it publishes, so an idle
//! follower costs nothing. With `Durability::Always`, record readers see only durable
//! records: a record a power loss could erase is never delivered.

use std::{
    future::{Future, IntoFuture},
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    task::{Context, Poll},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use event_listener::{Event, Listener};
use tracing::{info, warn};

use crate::{
    appender::{Appender, Done, DurableCallback, Message, OffsetSender, Payload, Request},
    config::{Backend, Config, Durability},
    entry::{Entry, EntryId, EntryKind},
    error::{Error, IoContext, Result},
    index,
    io::{DirLock, Disk, pwrite::PwriteDisk},
    meta::{Meta, MetaFile},
    offsets::OffsetMap,
    record::{self, Record},
    recovery::{self, RecoveryReport},
    segment::{self, Segment, SegmentList},
    store,
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
}

/// State shared by the handle, the appender and the syncer.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) config: Config,
    pub(crate) disk: Arc<dyn Disk>,
    pub(crate) segments: RwLock<SegmentList>,
    /// The lowest index present (above a logical purge, at or above the first segment).
    pub(crate) first_index: AtomicU64,
    /// Every index below this is readable.
    pub(crate) next_index: AtomicU64,
    /// Every index below this is on stable storage.
    pub(crate) durable_index: AtomicU64,
    /// The non-data entries, for translating offsets and indexes.
    pub(crate) offsets: RwLock<OffsetMap>,
    /// The metadata file as last written (and `save_committed`'s value).
    meta: Mutex<MetaFile>,
    /// A `save_committed` is not in the file yet.
    pub(crate) meta_unwritten: AtomicBool,
    /// Held while an `fdatasync` runs: the log syncs one file at a time (see `sync_file`).
    pub(crate) sync_lock: Mutex<()>,
    /// Bumped by every suffix truncation, so a reader can tell its read raced with one.
    pub(crate) truncations: AtomicU64,
    /// Fired when `next_index` (or, with `Always`, `durable_index`) moves, and on close
    /// and poisoning.
    pub(crate) appended: Event,
    pub(crate) poison: OnceLock<Arc<str>>,
    pub(crate) closed: AtomicBool,
    pub(crate) stats: Counters,
    /// The data directory's lock, released on close.
    dir_lock: Mutex<Option<DirLock>>,
}

impl Shared {
    pub(crate) fn active(&self) -> Arc<Segment> {
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(segments.last().expect("a log always has a segment"))
    }

    pub(crate) fn set_poison(&self, error: &Error) {
        self.set_poison_reason(&error.to_string());
    }

    pub(crate) fn set_poison_reason(&self, reason: &str) {
        self.poison.get_or_init(|| reason.into());
        self.appended.notify(usize::MAX);
    }

    pub(crate) fn poison_error(&self) -> Error {
        match self.poison.get() {
            Some(reason) => Error::Poisoned(Arc::clone(reason)),
            None => Error::Closed,
        }
    }

    fn segments(&self) -> std::sync::RwLockReadGuard<'_, SegmentList> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    fn offsets(&self) -> std::sync::RwLockReadGuard<'_, OffsetMap> {
        self.offsets.read().unwrap_or_else(|p| p.into_inner())
    }

    fn meta_file(&self) -> std::sync::MutexGuard<'_, MetaFile> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rewrites the metadata file (atomically and durably) after `update`, with the
    /// offset map as it is now. A failure poisons the log: whether the vote reached the
    /// disk is unknown.
    pub(crate) fn write_meta(&self, update: impl FnOnce(&mut MetaFile)) -> Result<()> {
        let mut current = self.meta_file();
        let mut file = current.clone();
        update(&mut file);
        {
            let offsets = self.offsets();
            let checked = self.next_index.load(Ordering::Acquire);
            let (below, gaps) = offsets.parts();
            file.gaps_below = below;
            file.gaps = gaps.iter().copied().filter(|&gap| gap < checked).collect();
            file.gaps_checked = checked;
        }
        if let Err(error) = file.store(self.disk.as_ref(), &self.dir) {
            self.set_poison(&error);
            return Err(error);
        }
        *current = file;
        self.meta_unwritten.store(false, Ordering::Release);
        Ok(())
    }

    /// The term of the entry before `next` (0 when there is none).
    pub(crate) fn last_term_before(&self, next: u64) -> u64 {
        let first = self.first_index.load(Ordering::Acquire);
        if next > first
            && let Ok(entries) = self.read_raw(next - 1, next, 1, 0)
        {
            return entries[0].id.term;
        }
        self.meta_file().meta.purged.filter(|purged| purged.index + 1 == next).map_or(0, |p| p.term)
    }

    /// Entries from `index` (present in the log) below `end`: at most `max_entries` and
    /// `max_bytes` of frames (at least one entry), from one segment. A read that races
    /// with a suffix truncation of its range fails with [`Error::Truncated`].
    pub(crate) fn read_raw(
        &self,
        index: u64,
        end: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        let epoch = self.truncations.load(Ordering::Acquire);
        let segment = {
            let segments = self.segments();
            match segment::find(&segments, index) {
                Some(segment) => Arc::clone(segment),
                None => return Err(Error::Truncated { index }),
            }
        };
        let available = segment.next_index().min(end).saturating_sub(index);
        let result = if available == 0 {
            Err(Error::Truncated { index })
        } else {
            segment.read_entries(index, max_entries.min(available as usize), max_bytes)
        };
        if self.truncations.load(Ordering::Acquire) != epoch {
            let next = self.next_index.load(Ordering::Acquire);
            match &result {
                Ok(entries) if entries.last().is_some_and(|e| e.id.index < next) => {}
                _ => return Err(Error::Truncated { index }),
            }
        }
        result
    }

    /// Removes leading sealed segments while `drop` says so; the first index follows.
    pub(crate) fn drop_front(&self, mut drop: impl FnMut(&Segment) -> bool) -> Result<usize> {
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write().unwrap_or_else(|p| p.into_inner());
            let sealed = segments.len() - 1;
            let count = segments[..sealed].iter().take_while(|s| drop(s)).count();
            let removed: Vec<_> = segments.drain(..count).collect();
            let first =
                self.first_index.fetch_max(segments[0].base(), Ordering::AcqRel).max(segments[0].base());
            self.offsets.write().unwrap_or_else(|p| p.into_inner()).forget_below(first);
            removed
        };
        for segment in &removed {
            segment.remove(self.disk.as_ref())?;
        }
        if !removed.is_empty() {
            self.disk.sync_dir(&self.dir).context(|| format!("syncing directory {}", self.dir.display()))?;
            info!(
                segments = removed.len(),
                first_index = self.first_index.load(Ordering::Acquire),
                "dropped segments"
            );
        }
        Ok(removed.len())
    }

    /// The index below which record readers may read: published, or with `Always` durable.
    fn visible_index(&self) -> u64 {
        match self.config.durability {
            Durability::Always => self.durable_index.load(Ordering::Acquire),
            _ => self.next_index.load(Ordering::Acquire),
        }
    }
}

/// The largest batch a log accepts (see [`Log::batch_limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Records in one batch.
    pub records_max: usize,
    /// Frame bytes in one batch ([`record::frame_len`] of each value).
    pub bytes_max: u64,
}

/// Retention limits for [`Log::apply_retention`]. The active segment is never dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Drop the oldest segments while the log's store bytes exceed this.
    pub max_bytes: Option<u64>,
    /// Drop segments whose newest record is older than this.
    pub max_age: Option<Duration>,
}

/// A durable, segmented, append-only log. Cloning the handle is cheap; all clones share
/// one log, which closes when [`Log::close`] is called or the last clone is dropped.
///
/// Offsets: `lowest_offset()..next_offset()` are readable. Reading at or past
/// `next_offset()` is [`Error::OffsetNotWritten`]; below `lowest_offset()` it is
/// [`Error::OffsetBelowLowest`].
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Message>,
    appender: Mutex<Option<thread::JoinHandle<()>>>,
    report: RecoveryReport,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.shared.dir)
            .field("backend", &self.backend())
            .field("lowest", &self.lowest_offset())
            .field("next", &self.next_offset())
            .finish()
    }
}

fn choose_disk(backend: &Backend) -> Result<Arc<dyn Disk>> {
    match backend {
        Backend::Pwrite => Ok(Arc::new(PwriteDisk)),
        Backend::Simulated(sim) => Ok(Arc::new(sim.clone())),
        #[cfg(target_os = "linux")]
        Backend::IoUring => crate::io::uring::UringDisk::probe()
            .map(|disk| Arc::new(disk) as Arc<dyn Disk>)
            .map_err(|e| Error::InvalidConfig(format!("io_uring is not available: {e}"))),
        #[cfg(target_os = "linux")]
        Backend::Auto => match crate::io::uring::UringDisk::probe() {
            Ok(disk) => Ok(Arc::new(disk)),
            Err(reason) => {
                warn!(%reason, "io_uring is not available; appending with pwrite instead \
                      (check the kernel version and any seccomp or container policy that blocks io_uring_setup)");
                Ok(Arc::new(PwriteDisk))
            }
        },
        #[cfg(not(target_os = "linux"))]
        Backend::IoUring => Err(Error::InvalidConfig("io_uring needs Linux".into())),
        #[cfg(not(target_os = "linux"))]
        Backend::Auto => Ok(Arc::new(PwriteDisk)),
    }
}

impl Log {
    /// Opens the log in `dir`, creating it if needed, and recovers whatever an earlier
    /// run left (see the `recovery` module docs for what that means). The directory is
    /// locked while the log is open: a second opener fails with [`Error::Locked`].
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let disk = choose_disk(&config.backend)?;
        recovery::create_dir(disk.as_ref(), &dir)?;
        let dir_lock = disk.lock_dir(&dir).map_err(|error| match error.kind() {
            io::ErrorKind::WouldBlock => Error::Locked { dir: dir.clone(), holder: error.to_string() },
            _ => Error::io(format!("locking data directory {}", dir.display()), error),
        })?;
        let recovered = recovery::recover(disk.as_ref(), &dir, &config)?;
        let next = recovered.segments.last().expect("recovery leaves a segment").next_index();
        info!(dir = %dir.display(), backend = disk.name(), durability = ?config.durability,
              first_index = recovered.first_index, next_index = next, "opened log");
        let shared = Arc::new(Shared {
            dir,
            config,
            disk,
            segments: RwLock::new(recovered.segments),
            first_index: AtomicU64::new(recovered.first_index),
            next_index: AtomicU64::new(next),
            durable_index: AtomicU64::new(next),
            offsets: RwLock::new(recovered.offsets),
            meta: Mutex::new(recovered.meta),
            meta_unwritten: AtomicBool::new(false),
            sync_lock: Mutex::new(()),
            truncations: AtomicU64::new(0),
            appended: Event::new(),
            poison: OnceLock::new(),
            closed: AtomicBool::new(false),
            stats: Counters::default(),
            dir_lock: Mutex::new(Some(dir_lock)),
        });
        let (tx, rx) = mpsc::channel();
        let appender = Appender::spawn(Arc::clone(&shared), rx, recovered.last_term)
            .context(|| "starting the appender thread".into())?;
        let report = recovered.report;
        Ok(Log { inner: Arc::new(Inner { shared, tx, appender: Mutex::new(Some(appender)), report }) })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Checks a batch against the record limit and one segment's room; returns its frame
    /// bytes.
    fn check_batch<'a>(&self, values: impl ExactSizeIterator<Item = &'a [u8]>) -> Result<u64> {
        let count = values.len();
        if count == 0 {
            return Err(Error::EmptyBatch);
        }
        let max = self.shared().config.record_bytes_max;
        let mut bytes = 0u64;
        for value in values {
            if value.len() > max as usize {
                return Err(Error::RecordTooLarge { len: value.len(), max });
            }
            bytes += record::frame_len(value.len()) as u64;
        }
        // A batch must fit in one segment, so that it is appended whole or not at all.
        let BatchLimits { records_max, bytes_max } = self.batch_limits();
        if bytes > bytes_max || count > records_max {
            return Err(Error::BatchTooLarge { records: count, bytes, records_max, bytes_max });
        }
        Ok(bytes)
    }

    fn send(&self, message: Message) -> Result<()> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if shared.poison.get().is_some() {
            return Err(shared.poison_error());
        }
        self.inner.tx.send(message).map_err(|_| shared.poison_error())
    }

    /// Sends a control message to the appender and waits for its answer.
    fn call(&self, message: impl FnOnce(oneshot::Sender<Result<()>>) -> Message) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(message(reply))?;
        answer.recv().unwrap_or_else(|_| Err(self.shared().poison_error()))
    }

    /// Hands records to the appender without waiting; the ticket completes with the first
    /// record's offset (the rest follow contiguously) once the durability setting is met.
    /// A batch is atomic: all of its records become readable at once, or none do. It must
    /// therefore fit in one segment ([`Error::BatchTooLarge`] otherwise).
    pub fn submit(&self, values: Vec<Bytes>) -> Result<AppendTicket> {
        let frame_bytes = self.check_batch(values.iter().map(|v| &v[..]))?;
        let (done, rx) = oneshot::channel();
        let done = Done::Offset(OffsetSender::new(done));
        self.send(Message::Append(Request { payload: Payload::Records(values), frame_bytes, done }))?;
        Ok(AppendTicket { rx })
    }

    /// The largest batch [`Log::submit`] accepts: one segment's worth.
    pub fn batch_limits(&self) -> BatchLimits {
        let config = &self.shared().config;
        BatchLimits {
            records_max: index::capacity(config.index_bytes_max) as usize,
            bytes_max: config.store_bytes_max - store::HEADER_LEN as u64,
        }
    }

    /// Appends one record and waits for it; returns its offset. Blocks the thread: from
    /// async code, `.await` the ticket from [`Log::submit`] instead.
    pub fn append(&self, value: impl Into<Bytes>) -> Result<u64> {
        self.submit(vec![value.into()])?.wait()
    }

    /// Appends records with contiguous offsets and waits; returns the first offset.
    pub fn append_batch(&self, values: Vec<Bytes>) -> Result<u64> {
        self.submit(values)?.wait()
    }

    /// Reads the record at `offset`.
    pub fn read(&self, offset: u64) -> Result<Record> {
        let mut records = self.read_from(offset, 1, 0)?;
        Ok(records.pop().expect("read_from returns at least one record"))
    }

    /// Reads records from `offset` on: at most `max_records`, and at most `max_bytes` of
    /// frames, but always at least one record. Stops at a segment boundary, so it may
    /// return fewer than asked; call again from the next offset.
    pub fn read_from(&self, offset: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>> {
        let shared = self.shared();
        let visible = shared.visible_index();
        let first = shared.first_index.load(Ordering::Acquire);
        let (mut index, next, lowest) = {
            let offsets = shared.offsets();
            (offsets.index_of(offset), offsets.offset_of(visible), offsets.offset_of(first))
        };
        if offset >= next {
            return Err(Error::OffsetNotWritten { offset, next });
        }
        if offset < lowest {
            return Err(Error::OffsetBelowLowest { offset, lowest });
        }
        let mut records = Vec::new();
        while records.is_empty() && index < visible {
            let entries = shared.read_raw(index, visible, max_records, max_bytes)?;
            index = entries.last().map_or(visible, |e| e.id.index + 1);
            let data = entries.into_iter().filter(|e| e.kind == EntryKind::Data);
            records.extend(data.enumerate().map(|(i, e)| Record {
                offset: offset + i as u64,
                timestamp_ms: e.timestamp_ms,
                value: e.payload,
            }));
        }
        match records.is_empty() {
            true => Err(Error::OffsetNotWritten { offset, next }),
            false => Ok(records),
        }
    }

    /// The lowest offset still in the log (equal to `next_offset()` when it is empty).
    pub fn lowest_offset(&self) -> u64 {
        let shared = self.shared();
        let first = shared.first_index.load(Ordering::Acquire);
        shared.offsets().offset_of(first).min(self.next_offset())
    }

    /// The offset the next record appended will get.
    pub fn next_offset(&self) -> u64 {
        let shared = self.shared();
        shared.offsets().offset_of(shared.next_index.load(Ordering::Acquire))
    }

    /// The offset of the last record, or `None` when the log holds no records.
    pub fn highest_offset(&self) -> Option<u64> {
        let next = self.next_offset();
        (next > self.lowest_offset()).then(|| next - 1)
    }

    /// Every record below this offset is on stable storage.
    pub fn durable_offset(&self) -> u64 {
        let shared = self.shared();
        shared.offsets().offset_of(shared.durable_index.load(Ordering::Acquire))
    }

    /// Waits until the record at `offset` can be read (with `Durability::Always`: until it
    /// is durable); returns the offset below which records can be read. Woken by appends,
    /// never by polling. Fails when the log closes or is poisoned. Works with any async
    /// runtime.
    pub async fn wait_for(&self, offset: u64) -> Result<u64> {
        loop {
            if let Some(result) = self.check_wait(offset) {
                return result;
            }
            let listener = self.shared().appended.listen();
            if let Some(result) = self.check_wait(offset) {
                return result;
            }
            listener.await;
            self.shared().stats.waiter_wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Blocking [`Log::wait_for`] with an optional deadline; `Ok(None)` on timeout.
    pub fn wait_for_blocking(&self, offset: u64, timeout: Option<Duration>) -> Result<Option<u64>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(result) = self.check_wait(offset) {
                return result.map(Some);
            }
            let listener = self.shared().appended.listen();
            if let Some(result) = self.check_wait(offset) {
                return result.map(Some);
            }
            match deadline {
                Some(deadline) => {
                    if listener.wait_deadline(deadline).is_none() {
                        return Ok(None);
                    }
                }
                None => listener.wait(),
            }
            self.shared().stats.waiter_wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn check_wait(&self, offset: u64) -> Option<Result<u64>> {
        let shared = self.shared();
        let next = shared.offsets().offset_of(shared.visible_index());
        if next > offset {
            Some(Ok(next))
        } else if shared.poison.get().is_some() {
            Some(Err(shared.poison_error()))
        } else if shared.closed.load(Ordering::Acquire) {
            Some(Err(Error::Closed))
        } else {
            None
        }
    }

    /// Drops every sealed segment whose records all lie below `offset`; the active segment
    /// is never dropped. Returns the number of segments dropped.
    pub fn truncate_before(&self, offset: u64) -> Result<usize> {
        let index = self.shared().offsets().index_of(offset);
        self.shared().drop_front(|segment| segment.next_index() <= index)
    }

    /// Drops the oldest sealed segments that break a retention limit.
    pub fn apply_retention(&self, retention: Retention) -> Result<usize> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut total: u64 = self.shared().segments().iter().map(|s| s.size()).sum();
        self.shared().drop_front(|segment| {
            let over_size = retention.max_bytes.is_some_and(|max| total > max);
            let too_old = retention.max_age.is_some_and(|age| {
                newest_timestamp_ms(segment)
                    .is_some_and(|ts| now_ms.saturating_sub(ts) > age.as_millis() as u64)
            });
            if over_size || too_old {
                total -= segment.size();
                true
            } else {
                false
            }
        })
    }

    /// A reader over the frames of every entry from the first segment to the next index at
    /// the time of the call, in each segment's format: a consistent snapshot (later
    /// appends, retention and close do not change what it returns). Decode version-2
    /// frames with [`record::decode`].
    pub fn reader(&self) -> LogReader {
        let next = self.shared().next_index.load(Ordering::Acquire);
        let segments = self.shared().segments().clone();
        let parts = segments
            .into_iter()
            .filter(|s| s.base() < next)
            .map(|s| {
                let end = if s.next_index() <= next { s.size() } else { s.frame_start(next) };
                (s, end)
            })
            .collect();
        LogReader { parts, part: 0, position: store::HEADER_LEN as u64 }
    }

    /// Makes every record appended so far durable (an `fdatasync` of the active segment,
    /// through the appender, so it is ordered after every append submitted before it).
    pub fn sync(&self) -> Result<()> {
        self.call(Message::Sync)
    }

    /// The index the next entry gets ([`Log::append_entries`] must start there).
    pub fn next_index(&self) -> u64 {
        self.shared().next_index.load(Ordering::Acquire)
    }

    /// The lowest index present (equal to `next_index()` when the log holds no entries).
    pub fn first_index(&self) -> u64 {
        self.shared().first_index.load(Ordering::Acquire).min(self.next_index())
    }

    /// The term and index of the last entry, or `None` when the log holds none.
    pub fn last_entry_id(&self) -> Option<EntryId> {
        loop {
            let next = self.next_index();
            if next <= self.first_index() {
                return None;
            }
            match self.shared().read_raw(next - 1, next, 1, 0) {
                Ok(entries) => return Some(entries[0].id),
                Err(Error::Truncated { .. }) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Appends entries at the indexes they carry: the first must be [`Log::next_index`],
    /// the rest contiguous, terms never decreasing ([`Error::InvalidEntry`] otherwise).
    /// The ticket completes once they are readable; `on_durable` is called (on an engine
    /// thread, so it must be quick and must not panic: a panic there poisons the log)
    /// once the durability setting is met for all of them, or with the error. Unlike a
    /// record batch, entries need not fit in one segment: a long list is appended in
    /// segment-sized groups (a failure may leave a prefix of it appended, as Raft allows).
    pub fn append_entries(
        &self,
        entries: Vec<Entry>,
        on_durable: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<Published> {
        let limits = self.batch_limits();
        let mut groups: Vec<(Vec<Entry>, u64)> = Vec::new();
        for entry in entries {
            let max = self.shared().config.record_bytes_max;
            if entry.payload.len() > max as usize {
                return Err(Error::RecordTooLarge { len: entry.payload.len(), max });
            }
            let bytes = record::frame_len(entry.payload.len()) as u64;
            match groups.last_mut() {
                Some((group, group_bytes))
                    if group.len() < limits.records_max && *group_bytes + bytes <= limits.bytes_max =>
                {
                    group.push(entry);
                    *group_bytes += bytes;
                }
                _ => groups.push((vec![entry], bytes)),
            }
        }
        if groups.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let on_durable = Arc::new(Mutex::new(JoinedCallback {
            remaining: groups.len(),
            error: None,
            callback: Some(Box::new(on_durable)),
        }));
        let mut published = Vec::with_capacity(groups.len());
        for (group, frame_bytes) in groups {
            let (done, rx) = oneshot::channel();
            let joined = Arc::clone(&on_durable);
            let on_durable =
                DurableCallback::new(Box::new(move |result| JoinedCallback::complete(&joined, result)));
            let request = Request {
                payload: Payload::Entries(group),
                frame_bytes,
                done: Done::Entries { published: done, on_durable },
            };
            self.send(Message::Append(request))?;
            published.push(rx);
        }
        Ok(Published { rx: published })
    }

    /// Entries with indexes in `start..end` that the log holds (purged ones and ones past
    /// the end are left out; there is never a hole): at most `max_bytes` of frames but at
    /// least one entry when any is in range, from one segment, so it may return fewer
    /// than the range holds; call again from the next index. Entries are readable as soon
    /// as they are published, whatever the durability setting.
    pub fn read_entries(&self, start: u64, end: u64, max_bytes: usize) -> Result<Vec<Entry>> {
        loop {
            let start = start.max(self.first_index());
            let end = end.min(self.next_index());
            if start >= end {
                return Ok(Vec::new());
            }
            match self.shared().read_raw(start, end, usize::MAX, max_bytes) {
                Err(Error::Truncated { .. }) => continue,
                result => return result,
            }
        }
    }

    /// Removes every entry after `index` (`None`: every entry the log holds), newest first,
    /// across segments; durable before it returns. Readers inside the removed range get
    /// [`Error::Truncated`]. The offsets of records after `index` will be given again.
    pub fn truncate_after(&self, index: Option<u64>) -> Result<()> {
        self.call(|reply| Message::TruncateAfter(index, reply))
    }

    /// Purges every entry up to and including `upto`: recorded durably, then readers no
    /// longer see them and whole segments below it are deleted. `upto` may lie past the
    /// last entry: the log is then empty and continues at `upto.index + 1` (entries it
    /// never held are counted as records for offsets).
    pub fn purge(&self, upto: EntryId) -> Result<()> {
        self.call(|reply| Message::Purge(upto, reply))
    }

    /// The vote, committed and purged ids the log keeps.
    pub fn meta(&self) -> Meta {
        self.shared().meta_file().meta.clone()
    }

    /// Stores `vote` durably, after every append submitted before this call is durable
    /// (openraft's IO ordering: a vote is never on disk ahead of earlier entries).
    pub fn save_vote(&self, vote: Bytes) -> Result<()> {
        self.sync()?;
        self.shared().write_meta(|file| file.meta.vote = Some(vote))
    }

    /// Keeps `committed`; it reaches the disk with the next metadata write or on close
    /// (best effort, as openraft allows).
    pub fn save_committed(&self, committed: Option<EntryId>) -> Result<()> {
        let shared = self.shared();
        if shared.poison.get().is_some() {
            return Err(shared.poison_error());
        }
        shared.meta_file().meta.committed = committed;
        shared.meta_unwritten.store(true, Ordering::Release);
        Ok(())
    }

    /// Finishes queued appends, syncs, trims the active index to its real size, stops the
    /// appender and releases the directory. Later calls on any clone fail with
    /// [`Error::Closed`]. A poisoned log reports its poison here.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }

    /// Closes the log and deletes its files.
    pub fn remove(self) -> Result<()> {
        self.close()?;
        let shared = self.shared();
        let segments = shared.segments().clone();
        for segment in &segments {
            segment.remove(shared.disk.as_ref())?;
        }
        for name in [crate::meta::FILE_NAME, crate::io::LOCK_FILE] {
            let path = shared.dir.join(name);
            match shared.disk.remove(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("removing {}", path.display()), e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The backend appends go through (`io_uring`, `pwrite` or `simulated`).
    pub fn backend(&self) -> &'static str {
        self.shared().disk.name()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared().dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &Config {
        &self.shared().config
    }

    /// What recovery found when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.shared().segments().len()
    }

    /// Store bytes held by the log.
    pub fn size_bytes(&self) -> u64 {
        self.shared().segments().iter().map(|s| s.size()).sum()
    }

    /// The log's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared().stats;
        Stats {
            records_appended: c.records_appended.load(Ordering::Relaxed),
            bytes_appended: c.bytes_appended.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            sync_nanos: c.sync_nanos.load(Ordering::Relaxed),
            sync_latency_buckets: std::array::from_fn(|i| c.sync_latency[i].load(Ordering::Relaxed)),
            waiter_wakeups: c.waiter_wakeups.load(Ordering::Relaxed),
        }
    }

    /// The reason the log is poisoned, if it is.
    pub fn poisoned(&self) -> Option<Arc<str>> {
        self.shared().poison.get().cloned()
    }
}

impl Inner {
    fn close(&self) -> Result<()> {
        let Some(appender) = self.appender.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return match self.shared.poison.get() {
                Some(_) => Err(self.shared.poison_error()),
                None => Ok(()),
            };
        };
        self.shared.closed.store(true, Ordering::Release);
        let (reply, done) = oneshot::channel();
        let result = match self.tx.send(Message::Close(reply)) {
            Ok(()) => done.recv().unwrap_or_else(|_| Err(self.shared.poison_error())),
            Err(_) => Err(self.shared.poison_error()),
        };
        let _ = appender.join();
        self.shared.dir_lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.shared.appended.notify(usize::MAX);
        match (result, self.shared.poison.get()) {
            (Ok(()), Some(_)) => Err(self.shared.poison_error()),
            (result, _) => result,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            warn!(%error, "closing the log on drop failed");
        }
    }
}

/// Timestamp of a segment's last entry.
fn newest_timestamp_ms(segment: &Segment) -> Option<u64> {
    let last = segment.next_index().checked_sub(1).filter(|&i| i >= segment.base())?;
    segment.read_entries(last, 1, 0).ok()?.first().map(|e| e.timestamp_ms)
}

/// A pending append; [`wait`](AppendTicket::wait) for it or `.await` it.
#[must_use = "an append is acknowledged through its ticket"]
pub struct AppendTicket {
    rx: oneshot::Receiver<Result<u64>>,
}

impl AppendTicket {
    /// Blocks until the append completes; returns the first offset.
    pub fn wait(self) -> Result<u64> {
        self.rx.recv().unwrap_or(Err(Error::Closed))
    }
}

/// The `on_durable` of an `append_entries` split into several groups: called once, when
/// every group is durable, with the first error.
struct JoinedCallback {
    remaining: usize,
    error: Option<Error>,
    callback: Option<Box<dyn FnOnce(Result<()>) + Send>>,
}

impl JoinedCallback {
    fn complete(joined: &Mutex<JoinedCallback>, result: Result<()>) {
        let mut joined = joined.lock().unwrap_or_else(|p| p.into_inner());
        joined.remaining -= 1;
        if let Err(error) = result {
            joined.error.get_or_insert(error);
        }
        if joined.remaining == 0
            && let Some(callback) = joined.callback.take()
        {
            let error = joined.error.take();
            drop(joined);
            callback(error.map_or(Ok(()), Err));
        }
    }
}

/// Entries handed to [`Log::append_entries`]: completes once they are readable.
#[must_use = "entries are readable only once the ticket completes"]
pub struct Published {
    rx: Vec<oneshot::Receiver<Result<()>>>,
}

impl Published {
    /// Blocks until the entries are readable (or the append failed).
    pub fn wait(self) -> Result<()> {
        for rx in self.rx {
            rx.recv().unwrap_or(Err(Error::Closed))?;
        }
        Ok(())
    }
}

impl IntoFuture for Published {
    type Output = Result<()>;
    type IntoFuture = PublishedFuture;
    fn into_future(self) -> PublishedFuture {
        PublishedFuture { rx: self.rx.into_iter().map(IntoFuture::into_future).collect() }
    }
}

/// The future of a [`Published`] ticket.
pub struct PublishedFuture {
    rx: std::collections::VecDeque<oneshot::AsyncReceiver<Result<()>>>,
}

impl Future for PublishedFuture {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        while let Some(rx) = self.rx.front_mut() {
            match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    self.rx.pop_front();
                    result.unwrap_or(Err(Error::Closed))?;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl IntoFuture for AppendTicket {
    type Output = Result<u64>;
    type IntoFuture = AppendFuture;
    fn into_future(self) -> AppendFuture {
        AppendFuture { rx: self.rx.into_future() }
    }
}

/// The future of an [`AppendTicket`].
pub struct AppendFuture {
    rx: oneshot::AsyncReceiver<Result<u64>>,
}

impl Future for AppendFuture {
    type Output = Result<u64>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// Reads a snapshot of the log's frames; see [`Log::reader`].
pub struct LogReader {
    parts: Vec<(Arc<Segment>, u64)>,
    part: usize,
    position: u64,
}

impl io::Read for LogReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some((segment, end)) = self.parts.get(self.part) {
            if self.position >= *end {
                self.part += 1;
                self.position = store::HEADER_LEN as u64;
                continue;
            }
            let len = buf.len().min((*end - self.position) as usize);
            segment.store.file().read_exact_at(&mut buf[..len], self.position)?;
            self.position += len as u64;
            return Ok(len);
        }
        Ok(0)
    }
}
