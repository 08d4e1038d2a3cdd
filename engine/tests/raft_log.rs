//! The log as a Raft log store, on every backend: entries at the positions the caller
//! chose, two-stage completion, suffix truncation, purge, the metadata file, and record
//! offsets that skip the non-data entries.

mod common;

use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;
use common::{Fixture, fixtures, store_name};
use ringlog_engine::{Durability, Entry, EntryId, EntryKind, Error, Log};

fn entry(term: u64, index: u64, kind: EntryKind) -> Entry {
    let payload = Bytes::from(format!("t{term}-i{index}"));
    Entry { id: EntryId { term, index }, kind, timestamp_ms: 1_000 + index, payload }
}

fn data(term: u64, index: u64) -> Entry {
    entry(term, index, EntryKind::Data)
}

/// Appends and waits for both completions; returns the durable callback's result.
fn append(log: &Log, entries: Vec<Entry>) -> ringlog_engine::Result<()> {
    let (tx, rx) = mpsc::channel();
    log.append_entries(entries, move |result| drop(tx.send(result)))?.wait()?;
    rx.recv().unwrap()
}

fn all_entries(log: &Log) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut start = 0;
    loop {
        let batch = log.read_entries(start, u64::MAX, usize::MAX).unwrap();
        match batch.last() {
            Some(last) => start = last.id.index + 1,
            None => return entries,
        }
        entries.extend(batch);
    }
}

/// A log of `terms`: a blank at the start of each term, then data, as Raft leaders write.
fn raft_history(log: &Log, terms: &[(u64, u64)]) -> Vec<Entry> {
    let mut written = Vec::new();
    let mut index = log.next_index();
    for &(term, records) in terms {
        let mut batch = vec![entry(term, index, EntryKind::Blank)];
        index += 1;
        for _ in 0..records {
            batch.push(data(term, index));
            index += 1;
        }
        append(log, batch.clone()).unwrap();
        written.extend(batch);
    }
    written
}

fn small_segments(f: &Fixture) -> Log {
    f.open_with(|c| {
        c.store_bytes_max = 32 + 4 * 40;
        c.record_bytes_max = 100;
    })
    .unwrap()
}

#[test]
fn entries_keep_their_index_term_and_kind_and_records_skip_the_others() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        let written = raft_history(&log, &[(1, 2), (2, 0), (3, 3)]);
        assert_eq!(all_entries(&log), written, "[{}]", f.name);
        assert_eq!(log.last_entry_id().unwrap(), Some(EntryId { term: 3, index: 7 }));
        assert_eq!((log.first_index(), log.next_index()), (0, 8));
        // Entries 0, 3 and 4 are blanks: records 0..5 are at indexes 1, 2, 5, 6, 7.
        assert_eq!((log.lowest_offset(), log.next_offset()), (0, 5), "[{}]", f.name);
        let records = log.read_from(0, 100, usize::MAX).unwrap();
        let values: Vec<_> = records.iter().map(|r| (r.offset, r.value.clone())).collect();
        let expected: Vec<_> = [1, 2, 5, 6, 7]
            .iter()
            .enumerate()
            .map(|(o, &i)| (o as u64, written[i].payload.clone()))
            .collect();
        assert_eq!(values, expected, "[{}] one read skips the blanks", f.name);
        assert_eq!(log.read(2).unwrap().value, written[5].payload, "[{}] offset 2 skips two blanks", f.name);
        let offsets: Vec<u64> = (0..8).map(|index| log.offset_of_index(index)).collect();
        assert_eq!(offsets, [0, 0, 1, 2, 2, 2, 3, 4], "[{}] a blank has the next record's offset", f.name);
        assert_eq!(log.read(4).unwrap().timestamp_ms, 1_007, "[{}] the caller's timestamp is kept", f.name);
        assert!(matches!(log.read(5), Err(Error::OffsetNotWritten { offset: 5, next: 5 })));
        // Records appended by producers continue after the entries, in the last term.
        assert_eq!(log.append(&b"produced"[..]).unwrap(), 5);
        assert_eq!(log.last_entry_id().unwrap(), Some(EntryId { term: 3, index: 8 }));
        log.close().unwrap();

        let log = f.open();
        assert_eq!(all_entries(&log)[..8], written[..], "[{}] after reopen", f.name);
        assert_eq!((log.next_offset(), log.read(5).unwrap().value), (6, Bytes::from_static(b"produced")));
    }
}

#[test]
fn entries_that_do_not_continue_the_log_are_refused_and_nothing_is_written() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        append(&log, vec![data(2, 0), data(2, 1)]).unwrap();
        let gap = append(&log, vec![data(2, 3)]).unwrap_err();
        assert!(matches!(gap, Error::InvalidEntry { index: 3, .. }), "[{}] {gap}", f.name);
        let stale = append(&log, vec![data(2, 2), data(1, 3)]).unwrap_err();
        assert!(stale.to_string().contains("term 1 is below"), "[{}] {stale}", f.name);
        assert!(matches!(append(&log, Vec::new()), Err(Error::EmptyBatch)));
        assert_eq!(log.next_index(), 2, "[{}] nothing of a refused batch is written", f.name);
        append(&log, vec![data(3, 2)]).unwrap();
        assert!(log.poisoned().is_none());
    }
}

#[test]
fn entries_are_readable_when_published_and_reported_durable_after_the_sync() {
    for f in fixtures(|c| c.durability = Durability::Always) {
        let log = f.open();
        let syncs = log.stats().syncs;
        let seen = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel();
        let (probe, seen_in_callback) = (log.clone(), Arc::clone(&seen));
        let published = log
            .append_entries(vec![data(1, 0), data(1, 1)], move |result| {
                *seen_in_callback.lock().unwrap() = Some(probe.durable_offset());
                tx.send(result).unwrap();
            })
            .unwrap();
        published.wait().unwrap();
        assert_eq!(
            log.read_entries(0, 2, usize::MAX).unwrap().len(),
            2,
            "[{}] readable once published",
            f.name
        );
        rx.recv().unwrap().unwrap();
        assert_eq!(*seen.lock().unwrap(), Some(2), "[{}] durable when the callback runs", f.name);
        assert!(log.stats().syncs > syncs);
    }
}

#[test]
fn truncate_after_removes_the_tail_inside_the_active_segment() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        let written = raft_history(&log, &[(1, 4)]);
        log.truncate_after(Some(2)).unwrap();
        assert_eq!(all_entries(&log), written[..3], "[{}]", f.name);
        assert_eq!(log.last_entry_id().unwrap(), Some(EntryId { term: 1, index: 2 }));
        assert!(matches!(log.read(2), Err(Error::OffsetNotWritten { .. })), "[{}]", f.name);
        // The conflicting entries are replaced by the new leader's.
        append(&log, vec![entry(2, 3, EntryKind::Blank), data(2, 4)]).unwrap();
        assert_eq!(log.read(2).unwrap().value, Bytes::from("t2-i4"), "[{}] offset 2 given again", f.name);
        log.close().unwrap();
        let log = f.open();
        assert_eq!(
            all_entries(&log).iter().map(|e| e.id).collect::<Vec<_>>(),
            [
                EntryId { term: 1, index: 0 },
                EntryId { term: 1, index: 1 },
                EntryId { term: 1, index: 2 },
                EntryId { term: 2, index: 3 },
                EntryId { term: 2, index: 4 },
            ]
        );
        assert_eq!(log.next_offset(), 3, "[{}] the offset map survived the truncation", f.name);
    }
}

#[test]
fn truncate_after_crosses_segments_and_the_log_goes_on_after_the_cut() {
    for f in fixtures(|_| {}) {
        let log = small_segments(&f);
        let written = raft_history(&log, &[(1, 3), (2, 3), (3, 3)]);
        assert!(log.segment_count() >= 3, "[{}] {} segments", f.name, log.segment_count());
        for keep in [9, 5, 1] {
            log.truncate_after(Some(keep)).unwrap();
            assert_eq!(all_entries(&log), written[..=keep as usize], "[{}] after {keep}", f.name);
            assert_eq!(log.next_index(), keep + 1);
        }
        let more: Vec<Entry> = (2..12).map(|i| data(4, i)).collect();
        for e in &more {
            append(&log, vec![e.clone()]).unwrap();
        }
        let expected: Vec<Entry> = written[..2].iter().chain(&more).cloned().collect();
        assert_eq!(all_entries(&log), expected, "[{}]", f.name);
        log.close().unwrap();
        let log = small_segments(&f);
        assert_eq!(all_entries(&log), expected, "[{}] after reopen", f.name);
        assert_eq!(log.next_offset(), 11, "[{}] one blank (index 0) before 11 records", f.name);
        log.truncate_after(None).unwrap();
        assert_eq!(
            (log.first_index(), log.next_index(), log.last_entry_id().unwrap()),
            (0, 0, None),
            "[{}]",
            f.name
        );
        assert!(all_entries(&log).is_empty());
    }
}

#[test]
fn a_reader_inside_a_truncated_range_never_gets_the_replacing_entries_as_old_ones() {
    for f in fixtures(|_| {}) {
        let log = small_segments(&f);
        raft_history(&log, &[(1, 8)]);
        let old = log.read_from(4, 1, 0).unwrap();
        log.truncate_after(Some(3)).unwrap();
        append(&log, (4..9).map(|i| data(2, i)).collect()).unwrap();
        let new = log.read_from(4, 1, 0).unwrap();
        assert_eq!(new[0].offset, 4);
        assert_ne!(new[0].value, old[0].value, "[{}] the offset now holds the new entry", f.name);
        assert_eq!(new[0].value, Bytes::from("t2-i5"));
    }
}

#[test]
fn purge_hides_entries_durably_and_deletes_whole_segments_below_it() {
    for f in fixtures(|_| {}) {
        let log = small_segments(&f);
        let written = raft_history(&log, &[(1, 12)]);
        let segments = log.segment_count();
        log.purge(EntryId { term: 1, index: 6 }).unwrap();
        assert_eq!(log.first_index(), 7);
        assert_eq!(all_entries(&log), written[7..], "[{}]", f.name);
        assert!(log.segment_count() < segments, "[{}] whole segments below the purge are deleted", f.name);
        assert_eq!(log.meta().purged, Some(EntryId { term: 1, index: 6 }));
        assert_eq!(log.lowest_offset(), 6, "[{}] one blank below", f.name);
        assert!(matches!(log.read(5), Err(Error::OffsetBelowLowest { lowest: 6, .. })));
        log.close().unwrap();
        let log = small_segments(&f);
        assert_eq!((log.first_index(), log.meta().purged.map(|p| p.index)), (7, Some(6)), "[{}]", f.name);
        assert_eq!(all_entries(&log), written[7..]);
        assert_eq!(log.read(6).unwrap().value, written[7].payload);
    }
}

#[test]
fn a_purge_past_the_end_empties_the_log_which_continues_after_it() {
    for f in fixtures(|_| {}) {
        let log = small_segments(&f);
        raft_history(&log, &[(1, 5)]);
        log.purge(EntryId { term: 4, index: 20 }).unwrap();
        assert_eq!(
            (log.first_index(), log.next_index(), log.last_entry_id().unwrap()),
            (21, 21, None),
            "[{}]",
            f.name
        );
        append(&log, vec![data(4, 21)]).unwrap();
        log.close().unwrap();
        let log = small_segments(&f);
        assert_eq!(all_entries(&log), vec![data(4, 21)], "[{}]", f.name);
        assert_eq!(log.segment_count(), 1);
    }
}

#[test]
fn the_vote_and_committed_id_survive_a_reopen() {
    for f in fixtures(|c| c.durability = Durability::Always) {
        let log = f.open();
        assert_eq!(log.meta(), Default::default());
        append(&log, vec![data(1, 0)]).unwrap();
        log.save_vote(Bytes::from_static(b"term 1, voted for 2")).unwrap();
        log.save_committed(Some(EntryId { term: 1, index: 0 })).unwrap();
        log.close().unwrap();
        let log = f.open();
        assert_eq!(log.meta().vote, Some(Bytes::from_static(b"term 1, voted for 2")), "[{}]", f.name);
        assert_eq!(log.meta().committed, Some(EntryId { term: 1, index: 0 }), "[{}]", f.name);
    }
}

#[test]
fn a_corrupt_metadata_file_stops_the_open_naming_it() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        log.save_vote(Bytes::from_static(b"v")).unwrap();
        log.close().unwrap();
        let mut meta = f.read_file("meta");
        meta[20] ^= 1;
        f.write_file("meta", meta);
        let error = f.open_with(|_| {}).unwrap_err();
        assert!(matches!(error, Error::Corrupt { .. }), "[{}] {error}", f.name);
        assert!(error.to_string().contains("meta") && error.to_string().contains("checksum"), "{error}");
    }
}

#[test]
fn non_data_entries_in_sealed_segments_keep_their_offsets_after_a_reopen() {
    for f in fixtures(|_| {}) {
        let log = small_segments(&f);
        raft_history(&log, &[(1, 2), (2, 2), (3, 2), (4, 2), (5, 2)]);
        let records: Vec<_> = (0..10).map(|o| log.read(o).unwrap()).collect();
        log.close().unwrap();
        let log = small_segments(&f);
        for (offset, record) in records.iter().enumerate() {
            assert_eq!(&log.read(offset as u64).unwrap(), record, "[{}] offset {offset}", f.name);
        }
        assert_eq!(log.next_offset(), 10);
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_until_the_first_closes() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        let error = f.open_with(|_| {}).unwrap_err();
        assert!(matches!(error, Error::Locked { .. }), "[{}] {error}", f.name);
        assert!(error.to_string().contains(&f.dir.display().to_string()), "{error}");
        if f.name != "simulated" {
            let pid = std::process::id().to_string();
            assert!(error.to_string().contains(&pid), "[{}] the holder's pid is named: {error}", f.name);
        }
        log.close().unwrap();
        f.open().close().unwrap();
    }
}

#[test]
fn a_version_1_log_opens_and_continues_in_version_2_segments() {
    for f in fixtures(|_| {}) {
        // A version-1 store: header version 1, frames of crc, value_len, offset, timestamp.
        let mut store = vec![0u8; 32];
        store[..8].copy_from_slice(b"RLOGSTOR");
        store[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c(&store[..28]);
        store[28..32].copy_from_slice(&crc.to_le_bytes());
        for offset in 0..3u64 {
            let mut frame = vec![0u8; 4];
            frame.extend_from_slice(&2u32.to_le_bytes());
            frame.extend_from_slice(&offset.to_le_bytes());
            frame.extend_from_slice(&7u64.to_le_bytes());
            frame.extend_from_slice(format!("v{offset}").as_bytes());
            let crc = crc32c(&frame[4..]);
            frame[..4].copy_from_slice(&crc.to_le_bytes());
            store.extend(frame);
        }
        if f.sim().is_none() {
            std::fs::create_dir_all(&f.dir).unwrap();
        }
        f.write_file(&store_name(0), store);
        let log = f.open();
        assert_eq!(log.next_offset(), 3, "[{}]", f.name);
        assert_eq!(log.read(1).unwrap().value, Bytes::from_static(b"v1"));
        assert_eq!(log.append(&b"new"[..]).unwrap(), 3);
        assert_eq!(log.segment_count(), 2, "[{}] the version-1 segment was sealed", f.name);
        log.close().unwrap();
        let log = f.open();
        assert_eq!(log.read_from(0, 10, usize::MAX).unwrap().len(), 3);
        assert_eq!(log.read(3).unwrap().value, Bytes::from_static(b"new"), "[{}]", f.name);
    }
}

fn crc32c(bytes: &[u8]) -> u32 {
    // CRC32C (Castagnoli), bitwise: the test checks the format without the engine's code.
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn age_retention_goes_by_records_not_by_raft_entries_without_a_time() {
    for f in fixtures(|_| {}) {
        let log = small_segments(&f);
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        for index in 0..12 {
            // Records carry the time; each segment ends with a blank of time 0.
            let mut e = if index % 4 == 3 { entry(1, index, EntryKind::Blank) } else { data(1, index) };
            e.timestamp_ms = if e.kind == EntryKind::Data { now } else { 0 };
            append(&log, vec![e]).unwrap();
        }
        let segments = log.segment_count();
        let retention = ringlog_engine::Retention {
            max_age: Some(std::time::Duration::from_secs(3600)),
            ..Default::default()
        };
        assert_eq!(log.apply_retention(retention).unwrap(), 0, "[{}] nothing is an hour old", f.name);
        assert_eq!(log.segment_count(), segments);
    }
}

/// A replica serves committed records only: with a read limit (its applied mark), readers
/// see nothing at or above it, and a waiting reader is woken when it moves.
#[test]
fn readers_see_only_entries_below_the_read_limit() {
    for f in fixtures(|_| {}) {
        let log = f.open();
        for i in 0..5u8 {
            log.append(vec![i]).unwrap();
        }
        log.set_read_limit(3);
        let what = format!("[{}]", f.name);
        assert_eq!(log.readable_offset(), 3, "{what}");
        assert_eq!(log.next_offset(), 5, "{what} appending is not limited");
        assert!(matches!(log.read(3), Err(Error::OffsetNotWritten { offset: 3, next: 3 })), "{what}");
        let records = log.read_from(0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2], "{what}");
        assert_eq!(log.wait_for_blocking(3, Some(std::time::Duration::ZERO)).unwrap(), None, "{what}");
        let waiter = {
            let log = log.clone();
            std::thread::spawn(move || log.wait_for_blocking(3, None))
        };
        log.set_read_limit(5);
        assert_eq!(waiter.join().unwrap().unwrap(), Some(5), "{what} woken by the limit");
        assert_eq!(log.read(4).unwrap().value, Bytes::from(vec![4u8]), "{what}");
    }
}

/// A suffix truncation below where writeback reached: the next writeback starts at the
/// block holding the cut (the bytes from there on are new), and the ranges after it follow
/// each other without a gap, inside what the store held.
#[test]
fn writeback_after_a_truncation_starts_again_below_the_cut() {
    const BLOCK: u64 = 64 << 10;
    for f in fixtures(|c| {
        c.durability = Durability::None;
        c.writeback_bytes = BLOCK;
    }) {
        let Some(sim) = f.sim() else { continue };
        let log = f.open();
        let big = |term, index| Entry {
            id: EntryId { term, index },
            kind: EntryKind::Data,
            timestamp_ms: 1,
            payload: Bytes::from(vec![term as u8; 4000]),
        };
        for first in (0..100).step_by(10) {
            append(&log, (first..first + 10).map(|index| big(1, index)).collect()).unwrap();
        }
        log.sync().unwrap(); // the appender's thread has started every writeback before this
        let before = sim.writebacks().len();
        assert!(
            sim.writebacks().last().is_some_and(|w| w.to >= 5 * BLOCK),
            "[{}] 400 KB written back",
            f.name
        );
        log.truncate_after(Some(49)).unwrap(); // about 200 KB stay
        let cut = f.read_file(&store_name(0)).len() as u64;
        for first in (50..100).step_by(10) {
            append(&log, (first..first + 10).map(|index| big(2, index)).collect()).unwrap();
        }
        log.sync().unwrap();
        let after = &sim.writebacks()[before..];
        assert_eq!(
            after.first().map(|w| w.from),
            Some(cut / BLOCK * BLOCK),
            "[{}] cut at {cut}: {after:?}",
            f.name
        );
        for pair in after.windows(2) {
            assert_eq!(pair[0].to, pair[1].from, "[{}] {after:?}", f.name);
        }
        for w in after {
            assert!(w.to <= w.file_len && w.to % BLOCK == 0, "[{}] {w:?}", f.name);
        }
        assert!(after.last().is_some_and(|w| w.to >= 5 * BLOCK), "[{}] {after:?}", f.name);
        assert_eq!(all_entries(&log).len(), 100);
    }
}
