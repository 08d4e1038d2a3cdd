//! The rules of the model-based test, shared by the proptest (`tests/model.rs`) and the
//! `log_model` fuzz target (`fuzz/fuzz_targets/log_model.rs`, which includes this file by
//! path): an op sequence runs against a log on the simulated disk and a `Vec` model. After
//! any crash the log must hold a prefix of what was appended that includes every record
//! acknowledged as durable, and must accept appends. Injected write and sync errors poison
//! the log (or, for a full disk, fail the append alone) without losing anything
//! acknowledged.
#![allow(dead_code)]

use std::path::Path;

use bytes::Bytes;
use ringlog_engine::{Backend, Config, Durability, Error, Log, SimDisk, SimFault};

/// One step of a test.
#[derive(Clone, Debug)]
pub enum Op {
    Append(Vec<u16>),
    Read(usize),
    ReadFrom(usize, usize),
    Reopen,
    Sync,
    TruncateBefore(usize),
    Crash { torn: bool, seed: u64 },
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

/// Runs `ops`; with `deferred_writes` the simulated disk completes appends only when the
/// log waits for them, as io_uring does, which covers the appender's pipelined path.
pub fn run(durability: Durability, deferred_writes: bool, ops: Vec<Op>) {
    let mut disk = SimDisk::new();
    disk.defer_writes(deferred_writes);
    let mut log = open(&disk, durability);
    let mut faults_armed = false;
    let mut model = Model { values: Vec::new(), lowest: 0, appended: 0, maybe: Vec::new() };
    for op in ops {
        match op {
            Op::Append(lens) => {
                let values: Vec<Bytes> = lens
                    .iter()
                    .map(|&len| {
                        model.appended += 1;
                        payload(model.appended, len)
                    })
                    .collect();
                match log.append_batch(values.clone()) {
                    Ok(first) => {
                        assert!(model.maybe.is_empty(), "an append succeeded after an unsettled failure");
                        assert_eq!(first, model.next());
                        if durability == Durability::Always {
                            assert!(log.durable_offset() >= first + values.len() as u64);
                        }
                        model.values.extend(values);
                    }
                    Err(Error::BatchTooLarge { .. }) => assert!(lens.len() > 3, "a batch this small fits"),
                    // Nothing of it was kept. (The log may still be poisoned, by a background
                    // interval sync that failed meanwhile.)
                    Err(Error::DiskFull { .. }) => {}
                    Err(error) => {
                        assert!(log.poisoned().is_some(), "every other append failure poisons: {error}");
                        model.maybe.extend(values);
                    }
                }
            }
            Op::Read(i) => {
                let span = model.values.len() + 2;
                let offset = model.lowest.saturating_sub(1) + (i % span) as u64;
                match log.read(offset) {
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
                if model.values.is_empty() {
                    continue;
                }
                let offset = model.lowest + (i % model.values.len()) as u64;
                let records = log.read_from(offset, n, usize::MAX).unwrap();
                assert!(!records.is_empty() && records.len() <= n);
                for (k, record) in records.iter().enumerate() {
                    assert_eq!(record.offset, offset + k as u64);
                    if record.offset < model.next() {
                        assert_eq!(&record.value, model.get(record.offset));
                    }
                }
            }
            Op::Reopen => {
                let closed = log.close();
                assert!(closed.is_ok() || faults_armed, "close failed with no fault injected: {closed:?}");
                disk.clear_faults();
                faults_armed = false;
                log = open(&disk, durability);
                model.settle(log.next_offset());
                check_all(&log, &model);
            }
            Op::Sync => {
                if log.sync().is_ok() {
                    assert!(log.durable_offset() >= model.next());
                }
            }
            Op::Fault { sync, after, errno } => {
                faults_armed = true;
                disk.inject(if sync {
                    SimFault::Sync { after, errno }
                } else {
                    SimFault::Write { after, errno }
                });
            }
            Op::TruncateBefore(i) => {
                let span = model.values.len() + 1;
                let offset = model.lowest + (i % span) as u64;
                log.truncate_before(offset).unwrap();
                let lowest = log.lowest_offset();
                assert!(lowest >= model.lowest && lowest <= offset.max(model.lowest));
                model.values.drain(..(lowest - model.lowest) as usize);
                model.lowest = lowest;
            }
            Op::Crash { torn, seed } => {
                let durable = log.durable_offset();
                let image = if torn { disk.crash_torn(seed) } else { disk.crash() };
                faults_armed = false;
                drop(log);
                disk = image;
                log = open(&disk, durability);
                let next = log.next_offset();
                assert!(next >= durable, "lost durable records: next {next} < durable {durable}");
                model.settle(next);
                check_all(&log, &model);
            }
        }
    }
    // However it ended, the log reopens writable and consistent.
    drop(log);
    disk.clear_faults();
    let log = open(&disk, durability);
    model.settle(log.next_offset());
    let offset = log.append(&b"last"[..]).unwrap();
    assert_eq!(offset, model.next());
    check_all(&log, &Model { values: [model.values, vec![Bytes::from_static(b"last")]].concat(), ..model });
}
