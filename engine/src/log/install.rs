//! Shipping a log's entries to another replica as store files, and installing them there
//! in place of everything that replica held: what a Raft snapshot carries when the log's
//! entries are its records (`replication.md`, decision 7).
//!
//! The sender takes a [`LogFiles`] view: for each segment holding entries from the log's
//! first index through a chosen last one, the byte range of those entries' frames, read
//! through the segment's open file (so the view stays readable if retention deletes the file
//! meanwhile). Frames do not depend on where they sit in a file, so the receiver writes each
//! range after a new store header for its first index ([`Staging`]): a store file that
//! recovery reads like any other. Nothing is held in memory but the caller's chunk.
//!
//! Installing is crash-safe in this order (`docs/format.md`, "Installing a snapshot"):
//! 1. the staged files `install.<base>` are written, checked frame by frame (contiguous
//!    indexes from the announced first one through the announced last, terms never
//!    decreasing, every CRC), synced; then the marker file `install` is written (temporary
//!    file, sync, rename, directory sync). From here the install is decided;
//! 2. every segment file of the log is deleted, the directory synced, and the marker
//!    rewritten to say so (a redo must not delete the files moved in next);
//! 3. each staged file is renamed to its segment name, the directory synced;
//! 4. the metadata file gets the purge point before the first entry and the offset
//!    translation from there (the vote and the committed id are kept); the marker is
//!    deleted.
//!
//! A crash before the marker leaves the old log and stray staged files (removed by the next
//! staging); a crash after it is finished by the next open, which redoes steps 2 to 4.

use std::{collections::BTreeSet, path::Path, sync::Arc};

use super::Log;
use crate::{
    appender::Message,
    entry::EntryId,
    error::{Error, IoContext, Result},
    io::{Disk, DiskFile},
    meta::{self, MetaFile},
    record::Format,
    recovery,
    segment::{self, STORE_EXT, Segment},
    store::Store,
};

const MARKER: &str = "install";
const MARKER_TEMP: &str = "install.tmp";
const STAGED_PREFIX: &str = "install.";
const MAGIC: &[u8; 8] = b"RLINSTAL";
const VERSION: u32 = 1;

fn staged_name(base: u64) -> String {
    format!("{STAGED_PREFIX}{base:020}")
}

/// Whether `name` belongs to an install (a staged file or the marker), not to the log.
pub(crate) fn is_install_file(name: &str) -> bool {
    name == MARKER || name.starts_with(STAGED_PREFIX)
}

/// One part of a [`LogFiles`] view: the frames of the entries from `first_index` on that one
/// segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilePart {
    /// The index of the part's first entry.
    pub first_index: u64,
    /// Bytes of frames.
    pub len: u64,
}

/// A pinned view of the log's entries from its first index through a last one, as frames
/// per segment: see the module docs and [`Log::files_through`].
pub struct LogFiles {
    parts: Vec<(Arc<Segment>, FilePart, u64)>,
    /// The entry before the first one (`None` when the log starts at index 0 and nothing was
    /// purged).
    pub before: Option<EntryId>,
    /// The last entry in the view.
    pub last: EntryId,
    /// The record offset the first data entry after `last` gets (so the offsets of the
    /// entries in the view follow from their kinds).
    pub next_offset: u64,
}

impl LogFiles {
    /// The parts, in index order.
    pub fn parts(&self) -> Vec<FilePart> {
        self.parts.iter().map(|(_, part, _)| *part).collect()
    }

    /// Bytes of frames in all parts.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(|(_, part, _)| part.len).sum()
    }

    /// Whether the view holds no entry.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Fills `buf` from part `part`'s frames at byte `offset` (relative to the part).
    pub fn read(&self, part: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (segment, range, start) = &self.parts[part];
        if offset + buf.len() as u64 > range.len {
            return Err(Error::Snapshot(format!(
                "reading {} bytes at {offset} of a part of {} bytes",
                buf.len(),
                range.len
            )));
        }
        let path = segment.store.path();
        segment
            .store
            .file()
            .read_exact_at(buf, start + offset)
            .context(|| format!("reading {} at byte {}", path.display(), start + offset))
    }
}

impl std::fmt::Debug for LogFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFiles")
            .field("parts", &self.parts())
            .field("before", &self.before)
            .field("last", &self.last)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

/// Staged files for an install, written by a receiver: see the module docs and
/// [`Log::stage_install`].
pub struct Staging {
    log: Log,
    /// The staged parts so far: first index and the open file with its length (emptied by
    /// the commit, when the files become the install's).
    parts: Vec<(u64, Arc<dyn DiskFile>, u64)>,
}

impl Drop for Staging {
    /// Releases the log's staging; a staging that was not installed removes its files (a
    /// snapshot openraft did not need, or one that failed).
    fn drop(&mut self) {
        let shared = self.log.shared();
        for (first, _, _) in &self.parts {
            let _ = shared.disk.remove(&shared.dir.join(staged_name(*first)));
        }
        shared.staging.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<(u64, u64)> = self.parts.iter().map(|(first, _, len)| (*first, *len)).collect();
        f.debug_struct("Staging").field("parts", &parts).finish()
    }
}

impl Log {
    /// A view of the entries from the first index through `last` (which the log must hold),
    /// for shipping them as a snapshot. A version-1 segment cannot be shipped (its frames
    /// have another layout).
    pub fn files_through(&self, last: u64) -> Result<LogFiles> {
        let shared = self.shared();
        // The first index and the purge point before it, read together: a purge moves the
        // purge point first, then the first index; read again while they disagree.
        let (first, before) = loop {
            let purged = shared.meta_file().meta.purged;
            let first = self.first_index();
            match (first, purged) {
                (0, _) => break (0, None),
                (first, Some(purged)) if purged.index + 1 == first => break (first, Some(purged)),
                _ if shared.meta_file().meta.purged != purged || self.first_index() != first => continue,
                (first, purged) => {
                    return Err(Error::Snapshot(format!(
                        "the entry before index {first} is unknown (purged {purged:?}): the log cannot be shipped"
                    )));
                }
            }
        };
        let segments: Vec<Arc<Segment>> = shared.segments().clone();
        if last < first || last >= self.next_index() {
            return Err(Error::Snapshot(format!(
                "no entry {last} to ship: the log holds [{first}, {})",
                self.next_index()
            )));
        }
        let mut parts = Vec::new();
        let mut last_id = None;
        for segment in segments.iter().filter(|s| s.next_index() > first && s.base() <= last) {
            if segment.store.format() != Format::V2 {
                return Err(Error::Snapshot(format!(
                    "{} is a version-1 segment, which cannot be shipped",
                    segment.store.path().display()
                )));
            }
            // The size before the index: an append in between lengthens neither the part.
            let size = segment.size();
            let from = first.max(segment.base());
            let through = last.min(segment.next_index() - 1);
            let start = segment.frame_start(from);
            let end =
                if through + 1 < segment.next_index() { segment.frame_start(through + 1) } else { size };
            parts.push((Arc::clone(segment), FilePart { first_index: from, len: end - start }, start));
            if through == last {
                last_id = segment.read_entries(last, 1, 0)?.pop().map(|e| e.id);
            }
        }
        let last = last_id.ok_or(Error::Truncated { index: last })?;
        // Stable under a concurrent purge, which forgets only entries below the first kept.
        let next_offset = self.offset_of_index(last.index + 1);
        Ok(LogFiles { parts, before, last, next_offset })
    }

    /// Starts staging files for [`Staging::install`], removing what an earlier staging that
    /// never committed left behind.
    pub fn stage_install(&self) -> Result<Staging> {
        let shared = self.shared();
        if shared.staging.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Err(Error::Snapshot("another snapshot is being staged".into()));
        }
        // From here the flag is the new staging's: dropping it releases the flag.
        let staging = Staging { log: self.clone(), parts: Vec::new() };
        let (disk, dir) = (shared.disk.as_ref(), shared.dir.as_path());
        let names = disk.list(dir).context(|| format!("listing data directory {}", dir.display()))?;
        if names.iter().any(|name| name == MARKER) {
            return Err(Error::Snapshot("an install is under way".into()));
        }
        for name in names.iter().filter(|name| name.starts_with(STAGED_PREFIX)) {
            let path = dir.join(name);
            disk.remove(&path).context(|| format!("removing {}", path.display()))?;
        }
        Ok(staging)
    }
}

impl Staging {
    /// Starts the next part: a store file whose first entry is `first_index`.
    pub fn begin_part(&mut self, first_index: u64) -> Result<()> {
        let shared = self.log.shared();
        let path = shared.dir.join(staged_name(first_index));
        let file = shared.disk.open(&path, true).context(|| format!("creating {}", path.display()))?;
        // A store like any other: its header, then the frames `write` appends.
        let store = Store::create(Arc::clone(&file), &path, first_index)?;
        self.parts.push((first_index, file, store.size()));
        Ok(())
    }

    /// Appends `bytes` of frames to the current part.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let dir = self.log.shared().dir.clone();
        let Some((first, file, len)) = self.parts.last_mut() else {
            return Err(Error::Snapshot("staged bytes before any part".into()));
        };
        let (_, written) = file.write_all_at(bytes.to_vec(), *len);
        written.context(|| format!("writing {}", dir.join(staged_name(*first)).display()))?;
        *len += bytes.len() as u64;
        Ok(())
    }

    /// Checks the staged entries (contiguous from `before`'s successor, or 0, through `last`;
    /// terms never decreasing; every frame intact), commits the install, and replaces the
    /// log's entries with them. `next_offset` is the offset the first record after `last`
    /// gets: the offsets of the staged entries follow from it and their kinds. Until the
    /// commit a failure leaves the log as it was; after it, the log is poisoned and the next
    /// open finishes the install.
    pub fn install(mut self, before: Option<EntryId>, last: EntryId, next_offset: u64) -> Result<()> {
        let log = self.log.clone();
        let shared = log.shared();
        let (disk, dir) = (shared.disk.as_ref(), shared.dir.as_path());
        let first = before.map_or(0, |b| b.index + 1);
        let mut expected = first;
        let mut term = before.map(|b| b.term);
        let mut gaps = Vec::new();
        for (part_first, file, len) in &self.parts {
            let path = dir.join(staged_name(*part_first));
            if *part_first != expected {
                return Err(Error::corrupt(
                    &path,
                    0,
                    format!("a part starts at {part_first}, not {expected}"),
                ));
            }
            let checked = recovery::check_frames(file.as_ref(), &path, *len, expected, term)?;
            file.sync_data().context(|| format!("syncing {}", path.display()))?;
            expected = checked.next;
            term = checked.last_term.or(term);
            gaps.extend(checked.gaps);
        }
        if expected != last.index + 1 || term != Some(last.term) {
            return Err(Error::Snapshot(format!(
                "the staged entries end before {expected} (term {term:?}), not at {last:?}"
            )));
        }
        let records = (expected - first) - gaps.len() as u64;
        let Some(first_offset) = next_offset.checked_sub(records) else {
            return Err(Error::Snapshot(format!("{records} records cannot end before offset {next_offset}")));
        };
        // The staged files' entries are durable before the marker that names them.
        disk.sync_dir(dir).context(|| format!("syncing directory {}", dir.display()))?;
        let bases = self.parts.iter().map(|(first, _, _)| *first).collect();
        let marker =
            Marker { wiped: false, before, gaps_below: first - first_offset, next: expected, bases, gaps };
        self.parts.clear();
        marker.store(disk, dir)?;
        drop(self);
        log.call(Message::Install)
    }
}

/// What an install puts in place (the marker file's content).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Marker {
    /// Step 2 is done.
    wiped: bool,
    before: Option<EntryId>,
    /// Non-data entries below the first entry.
    gaps_below: u64,
    /// The index after the last entry.
    next: u64,
    /// The first index of each staged file.
    bases: Vec<u64>,
    /// The indexes of the non-data entries (the metadata file's offset checkpoint, so that
    /// no recovery has to find them again).
    gaps: Vec<u64>,
}

impl Marker {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(u8::from(self.wiped));
        out.push(u8::from(self.before.is_some()));
        let before = self.before.unwrap_or_default();
        let counts = [self.bases.len() as u64, self.gaps.len() as u64];
        for n in [before.term, before.index, self.gaps_below, self.next, counts[0], counts[1]] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for n in self.bases.iter().chain(&self.gaps) {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Marker, String> {
        let (body, crc) = bytes.split_at_checked(bytes.len().saturating_sub(4)).ok_or("too short")?;
        if bytes.len() < 8 + 4 + 2 + 48 + 4 || crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("checksum mismatch or too short".into());
        }
        if &body[..8] != MAGIC || body[8..12] != VERSION.to_le_bytes() {
            return Err("not an install marker of version 1".into());
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let (wiped, has_before) = (body[12] == 1, body[13] == 1);
        let before = has_before.then(|| EntryId { term: u64_at(14), index: u64_at(22) });
        let (bases, gaps) = (u64_at(46), u64_at(54));
        let count = bases.checked_add(gaps).and_then(|n| usize::try_from(n).ok()).ok_or("counts")?;
        if (body.len() - 62) / 8 != count || (body.len() - 62) % 8 != 0 {
            return Err(format!("{bases} parts and {gaps} gaps do not fit in {} bytes", body.len()));
        }
        let list: Vec<u64> = (0..count).map(|i| u64_at(62 + 8 * i)).collect();
        let (bases, gaps) = list.split_at(bases as usize);
        let (bases, gaps) = (bases.to_vec(), gaps.to_vec());
        Ok(Marker { wiped, before, gaps_below: u64_at(30), next: u64_at(38), bases, gaps })
    }

    fn store(&self, disk: &dyn Disk, dir: &Path) -> Result<()> {
        meta::replace_file(disk, dir, MARKER_TEMP, MARKER, self.encode())
    }

    /// The marker in `dir`, if an install is decided there (a temporary one never was).
    fn load(disk: &dyn Disk, dir: &Path) -> Result<Option<Marker>> {
        let Some(bytes) = meta::read_file(disk, dir, MARKER_TEMP, MARKER)? else { return Ok(None) };
        Marker::decode(&bytes).map(Some).map_err(|reason| Error::corrupt(dir.join(MARKER), 0, reason))
    }
}

/// Finishes a committed install in `dir` (steps 2 to 4 of the module docs), if there is
/// one; each step can be redone, so a crash anywhere here is finished by the next call.
/// Returns whether there was one.
pub(crate) fn finish(disk: &dyn Disk, dir: &Path) -> Result<bool> {
    let Some(mut marker) = Marker::load(disk, dir)? else { return Ok(false) };
    let sync_dir = || disk.sync_dir(dir).context(|| format!("syncing directory {}", dir.display()));
    let list = || disk.list(dir).context(|| format!("listing data directory {}", dir.display()));
    if !marker.wiped {
        for name in &list()? {
            if let Some(Ok(_)) = segment::parse_file_name(name) {
                let path = dir.join(name);
                disk.remove(&path).context(|| format!("removing {}", path.display()))?;
            }
        }
        sync_dir()?;
        marker.wiped = true;
        marker.store(disk, dir)?;
    }
    let names = list()?;
    let present: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    for base in &marker.bases {
        let from = dir.join(staged_name(*base));
        let to = segment::file_path(dir, *base, STORE_EXT);
        let moved = to.file_name().and_then(|name| name.to_str()).is_some_and(|name| present.contains(name));
        if present.contains(staged_name(*base).as_str()) {
            disk.rename(&from, &to).context(|| format!("renaming {} to {}", from.display(), to.display()))?;
        } else if !moved {
            // Neither staged nor moved in already: the install cannot be finished.
            let reason = format!("the install names {} but it is gone", from.display());
            return Err(Error::corrupt(dir.join(MARKER), 0, reason));
        }
    }
    sync_dir()?;
    let mut meta = MetaFile::load(disk, dir)?.unwrap_or_default();
    meta.meta.purged = marker.before;
    meta.gaps_below = marker.gaps_below;
    meta.gaps_checked = marker.next;
    meta.gaps = marker.gaps;
    meta.store(disk, dir)?;
    let path = dir.join(MARKER);
    disk.remove(&path).context(|| format!("removing {}", path.display()))?;
    sync_dir()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_round_trips_and_a_flipped_bit_is_caught() {
        let marker = Marker {
            wiped: true,
            before: Some(EntryId { term: 3, index: 99 }),
            gaps_below: 4,
            next: 230,
            bases: vec![100, 160, 200],
            gaps: vec![120, 201],
        };
        let bytes = marker.encode();
        assert_eq!(Marker::decode(&bytes), Ok(marker.clone()));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(Marker::decode(&bad).is_err(), "byte {i}");
        }
        let none = Marker { before: None, bases: vec![], gaps: vec![], ..marker };
        assert_eq!(Marker::decode(&none.encode()), Ok(none));
    }
}
