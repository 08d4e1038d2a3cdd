//! The offset index of one segment: entry `i` gives the store position of the record with
//! offset `base + i`.
//!
//! ```text
//! byte 0..32             file header (see `header`), magic "RLOGINDX"
//! byte 32 + 8*i ..+4     relative offset i          u32 LE
//! byte 32 + 8*i+4 ..+4   store position of record   u32 LE
//! ```
//!
//! While a segment is active its index file is preallocated to `index_bytes_max` and
//! memory-mapped; entries are written through the map with no system call. When the
//! segment is sealed or the log closes, the map is flushed and the file is cut to its real
//! size. After an unclean stop the file keeps its zero-filled tail: a zero entry is never
//! valid (no record lives at position 0), so recovery stops there.
//!
//! Each entry is one `AtomicU64`, written by the appender before it publishes `len`
//! (release) and read by readers only below `len` (acquire): readers never lock.
//!
//! mmap contract: the index file is private to the log. Another process truncating it
//! while it is mapped would make access fault (SIGBUS); the log never truncates below
//! `len`, and only after the segment stops growing. The simulated disk, which has no file
//! to map, keeps entries on the heap and stores each one into the file's page cache as it
//! is written ([`DiskFile::store_mapped`]), as the map would: its crash images of an index
//! mix old, new and torn pages just as a real one's can.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use crate::{
    error::{IoContext, Result},
    header::{self, FileKind},
    io::DiskFile,
    store::Position,
};

const ENTRY_LEN: u64 = 8;

/// Entries that fit in an index file of `index_bytes_max` bytes (header included).
pub(crate) fn capacity(index_bytes_max: u64) -> u32 {
    let entries = index_bytes_max.saturating_sub(header::LEN as u64) / ENTRY_LEN;
    u32::try_from(entries).unwrap_or(u32::MAX)
}

fn file_len(entries: u32) -> u64 {
    header::LEN as u64 + u64::from(entries) * ENTRY_LEN
}

fn pack(relative: u32, position: Position) -> u64 {
    (position.byte() << 32 | u64::from(relative)).to_le()
}

fn unpack(entry: u64) -> (u32, Position) {
    let entry = u64::from_le(entry);
    (entry as u32, Position::new(entry >> 32))
}

/// Allocates the blocks of `file` up to `len`, so that touching the map never needs space
/// the filesystem may not have: a page fault that cannot allocate is a SIGBUS, not an error
/// (on a full disk when an entry is written to a new page, and on tmpfs even when recovery
/// reads a hole). A full disk is then an ENOSPC here, when the segment is created or the
/// log opened. Filesystems without `fallocate` keep the sparse file (glibc emulates it).
fn preallocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: posix_fallocate reads no memory of ours: it takes a descriptor, which stays
    // open while `file` is borrowed, and two integers.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 | libc::EOPNOTSUPP => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

enum Memory {
    Mapped(memmap2::MmapRaw),
    Heap(Box<[AtomicU64]>),
}

pub(crate) struct Index {
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    memory: Memory,
    capacity: u32,
    len: AtomicU32,
}

impl Index {
    /// Creates an empty index for the segment at `base_offset`.
    pub(crate) fn create(
        file: Arc<dyn DiskFile>,
        path: &Path,
        base_offset: u64,
        capacity: u32,
    ) -> Result<Index> {
        let what = || format!("creating index {}", path.display());
        file.set_len(0).context(what)?;
        let (_, written) = file.write_all_at(header::encode(FileKind::Index, base_offset).to_vec(), 0);
        written.context(what)?;
        Index::map(file, path, capacity, 0)
    }

    /// Opens an existing index, trusting none of its entries: `len` starts at zero and
    /// recovery decides how many are valid (see [`Index::valid_prefix`]). Returns `None`
    /// when the header is unusable and the index must be rebuilt.
    pub(crate) fn open(
        file: Arc<dyn DiskFile>,
        path: &Path,
        base_offset: u64,
        capacity: u32,
    ) -> Result<Option<Index>> {
        let what = || format!("opening index {}", path.display());
        let on_disk = file.len().context(what)?;
        let mut head = [0u8; header::LEN];
        if on_disk < header::LEN as u64
            || file.read_exact_at(&mut head, 0).is_err()
            || header::validate(&head, FileKind::Index, base_offset).is_err()
        {
            return Ok(None);
        }
        // Keep every entry the file holds even when the configured capacity has since
        // shrunk: cutting live entries would lose the index (proglog panics there).
        let held = u32::try_from((on_disk - header::LEN as u64) / ENTRY_LEN).unwrap_or(u32::MAX);
        Index::map(file, path, capacity.max(held), 0).map(Some)
    }

    fn map(file: Arc<dyn DiskFile>, path: &Path, capacity: u32, len: u32) -> Result<Index> {
        let what = || format!("sizing index {}", path.display());
        let bytes = file_len(capacity);
        if file.len().context(what)? < bytes {
            file.set_len(bytes).context(what)?;
        }
        let memory = match file.std_file() {
            Some(std_file) => Memory::Mapped({
                preallocate(std_file, bytes).context(|| format!("allocating index {}", path.display()))?;
                let map = memmap2::MmapOptions::new()
                    .len(usize::try_from(bytes).expect("index fits in memory"))
                    .map_raw(std_file)
                    .context(|| format!("mapping index {}", path.display()))?;
                // Entries are touched a page at a time, in order: without this, the first
                // fault of a fresh index reads ahead (zero-fills) megabytes of page cache,
                // which the trim then frees again (measured: ~3 ms of a fresh 10 k appends).
                map.advise(memmap2::Advice::Random)
                    .context(|| format!("advising index {}", path.display()))?;
                map
            }),
            None => {
                let mut raw = vec![0u8; (bytes - header::LEN as u64) as usize];
                file.read_exact_at(&mut raw, header::LEN as u64)
                    .context(|| format!("reading index {}", path.display()))?;
                Memory::Heap(
                    raw.chunks_exact(ENTRY_LEN as usize)
                        .map(|entry| AtomicU64::new(u64::from_ne_bytes(entry.try_into().expect("8 bytes"))))
                        .collect(),
                )
            }
        };
        Ok(Index { path: path.to_path_buf(), file, memory, capacity, len: AtomicU32::new(len) })
    }

    fn entries(&self) -> &[AtomicU64] {
        match &self.memory {
            Memory::Heap(entries) => entries,
            Memory::Mapped(map) => {
                // SAFETY: the map is `file_len(capacity)` bytes of a file the log owns, so
                // `capacity` 8-byte entries start at byte 32; a page-aligned map plus 32 is
                // 8-byte aligned. Entries are only ever accessed atomically, so the shared
                // mapping is never read and written non-atomically at once, and the slice
                // lives no longer than `self`, which owns the map.
                unsafe {
                    std::slice::from_raw_parts(
                        map.as_ptr().add(header::LEN).cast::<AtomicU64>(),
                        self.capacity as usize,
                    )
                }
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Number of published entries.
    pub(crate) fn len(&self) -> u32 {
        self.len.load(Ordering::Acquire)
    }

    /// Store position of entry `relative`, if it is published.
    pub(crate) fn position(&self, relative: u32) -> Option<Position> {
        if relative >= self.len() {
            return None;
        }
        Some(unpack(self.entries()[relative as usize].load(Ordering::Relaxed)).1)
    }

    /// The raw entry at `i`, published or not (for recovery).
    pub(crate) fn raw(&self, i: u32) -> (u32, Position) {
        unpack(self.entries()[i as usize].load(Ordering::Relaxed))
    }

    /// Appends the next entry without publishing it. Only the appender calls this.
    pub(crate) fn push_unpublished(&self, pending: u32, position: Position) {
        let relative = self.len() + pending;
        assert!(relative < self.capacity, "index entry {relative} past capacity {}", self.capacity);
        self.store(relative, pack(relative, position));
    }

    /// Writes entry `i`: through the map, or to the heap and the file's page cache.
    fn store(&self, i: u32, entry: u64) {
        self.entries()[i as usize].store(entry, Ordering::Relaxed);
        if let Memory::Heap(_) = self.memory {
            self.file.store_mapped(&entry.to_ne_bytes(), header::LEN as u64 + u64::from(i) * ENTRY_LEN);
        }
    }

    /// Forgets every entry from `len` on (suffix truncation; the appender only). The entries
    /// stay in the file: past the store's cut, recovery never trusts them.
    pub(crate) fn cut(&self, len: u32) {
        assert!(len <= self.len(), "an index is cut, never grown, by truncation");
        self.len.store(len, Ordering::Release);
    }

    /// Publishes `count` entries written by `push_unpublished`.
    pub(crate) fn publish(&self, count: u32) {
        self.len.fetch_add(count, Ordering::Release);
    }

    /// Room left for entries.
    pub(crate) fn room(&self) -> u32 {
        self.capacity - self.len().min(self.capacity)
    }

    /// The entries on disk that recovery can trust without reading the store: relative
    /// offsets counting up from zero, positions strictly increasing from the end of the
    /// store header and below `store_len`. Stops at the first entry that is not.
    pub(crate) fn valid_prefix(&self, store_len: u64) -> u32 {
        let mut previous = None;
        for i in 0..self.capacity {
            let (relative, position) = self.raw(i);
            let position = position.byte();
            let ordered = previous.is_none_or(|p| position > p);
            if relative != i || position < header::LEN as u64 || position >= store_len || !ordered {
                return i;
            }
            previous = Some(position);
        }
        self.capacity
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Replaces every entry with `positions` and zeroes the rest, so a stale entry can
    /// never be mistaken for a live one later. Recovery only, before the index is shared.
    pub(crate) fn rebuild(&self, positions: &[Position]) {
        assert!(positions.len() <= self.capacity as usize);
        for (i, entry) in self.entries().iter().enumerate() {
            let value = positions.get(i).map_or(0, |&position| pack(i as u32, position));
            if entry.load(Ordering::Relaxed) != value {
                self.store(i as u32, value);
            }
        }
        self.len.store(positions.len() as u32, Ordering::Release);
    }

    /// Whether the file is already cut to its published entries.
    pub(crate) fn is_trimmed(&self) -> Result<bool> {
        let len = self.file.len().context(|| format!("sizing index {}", self.path.display()))?;
        Ok(len == file_len(self.len()))
    }

    /// Makes the entries durable (`fdatasync` also writes the pages dirtied through the map).
    /// Done once, when the segment is sealed (`Appender::roll`): recovery trusts a sealed
    /// index after checking only its last entry, which is sound only if no older version of
    /// the file can come back from a crash.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data().context(|| format!("syncing index {}", self.path.display()))
    }

    /// Cuts the file to its published entries: done when the segment stops
    /// growing (sealed, or the log closes). No entry may be pushed afterwards.
    ///
    /// Neither flushed nor synced: the index is never a source of durability (recovery
    /// trusts an entry only where it matches the store, and rebuilds the rest from it), so
    /// what a crash leaves of a trim costs a rescan at most, never a record.
    pub(crate) fn trim(&self) -> Result<()> {
        let what = || format!("trimming index {}", self.path.display());
        self.file.set_len(file_len(self.len())).context(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Disk, SimDisk, pwrite::PwriteDisk};

    fn disks() -> Vec<(Box<dyn Disk>, PathBuf, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("00000000000000000000.index");
        let sim = SimDisk::new();
        sim.create_dir_all(Path::new("/sim")).unwrap();
        vec![
            (Box::new(PwriteDisk), real, Some(dir)),
            (Box::new(sim), PathBuf::from("/sim/00000000000000000000.index"), None),
        ]
    }

    #[test]
    fn entries_read_back_and_survive_a_clean_reopen() {
        for (disk, path, _dir) in disks() {
            let index = Index::create(disk.open(&path, true).unwrap(), &path, 0, capacity(1024)).unwrap();
            assert_eq!(index.position(0), None);
            index.push_unpublished(0, Position::new(32));
            index.push_unpublished(1, Position::new(42));
            assert_eq!(index.position(0), None, "unpublished entries are invisible");
            index.publish(2);
            assert_eq!(index.position(0), Some(Position::new(32)));
            assert_eq!(index.position(1), Some(Position::new(42)));
            assert_eq!(index.position(2), None);
            index.trim().unwrap();
            drop(index);

            let file = disk.open(&path, false).unwrap();
            assert_eq!(file.len().unwrap(), 32 + 16, "trim cuts the file to its entries");
            let index = Index::open(file, &path, 0, capacity(1024)).unwrap().unwrap();
            assert_eq!(index.valid_prefix(100), 2);
            assert_eq!(index.valid_prefix(42), 1, "an entry at or past the store end is invalid");
        }
    }

    #[test]
    fn capacity_rounds_down_when_the_size_is_not_a_multiple_of_the_entry() {
        // proglog's rule `size >= max` never fires for 1024 bytes of 12-byte entries.
        assert_eq!(capacity(1024), (1024 - 32) / 8);
        assert_eq!(capacity(32 + 8 * 3 + 7), 3);
        assert_eq!(capacity(31), 0);
        for (disk, path, _dir) in disks() {
            let index =
                Index::create(disk.open(&path, true).unwrap(), &path, 0, capacity(32 + 8 * 3 + 7)).unwrap();
            for i in 0..3 {
                assert!(index.room() > 0);
                index.push_unpublished(0, Position::new(32 + i));
                index.publish(1);
            }
            assert_eq!(index.room(), 0);
        }
    }

    #[test]
    fn zero_filled_tail_after_an_unclean_stop_is_not_trusted() {
        for (disk, path, _dir) in disks() {
            let index = Index::create(disk.open(&path, true).unwrap(), &path, 0, 100).unwrap();
            index.push_unpublished(0, Position::new(32));
            index.push_unpublished(1, Position::new(60));
            index.publish(2);
            drop(index); // no trim: the file keeps its preallocated zero tail
            let file = disk.open(&path, false).unwrap();
            assert_eq!(file.len().unwrap(), file_len(100));
            let index = Index::open(file, &path, 0, 100).unwrap().unwrap();
            assert_eq!(index.valid_prefix(1000), 2);
        }
    }

    #[test]
    fn a_bad_header_asks_for_a_rebuild() {
        for (disk, path, _dir) in disks() {
            let file = disk.open(&path, true).unwrap();
            let (_, r) = file.write_all_at(vec![7; 64], 0);
            r.unwrap();
            assert!(Index::open(file, &path, 0, 10).unwrap().is_none());
        }
    }
}
