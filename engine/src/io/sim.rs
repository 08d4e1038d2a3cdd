//! A simulated disk for tests: files live in memory, and each file keeps the bytes written
//! (the page cache) apart from the bytes made durable by its last sync.
//!
//! [`SimDisk::crash`] builds the image a power loss would leave: only durable bytes, or,
//! with [`SimDisk::crash_torn`], durable bytes plus a random prefix of what was written
//! after (a torn write). Faults are injected by count: after N more writes (or syncs),
//! every write (or sync) fails with the chosen errno until [`SimDisk::clear_faults`]. A
//! failing write stores the first half of its buffer first, as a short write would.
//!
//! Creating and removing files is treated as immediately durable (the real backends sync
//! the directory after both).

use std::{
    collections::BTreeMap,
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use super::{Disk, DiskFile, PendingWrite};

/// An in-memory disk shared by every clone; see the module docs.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

/// A fault to inject through [`SimDisk::inject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimFault {
    /// After `after` more successful writes, writes fail with `errno`.
    Write {
        /// Writes that still succeed.
        after: u64,
        /// The OS error number to fail with (`libc::ENOSPC`, `libc::EIO`, ...).
        errno: i32,
    },
    /// After `after` more successful syncs, syncs fail with `errno`.
    Sync {
        /// Syncs that still succeed.
        after: u64,
        /// The OS error number to fail with.
        errno: i32,
    },
}

#[derive(Default)]
struct State {
    files: BTreeMap<PathBuf, Arc<Mutex<FileData>>>,
    deferred_writes: bool,
    write_fault: Option<(u64, i32)>,
    sync_fault: Option<(u64, i32)>,
    /// Directories whose lock a log holds.
    locked: std::collections::BTreeSet<PathBuf>,
}

#[derive(Clone, Default)]
struct FileData {
    written: Vec<u8>,
    durable: Vec<u8>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts one operation against a fault; returns the error once the count has run out.
fn trip(fault: &mut Option<(u64, i32)>) -> Option<io::Error> {
    match fault {
        Some((0, errno)) => Some(io::Error::from_raw_os_error(*errno)),
        Some((after, _)) => {
            *after -= 1;
            None
        }
        None => None,
    }
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("SimDisk").field("files", &state.files.keys().collect::<Vec<_>>()).finish()
    }
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// The disk a power loss would leave now: every file holds only its durable bytes.
    pub fn crash(&self) -> SimDisk {
        self.crash_with(|_, _| 0)
    }

    /// Like [`crash`](Self::crash), but each file also keeps a prefix of its unsynced
    /// appended bytes, of a length chosen from `seed`: a write torn at any byte.
    pub fn crash_torn(&self, seed: u64) -> SimDisk {
        let mut rng = seed | 1;
        self.crash_with(|_, unsynced| {
            // xorshift: deterministic for a seed, no dependency needed.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % (unsynced as u64 + 1)) as usize
        })
    }

    fn crash_with(&self, mut keep_unsynced: impl FnMut(&Path, usize) -> usize) -> SimDisk {
        let state = lock(&self.state);
        let files = state
            .files
            .iter()
            .map(|(path, data)| {
                let data = lock(data);
                let mut image = data.durable.clone();
                if data.written.starts_with(&data.durable) {
                    let unsynced = &data.written[data.durable.len()..];
                    let keep = keep_unsynced(path, unsynced.len());
                    image.extend_from_slice(&unsynced[..keep]);
                }
                let file = FileData { written: image.clone(), durable: image };
                (path.clone(), Arc::new(Mutex::new(file)))
            })
            .collect();
        let deferred_writes = state.deferred_writes;
        SimDisk { state: Arc::new(Mutex::new(State { files, deferred_writes, ..State::default() })) }
    }

    /// Makes appends asynchronous like io_uring's: each write happens only when the log
    /// waits for it, so tests cover the appender's pipelined path.
    pub fn defer_writes(&self, deferred: bool) {
        lock(&self.state).deferred_writes = deferred;
    }

    /// Injects a fault; it replaces any earlier fault of the same kind.
    pub fn inject(&self, fault: SimFault) {
        let mut state = lock(&self.state);
        match fault {
            SimFault::Write { after, errno } => state.write_fault = Some((after, errno)),
            SimFault::Sync { after, errno } => state.sync_fault = Some((after, errno)),
        }
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        let mut state = lock(&self.state);
        state.write_fault = None;
        state.sync_fault = None;
    }

    /// The written (page cache) bytes of a file.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = lock(&self.state);
        state.files.get(path).map(|data| lock(data).written.clone())
    }

    /// Replaces a file's contents, written and durable alike (to plant corruption).
    pub fn write_file(&self, path: &Path, bytes: Vec<u8>) {
        let mut state = lock(&self.state);
        let file = FileData { written: bytes.clone(), durable: bytes };
        state.files.insert(path.to_path_buf(), Arc::new(Mutex::new(file)));
    }

    /// Deletes a file (to plant a missing file); returns whether it existed.
    pub fn delete_file(&self, path: &Path) -> bool {
        lock(&self.state).files.remove(path).is_some()
    }

    /// Paths of every file on the disk.
    pub fn paths(&self) -> Vec<PathBuf> {
        lock(&self.state).files.keys().cloned().collect()
    }
}

impl Disk for SimDisk {
    fn name(&self) -> &'static str {
        "simulated"
    }
    fn create_dir_all(&self, _dir: &Path) -> io::Result<bool> {
        Ok(false)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.state);
        Ok(state
            .files
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
            .collect())
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut state = lock(&self.state);
        let data = match state.files.get(path) {
            Some(data) => Arc::clone(data),
            None if create => {
                let data = Arc::new(Mutex::new(FileData::default()));
                state.files.insert(path.to_path_buf(), Arc::clone(&data));
                data
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        Ok(Arc::new(SimFile { disk: self.clone(), data }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        match state.files.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        let data = state.files.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.files.insert(to.to_path_buf(), data);
        Ok(())
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<super::DirLock> {
        if !lock(&self.state).locked.insert(dir.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "locked by another log on this simulated disk",
            ));
        }
        Ok(Box::new(SimLock { disk: self.clone(), dir: dir.to_path_buf() }))
    }
}

/// A simulated directory lock; a crash image starts with none held.
struct SimLock {
    disk: SimDisk,
    dir: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        lock(&self.disk.state).locked.remove(&self.dir);
    }
}

/// An open file; like a real descriptor it keeps working after the file is removed.
struct SimFile {
    disk: SimDisk,
    data: Arc<Mutex<FileData>>,
}

impl DiskFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let data = lock(&self.data);
        let start = usize::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        match data.written.get(start..start + buf.len()) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }

    fn start_write_at(&self, buf: Vec<u8>, pos: u64) -> PendingWrite {
        if !lock(&self.disk.state).deferred_writes {
            let (buf, result) = self.write_all_at(buf, pos);
            return PendingWrite::Complete(buf, result);
        }
        let file = SimFile { disk: self.disk.clone(), data: Arc::clone(&self.data) };
        PendingWrite::Deferred(Box::new(move || file.write_all_at(buf, pos)))
    }

    fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (Vec<u8>, io::Result<()>) {
        let fault = trip(&mut lock(&self.disk.state).write_fault);
        let len = if fault.is_some() { buf.len() / 2 } else { buf.len() };
        let mut data = lock(&self.data);
        let start = pos as usize;
        if data.written.len() < start + len {
            data.written.resize(start + len, 0);
        }
        data.written[start..start + len].copy_from_slice(&buf[..len]);
        drop(data);
        (buf, fault.map_or(Ok(()), Err))
    }

    fn sync_data(&self) -> io::Result<()> {
        if let Some(error) = trip(&mut lock(&self.disk.state).sync_fault) {
            return Err(error);
        }
        let mut data = lock(&self.data);
        data.durable = data.written.clone();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.data).written.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        lock(&self.data).written.resize(len as usize, 0);
        Ok(())
    }

    fn std_file(&self) -> Option<&std::fs::File> {
        None
    }
}
