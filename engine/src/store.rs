//! The store file of one segment: a file header followed by record frames, back to back.
//!
//! The appender is the only writer. `size` is the published length: every byte below it
//! holds complete frames that readers may read; bytes past it are in flight or a torn tail.

use std::{
    ops::Range,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;

use crate::{
    error::{Error, IoContext, Result},
    header::{self, FileKind},
    io::DiskFile,
    record::Format,
};

/// Bytes before the first frame of a store file.
pub(crate) const HEADER_LEN: usize = header::LEN;

/// Where a frame starts in a store file, in bytes. A store holds at most
/// `store_bytes_max` bytes, which fits `u32`, so an index entry keeps a position in four
/// bytes. A type of its own so that a position and a relative index (both `u32` in an
/// index entry) cannot be swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position(u32);

impl Position {
    /// The position of byte `byte`; panics past `u32::MAX` (`Config::validate` keeps
    /// `store_bytes_max` below it).
    pub(crate) fn new(byte: u64) -> Position {
        Position(u32::try_from(byte).expect("store_bytes_max fits u32"))
    }

    pub(crate) fn byte(self) -> u64 {
        u64::from(self.0)
    }
}

/// Writeback starts and ends on multiples of this, so that it never covers the page the
/// appender writes next (a page under writeback can make a write to it wait, on devices
/// that need stable pages); 64 KiB is a whole number of 4, 16 and 64 KiB pages.
const WRITEBACK_ALIGN: u64 = 64 << 10;

fn whole_blocks(bytes: u64) -> u64 {
    bytes / WRITEBACK_ALIGN * WRITEBACK_ALIGN
}

pub(crate) struct Store {
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    format: Format,
    size: AtomicU64,
    /// Where the next writeback starts (`Config::writeback_bytes`): bytes below it were
    /// there when the store opened, or their writeback has started.
    written_back: AtomicU64,
}

impl Store {
    /// Writes the header of a new, empty store.
    pub(crate) fn create(file: Arc<dyn DiskFile>, path: &Path, base_index: u64) -> Result<Store> {
        let what = || format!("creating store {}", path.display());
        file.set_len(0).context(what)?;
        let (_, written) = file.write_all_at(header::encode(FileKind::Store, base_index).to_vec(), 0);
        written.context(what)?;
        let size = AtomicU64::new(HEADER_LEN as u64);
        Ok(Store {
            path: path.to_path_buf(),
            file,
            format: Format::V2,
            size,
            written_back: AtomicU64::new(0),
        })
    }

    /// Opens an existing store after checking its header; `size` is the file's length
    /// until recovery has checked the frames.
    pub(crate) fn open(file: Arc<dyn DiskFile>, path: &Path, base_index: u64) -> Result<Store> {
        let len = file.len().context(|| format!("opening store {}", path.display()))?;
        let mut head = vec![0u8; HEADER_LEN.min(len as usize)];
        file.read_exact_at(&mut head, 0).context(|| format!("reading store header {}", path.display()))?;
        let format = header::validate(&head, FileKind::Store, base_index)
            .map_err(|reason| Error::corrupt(path, 0, reason))?;
        let (size, written_back) = (AtomicU64::new(len), AtomicU64::new(whole_blocks(len)));
        Ok(Store { path: path.to_path_buf(), file, format, size, written_back })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The frame layout of this store's version.
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    pub(crate) fn file(&self) -> &Arc<dyn DiskFile> {
        &self.file
    }

    /// Published length in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Publishes a new length. Only the appender and recovery call this.
    pub(crate) fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    /// Reads `len` bytes at `position`.
    pub(crate) fn read(&self, position: u64, len: usize) -> Result<Bytes> {
        let buf = self
            .file
            .read_vec_at(len, position)
            .context(|| format!("reading {len} bytes at byte {position} of {}", self.path.display()))?;
        Ok(Bytes::from(buf))
    }

    /// Cuts the file at `len` bytes and makes the cut durable (recovery and suffix
    /// truncation, with nothing appended concurrently).
    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        let what = || format!("truncating store {} to {len} bytes", self.path.display());
        self.file.set_len(len).context(what)?;
        self.file.sync_data().context(what)?;
        self.set_size(len);
        // What is written from the cut on is new.
        self.written_back.fetch_min(whole_blocks(len), Ordering::Relaxed);
        Ok(())
    }

    /// Claims the next writeback: the whole blocks published since the last one, once they
    /// are at least `every` bytes. Only the appender calls this.
    pub(crate) fn next_writeback(&self, every: u64) -> Option<Range<u64>> {
        let (from, end) = (self.written_back.load(Ordering::Relaxed), whole_blocks(self.size()));
        if end.saturating_sub(from) < every {
            return None;
        }
        self.written_back.store(end, Ordering::Relaxed);
        Some(from..end)
    }
}
