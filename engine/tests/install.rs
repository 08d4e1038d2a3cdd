//! Shipping a log's entries as store files and installing them on another log
//! (`Log::files_through`, `Log::stage_install`, `Staging::install`): the receiver ends up
//! with the sender's entries, offsets and purge point, keeps its vote, and goes on from
//! there; a damaged or incomplete shipment is refused with the log untouched; and a failure
//! or power loss at any write or sync of an install leaves, after reopening, either the old
//! log or the new one, never a mix.

use std::path::Path;

use bytes::Bytes;
use ringlog_engine::{
    Backend, Config, Durability, Entry, EntryId, EntryKind, Error, Log, LogFiles, SimDisk, SimFault,
};

fn config(disk: &SimDisk) -> Config {
    Config {
        store_bytes_max: 400,
        index_bytes_max: 32 + 8 * 16,
        record_bytes_max: 100,
        durability: Durability::Always,
        backend: Backend::Simulated(disk.clone()),
        ..Config::default()
    }
}

fn entry(term: u64, index: u64, kind: EntryKind) -> Entry {
    let payload = match kind {
        EntryKind::Data => Bytes::from(format!("t{term}-i{index}")),
        _ => Bytes::new(),
    };
    Entry { id: EntryId { term, index }, kind, timestamp_ms: 1_000 + index, payload }
}

fn append(log: &Log, entries: Vec<Entry>) {
    log.append_entries(entries, |_| {}).unwrap().wait().unwrap();
    log.sync().unwrap();
}

/// A sender: 60 entries over several segments (a blank and a membership entry among them,
/// terms 1 to 3), the first 14 purged.
fn sender() -> (SimDisk, Log) {
    let disk = SimDisk::new();
    let log = Log::open(Path::new("/sender"), config(&disk)).unwrap();
    let kind = |i: u64| match i {
        0 | 20 => EntryKind::Blank,
        21 | 40 => EntryKind::Membership,
        _ => EntryKind::Data,
    };
    let term = |i: u64| 1 + i / 20;
    append(&log, (0..60).map(|i| entry(term(i), i, kind(i))).collect());
    log.purge(EntryId { term: 1, index: 13 }).unwrap();
    (disk, log)
}

/// A receiver: a log with a vote and entries of its own that the install replaces.
fn receiver(disk: &SimDisk) -> Log {
    let log = Log::open(Path::new("/receiver"), config(disk)).unwrap();
    log.save_vote(Bytes::from_static(b"my vote")).unwrap();
    append(&log, (0..30).map(|i| entry(1, i, EntryKind::Data)).collect());
    log
}

/// Copies `files` into a staging of `to`, `chunk` bytes at a time.
fn ship(files: &LogFiles, to: &Log, chunk: usize) -> ringlog_engine::Staging {
    let mut staging = to.stage_install().unwrap();
    for (i, part) in files.parts().iter().enumerate() {
        staging.begin_part(part.first_index).unwrap();
        let mut at = 0;
        while at < part.len {
            let mut buf = vec![0; chunk.min((part.len - at) as usize)];
            files.read(i, at, &mut buf).unwrap();
            staging.write(&buf).unwrap();
            at += buf.len() as u64;
        }
    }
    staging
}

fn entries(log: &Log) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut next = log.first_index();
    loop {
        let batch = log.read_entries(next, u64::MAX, usize::MAX).unwrap();
        let Some(last) = batch.last() else { return out };
        next = last.id.index + 1;
        out.extend(batch);
    }
}

/// What a reader of `log` sees: entries, the offset of each index, the purge point.
fn state(log: &Log) -> (Vec<Entry>, Vec<u64>, Option<EntryId>) {
    let offsets = (log.first_index()..log.next_index()).map(|i| log.offset_of_index(i)).collect();
    (entries(log), offsets, log.meta().purged)
}

#[test]
fn the_receiver_gets_the_senders_entries_offsets_and_purge_point_and_keeps_its_vote() {
    let (_sender_disk, sender) = sender();
    let files = sender.files_through(47).unwrap();
    assert_eq!(
        (files.before, files.last),
        (Some(EntryId { term: 1, index: 13 }), EntryId { term: 3, index: 47 })
    );
    assert!(files.parts().len() > 1, "{files:?}");
    let disk = SimDisk::new();
    let log = receiver(&disk);
    for chunk in [7, 4096] {
        ship(&files, &log, chunk).install(files.before, files.last, files.next_offset).unwrap();
        let (got, offsets, purged) = state(&log);
        let expected: Vec<Entry> = entries(&sender).into_iter().filter(|e| e.id.index <= 47).collect();
        assert_eq!(got, expected, "chunks of {chunk}");
        let sender_offsets: Vec<u64> = (14..48).map(|i| sender.offset_of_index(i)).collect();
        assert_eq!((offsets, purged), (sender_offsets, Some(EntryId { term: 1, index: 13 })));
        assert_eq!(log.meta().vote.as_deref(), Some(&b"my vote"[..]));
        assert_eq!(log.read(log.lowest_offset()).unwrap().value, Bytes::from("t1-i14"));
    }
    // It goes on from the last entry, and all of it survives a reopen.
    append(&log, vec![entry(3, 48, EntryKind::Data), entry(4, 49, EntryKind::Blank)]);
    let before = state(&log);
    log.close().unwrap();
    let log = Log::open(Path::new("/receiver"), config(&disk)).unwrap();
    assert_eq!(state(&log), before);
    assert_eq!(log.next_offset(), sender.offset_of_index(49));
}

#[test]
fn a_replica_whose_read_limit_lags_the_install_reads_nothing_below_the_new_first_entry() {
    let (_sender_disk, sender) = sender();
    let files = sender.files_through(47).unwrap();
    let disk = SimDisk::new();
    let log = receiver(&disk);
    // A replica's readers stop at its applied mark, which moves only after the install.
    log.set_read_limit(5);
    ship(&files, &log, 4096).install(files.before, files.last, files.next_offset).unwrap();
    let first = sender.offset_of_index(14);
    assert_eq!((log.lowest_offset(), log.readable_offset()), (first, first));
    log.set_read_limit(48);
    assert_eq!(log.readable_offset(), sender.offset_of_index(48));
    assert_eq!(log.read(first).unwrap().value, Bytes::from("t1-i14"));
}

#[test]
fn one_staging_at_a_time_and_one_never_installed_leaves_nothing_behind() {
    let (_sender_disk, sender) = sender();
    let files = sender.files_through(47).unwrap();
    let disk = SimDisk::new();
    let log = receiver(&disk);
    let staged = ship(&files, &log, 4096);
    // A second stream for the same log (a leader that gave up on the first) must wait.
    let error = log.stage_install().unwrap_err();
    assert!(matches!(error, Error::Snapshot(_)), "{error}");
    let staged_files =
        || disk.paths().into_iter().filter(|p| p.to_string_lossy().contains("install")).count();
    assert!(staged_files() > 0);
    drop(staged);
    assert_eq!(staged_files(), 0, "an abandoned staging removes its files");
    ship(&files, &log, 4096).install(files.before, files.last, files.next_offset).unwrap();
    assert_eq!(log.first_index(), 14);
}

#[test]
fn a_damaged_or_incomplete_shipment_is_refused_and_the_log_is_untouched() {
    let (_sender_disk, sender) = sender();
    let files = sender.files_through(47).unwrap();
    let disk = SimDisk::new();
    let log = receiver(&disk);
    let untouched = state(&log);

    // A flipped bit in a frame.
    let mut staging = log.stage_install().unwrap();
    for (i, part) in files.parts().iter().enumerate() {
        staging.begin_part(part.first_index).unwrap();
        let mut bytes = vec![0; part.len as usize];
        files.read(i, 0, &mut bytes).unwrap();
        if i == 1 {
            bytes[40] ^= 1;
        }
        staging.write(&bytes).unwrap();
    }
    let error = staging.install(files.before, files.last, files.next_offset).unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error}");
    assert_eq!(state(&log), untouched);

    // Entries missing at the end (the last id says 47, the parts stop at 30), and parts
    // that do not start after the entry before.
    let short = sender.files_through(30).unwrap();
    let error = ship(&short, &log, 4096).install(short.before, files.last, short.next_offset).unwrap_err();
    assert!(matches!(error, Error::Snapshot(_)), "{error}");
    let error = ship(&files, &log, 4096)
        .install(Some(EntryId { term: 1, index: 12 }), files.last, files.next_offset)
        .unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error}");
    assert_eq!(state(&log), untouched);
    // The staged files of failed attempts never count: the log reopens as it was.
    log.close().unwrap();
    let log = Log::open(Path::new("/receiver"), config(&disk)).unwrap();
    assert_eq!(state(&log), untouched);
    // The next staging clears what they left.
    drop(log.stage_install().unwrap());
    let left: Vec<_> = disk.paths().into_iter().filter(|p| p.to_string_lossy().contains("install")).collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Runs an install on a fresh receiver with `fault` injected once staging is done; returns
/// the disk and whether the install reported success.
fn install_with(fault: SimFault, files: &LogFiles) -> (SimDisk, bool) {
    let disk = SimDisk::new();
    let log = receiver(&disk);
    let staging = ship(files, &log, 4096);
    disk.inject(fault);
    let installed = staging.install(files.before, files.last, files.next_offset).is_ok();
    disk.clear_faults();
    drop(log);
    (disk, installed)
}

#[test]
fn a_failure_or_power_loss_at_any_write_or_sync_of_an_install_leaves_the_old_log_or_the_new() {
    let (_sender_disk, sender) = sender();
    let files = sender.files_through(47).unwrap();
    let old = {
        let disk = SimDisk::new();
        state(&receiver(&disk))
    };
    let new = {
        let disk = SimDisk::new();
        let log = receiver(&disk);
        ship(&files, &log, 4096).install(files.before, files.last, files.next_offset).unwrap();
        state(&log)
    };
    let (mut saw_old, mut saw_new, mut finished_on_open) = (0, 0, 0);
    // Every write and sync of the install fails in turn, until the install runs past them all.
    for after in 0.. {
        assert!(after < 200, "an install of a few files does not take 200 writes");
        let mut reached = false;
        for fault in [SimFault::Write { after, errno: libc::EIO }, SimFault::Sync { after, errno: libc::EIO }]
        {
            let (disk, installed) = install_with(fault, &files);
            reached |= !installed;
            let mut images = vec![("reopened".to_owned(), disk.clone()), ("crash".to_owned(), disk.crash())];
            for seed in 0..4 {
                images.push((format!("crash_seeded({seed})"), disk.crash_seeded(seed)));
                images.push((format!("crash_torn({seed})"), disk.crash_torn(seed)));
            }
            for (name, image) in images {
                let log = Log::open(Path::new("/receiver"), config(&image))
                    .unwrap_or_else(|e| panic!("{fault:?}, {name}: the log does not reopen: {e}"));
                let got = state(&log);
                assert!(
                    got == old || got == new,
                    "{fault:?}, {name}: neither the old log nor the new: {got:?}"
                );
                if installed {
                    assert!(got == new, "{fault:?}, {name}: an install that returned Ok was lost");
                }
                assert_eq!(log.meta().vote.as_deref(), Some(&b"my vote"[..]), "{fault:?}, {name}");
                if got == new && !installed && name == "reopened" {
                    finished_on_open += 1;
                }
                if got == new {
                    saw_new += 1;
                } else {
                    saw_old += 1;
                }
                log.close().unwrap();
            }
        }
        if !reached {
            break;
        }
    }
    assert!(saw_old > 0 && saw_new > 0, "both outcomes occur: old {saw_old}, new {saw_new}");
    assert!(finished_on_open > 0, "an install that failed after its commit is finished by the next open");
}
