//! A segment: one store file and its index, holding the contiguous entries from its base
//! index. Both files are named by the base index, zero-padded to 20 digits, so a directory
//! listing sorts them in log order: `00000000000000000042.store`, `...42.index`.
//!
//! Readers share a segment through an `Arc`; removing a segment unlinks its files, and
//! readers still holding it keep reading through their open handles.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    entry::Entry,
    error::{Error, Result},
    index::Index,
    io::Disk,
    record::{self, FrameRef},
    store::{Position, Store},
};

pub(crate) const STORE_EXT: &str = "store";
pub(crate) const INDEX_EXT: &str = "index";

/// The path of a segment file.
pub(crate) fn file_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Parses a segment file name into its base offset and extension.
pub(crate) fn parse_file_name(name: &str) -> Option<Result<(u64, &str), ()>> {
    let (stem, ext) = name.rsplit_once('.')?;
    if ext != STORE_EXT && ext != INDEX_EXT {
        return None;
    }
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(()));
    }
    Some(stem.parse().map(|base| (base, ext)).map_err(|_| ()))
}

pub(crate) struct Segment {
    base: u64,
    pub(crate) store: Store,
    pub(crate) index: Index,
}

impl Segment {
    pub(crate) fn new(base: u64, store: Store, index: Index) -> Segment {
        Segment { base, store, index }
    }

    /// Creates the files of a new, empty segment. Their directory entries are not synced
    /// here: the log's next sync does it before anything in them is called durable (see
    /// `Shared::dir_unsynced`), so a fresh log or a roll costs no directory fsync of its
    /// own. On failure nothing is left behind, so a failed roll cannot leave a stray
    /// segment after the active one.
    pub(crate) fn create(disk: &dyn Disk, dir: &Path, base: u64, index_capacity: u32) -> Result<Segment> {
        use crate::error::IoContext;
        let store_path = file_path(dir, base, STORE_EXT);
        let index_path = file_path(dir, base, INDEX_EXT);
        let created = (|| {
            let store_file =
                disk.open(&store_path, true).context(|| format!("creating {}", store_path.display()))?;
            let store = Store::create(store_file, &store_path, base)?;
            let index_file =
                disk.open(&index_path, true).context(|| format!("creating {}", index_path.display()))?;
            let index = Index::create(index_file, &index_path, base, index_capacity)?;
            Ok(Segment { base, store, index })
        })();
        if created.is_err() {
            let _ = disk.remove(&store_path);
            let _ = disk.remove(&index_path);
            // Unsynced, the removal could be undone by a crash that kept the creation.
            let _ = disk.sync_dir(dir);
        }
        created
    }

    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// One past the last published index.
    pub(crate) fn next_index(&self) -> u64 {
        self.base + u64::from(self.index.len())
    }

    /// Store bytes in use by published records (header included).
    pub(crate) fn size(&self) -> u64 {
        self.store.size()
    }

    /// Reads published entries from `index` on: at most `max_entries`, and no more than
    /// `max_bytes` of frames except that the first entry is always returned. Stops at the
    /// end of this segment. One `pread` covers all of them.
    pub(crate) fn read_entries(
        &self,
        index: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        self.read_entries_into(index, max_entries, max_bytes, &mut |frame| entries.push(frame.to_entry()))?;
        Ok(entries)
    }

    /// [`Segment::read_entries`], lending each frame to `each` as it is decoded (a reader
    /// that wants records builds them straight away); returns how many there were.
    pub(crate) fn read_entries_into(
        &self,
        index: u64,
        max_entries: usize,
        max_bytes: usize,
        each: &mut impl FnMut(FrameRef<'_>),
    ) -> Result<u32> {
        let published = self.index.len();
        let first = u32::try_from(index - self.base).expect("index within the segment");
        // A suffix truncation may have cut the segment since the caller looked.
        let truncated = || Error::Truncated { index };
        let start = self.index.position(first).filter(|_| first < published).ok_or_else(truncated)?;
        // The most frames whose bytes fit in `max_bytes`, and always one: frame ends grow
        // with the index, so a binary search over the index finds them. The last published
        // frame ends at the store's size, which an append may move past it meanwhile: the
        // read then holds bytes after the frames, which are not decoded.
        let start = start.byte();
        let limit = (published - first).min(u32::try_from(max_entries.max(1)).unwrap_or(u32::MAX));
        let bytes_of = |count: u32| self.frame_end(first + count - 1, published).saturating_sub(start);
        let (mut count, mut above) = (1, limit);
        while count < above {
            let mid = count + (above - count).div_ceil(2);
            match bytes_of(mid) as usize <= max_bytes {
                true => count = mid,
                false => above = mid - 1,
            }
        }
        let end = start + bytes_of(count);
        if end <= start {
            return Err(truncated());
        }
        let bytes = self.store.read(start, (end - start) as usize)?;
        let format = self.store.format();
        let mut at = 0usize;
        for i in 0..count {
            let expected = index + u64::from(i);
            let position = start + at as u64;
            let value_len_max = (bytes.len() - at).saturating_sub(format.header_len()) as u32;
            let frame = record::decode_in_place(&bytes, at, value_len_max, format)
                .map_err(|e| Error::corrupt(self.store.path(), position, e))?;
            if frame.header.id.index != expected {
                return Err(Error::corrupt(
                    self.store.path(),
                    position,
                    format!(
                        "frame holds index {} where the index file puts index {expected}",
                        frame.header.id.index
                    ),
                ));
            }
            at += frame.header.frame_len();
            each(frame);
        }
        Ok(count)
    }

    /// Store position just past the frame of entry `relative`.
    fn frame_end(&self, relative: u32, published: u32) -> u64 {
        match self.index.position(relative + 1) {
            Some(next) if relative + 1 < published => next.byte(),
            _ => self.store.size(),
        }
    }

    /// Store position where the frame of `index` starts (the end of the store for the
    /// next index).
    pub(crate) fn frame_start(&self, index: u64) -> u64 {
        let relative = u32::try_from(index - self.base).expect("index within segment");
        self.index.position(relative).map_or(self.size(), Position::byte)
    }

    /// Unlinks the segment's files; open handles keep working until dropped.
    pub(crate) fn remove(&self, disk: &dyn Disk) -> Result<()> {
        use crate::error::IoContext;
        for path in [self.store.path(), self.index.path()] {
            disk.remove(path).context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Segments in offset order, shared with readers.
pub(crate) type SegmentList = Vec<Arc<Segment>>;

/// The segment that holds `index`, if any.
pub(crate) fn find(segments: &[Arc<Segment>], index: u64) -> Option<&Arc<Segment>> {
    let i = segments.partition_point(|s| s.base() <= index);
    i.checked_sub(1).map(|i| &segments[i])
}
