//! The rules of the model-based test, shared by the proptest (`tests/model.rs`) and the
//! `log_model` fuzz target (`fuzz/fuzz_targets/log_model.rs`, which includes this file by
//! path): an op sequence runs against a log on the simulated disk and a `Vec` model. The
//! disk is as hostile as Linux (see `SimDisk`): a crash keeps, loses or tears each unsynced
//! page of every store and index file, keeps the durable or written size, and keeps or
//! undoes unsynced directory operations; a failed sync is reported once and drops its pages.
//! After any crash (anywhere, right after a roll, after dropping segments, right after a
//! failed sync) the log must hold a prefix of what was appended that includes every record
//! acknowledged as durable, each intact, and must accept appends. Injected write and sync
//! errors poison the log (or, for a full disk, fail the append alone) without losing
//! anything acknowledged.
#![allow(dead_code)]

use std::path::Path;

use bytes::Bytes;
use ringlog_engine::{Backend, Config, Durability, Error, Log, SimDisk, SimFault};

/// Which image a crash leaves (see `SimDisk`).
#[derive(Clone, Copy, Debug)]
pub enum CrashKind {
    /// Only what was synced: `SimDisk::crash`.
    Durable,
    /// In-order writeback up to one torn page: `SimDisk::crash_torn`.
    InOrder,
    /// Any mix of kept, lost and torn pages and directory operations: `SimDisk::crash_seeded`.
    Any,
}

/// What happens just before a crash.
#[derive(Clone, Copy, Debug)]
pub enum CrashPoint {
    /// Nothing: the crash comes after the previous op.
    Now,
    /// Appends until the log rolls to a new segment.
    Roll,
    /// Drops every sealed segment (`truncate_before` the next offset).
    Truncate,
    /// A sync fails once: appends one record and syncs with the fault armed.
    FailedSync,
}

/// One step of a test.
#[derive(Clone, Debug)]
pub enum Op {
    Append(Vec<u16>),
    Read(usize),
    ReadFrom(usize, usize),
    Reopen,
    Sync,
    TruncateBefore(usize),
    Crash { after: CrashPoint, kind: CrashKind, seed: u64 },
    Fault { sync: bool, after: u64, errno: i32 },
}

/// The value of the `n`th record appended, `len` bytes long.
pub fn payload(n: u64, len: u16) -> Bytes {
    Bytes::from((0..len).map(|i| (n as u8).wrapping_mul(31).wrapping_add(i as u8)).collect::<Vec<u8>>())
}

struct Model {
    /// Records `lowest..lowest + values.len()`.
    values: Vec<Bytes>,
    lowest: u64,
    appended: u64,
    /// Records of failed appends: each may or may not be in the log (a write that
    /// failed is cut; a sync that failed leaves the written records readable).
    maybe: Vec<Bytes>,
}

impl Model {
    fn next(&self) -> u64 {
        self.lowest + self.values.len() as u64
    }
    fn get(&self, offset: u64) -> &Bytes {
        &self.values[(offset - self.lowest) as usize]
    }

    /// After a reopen or crash: the log ends at `next`; adopt the failed records it kept.
    fn settle(&mut self, next: u64) {
        let known = self.next();
        assert!(next <= known + self.maybe.len() as u64, "invented records: next {next}");
        if next >= known {
            let kept = (next - known) as usize;
            self.values.extend(self.maybe.drain(..).take(kept));
        } else {
            self.values.truncate((next.saturating_sub(self.lowest)) as usize);
            self.lowest = self.lowest.min(next);
        }
        self.maybe.clear();
    }
}

fn open(disk: &SimDisk, durability: Durability) -> Log {
    let config = Config {
        store_bytes_max: 400,
        index_bytes_max: 32 + 8 * 6,
        record_bytes_max: 100,
        durability,
        backend: Backend::Simulated(disk.clone()),
        ..Config::default()
    };
    Log::open(Path::new("/model"), config).expect("the log always reopens")
}

fn check_all(log: &Log, model: &Model) {
    assert_eq!(log.next_offset(), model.next());
    assert_eq!(log.lowest_offset(), model.lowest);
    for offset in model.lowest..model.next() {
        assert_eq!(&log.read(offset).unwrap().value, model.get(offset), "offset {offset}");
    }
}

/// A log under test, its disk and its model.
struct Runner {
    disk: SimDisk,
    log: Log,
    durability: Durability,
    model: Model,
    faults_armed: bool,
}

impl Runner {
    fn append(&mut self, lens: &[u16]) {
        let model = &mut self.model;
        let values: Vec<Bytes> = lens
            .iter()
            .map(|&len| {
                model.appended += 1;
                payload(model.appended, len)
            })
            .collect();
        match self.log.append_batch(values.clone()) {
            Ok(first) => {
                assert!(model.maybe.is_empty(), "an append succeeded after an unsettled failure");
                assert_eq!(first, model.next());
                if self.durability == Durability::Always {
                    assert!(self.log.durable_offset() >= first + values.len() as u64);
                }
                model.values.extend(values);
            }
            Err(Error::BatchTooLarge { .. }) => assert!(lens.len() > 3, "a batch this small fits"),
            // Nothing of it was kept. (The log may still be poisoned, by a background
            // interval sync that failed meanwhile.)
            Err(Error::DiskFull { .. }) => {}
            Err(error) => {
                assert!(self.log.poisoned().is_some(), "every other append failure poisons: {error}");
                model.maybe.extend(values);
            }
        }
    }

    fn truncate_before(&mut self, i: usize) {
        let model = &mut self.model;
        let span = model.values.len() + 1;
        let offset = model.lowest + (i % span) as u64;
        self.log.truncate_before(offset).unwrap();
        let lowest = self.log.lowest_offset();
        assert!(lowest >= model.lowest && lowest <= offset.max(model.lowest));
        model.values.drain(..(lowest - model.lowest) as usize);
        model.lowest = lowest;
    }

    fn crash(&mut self, after: CrashPoint, kind: CrashKind, seed: u64) {
        match after {
            CrashPoint::Now => {}
            CrashPoint::Roll => {
                // A few records fill a segment; a full disk or a poison may stop the roll.
                let segments = self.log.segment_count();
                for _ in 0..8 {
                    if self.log.segment_count() > segments || self.log.poisoned().is_some() {
                        break;
                    }
                    self.append(&[60]);
                }
            }
            CrashPoint::Truncate => self.truncate_before(usize::MAX),
            CrashPoint::FailedSync => {
                self.disk.inject(SimFault::Sync { after: 0, errno: libc::EIO });
                self.append(&[10]);
                let _ = self.log.sync();
            }
        }
        let durable = self.log.durable_offset();
        let image = match kind {
            CrashKind::Durable => self.disk.crash(),
            CrashKind::InOrder => self.disk.crash_torn(seed),
            CrashKind::Any => self.disk.crash_seeded(seed),
        };
        self.faults_armed = false;
        self.disk = image;
        self.log = open(&self.disk, self.durability);
        let next = self.log.next_offset();
        assert!(
            next >= durable,
            "lost durable records: next {next} < durable {durable} ({after:?}, {kind:?})"
        );
        self.model.settle(next);
        check_all(&self.log, &self.model);
    }
}

/// Runs `ops`; with `deferred_writes` the simulated disk completes appends only when the
/// log waits for them, as io_uring does, which covers the appender's pipelined path.
pub fn run(durability: Durability, deferred_writes: bool, ops: Vec<Op>) {
    let disk = SimDisk::new();
    disk.defer_writes(deferred_writes);
    let log = open(&disk, durability);
    let model = Model { values: Vec::new(), lowest: 0, appended: 0, maybe: Vec::new() };
    let mut r = Runner { disk, log, durability, model, faults_armed: false };
    for op in ops {
        match op {
            Op::Append(lens) => r.append(&lens),
            Op::Read(i) => {
                let model = &r.model;
                let span = model.values.len() + 2;
                let offset = model.lowest.saturating_sub(1) + (i % span) as u64;
                match r.log.read(offset) {
                    Ok(record) if offset >= model.next() => {
                        assert_eq!(record.value, model.maybe[(offset - model.next()) as usize]);
                    }
                    Ok(record) => assert_eq!(&record.value, model.get(offset)),
                    Err(Error::OffsetNotWritten { .. }) => assert!(offset >= model.next()),
                    Err(Error::OffsetBelowLowest { .. }) => assert!(offset < model.lowest),
                    Err(other) => panic!("read {offset}: {other}"),
                }
            }
            Op::ReadFrom(i, n) => {
                let model = &r.model;
                if model.values.is_empty() {
                    continue;
                }
                let offset = model.lowest + (i % model.values.len()) as u64;
                let records = r.log.read_from(offset, n, usize::MAX).unwrap();
                assert!(!records.is_empty() && records.len() <= n);
                for (k, record) in records.iter().enumerate() {
                    assert_eq!(record.offset, offset + k as u64);
                    if record.offset < model.next() {
                        assert_eq!(&record.value, model.get(record.offset));
                    }
                }
            }
            Op::Reopen => {
                let closed = r.log.close();
                assert!(closed.is_ok() || r.faults_armed, "close failed with no fault injected: {closed:?}");
                r.disk.clear_faults();
                r.faults_armed = false;
                r.log = open(&r.disk, durability);
                r.model.settle(r.log.next_offset());
                check_all(&r.log, &r.model);
            }
            Op::Sync => {
                if r.log.sync().is_ok() {
                    assert!(r.log.durable_offset() >= r.model.next());
                }
            }
            Op::Fault { sync, after, errno } => {
                r.faults_armed = true;
                r.disk.inject(if sync {
                    SimFault::Sync { after, errno }
                } else {
                    SimFault::Write { after, errno }
                });
            }
            Op::TruncateBefore(i) => r.truncate_before(i),
            Op::Crash { after, kind, seed } => r.crash(after, kind, seed),
        }
    }
    // However it ended, the log reopens writable and consistent.
    let Runner { disk, log, model, .. } = r;
    drop(log);
    disk.clear_faults();
    let log = open(&disk, durability);
    let mut model = model;
    model.settle(log.next_offset());
    let offset = log.append(&b"last"[..]).unwrap();
    assert_eq!(offset, model.next());
    check_all(&log, &Model { values: [model.values, vec![Bytes::from_static(b"last")]].concat(), ..model });
}
