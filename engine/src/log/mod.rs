//! The log: a directory of segments behind a cheap, cloneable, `Send + Sync` handle.
//!
//! Two views of one sequence of entries: records by offset (producers and consumers; only
//! data entries have offsets) and entries by index (a Raft log store: entries at the
//! index and term the caller chose, suffix truncation, purge, vote and committed in the
//! metadata file). A single node only ever writes data entries, so its offsets are its
//! indexes.
//!
//! Appends, truncation and purge go to the appender (its thread, or a blocking caller that
//! finds it idle: see `appender`); reads run on
//! the caller's thread against published state and never wait for the appender. Tailing
//! readers wait on an event the appender fires each time it publishes, so an idle
//! follower costs nothing. With `Durability::Always`, record readers see only durable
//! records: a record a power loss could erase is never delivered.

use std::{
    io,
    path::Path,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use event_listener::{Event, Listener};
use tracing::{info, warn};

pub use install::{FilePart, LogFiles, Staging};
pub(crate) use install::{finish as finish_install, is_install_file};
pub use reader::LogReader;
pub use retention::Retention;
pub(crate) use shared::Shared;
pub(crate) use stats::Counters;
pub use stats::{SYNC_LATENCY_BOUNDS_US, Stats};
pub use tickets::{AppendFuture, AppendTicket, Published, PublishedFuture};

use crate::{
    appender::{Appender, AppenderLink, Done, Message, OffsetSender, Payload, Request},
    config::{Backend, Config},
    entry::EntryKind,
    error::{Error, IoContext, Result},
    index,
    io::{Disk, pwrite::PwriteDisk},
    record::{self, FrameRef, Record, RecordRef},
    recovery::{self, RecoveryReport},
    store,
};

mod install;
mod raft;
mod reader;
mod retention;
mod shared;
mod stats;
mod tickets;

/// The largest batch a log accepts (see [`Log::batch_limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Records in one batch.
    pub records_max: usize,
    /// Frame bytes in one batch ([`record::frame_len`] of each value).
    pub bytes_max: u64,
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
    appender_link: AppenderLink,
    /// Whether `close` ran (later calls report the poison, or `Ok`).
    close_started: AtomicBool,
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
        recovery::create_dir_durably(disk.as_ref(), &dir)?;
        let dir_lock = disk.lock_dir(&dir).map_err(|error| match error.kind() {
            io::ErrorKind::WouldBlock => Error::Locked { dir: dir.clone(), holder: error.to_string() },
            _ => Error::io(format!("locking data directory {}", dir.display()), error),
        })?;
        let recovered = recovery::recover(disk.as_ref(), &dir, &config, dir_lock.previous_run_unclean())?;
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
            read_limit: AtomicU64::new(u64::MAX),
            dir_unsynced: AtomicBool::new(recovered.created_segments),
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
            staging: AtomicBool::new(false),
        });
        let appender_link = Appender::spawn(Arc::clone(&shared), recovered.last_term)
            .context(|| "starting the syncer thread".into())?;
        let report = recovered.report;
        let close_started = AtomicBool::new(false);
        Ok(Log { inner: Arc::new(Inner { shared, appender_link, close_started, report }) })
    }

    pub(crate) fn shared(&self) -> &Shared {
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

    pub(crate) fn send(&self, message: Message) -> Result<()> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if shared.poison.get().is_some() {
            return Err(shared.poison_error());
        }
        self.inner.appender_link.send(message).map_err(|_| shared.poison_error())
    }

    /// Sends a control message to the appender and waits for its answer.
    pub(crate) fn call(&self, message: impl FnOnce(oneshot::Sender<Result<()>>) -> Message) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(message(reply))?;
        answer.recv().unwrap_or_else(|_| Err(self.shared().poison_error()))
    }

    /// Hands records to the appender without waiting; the ticket completes with the first
    /// record's offset (the rest follow contiguously) once the durability setting is met.
    /// A batch is atomic: all of its records become readable at once, or none do. It must
    /// therefore fit in one segment ([`Error::BatchTooLarge`] otherwise).
    pub fn submit(&self, values: Vec<Bytes>) -> Result<AppendTicket> {
        let (request, ticket) = self.records_request(values)?;
        self.send(Message::Append(request))?;
        Ok(ticket)
    }

    fn records_request(&self, values: Vec<Bytes>) -> Result<(Request, AppendTicket)> {
        let frame_bytes = self.check_batch(values.iter().map(|v| &v[..]))?;
        let (done, rx) = oneshot::channel();
        let done = Done::Offset(OffsetSender::new(done));
        Ok((Request { payload: Payload::Records(values), frame_bytes, done }, AppendTicket { rx }))
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
        self.append_batch(vec![value.into()])
    }

    /// Appends records with contiguous offsets and waits; returns the first offset. Like
    /// [`Log::append`], it blocks: when the appender is idle, the write runs on this thread.
    pub fn append_batch(&self, values: Vec<Bytes>) -> Result<u64> {
        // Run inline, a closed or poisoned log answers as the thread would: `idle` is never
        // given a stopped appender, and a poisoned one fails the request with the poison.
        let (request, ticket) = self.records_request(values)?;
        match self.inner.appender_link.idle() {
            Some(appender) => appender.append(request),
            None => self.send(Message::Append(request))?,
        }
        ticket.wait()
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
        let mut records = Vec::new();
        self.read_records(offset, max_records, max_bytes, &mut |offset, frame| {
            records.push(Record {
                offset,
                timestamp_ms: frame.header.timestamp_ms,
                value: frame.payload_bytes(),
            });
        })?;
        Ok(records)
    }

    /// [`Log::read_from`] lending each record to `each` instead of returning a list: a
    /// record's value borrows the read's buffer, so no record costs an allocation or a
    /// reference count. Reads the same records, with the same limits and errors; returns
    /// the offset after the last record lent. A failure can come after some records were
    /// lent (a corrupt frame further on, or a Raft suffix truncation or snapshot install
    /// under the read): disregard what it lent then.
    pub fn read_each(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
        mut each: impl FnMut(RecordRef<'_>),
    ) -> Result<u64> {
        self.read_records(offset, max_records, max_bytes, &mut |offset, frame| {
            each(RecordRef { offset, timestamp_ms: frame.header.timestamp_ms, value: frame.payload() });
        })
    }

    /// Lends the data frames of [`Log::read_from`] to `each` with their offsets, as they
    /// are decoded; returns the offset after the last.
    fn read_records(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
        each: &mut impl FnMut(u64, FrameRef<'_>),
    ) -> Result<u64> {
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
        let mut next_offset = offset;
        // A read of only non-data entries (Raft's) lends nothing: read on.
        while next_offset == offset && index < visible {
            index = shared.read_raw_into(index, visible, max_records, max_bytes, &mut |frame| {
                if frame.header.kind == EntryKind::Data {
                    each(next_offset, frame);
                    next_offset += 1;
                }
            })?;
        }
        match next_offset == offset {
            true => Err(Error::OffsetNotWritten { offset, next }),
            false => Ok(next_offset),
        }
    }

    /// The lowest offset still in the log (equal to `next_offset()` when it is empty).
    pub fn lowest_offset(&self) -> u64 {
        let shared = self.shared();
        let first = shared.first_index.load(Ordering::Acquire);
        shared.offsets().offset_of(first).min(self.next_offset())
    }

    /// The offset below which records can be read now: published ones, or with
    /// `Durability::Always` durable ones, and below the read limit of a Raft replica.
    pub fn readable_offset(&self) -> u64 {
        let shared = self.shared();
        shared.offsets().offset_of(shared.visible_index())
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

    /// Makes every record appended so far durable (an `fdatasync` of the active segment,
    /// through the appender, so it is ordered after every append submitted before it).
    pub fn sync(&self) -> Result<()> {
        match self.inner.appender_link.idle() {
            Some(appender) => appender.sync(),
            None => self.call(Message::Sync),
        }
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
            segments_dropped: c.segments_dropped.load(Ordering::Relaxed),
            bytes_dropped: c.bytes_dropped.load(Ordering::Relaxed),
        }
    }

    /// The reason the log is poisoned, if it is.
    pub fn poisoned(&self) -> Option<Arc<str>> {
        self.shared().poison.get().cloned()
    }
}

impl Inner {
    fn close(&self) -> Result<()> {
        if self.close_started.swap(true, Ordering::AcqRel) {
            return match self.shared.poison.get() {
                Some(_) => Err(self.shared.poison_error()),
                None => Ok(()),
            };
        }
        self.shared.closed.store(true, Ordering::Release);
        let result = self.appender_link.close();
        if let Some(lock) = self.shared.dir_lock.lock().unwrap_or_else(|p| p.into_inner()).take()
            && result.is_ok()
            && self.shared.poison.get().is_none()
        {
            lock.closed_cleanly();
        }
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
