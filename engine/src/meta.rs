//! The metadata file: what a Raft log store must keep besides its entries (the vote, the
//! committed and purged entry ids) and the offset map's checkpoint.
//!
//! Layout (see `docs/format.md`): magic `RLOGMETA`, version u32, body length u32, the body,
//! and a CRC32C of everything before it. The file is replaced atomically: written whole
//! to `meta.tmp`, synced, renamed over `meta`, and the directory synced, so a crash leaves
//! the old file or the new one. It is never written in place, so a bad CRC is corruption.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::{
    entry::EntryId,
    error::{Error, IoContext, Result},
    io::Disk,
};

pub(crate) const FILE_NAME: &str = "meta";
const TEMP_NAME: &str = "meta.tmp";
const MAGIC: &[u8; 8] = b"RLOGMETA";
const VERSION: u32 = 1;
/// Largest vote the file holds (openraft's is a few dozen bytes).
const VOTE_BYTES_MAX: usize = 4096;

/// What the log keeps for a Raft log store; see [`Log::meta`](crate::Log::meta).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The last vote saved with [`Log::save_vote`](crate::Log::save_vote), as given.
    pub vote: Option<Bytes>,
    /// The last committed entry saved with [`Log::save_committed`](crate::Log::save_committed).
    pub committed: Option<EntryId>,
    /// The last purged entry ([`Log::purge`](crate::Log::purge)).
    pub purged: Option<EntryId>,
}

/// The whole file: the public part and the offset map's checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MetaFile {
    pub(crate) meta: Meta,
    /// Non-data entries below the listed ones.
    pub(crate) gaps_below: u64,
    /// Every non-data entry below this index is counted in `gaps_below` or listed.
    pub(crate) gaps_checked: u64,
    pub(crate) gaps: Vec<u64>,
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn put_id(out: &mut Vec<u8>, id: Option<EntryId>) {
    out.push(u8::from(id.is_some()));
    let id = id.unwrap_or_default();
    out.extend_from_slice(&id.term.to_le_bytes());
    out.extend_from_slice(&id.index.to_le_bytes());
}

impl MetaFile {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let vote = self.meta.vote.as_deref().unwrap_or_default();
        body.extend_from_slice(&u32::try_from(vote.len()).expect("vote size is bounded").to_le_bytes());
        body.extend_from_slice(vote);
        body.push(u8::from(self.meta.vote.is_some()));
        put_id(&mut body, self.meta.committed);
        put_id(&mut body, self.meta.purged);
        body.extend_from_slice(&self.gaps_below.to_le_bytes());
        body.extend_from_slice(&self.gaps_checked.to_le_bytes());
        body.extend_from_slice(&u32::try_from(self.gaps.len()).expect("gap count fits u32").to_le_bytes());
        for gap in &self.gaps {
            body.extend_from_slice(&gap.to_le_bytes());
        }
        let mut out = Vec::with_capacity(body.len() + 20);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&u32::try_from(body.len()).expect("meta fits u32").to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses the file; the error says what is wrong (never panics on any bytes).
    pub(crate) fn decode(bytes: &[u8]) -> Result<MetaFile, String> {
        let mut reader = Reader { bytes, at: 0 };
        if bytes.len() < 20 {
            return Err(format!("file is {} bytes, shorter than its header", bytes.len()));
        }
        let (content, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        if stored != crc32c::crc32c(content) {
            return Err("checksum mismatch".into());
        }
        if reader.take(8)? != MAGIC {
            return Err("bad magic".into());
        }
        let version = reader.u32()?;
        if version != VERSION {
            return Err(format!("unsupported metadata version {version}, this build reads {VERSION}"));
        }
        let body_len = reader.u32()? as usize;
        if body_len != bytes.len() - 20 {
            return Err(format!("body length {body_len} does not match the file ({} bytes)", bytes.len()));
        }
        let vote_len = reader.u32()? as usize;
        if vote_len > VOTE_BYTES_MAX {
            return Err(format!("vote of {vote_len} bytes exceeds {VOTE_BYTES_MAX}"));
        }
        let vote = Bytes::copy_from_slice(reader.take(vote_len)?);
        let has_vote = reader.u8()? == 1;
        let committed = reader.id()?;
        let purged = reader.id()?;
        let gaps_below = reader.u64()?;
        let gaps_checked = reader.u64()?;
        let count = reader.u32()? as usize;
        if count > (bytes.len() - reader.at) / 8 {
            return Err(format!("{count} gaps do not fit in the file"));
        }
        let gaps = (0..count).map(|_| reader.u64()).collect::<Result<Vec<_>, _>>()?;
        if !gaps.is_sorted_by(|a, b| a < b) {
            return Err("gap indexes are not increasing".into());
        }
        let meta = Meta { vote: has_vote.then_some(vote), committed, purged };
        Ok(MetaFile { meta, gaps_below, gaps_checked, gaps })
    }

    /// Reads the file in `dir`, if there is one; removes a leftover temporary file.
    pub(crate) fn load(disk: &dyn Disk, dir: &Path) -> Result<Option<MetaFile>> {
        let Some(bytes) = read_file(disk, dir, TEMP_NAME, FILE_NAME)? else { return Ok(None) };
        MetaFile::decode(&bytes).map(Some).map_err(|reason| Error::corrupt(path(dir), 0, reason))
    }

    /// Replaces the file in `dir` atomically and durably.
    pub(crate) fn store(&self, disk: &dyn Disk, dir: &Path) -> Result<()> {
        if self.meta.vote.as_ref().is_some_and(|vote| vote.len() > VOTE_BYTES_MAX) {
            return Err(Error::InvalidConfig(format!("a vote is at most {VOTE_BYTES_MAX} bytes")));
        }
        replace_file(disk, dir, TEMP_NAME, FILE_NAME, self.encode())
    }
}

/// The bytes of the small file `name` in `dir` that [`replace_file`] writes, if there is one
/// (at most 64 MiB are read); a leftover `temp_name`, a replacement that never finished, is
/// removed.
pub(crate) fn read_file(disk: &dyn Disk, dir: &Path, temp_name: &str, name: &str) -> Result<Option<Vec<u8>>> {
    let names = disk.list(dir).context(|| format!("listing data directory {}", dir.display()))?;
    if names.iter().any(|n| n == temp_name) {
        let temp = dir.join(temp_name);
        disk.remove(&temp).context(|| format!("removing {}", temp.display()))?;
    }
    if !names.iter().any(|n| n == name) {
        return Ok(None);
    }
    let path = dir.join(name);
    let file = disk.open(&path, false).context(|| format!("opening {}", path.display()))?;
    let len = file.len().context(|| format!("opening {}", path.display()))?;
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(64 << 20)];
    file.read_exact_at(&mut bytes, 0).context(|| format!("reading {}", path.display()))?;
    Ok(Some(bytes))
}

/// Replaces the file `name` in `dir` with `bytes`, atomically and durably: written whole to
/// `temp_name`, synced, renamed over `name`, and the directory synced, so that a crash leaves
/// the old file or the new one.
pub(crate) fn replace_file(
    disk: &dyn Disk,
    dir: &Path,
    temp_name: &str,
    name: &str,
    bytes: Vec<u8>,
) -> Result<()> {
    let temp = dir.join(temp_name);
    let what = || format!("writing {}", temp.display());
    let file = disk.open(&temp, true).context(what)?;
    file.set_len(0).context(what)?;
    let (_, written) = file.write_all_at(bytes, 0);
    written.context(what)?;
    file.sync_data().context(what)?;
    drop(file);
    let path = dir.join(name);
    disk.rename(&temp, &path).context(|| format!("renaming {} to {}", temp.display(), path.display()))?;
    disk.sync_dir(dir).context(|| format!("syncing directory {}", dir.display()))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn id(&mut self) -> Result<Option<EntryId>, String> {
        let present = self.u8()? == 1;
        let term = self.u64()?;
        let index = self.u64()?;
        Ok(present.then_some(EntryId { term, index }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MetaFile {
        MetaFile {
            meta: Meta {
                vote: Some(Bytes::from_static(b"vote:3:node1")),
                committed: Some(EntryId { term: 3, index: 40 }),
                purged: Some(EntryId { term: 2, index: 9 }),
            },
            gaps_below: 4,
            gaps_checked: 41,
            gaps: vec![10, 25],
        }
    }

    #[test]
    fn round_trips_and_any_flipped_bit_or_cut_is_refused() {
        let bytes = sample().encode();
        assert_eq!(MetaFile::decode(&bytes), Ok(sample()));
        assert_eq!(MetaFile::decode(&MetaFile::default().encode()), Ok(MetaFile::default()));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(MetaFile::decode(&bad).is_err(), "flip at byte {at} passed");
            assert!(MetaFile::decode(&bytes[..at]).is_err(), "cut at byte {at} passed");
        }
    }

    #[test]
    fn store_replaces_the_file_and_load_reads_it_back() {
        let disk = crate::io::SimDisk::new();
        let dir = Path::new("/meta-test");
        crate::io::Disk::create_dir_all(&disk, dir).unwrap();
        assert_eq!(MetaFile::load(&disk, dir).unwrap(), None);
        MetaFile::default().store(&disk, dir).unwrap();
        sample().store(&disk, dir).unwrap();
        assert_eq!(MetaFile::load(&disk, dir).unwrap(), Some(sample()));
        // A temporary file left by a crash mid-write is ignored and removed.
        disk.write_file(&dir.join(TEMP_NAME), b"half".to_vec());
        assert_eq!(MetaFile::load(&disk, dir).unwrap(), Some(sample()));
        assert!(!disk.paths().contains(&dir.join(TEMP_NAME)));
    }
}
