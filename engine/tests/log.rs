//! The log's behaviour on every backend: the proglog test catalogue in spirit, and the
//! weaknesses it has that ringlog must not.

mod common;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use common::{fixtures, index_name, store_name, value};
use ringlog_engine::{Config, Durability, Error, Log, Retention, SimFault};

/// Store limit that fits exactly three 11-byte records (header 32 + 3 * (32 + 11)).
const THREE_HELLOS: u64 = 32 + 3 * 43;

#[test]
fn append_and_read_round_trip() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        for i in 0..3 {
            assert_eq!(log.append(&b"hello world"[..]).unwrap(), i, "[{}]", f.name);
        }
        for i in 0..3 {
            let record = log.read(i).unwrap();
            assert_eq!((record.offset, &record.value[..]), (i, &b"hello world"[..]), "[{}]", f.name);
        }
    }
}

#[test]
fn reading_past_the_end_is_out_of_range_with_the_next_offset() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        assert!(matches!(log.read(0), Err(Error::OffsetNotWritten { offset: 0, next: 0 })), "[{}]", f.name);
        log.append(&b"x"[..]).unwrap();
        let error = log.read(1).unwrap_err();
        assert!(matches!(error, Error::OffsetNotWritten { offset: 1, next: 1 }), "[{}] {error}", f.name);
        assert!(error.to_string().starts_with("offset out of range: 1"));
        assert!(matches!(log.read(u64::MAX), Err(Error::OffsetNotWritten { .. })));
    }
}

#[test]
fn empty_log_has_no_highest_offset() {
    // proglog reports highest 0 for an empty log, the same as for a log with one record.
    for f in fixtures(|c| c.initial_offset = 16) {
        let log = f.open();
        assert_eq!((log.lowest_offset(), log.next_offset(), log.highest_offset()), (16, 16, None));
        assert_eq!(log.append(&b"a"[..]).unwrap(), 16);
        assert_eq!(log.highest_offset(), Some(16), "[{}]", f.name);
    }
}

#[test]
fn reopen_keeps_lowest_highest_and_next_offset() {
    for f in fixtures(|c| c.store_bytes_max = THREE_HELLOS - 1) {
        let log = f.open();
        for _ in 0..3 {
            log.append(&b"hello world"[..]).unwrap();
        }
        assert_eq!(log.segment_count(), 2, "[{}] the third record rolls the segment", f.name);
        log.close().unwrap();
        let log = f.open();
        assert_eq!((log.lowest_offset(), log.highest_offset()), (0, Some(2)), "[{}]", f.name);
        assert_eq!(log.append(&b"again"[..]).unwrap(), 3, "[{}]", f.name);
        assert_eq!(&log.read(2).unwrap().value[..], b"hello world");
        assert_eq!(
            f.file_names(),
            vec![index_name(0), store_name(0), index_name(2), store_name(2)],
            "[{}]",
            f.name
        );
    }
}

#[test]
fn segment_rolls_when_the_store_is_full() {
    for f in fixtures(|c| c.store_bytes_max = THREE_HELLOS) {
        let log = f.open();
        for _ in 0..3 {
            log.append(&b"hello world"[..]).unwrap();
        }
        assert_eq!(log.segment_count(), 1, "[{}] exactly full is not over", f.name);
        log.append(&b"hello world"[..]).unwrap();
        assert_eq!(log.segment_count(), 2, "[{}]", f.name);
        assert_eq!(log.read(3).unwrap().offset, 3);
    }
}

#[test]
fn segment_rolls_when_the_index_is_full_even_for_sizes_not_a_multiple_of_the_entry() {
    // proglog: 1024-byte index, 12-byte entries: `size >= max` never fires and every
    // append after the 85th fails forever. Here: 3 entries fit in 32 + 3*8 + 7 bytes.
    for f in fixtures(|c| {
        c.index_bytes_max = 32 + 3 * 8 + 7;
        c.initial_offset = 16;
    }) {
        let log = f.open();
        for i in 0..10u64 {
            assert_eq!(log.append(Bytes::new()).unwrap(), 16 + i, "[{}]", f.name);
        }
        assert_eq!(log.segment_count(), 4, "[{}] 3 + 3 + 3 + 1", f.name);
        for i in 0..10 {
            assert!(log.read(16 + i).unwrap().value.is_empty());
        }
        log.close().unwrap();
        let log = f.open();
        assert_eq!(log.next_offset(), 26, "[{}]", f.name);
    }
}

#[test]
fn a_batch_gets_contiguous_offsets_and_never_spans_segments() {
    for f in fixtures(|c| c.store_bytes_max = THREE_HELLOS) {
        let log = f.open();
        log.append(value(0, 11)).unwrap();
        // Two more fit beside the first record; three do not, so they start a segment.
        let values: Vec<Bytes> = (1..4).map(|i| value(i, 11)).collect();
        assert_eq!(log.append_batch(values.clone()).unwrap(), 1);
        assert_eq!(log.segment_count(), 2, "[{}] the batch rolled the segment first", f.name);
        assert_eq!(log.read_from(1, 10, usize::MAX).unwrap().len(), 3, "[{}] all in one segment", f.name);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(&log.read(1 + i as u64).unwrap().value, v, "[{}]", f.name);
        }
        let too_big: Vec<Bytes> = (0..4).map(|i| value(i, 11)).collect();
        let error = log.append_batch(too_big).unwrap_err();
        assert!(matches!(error, Error::BatchTooLarge { records: 4, bytes: 172, .. }), "[{}] {error}", f.name);
        assert_eq!(log.next_offset(), 4, "[{}] nothing of it was written", f.name);
    }
}

#[test]
fn invalid_appends_are_rejected_and_write_nothing() {
    for f in fixtures(|c| c.record_bytes_max = 100) {
        let log = f.open();
        assert!(matches!(log.append(vec![0u8; 101]), Err(Error::RecordTooLarge { len: 101, max: 100 })));
        assert!(matches!(log.append_batch(vec![]), Err(Error::EmptyBatch)));
        let mixed = vec![Bytes::from_static(b"ok"), Bytes::from(vec![0u8; 101])];
        assert!(matches!(log.append_batch(mixed), Err(Error::RecordTooLarge { .. })));
        assert_eq!(log.next_offset(), 0, "[{}]", f.name);
        assert_eq!(log.append(vec![0u8; 100]).unwrap(), 0);
    }
}

#[test]
fn read_from_respects_record_and_byte_limits_and_segment_ends() {
    for f in fixtures(|c| c.store_bytes_max = 32 + 10 * 42) {
        let log = f.open();
        let values: Vec<Bytes> = (0..25).map(|i| value(i, 10)).collect();
        for chunk in values.chunks(5) {
            log.append_batch(chunk.to_vec()).unwrap();
        }
        let batch = log.read_from(0, 4, usize::MAX).unwrap();
        assert_eq!(batch.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        let batch = log.read_from(2, 100, usize::MAX).unwrap();
        assert_eq!(batch.len(), 8, "[{}] stops at the segment end", f.name);
        assert_eq!(batch.last().unwrap().offset, 9);
        let batch = log.read_from(10, 100, 2 * 42).unwrap();
        assert_eq!(batch.len(), 2, "[{}] two 42-byte frames fit in 84 bytes", f.name);
        let batch = log.read_from(10, 100, 1).unwrap();
        assert_eq!(batch.len(), 1, "the first record always comes back");
        let batch = log.read_from(24, 100, usize::MAX).unwrap();
        assert_eq!(batch.len(), 1);
        for r in log.read_from(20, 100, usize::MAX).unwrap() {
            assert_eq!(r.value, values[r.offset as usize]);
        }
    }
}

#[test]
fn truncate_before_drops_whole_segments_and_never_the_active_one() {
    // proglog's Truncate can remove every segment, after which the log panics.
    for f in fixtures(|c| c.store_bytes_max = THREE_HELLOS) {
        let log = f.open();
        for _ in 0..7 {
            log.append(&b"hello world"[..]).unwrap();
        }
        assert_eq!(log.segment_count(), 3, "[{}] 0-2, 3-5, 6", f.name);
        assert_eq!(log.truncate_before(4).unwrap(), 1, "[{}] only 0-2 lies wholly below 4", f.name);
        assert_eq!(log.lowest_offset(), 3);
        let error = log.read(2).unwrap_err();
        assert!(matches!(error, Error::OffsetBelowLowest { offset: 2, lowest: 3 }), "[{}] {error}", f.name);
        assert_eq!(log.read(3).unwrap().offset, 3);
        assert_eq!(log.truncate_before(u64::MAX).unwrap(), 1);
        assert_eq!(log.segment_count(), 1, "[{}] the active segment stays", f.name);
        assert_eq!((log.lowest_offset(), log.next_offset()), (6, 7));
        assert_eq!(log.append(&b"still writable"[..]).unwrap(), 7);
        log.close().unwrap();
        let log = f.open();
        assert_eq!((log.lowest_offset(), log.highest_offset()), (6, Some(7)), "[{}]", f.name);
    }
}

#[test]
fn retention_by_bytes_and_age_keeps_the_active_segment() {
    for f in fixtures(|c| c.store_bytes_max = THREE_HELLOS) {
        let log = f.open();
        for _ in 0..9 {
            log.append(&b"hello world"[..]).unwrap();
        }
        log.append(&b"hello world"[..]).unwrap();
        assert_eq!(log.segment_count(), 4);
        let full = log.size_bytes();
        let limit = Retention { max_bytes: Some(full - 1), max_age: None };
        assert_eq!(log.retention_point(limit), Some(3), "[{}] decided, nothing dropped yet", f.name);
        assert_eq!(log.lowest_offset(), 0);
        let dropped = log.apply_retention(limit).unwrap();
        assert_eq!(dropped, 1, "[{}] one segment is enough to get under the limit", f.name);
        assert_eq!(log.lowest_offset(), 3);
        assert_eq!(log.retention_point(limit), None, "[{}] nothing more breaks it", f.name);
        let none = log.apply_retention(Retention {
            max_bytes: None,
            max_age: Some(std::time::Duration::from_secs(3600)),
        });
        assert_eq!(none.unwrap(), 0, "[{}] nothing is an hour old", f.name);
        let dropped = log.apply_retention(Retention { max_bytes: Some(0), max_age: None }).unwrap();
        assert_eq!(dropped, 2);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.lowest_offset(), 9);
    }
}

/// Appends `count` 11-byte records written at `timestamp_ms` (the entry API lets a test
/// date its records: a clock for retention by age).
fn append_dated(log: &Log, count: u64, timestamp_ms: u64) {
    use ringlog_engine::{Entry, EntryId, EntryKind};
    for _ in 0..count {
        let id = EntryId { term: 0, index: log.next_index() };
        let entry =
            Entry { id, kind: EntryKind::Data, timestamp_ms, payload: Bytes::from_static(b"hello world") };
        log.append_entries(vec![entry], |_| {}).unwrap().wait().unwrap();
    }
}

#[test]
fn retention_by_age_drops_segments_whose_newest_record_is_too_old() {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let hour = std::time::Duration::from_secs(3600);
    for f in fixtures(|c| c.store_bytes_max = THREE_HELLOS) {
        let log = f.open();
        append_dated(&log, 5, now_ms - 3 * 3_600_000); // 0-2 and 3-4: three hours old
        append_dated(&log, 1, now_ms); // 5, with 3-4: its newest record is new
        append_dated(&log, 3, now_ms - 3 * 3_600_000); // 6-8: old again, but after a new one
        assert_eq!(log.segment_count(), 3, "[{}]", f.name);
        let age = |hours| Retention { max_bytes: None, max_age: Some(hour * hours) };
        assert_eq!(log.apply_retention(age(4)).unwrap(), 0, "[{}] nothing is four hours old", f.name);
        // Dropping stops at the first segment that is young enough: retention keeps a prefix
        // order, never a hole.
        let size = log.size_bytes();
        assert_eq!(log.apply_retention(age(2)).unwrap(), 1, "[{}]", f.name);
        assert_eq!(log.lowest_offset(), 3);
        let stats = log.stats();
        assert_eq!(
            (stats.segments_dropped, stats.bytes_dropped),
            (1, size - log.size_bytes()),
            "[{}]",
            f.name
        );
        assert_eq!(log.read(3).unwrap().offset, 3);
    }
}

#[test]
fn an_idle_active_segment_is_sealed_once_its_oldest_record_is_too_old() {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let hour = std::time::Duration::from_secs(3600);
    for f in fixtures(|_| {}) {
        let log = f.open();
        log.roll_if_older(std::time::Duration::ZERO).unwrap();
        assert_eq!(log.segment_count(), 1, "[{}] an empty segment is never sealed", f.name);
        append_dated(&log, 2, now_ms - 2 * 3_600_000);
        log.roll_if_older(3 * hour).unwrap();
        assert_eq!(log.segment_count(), 1, "[{}] two hours old is young enough", f.name);
        log.roll_if_older(hour).unwrap();
        assert_eq!(log.segment_count(), 2, "[{}] sealed, and a new active segment", f.name);
        log.roll_if_older(std::time::Duration::ZERO).unwrap();
        assert_eq!(log.segment_count(), 2, "[{}] the new one is empty", f.name);
        // The sealed segment now ages out, although nothing was appended after it.
        let dropped = log.apply_retention(Retention { max_bytes: None, max_age: Some(hour) }).unwrap();
        assert_eq!((dropped, log.lowest_offset(), log.next_offset()), (1, 2, 2), "[{}]", f.name);
        assert_eq!(log.append(&b"after"[..]).unwrap(), 2);
        log.close().unwrap();
        let log = f.open();
        assert_eq!((log.lowest_offset(), log.read(2).unwrap().value), (2, Bytes::from_static(b"after")));
    }
}

#[test]
fn reader_is_a_consistent_snapshot_of_every_frame() {
    for f in fixtures(|c| c.store_bytes_max = THREE_HELLOS) {
        let log = f.open();
        let values: Vec<Bytes> = (0..7).map(|i| value(i, 11)).collect();
        for v in &values {
            log.append(v.clone()).unwrap();
        }
        let mut reader = log.reader();
        log.append(&b"after the snapshot"[..]).unwrap();
        log.truncate_before(3).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
        let bytes = Bytes::from(bytes);
        let mut entries = Vec::new();
        while entries.iter().map(|(_, len)| len).sum::<usize>() < bytes.len() {
            let at = entries.iter().map(|(_, len)| len).sum::<usize>();
            entries.push(ringlog_engine::record::decode(&bytes.slice(at..), u32::MAX).unwrap());
        }
        assert_eq!(entries.len(), 7, "[{}]", f.name);
        for (i, (entry, _)) in entries.iter().enumerate() {
            assert_eq!((entry.id.index, &entry.payload), (i as u64, &values[i]));
        }
    }
}

#[test]
fn many_threads_append_at_once_with_unique_contiguous_offsets() {
    for f in fixtures(|c| c.store_bytes_max = 64 << 10) {
        let log = f.open();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .map(|i| (log.append(value(t * 1000 + i, 50)).unwrap(), t * 1000 + i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(u64, u64)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort();
        assert_eq!(all.len(), 4000);
        for (i, (offset, id)) in all.iter().enumerate() {
            assert_eq!(*offset, i as u64, "[{}]", f.name);
            assert_eq!(log.read(*offset).unwrap().value, value(*id, 50));
        }
        assert!(log.stats().writes < 4000, "[{}] group commit batched some appends", f.name);
    }
}

#[test]
fn many_async_tasks_append_without_blocking_a_single_threaded_runtime() {
    // On a current-thread runtime a blocking append would deadlock: every task must await.
    let f = fixtures(|_| {}).remove(0);
    let log = f.open();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let offsets = runtime.block_on(async {
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.submit(vec![value(i, 20)]).unwrap().await.unwrap() })
            })
            .collect();
        let mut offsets = Vec::new();
        for task in tasks {
            offsets.push(task.await.unwrap());
        }
        offsets
    });
    let mut sorted = offsets.clone();
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<u64>>());
}

#[test]
fn a_waiting_reader_is_woken_by_an_append_and_not_before() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        log.append(&b"first"[..]).unwrap();
        let waiter = {
            let log = log.clone();
            std::thread::spawn(move || log.wait_for_blocking(1, None))
        };
        // Nothing is appended yet: the waiter must still be parked, however long we look.
        assert!(!waiter.is_finished());
        let before = log.stats().waiter_wakeups;
        log.append(&b"second"[..]).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), Some(2), "[{}]", f.name);
        assert!(log.stats().waiter_wakeups - before <= 1, "[{}] one append, at most one wakeup", f.name);
        assert_eq!(log.wait_for_blocking(0, None).unwrap(), Some(2), "already there: no wait");
    }
}

#[test]
fn async_waiters_are_woken_and_closing_releases_them() {
    let f = fixtures(|_| {}).remove(0);
    let log = f.open();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let waiter = tokio::spawn({
            let log = log.clone();
            async move { log.wait_for(0).await }
        });
        tokio::task::yield_now().await;
        log.submit(vec![Bytes::from_static(b"x")]).unwrap().await.unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), 1);
        let waiter = tokio::spawn({
            let log = log.clone();
            async move { log.wait_for(5).await }
        });
        tokio::task::yield_now().await;
        log.close().unwrap();
        assert!(matches!(waiter.await.unwrap(), Err(Error::Closed)));
    });
}

#[test]
fn closed_log_rejects_appends_and_close_trims_the_index() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        log.append(&b"a"[..]).unwrap();
        log.append(&b"b"[..]).unwrap();
        log.close().unwrap();
        assert!(matches!(log.append(&b"c"[..]), Err(Error::Closed)));
        assert_eq!(f.read_file(&index_name(0)).len(), 32 + 2 * 8, "[{}]", f.name);
    }
}

#[test]
fn durable_offset_covers_every_acknowledged_append_with_durability_always() {
    for f in fixtures(|c| c.durability = ringlog_engine::Durability::Always) {
        let log = Arc::new(f.open());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let offset = log.append(value(t * 100 + i, 100)).unwrap();
                        assert!(log.durable_offset() > offset, "acknowledged before durable");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = log.stats();
        assert!(stats.syncs >= 1);
        assert!(stats.syncs < 400, "[{}] syncs are group commits", f.name);
        assert_eq!(stats.sync_latency_buckets.iter().sum::<u64>(), stats.syncs, "every sync is in a bucket");
    }
}

#[test]
fn config_that_cannot_work_is_rejected_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |config: Config| match Log::open(dir.path(), config) {
        Err(Error::InvalidConfig(why)) => why,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    assert!(bad(Config { index_bytes_max: 39, ..Config::default() }).contains("index_bytes_max"));
    assert!(bad(Config { store_bytes_max: 100, ..Config::default() }).contains("store_bytes_max"));
    assert!(bad(Config { store_bytes_max: 1 << 33, ..Config::default() }).contains("store_bytes_max"));
}

#[test]
fn remove_deletes_every_file_and_a_reopen_starts_empty() {
    // proglog's Reset always fails: it deletes the directory, then lists it.
    for f in fixtures(|c| c.store_bytes_max = THREE_HELLOS) {
        let log = f.open();
        for _ in 0..7 {
            log.append(&b"hello world"[..]).unwrap();
        }
        log.remove().unwrap();
        assert!(f.file_names().is_empty(), "[{}] left {:?}", f.name, f.file_names());
        let log = f.open();
        assert_eq!((log.lowest_offset(), log.next_offset(), log.highest_offset()), (0, 0, None));
        assert_eq!(log.append(&b"fresh"[..]).unwrap(), 0, "[{}]", f.name);
    }
}

#[test]
fn large_groups_round_trip_through_every_write_path() {
    // Groups of 64 KiB and more go through io_uring's ring (several chunks in flight past
    // 256 KiB); smaller ones are plain writes. Pipelined submits make groups of both.
    for f in fixtures(|_| {}) {
        let log = f.open();
        let batches: Vec<Vec<Bytes>> = (0..6u64)
            .map(|b| (0..(b + 1) * 100).map(|i| value(b * 1000 + i, 1000 + (i as usize % 7))).collect())
            .collect();
        let tickets: Vec<_> = batches.iter().map(|batch| log.submit(batch.clone()).unwrap()).collect();
        let firsts: Vec<u64> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
        for (batch, first) in batches.iter().zip(firsts) {
            for (i, v) in batch.iter().enumerate() {
                assert_eq!(&log.read(first + i as u64).unwrap().value, v, "[{}]", f.name);
            }
        }
        log.close().unwrap();
        assert_eq!(f.open().next_offset(), 2100, "[{}]", f.name);
    }
}

#[test]
fn with_durability_always_readers_never_see_a_record_a_power_loss_could_erase() {
    use ringlog_engine::{Backend, Durability, SimDisk, SimFault};
    let disk = SimDisk::new();
    let config = Config {
        durability: Durability::Always,
        backend: Backend::Simulated(disk.clone()),
        ..Config::default()
    };
    let log = Log::open("/always", config.clone()).unwrap();
    log.append(&b"durable"[..]).unwrap();
    // The next record is written, but its fdatasync fails: it is not durable.
    disk.inject(SimFault::Sync { after: 0, errno: libc::EIO });
    assert!(log.append(&b"lost"[..]).is_err());
    assert_eq!(log.read(0).unwrap().value, Bytes::from_static(b"durable"));
    assert!(
        matches!(log.read(1), Err(Error::OffsetNotWritten { offset: 1, next: 1 })),
        "a record written but never synced is not delivered"
    );
    assert_eq!(log.read_from(0, 10, usize::MAX).unwrap().len(), 1);
    // After a power loss the offset is empty (or holds another record): a reader that saw
    // "lost" would have seen a record that never existed.
    let crashed = disk.crash();
    drop(log);
    let log = Log::open("/always", Config { backend: Backend::Simulated(crashed), ..config }).unwrap();
    assert_eq!(log.next_offset(), 1);
}

/// A blocking append may run the appender on its caller's thread when the appender is
/// idle; it must never overtake a request its caller (or anyone) queued before it. Each
/// thread queues two records without waiting, then appends a third and blocks: the third
/// must land after the first two, and every record must read back as written.
#[test]
fn a_blocking_append_never_overtakes_records_queued_before_it() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        std::thread::scope(|scope| {
            for thread in 0..4u8 {
                let log = &log;
                let name = f.name;
                scope.spawn(move || {
                    for round in 0..200u32 {
                        let tag = |n: u8| Bytes::from(format!("{thread}/{round}/{n}"));
                        let first = log.submit(vec![tag(0)]).unwrap();
                        let second = log.submit(vec![tag(1)]).unwrap();
                        let third = log.append(tag(2)).unwrap();
                        let (first, second) = (first.wait().unwrap(), second.wait().unwrap());
                        assert!(first < second && second < third, "[{name}] {first} {second} {third}");
                        for (offset, n) in [(first, 0), (second, 1), (third, 2)] {
                            assert_eq!(log.read(offset).unwrap().value, tag(n), "[{name}] offset {offset}");
                        }
                    }
                });
            }
        });
        assert_eq!(log.next_offset(), 4 * 200 * 3, "[{}]", f.name);
    }
}

/// `writeback_bytes`: with `None` and `Interval` durability the appender starts the
/// writeback of a store each time that many more bytes of it are written, in whole 64 KiB
/// blocks it has written, from the segment's start on (what is left for a sync is less
/// than `writeback_bytes` and a block); with `Always`, which syncs every group, none.
#[test]
fn writeback_starts_after_every_writeback_bytes_in_whole_blocks_already_written() {
    const BLOCK: u64 = 64 << 10;
    let every = 2 * BLOCK;
    let hour_ms = 3_600_000;
    for durability in
        [Durability::None, Durability::Interval { interval_ms: hour_ms, bytes: u64::MAX }, Durability::Always]
    {
        for f in fixtures(|c| {
            c.durability = durability;
            c.writeback_bytes = every;
            c.store_bytes_max = 1 << 20;
        }) {
            let log = f.open();
            let batch = vec![Bytes::from(vec![7u8; 1000]); 10];
            for _ in 0..300 {
                log.append_batch(batch.clone()).unwrap();
            }
            assert_eq!(log.read(2999).unwrap().value, batch[0], "[{}]", f.name);
            log.close().unwrap();
            let Some(sim) = f.sim() else { continue };
            let writebacks = sim.writebacks();
            if durability == Durability::Always {
                assert_eq!(writebacks, [], "[{durability:?}]");
                continue;
            }
            let stores: Vec<String> =
                f.file_names().into_iter().filter(|name| name.ends_with(".store")).collect();
            assert!(stores.len() >= 3, "[{durability:?}] {} segments", stores.len());
            // Each store's writebacks run from 0 without a gap, up to near its end.
            for name in &stores {
                let len = f.read_file(name).len() as u64;
                let mut end = 0;
                for w in writebacks.iter().filter(|w| w.path.file_name().is_some_and(|n| n == name.as_str()))
                {
                    assert_eq!(w.from, end, "[{durability:?}] {w:?}: a gap or an overlap");
                    assert_eq!(w.to % BLOCK, 0, "[{durability:?}] {w:?} not in blocks");
                    assert!(w.to - w.from >= every, "[{durability:?}] {w:?} shorter than writeback_bytes");
                    assert!(w.to <= w.file_len, "[{durability:?}] {w:?} past what was written");
                    end = w.to;
                }
                assert!(
                    end + every + BLOCK > len,
                    "[{durability:?}] {name}: writeback up to {end} of {len} bytes"
                );
            }
            assert!(
                writebacks.iter().all(|w| w.path.extension().is_some_and(|e| e == "store")),
                "[{durability:?}] only stores are written back: {writebacks:?}"
            );
        }
    }
}

/// `read_each` lends exactly the records `read_from` returns, under the same limits (a
/// record count, a byte budget that always lets one record through, a segment's end), and
/// fails the same way outside the log.
#[test]
fn read_each_lends_what_read_from_returns_with_the_same_limits_and_errors() {
    for f in fixtures(|c| c.store_bytes_max = 32 + 40 * (32 + 20)) {
        let log = f.open();
        let values: Vec<Bytes> = (0..100u8).map(|i| Bytes::from(vec![i; usize::from(i % 20) + 1])).collect();
        for batch in values.chunks(7) {
            log.append_batch(batch.to_vec()).unwrap();
        }
        assert!(log.segment_count() > 2, "[{}] the reads cross segments", f.name);
        // Values are 1 + offset % 20 bytes and frames 32 bytes more: 100 bytes from offset 13
        // hold two frames (46 + 47); a byte budget of 0 still lets one record through.
        for (offset, max_records, max_bytes, count) in [
            (0, usize::MAX, usize::MAX, None),
            (0, 5, usize::MAX, Some(5)),
            (13, usize::MAX, 100, Some(2)),
            (57, 3, 0, Some(1)),
            (99, 10, 1 << 20, Some(1)),
        ] {
            let returned = log.read_from(offset, max_records, max_bytes).unwrap();
            let mut lent = Vec::new();
            let after = log
                .read_each(offset, max_records, max_bytes, |r| {
                    lent.push(ringlog_engine::Record {
                        offset: r.offset,
                        timestamp_ms: r.timestamp_ms,
                        value: Bytes::copy_from_slice(r.value),
                    })
                })
                .unwrap();
            assert_eq!(
                lent, returned,
                "[{}] from {offset}, {max_records} records, {max_bytes} bytes",
                f.name
            );
            assert_eq!(after, returned.last().unwrap().offset + 1, "[{}]", f.name);
            if let Some(count) = count {
                assert_eq!(lent.len(), count, "[{}] from {offset}", f.name);
            }
            for r in &lent {
                assert_eq!(r.value, values[r.offset as usize], "[{}] offset {}", f.name, r.offset);
            }
        }
        let mut lent = 0;
        let past = log.read_each(100, 1, 0, |_| lent += 1).unwrap_err();
        assert!(matches!(past, Error::OffsetNotWritten { offset: 100, next: 100 }), "[{}] {past}", f.name);
        log.truncate_before(90).unwrap();
        let lowest = log.lowest_offset();
        assert!(lowest > 0, "[{}] whole segments below 90 are gone", f.name);
        let below = log.read_each(lowest - 1, 1, 0, |_| lent += 1).unwrap_err();
        assert!(matches!(below, Error::OffsetBelowLowest { .. }), "[{}] {below}", f.name);
        assert_eq!(lent, 0, "[{}] a failed read lends nothing", f.name);
    }
}

/// With `Interval` durability a sync comes `interval_ms` after the last one even while
/// writebacks keep reaching the syncer (they restarted its wait once, so that a steady
/// writer got syncs from the byte threshold only). The deadline is a watchdog, not a
/// measure: the sync is due after 50 ms.
#[test]
fn interval_syncs_keep_their_timer_while_writebacks_arrive() {
    for f in fixtures(|c| {
        c.durability = Durability::Interval { interval_ms: 50, bytes: u64::MAX };
        c.writeback_bytes = 64 << 10;
    }) {
        let log = f.open();
        let batch = vec![Bytes::from(vec![3u8; 1000]); 70]; // a writeback job per batch
        let start = std::time::Instant::now();
        while log.durable_offset() == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "[{}] no interval sync while appending",
                f.name
            );
            log.append_batch(batch.clone()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        log.close().unwrap();
    }
}

/// A writeback that fails poisons the log, as a failed sync does: the kernel may have
/// dropped the pages it could not write, and a later sync would succeed without them.
#[test]
fn a_failed_writeback_poisons_the_log_so_no_later_sync_claims_the_dropped_pages() {
    let hour_ms = 3_600_000;
    for durability in [Durability::None, Durability::Interval { interval_ms: hour_ms, bytes: u64::MAX }] {
        for f in fixtures(|c| {
            c.durability = durability;
            c.writeback_bytes = 64 << 10;
        }) {
            let Some(sim) = f.sim() else { continue };
            sim.inject(SimFault::Writeback { after: 0, errno: libc::EIO });
            let log = f.open();
            let batch = vec![Bytes::from(vec![3u8; 1000]); 70];
            // The first 64 KiB start a writeback, which fails (on the syncer's thread with
            // `Interval`: appends are refused from when it has).
            let start = std::time::Instant::now();
            while log.append_batch(batch.clone()).is_ok() {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "[{durability:?}] the log was never poisoned"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let synced = log.sync().unwrap_err();
            assert!(synced.to_string().contains("writeback"), "[{durability:?}] {synced}");
            assert_eq!(log.durable_offset(), 0, "[{durability:?}]");
            assert!(log.close().is_err(), "[{durability:?}] close reports the poison");
        }
    }
}
