//! The IO seam: the one place where the log meets bytes on a disk.
//!
//! A [`Disk`] opens, lists and removes files in the log's directory; a [`DiskFile`] reads,
//! appends and syncs one file. Writes take an owned buffer and give it back, so a backend
//! that hands the buffer to the kernel (io_uring) stays sound while the kernel holds it,
//! and the appender reuses its buffer without reallocating.
//!
//! Backends: [`pwrite`](pwrite) (portable), [`uring`](uring) (io_uring, probed at open)
//! and [`sim`](sim) (in memory, for crash and fault tests). Reads always use `pread` on
//! real files: they run on callers' threads and never queue behind the appender.

pub(crate) mod pwrite;
pub(crate) mod sim;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

use std::{fmt, fs::File, io, os::unix::fs::FileExt, path::Path, sync::Arc};

pub use sim::{SimDisk, SimFault, SimWriteback};

/// A directory of files, as the log sees it.
pub(crate) trait Disk: Send + Sync + fmt::Debug {
    /// Short name of the backend, for logs and metrics.
    fn name(&self) -> &'static str;
    /// Creates `dir` and any missing parent; each new directory is durable only once its
    /// parent is synced.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens a file for reading and writing; creates it (empty) when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing any file at `to` (atomically, as `rename(2)` does); durable
    /// once the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, removals and renames in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the directory's exclusive lock, held until the guard drops. Fails with
    /// `WouldBlock` (saying who holds it, where known) when another opener has it.
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock>;
}

/// A held directory lock: released when dropped.
pub(crate) type DirLock = Box<dyn DirLockGuard>;

/// What a directory lock knows about the log's last run in this boot.
pub(crate) trait DirLockGuard: Send + Sync {
    /// Whether the last log to hold the lock may not have closed cleanly (killed, crashed
    /// or poisoned): its unsynced pages may be cached, clean and never written (after a
    /// failed fsync), so recovery must read the active segment from the disk itself.
    fn previous_run_unclean(&self) -> bool;
    /// Records a clean close, for the next opener.
    fn closed_cleanly(&self);
}

/// The name of the lock file in a data directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// One open file.
pub(crate) trait DiskFile: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Reads exactly `len` bytes at `pos` into a new buffer. A real file reads into the
    /// buffer's spare capacity: a large read then never zero-fills memory it overwrites.
    fn read_vec_at(&self, len: usize, pos: u64) -> io::Result<Vec<u8>> {
        let Some(file) = self.std_file() else {
            let mut buf = vec![0; len];
            self.read_exact_at(&mut buf, pos)?;
            return Ok(buf);
        };
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = pos + buf.len() as u64;
            match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(error) => return Err(error.into()),
            }
        }
        // The spare capacity may have been larger than asked for.
        buf.truncate(len);
        Ok(buf)
    }
    /// Writes all of `buf` at `pos` and returns the buffer.
    fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (Vec<u8>, io::Result<()>);
    /// Starts writing all of `buf` at `pos`; the write completes by [`PendingWrite::wait`].
    /// Backends without asynchronous writes finish before returning.
    fn start_write_at(&self, buf: Vec<u8>, pos: u64) -> PendingWrite {
        let (buf, result) = self.write_all_at(buf, pos);
        PendingWrite::Complete(buf, result)
    }
    /// `fdatasync`: the file's data, and its size, reach stable storage.
    fn sync_data(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The real file, when there is one, so the index can be memory-mapped.
    fn std_file(&self) -> Option<&File>;
    /// Drops the file's clean pages from the page cache (best effort), so that later reads
    /// show what is on the disk. After a failed writeback Linux keeps the pages it could not
    /// write cached and clean: reads see data that is not on the disk, and a later
    /// `fdatasync` succeeds without writing it.
    fn drop_clean_pages(&self) {
        if let Some(file) = self.std_file() {
            let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
    /// Starts writing the file's dirty pages in `[from, to)` to the disk and returns
    /// without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a later
    /// `fdatasync` has less left to write. Nothing becomes durable by it. An error the disk
    /// reports later is reported by the next `fdatasync` on this file (Linux records it for
    /// every open file, and only the waiting flags of `sync_file_range` would consume it);
    /// an error returned here may mean pages were dropped, which the caller must treat as a
    /// failed sync. The simulated disk records it and changes no data (in its model any
    /// unsynced page may or may not have reached the disk already) unless a fault fails it.
    fn start_writeback(&self, from: u64, to: u64) -> io::Result<()> {
        if to <= from {
            // A length of 0 would mean "to the end of the file".
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        if let Some(file) = self.std_file() {
            use std::os::fd::AsRawFd;
            let (from, len) = (from as libc::off64_t, (to - from) as libc::off64_t);
            // SAFETY: sync_file_range reads no memory of ours: it takes a descriptor, which
            // stays open while `file` is borrowed, and three integers. (No maintained crate
            // wraps it: rustix and nix do not.)
            let done =
                unsafe { libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE) };
            if done != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (from, to);
        Ok(())
    }
    /// Stores `bytes` at `pos` the way a store through a shared memory map does: into the
    /// page cache, with no system call that could fail. Only files without a
    /// [`std_file`](DiskFile::std_file) (the simulated disk's) are ever written this way.
    fn store_mapped(&self, bytes: &[u8], pos: u64) {
        unreachable!("store_mapped of {} bytes at {pos} on a file that is mapped", bytes.len())
    }
}

/// A write handed to a backend: complete already, or in the kernel's hands.
pub(crate) enum PendingWrite {
    Complete(Vec<u8>, io::Result<()>),
    #[cfg(target_os = "linux")]
    Uring(uring::InFlightWrite),
    /// The simulated disk's asynchronous write: performed when waited for.
    Deferred(Box<dyn FnOnce() -> (Vec<u8>, io::Result<()>) + Send>),
}

impl PendingWrite {
    pub(crate) fn is_complete(&self) -> bool {
        matches!(self, PendingWrite::Complete(..))
    }

    /// Waits for the write; returns the buffer and the outcome.
    pub(crate) fn wait(self) -> (Vec<u8>, io::Result<()>) {
        match self {
            PendingWrite::Complete(buf, result) => (buf, result),
            #[cfg(target_os = "linux")]
            PendingWrite::Uring(write) => write.wait(),
            PendingWrite::Deferred(write) => write(),
        }
    }
}

/// Opens a real file for reading and writing.
fn open_std(path: &Path, create: bool) -> io::Result<File> {
    std::fs::OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)
}

fn list_std(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

fn sync_dir_std(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `flock`s the directory's lock file (released when the file closes, also when the
/// process dies) and writes this process's id into it, for the next opener's error. A clean
/// close empties it: a pid found there means the last run did not close cleanly (within a
/// boot the page cache keeps the file's content even unsynced, which is all that matters:
/// after a reboot no stale page is cached anyway).
fn lock_dir_std(dir: &Path) -> io::Result<DirLock> {
    use std::io::Read;
    let path = dir.join(LOCK_FILE);
    let existed = path.exists();
    let mut file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("process {pid}"),
            };
            return Err(io::Error::new(io::ErrorKind::WouldBlock, format!("locked by {holder}")));
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(error),
    }
    let mut previous = String::new();
    file.read_to_string(&mut previous)?;
    let unclean = !existed || !previous.trim().is_empty();
    file.set_len(0)?;
    file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
    Ok(Box::new(LockFile { file, unclean }))
}

/// The held lock file of a real directory.
struct LockFile {
    file: File,
    unclean: bool,
}

impl DirLockGuard for LockFile {
    fn previous_run_unclean(&self) -> bool {
        self.unclean
    }
    fn closed_cleanly(&self) {
        let _ = self.file.set_len(0);
    }
}
