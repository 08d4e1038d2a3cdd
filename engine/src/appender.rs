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
    io::DiskFile,
    log::Shared,
    record,
    segment::Segment,
};

/// One caller's records and where to send their first offset.
pub(crate) struct Request {
    pub(crate) values: Vec<Bytes>,
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
    /// One past the request's last offset.
    end: u64,
}

/// Work for the syncer: sync `file` so that offsets below `upto` are durable, then
/// complete `waiters`.
struct SyncJob {
    file: Arc<dyn DiskFile>,
    upto: u64,
    waiters: Vec<Written>,
}

pub(crate) struct Appender {
    shared: Arc<Shared>,
    rx: Receiver<Message>,
    /// Next offset to assign; equals the published next offset between turns.
    next: u64,
    buf: Vec<u8>,
    syncer: Option<(mpsc::Sender<SyncJob>, thread::JoinHandle<()>)>,
    unsynced_bytes: u64,
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
        let appender = Appender { shared, rx, next, buf: Vec::new(), syncer, unsynced_bytes: 0 };
        thread::Builder::new().name("ringlog-appender".into()).spawn(move || appender.run())
    }

    fn run(mut self) {
        let mut batch = Vec::new();
        let mut close = None;
        while close.is_none() {
            let Ok(first) = self.rx.recv() else { break };
            let mut bytes = 0;
            let mut message = Some(first);
            while let Some(next) = message.take() {
                match next {
                    Message::Append(request) => {
                        bytes += request.values.iter().map(|v| record::frame_len(v.len())).sum::<usize>();
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
        let result = self.shutdown();
        if let Some(reply) = close {
            let _ = reply.send(result);
        }
    }

    /// Writes one group of requests and acknowledges (or hands to the syncer) each one.
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
        let mut pending: u32 = 0;
        let mut written: Vec<Written> = Vec::with_capacity(batch.len());
        let mut requests = batch.into_iter();
        let mut outcome = Ok(());
        for request in requests.by_ref() {
            let first = self.next;
            let entries = request.values.len() as u32;
            if first + u64::from(entries) > OFFSET_LIMIT {
                let _ = request.done.send(Err(Error::OffsetsExhausted { next: first, limit: OFFSET_LIMIT }));
                continue;
            }
            // A request never spans segments (`Log::submit` bounds its size), so it is
            // visible whole or not at all.
            let bytes: u64 = request.values.iter().map(|v| record::frame_len(v.len()) as u64).sum();
            let end = segment.size() + self.buf.len() as u64 + bytes;
            if end > self.shared.config.store_bytes_max || pending + entries > segment.index.room() {
                match self.write(&segment, pending).and_then(|()| self.roll(&segment)) {
                    Ok(next_segment) => segment = next_segment,
                    Err(error) => {
                        outcome = Err(error);
                        written.push(Written { done: request.done, first, end: first + u64::from(entries) });
                        break;
                    }
                }
                pending = 0;
            }
            for value in &request.values {
                let position = segment.size() + self.buf.len() as u64;
                record::encode(&mut self.buf, self.next, timestamp_ms, value);
                segment
                    .index
                    .push_unpublished(pending, u32::try_from(position).expect("store_bytes_max fits u32"));
                pending += 1;
                self.next += 1;
            }
            written.push(Written { done: request.done, first, end: self.next });
        }
        if outcome.is_ok() {
            outcome = self.write(&segment, pending);
        }
        if let Err(error) = outcome {
            // Requests published before the failure (by a roll inside this batch) stand;
            // the rest fail, and so does everything left in the batch.
            let published = self.shared.next_offset.load(Ordering::Acquire);
            let standing = written.iter().take_while(|w| w.end <= published).count();
            for w in written.drain(standing..) {
                let _ = w.done.send(Err(self.failure(&error)));
            }
            for request in requests {
                let _ = request.done.send(Err(self.failure(&error)));
            }
        }
        self.acknowledge(written, &segment);
    }

    /// Writes the buffered frames to `segment` and publishes `pending` records.
    fn write(&mut self, segment: &Segment, pending: u32) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let position = segment.size();
        let len = self.buf.len() as u64;
        let (buf, result) = segment.store.file().write_all_at(std::mem::take(&mut self.buf), position);
        self.buf = buf;
        self.buf.clear();
        if let Err(source) = result {
            let published = self.shared.next_offset.load(Ordering::Acquire);
            self.next = published;
            let path = segment.store.path().to_path_buf();
            if is_disk_full(&source) {
                // Cut what part of the write landed, so the store ends at a frame boundary.
                match segment.store.file().set_len(position) {
                    Ok(()) => {
                        warn!(file = %path.display(), "disk full: append rejected, nothing kept");
                        return Err(Error::DiskFull { path, source });
                    }
                    Err(cut) => {
                        let error =
                            Error::io(format!("cutting {} after a failed write", path.display()), cut);
                        return Err(self.poison(error));
                    }
                }
            }
            let error =
                Error::io(format!("writing {len} bytes at byte {position} of {}", path.display()), source);
            return Err(self.poison(error));
        }
        segment.index.publish(pending);
        segment.store.set_size(position + len);
        self.publish(len, u64::from(pending));
        Ok(())
    }

    fn publish(&mut self, bytes: u64, records: u64) {
        let shared = &self.shared;
        shared.stats.bytes_appended.fetch_add(bytes, Ordering::Relaxed);
        shared.stats.records_appended.fetch_add(records, Ordering::Relaxed);
        shared.stats.writes.fetch_add(1, Ordering::Relaxed);
        shared.next_offset.store(self.next, Ordering::Release);
        shared.appended.notify(usize::MAX);
        self.unsynced_bytes += bytes;
    }

    /// Seals `segment` and starts the next one. The order keeps every failure safe: the
    /// old store is synced first (a sealed segment never has a torn tail); a new segment
    /// that cannot be created (full disk) leaves the old one active and appendable; the
    /// old index is trimmed only once nothing will be appended to it again.
    fn roll(&mut self, segment: &Arc<Segment>) -> Result<Arc<Segment>> {
        use crate::error::IoContext;
        let synced = segment
            .store
            .file()
            .sync_data()
            .context(|| format!("syncing {}", segment.store.path().display()));
        if let Err(error) = synced {
            return Err(self.poison(error));
        }
        self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
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
        match (self.shared.config.durability, &self.syncer) {
            (Durability::Always, Some((jobs, _))) if !written.is_empty() => {
                let job =
                    SyncJob { file: Arc::clone(segment.store.file()), upto: self.next, waiters: written };
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
                    let job = SyncJob {
                        file: Arc::clone(segment.store.file()),
                        upto: self.next,
                        waiters: Vec::new(),
                    };
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
        self.shared.durable_offset.fetch_max(self.next, Ordering::AcqRel);
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
            shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
            shared.stats.sync_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
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
