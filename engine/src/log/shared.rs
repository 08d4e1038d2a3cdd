//! The state the handle, the appender and the syncer share: the segments, the published,
//! durable and first indexes, the offset map, the metadata file and the poison. Only the
//! appender changes the segments' tail; readers take the segment list's lock briefly and
//! never across IO.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use event_listener::Event;
use tracing::info;

use super::Counters;
use crate::{
    config::{Config, Durability},
    entry::Entry,
    error::{Error, IoContext, Result},
    io::{DirLock, Disk},
    meta::MetaFile,
    offsets::OffsetMap,
    record::FrameRef,
    segment::{self, Segment, SegmentList},
};

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
    /// Record readers see nothing at or above this (`Log::set_read_limit`; `u64::MAX` for a
    /// lone log).
    pub(crate) read_limit: AtomicU64,
    /// The non-data entries, for translating offsets and indexes.
    pub(crate) offsets: RwLock<OffsetMap>,
    /// The metadata file as last written (and `save_committed`'s value).
    pub(crate) meta: Mutex<MetaFile>,
    /// A `save_committed` is not in the file yet.
    pub(crate) meta_unwritten: AtomicBool,
    /// Segment files were created since the directory was last synced: the next sync
    /// (`sync_file`) syncs it too, before it calls anything durable.
    pub(crate) dir_unsynced: AtomicBool,
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
    pub(crate) dir_lock: Mutex<Option<DirLock>>,
    /// A snapshot's files are being staged (one staging at a time: they share file names).
    pub(crate) staging: AtomicBool,
}

impl Shared {
    pub(crate) fn active(&self) -> Arc<Segment> {
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(segments.last().expect("a log always has a segment"))
    }

    /// Syncs the data directory if segment files were created since it last was.
    pub(crate) fn sync_dir_if_changed(&self) -> Result<()> {
        if self.dir_unsynced.swap(false, Ordering::SeqCst) {
            self.disk.sync_dir(&self.dir).map_err(|source| {
                self.dir_unsynced.store(true, Ordering::SeqCst);
                Error::io(format!("syncing directory {}", self.dir.display()), source)
            })?;
        }
        Ok(())
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

    pub(crate) fn segments(&self) -> std::sync::RwLockReadGuard<'_, SegmentList> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn offsets(&self) -> std::sync::RwLockReadGuard<'_, OffsetMap> {
        self.offsets.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn meta_file(&self) -> std::sync::MutexGuard<'_, MetaFile> {
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
        let mut entries = Vec::new();
        self.read_raw_into(index, end, max_entries, max_bytes, &mut |frame| entries.push(frame.to_entry()))?;
        Ok(entries)
    }

    /// [`Shared::read_raw`], lending each frame to `each`; returns the index after the
    /// last one. On an error the caller drops what `each` was given: it may be part of a
    /// suffix that a truncation removed meanwhile.
    pub(crate) fn read_raw_into(
        &self,
        index: u64,
        end: u64,
        max_entries: usize,
        max_bytes: usize,
        each: &mut impl FnMut(FrameRef<'_>),
    ) -> Result<u64> {
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
            segment.read_entries_into(index, max_entries.min(available as usize), max_bytes, each)
        };
        let after = index + u64::from(*result.as_ref().unwrap_or(&0));
        if self.truncations.load(Ordering::Acquire) != epoch {
            let next = self.next_index.load(Ordering::Acquire);
            match &result {
                Ok(count) if *count > 0 && after <= next => {}
                _ => return Err(Error::Truncated { index }),
            }
        }
        result.map(|_| after)
    }

    /// Removes leading sealed segments while `drop` says so; the first index follows.
    pub(crate) fn drop_front(&self, mut drop: impl FnMut(&Segment) -> bool) -> Result<usize> {
        // `drop` may read the segments (retention by age does): it looks at a copy of the
        // list, so that readers and appends never wait on its IO.
        let sealed: Vec<Arc<Segment>> = {
            let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
            segments[..segments.len() - 1].to_vec()
        };
        let chosen = sealed.iter().take_while(|s| drop(s)).count();
        if chosen == 0 {
            return Ok(0);
        }
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write().unwrap_or_else(|p| p.into_inner());
            // Only what is still at the front (another drop may have taken some meanwhile),
            // and never the active segment.
            let count = segments[..segments.len() - 1]
                .iter()
                .zip(&sealed[..chosen])
                .take_while(|(now, seen)| Arc::ptr_eq(now, seen))
                .count();
            let removed: Vec<_> = segments.drain(..count).collect();
            let first =
                self.first_index.fetch_max(segments[0].base(), Ordering::AcqRel).max(segments[0].base());
            self.offsets.write().unwrap_or_else(|p| p.into_inner()).forget_below(first);
            removed
        };
        for segment in &removed {
            let bytes = segment.size();
            segment.remove(self.disk.as_ref())?;
            self.stats.segments_dropped.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_dropped.fetch_add(bytes, Ordering::Relaxed);
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

    /// The index below which record readers may read: published, or with `Always` durable,
    /// and below the read limit (a Raft replica's applied mark).
    pub(crate) fn visible_index(&self) -> u64 {
        let written = match self.config.durability {
            Durability::Always => self.durable_index.load(Ordering::Acquire),
            _ => self.next_index.load(Ordering::Acquire),
        };
        // Never below the first index: a replica's read limit (its applied mark) may lag an
        // install that moved the whole log past it, and nothing below is readable anyway.
        written.min(self.read_limit.load(Ordering::Acquire)).max(self.first_index.load(Ordering::Acquire))
    }
}
