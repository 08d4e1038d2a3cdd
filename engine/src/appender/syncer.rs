//! The syncer thread and the log's one `fdatasync` path. With `Always`, written requests
//! wait here for the sync that covers them while the appender writes the next group; with
//! `Interval`, the syncer syncs on a timer or byte count. With `None` and `Interval` it also
//! starts the writeback of what the appender wrote (`Config::writeback_bytes`); with `None`
//! it starts with the first one. Engine threads run guarded: a panic poisons the log with
//! its message.

use std::{
    ops::Range,
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    sync::{
        Arc,
        atomic::Ordering,
        mpsc::{Receiver, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

use tracing::error;

use super::completion::Ack;
use crate::{
    config::Durability,
    error::{Error, Result},
    io::DiskFile,
    log::Shared,
};

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(message), _) => (*message).to_string(),
        (_, Some(message)) => message.clone(),
        _ => "a panic without a message".into(),
    }
}

/// Runs `body` on a named thread; a panic poisons the log with its message, so every
/// later call fails with the reason (waiters it dropped fail through their own `Drop`).
pub(super) fn spawn_guarded(
    name: &str,
    shared: &Arc<Shared>,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<thread::JoinHandle<()>> {
    let shared = Arc::clone(shared);
    let thread_name = name.to_string();
    thread::Builder::new().name(name.into()).spawn(move || {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(body)) {
            let reason = format!("the {thread_name} thread panicked: {}", panic_message(panic.as_ref()));
            error!(%reason, "poisoning the log");
            shared.set_poison_reason(&reason);
        }
    })
}

/// The one way the log runs `fdatasync`: serialized, the poison checked under the lock, so
/// a sync never succeeds after another one failed (Linux reports a writeback error to one
/// caller per file and drops the pages; a later sync would succeed without them). On
/// success every index below `upto` (at most the published next index) is durable, and so
/// are the directory entries of the segments created before it began.
pub(crate) fn sync_file(shared: &Shared, file: &dyn DiskFile, path: &Path, upto: u64) -> Result<()> {
    let _one_at_a_time = shared.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
    if shared.poison.get().is_some() {
        return Err(shared.poison_error());
    }
    let started = Instant::now();
    let synced = file
        .sync_data()
        .map_err(|source| Error::io(format!("fdatasync of {} failed", path.display()), source))
        .and_then(|()| shared.sync_dir_if_changed());
    match synced {
        Ok(()) => {
            shared.stats.record_sync(started.elapsed());
            let published = shared.next_index.load(Ordering::Acquire);
            shared.durable_index.fetch_max(upto.min(published), Ordering::AcqRel);
            // Readers of a log with `Durability::Always` wait for this, not for the append.
            shared.appended.notify(usize::MAX);
            Ok(())
        }
        Err(error) => {
            // Never retried: the kernel may have dropped the dirty pages, so a later
            // success would prove nothing.
            error!(%error, "poisoning the log");
            shared.set_poison(&error);
            Err(error)
        }
    }
}

/// Starts writing `range` of `file` to the disk ([`DiskFile::start_writeback`]),
/// ordered with the syncs. A failure poisons the log as a failed sync does: the kernel may
/// have dropped the pages it could not write, and a later `fdatasync` would then succeed
/// without them.
pub(super) fn start_writeback(shared: &Shared, file: &dyn DiskFile, path: &Path, range: Range<u64>) {
    let _one_at_a_time = shared.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
    if shared.poison.get().is_some() {
        return;
    }
    if let Err(source) = file.start_writeback(range.start, range.end) {
        let what = format!("starting the writeback of bytes {range:?} of {} failed", path.display());
        let error = Error::io(what, source);
        error!(%error, "poisoning the log");
        shared.set_poison(&error);
    }
}

/// Work for the syncer thread.
pub(super) enum SyncJob {
    /// Sync `file` so that indexes below `upto` are durable, then complete `waiters`.
    Sync { file: Arc<dyn DiskFile>, path: Arc<Path>, upto: u64, waiters: Vec<Ack> },
    /// Start writing `range` of `file` to the disk, without waiting (see
    /// `Config::writeback_bytes`).
    Writeback { file: Arc<dyn DiskFile>, path: Arc<Path>, range: Range<u64> },
    /// Answered once every job sent before it is done.
    Drained(oneshot::Sender<()>),
}

/// Starts the syncer's thread.
pub(super) fn spawn_syncer(
    shared: &Arc<Shared>,
) -> std::io::Result<(std::sync::mpsc::Sender<SyncJob>, thread::JoinHandle<()>)> {
    let (tx, jobs) = std::sync::mpsc::channel();
    let durability = shared.config.durability;
    let syncer_shared = Arc::clone(shared);
    let handle =
        spawn_guarded("ringlog-syncer", shared, move || run_syncer(&syncer_shared, &jobs, durability))?;
    Ok((tx, handle))
}

/// The syncer thread: makes written entries durable while the appender keeps writing, and
/// starts the writeback of what it wrote. With `Interval`, a sync is due `interval_ms` after
/// the last one, whatever other jobs (writebacks) arrive meanwhile.
fn run_syncer(shared: &Shared, jobs: &Receiver<SyncJob>, durability: Durability) {
    // With `Interval`: the interval, and when the next sync is due.
    let mut timer = match durability {
        Durability::Interval { interval_ms, .. } => {
            let interval = Duration::from_millis(interval_ms);
            Some((interval, Instant::now() + interval))
        }
        _ => None,
    };
    loop {
        let first = match timer {
            Some((_, due)) => match jobs.recv_timeout(due.saturating_duration_since(Instant::now())) {
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
        if let Some((interval, due)) = &mut timer {
            let now = Instant::now();
            let syncs = batch.iter().any(|job| matches!(job, SyncJob::Sync { .. }));
            let passed = now >= *due;
            if syncs || passed {
                *due = now + *interval;
            }
            // The interval passed: sync the active segment if anything is unsynced. The
            // next index is read before the segment, so the segment holds every entry
            // below it that an earlier roll did not already sync.
            if passed && !syncs {
                let next = shared.next_index.load(Ordering::Acquire);
                if shared.durable_index.load(Ordering::Acquire) < next && shared.poison.get().is_none() {
                    let segment = shared.active();
                    batch.push(SyncJob::Sync {
                        file: Arc::clone(segment.store.file()),
                        path: segment.store.path().into(),
                        upto: next,
                        waiters: Vec::new(),
                    });
                }
            }
        }
        if !batch.is_empty() {
            sync_batch(shared, batch);
        }
    }
}

/// Syncs each file of the batch once (the highest `upto` of its jobs) and completes the
/// waiters: with success only if every sync succeeded.
fn sync_batch(shared: &Shared, batch: Vec<SyncJob>) {
    let mut files: Vec<(Arc<dyn DiskFile>, Arc<Path>, u64)> = Vec::new();
    let mut writebacks = Vec::new();
    let mut waiters = Vec::new();
    let mut drained = Vec::new();
    for job in batch {
        match job {
            SyncJob::Writeback { file, path, range } => writebacks.push((file, path, range)),
            SyncJob::Sync { file, path, upto, waiters: acks } => {
                waiters.extend(acks);
                match files.iter_mut().find(|(known, ..)| Arc::ptr_eq(known, &file)) {
                    Some((_, _, known_upto)) => *known_upto = (*known_upto).max(upto),
                    None => files.push((file, path, upto)),
                }
            }
            SyncJob::Drained(reply) => drained.push(reply),
        }
    }
    // A file synced below does not need it.
    for (file, path, range) in writebacks {
        if !files.iter().any(|(synced, ..)| Arc::ptr_eq(synced, &file)) {
            start_writeback(shared, file.as_ref(), &path, range);
        }
    }
    let mut result = Ok(());
    for (file, path, upto) in &files {
        result = sync_file(shared, file.as_ref(), path, *upto);
        if result.is_err() {
            break;
        }
    }
    for ack in waiters {
        ack.complete(match &result {
            Ok(()) => Ok(()),
            Err(_) => Err(shared.poison_error()),
        });
    }
    for reply in drained {
        let _ = reply.send(());
    }
}
