//! The appender: one thread that owns the active segment's write side.
//!
//! Callers on any thread hand it requests over a channel. Each turn it takes every request
//! waiting (up to `batch_bytes_max`), assigns offsets, encodes the frames into one buffer
//! and writes it with one call to the backend (group commit), then publishes the records:
//! index entries first, then the store size, then the log's next offset, each with release
//! ordering, so a reader that sees an offset also sees its bytes. Readers never take a lock
//! the appender holds across IO.
//!
//! Acknowledgement follows the durability setting. With `Always`, written requests go to
//! the syncer thread, which runs `fdatasync` and completes them, while the appender is
//! already writing the next group: the two overlap. With `Interval`, the syncer syncs on a
//! timer or byte count and requests complete on write.
//!
//! Failure: a write or sync error poisons the log (what is on disk is unknown, and a
//! failed fsync must never be retried). The exception is a full disk on write: the store
//! is cut back to its published size and the affected requests fail with `DiskFull`;
//! later appends succeed once there is space.

use std::{
    sync::{
        Arc,
        atomic::Ordering,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tracing::{error, warn};

use crate::{
    config::{Durability, OFFSET_LIMIT},
    error::{Error, Result},
    index,
    io::{DiskFile, PendingWrite},
    log::Shared,
    record,
    segment::Segment,
};

/// One caller's records and where to send their first offset.
pub(crate) struct Request {
    pub(crate) values: Vec<Bytes>,
    /// Bytes the values' frames take, computed once by `Log::submit`.
    pub(crate) frame_bytes: u64,
    pub(crate) done: oneshot::Sender<Result<u64>>,
}

pub(crate) enum Message {
    Append(Request),
    /// Finish queued work, sync, trim the index, then reply and stop.
    Close(oneshot::Sender<Result<()>>),
}

/// A written request waiting for its acknowledgement.
struct Written {
    done: oneshot::Sender<Result<u64>>,
    first: u64,
}

/// Work for the syncer: sync `file` so that offsets below `upto` are durable, then
/// complete `waiters`.
struct SyncJob {
    file: Arc<dyn DiskFile>,
    upto: u64,
    waiters: Vec<Written>,
}

/// A group commit handed to the backend and not yet published: with io_uring the
/// appender encodes the next group while the kernel writes this one.
struct InFlight {
    segment: Arc<Segment>,
    write: PendingWrite,
    position: u64,
    len: u64,
    /// Index entries (records) the group carries.
    entries: u32,
    /// The appender's next offset once the group is published.
    next: u64,
    written: Vec<Written>,
}

pub(crate) struct Appender {
    shared: Arc<Shared>,
    rx: Receiver<Message>,
    /// Next offset to assign; equals the published next offset when nothing is in flight.
    next: u64,
    buf: Vec<u8>,
    /// A spare buffer, swapped with `buf` while a group is in flight.
    spare: Vec<u8>,
    in_flight: Option<InFlight>,
    idle: IdleWait,
    syncer: Option<(mpsc::Sender<SyncJob>, thread::JoinHandle<()>)>,
    unsynced_bytes: u64,
}

/// The longest the appender, out of work, waits actively for the next request before it
/// blocks. Parking and being woken costs tens of microseconds on a virtual machine (an idle
/// vCPU halts; waking it takes an interrupt and a VM entry), and a busy producer's next
/// request often comes within a few microseconds: spinning triples a closed-loop client's
/// rate and doubles eight's (`benches/examples/append_profile.rs`). Only the appender spins:
/// spinning callers (64 threads waiting for their tickets) took the CPU from the appender
/// and the syncer and were 3x slower.
const SPIN_MAX: Duration = Duration::from_micros(50);

/// Adapts the spin to how long the appender really waits for work: twice the recent
/// average gap, and no spin at all when requests come further apart than [`SPIN_MAX`]
/// (unary RPCs a network round trip apart, where spinning only takes the CPU from the
/// server: measured 76% -> 62% of bare tonic with a fixed spin).
#[derive(Debug, Default)]
struct IdleWait {
    gap_average: Duration,
}

impl IdleWait {
    fn spin_for(&self) -> Duration {
        if self.gap_average < SPIN_MAX { (self.gap_average * 2).min(SPIN_MAX) } else { Duration::ZERO }
    }

    fn waited(&mut self, gap: Duration) {
        self.gap_average = (self.gap_average * 7 + gap.min(SPIN_MAX * 4)) / 8;
    }
}

/// Polls `poll` for up to `spin_for`, then blocks in `park`.
fn spin_then_park<T>(
    spin_for: Duration,
    mut poll: impl FnMut() -> Option<T>,
    park: impl FnOnce() -> Option<T>,
) -> Option<T> {
    let start = std::time::Instant::now();
    while start.elapsed() < spin_for {
        if let Some(value) = poll() {
            return Some(value);
        }
        for _ in 0..64 {
            std::hint::spin_loop();
        }
    }
    poll().or_else(park)
}

fn flight_entries_of(in_flight: &Option<InFlight>) -> u32 {
    in_flight.as_ref().map_or(0, |f| f.entries)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn is_disk_full(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC) || error.kind() == std::io::ErrorKind::StorageFull
}

impl Appender {
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        rx: Receiver<Message>,
    ) -> std::io::Result<thread::JoinHandle<()>> {
        let syncer = match shared.config.durability {
            Durability::None => None,
            durability => {
                let (tx, jobs) = mpsc::channel();
                let shared = Arc::clone(&shared);
                let handle = thread::Builder::new()
                    .name("ringlog-syncer".into())
                    .spawn(move || run_syncer(&shared, &jobs, durability))?;
                Some((tx, handle))
            }
        };
        let next = shared.next_offset.load(Ordering::Acquire);
        let appender = Appender {
            shared,
            rx,
            next,
            buf: Vec::new(),
            spare: Vec::new(),
            in_flight: None,
            idle: IdleWait::default(),
            syncer,
            unsynced_bytes: 0,
        };
        thread::Builder::new().name("ringlog-appender".into()).spawn(move || appender.run())
    }

    fn run(mut self) {
        let mut batch = Vec::new();
        let mut close = None;
        while close.is_none() {
            let first = match self.rx.try_recv() {
                Ok(message) => message,
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    // Nothing more to overlap with: complete the group in flight first.
                    let _ = self.finish_in_flight();
                    let waiting = std::time::Instant::now();
                    let spin_for = self.idle.spin_for();
                    let message =
                        spin_then_park(spin_for, || self.rx.try_recv().ok(), || self.rx.recv().ok());
                    self.idle.waited(waiting.elapsed());
                    match message {
                        Some(message) => message,
                        None => break,
                    }
                }
            };
            let mut bytes = 0;
            let mut message = Some(first);
            while let Some(next) = message.take() {
                match next {
                    Message::Append(request) => {
                        bytes += request.frame_bytes as usize;
                        batch.push(request);
                    }
                    Message::Close(reply) => {
                        close = Some(reply);
                        break;
                    }
                }
                if bytes < self.shared.config.batch_bytes_max {
                    message = self.rx.try_recv().ok();
                }
            }
            self.commit(std::mem::take(&mut batch));
        }
        let _ = self.finish_in_flight();
        let result = self.shutdown();
        if let Some(reply) = close {
            let _ = reply.send(result);
        }
    }

    /// Encodes one group of requests and hands it to the backend; the group is published
    /// and acknowledged when its write completes (at once for synchronous backends).
    fn commit(&mut self, batch: Vec<Request>) {
        if batch.is_empty() {
            return;
        }
        if self.shared.poison.get().is_some() {
            for request in batch {
                let _ = request.done.send(Err(self.shared.poison_error()));
            }
            return;
        }
        let timestamp_ms = now_ms();
        let mut segment = self.shared.active();
        let mut entries: u32 = 0;
        let mut written: Vec<Written> = Vec::with_capacity(batch.len());
        let mut requests = batch.into_iter();
        let mut failure = None;
        for request in requests.by_ref() {
            let first = self.next;
            let count = request.values.len() as u32;
            if first + u64::from(count) > OFFSET_LIMIT {
                let _ = request.done.send(Err(Error::OffsetsExhausted { next: first, limit: OFFSET_LIMIT }));
                continue;
            }
            // A request never spans segments (`Log::submit` bounds its size), so it is
            // visible whole or not at all.
            let bytes = request.frame_bytes;
            let (flight_len, flight_entries) = self.in_flight.as_ref().map_or((0, 0), |f| (f.len, f.entries));
            let end = segment.size() + flight_len + self.buf.len() as u64 + bytes;
            if end > self.shared.config.store_bytes_max
                || flight_entries + entries + count > segment.index.room()
            {
                // Everything before this request reaches the old segment before it is sealed.
                let group = std::mem::take(&mut written);
                let rolled = self
                    .finish_in_flight()
                    .and_then(|()| self.start(&segment, entries, group))
                    .and_then(|()| self.finish_in_flight())
                    .and_then(|()| self.roll(&segment));
                entries = 0;
                match rolled {
                    Ok(next_segment) => segment = next_segment,
                    Err(error) => {
                        failure = Some((error, request));
                        break;
                    }
                }
            }
            let flight_len = self.in_flight.as_ref().map_or(0, |f| f.len);
            for value in &request.values {
                let position = segment.size() + flight_len + self.buf.len() as u64;
                record::encode(&mut self.buf, self.next, timestamp_ms, value);
                let position = u32::try_from(position).expect("store_bytes_max fits u32");
                segment.index.push_unpublished(flight_entries_of(&self.in_flight) + entries, position);
                entries += 1;
                self.next += 1;
            }
            written.push(Written { done: request.done, first });
        }
        if let Some((error, request)) = failure {
            let _ = request.done.send(Err(self.failure(&error)));
            for request in requests {
                let _ = request.done.send(Err(self.failure(&error)));
            }
            return;
        }
        // Pipeline: the previous group completes while this one was being encoded.
        if let Err(error) = self.finish_in_flight() {
            for w in written {
                let _ = w.done.send(Err(self.failure(&error)));
            }
            return;
        }
        if self.start(&segment, entries, written).is_ok()
            && self.in_flight.as_ref().is_some_and(|f| f.write.is_complete())
        {
            let _ = self.finish_in_flight();
        }
    }

    /// Hands the encoded buffer to the backend as the group in flight.
    fn start(&mut self, segment: &Arc<Segment>, entries: u32, written: Vec<Written>) -> Result<()> {
        assert!(self.in_flight.is_none(), "one group in flight at a time");
        if self.buf.is_empty() {
            assert!(written.is_empty(), "requests without records");
            return Ok(());
        }
        let position = segment.size();
        let len = self.buf.len() as u64;
        let buf = std::mem::replace(&mut self.buf, std::mem::take(&mut self.spare));
        let write = segment.store.file().start_write_at(buf, position);
        let segment = Arc::clone(segment);
        self.in_flight = Some(InFlight { segment, write, position, len, entries, next: self.next, written });
        Ok(())
    }

    /// Waits for the group in flight, then publishes and acknowledges it; on failure its
    /// requests fail, and so does anything encoded after it.
    fn finish_in_flight(&mut self) -> Result<()> {
        let Some(flight) = self.in_flight.take() else { return Ok(()) };
        let (mut buf, result) = flight.write.wait();
        buf.clear();
        self.spare = buf;
        let segment = &flight.segment;
        if let Err(source) = result {
            let error = self.write_failed(segment, flight.position, flight.len, source);
            self.buf.clear();
            self.next = self.shared.next_offset.load(Ordering::Acquire);
            for w in flight.written {
                let _ = w.done.send(Err(self.failure(&error)));
            }
            return Err(error);
        }
        segment.index.publish(flight.entries);
        segment.store.set_size(flight.position + flight.len);
        self.publish(flight.len, u64::from(flight.entries), flight.next);
        self.acknowledge(flight.written, segment);
        Ok(())
    }

    /// Turns a failed write into the error callers see: a full disk is cut back and
    /// reported; anything else poisons the log.
    fn write_failed(&self, segment: &Segment, position: u64, len: u64, source: std::io::Error) -> Error {
        let path = segment.store.path().to_path_buf();
        if is_disk_full(&source) {
            // Cut what part of the write landed, so the store ends at a frame boundary.
            return match segment.store.file().set_len(position) {
                Ok(()) => {
                    warn!(file = %path.display(), "disk full: append rejected, nothing kept");
                    Error::DiskFull { path, source }
                }
                Err(cut) => {
                    self.poison(Error::io(format!("cutting {} after a failed write", path.display()), cut))
                }
            };
        }
        self.poison(Error::io(
            format!("writing {len} bytes at byte {position} of {}", path.display()),
            source,
        ))
    }

    fn publish(&mut self, bytes: u64, records: u64, next: u64) {
        let shared = &self.shared;
        shared.stats.bytes_appended.fetch_add(bytes, Ordering::Relaxed);
        shared.stats.records_appended.fetch_add(records, Ordering::Relaxed);
        shared.stats.writes.fetch_add(1, Ordering::Relaxed);
        shared.next_offset.store(next, Ordering::Release);
        shared.appended.notify(usize::MAX);
        self.unsynced_bytes += bytes;
    }

    /// Seals `segment` and starts the next one. The order keeps every failure safe: the
    /// old store is synced first (a sealed segment never has a torn tail); a new segment
    /// that cannot be created (full disk) leaves the old one active and appendable; the
    /// old index is trimmed only once nothing will be appended to it again.
    fn roll(&mut self, segment: &Arc<Segment>) -> Result<Arc<Segment>> {
        use crate::error::IoContext;
        let started = std::time::Instant::now();
        let synced = segment
            .store
            .file()
            .sync_data()
            .context(|| format!("syncing {}", segment.store.path().display()));
        if let Err(error) = synced {
            return Err(self.poison(error));
        }
        self.shared.stats.record_sync(started.elapsed());
        self.shared.durable_offset.fetch_max(segment.next_offset(), Ordering::AcqRel);
        let capacity = index::capacity(self.shared.config.index_bytes_max);
        let next = match Segment::create(self.shared.disk.as_ref(), &self.shared.dir, self.next, capacity) {
            Ok(next) => Arc::new(next),
            Err(Error::Io { source, .. }) if is_disk_full(&source) => {
                return Err(Error::DiskFull { path: self.shared.dir.clone(), source });
            }
            Err(error) => return Err(self.poison(error)),
        };
        if let Err(error) = segment.index.trim() {
            return Err(self.poison(error));
        }
        self.shared.segments.write().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(&next));
        Ok(next)
    }

    fn acknowledge(&mut self, written: Vec<Written>, segment: &Arc<Segment>) {
        let upto = self.shared.next_offset.load(Ordering::Acquire);
        match (self.shared.config.durability, &self.syncer) {
            (Durability::Always, Some((jobs, _))) if !written.is_empty() => {
                let job = SyncJob { file: Arc::clone(segment.store.file()), upto, waiters: written };
                if let Err(mpsc::SendError(job)) = jobs.send(job) {
                    for w in job.waiters {
                        let _ = w.done.send(Err(Error::Closed));
                    }
                }
            }
            (Durability::Interval { bytes, .. }, Some((jobs, _))) => {
                for w in written {
                    let _ = w.done.send(Ok(w.first));
                }
                if self.unsynced_bytes >= bytes {
                    self.unsynced_bytes = 0;
                    let job = SyncJob { file: Arc::clone(segment.store.file()), upto, waiters: Vec::new() };
                    let _ = jobs.send(job);
                }
            }
            _ => {
                for w in written {
                    let _ = w.done.send(Ok(w.first));
                }
            }
        }
    }

    /// The error each caller affected by `error` gets (errors are not `Clone`).
    fn failure(&self, error: &Error) -> Error {
        match error {
            Error::DiskFull { path, source } => Error::DiskFull {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            _ => self.shared.poison_error(),
        }
    }

    fn poison(&self, error: Error) -> Error {
        self.shared.set_poison(&error);
        error
    }

    /// Drains the syncer, then syncs and trims the active segment.
    fn shutdown(&mut self) -> Result<()> {
        if let Some((jobs, handle)) = self.syncer.take() {
            drop(jobs);
            let _ = handle.join();
        }
        let segment = self.shared.active();
        if self.shared.poison.get().is_some() {
            // What is on disk is unknown; recovery decides on reopen.
            return Ok(());
        }
        use crate::error::IoContext;
        segment.store.file().sync_data().context(|| format!("syncing {}", segment.store.path().display()))?;
        segment.index.trim()?;
        let published = self.shared.next_offset.load(Ordering::Acquire);
        self.shared.durable_offset.fetch_max(published, Ordering::AcqRel);
        Ok(())
    }
}

/// The syncer thread: makes written records durable while the appender keeps writing.
fn run_syncer(shared: &Shared, jobs: &Receiver<SyncJob>, durability: Durability) {
    let interval = match durability {
        Durability::Interval { interval_ms, .. } => Some(Duration::from_millis(interval_ms)),
        _ => None,
    };
    loop {
        let first = match interval {
            Some(interval) => match jobs.recv_timeout(interval) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            },
        };
        let mut batch: Vec<SyncJob> = first.into_iter().collect();
        batch.extend(jobs.try_iter());
        if batch.is_empty() {
            // The interval passed: sync the active segment if anything is unsynced.
            let next = shared.next_offset.load(Ordering::Acquire);
            if shared.durable_offset.load(Ordering::Acquire) >= next || shared.poison.get().is_some() {
                continue;
            }
            let file = Arc::clone(shared.active().store.file());
            batch.push(SyncJob { file, upto: next, waiters: Vec::new() });
        }
        sync_batch(shared, batch);
    }
}

fn sync_batch(shared: &Shared, batch: Vec<SyncJob>) {
    let upto = batch.iter().map(|job| job.upto).max().unwrap_or(0);
    let mut result = match shared.poison.get() {
        Some(reason) => Err(Error::Poisoned(Arc::clone(reason))),
        None => Ok(()),
    };
    let mut synced: Vec<*const ()> = Vec::new();
    for job in &batch {
        let key = Arc::as_ptr(&job.file).cast::<()>();
        if result.is_err() || synced.contains(&key) {
            continue;
        }
        synced.push(key);
        let started = std::time::Instant::now();
        if let Err(source) = job.file.sync_data() {
            // Never retried: after a failed fsync the kernel may have dropped the dirty
            // pages, so a later success would prove nothing.
            let error = Error::io("fdatasync failed", source);
            error!(%error, "poisoning the log");
            shared.set_poison(&error);
            result = Err(error);
        } else {
            shared.stats.record_sync(started.elapsed());
        }
    }
    if result.is_ok() {
        shared.durable_offset.fetch_max(upto, Ordering::AcqRel);
    }
    for job in batch {
        for w in job.waiters {
            let reply = match &result {
                Ok(()) => Ok(w.first),
                Err(_) => Err(shared.poison_error()),
            };
            let _ = w.done.send(reply);
        }
    }
}
