//! Segment recovery from arbitrary store and index bytes. Opening either fails cleanly with
//! `Error::Corrupt` (never a panic, never with `OnCorruption::Truncate`), or yields a log
//! whose records `lowest..next` all read back, that accepts an append which then reads
//! back, and that reopens with that record. Reads may fail with `Error::Corrupt` only in
//! sealed segments that recovery did not scan (default options); with `verify_on_open`
//! every record reads back.
//!
//! Input: `flags`, then by mode (flags bit 0):
//! - mutate: `n`, `n` value lengths (a valid image of `n` records in tiny segments), then
//!   5-byte edits `[op, file, position u16, byte]`: flip bits, truncate, append bytes, or
//!   delete a file. The records that survive must be a prefix of the image's records.
//! - raw: a base offset (u64), a gap to the second segment's base (u8), then u16-length-
//!   prefixed chunks: store 0, index 0, and with flags bit 3, store 1 and index 1. Bits 4
//!   and 5 prefix stores and indexes with a valid file header.
//!
//! Flags bit 1 sets `verify_on_open`, bit 2 `OnCorruption::Truncate`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringlog_engine::{Config, Error, Log, OnCorruption, SimDisk};
use ringlog_fuzz::{Cursor, DIR, bases, config, file_header, file_path, image, value};

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let flags = input.u8();
    let (disk, values) = if flags & 1 == 0 { mutated(&mut input) } else { (raw(&mut input, flags), None) };
    let verify = flags & 2 != 0;
    let truncate = flags & 4 != 0;
    let on_corruption = if truncate { OnCorruption::Truncate } else { OnCorruption::Fail };
    let config = Config { verify_on_open: verify, on_corruption, ..config(&disk) };

    let log = match Log::open(DIR, config.clone()) {
        Ok(log) => log,
        Err(Error::Corrupt { .. }) if !truncate => return,
        Err(e) => panic!("open failed with {e}"),
    };
    let (lowest, next) = (log.lowest_offset(), log.next_offset());
    assert!(lowest <= next);
    let active_base = *bases(&disk).last().expect("an open log has a segment");
    if let Some(values) = &values {
        assert!(next <= values.len() as u64, "recovery invented records: next {next}");
    }
    for offset in lowest..next {
        match log.read(offset) {
            Ok(record) => {
                assert_eq!(record.offset, offset);
                if let Some(values) = &values {
                    assert_eq!(record.value, values[offset as usize], "record {offset} changed");
                }
            }
            Err(Error::Corrupt { .. }) if !verify && offset < active_base => {}
            Err(e) => panic!("record {offset} of {lowest}..{next} unreadable: {e}"),
        }
    }

    let appended = value(next, 5);
    match log.append(appended.clone()) {
        Ok(offset) => assert_eq!(offset, next),
        // A segment may be headed (and named) with the last offset there is: the log is
        // full, and says so without poisoning itself.
        Err(Error::OffsetsExhausted { next: at, limit }) if at >= limit => {
            assert!(log.poisoned().is_none(), "a full log is not poisoned");
            log.close().expect("closing a full log");
            return;
        }
        Err(e) => panic!("the recovered log accepts an append: {e}"),
    }
    assert_eq!(log.read(next).expect("the appended record reads back").value, appended);
    log.close().expect("closing the recovered log");
    let log = Log::open(DIR, config).expect("the recovered log reopens");
    assert_eq!(log.next_offset(), next + 1);
    assert_eq!(log.read(next).expect("the appended record survives a reopen").value, appended);
});

/// A valid image with fuzzer-chosen edits.
fn mutated(input: &mut Cursor) -> (SimDisk, Option<Vec<Bytes>>) {
    let n = input.u8() % 16;
    let (disk, values) = image(input.bytes(n as usize));
    for _ in 0..8 {
        let (op, file, position, byte) = (input.u8(), input.u8(), input.u16() as usize, input.u8());
        if op == 0 && file == 0 && position == 0 && byte == 0 {
            break; // the input ran out
        }
        let paths = disk.paths();
        if paths.is_empty() {
            break;
        }
        let path = &paths[file as usize % paths.len()];
        let mut bytes = disk.read_file(path).expect("listed file");
        match op % 4 {
            0 if !bytes.is_empty() => {
                let at = position % bytes.len();
                bytes[at] ^= byte.max(1);
            }
            1 => bytes.truncate(position % (bytes.len() + 1)),
            2 => bytes.extend(std::iter::repeat_n(byte, position % 64 + 1)),
            3 => {
                disk.delete_file(path);
                continue;
            }
            _ => {}
        }
        disk.write_file(path, bytes);
    }
    (disk, Some(values))
}

/// Segment files made of fuzzer bytes.
fn raw(input: &mut Cursor, flags: u8) -> SimDisk {
    let disk = SimDisk::new();
    let base = input.u64();
    let gap = u64::from(input.u8());
    let mut segments = vec![base];
    if flags & 8 != 0 {
        segments.extend(base.checked_add(gap));
    }
    for base in segments {
        for (store, with_header) in [(true, flags & 16 != 0), (false, flags & 32 != 0)] {
            let mut bytes = Vec::new();
            if with_header {
                bytes.extend_from_slice(&file_header(store, base));
            }
            bytes.extend_from_slice(input.chunk());
            if store || !bytes.is_empty() {
                disk.write_file(&file_path(base, if store { "store" } else { "index" }), bytes);
            }
        }
    }
    disk
}
