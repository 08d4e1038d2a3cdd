//! Corrupt files at startup, with the real binary, against what `docs/format.md` promises:
//!
//! - a flipped byte in the last record of a sealed segment (which recovery checks): with the
//!   default `--on-corruption fail`, `ringlog serve` exits with one line naming the file and
//!   byte position; with `truncate` it starts with the log cut there;
//! - a flipped byte mid-way through a sealed segment (which recovery does not scan by
//!   default): it starts, and reading that record fails with `DATA_LOSS` naming the file and
//!   position, while every other record reads back;
//! - a flipped byte in the active segment's tail: cut with a warning naming the file;
//! - truncated indexes: rebuilt from the stores, every record reads back;
//! - stray files: ignored with a warning; an index without a store is removed; a `.store`
//!   whose name is not a 20-digit number is an error naming it.

mod process;

use std::{
    fs,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use ringlog_engine::{Backend, Config, Durability, Log};
use ringlog_service::proto::{ConsumeRequest, ProduceRequest, Record};
use tonic::Code;

const RECORDS: u64 = 100;
const ARGS: &[&str] = &[
    "--backend",
    "pwrite",
    "--segment-bytes",
    "4096",
    "--index-bytes",
    "1024",
    "--max-record-bytes",
    "1024",
];

fn v(i: u64) -> Bytes {
    Bytes::from(format!("record {i:03} {}", "x".repeat(60 + (i % 40) as usize)))
}

/// A cleanly closed log of `RECORDS` records in several small segments; returns the
/// directory and the segments' base offsets in order.
fn log() -> (tempfile::TempDir, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        store_bytes_max: 4096,
        index_bytes_max: 1024,
        record_bytes_max: 1024,
        durability: Durability::Always,
        backend: Backend::Pwrite,
        ..Config::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..RECORDS {
        assert_eq!(log.append(v(i)).unwrap(), i);
    }
    log.close().unwrap();
    let mut bases: Vec<u64> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".store")?.parse().ok())
        .collect();
    bases.sort_unstable();
    assert!(bases.len() >= 3, "several segments: {bases:?}");
    (dir, bases)
}

fn file(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// The store position of the record at `offset` in the segment based at `base` (from its
/// cleanly closed index).
fn position(dir: &Path, base: u64, offset: u64) -> u64 {
    let index = fs::read(file(dir, base, "index")).unwrap();
    let at = 32 + 8 * (offset - base) as usize;
    u64::from(u32::from_le_bytes(index[at + 4..at + 8].try_into().unwrap()))
}

fn flip(path: &Path, position: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

async fn read(server: &process::Serving, offset: u64) -> Result<Bytes, tonic::Status> {
    let mut client = server.client().await;
    let response = client.consume(ConsumeRequest { offset, max_records: 0 }).await?;
    Ok(response.into_inner().record.unwrap().value)
}

async fn append(server: &process::Serving, value: &str) -> u64 {
    let mut client = server.client().await;
    let record = Record { value: Bytes::copy_from_slice(value.as_bytes()), ..Record::default() };
    let request = ProduceRequest { record: Some(record), records: Vec::new() };
    client.produce(request).await.expect("the log accepts appends").into_inner().offset
}

/// The one line `ringlog serve` exits with (tracing lines before it are allowed).
fn error_line(failed: &process::Failed) -> &str {
    assert!(!failed.success, "ringlog serve must fail: {failed:?}");
    let errors: Vec<&String> = failed.stderr.iter().filter(|l| l.starts_with("ringlog:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {failed:?}");
    errors[0]
}

#[tokio::test]
async fn a_flipped_byte_in_a_sealed_segments_checked_record_fails_startup_naming_file_and_position() {
    let (dir, bases) = log();
    // The last record of the first sealed segment: recovery decodes it on every open.
    let last = bases[1] - 1;
    let store = file(dir.path(), bases[0], "store");
    let at = position(dir.path(), bases[0], last);
    flip(&store, at + 30);

    let failed = process::serve(dir.path(), ARGS).err().expect("a corrupt sealed segment refuses to start");
    let line = error_line(&failed);
    assert!(line.contains(&format!("{:020}.store", bases[0])), "names the file: {line}");
    assert!(line.contains(&format!("at byte {at}")), "names the byte position {at}: {line}");

    // The documented alternative: cut the log at the first corrupt record.
    let args: Vec<&str> = ARGS.iter().copied().chain(["--on-corruption", "truncate"]).collect();
    let server = process::serve(dir.path(), &args).unwrap_or_else(|f| panic!("truncate mode starts: {f:?}"));
    for i in 0..last {
        assert_eq!(read(&server, i).await.unwrap(), v(i), "offset {i} before the cut");
    }
    assert_eq!(read(&server, last).await.unwrap_err().code(), Code::OutOfRange, "the log ends at the cut");
    assert_eq!(append(&server, "after the cut").await, last);
    server.kill();
}

#[tokio::test]
async fn a_flipped_byte_mid_sealed_segment_is_found_by_the_read_naming_file_and_position() {
    let (dir, bases) = log();
    let victim = bases[0] + (bases[1] - bases[0]) / 2;
    let store = file(dir.path(), bases[0], "store");
    let at = position(dir.path(), bases[0], victim);
    flip(&store, at + 30);

    // Recovery checks only the last record of a sealed segment (format.md), so it starts.
    let server = process::serve(dir.path(), ARGS).unwrap_or_else(|f| panic!("starts: {f:?}"));
    let status = read(&server, victim).await.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(status.message().contains(&format!("{:020}.store", bases[0])), "names the file: {status:?}");
    assert!(status.message().contains(&format!("at byte {at}")), "names the position {at}: {status:?}");
    for i in (0..RECORDS).filter(|&i| i != victim) {
        assert_eq!(read(&server, i).await.unwrap(), v(i), "offset {i}");
    }
    assert_eq!(append(&server, "still writable").await, RECORDS);
    server.kill();
}

#[tokio::test]
async fn a_flipped_byte_in_the_active_segments_tail_is_cut_with_a_warning() {
    let (dir, bases) = log();
    let active = *bases.last().unwrap();
    let last = RECORDS - 1;
    let store = file(dir.path(), active, "store");
    let at = position(dir.path(), active, last);
    flip(&store, at + 30);

    let server = process::serve(dir.path(), ARGS).unwrap_or_else(|f| panic!("starts: {f:?}"));
    let stderr = server.stderr_text();
    assert!(
        stderr.lines().any(|l| l.contains("WARN") && l.contains(&format!("{active:020}.store"))),
        "a warning names the file: {stderr}"
    );
    for i in 0..last {
        assert_eq!(read(&server, i).await.unwrap(), v(i));
    }
    assert_eq!(read(&server, last).await.unwrap_err().code(), Code::OutOfRange);
    assert_eq!(append(&server, "after the cut").await, last);
    server.kill();
}

#[tokio::test]
async fn truncated_indexes_are_rebuilt_and_every_record_reads_back() {
    let (dir, bases) = log();
    // A sealed index cut mid-entry, another cut inside its header, the active one emptied.
    let sealed = fs::read(file(dir.path(), bases[0], "index")).unwrap();
    fs::write(file(dir.path(), bases[0], "index"), &sealed[..32 + 8 * 3 + 5]).unwrap();
    fs::write(file(dir.path(), bases[1], "index"), &sealed[..10]).unwrap();
    fs::write(file(dir.path(), *bases.last().unwrap(), "index"), b"").unwrap();

    let server = process::serve(dir.path(), ARGS).unwrap_or_else(|f| panic!("starts: {f:?}"));
    for i in 0..RECORDS {
        assert_eq!(read(&server, i).await.unwrap(), v(i), "offset {i}");
    }
    assert_eq!(append(&server, "next").await, RECORDS);
    server.kill();
}

#[tokio::test]
async fn stray_files_are_ignored_an_orphan_index_is_removed_and_a_misnamed_store_is_an_error() {
    let (dir, bases) = log();
    fs::write(dir.path().join("notes.txt"), "operator notes").unwrap();
    fs::write(dir.path().join(".00000000000000000000.store.swp"), "editor swap").unwrap();
    fs::create_dir(dir.path().join("backup")).unwrap();
    let orphan = file(dir.path(), 1_000_000, "index");
    fs::copy(file(dir.path(), bases[0], "index"), &orphan).unwrap();

    let server = process::serve(dir.path(), ARGS).unwrap_or_else(|f| panic!("starts: {f:?}"));
    for i in 0..RECORDS {
        assert_eq!(read(&server, i).await.unwrap(), v(i), "offset {i}");
    }
    assert_eq!(append(&server, "next").await, RECORDS);
    let stderr = server.stderr_text();
    assert!(stderr.contains("notes.txt"), "a warning names the stray file: {stderr}");
    server.kill();
    assert!(!orphan.exists(), "an index without a store is removed");
    assert!(dir.path().join("notes.txt").exists(), "other files are left alone");

    fs::write(dir.path().join("garbage.store"), "not a segment").unwrap();
    let failed = process::serve(dir.path(), ARGS).err().expect("a misnamed store refuses to start");
    let line = error_line(&failed);
    assert!(line.contains("garbage.store"), "names the file: {line}");
}
