//! Helpers shared by ringlog's fuzz targets: the small log configuration they all use,
//! valid images to start from, and a cursor that reads a fuzz input field by field.
//!
//! The targets (in `fuzz_targets/`) stay thin: they decode their input with these helpers,
//! call the engine's public API and check its promises. Input layouts are byte-oriented, so
//! the seed corpora (`examples/seeds.rs`) are real images the fuzzer can mutate.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use ringlog_engine::{Backend, Config, Log, SimDisk};

/// The directory every target's log lives in, on its simulated disk.
pub const DIR: &str = "/fuzz/log";

/// Largest value the images hold; values are `len % VALUE_MAX` bytes.
pub const VALUE_MAX: u8 = 48;

/// Records one segment's index holds in [`config`]: images of a dozen records have
/// several sealed segments and an active one.
pub const SEGMENT_RECORDS: u64 = 5;

/// Tiny segments, so that a few records make several of them.
pub fn config(disk: &SimDisk) -> Config {
    Config {
        store_bytes_max: 400,
        index_bytes_max: 32 + 8 * SEGMENT_RECORDS,
        record_bytes_max: 64,
        backend: Backend::Simulated(disk.clone()),
        ..Config::default()
    }
}

/// The value of record `offset`, `len` bytes long: distinct per offset, so a frame read
/// at the wrong place shows.
pub fn value(offset: u64, len: u8) -> Bytes {
    let len = len % VALUE_MAX;
    Bytes::from((0..len).map(|i| (offset as u8).wrapping_mul(37) ^ i).collect::<Vec<u8>>())
}

/// A log cleanly closed after appending one record per entry of `lens` (one at a time),
/// and the values it holds.
pub fn image(lens: &[u8]) -> (SimDisk, Vec<Bytes>) {
    let disk = SimDisk::new();
    let log = Log::open(DIR, config(&disk)).expect("a fresh log opens");
    let values: Vec<Bytes> = lens.iter().enumerate().map(|(i, &len)| value(i as u64, len)).collect();
    for value in &values {
        log.append(value.clone()).expect("appending to a fresh simulated log");
    }
    log.close().expect("closing a fresh simulated log");
    (disk, values)
}

/// Path of a segment file: `{base:020}.store` or `.index` under [`DIR`].
pub fn file_path(base: u64, ext: &str) -> PathBuf {
    Path::new(DIR).join(format!("{base:020}.{ext}"))
}

/// Base offsets of the segments on `disk`, in order (parsed from the store file names).
pub fn bases(disk: &SimDisk) -> Vec<u64> {
    let mut bases: Vec<u64> = disk
        .paths()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "store"))
        .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
        .collect();
    bases.sort_unstable();
    bases
}

/// A valid 32-byte file header (`docs/format.md`): for a store, `RLOGSTOR`, else `RLOGINDX`.
pub fn file_header(store: bool, base: u64) -> [u8; 32] {
    let mut header = [0u8; 32];
    header[0..8].copy_from_slice(if store { b"RLOGSTOR" } else { b"RLOGINDX" });
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    header[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Reads a fuzz input front to back; past the end every field reads as zero.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        let (&first, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        first
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.iter_mut().for_each(|b| *b = self.u8());
        u64::from_le_bytes(bytes)
    }

    /// The next `len` bytes, or what is left.
    pub fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A length-prefixed (u16) run of bytes.
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = self.u16() as usize;
        self.bytes(len)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
