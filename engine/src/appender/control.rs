//! What the appender does between groups: explicit syncs, suffix truncation, purge, and
//! sealing an idle segment.
//! Nothing is in flight while they change the files (see `docs/format.md` for the order
//! of their steps and why each is crash-safe).

use std::sync::{Arc, atomic::Ordering};

use super::{Appender, syncer::SyncJob};
use crate::{
    entry::{EntryId, EntryKind},
    error::{IoContext, Result},
    index,
    segment::Segment,
};

impl Appender {
    /// Waits until the syncer has finished every job sent so far.
    pub(super) fn drain_syncer(&self) {
        if let Some((jobs, _)) = &self.syncer {
            let (drained, done) = oneshot::channel();
            if jobs.send(SyncJob::Drained(drained)).is_ok() {
                let _ = done.recv();
            }
        }
    }

    /// Makes every published entry durable (`Log::sync`, `Log::save_vote`).
    pub(super) fn sync_now(&mut self) -> Result<()> {
        self.finish_in_flight()?;
        self.drain_syncer();
        self.sync_unsynced()
    }

    /// Removes every entry after `after` (`None`: every entry the log holds); see the
    /// suffix truncation section of `docs/format.md` for the order of the steps.
    pub(super) fn truncate_after(&mut self, after: Option<u64>) -> Result<()> {
        self.finish_in_flight()?;
        self.drain_syncer();
        if self.shared.poison.get().is_some() {
            return Err(self.shared.poison_error());
        }
        let first = self.shared.first_index.load(Ordering::Acquire);
        let keep_to = after.map_or(first, |index| index.saturating_add(1).max(first));
        if keep_to >= self.next {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let (disk, dir) = (shared.disk.as_ref(), shared.dir.as_path());
        let sync_dir = || disk.sync_dir(dir).context(|| format!("syncing directory {}", dir.display()));
        let result = (|| {
            // Whole segments from `keep_to` on, newest first, each unlink durable before the
            // next so that a crash leaves a prefix of the log, never a hole.
            let was_active = shared.active();
            loop {
                let removed = {
                    let mut segments = shared.segments.write().unwrap_or_else(|p| p.into_inner());
                    let last = segments.last().expect("a log always has a segment");
                    if segments.len() == 1 || last.base() < keep_to {
                        break;
                    }
                    shared.truncations.fetch_add(1, Ordering::AcqRel);
                    segments.pop().expect("checked above")
                };
                removed.remove(disk)?;
                sync_dir()?;
            }
            let segment = shared.active();
            let relative = u32::try_from(keep_to.saturating_sub(segment.base())).expect("within the segment");
            let cut_at = segment.frame_start(keep_to.max(segment.base()));
            {
                let _no_sync = shared.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
                shared.truncations.fetch_add(1, Ordering::AcqRel);
                segment.index.cut(relative);
                shared.next_index.store(keep_to, Ordering::Release);
                let durable = shared.durable_index.load(Ordering::Acquire);
                shared.durable_index.store(durable.min(keep_to), Ordering::Release);
                segment.store.truncate(cut_at)?;
                // Again once the cut is done: a read that began after the first count, while
                // the store was being cut, sees a change too and reports `Truncated`.
                shared.truncations.fetch_add(1, Ordering::AcqRel);
            }
            if !Arc::ptr_eq(&segment, &was_active) {
                // A sealed segment keeps its trimmed index: a new active segment follows it
                // (and replaces it when nothing of it is left).
                if relative == 0 {
                    shared.segments.write().unwrap_or_else(|p| p.into_inner()).pop();
                    segment.remove(disk)?;
                    sync_dir()?;
                }
                let capacity = index::capacity(shared.config.index_bytes_max);
                let active = Arc::new(Segment::create(disk, dir, keep_to, capacity)?);
                shared.dir_unsynced.store(true, Ordering::SeqCst);
                shared.segments.write().unwrap_or_else(|p| p.into_inner()).push(active);
            }
            Ok(())
        })();
        self.next = keep_to;
        self.shared.offsets.write().unwrap_or_else(|p| p.into_inner()).truncate_from(keep_to);
        self.last_term = self.shared.last_term_before(keep_to);
        self.shared.appended.notify(usize::MAX);
        match result {
            Ok(()) => self.shared.write_meta(|_| {}),
            Err(error) => Err(self.poison(error)),
        }
    }

    /// Seals the active segment when its oldest record was written before `cutoff_ms`
    /// (Unix ms), so that age retention can drop it though no append ever fills it. A
    /// segment without records (empty, or only Raft's blank and membership entries) stays.
    pub(super) fn roll_if_older(&mut self, cutoff_ms: u64) -> Result<()> {
        self.finish_in_flight()?;
        if self.shared.poison.get().is_some() {
            return Err(self.shared.poison_error());
        }
        let active = self.shared.active();
        let mut index = active.base();
        let oldest = loop {
            if index >= active.next_index() {
                break None;
            }
            let entry = active.read_entries(index, 1, 0)?.pop();
            match entry {
                Some(entry) if entry.kind == EntryKind::Data => break Some(entry.timestamp_ms),
                Some(_) => index += 1,
                None => break None,
            }
        };
        if oldest.is_some_and(|oldest| oldest <= cutoff_ms) {
            self.roll(&active)?;
        }
        Ok(())
    }

    /// Finishes the committed install in the log's directory (see `log::install`) and
    /// takes up what it left: the segments, indexes, offsets and metadata, as an open would.
    /// A failure poisons the log; the next open finishes the install.
    pub(super) fn install(&mut self) -> Result<()> {
        self.finish_in_flight()?;
        self.drain_syncer();
        if self.shared.poison.get().is_some() {
            return Err(self.shared.poison_error());
        }
        let shared = Arc::clone(&self.shared);
        let (disk, dir) = (shared.disk.as_ref(), shared.dir.as_path());
        let result = (|| {
            // A committed id kept in memory only reaches the file the install rewrites.
            if shared.meta_unwritten.load(Ordering::Acquire) {
                shared.write_meta(|_| {})?;
            }
            crate::log::finish_install(disk, dir)?;
            crate::recovery::recover(disk, dir, &shared.config, false)
        })();
        let recovered = match result {
            Ok(recovered) => recovered,
            Err(error) => return Err(self.poison(error)),
        };
        let next = recovered.segments.last().expect("recovery leaves a segment").next_index();
        {
            let _no_sync = shared.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut segments = shared.segments.write().unwrap_or_else(|p| p.into_inner());
            shared.truncations.fetch_add(1, Ordering::AcqRel);
            *segments = recovered.segments;
            *shared.offsets.write().unwrap_or_else(|p| p.into_inner()) = recovered.offsets;
            *shared.meta_file() = recovered.meta;
            shared.first_index.store(recovered.first_index, Ordering::Release);
            shared.next_index.store(next, Ordering::Release);
            shared.durable_index.store(next, Ordering::Release);
        }
        if recovered.created_segments {
            shared.dir_unsynced.store(true, Ordering::SeqCst);
        }
        self.next = next;
        self.last_term = recovered.last_term;
        shared.appended.notify(usize::MAX);
        tracing::info!(dir = %dir.display(), first_index = recovered.first_index, next_index = next, "installed segments");
        Ok(())
    }

    /// Purges every entry up to `upto`: durably recorded first, then whole segments below
    /// it are deleted. A purge past the last entry empties the log, which goes on at
    /// `upto.index + 1`.
    pub(super) fn purge(&mut self, upto: EntryId) -> Result<()> {
        self.finish_in_flight()?;
        let new_first = upto.index.saturating_add(1);
        let first = self.shared.first_index.load(Ordering::Acquire);
        if new_first <= first {
            return Ok(());
        }
        self.shared.offsets.write().unwrap_or_else(|p| p.into_inner()).forget_below(new_first.min(self.next));
        self.shared.write_meta(|file| file.meta.purged = Some(upto))?;
        if new_first < self.next {
            self.shared.first_index.store(new_first, Ordering::Release);
            return self.shared.drop_front(|segment| segment.next_index() <= new_first).map(|_| ());
        }
        // Past the end: every segment goes, and an empty one starts at `new_first`.
        self.drain_syncer();
        let shared = Arc::clone(&self.shared);
        let (disk, dir) = (shared.disk.as_ref(), shared.dir.as_path());
        let capacity = index::capacity(shared.config.index_bytes_max);
        // The files change first, outside the segment list's lock (readers keep theirs
        // through open handles); then the list is swapped at once. On a failure the list
        // keeps the old segments, the log is poisoned, and recovery finishes the purge.
        let result = (|| {
            let old = shared.segments.read().unwrap_or_else(|p| p.into_inner()).clone();
            for segment in old.iter().rev() {
                segment.remove(disk)?;
            }
            disk.sync_dir(dir).context(|| format!("syncing directory {}", dir.display()))?;
            let fresh = Arc::new(Segment::create(disk, dir, new_first, capacity)?);
            shared.dir_unsynced.store(true, Ordering::SeqCst);
            let _no_sync = shared.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut segments = shared.segments.write().unwrap_or_else(|p| p.into_inner());
            shared.truncations.fetch_add(1, Ordering::AcqRel);
            *segments = vec![fresh];
            shared.first_index.store(new_first, Ordering::Release);
            shared.next_index.store(new_first, Ordering::Release);
            shared.durable_index.store(new_first, Ordering::Release);
            Ok(())
        })();
        self.next = new_first;
        self.last_term = upto.term;
        self.shared.appended.notify(usize::MAX);
        result.map_err(|error| self.poison(error))
    }
}
