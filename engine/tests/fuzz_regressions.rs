//! Inputs the fuzz targets in `fuzz/` found failing, each pinned as an ordinary test (the
//! target that found it is named on each test). See `docs/reliability.md`.

use std::path::Path;

use ringlog_engine::{Backend, Config, Error, Log, OnCorruption, SimDisk};

const DIR: &str = "/fuzz/log";

/// A valid 32-byte file header (`docs/format.md`).
fn file_header(magic: &[u8; 8], base: u64) -> Vec<u8> {
    let mut header = vec![0u8; 32];
    header[0..8].copy_from_slice(magic);
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    header[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

fn config(disk: &SimDisk) -> Config {
    Config {
        store_bytes_max: 400,
        index_bytes_max: 32 + 8 * 5,
        record_bytes_max: 64,
        backend: Backend::Simulated(disk.clone()),
        ..Config::default()
    }
}

/// segment_recovery: a store named (and headed) with base offset `u64::MAX` opened, and
/// the first append overflowed the next offset in the appender (a panic in debug builds,
/// a wrap to offset 0 in release).
#[test]
fn a_segment_based_past_the_offset_limit_is_corrupt_not_an_overflow() {
    let disk = SimDisk::new();
    let mut store = file_header(b"RLOGSTOR", u64::MAX);
    // The rest of the fuzz input: 89 bytes of 0xff, then this tail.
    store.extend_from_slice(&[0xff; 89]);
    store.extend_from_slice(&[0, 0, 0, 0xff, 0xff, 0xff, 0x5d, 0xff, 0xff, 0xff, 0xff, 0, 0x28, 0, 0x10]);
    let path = Path::new(DIR).join(format!("{:020}.store", u64::MAX));
    disk.write_file(&path, store);

    match Log::open(DIR, config(&disk)) {
        Err(Error::Corrupt { path: at, position: 0, reason }) => {
            assert_eq!(at, path);
            assert!(reason.contains("past the end"), "{reason}");
        }
        other => panic!("expected a corrupt segment, got {other:?}"),
    }
    // The fuzz input's options: the segment is dropped and the log starts afresh.
    let config = Config { verify_on_open: true, on_corruption: OnCorruption::Truncate, ..config(&disk) };
    let log = Log::open(DIR, config).unwrap();
    assert_eq!(log.next_offset(), 0);
    assert_eq!(log.append(&b"x"[..]).unwrap(), 0);
    assert_eq!(log.read(0).unwrap().value, &b"x"[..]);
}

/// The same overflow reached through the configuration: appends stop cleanly at the end of
/// the offset space, without poisoning the log, and the log still reopens.
#[test]
fn appends_stop_cleanly_at_the_end_of_the_offset_space() {
    let disk = SimDisk::new();
    let too_far = Config { initial_offset: i64::MAX as u64 + 1, ..config(&disk) };
    assert!(matches!(Log::open(DIR, too_far), Err(Error::InvalidConfig(_))));

    let last = i64::MAX as u64 - 3;
    let config = Config { initial_offset: last, ..config(&disk) };
    let log = Log::open(DIR, config.clone()).unwrap();
    assert_eq!(log.append_batch(vec![b"a"[..].into(), b"b"[..].into()]).unwrap(), last);
    let full = log.append_batch(vec![b"c"[..].into(), b"d"[..].into()]);
    assert!(matches!(full, Err(Error::OffsetsExhausted { next, .. }) if next == last + 2), "{full:?}");
    assert!(log.poisoned().is_none());
    assert_eq!(log.append(&b"c"[..]).unwrap(), last + 2);
    assert!(matches!(log.append(&b"d"[..]), Err(Error::OffsetsExhausted { .. })));
    log.close().unwrap();

    let log = Log::open(DIR, config).unwrap();
    assert_eq!(log.next_offset(), i64::MAX as u64);
    assert_eq!(log.read(last + 2).unwrap().value, &b"c"[..]);
}

/// segment_recovery: with `OnCorruption::Truncate`, a corrupt later segment was dropped and
/// the segment before it became the active one, but it had been recovered as a sealed one,
/// so a corrupt frame under its trusted index survived the open. The next open scanned it
/// as the active segment and cut it there, losing the records appended in between.
#[test]
fn the_segment_left_last_by_a_truncating_cut_is_scanned_like_an_active_one() {
    let disk = SimDisk::new();
    let log = Log::open(DIR, config(&disk)).unwrap();
    for i in 0..12u8 {
        log.append(vec![i; 10]).unwrap(); // 5 records a segment: segments 0, 5 and 10
    }
    log.close().unwrap();
    let store = |base: u64| Path::new(DIR).join(format!("{base:020}.store"));
    let mut middle = disk.read_file(&store(5)).unwrap();
    middle[32 + 32] ^= 0x10; // the value of record 5, under the index's trusted prefix
    disk.write_file(&store(5), middle);
    let mut last = disk.read_file(&store(10)).unwrap();
    last[3] ^= 1; // the header of segment 10: the segment is dropped
    disk.write_file(&store(10), last);

    let config = Config { on_corruption: OnCorruption::Truncate, ..config(&disk) };
    let log = Log::open(DIR, config.clone()).unwrap();
    assert_eq!(log.next_offset(), 5, "the log is cut at the corrupt record");
    assert_eq!(log.append(&b"new"[..]).unwrap(), 5);
    log.close().unwrap();
    let log = Log::open(DIR, config).unwrap();
    assert_eq!(log.next_offset(), 6, "the record appended after the cut survives");
    assert_eq!(log.read(5).unwrap().value, &b"new"[..]);
}
