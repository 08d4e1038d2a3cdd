//! The io_uring backend: appends are submitted as `IORING_OP_WRITE`s on one ring per log
//! (created on the first large write), and complete asynchronously: the appender encodes
//! the next group while the kernel copies this one into the page cache.
//!
//! A group's buffer is split into chunks that are all in flight at once. Groups under
//! 64 KiB are written with a plain `pwrite` instead: the kernel punts buffered ring writes
//! to a worker thread, which costs more than it saves for small writes. The benches
//! measure where the ring wins. Header writes, syncs
//! (`fdatasync(2)`, so the syncer never waits for the ring) and reads (`pread`) are plain
//! system calls.
//!
//! Soundness: a buffer handed to the kernel is owned by an [`InFlightWrite`] until every
//! entry that points into it has completed; dropping one waits for the kernel first. If
//! the ring fails while entries may still point into the buffer (a failed submit leaves
//! pushed entries in the submission queue; a failed wait leaves them in flight) the
//! buffer is leaked rather than freed, and the ring is marked broken so that nothing is
//! ever submitted on it again. Each completion carries its write's sequence number and
//! chunk: one that does not belong to the write being reaped breaks the ring too, instead
//! of indexing out of bounds.

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

/// Real files appended through io_uring; one ring for the whole log.
pub(crate) struct UringDisk {
    ring: Arc<OnceLock<Option<Ring>>>,
}

impl std::fmt::Debug for UringDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDisk").field("ring_created", &self.ring.get().is_some()).finish()
    }
}

impl UringDisk {
    /// Checks that the kernel supports the writes this backend issues; the error says why
    /// io_uring cannot be used (for the fallback log line). A success is remembered for the
    /// process: a ring made and torn down costs about 0.1 ms, a third of opening a log.
    pub(crate) fn probe() -> io::Result<Self> {
        static SUPPORTED: OnceLock<()> = OnceLock::new();
        if SUPPORTED.get().is_none() {
            let ring = IoUring::new(RING_ENTRIES)?;
            let mut probe = Probe::new();
            ring.submitter().register_probe(&mut probe)?;
            if !probe.is_supported(opcode::Write::CODE) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "kernel io_uring lacks IORING_OP_WRITE (needs Linux 5.6 or later)",
                ));
            }
            let _ = SUPPORTED.set(());
        }
        Ok(UringDisk { ring: Arc::new(OnceLock::new()) })
    }
}

impl Disk for UringDisk {
    fn name(&self) -> &'static str {
        "io_uring"
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        super::list_std(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let file = Arc::new(super::open_std(path, create)?);
        Ok(Arc::new(UringFile { file, ring: Arc::clone(&self.ring) }))
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

/// The log's ring, and what it knows about itself.
struct RingState {
    ring: IoUring,
    /// Sequence number of the last write submitted, tagged into every entry's user data.
    writes: u64,
    /// Set when entries may be left in the ring that no write will reap: the ring is
    /// never used again (the log is poisoned by the failed write anyway).
    broken: bool,
    /// Tests: the next submit fails after pushing its entries, as a full kernel queue would.
    #[cfg(test)]
    fail_next_submit: bool,
}

type Ring = Arc<Mutex<RingState>>;

struct UringFile {
    file: Arc<File>,
    /// The log's ring, created on the first large append.
    ring: Arc<OnceLock<Option<Ring>>>,
}

impl UringFile {
    /// The log's ring, made by the first large write; `None` if it could not be made.
    fn ring(&self) -> Option<Ring> {
        let created = self.ring.get_or_init(|| match IoUring::new(RING_ENTRIES) {
            Ok(ring) => Some(Arc::new(Mutex::new(RingState {
                ring,
                writes: 0,
                broken: false,
                #[cfg(test)]
                fail_next_submit: false,
            }))),
            Err(error) => {
                tracing::warn!(%error, "cannot create the log's io_uring: appends use pwrite");
                None
            }
        });
        created.as_ref().map(Arc::clone)
    }
}

fn lock(ring: &Ring) -> MutexGuard<'_, RingState> {
    ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn broken() -> io::Error {
    io::Error::other("the io_uring failed earlier with writes in flight and is not used again")
}

/// User data of an entry: the write's sequence number and the chunk's slot.
fn user_data(write: u64, slot: usize) -> u64 {
    write << 8 | slot as u64
}

/// A write in the kernel's hands; see the module docs for why it owns its buffer.
pub(crate) struct InFlightWrite {
    ring: Ring,
    file: Arc<File>,
    buf: Option<Vec<u8>>,
    pos: u64,
    /// This write's sequence number on the ring.
    seq: u64,
    /// Ranges of `buf` submitted and not yet reaped.
    submitted: Vec<(usize, usize)>,
    /// Ranges of `buf` not yet submitted.
    queued: Vec<(usize, usize)>,
}

impl InFlightWrite {
    /// Pushes queued ranges (up to the ring's size) and submits them without waiting.
    /// On failure the pushed entries may still be submitted later: the ring is broken.
    fn submit(&mut self, state: &mut RingState) -> io::Result<()> {
        if state.broken {
            return Err(broken());
        }
        let buf = self.buf.as_ref().expect("buffer present until completion");
        let fd = types::Fd(self.file.as_raw_fd());
        let take = self.queued.len().min(RING_ENTRIES as usize);
        for (slot, (start, end)) in self.queued.drain(..take).enumerate() {
            let len = u32::try_from(end - start).expect("chunk fits u32");
            let write = opcode::Write::new(fd, buf[start..].as_ptr(), len)
                .offset(self.pos + start as u64)
                .build()
                .user_data(user_data(self.seq, slot));
            // SAFETY: the entry points into `buf`, which `self` owns and keeps (neither
            // dropped nor reallocated) until the entry has completed: `wait` reaps every
            // submitted entry, `Drop` waits too, and a ring failure leaks the buffer. The
            // fd stays open because `self` holds the file.
            unsafe { state.ring.submission().push(&write) }
                .expect("the ring has room: every earlier entry was reaped");
            self.submitted.push((start, end));
        }
        #[cfg(test)]
        if std::mem::take(&mut state.fail_next_submit) {
            state.broken = true;
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        state.ring.submit().map(|_| ()).inspect_err(|_| state.broken = true)
    }

    /// Waits for every submitted range; requeues the rest of any short write. A ring
    /// failure, or a completion that is not this write's, breaks the ring.
    fn reap(&mut self, state: &mut RingState) -> io::Result<()> {
        if state.broken {
            return Err(broken());
        }
        let want = self.submitted.len();
        let mut results: Vec<Option<i32>> = vec![None; want];
        let mut reaped = 0;
        while reaped < want {
            match state.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    state.broken = true;
                    return Err(e);
                }
            }
            for cqe in state.ring.completion() {
                let slot = (cqe.user_data() & 0xff) as usize;
                let result = match results.get_mut(slot) {
                    Some(result) if cqe.user_data() >> 8 == self.seq && result.is_none() => result,
                    _ => {
                        state.broken = true;
                        return Err(io::Error::other(format!(
                            "io_uring returned a completion (user data {:#x}) that belongs to no write in flight",
                            cqe.user_data()
                        )));
                    }
                };
                *result = Some(cqe.result());
                reaped += 1;
            }
        }
        let submitted = std::mem::take(&mut self.submitted);
        let mut first_error = None;
        for (&(start, end), &result) in submitted.iter().zip(&results) {
            let result = result.expect("every slot was reaped");
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
        let mut state = lock(&ring);
        let result = self.drive(&mut state);
        if state.broken && self.buf.is_some() && (result.is_err() || !self.submitted.is_empty()) {
            // The kernel may still read the buffer (entries in flight, or pushed and not
            // yet submitted): it must never be freed.
            std::mem::forget(self.buf.take());
            self.submitted.clear();
        }
        result
    }

    fn drive(&mut self, state: &mut RingState) -> io::Result<()> {
        loop {
            if !self.submitted.is_empty() {
                self.reap(state)?;
            }
            if self.queued.is_empty() {
                return Ok(());
            }
            self.submit(state)?;
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
        let Some(ring) = self.ring() else {
            // The probe at open succeeded, but a ring cannot be made now (memlock or file
            // limits): write as the pwrite backend does rather than fail the append.
            let (buf, result) = self.write_all_at(buf, pos);
            return PendingWrite::Complete(buf, result);
        };
        let queued =
            (0..buf.len()).step_by(CHUNK_BYTES).map(|s| (s, (s + CHUNK_BYTES).min(buf.len()))).collect();
        let seq = {
            let mut state = lock(&ring);
            state.writes += 1;
            state.writes
        };
        let mut write = InFlightWrite {
            ring,
            file: Arc::clone(&self.file),
            buf: Some(buf),
            pos,
            seq,
            submitted: Vec::new(),
            queued,
        };
        let submitted = {
            let ring = Arc::clone(&write.ring);
            let mut state = lock(&ring);
            write.submit(&mut state)
        };
        match submitted {
            Ok(()) => PendingWrite::Uring(write),
            // Entries may be queued in the ring, which is now broken: `wait` leaks the
            // buffer rather than hand it back; the submit's error is the write's.
            Err(error) => {
                let (buf, _) = write.wait();
                PendingWrite::Complete(buf, Err(error))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk and a file on it, or `None` where the kernel forbids io_uring.
    fn uring_file() -> Option<(UringDisk, Arc<dyn DiskFile>, tempfile::TempDir)> {
        let disk = match UringDisk::probe() {
            Ok(disk) => disk,
            Err(why) => {
                eprintln!("skipped: io_uring is not available here: {why}");
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let file = disk.open(&dir.path().join("f"), true).unwrap();
        Some((disk, file, dir))
    }

    fn state(disk: &UringDisk) -> Ring {
        Arc::clone(disk.ring.get().expect("ring created").as_ref().expect("ring made"))
    }

    #[test]
    fn every_file_of_a_log_shares_one_ring() {
        let Some((disk, file, dir)) = uring_file() else { return };
        let other = disk.open(&dir.path().join("g"), true).unwrap();
        let (_, result) = file.start_write_at(vec![1; RING_MIN_BYTES], 0).wait();
        result.unwrap();
        let ring = state(&disk);
        let (_, result) = other.start_write_at(vec![2; RING_MIN_BYTES], 0).wait();
        result.unwrap();
        assert!(Arc::ptr_eq(&ring, &state(&disk)));
        assert_eq!(lock(&ring).writes, 2, "both writes went through the one ring");
    }

    #[test]
    fn a_failed_submit_never_hands_back_a_buffer_the_ring_may_still_read() {
        let Some((disk, file, _dir)) = uring_file() else { return };
        let (_, result) = file.start_write_at(vec![1; RING_MIN_BYTES], 0).wait();
        result.unwrap();
        lock(&state(&disk)).fail_next_submit = true;
        let (buf, result) = file.start_write_at(vec![7; 4 * CHUNK_BYTES], 0).wait();
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EBUSY));
        assert!(buf.is_empty(), "the buffer with queued entries pointing into it is leaked, not returned");
        let (_, later) = file.start_write_at(vec![3; RING_MIN_BYTES], 0).wait();
        assert!(
            later.unwrap_err().to_string().contains("not used again"),
            "a broken ring is never used again"
        );
    }

    #[test]
    fn a_stray_completion_breaks_the_ring_instead_of_panicking() {
        let Some((disk, file, _dir)) = uring_file() else { return };
        let (_, result) = file.start_write_at(vec![1; RING_MIN_BYTES], 0).wait();
        result.unwrap();
        {
            let ring = state(&disk);
            let mut state = lock(&ring);
            let nop = opcode::Nop::new().build().user_data(user_data(999, 200));
            // SAFETY: a NOP entry points at no memory.
            unsafe { state.ring.submission().push(&nop) }.unwrap();
        }
        let (buf, result) = file.start_write_at(vec![5; RING_MIN_BYTES], 0).wait();
        let error = result.unwrap_err();
        assert!(error.to_string().contains("belongs to no write"), "{error}");
        assert!(buf.is_empty(), "entries of the write may still be in flight: the buffer is leaked");
    }
}
