//! Index validation on open: a valid log (a few records in tiny segments, closed cleanly)
//! whose index file for one segment is replaced by fuzzer bytes. Whatever the index holds,
//! the log opens, no read returns wrong data, and the log accepts an append.
//!
//! Every record reads back identical, except that with default options the index of a
//! *sealed* segment is trusted as far as it looks valid (only its last trusted entry is
//! checked against the store, `docs/format.md`), so a read there may fail with
//! `Error::Corrupt`, never return another record. With `verify_on_open` every record
//! reads back.
//!
//! Input: `flags`, `n`, `n` value lengths, then the index bytes. Flags: bit 0 prefixes the
//! index bytes with a valid index header (so the fuzzer gets past its checksum), bit 1
//! sets `verify_on_open`; the high nibble picks the segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog_engine::{Config, Error, Log};
use ringlog_fuzz::{Cursor, DIR, bases, config, file_header, file_path, image, value};

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let flags = input.u8();
    let n = input.u8() % 16;
    let lens = input.bytes(n as usize).to_vec();
    let (disk, values) = image(&lens);
    let bases = bases(&disk);
    let target = usize::from(flags >> 4) % bases.len();
    let base = bases[target];
    let sealed = target + 1 < bases.len();
    let mut index = Vec::new();
    if flags & 1 != 0 {
        index.extend_from_slice(&file_header(false, base));
    }
    index.extend_from_slice(input.rest());
    disk.write_file(&file_path(base, "index"), index);

    let verify = flags & 2 != 0;
    let config = Config { verify_on_open: verify, ..config(&disk) };
    let log = Log::open(DIR, config).unwrap_or_else(|e| panic!("a bad index made open fail: {e}"));
    assert_eq!((log.lowest_offset(), log.next_offset()), (0, values.len() as u64));
    let end = bases.get(target + 1).copied().unwrap_or(u64::MAX);
    for (offset, expected) in values.iter().enumerate() {
        let offset = offset as u64;
        match log.read(offset) {
            Ok(record) => assert_eq!((record.offset, &record.value), (offset, expected)),
            Err(Error::Corrupt { .. }) if sealed && !verify && (base..end).contains(&offset) => {}
            Err(e) => panic!("record {offset} unreadable: {e}"),
        }
    }
    let next = values.len() as u64;
    assert_eq!(log.append(value(next, 7)).expect("the log accepts an append"), next);
    assert_eq!(log.read(next).expect("the appended record reads back").value, value(next, 7));
});
