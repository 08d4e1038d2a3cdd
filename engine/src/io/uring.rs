//! The io_uring backend: appends are submitted as `IORING_OP_WRITE`s on a ring owned by
//! the store file, and complete asynchronously: the appender encodes the next group
//! while the kernel copies this one into the page cache.
//!
//! A group's buffer is split into chunks that are all in flight at once. Groups under
//! 64 KiB are written with a plain `pwrite` instead: the kernel punts buffered ring writes
//! to a worker thread, which costs more than it saves for small writes. The benches
//! measure where the ring wins. Header writes, syncs
//! (`fdatasync(2)`, so the syncer never waits for the ring) and reads (`pread`) are plain
//! system calls.
//!
//! Soundness: a buffer handed to the kernel is owned by an [`InFlightWrite`] until every
//! entry that points into it has completed; dropping one waits for the kernel first, and
//! if the ring itself fails mid-flight the buffer is leaked rather than freed.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::FileExt},
    path::Path,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
};

use io_uring::{IoUring, Probe, opcode, types};

use super::{Disk, DiskFile, PendingWrite};

/// Bytes per write submission: several are in flight for a large group.
const CHUNK_BYTES: usize = 256 * 1024;
/// Groups smaller than this are written with `pwrite` on the appender's thread: the
/// kernel punts a buffered io_uring write to a worker thread, which costs more than the
/// copy for a small group (measured ~3x slower per small record, and a worker thread
/// competing for the CPU with the service). Large groups go through the ring, so the copy
/// overlaps with encoding the next group.
const RING_MIN_BYTES: usize = 64 * 1024;
/// Ring size: the most writes in flight for one group.
const RING_ENTRIES: u32 = 16;

/// Real files appended through io_uring.
#[derive(Debug)]
pub(crate) struct UringDisk;

impl UringDisk {
    /// Checks that the kernel supports the writes this backend issues; the error says why
    /// io_uring cannot be used (for the fallback log line).
    pub(crate) fn probe() -> io::Result<Self> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::Write::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel io_uring lacks IORING_OP_WRITE (needs Linux 5.6 or later)",
            ));
        }
        Ok(UringDisk)
    }
}

impl Disk for UringDisk {
    fn name(&self) -> &'static str {
        "io_uring"
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<bool> {
        super::create_dir_all_std(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        super::list_std(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let file = Arc::new(super::open_std(path, create)?);
        Ok(Arc::new(UringFile { file, ring: OnceLock::new() }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        super::sync_dir_std(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<super::DirLock> {
        super::lock_dir_std(dir)
    }
}

type Ring = Arc<Mutex<IoUring>>;

struct UringFile {
    file: Arc<File>,
    /// Created on the first append, so index files (written through their map) have none.
    ring: OnceLock<io::Result<Ring>>,
}

impl UringFile {
    fn ring(&self) -> io::Result<Ring> {
        match self.ring.get_or_init(|| IoUring::new(RING_ENTRIES).map(|ring| Arc::new(Mutex::new(ring)))) {
            Ok(ring) => Ok(Arc::clone(ring)),
            Err(error) => Err(io::Error::new(error.kind(), format!("creating an io_uring: {error}"))),
        }
    }
}

fn lock(ring: &Ring) -> MutexGuard<'_, IoUring> {
    ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A write in the kernel's hands; see the module docs for why it owns its buffer.
pub(crate) struct InFlightWrite {
    ring: Ring,
    file: Arc<File>,
    buf: Option<Vec<u8>>,
    pos: u64,
    /// Ranges of `buf` submitted and not yet reaped.
    submitted: Vec<(usize, usize)>,
    /// Ranges of `buf` not yet submitted.
    queued: Vec<(usize, usize)>,
}

impl InFlightWrite {
    /// Pushes queued ranges (up to the ring's size) and submits them without waiting.
    fn submit(&mut self, ring: &mut IoUring) -> io::Result<()> {
        let buf = self.buf.as_ref().expect("buffer present until completion");
        let fd = types::Fd(self.file.as_raw_fd());
        let take = self.queued.len().min(RING_ENTRIES as usize);
        for (slot, (start, end)) in self.queued.drain(..take).enumerate() {
            let len = u32::try_from(end - start).expect("chunk fits u32");
            let write = opcode::Write::new(fd, buf[start..].as_ptr(), len)
                .offset(self.pos + start as u64)
                .build()
                .user_data(slot as u64);
            // SAFETY: the entry points into `buf`, which `self` owns and keeps (neither
            // dropped nor reallocated) until the entry has completed: `wait` reaps every
            // submitted entry, `Drop` waits too, and a ring failure leaks the buffer. The
            // fd stays open because `self` holds the file.
            unsafe { ring.submission().push(&write) }
                .expect("the ring has room: every earlier entry was reaped");
            self.submitted.push((start, end));
        }
        ring.submit().map(|_| ())
    }

    /// Waits for every submitted range; requeues the rest of any short write.
    fn reap(&mut self, ring: &mut IoUring) -> io::Result<()> {
        let want = self.submitted.len();
        loop {
            match ring.submit_and_wait(want) {
                Ok(_) if ring.completion().len() >= want => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut results = vec![0i32; want];
        for cqe in ring.completion() {
            results[cqe.user_data() as usize] = cqe.result();
        }
        let submitted = std::mem::take(&mut self.submitted);
        let mut first_error = None;
        for (&(start, end), &result) in submitted.iter().zip(&results) {
            if result < 0 {
                first_error.get_or_insert(io::Error::from_raw_os_error(-result));
            } else if result == 0 {
                first_error.get_or_insert(io::Error::from(io::ErrorKind::WriteZero));
            } else if start + (result as usize) < end {
                self.queued.push((start + result as usize, end));
            }
        }
        match first_error {
            Some(error) => {
                self.queued.clear();
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// Waits until all of the buffer is written, or a write fails.
    pub(crate) fn wait(mut self) -> (Vec<u8>, io::Result<()>) {
        let result = self.finish();
        (self.buf.take().unwrap_or_default(), result)
    }

    fn finish(&mut self) -> io::Result<()> {
        let ring = Arc::clone(&self.ring);
        let mut ring = lock(&ring);
        loop {
            if !self.submitted.is_empty()
                && let Err(error) = self.reap(&mut ring)
            {
                if !self.submitted.is_empty() {
                    // The ring failed with entries in flight: the kernel may still read
                    // the buffer, so it must never be freed.
                    std::mem::forget(self.buf.take());
                }
                return Err(error);
            }
            if self.queued.is_empty() {
                return Ok(());
            }
            self.submit(&mut ring)?;
        }
    }
}

impl Drop for InFlightWrite {
    fn drop(&mut self) {
        if !self.submitted.is_empty() {
            let _ = self.finish();
        }
    }
}

impl DiskFile for UringFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }
    /// Header writes and small groups: a plain `pwrite`.
    fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (Vec<u8>, io::Result<()>) {
        let result = self.file.write_all_at(&buf, pos);
        (buf, result)
    }
    fn start_write_at(&self, buf: Vec<u8>, pos: u64) -> PendingWrite {
        if buf.len() < RING_MIN_BYTES {
            let (buf, result) = self.write_all_at(buf, pos);
            return PendingWrite::Complete(buf, result);
        }
        let ring = match self.ring() {
            Ok(ring) => ring,
            Err(error) => return PendingWrite::Complete(buf, Err(error)),
        };
        let queued =
            (0..buf.len()).step_by(CHUNK_BYTES).map(|s| (s, (s + CHUNK_BYTES).min(buf.len()))).collect();
        let mut write = InFlightWrite {
            ring,
            file: Arc::clone(&self.file),
            buf: Some(buf),
            pos,
            submitted: Vec::new(),
            queued,
        };
        let submitted = {
            let ring = Arc::clone(&write.ring);
            let mut ring = lock(&ring);
            write.submit(&mut ring)
        };
        match submitted {
            Ok(()) => PendingWrite::Uring(write),
            // Entries may be queued in the ring: `wait` submits and reaps them (or leaks
            // the buffer), and its outcome is the write's.
            Err(_) => {
                let (buf, result) = write.wait();
                PendingWrite::Complete(buf, result)
            }
        }
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn std_file(&self) -> Option<&File> {
        Some(&self.file)
    }
}
