//! The io_uring backend: appends are submitted as `IORING_OP_WRITE`s on one ring shared by
//! the log's files.
//!
//! A group commit's buffer is split into chunks that are all in flight at once, so a large
//! batch becomes several concurrent writes from one `io_uring_enter`. Small buffered writes
//! gain nothing here (the kernel punts them to a worker, which costs more than a `pwrite`);
//! the benches measure where the ring wins. Syncs use `fdatasync(2)` directly, so the
//! syncer thread never waits for the ring the appender is using. Reads use `pread`.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    path::Path,
    sync::{Arc, Mutex},
};

use io_uring::{IoUring, Probe, opcode, types};

use super::{Disk, DiskFile, pwrite::PwriteFile};

/// Bytes per write submission. Large enough that each write amortises its submission,
/// small enough that a multi-megabyte group commit has several writes in flight.
const CHUNK_BYTES: usize = 256 * 1024;
/// Ring size: the most writes in flight for one append.
const RING_ENTRIES: u32 = 32;

/// Real files appended through io_uring.
pub(crate) struct UringDisk {
    ring: Arc<Mutex<IoUring>>,
}

impl std::fmt::Debug for UringDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UringDisk")
    }
}

impl UringDisk {
    /// Sets up a ring and checks that the kernel supports the writes this backend issues.
    /// The error says why io_uring cannot be used (for the fallback log line).
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
        Ok(UringDisk { ring: Arc::new(Mutex::new(ring)) })
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
        let file = PwriteFile(super::open_std(path, create)?);
        Ok(Arc::new(UringFile { file, ring: Arc::clone(&self.ring) }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        super::sync_dir_std(dir)
    }
}

struct UringFile {
    file: PwriteFile,
    ring: Arc<Mutex<IoUring>>,
}

impl UringFile {
    fn write_all(&self, buf: &[u8], pos: u64) -> Result<(), WriteError> {
        // Only the appender writes, so the lock is uncontended; it exists because readers
        // share the file handle and the ring needs `&mut`.
        let mut ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let fd = types::Fd(self.file.0.as_raw_fd());
        // Ranges of `buf` still to be written.
        let mut pending: Vec<(usize, usize)> = (0..buf.len())
            .step_by(CHUNK_BYTES)
            .map(|start| (start, (start + CHUNK_BYTES).min(buf.len())))
            .collect();
        while !pending.is_empty() {
            let in_flight = pending.len().min(RING_ENTRIES as usize);
            for (slot, &(start, end)) in pending[..in_flight].iter().enumerate() {
                let len = u32::try_from(end - start).expect("chunk fits u32");
                let write = opcode::Write::new(fd, buf[start..].as_ptr(), len)
                    .offset(pos + start as u64)
                    .build()
                    .user_data(slot as u64);
                // SAFETY: the entry points into `buf`, which this function borrows until
                // every submitted entry has completed (the loop below waits for all of
                // them before returning or resubmitting), and `fd` stays open because
                // `self` owns the file.
                unsafe { ring.submission().push(&write) }
                    .expect("the ring has room: every earlier entry was reaped");
            }
            submit_and_wait_all(&mut ring, in_flight).map_err(WriteError::Unsettled)?;
            let mut results = vec![0i32; in_flight];
            for cqe in ring.completion() {
                results[cqe.user_data() as usize] = cqe.result();
            }
            let mut first_error = None;
            let mut retry = Vec::new();
            for (slot, &result) in results.iter().enumerate() {
                let (start, end) = pending[slot];
                if result < 0 {
                    first_error.get_or_insert(io::Error::from_raw_os_error(-result));
                } else if result == 0 && start < end {
                    first_error.get_or_insert(io::Error::from(io::ErrorKind::WriteZero));
                } else if start + (result as usize) < end {
                    retry.push((start + result as usize, end));
                }
            }
            if let Some(error) = first_error {
                return Err(WriteError::Settled(error));
            }
            retry.extend_from_slice(&pending[in_flight..]);
            pending = retry;
        }
        Ok(())
    }
}

enum WriteError {
    /// The write failed and the kernel holds no reference to the buffer.
    Settled(io::Error),
    /// The ring failed while entries were queued or in flight: the kernel may still read
    /// the buffer.
    Unsettled(io::Error),
}

/// Waits for `want` completions, resubmitting when a signal interrupts the wait.
fn submit_and_wait_all(ring: &mut IoUring, want: usize) -> io::Result<()> {
    loop {
        match ring.submit_and_wait(want) {
            Ok(_) if ring.completion().len() >= want => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

impl DiskFile for UringFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }
    fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (Vec<u8>, io::Result<()>) {
        match self.write_all(&buf, pos) {
            Ok(()) => (buf, Ok(())),
            Err(WriteError::Settled(error)) => (buf, Err(error)),
            Err(WriteError::Unsettled(error)) => {
                // The kernel may still read from the buffer: it must outlive any write the
                // ring might yet perform, so it is leaked rather than freed. The log is
                // poisoned by this error, so it happens at most once per open.
                std::mem::forget(buf);
                (Vec::new(), Err(error))
            }
        }
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn std_file(&self) -> Option<&File> {
        self.file.std_file()
    }
}
