//! Recovery on open, file by file: every way a crash or a bad disk can leave the files,
//! on every backend. Each case reopens to the valid prefix and accepts appends.

mod common;

use bytes::Bytes;
use common::{Fixture, fixtures, index_name, store_name, value};
use ringlog_engine::{Error, Log, OnCorruption};

/// Frame of an 11-byte value: 32-byte header + value.
const FRAME: usize = 43;
const HEADER: usize = 32;

/// Writes three 11-byte records and closes cleanly.
fn three_records(f: &Fixture) {
    let log = f.open();
    for i in 0..3 {
        log.append(value(i, 11)).unwrap();
    }
    log.close().unwrap();
}

/// Reopens and checks that exactly `count` records survive and the log is writable.
fn assert_recovers_to(f: &Fixture, count: u64) -> Log {
    let log = f.open();
    assert_eq!(log.next_offset(), count, "[{}] records after recovery", f.name);
    for i in 0..count {
        assert_eq!(log.read(i).unwrap().value, value(i, 11), "[{}] record {i}", f.name);
    }
    assert_eq!(log.append(value(count, 11)).unwrap(), count, "[{}] writable", f.name);
    assert_eq!(log.read(count).unwrap().value, value(count, 11));
    log
}

fn edit(f: &Fixture, name: &str, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = f.read_file(name);
    change(&mut bytes);
    f.write_file(name, bytes);
}

#[test]
fn torn_frame_header_is_cut_on_reopen() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        edit(&f, &store_name(0), |b| b.truncate(HEADER + 2 * FRAME + 10));
        let log = assert_recovers_to(&f, 2);
        let (file, position, _) = &log.recovery_report().truncated[0];
        assert_eq!(
            (file.file_name().unwrap().to_str().unwrap(), *position),
            (store_name(0).as_str(), (HEADER + 2 * FRAME) as u64)
        );
    }
}

#[test]
fn torn_value_is_cut_on_reopen() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        edit(&f, &store_name(0), |b| b.truncate(HEADER + 2 * FRAME + 30));
        assert_recovers_to(&f, 2);
    }
}

#[test]
fn crc_mismatch_in_the_tail_is_cut_on_reopen() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        edit(&f, &store_name(0), |b| b[HEADER + 2 * FRAME + 28] ^= 0x40);
        assert_recovers_to(&f, 2);
    }
}

#[test]
fn garbage_appended_after_the_last_record_is_cut() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        edit(&f, &store_name(0), |b| b.extend_from_slice(&[0xAB; 50]));
        assert_recovers_to(&f, 3);
    }
}

#[test]
fn zero_filled_index_tail_left_by_an_unclean_stop_is_ignored() {
    // proglog reads the zero entry as offset 0 and sets nextOffset = base + 1.
    for f in fixtures(|_| {}) {
        three_records(&f);
        edit(&f, &index_name(0), |b| b.resize(b.len() + 8 * 1000, 0));
        assert_recovers_to(&f, 3);
    }
}

#[test]
fn index_longer_than_the_store_is_cut_to_the_store() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        edit(&f, &store_name(0), |b| b.truncate(HEADER + 2 * FRAME));
        assert_recovers_to(&f, 2);
    }
}

#[test]
fn index_shorter_than_the_store_is_rebuilt() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        edit(&f, &index_name(0), |b| b.truncate(HEADER + 8));
        let log = assert_recovers_to(&f, 3);
        assert_eq!(log.recovery_report().indexes_rebuilt, 1, "[{}]", f.name);
    }
}

#[test]
fn missing_index_file_is_rebuilt() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        f.remove_file(&index_name(0));
        assert_recovers_to(&f, 3);
    }
}

#[test]
fn index_with_a_corrupt_header_is_rebuilt() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        edit(&f, &index_name(0), |b| b[3] ^= 1);
        assert_recovers_to(&f, 3);
    }
}

#[test]
fn index_entries_pointing_at_the_wrong_frames_are_not_trusted() {
    for f in fixtures(|c| c.store_bytes_max = (HEADER + 3 * FRAME) as u64) {
        let log = f.open();
        for i in 0..4 {
            log.append(value(i, 11)).unwrap();
        }
        log.close().unwrap();
        // Swap the sealed segment's last entry for one pointing at an earlier frame.
        edit(&f, &index_name(0), |b| {
            let first = b[HEADER + 4..HEADER + 8].to_vec();
            b[HEADER + 16 + 4..HEADER + 16 + 8].copy_from_slice(&first);
        });
        assert_recovers_to(&f, 4);
    }
}

#[test]
fn torn_store_header_of_the_last_segment_recreates_it() {
    for f in fixtures(|c| c.store_bytes_max = (HEADER + 3 * FRAME) as u64) {
        let log = f.open();
        for i in 0..3 {
            log.append(value(i, 11)).unwrap();
        }
        log.close().unwrap();
        // A crash right after the roll created the next segment's files.
        f.write_file(&store_name(3), vec![b'R', b'L']);
        f.write_file(&index_name(3), Vec::new());
        assert_recovers_to(&f, 3);
    }
}

#[test]
fn an_unclean_stop_keeps_every_written_record_and_stays_writable() {
    // proglog: after a crash every append fails with EOF forever.
    for f in fixtures(|c| c.store_bytes_max = 1000) {
        let log = f.open();
        for i in 0..40 {
            log.append(value(i, 11)).unwrap();
        }
        // The files as a killed process leaves them: no close, no trim, no final sync.
        let killed = f.copy_as_if_killed();
        drop(log);
        assert_recovers_to(&killed, 40);
    }
}

fn sealed_segment_with_a_flipped_byte(f: &Fixture) {
    let log = f.open();
    for i in 0..7 {
        log.append(value(i, 11)).unwrap();
    }
    assert_eq!(log.segment_count(), 3);
    log.close().unwrap();
    // Offset 1's value, in the middle of the first (sealed) segment.
    edit(f, &store_name(0), |b| b[HEADER + FRAME + 30] ^= 0x01);
}

#[test]
fn corruption_inside_a_sealed_segment_names_the_file_and_position() {
    for f in fixtures(|c| {
        c.store_bytes_max = (HEADER + 3 * FRAME) as u64;
        c.verify_on_open = true;
    }) {
        sealed_segment_with_a_flipped_byte(&f);
        match Log::open(&f.dir, f.config.clone()) {
            Err(Error::Corrupt { path, position, reason }) => {
                assert_eq!(path, f.dir.join(store_name(0)), "[{}]", f.name);
                assert_eq!(position, (HEADER + FRAME) as u64, "[{}]", f.name);
                assert!(reason.contains("checksum"), "[{}] {reason}", f.name);
            }
            other => panic!("[{}] expected Corrupt, got {other:?}", f.name),
        }
    }
}

#[test]
fn without_verify_on_open_a_corrupt_sealed_record_fails_its_read_with_file_and_position() {
    for f in fixtures(|c| c.store_bytes_max = (HEADER + 3 * FRAME) as u64) {
        sealed_segment_with_a_flipped_byte(&f);
        let log = f.open();
        assert_eq!(log.next_offset(), 7, "[{}]", f.name);
        match log.read(1) {
            Err(Error::Corrupt { path, position, .. }) => {
                assert_eq!((path, position), (f.dir.join(store_name(0)), (HEADER + FRAME) as u64));
            }
            other => panic!("[{}] expected Corrupt, got {other:?}", f.name),
        }
        assert_eq!(log.read(2).unwrap().value, value(2, 11), "[{}] its neighbours still read", f.name);
    }
}

#[test]
fn truncate_mode_cuts_the_log_at_the_first_corrupt_record() {
    for f in fixtures(|c| {
        c.store_bytes_max = (HEADER + 3 * FRAME) as u64;
        c.verify_on_open = true;
        c.on_corruption = OnCorruption::Truncate;
    }) {
        sealed_segment_with_a_flipped_byte(&f);
        let log = assert_recovers_to(&f, 1);
        assert_eq!(log.recovery_report().segments_removed, 2, "[{}]", f.name);
    }
}

#[test]
fn a_sealed_segment_whose_last_record_is_corrupt_fails_to_open_by_default() {
    for f in fixtures(|c| c.store_bytes_max = (HEADER + 3 * FRAME) as u64) {
        let log = f.open();
        for i in 0..4 {
            log.append(value(i, 11)).unwrap();
        }
        log.close().unwrap();
        edit(&f, &store_name(0), |b| b[HEADER + 2 * FRAME + 30] ^= 0x01);
        let error = Log::open(&f.dir, f.config.clone()).unwrap_err();
        let at = (HEADER + 2 * FRAME) as u64;
        assert!(matches!(error, Error::Corrupt { position, .. } if position == at), "[{}] {error}", f.name);
        assert!(error.to_string().contains(&store_name(0)), "{error}");
    }
}

#[test]
fn stray_files_are_ignored_but_misnamed_segment_files_are_an_error() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        f.write_file("README.txt", b"not a segment".to_vec());
        assert_recovers_to(&f, 4 - 1).close().unwrap();
        f.write_file("42.store", Vec::new());
        let error = Log::open(&f.dir, f.config.clone()).unwrap_err();
        assert!(error.to_string().contains("42.store"), "[{}] {error}", f.name);
        assert!(error.to_string().contains("20-digit"), "[{}] {error}", f.name);
    }
}

#[test]
fn an_index_without_its_store_is_removed() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        f.write_file(&index_name(99), vec![0; 64]);
        assert_recovers_to(&f, 3);
        assert!(!f.file_names().contains(&index_name(99)), "[{}]", f.name);
    }
}

#[test]
fn a_gap_between_segments_is_reported() {
    for f in fixtures(|c| c.store_bytes_max = (HEADER + 3 * FRAME) as u64) {
        let log = f.open();
        for i in 0..7 {
            log.append(value(i, 11)).unwrap();
        }
        log.close().unwrap();
        f.remove_file(&store_name(3));
        f.remove_file(&index_name(3));
        let error = Log::open(&f.dir, f.config.clone()).unwrap_err();
        assert!(
            matches!(&error, Error::Corrupt { path, .. } if path.ends_with(store_name(6))),
            "[{}] {error}",
            f.name
        );
    }
}

#[test]
fn a_store_renamed_to_the_wrong_base_is_reported() {
    for f in fixtures(|_| {}) {
        three_records(&f);
        let bytes = f.read_file(&store_name(0));
        f.remove_file(&store_name(0));
        f.remove_file(&index_name(0));
        f.write_file(&store_name(5), bytes);
        let error = Log::open(&f.dir, f.config.clone()).unwrap_err();
        assert!(error.to_string().contains("base index 0"), "[{}] {error}", f.name);
    }
}

#[test]
fn a_shrunken_index_limit_keeps_every_record_of_older_segments() {
    // proglog truncates live entries when MaxIndexBytes shrinks, then panics on access.
    for f in fixtures(|_| {}) {
        let log = f.open();
        log.append_batch((0..50).map(|i| value(i, 11)).collect::<Vec<Bytes>>()).unwrap();
        log.close().unwrap();
        let log = f.open_with(|c| c.index_bytes_max = 32 + 8 * 4).unwrap();
        assert_eq!(log.next_offset(), 50, "[{}]", f.name);
        assert_eq!(log.read(49).unwrap().value, value(49, 11));
        assert_eq!(log.append(value(50, 11)).unwrap(), 50, "[{}] rolls to a new segment", f.name);
        assert_eq!(log.segment_count(), 2);
    }
}
