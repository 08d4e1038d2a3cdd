//! A simulated disk for tests, as hostile as Linux and real media allow (the media model of
//! `docs/format.md`). Files live in memory.
//!
//! **Data.** Each file keeps the bytes written (the page cache, which every read sees) apart
//! from its durable bytes, and the set of dirty 4 KiB pages: written since they last
//! reached the disk. A successful [`sync_data`](DiskFile::sync_data) writes every dirty page
//! whole and makes the file's size durable. Growing a file with `set_len` dirties nothing
//! (the new bytes read as zeros); shrinking it dirties the pages it cut.
//!
//! **Directories.** Creating a file or directory, removing a file and renaming a file are
//! visible at once but durable only after [`sync_dir`](Disk::sync_dir) of the parent
//! directory. Opening or listing in a directory that does not exist fails with `NotFound`,
//! as it does on a real disk; the root (`/`, or the empty parent of a relative path) always
//! exists. A rename must stay in one directory.
//!
//! **Crash images.** [`SimDisk::crash`] keeps only what is durable: every dirty page is
//! lost, each file has its durable size, and every unsynced directory operation is undone
//! (a created file is absent, a removed one is back with its durable content, a rename is
//! reverted); a file whose directory is not durable is gone. [`SimDisk::crash_seeded`]
//! (the image the model tests use) chooses from a seed, independently: for each dirty page,
//! to lose it, keep it, or tear it (new bytes up to a sector or byte boundary, old bytes
//! after); for each file, its durable size or its written size (unkept pages in a grown
//! region read as zeros); for each directory, how many of its unsynced operations (in
//! order) survive. [`SimDisk::crash_torn`] is the kinder in-order writeback: dirty pages in
//! file order survive up to one torn page, and unsynced directory operations are undone.
//!
//! **Faults**, injected by count with [`SimDisk::inject`]:
//! - [`SimFault::Write`]: after N more writes, every write fails with the errno until
//!   [`SimDisk::clear_faults`]; a failing write stores the first half of its buffer first,
//!   as a short write would.
//! - [`SimFault::Sync`]: after N more successful syncs, one sync fails, as Linux reports a
//!   writeback error: once. The file's dirty pages are marked clean without reaching the
//!   disk (reads still see them; the next crash loses them) and its size stays as durable
//!   as it was; later syncs succeed, and have nothing to write for those pages. So a
//!   second caller syncing the same file after a failure sees success for data that is
//!   gone, which is why a failed fsync must never be retried nor its error lost.
//!   Directory syncs never fail.
//!
//! [`DiskFile::drop_clean_pages`] evicts the clean pages, so reads show the disk again.
//!
//! **Sync gate** (for deterministic concurrency tests): after [`SimDisk::hold_syncs`],
//! every `sync_data` waits on entry until the test releases it, in any order it chooses
//! ([`SimDisk::release_sync`]); which sync fails is decided when it runs.
//!
//! The index: with no file to map, the log keeps index entries on the heap and stores each
//! one into the file's page cache as it is written (as a store through a shared map would,
//! see [`DiskFile::store_mapped`]), so crash images of index files mix old, new and torn
//! pages too.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
};

use super::{Disk, DiskFile, PendingWrite};

/// Bytes in a page: the unit of the page cache, of writeback and of loss.
const PAGE: usize = 4096;
/// Bytes in a sector: a torn page often breaks at one of these.
const SECTOR: usize = 512;

/// An in-memory disk shared by every clone; see the module docs.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
    gate: Arc<Gate>,
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
    /// After `after` more successful syncs, one sync fails with `errno` and drops the
    /// file's dirty pages; later syncs succeed.
    Sync {
        /// Syncs that still succeed.
        after: u64,
        /// The OS error number to fail with.
        errno: i32,
    },
    /// After `after` more writebacks started ([`SimDisk::writebacks`]), one fails with
    /// `errno` and, as a failed sync does, drops the file's dirty pages.
    Writeback {
        /// Writeback starts that still succeed.
        after: u64,
        /// The OS error number to fail with.
        errno: i32,
    },
}

type Inode = Arc<Mutex<FileData>>;

#[derive(Clone)]
enum Node {
    Dir,
    File(Inode),
}

/// A directory operation not yet made durable by a sync of its directory.
#[derive(Clone)]
enum DirOp {
    Create(PathBuf, Node),
    Remove(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl DirOp {
    fn dir(&self) -> PathBuf {
        let path = match self {
            DirOp::Create(path, _) | DirOp::Remove(path) | DirOp::Rename(_, path) => path,
        };
        parent(path)
    }

    fn touches(&self, path: &Path) -> bool {
        match self {
            DirOp::Create(p, _) | DirOp::Remove(p) => p == path,
            DirOp::Rename(from, to) => from == path || to == path,
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, Node>) {
        match self {
            DirOp::Create(path, node) => {
                names.insert(path.clone(), node.clone());
            }
            DirOp::Remove(path) => {
                names.remove(path);
            }
            DirOp::Rename(from, to) => {
                if let Some(node) = names.remove(from) {
                    names.insert(to.clone(), node);
                }
            }
        }
    }
}

#[derive(Default)]
struct State {
    /// The names every operation sees.
    live: BTreeMap<PathBuf, Node>,
    /// The names a crash keeps for sure.
    durable: BTreeMap<PathBuf, Node>,
    /// Operations that turn `durable` into `live`, oldest first.
    pending: Vec<DirOp>,
    deferred_writes: bool,
    write_fault: Option<(u64, i32)>,
    sync_fault: Option<(u64, i32)>,
    writeback_fault: Option<(u64, i32)>,
    /// Directories whose lock a log holds.
    locked: std::collections::BTreeSet<PathBuf>,
    /// Every writeback started, in order.
    writebacks: Vec<SimWriteback>,
}

/// A writeback a log started ([`SimDisk::writebacks`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimWriteback {
    /// The file.
    pub path: PathBuf,
    /// First byte of the range.
    pub from: u64,
    /// Byte just past the range.
    pub to: u64,
    /// The file's size when the writeback started.
    pub file_len: u64,
}

#[derive(Clone, Default)]
struct FileData {
    /// The page cache: what reads see; its length is the file's size.
    written: Vec<u8>,
    /// What is on the disk; its length is the durable size.
    durable: Vec<u8>,
    /// Pages of `written` not yet on the disk.
    dirty: BTreeSet<usize>,
}

impl FileData {
    fn durable_only(bytes: Vec<u8>) -> FileData {
        FileData { written: bytes.clone(), durable: bytes, dirty: BTreeSet::new() }
    }

    fn dirty_range(&mut self, start: usize, end: usize) {
        if end > start {
            self.dirty.extend(start / PAGE..=(end - 1) / PAGE);
        }
    }

    fn write(&mut self, bytes: &[u8], pos: usize) {
        let end = pos + bytes.len();
        if self.written.len() < end {
            self.written.resize(end, 0);
        }
        self.written[pos..end].copy_from_slice(bytes);
        self.dirty_range(pos, end);
    }

    fn set_len(&mut self, len: usize) {
        if len < self.written.len() {
            let old = self.written.len();
            self.dirty_range(len, old);
        }
        self.written.resize(len, 0);
    }

    /// Writeback: every dirty page reaches the disk whole, and so does the size.
    fn sync(&mut self) {
        self.durable.resize(self.written.len(), 0);
        for page in std::mem::take(&mut self.dirty) {
            let start = page * PAGE;
            let end = (start + PAGE).min(self.written.len());
            if start < end {
                self.durable[start..end].copy_from_slice(&self.written[start..end]);
            }
        }
    }

    /// Evicts the clean pages: they are read again from the disk (zeros past its size).
    fn drop_clean_pages(&mut self) {
        let pages = self.written.len().div_ceil(PAGE);
        for page in (0..pages).filter(|page| !self.dirty.contains(page)) {
            let start = page * PAGE;
            let end = (start + PAGE).min(self.written.len());
            for (i, byte) in self.written[start..end].iter_mut().enumerate() {
                *byte = self.durable.get(start + i).copied().unwrap_or(0);
            }
        }
    }

    /// The bytes of page `page` in the page cache, zeros past the end of the file.
    fn new_page(&self, page: usize) -> Vec<u8> {
        let start = (page * PAGE).min(self.written.len());
        let end = (page * PAGE + PAGE).min(self.written.len());
        let mut bytes = self.written[start..end].to_vec();
        bytes.resize(PAGE, 0);
        bytes
    }

    /// What a crash leaves of this file.
    fn crash(&self, policy: &mut Policy) -> FileData {
        let len = match policy {
            Policy::Durable => self.durable.len(),
            Policy::InOrder(rng) | Policy::Any(rng) => {
                if rng.below(2) == 0 {
                    self.durable.len()
                } else {
                    self.written.len()
                }
            }
        };
        let mut image = self.durable.clone();
        image.resize(self.durable.len().max(self.written.len()), 0);
        // The page where in-order writeback stopped, torn; every page after it is lost.
        let stop = match policy {
            Policy::InOrder(rng) => Some(rng.below(self.dirty.len() as u64 + 1) as usize),
            _ => None,
        };
        for (i, &page) in self.dirty.iter().enumerate() {
            let start = page * PAGE;
            if start >= image.len() {
                break;
            }
            let keep = match (&mut *policy, stop) {
                (Policy::Durable, _) => 0,
                (Policy::InOrder(rng), Some(stop)) => match i.cmp(&stop) {
                    std::cmp::Ordering::Less => PAGE,
                    std::cmp::Ordering::Equal => rng.tear(),
                    std::cmp::Ordering::Greater => 0,
                },
                (Policy::InOrder(_), None) => unreachable!("in-order crash without a stop page"),
                (Policy::Any(rng), _) => match rng.below(5) {
                    0 | 1 => 0,
                    2 | 3 => PAGE,
                    _ => rng.tear(),
                },
            };
            let keep = keep.min(image.len() - start);
            image[start..start + keep].copy_from_slice(&self.new_page(page)[..keep]);
        }
        image.resize(len, 0);
        FileData::durable_only(image)
    }
}

/// How a crash image treats what is not durable.
enum Policy {
    /// Everything not durable is lost.
    Durable,
    /// In-order writeback: a prefix of the dirty pages, the last one torn.
    InOrder(Rng),
    /// Any combination, chosen by the seed.
    Any(Rng),
}

impl Policy {
    /// How many of a directory's `count` unsynced operations survive.
    fn dir_ops_kept(&mut self, count: usize) -> usize {
        match self {
            Policy::Durable | Policy::InOrder(_) => 0,
            Policy::Any(rng) => rng.below(count as u64 + 1) as usize,
        }
    }
}

/// splitmix64: deterministic for a seed, no dependency needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Bytes of a torn page that reached the disk: a whole number of sectors, or any byte.
    fn tear(&mut self) -> usize {
        if self.below(2) == 0 {
            self.below((PAGE / SECTOR) as u64 + 1) as usize * SECTOR
        } else {
            self.below(PAGE as u64 + 1) as usize
        }
    }
}

/// The directory `path` is in; the root for a path with no parent.
fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The root: `/`, or the directory of relative paths (empty, or `.`).
fn is_root(dir: &Path) -> bool {
    dir.parent().is_none() || dir.as_os_str().is_empty() || dir == Path::new(".")
}

fn is_dir(names: &BTreeMap<PathBuf, Node>, dir: &Path) -> bool {
    is_root(dir) || matches!(names.get(dir), Some(Node::Dir))
}

/// Whether every directory above `path` exists in `names`.
fn reachable(names: &BTreeMap<PathBuf, Node>, path: &Path) -> bool {
    path.ancestors().skip(1).all(|dir| is_dir(names, dir))
}

fn not_found(what: &str, path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{what} {}: not found", path.display()))
}

#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    holding: bool,
    next_ticket: u64,
    /// Tickets of the syncs waiting, in arrival order.
    waiting: Vec<u64>,
    released: BTreeSet<u64>,
    finished: BTreeSet<u64>,
    /// Held syncs entered and not finished, and the most there ever were at once.
    in_flight: usize,
    max_in_flight: usize,
}

impl Gate {
    /// Waits while syncs are held; returns the sync's ticket once it may run.
    fn enter(&self) -> Option<u64> {
        let mut state = lock(&self.state);
        if !state.holding {
            return None;
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push(ticket);
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        self.changed.notify_all();
        while state.holding && !state.released.contains(&ticket) {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.waiting.retain(|&t| t != ticket);
        state.released.remove(&ticket);
        Some(ticket)
    }

    fn finish(&self, ticket: Option<u64>) {
        if let Some(ticket) = ticket {
            let mut state = lock(&self.state);
            state.finished.insert(ticket);
            state.in_flight -= 1;
            self.changed.notify_all();
        }
    }
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
        f.debug_struct("SimDisk").field("paths", &state.live.keys().collect::<Vec<_>>()).finish()
    }
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// The disk a power loss would leave if nothing unsynced reached it: durable bytes and
    /// sizes, durable directory entries.
    pub fn crash(&self) -> SimDisk {
        self.crash_with(Policy::Durable)
    }

    /// The disk a power loss would leave after in-order writeback: each file keeps its
    /// dirty pages in file order up to one torn page, and its durable or written size;
    /// unsynced directory operations are undone.
    pub fn crash_torn(&self, seed: u64) -> SimDisk {
        self.crash_with(Policy::InOrder(Rng(seed)))
    }

    /// The disk a power loss may leave, chosen from `seed`: each dirty page lost, kept or
    /// torn independently, each file at its durable or written size, and each directory
    /// keeping some of its unsynced operations, oldest first (see the module docs).
    pub fn crash_seeded(&self, seed: u64) -> SimDisk {
        self.crash_with(Policy::Any(Rng(seed)))
    }

    fn crash_with(&self, mut policy: Policy) -> SimDisk {
        let state = lock(&self.state);
        let mut names = state.durable.clone();
        let mut by_dir: BTreeMap<PathBuf, Vec<&DirOp>> = BTreeMap::new();
        for op in &state.pending {
            by_dir.entry(op.dir()).or_default().push(op);
        }
        for ops in by_dir.values() {
            let kept = policy.dir_ops_kept(ops.len());
            for op in &ops[..kept] {
                op.apply(&mut names);
            }
        }
        let mut images: HashMap<*const Mutex<FileData>, Inode> = HashMap::new();
        let mut live = BTreeMap::new();
        for (path, node) in &names {
            if !reachable(&names, path) {
                continue;
            }
            let node = match node {
                Node::Dir => Node::Dir,
                Node::File(inode) => Node::File(Arc::clone(
                    images
                        .entry(Arc::as_ptr(inode))
                        .or_insert_with(|| Arc::new(Mutex::new(lock(inode).crash(&mut policy)))),
                )),
            };
            live.insert(path.clone(), node);
        }
        let crashed =
            State { durable: live.clone(), live, deferred_writes: state.deferred_writes, ..State::default() };
        SimDisk { state: Arc::new(Mutex::new(crashed)), gate: Arc::default() }
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
            SimFault::Writeback { after, errno } => state.writeback_fault = Some((after, errno)),
        }
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        let mut state = lock(&self.state);
        state.write_fault = None;
        state.sync_fault = None;
        state.writeback_fault = None;
    }

    /// From now on every `sync_data` waits on entry until released by
    /// [`release_sync`](Self::release_sync) or [`release_syncs`](Self::release_syncs).
    pub fn hold_syncs(&self) {
        lock(&self.gate.state).holding = true;
    }

    /// Number of syncs waiting to be released.
    pub fn syncs_held(&self) -> usize {
        lock(&self.gate.state).waiting.len()
    }

    /// The most syncs that were ever in flight at once while syncs were held (waiting at
    /// the gate or running): a log that syncs one file at a time never exceeds one.
    pub fn max_concurrent_syncs(&self) -> usize {
        lock(&self.gate.state).max_in_flight
    }

    /// Blocks until at least `count` syncs are waiting to be released.
    pub fn wait_for_held_syncs(&self, count: usize) {
        let mut state = lock(&self.gate.state);
        while state.waiting.len() < count {
            state = self.gate.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Lets one held sync run: the `arrival`th of those waiting (0 is the oldest), and
    /// returns once it has finished. Panics if fewer syncs are waiting.
    pub fn release_sync(&self, arrival: usize) {
        let mut state = lock(&self.gate.state);
        assert!(arrival < state.waiting.len(), "{} syncs held, not {}", state.waiting.len(), arrival + 1);
        let ticket = state.waiting[arrival];
        state.released.insert(ticket);
        self.gate.changed.notify_all();
        while !state.finished.contains(&ticket) {
            state = self.gate.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Stops holding syncs and lets every waiting one run.
    pub fn release_syncs(&self) {
        lock(&self.gate.state).holding = false;
        self.gate.changed.notify_all();
    }

    /// The writebacks started on this disk's files so far, oldest first. They change no
    /// data (any unsynced page may or may not survive a crash, with or without one) unless
    /// a [`SimFault::Writeback`] fails one.
    pub fn writebacks(&self) -> Vec<SimWriteback> {
        lock(&self.state).writebacks.clone()
    }

    /// The written (page cache) bytes of a file.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        match lock(&self.state).live.get(path) {
            Some(Node::File(inode)) => Some(lock(inode).written.clone()),
            _ => None,
        }
    }

    /// Replaces a file's contents, written and durable alike, with its directories (to plant
    /// corruption).
    pub fn write_file(&self, path: &Path, bytes: Vec<u8>) {
        let mut state = lock(&self.state);
        state.pending.retain(|op| !op.touches(path));
        let node = Node::File(Arc::new(Mutex::new(FileData::durable_only(bytes))));
        for dir in path.ancestors().skip(1).filter(|dir| !is_root(dir)) {
            state.live.insert(dir.to_path_buf(), Node::Dir);
            state.durable.insert(dir.to_path_buf(), Node::Dir);
        }
        state.live.insert(path.to_path_buf(), node.clone());
        state.durable.insert(path.to_path_buf(), node);
    }

    /// Deletes a file, durably (to plant a missing file); returns whether it existed.
    pub fn delete_file(&self, path: &Path) -> bool {
        let mut state = lock(&self.state);
        state.pending.retain(|op| !op.touches(path));
        state.durable.remove(path);
        state.live.remove(path).is_some()
    }

    /// Paths of every file on the disk.
    pub fn paths(&self) -> Vec<PathBuf> {
        let state = lock(&self.state);
        state.live.iter().filter(|(_, node)| matches!(node, Node::File(_))).map(|(p, _)| p.clone()).collect()
    }
}

impl State {
    fn change(&mut self, op: DirOp) {
        op.apply(&mut self.live);
        self.pending.push(op);
    }
}

impl Disk for SimDisk {
    fn name(&self) -> &'static str {
        "simulated"
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        let missing: Vec<PathBuf> =
            dir.ancestors().take_while(|dir| !is_dir(&state.live, dir)).map(Path::to_path_buf).collect();
        for dir in missing.into_iter().rev() {
            if state.live.contains_key(&dir) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"));
            }
            state.change(DirOp::Create(dir, Node::Dir));
        }
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.state);
        if !is_dir(&state.live, dir) {
            return Err(not_found("directory", dir));
        }
        Ok(state
            .live
            .iter()
            .filter(|(path, node)| matches!(node, Node::File(_)) && path.parent() == Some(dir))
            .filter_map(|(path, _)| path.file_name().map(|name| name.to_string_lossy().into_owned()))
            .collect())
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut state = lock(&self.state);
        let inode = match state.live.get(path) {
            Some(Node::File(inode)) => Arc::clone(inode),
            Some(Node::Dir) => return Err(io::Error::new(io::ErrorKind::IsADirectory, "a directory")),
            None if create && is_dir(&state.live, &parent(path)) => {
                let inode = Inode::default();
                state.change(DirOp::Create(path.to_path_buf(), Node::File(Arc::clone(&inode))));
                inode
            }
            None => return Err(not_found("file", path)),
        };
        Ok(Arc::new(SimFile { disk: self.clone(), data: inode, path: path.to_path_buf() }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        match state.live.get(path) {
            Some(Node::File(_)) => {
                state.change(DirOp::Remove(path.to_path_buf()));
                Ok(())
            }
            _ => Err(not_found("file", path)),
        }
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        if parent(from) != parent(to) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the simulated disk renames within a directory",
            ));
        }
        match (state.live.get(from), state.live.get(to)) {
            (Some(Node::File(_)), None | Some(Node::File(_))) => {
                state.change(DirOp::Rename(from.to_path_buf(), to.to_path_buf()));
                Ok(())
            }
            (Some(_), _) => {
                Err(io::Error::new(io::ErrorKind::Unsupported, "the simulated disk renames files only"))
            }
            (None, _) => Err(not_found("file", from)),
        }
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        if !is_dir(&state.live, dir) {
            return Err(not_found("directory", dir));
        }
        let state = &mut *state;
        let dir = if dir == Path::new(".") { Path::new("") } else { dir };
        let (synced, pending): (Vec<DirOp>, Vec<DirOp>) =
            std::mem::take(&mut state.pending).into_iter().partition(|op| op.dir() == dir);
        for op in synced {
            op.apply(&mut state.durable);
        }
        state.pending = pending;
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

impl super::DirLockGuard for SimLock {
    /// Always: the simulated disk's tests reopen after failed syncs in one process.
    fn previous_run_unclean(&self) -> bool {
        true
    }
    fn closed_cleanly(&self) {}
}

impl Drop for SimLock {
    fn drop(&mut self) {
        lock(&self.disk.state).locked.remove(&self.dir);
    }
}

/// An open file; like a real descriptor it keeps working after the file is removed.
struct SimFile {
    disk: SimDisk,
    data: Inode,
    /// The path it was opened by, for the record of writebacks.
    path: PathBuf,
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
        let file = SimFile { disk: self.disk.clone(), data: Arc::clone(&self.data), path: self.path.clone() };
        PendingWrite::Deferred(Box::new(move || file.write_all_at(buf, pos)))
    }

    fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (Vec<u8>, io::Result<()>) {
        let fault = trip(&mut lock(&self.disk.state).write_fault);
        let len = if fault.is_some() { buf.len() / 2 } else { buf.len() };
        lock(&self.data).write(&buf[..len], pos as usize);
        (buf, fault.map_or(Ok(()), Err))
    }

    fn drop_clean_pages(&self) {
        lock(&self.data).drop_clean_pages();
    }

    fn start_writeback(&self, from: u64, to: u64) -> io::Result<()> {
        let file_len = lock(&self.data).written.len() as u64;
        let fault = {
            let mut state = lock(&self.disk.state);
            state.writebacks.push(SimWriteback { path: self.path.clone(), from, to, file_len });
            let fault = trip(&mut state.writeback_fault);
            if fault.is_some() {
                state.writeback_fault = None;
            }
            fault
        };
        match fault {
            Some(error) => {
                // As Linux may: the pages it could not write are marked clean and lost,
                // and only this caller hears of it.
                lock(&self.data).dirty.clear();
                Err(error)
            }
            None => Ok(()),
        }
    }

    fn store_mapped(&self, bytes: &[u8], pos: u64) {
        lock(&self.data).write(bytes, pos as usize);
    }

    fn sync_data(&self) -> io::Result<()> {
        let ticket = self.disk.gate.enter();
        let fault = {
            let mut state = lock(&self.disk.state);
            let fault = trip(&mut state.sync_fault);
            if fault.is_some() {
                state.sync_fault = None;
            }
            fault
        };
        let mut data = lock(&self.data);
        match fault {
            // The kernel marks the pages clean and reports the error once.
            Some(_) => data.dirty.clear(),
            None => data.sync(),
        }
        drop(data);
        self.disk.gate.finish(ticket);
        fault.map_or(Ok(()), Err)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.data).written.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        lock(&self.data).set_len(len as usize);
        Ok(())
    }

    fn std_file(&self) -> Option<&std::fs::File> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(disk: &SimDisk, path: &str) -> Arc<dyn DiskFile> {
        disk.open(Path::new(path), true).unwrap()
    }

    fn write(file: &Arc<dyn DiskFile>, bytes: &[u8], pos: u64) {
        file.write_all_at(bytes.to_vec(), pos).1.unwrap();
    }

    fn content(disk: &SimDisk, path: &str) -> Option<Vec<u8>> {
        disk.read_file(Path::new(path))
    }

    #[test]
    fn synced_data_and_entries_survive_a_crash_unsynced_ones_do_not() {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        let a = file(&disk, "/d/a");
        write(&a, b"durable", 0);
        a.sync_data().unwrap();
        assert_eq!(content(&disk.crash(), "/d/a"), None, "the directory itself is not durable");
        disk.sync_dir(Path::new("/")).unwrap();
        assert_eq!(content(&disk.crash(), "/d/a"), None, "the file's entry is not durable");
        disk.sync_dir(Path::new("/d")).unwrap();
        write(&a, b"DURABLE and more", 0);
        let crashed = disk.crash();
        assert_eq!(content(&crashed, "/d/a").unwrap(), b"durable");
        assert_eq!(crashed.list(Path::new("/d")).unwrap(), ["a"]);
    }

    #[test]
    fn unsynced_removal_and_rename_are_undone_by_a_crash() {
        let disk = SimDisk::new();
        let a = file(&disk, "/a");
        write(&a, b"A", 0);
        a.sync_data().unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        disk.rename(Path::new("/a"), Path::new("/b")).unwrap();
        assert_eq!(content(&disk.crash(), "/a").unwrap(), b"A");
        assert_eq!(content(&disk.crash(), "/b"), None);
        disk.remove(Path::new("/b")).unwrap();
        assert_eq!(content(&disk, "/b"), None);
        assert_eq!(content(&disk.crash(), "/a").unwrap(), b"A", "the removal is resurrected");
        disk.sync_dir(Path::new("/")).unwrap();
        assert!(disk.crash().paths().is_empty());
    }

    #[test]
    fn a_failed_sync_is_reported_once_and_its_pages_are_lost() {
        let disk = SimDisk::new();
        let a = file(&disk, "/a");
        disk.sync_dir(Path::new("/")).unwrap();
        write(&a, &[1; 100], 0);
        a.sync_data().unwrap();
        write(&a, &[2; 100], 100);
        disk.inject(SimFault::Sync { after: 0, errno: libc::EIO });
        assert_eq!(a.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
        a.sync_data().expect("a later sync succeeds");
        assert_eq!(content(&disk, "/a").unwrap().len(), 200, "reads still see the lost bytes");
        let crashed = content(&disk.crash(), "/a").unwrap();
        assert_eq!(crashed[..100], [1; 100]);
        assert_eq!(crashed[100..], [0; 100], "a crash loses them (the later sync made the size durable)");
        // A new write dirties the page again: writeback then carries all of it.
        write(&a, &[3; 1], 200);
        a.sync_data().unwrap();
        let crashed = content(&disk.crash(), "/a").unwrap();
        assert_eq!(crashed.len(), 201);
        assert_eq!(crashed[100..200], [2; 100]);
    }

    #[test]
    fn seeded_crashes_mix_kept_lost_and_torn_pages_in_any_order() {
        let disk = SimDisk::new();
        let a = file(&disk, "/a");
        disk.sync_dir(Path::new("/")).unwrap();
        let pages = 8;
        write(&a, &vec![0xaa; PAGE * pages], 0);
        a.sync_data().unwrap();
        write(&a, &vec![0xbb; PAGE * pages], 0);
        let (mut kept_after_lost, mut torn, mut sizes) = (false, false, BTreeSet::new());
        for seed in 0..200 {
            let image = content(&disk.crash_seeded(seed), "/a").unwrap();
            sizes.insert(image.len());
            let new: Vec<bool> = image.chunks(PAGE).map(|page| page[0] == 0xbb).collect();
            kept_after_lost |= new.windows(2).any(|w| !w[0] && w[1]);
            torn |= image.chunks(PAGE).any(|page| page[0] == 0xbb && page[PAGE - 1] == 0xaa);
        }
        assert!(kept_after_lost && torn, "pages are kept, lost and torn independently");
        assert_eq!(sizes.len(), 1, "the size did not change");
        assert_eq!(content(&disk.crash(), "/a").unwrap(), vec![0xaa; PAGE * pages]);
    }

    #[test]
    fn held_syncs_run_in_the_order_the_test_releases_them() {
        let disk = SimDisk::new();
        let a = file(&disk, "/a");
        disk.hold_syncs();
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let a = Arc::clone(&a);
                let disk = disk.clone();
                std::thread::spawn(move || {
                    disk.wait_for_held_syncs(i);
                    a.sync_data()
                })
            })
            .collect();
        disk.wait_for_held_syncs(2);
        disk.inject(SimFault::Sync { after: 0, errno: libc::EIO });
        disk.release_sync(1);
        disk.release_sync(0);
        disk.release_syncs();
        let results: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap().is_ok()).collect();
        assert_eq!(results, [true, false], "the newest sync ran first and failed");
    }
}
