//! Injected IO failures on the simulated disk: a failed write or sync poisons the log
//! (never retried), nothing acknowledged is lost, and reopening recovers. A full disk is
//! not a poison: the append fails, nothing of it is kept, and appends resume with space.

use std::path::Path;

use bytes::Bytes;
use ringlog_engine::{Backend, Config, Durability, Error, Log, SimDisk, SimFault};

fn open(disk: &SimDisk, durability: Durability) -> Log {
    let config = Config {
        store_bytes_max: 4096,
        record_bytes_max: 1024,
        durability,
        backend: Backend::Simulated(disk.clone()),
        ..Config::default()
    };
    Log::open(Path::new("/faults"), config).unwrap()
}

fn v(i: u64) -> Bytes {
    Bytes::from(format!("value-{i}"))
}

#[test]
fn write_error_poisons_the_log_until_reopen() {
    let disk = SimDisk::new();
    let log = open(&disk, Durability::None);
    log.append(v(0)).unwrap();
    disk.inject(SimFault::Write { after: 0, errno: libc::EIO });
    let error = log.append(v(1)).unwrap_err();
    assert!(error.to_string().contains("Input/output error"), "{error}");
    disk.clear_faults();
    let error = log.append(v(2)).unwrap_err();
    assert!(matches!(error, Error::Poisoned(_)), "{error}");
    assert!(log.poisoned().is_some());
    assert_eq!(log.read(0).unwrap().value, v(0), "reads keep working");
    assert!(matches!(log.read(1), Err(Error::OffsetNotWritten { .. })), "the failed record is invisible");
    drop(log);

    let log = open(&disk, Durability::None);
    assert_eq!(log.next_offset(), 1, "the half-written record is cut on reopen");
    assert_eq!(log.append(v(1)).unwrap(), 1);
}

#[test]
fn sync_error_poisons_and_fails_the_waiting_appends_without_retrying() {
    let disk = SimDisk::new();
    let log = open(&disk, Durability::Always);
    log.append(v(0)).unwrap();
    let syncs_before = log.stats().syncs;
    disk.inject(SimFault::Sync { after: 0, errno: libc::EIO });
    let error = log.append(v(1)).unwrap_err();
    assert!(error.to_string().contains("fdatasync"), "{error}");
    disk.clear_faults();
    assert!(matches!(log.append(v(2)), Err(Error::Poisoned(_))));
    assert!(matches!(log.sync(), Err(Error::Poisoned(_))), "no retry of the failed fsync");
    assert_eq!(log.stats().syncs, syncs_before, "no sync succeeded after the failure");
    assert_eq!(log.durable_offset(), 1);
    drop(log);

    let log = open(&disk.crash(), Durability::Always);
    assert!(log.next_offset() >= 1, "the acknowledged record survives a crash");
    assert_eq!(log.read(0).unwrap().value, v(0));
}

#[test]
fn full_disk_rejects_the_append_keeps_nothing_of_it_and_recovers_with_space() {
    let disk = SimDisk::new();
    let log = open(&disk, Durability::None);
    log.append(v(0)).unwrap();
    disk.inject(SimFault::Write { after: 0, errno: libc::ENOSPC });
    let error = log.append_batch(vec![v(1), v(2)]).unwrap_err();
    assert!(matches!(error, Error::DiskFull { .. }), "{error}");
    assert!(log.poisoned().is_none(), "a full disk is not a poison");
    assert_eq!(log.read(0).unwrap().value, v(0));
    assert_eq!(log.next_offset(), 1);
    disk.clear_faults();
    assert_eq!(log.append(v(1)).unwrap(), 1, "appends resume at the same offset");
    assert_eq!(log.read(1).unwrap().value, v(1));
    log.close().unwrap();
    let log = open(&disk, Durability::None);
    assert_eq!(log.next_offset(), 2);
}

#[test]
fn failure_while_rolling_fails_the_unwritten_requests_only() {
    let disk = SimDisk::new();
    let log = open(&disk, Durability::None);
    let big = Bytes::from(vec![7u8; 1000]);
    for _ in 0..3 {
        log.append(big.clone()).unwrap();
    }
    // The next 1000-byte record does not fit: the roll writes a new segment header first.
    disk.inject(SimFault::Write { after: 0, errno: libc::EIO });
    assert!(log.append(big.clone()).is_err());
    assert_eq!(log.next_offset(), 3);
    for i in 0..3 {
        assert_eq!(log.read(i).unwrap().value, big);
    }
}

#[test]
fn a_reopen_after_a_failed_sync_does_not_call_the_dropped_pages_durable() {
    // Linux keeps the pages a failed writeback could not write cached and clean: the next
    // open (same boot, no crash) reads them, and its own sync has nothing to write.
    let disk = SimDisk::new();
    let log = open(&disk, Durability::Always);
    log.append(v(0)).unwrap();
    disk.inject(SimFault::Sync { after: 0, errno: libc::EIO });
    assert!(log.append(v(1)).is_err());
    drop(log);

    let log = open(&disk, Durability::Always);
    let durable = log.durable_offset();
    let image = disk.crash();
    drop(log);
    let log = open(&image, Durability::Always);
    assert!(
        log.next_offset() >= durable,
        "reopened durable at {durable}, a crash then left {}",
        log.next_offset()
    );
    assert_eq!(log.read(0).unwrap().value, v(0));
}

#[test]
fn an_active_segment_whose_header_page_never_reached_the_disk_is_recreated() {
    // A crash kept the new segment's size but not its first page: zeros where the header was.
    let disk = SimDisk::new();
    let log = open(&disk, Durability::Always);
    let big = Bytes::from(vec![7u8; 1000]);
    for _ in 0..4 {
        log.append(big.clone()).unwrap();
    }
    assert_eq!(log.segment_count(), 2);
    log.close().unwrap();
    disk.write_file(&Path::new("/faults").join(format!("{:020}.store", 3)), vec![0; 32 + 1024]);

    let log = open(&disk, Durability::Always);
    assert_eq!(log.next_offset(), 3, "nothing in the torn segment was ever synced");
    assert_eq!(log.append(v(3)).unwrap(), 3);
    assert_eq!(log.read(2).unwrap().value, big);
}
