//! The log: a directory of segments behind a cheap, cloneable, `Send + Sync` handle.
//!
//! Appends go to the appender thread (see `appender`); reads run on the caller's thread
//! against published state and never wait for the appender. Tailing readers wait on an
//! event the appender fires each time it publishes, so an idle follower costs nothing.

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
    appender::{Appender, Message, Request},
    config::{Backend, Config},
    error::{Error, IoContext, Result},
    index,
    io::{Disk, pwrite::PwriteDisk},
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
    /// Every offset below this is readable.
    pub(crate) next_offset: AtomicU64,
    /// Every offset below this is on stable storage.
    pub(crate) durable_offset: AtomicU64,
    /// Fired when `next_offset` moves, and on close and poisoning.
    pub(crate) appended: Event,
    pub(crate) poison: OnceLock<Arc<str>>,
    pub(crate) closed: AtomicBool,
    pub(crate) stats: Counters,
}

impl Shared {
    pub(crate) fn active(&self) -> Arc<Segment> {
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(segments.last().expect("a log always has a segment"))
    }

    pub(crate) fn set_poison(&self, error: &Error) {
        self.poison.get_or_init(|| error.to_string().into());
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
    /// run left (see the `recovery` module docs for what that means).
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let disk = choose_disk(&config.backend)?;
        let (segments, report) = recovery::recover(disk.as_ref(), &dir, &config)?;
        let next = segments.last().expect("recovery leaves a segment").next_offset();
        info!(dir = %dir.display(), backend = disk.name(), durability = ?config.durability,
              lowest = segments[0].base(), next, "opened log");
        let shared = Arc::new(Shared {
            dir,
            config,
            disk,
            segments: RwLock::new(segments),
            next_offset: AtomicU64::new(next),
            durable_offset: AtomicU64::new(next),
            appended: Event::new(),
            poison: OnceLock::new(),
            closed: AtomicBool::new(false),
            stats: Counters::default(),
        });
        let (tx, rx) = mpsc::channel();
        let appender =
            Appender::spawn(Arc::clone(&shared), rx).context(|| "starting the appender thread".into())?;
        Ok(Log { inner: Arc::new(Inner { shared, tx, appender: Mutex::new(Some(appender)), report }) })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Hands records to the appender without waiting; the ticket completes with the first
    /// record's offset (the rest follow contiguously) once the durability setting is met.
    /// A batch is atomic: all of its records become readable at once, or none do. It must
    /// therefore fit in one segment ([`Error::BatchTooLarge`] otherwise).
    pub fn submit(&self, values: Vec<Bytes>) -> Result<AppendTicket> {
        let shared = self.shared();
        if values.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let config = &shared.config;
        let max = config.record_bytes_max;
        let mut bytes = 0u64;
        for value in &values {
            if value.len() > max as usize {
                return Err(Error::RecordTooLarge { len: value.len(), max });
            }
            bytes += record::frame_len(value.len()) as u64;
        }
        // A batch must fit in one segment, so that it is appended whole or not at all.
        let BatchLimits { records_max, bytes_max } = self.batch_limits();
        if bytes > bytes_max || values.len() > records_max {
            return Err(Error::BatchTooLarge { records: values.len(), bytes, records_max, bytes_max });
        }
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if shared.poison.get().is_some() {
            return Err(shared.poison_error());
        }
        let (done, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Message::Append(Request { values, frame_bytes: bytes, done }))
            .map_err(|_| Error::Closed)?;
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
        let next = shared.next_offset.load(Ordering::Acquire);
        if offset >= next {
            return Err(Error::OffsetNotWritten { offset, next });
        }
        let segment = {
            let segments = shared.segments();
            let lowest = segments[0].base();
            match segment::find(&segments, offset) {
                Some(segment) if offset >= lowest => Arc::clone(segment),
                _ => return Err(Error::OffsetBelowLowest { offset, lowest }),
            }
        };
        // The segment may hold records past `next` already; read only published ones.
        let in_segment = (segment.next_offset().min(next) - offset) as usize;
        segment.read(offset, max_records.min(in_segment), max_bytes)
    }

    /// The lowest offset still in the log (equal to `next_offset()` when it is empty).
    pub fn lowest_offset(&self) -> u64 {
        let segments = self.shared().segments();
        let lowest = segments[0].base();
        lowest.min(self.next_offset())
    }

    /// The offset the next append will get.
    pub fn next_offset(&self) -> u64 {
        self.shared().next_offset.load(Ordering::Acquire)
    }

    /// The offset of the last record, or `None` when the log holds no records.
    pub fn highest_offset(&self) -> Option<u64> {
        let next = self.next_offset();
        (next > self.lowest_offset()).then(|| next - 1)
    }

    /// Every offset below this is on stable storage.
    pub fn durable_offset(&self) -> u64 {
        self.shared().durable_offset.load(Ordering::Acquire)
    }

    /// Waits until a record at `offset` exists (`next_offset() > offset`); returns the new
    /// next offset. Woken by appends, never by polling. Fails when the log closes or is
    /// poisoned. Works with any async runtime.
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
        let next = shared.next_offset.load(Ordering::Acquire);
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
        self.drop_front(|segment| segment.next_offset() <= offset)
    }

    /// Drops the oldest sealed segments that break a retention limit.
    pub fn apply_retention(&self, retention: Retention) -> Result<usize> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut total: u64 = self.shared().segments().iter().map(|s| s.size()).sum();
        let mut dropped = 0;
        dropped += self.drop_front(|segment| {
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
        })?;
        Ok(dropped)
    }

    /// Removes leading sealed segments while `drop` says so.
    fn drop_front(&self, mut drop: impl FnMut(&Segment) -> bool) -> Result<usize> {
        let shared = self.shared();
        let removed: Vec<Arc<Segment>> = {
            let mut segments = shared.segments.write().unwrap_or_else(|p| p.into_inner());
            let sealed = segments.len() - 1;
            let count = segments[..sealed].iter().take_while(|s| drop(s)).count();
            segments.drain(..count).collect()
        };
        for segment in &removed {
            segment.remove(shared.disk.as_ref())?;
        }
        if !removed.is_empty() {
            shared
                .disk
                .sync_dir(&shared.dir)
                .context(|| format!("syncing directory {}", shared.dir.display()))?;
            info!(segments = removed.len(), lowest = self.lowest_offset(), "dropped segments");
        }
        Ok(removed.len())
    }

    /// A reader over the frames of every record from the lowest offset to the next offset
    /// at the time of the call: a consistent snapshot (later appends, retention and close
    /// do not change what it returns). Decode it with [`record::decode`].
    pub fn reader(&self) -> LogReader {
        let next = self.next_offset();
        let segments = self.shared().segments().clone();
        let parts = segments
            .into_iter()
            .filter(|s| s.base() < next)
            .map(|s| {
                let end = if s.next_offset() <= next { s.size() } else { frame_start(&s, next) };
                (s, end)
            })
            .collect();
        LogReader { parts, part: 0, position: store::HEADER_LEN as u64 }
    }

    /// Makes every record appended so far durable (an `fdatasync` of the active segment).
    pub fn sync(&self) -> Result<()> {
        let shared = self.shared();
        if shared.poison.get().is_some() {
            return Err(shared.poison_error());
        }
        let next = self.next_offset();
        let segment = shared.active();
        let started = Instant::now();
        if let Err(source) = segment.store.file().sync_data() {
            let error = Error::io(format!("syncing {}", segment.store.path().display()), source);
            shared.set_poison(&error);
            return Err(error);
        }
        shared.stats.record_sync(started.elapsed());
        shared.durable_offset.fetch_max(next, Ordering::AcqRel);
        Ok(())
    }

    /// Finishes queued appends, syncs, trims the active index to its real size and stops
    /// the appender. Later calls on any clone fail with [`Error::Closed`]; reads of the
    /// open handle's data are no longer allowed either.
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
            return Ok(());
        };
        self.shared.closed.store(true, Ordering::Release);
        let (reply, done) = oneshot::channel();
        let result = match self.tx.send(Message::Close(reply)) {
            Ok(()) => done.recv().unwrap_or(Err(Error::Closed)),
            Err(_) => Err(Error::Closed),
        };
        let _ = appender.join();
        self.shared.appended.notify(usize::MAX);
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            warn!(%error, "closing the log on drop failed");
        }
    }
}

/// Timestamp of a segment's last record.
fn newest_timestamp_ms(segment: &Segment) -> Option<u64> {
    let last = segment.next_offset().checked_sub(1).filter(|&o| o >= segment.base())?;
    segment.read(last, 1, 0).ok()?.first().map(|r| r.timestamp_ms)
}

/// Store position where the frame of `offset` starts (`offset` is in the segment).
fn frame_start(segment: &Segment, offset: u64) -> u64 {
    let relative = u32::try_from(offset - segment.base()).expect("offset within segment");
    segment.index.position(relative).map_or(segment.size(), u64::from)
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

/// Decodes every record of a [`LogReader`]'s bytes (a convenience for snapshots).
pub fn decode_all(bytes: &Bytes) -> std::result::Result<Vec<Record>, record::FrameError> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (record, len) = record::decode(&bytes.slice(at..), u32::MAX)?;
        records.push(record);
        at += len;
    }
    Ok(records)
}
