//! Recovery on open: turn whatever the directory holds into a valid, writable log.
//!
//! 1. List the directory. Files named like segments (`<20 digits>.store|.index`) are
//!    grouped by base index; a name with a segment extension but a malformed base is an
//!    error; the lock and metadata files are the log's; other files are ignored with a
//!    warning. An index without a store is removed.
//! 2. Check each store header (magic, version, CRC, base index = file name) and that the
//!    segments are contiguous: each base is the previous segment's next index.
//! 3. Trust an index entry only if its relative index counts up from zero and its
//!    position increases and lies inside the store (a zero-filled tail fails at once). In
//!    a sealed segment, the last trusted entry's frame is also decoded; the store is then
//!    scanned from the end of the trusted prefix. The active (last) segment is always
//!    scanned from its first frame, and so is every segment with `verify_on_open`.
//! 4. Scanning decodes frames (length bound, CRC, the expected index, a term no lower
//!    than the previous frame's: a stale frame past a truncation that a crash half undid
//!    fails too) and rebuilds missing index entries. The first bad frame ends the
//!    segment's valid prefix:
//!    - in the active segment it is a torn or corrupt tail, cut off with a warning;
//!    - in a sealed segment it is corruption: with `OnCorruption::Fail` opening fails,
//!      naming the file and byte position; with `OnCorruption::Truncate` the log is cut
//!      there and every later segment is removed.
//! 5. The metadata file, if any, gives the vote, committed and purged ids and the offset
//!    map's checkpoint; the scanned frames' kinds complete the map. Segments wholly at or
//!    below the purged id are deleted (a purge that a crash interrupted).
//! 6. A log with no segments gets an empty one at `initial_offset` (or after the purged
//!    id). A version-1 active segment is sealed and a version-2 one started after it.
//! 7. Everything recovered is durable: after an unclean stop (the lock file says so) the
//!    active store is synced before it is scanned, and its clean cached pages dropped.

use std::{path::Path, sync::Arc};

use tracing::{info, warn};

use crate::{
    config::{Config, OFFSET_LIMIT, OnCorruption},
    entry::EntryKind,
    error::{Error, IoContext, Result},
    header::{self, FileKind},
    index::{self, Index},
    io::{Disk, DiskFile, LOCK_FILE},
    meta::{self, MetaFile},
    offsets::OffsetMap,
    record::{self, Format},
    segment::{self, INDEX_EXT, STORE_EXT, Segment},
    store::{self, Position, Store},
};

/// What recovery found and changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Index files rebuilt wholly or partly from their stores.
    pub indexes_rebuilt: usize,
    /// Stores cut at the first invalid frame: the file, the byte position, and why.
    pub truncated: Vec<(std::path::PathBuf, u64, String)>,
    /// Segments removed because they followed a cut (with `OnCorruption::Truncate`).
    pub segments_removed: usize,
}

/// Bytes read from a store at a time while scanning.
const SCAN_CHUNK: usize = 1 << 20;

/// A log as recovery leaves it.
pub(crate) struct Recovered {
    pub(crate) segments: Vec<Arc<Segment>>,
    pub(crate) report: RecoveryReport,
    pub(crate) meta: MetaFile,
    pub(crate) offsets: OffsetMap,
    pub(crate) first_index: u64,
    /// The term of the last entry (what records appended next are written with).
    pub(crate) last_term: u64,
    /// Segment files were created whose directory entries are not synced yet (the log's
    /// first sync does it).
    pub(crate) created_segments: bool,
}

/// Where and how segments are recovered.
#[derive(Clone, Copy)]
struct Place<'a> {
    disk: &'a dyn Disk,
    dir: &'a Path,
    capacity: u32,
    config: &'a Config,
    /// The last run may not have closed cleanly.
    unclean: bool,
}

/// What recovering one segment found besides the segment.
struct SegmentFound {
    /// Its store was cut.
    cut: bool,
    /// Its files were made anew (a torn header).
    recreated: bool,
    /// The term of its last entry, where recovery read it.
    last_term: Option<u64>,
    /// Non-data entries in the frames recovery scanned.
    gaps: Vec<u64>,
}

/// `unclean`: the last run may not have closed cleanly (see `DirLockGuard`).
pub(crate) fn recover(disk: &dyn Disk, dir: &Path, config: &Config, unclean: bool) -> Result<Recovered> {
    if crate::log::finish_install(disk, dir)? {
        info!(dir = %dir.display(), "finished installing a snapshot's segments");
    }
    let meta = MetaFile::load(disk, dir)?.unwrap_or_default();
    let bases = list_segments(disk, dir)?;
    if unclean && !bases.is_empty() {
        // The last run may have created segment files whose directory entries no sync
        // covered yet (a log syncs them with its first data sync): what recovery finds, it
        // calls durable, so make them durable first.
        disk.sync_dir(dir).context(|| format!("syncing directory {}", dir.display()))?;
    }
    let capacity = index::capacity(config.index_bytes_max);
    let place = Place { disk, dir, capacity, config, unclean };
    let mut report = RecoveryReport::default();
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    let mut last_term = meta.meta.purged.map_or(0, |p| p.term);
    let mut gaps = meta.gaps.clone();
    let mut created_segments = false;

    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let store_path = segment::file_path(dir, base, STORE_EXT);
        let outcome =
            recover_segment(&place, base, is_last, &mut report).and_then(|segment| match segments.last() {
                Some(previous) if previous.next_index() != base => Err(Error::corrupt(
                    &store_path,
                    0,
                    format!(
                        "segment starts at index {base}, but the previous one ends before {}",
                        previous.next_index()
                    ),
                )),
                _ => Ok(segment),
            });
        match outcome {
            Ok((segment, found)) => {
                segments.push(Arc::new(segment));
                last_term = found.last_term.unwrap_or(last_term);
                gaps.extend(found.gaps);
                created_segments |= found.recreated;
                let cut = found.cut;
                if cut && !is_last {
                    report.segments_removed += remove_after(disk, dir, &bases[i + 1..])?;
                    break;
                }
            }
            Err(error @ Error::Corrupt { .. }) if config.on_corruption == OnCorruption::Truncate => {
                warn!(%error, "dropping this segment and every later one");
                report.segments_removed += remove_after(disk, dir, &bases[i..])?;
                break;
            }
            Err(error) => return Err(error),
        }
    }

    // A cut (with `OnCorruption::Truncate`) that dropped the segments after it leaves a
    // last segment that was recovered as a sealed one, its trusted index prefix unscanned:
    // recover it again as the active segment, scanned from its first frame, or corruption
    // in that prefix would be cut on the next open, with the records appended since.
    if let Some(last) = segments.last().filter(|s| Some(&s.base()) != bases.last()) {
        let base = last.base();
        segments.pop();
        let (segment, found) = recover_segment(&place, base, true, &mut report)?;
        last_term = found.last_term.unwrap_or(last_term);
        gaps.extend(found.gaps);
        created_segments |= found.recreated;
        segments.push(Arc::new(segment));
    }
    // A purge that a crash interrupted: the segments wholly at or below it go now.
    let first_index = match meta.meta.purged {
        Some(purged) => purged.index + 1,
        None => segments.first().map_or(config.initial_offset, |s| s.base()),
    };
    if segments.last().is_some_and(|last| last.next_index() <= first_index && meta.meta.purged.is_some()) {
        let bases: Vec<u64> = segments.drain(..).map(|s| s.base()).collect();
        report.segments_removed += remove_after(disk, dir, &bases)?;
    }
    while segments.len() > 1 && segments[0].next_index() <= first_index {
        let base = segments.remove(0).base();
        report.segments_removed += remove_after(disk, dir, &[base])?;
    }
    if segments.is_empty() {
        let base = if meta.meta.purged.is_some() { first_index } else { config.initial_offset };
        segments.push(Arc::new(Segment::create(disk, dir, base, capacity)?));
        created_segments = true;
    }
    // A version-1 log goes on in version-2 segments: its active segment is sealed.
    let last = segments.last().expect("a segment exists");
    if last.store.format() == Format::V1 {
        last.store.file().sync_data().context(|| format!("syncing {}", last.store.path().display()))?;
        last.index.trim()?;
        let next = last.next_index();
        info!(file = %last.store.path().display(), "sealing a version-1 segment; new entries go to version-2 segments");
        segments.push(Arc::new(Segment::create(disk, dir, next, capacity)?));
        created_segments = true;
    }
    // Everything recovered is durable: a clean close synced the active store, after an
    // unclean one recovery synced it before scanning, and every cut was synced.
    let active = segments.last().expect("a segment exists");
    report.segments = segments.len();
    let next = active.next_index();
    let first_index = first_index.max(segments[0].base()).min(next);
    let mut offsets = OffsetMap::new(meta.gaps_below, gaps);
    offsets.truncate_from(next);
    offsets.forget_below(first_index);
    info!(
        dir = %dir.display(),
        segments = report.segments,
        first_index,
        next_index = next,
        indexes_rebuilt = report.indexes_rebuilt,
        cuts = report.truncated.len(),
        "recovered log"
    );
    Ok(Recovered { segments, report, meta, offsets, first_index, last_term, created_segments })
}

/// Creates the data directory and any missing directory above it, syncing the parent of
/// each one created: until then a crash may take the directory away with every segment in it.
pub(crate) fn create_dir_durably(disk: &dyn Disk, dir: &Path) -> Result<()> {
    let is_missing = |d: &Path| disk.list(d).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    let missing: Vec<&Path> =
        dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && is_missing(d)).collect();
    disk.create_dir_all(dir).context(|| format!("creating data directory {}", dir.display()))?;
    for created in missing.into_iter().rev() {
        let parent = created.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        disk.sync_dir(parent).context(|| format!("syncing directory {}", parent.display()))?;
    }
    Ok(())
}

/// Base offsets of the segments in `dir`, in order.
fn list_segments(disk: &dyn Disk, dir: &Path) -> Result<Vec<u64>> {
    let names = disk.list(dir).context(|| format!("listing data directory {}", dir.display()))?;
    let mut stores = std::collections::BTreeSet::new();
    let mut indexes = Vec::new();
    for name in &names {
        if [LOCK_FILE, meta::FILE_NAME].contains(&name.as_str()) || crate::log::is_install_file(name) {
            continue;
        }
        match segment::parse_file_name(name) {
            None => warn!(file = %dir.join(name).display(), "ignoring a file that is not part of the log"),
            Some(Err(())) => {
                return Err(Error::corrupt(
                    dir.join(name),
                    0,
                    "a segment file name must be a 20-digit base offset: remove or rename the file",
                ));
            }
            Some(Ok((base, STORE_EXT))) => {
                stores.insert(base);
            }
            Some(Ok((base, _))) => indexes.push(base),
        }
    }
    for base in indexes.into_iter().filter(|base| !stores.contains(base)) {
        let path = segment::file_path(dir, base, INDEX_EXT);
        warn!(file = %path.display(), "removing an index whose store is missing");
        disk.remove(&path).context(|| format!("removing {}", path.display()))?;
    }
    Ok(stores.into_iter().collect())
}

fn remove_after(disk: &dyn Disk, dir: &Path, bases: &[u64]) -> Result<usize> {
    for &base in bases {
        for ext in [STORE_EXT, INDEX_EXT] {
            let path = segment::file_path(dir, base, ext);
            match disk.remove(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("removing {}", path.display()), e));
                }
                _ => {}
            }
        }
    }
    disk.sync_dir(dir).context(|| format!("syncing directory {}", dir.display()))?;
    Ok(bases.len())
}

/// Recovers one segment.
fn recover_segment(
    at: &Place<'_>,
    base: u64,
    is_last: bool,
    report: &mut RecoveryReport,
) -> Result<(Segment, SegmentFound)> {
    let Place { disk, dir, capacity, config, unclean } = *at;
    let store_path = segment::file_path(dir, base, STORE_EXT);
    let index_path = segment::file_path(dir, base, INDEX_EXT);
    if base > OFFSET_LIMIT {
        // Appending there would overflow the offsets (a segment holds < 2^32 records, so
        // any base up to the limit is safe to add to).
        let reason = format!("base offset {base} is past the end of a log's offsets ({OFFSET_LIMIT})");
        return Err(Error::corrupt(&store_path, 0, reason));
    }
    let store_file = disk.open(&store_path, false).context(|| format!("opening {}", store_path.display()))?;
    if is_last && unclean {
        // Pages whose writeback failed in an earlier run stay cached and clean: a sync would
        // not write them, yet reads would see them. Write what is dirty, drop what is clean,
        // and recover from what is really on the disk. (After a clean close everything was
        // synced and nothing is left to doubt.)
        store_file.sync_data().context(|| format!("syncing {}", store_path.display()))?;
        store_file.drop_clean_pages();
    }
    let store_len = store_file.len().context(|| format!("opening {}", store_path.display()))?;
    if is_last && header_is_torn(store_file.as_ref(), store_len) {
        // Torn while the segment was being created: nothing was ever acknowledged in it.
        warn!(file = %store_path.display(), "recreating a segment whose header was torn");
        report.truncated.push((store_path.clone(), 0, "torn file header".into()));
        let _ = disk.remove(&index_path);
        let found = SegmentFound { cut: true, recreated: true, last_term: None, gaps: Vec::new() };
        return Ok((Segment::create(disk, dir, base, capacity)?, found));
    }
    let store = Store::open(store_file, &store_path, base)?;
    let format = store.format();

    let index_file = disk.open(&index_path, true).context(|| format!("opening {}", index_path.display()))?;
    // A sealed index is mapped at the size it has: it will not grow again.
    let open_capacity = if is_last { capacity } else { 0 };
    let (index, on_disk) = match Index::open(Arc::clone(&index_file), &index_path, base, open_capacity)? {
        Some(index) => {
            let valid = index.valid_prefix(store_len);
            (index, Some(valid))
        }
        None => {
            // An installed snapshot's segments come without indexes: building them is routine.
            if index_file.len().unwrap_or(1) == 0 {
                info!(file = %index_path.display(), "building a segment's missing index");
            } else {
                warn!(file = %index_path.display(), "rebuilding an index with an invalid header");
            }
            (Index::create(index_file, &index_path, base, capacity)?, None)
        }
    };
    let trusted = if is_last || config.verify_on_open { 0 } else { on_disk.unwrap_or(0) };
    let mut positions: Vec<Position> = (0..trusted).map(|i| index.raw(i).1).collect();
    // The last trusted entry must point at the frame of the offset it claims.
    let mut scan_from = store::HEADER_LEN as u64;
    let mut last_term = None;
    if let Some(&last) = positions.last() {
        let expected = base + positions.len() as u64 - 1;
        match frame_at(store.file().as_ref(), last.byte(), store_len, format) {
            Ok(header) if header.id.index == expected => {
                scan_from = last.byte() + header.frame_len() as u64;
                last_term = Some(header.id.term);
            }
            _ => positions.clear(),
        }
    }
    let next = base + positions.len() as u64;
    let mut frames = Frames { positions: &mut positions, last_term, gaps: Vec::new() };
    let scan = scan(store.file().as_ref(), &store_path, format, scan_from, store_len, next, &mut frames)?;
    let (last_term, gaps) = (frames.last_term, frames.gaps);
    let cut = scan.end < store_len;
    if cut {
        let reason = scan.stop_reason.unwrap_or_else(|| "invalid frame".into());
        if !is_last && config.on_corruption == OnCorruption::Fail {
            return Err(Error::corrupt(&store_path, scan.end, reason));
        }
        warn!(file = %store_path.display(), position = scan.end, %reason, "cutting the store at its last valid record");
        store.truncate(scan.end)?;
        report.truncated.push((store_path.clone(), scan.end, reason));
    } else {
        store.set_size(store_len);
    }

    let entries = u32::try_from(positions.len()).expect("positions are u32 and increasing");
    let index = if entries > index.capacity() {
        // More records than the configured index holds (its limit shrank): size it to fit.
        let file = disk.open(&index_path, true).context(|| format!("opening {}", index_path.display()))?;
        Index::create(file, &index_path, base, entries)?
    } else {
        index
    };
    index.rebuild(&positions);
    if on_disk != Some(entries) {
        report.indexes_rebuilt += 1;
    }
    if !is_last && (on_disk != Some(entries) || !index.is_trimmed()?) {
        index.trim()?;
    }
    Ok((Segment::new(base, store, index), SegmentFound { cut, recreated: false, last_term, gaps }))
}

/// Whether a store's header never reached the disk whole: the file is shorter than a
/// header, or the header is broken and no valid frame follows it (the page holding both
/// was lost or torn before any sync covered it). A broken header before a valid frame is
/// corruption, and a whole header naming another base a misplaced file: not tears.
fn header_is_torn(file: &dyn DiskFile, store_len: u64) -> bool {
    let mut head = [0u8; store::HEADER_LEN];
    if store_len < store::HEADER_LEN as u64 {
        return true;
    }
    if file.read_exact_at(&mut head, 0).is_err() {
        return false; // Store::open reports the error
    }
    // A whole header, even one naming another base, was written on purpose: not a tear.
    let claimed = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
    let whole = header::validate(&head, FileKind::Store, claimed).is_ok();
    // The header gives no version here: a valid frame of either format means it was not.
    !whole
        && [Format::V1, Format::V2]
            .iter()
            .all(|&format| frame_at(file, store::HEADER_LEN as u64, store_len, format).is_err())
}

/// Decodes the header of the frame at `position`, verifying the whole frame.
fn frame_at(
    file: &dyn DiskFile,
    position: u64,
    store_len: u64,
    format: Format,
) -> Result<record::FrameHeader, String> {
    let header_len = format.header_len();
    let mut head = vec![0u8; header_len];
    if position + header_len as u64 > store_len || file.read_exact_at(&mut head, position).is_err() {
        return Err("torn frame header".into());
    }
    let value_len = u64::from(record::claimed_value_len(&head, format));
    let frame_len = header_len as u64 + value_len;
    if position + frame_len > store_len {
        return Err(format!("frame of {frame_len} bytes runs past the end of the store"));
    }
    let mut frame = vec![0u8; frame_len as usize];
    file.read_exact_at(&mut frame, position).map_err(|e| e.to_string())?;
    record::decode_header_as(&frame, value_len as u32, format).map_err(|e| e.to_string())
}

/// What scanning collects: each valid frame's position, the last term, the non-data
/// entries.
struct Frames<'a> {
    positions: &'a mut Vec<Position>,
    last_term: Option<u64>,
    gaps: Vec<u64>,
}

struct Scan {
    /// Position just past the last valid frame.
    end: u64,
    /// Why scanning stopped before the end of the store.
    stop_reason: Option<String>,
}

/// Decodes frames from `from` to `store_len`, collecting each valid frame, and stops at
/// the first frame that is torn, corrupt, out of sequence or of a lower term.
fn scan(
    file: &dyn DiskFile,
    path: &Path,
    format: Format,
    from: u64,
    store_len: u64,
    mut expected: u64,
    frames: &mut Frames<'_>,
) -> Result<Scan> {
    let header_len = format.header_len();
    let mut window = Window { file, path, store_len, start: from, bytes: Vec::new() };
    let mut position = from;
    let stop = |end: u64, reason: String| Ok(Scan { end, stop_reason: Some(reason) });
    while position < store_len {
        let remaining = store_len - position;
        if remaining < header_len as u64 {
            return stop(position, format!("torn frame header: {remaining} bytes left"));
        }
        let head = window.get(position, header_len)?;
        let value_len = record::claimed_value_len(head, format);
        let frame_len = (header_len + value_len as usize) as u64;
        if frame_len > remaining {
            return stop(
                position,
                format!("frame of {frame_len} bytes runs past the end ({remaining} bytes left)"),
            );
        }
        let frame = window.get(position, frame_len as usize)?;
        let header = match record::decode_header_as(frame, value_len, format) {
            Ok(header) => header,
            Err(error) => return stop(position, error.to_string()),
        };
        if header.id.index != expected {
            return stop(
                position,
                format!("frame holds index {} where index {expected} belongs", header.id.index),
            );
        }
        if let Some(term) = frames.last_term.filter(|&term| header.id.term < term) {
            return stop(position, format!("frame of term {} follows one of term {term}", header.id.term));
        }
        frames.positions.push(Position::new(position));
        frames.last_term = Some(header.id.term);
        if header.kind != EntryKind::Data {
            frames.gaps.push(expected);
        }
        position += frame_len;
        expected += 1;
    }
    Ok(Scan { end: position, stop_reason: None })
}

/// What [`check_frames`] found.
pub(crate) struct Checked {
    /// The index after the last frame.
    pub(crate) next: u64,
    /// The last frame's term.
    pub(crate) last_term: Option<u64>,
    /// The indexes of the non-data entries.
    pub(crate) gaps: Vec<u64>,
}

/// Checks the frames of a store file from its header to `len`: indexes contiguous from
/// `first`, terms never below `term` nor decreasing, every frame intact.
pub(crate) fn check_frames(
    file: &dyn DiskFile,
    path: &Path,
    len: u64,
    first: u64,
    term: Option<u64>,
) -> Result<Checked> {
    let mut positions = Vec::new();
    let mut frames = Frames { positions: &mut positions, last_term: term, gaps: Vec::new() };
    let scanned = scan(file, path, Format::V2, store::HEADER_LEN as u64, len, first, &mut frames)?;
    if let Some(reason) = scanned.stop_reason {
        return Err(Error::corrupt(path, scanned.end, reason));
    }
    let (last_term, gaps) = (frames.last_term, frames.gaps);
    Ok(Checked { next: first + positions.len() as u64, last_term, gaps })
}

/// A read-ahead window over a store, so scanning costs one `pread` per megabyte.
struct Window<'a> {
    file: &'a dyn DiskFile,
    path: &'a Path,
    store_len: u64,
    start: u64,
    bytes: Vec<u8>,
}

impl Window<'_> {
    fn get(&mut self, position: u64, len: usize) -> Result<&[u8]> {
        let end = self.start + self.bytes.len() as u64;
        if position < self.start || position + len as u64 > end {
            let read = (SCAN_CHUNK.max(len) as u64).min(self.store_len - position) as usize;
            self.bytes.resize(read, 0);
            self.file
                .read_exact_at(&mut self.bytes, position)
                .context(|| format!("scanning {} at byte {position}", self.path.display()))?;
            self.start = position;
        }
        let at = (position - self.start) as usize;
        Ok(&self.bytes[at..at + len])
    }
}
