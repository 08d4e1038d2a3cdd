//! A published workload, run on ringlog next to other Rust logs:
//!
//! open a fresh log in a new directory, append 10,000 records of 100 bytes in batches of
//! 100, one `fdatasync` at the end, read all 10,000 back (checking the bytes), close.
//!
//! - `fresh_log_10k_100B`: the whole workload per iteration on ringlog (each backend),
//!   `raft-engine` (tikv), `commitlog` (zowens) and a raw file (`BufWriter` of
//!   length-prefixed records, `sync_data`, `BufReader`): the floor, ratio 1.00.
//! - `fresh_log_10k_100B_ringlog_steps`: where ringlog's time goes: open of a fresh
//!   directory, the 10,000 appends into a fresh log and into one that already holds 10,000
//!   records, the sync, the read-back and the close, each timed alone.
//!
//! Directory creation and removal are outside the timed part. Values are distinct
//! pseudo-random bytes, so no member gains from compressing them.
//!
//! Two things the other crates do that matter here (both in their 0.4.2 and 0.2.0
//! releases): `raft_engine::Engine::sync()` returns at once when given nothing to write
//! (`Engine::write` skips an empty batch), so the raft-engine member asks for the sync
//! with its last batch (`write(batch, true)`), which is how raft-engine users sync; and
//! `commitlog::CommitLog::flush()` msyncs the index but only calls `File::flush` (a no-op)
//! on the segment, and never syncs the directory that it created the segment in (a power
//! loss can take the new file with every byte in it), so the commitlog member also
//! `fdatasync`s the segment file and syncs the directory, as ringlog does.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use commitlog::{
    CommitLog, LogOptions, ReadLimit,
    message::{MessageBuf, MessageSet},
};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use raft_engine::{Engine, LogBatch, MessageExt, ReadableSize};
use raft_proto::eraftpb::Entry;
use ringlog_benches::backends;
use ringlog_engine::{Backend, Config, Durability, Log};

const RECORDS: usize = 10_000;
const BATCH: usize = 100;
const SIZE: usize = 100;
/// Bytes ringlog reads per `read_from` call.
const READ_BYTES: usize = 1 << 20;

/// The 10,000 values: distinct, incompressible, the same for every member.
fn values() -> Vec<Bytes> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..RECORDS)
        .map(|_| {
            let value: Vec<u8> = (0..SIZE)
                .map(|_| {
                    // xorshift64
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            Bytes::from(value)
        })
        .collect()
}

/// Runs `one` `iters` times, each in a new temporary directory, and adds up the durations
/// it reports; creating and removing the directories is not counted.
fn each_in_fresh_dir(iters: u64, mut one: impl FnMut(&Path) -> Duration) -> Duration {
    (0..iters)
        .map(|_| {
            let dir = tempfile::tempdir().expect("temp dir");
            let took = one(dir.path());
            drop(dir);
            took
        })
        .sum()
}

fn ringlog_config(backend: &Backend) -> Config {
    Config { durability: Durability::None, backend: backend.clone(), ..Config::default() }
}

fn ringlog_append(log: &Log, values: &[Bytes]) {
    for batch in values.chunks(BATCH) {
        log.append_batch(batch.to_vec()).expect("append");
    }
}

/// Reads back every record from `first` on and checks it against `values`, with the read
/// that lends each record's bytes (as commitlog's does) rather than one that returns them.
fn ringlog_read_back(log: &Log, first: u64, values: &[Bytes]) {
    let mut offset = first;
    let end = first + values.len() as u64;
    while offset < end {
        offset = log
            .read_each(offset, usize::MAX, READ_BYTES, |record| {
                if record.offset < end {
                    let expected = &values[(record.offset - first) as usize][..];
                    assert_eq!(record.value, expected, "offset {}", record.offset);
                }
            })
            .expect("read");
    }
    assert_eq!(offset, end);
}

fn ringlog_workload(dir: &Path, backend: &Backend, values: &[Bytes]) {
    let log = Log::open(dir, ringlog_config(backend)).expect("open");
    ringlog_append(&log, values);
    log.sync().expect("sync");
    ringlog_read_back(&log, 0, values);
    log.close().expect("close");
}

/// raft-engine's entry type: the raft-rs `Entry` (term, index, bytes).
struct RaftEntries;

impl MessageExt for RaftEntries {
    type Entry = Entry;

    fn index(entry: &Entry) -> u64 {
        entry.index
    }
}

fn raft_engine_workload(dir: &Path, values: &[Bytes], compression: bool) {
    const REGION: u64 = 1;
    let mut config =
        raft_engine::Config { dir: dir.to_str().expect("utf-8 dir").to_owned(), ..Default::default() };
    if !compression {
        config.batch_compression_threshold = ReadableSize(0);
    }
    let engine = Engine::open(config).expect("open");
    let batches = values.len().div_ceil(BATCH);
    for (i, chunk) in values.chunks(BATCH).enumerate() {
        let first = (i * BATCH) as u64 + 1;
        let entries: Vec<Entry> = chunk
            .iter()
            .zip(first..)
            .map(|(value, index)| Entry { index, term: 1, data: value.clone(), ..Entry::default() })
            .collect();
        let mut batch = LogBatch::with_capacity(BATCH);
        batch.add_entries::<RaftEntries>(REGION, &entries).expect("add");
        // `Engine::sync()` skips an empty batch (no fdatasync), so the last write syncs.
        engine.write(&mut batch, i + 1 == batches).expect("write");
    }
    let mut read = Vec::with_capacity(values.len());
    let n = engine
        .fetch_entries_to::<RaftEntries>(REGION, 1, values.len() as u64 + 1, None, &mut read)
        .expect("fetch");
    assert_eq!(n, values.len());
    for (i, (entry, value)) in read.iter().zip(values).enumerate() {
        assert_eq!(entry.index, i as u64 + 1);
        assert_eq!(&entry.data, value, "index {}", entry.index);
    }
    drop(engine);
}

fn commitlog_workload(dir: &Path, values: &[Bytes]) {
    let mut log = CommitLog::new(LogOptions::new(dir)).expect("open");
    for chunk in values.chunks(BATCH) {
        let mut buf: MessageBuf = chunk.iter().collect();
        log.append(&mut buf).expect("append");
    }
    log.flush().expect("flush");
    // `flush` does not fdatasync the segment (it calls `File::flush`), and nothing syncs
    // the directory entry of the new segment; do both here.
    File::open(dir.join(format!("{:020}.log", 0))).expect("segment").sync_data().expect("fdatasync");
    File::open(dir).expect("directory").sync_all().expect("fsync directory");
    let mut offset = 0u64;
    while offset < values.len() as u64 {
        let messages = log.read(offset, ReadLimit::max_bytes(READ_BYTES)).expect("read");
        assert!(!messages.is_empty(), "nothing read at {offset}");
        for message in messages.iter() {
            assert_eq!(message.offset(), offset);
            assert_eq!(message.payload(), &values[offset as usize][..], "offset {offset}");
            offset += 1;
        }
    }
    drop(log);
}

fn raw_file_workload(dir: &Path, values: &[Bytes]) {
    let path = dir.join("raw.log");
    let file = File::options().create_new(true).read(true).write(true).open(&path).expect("create");
    let mut writer = BufWriter::with_capacity(64 << 10, file);
    for chunk in values.chunks(BATCH) {
        for value in chunk {
            writer.write_all(&(value.len() as u32).to_le_bytes()).expect("write");
            writer.write_all(value).expect("write");
        }
    }
    let file = writer.into_inner().expect("flush");
    file.sync_data().expect("fdatasync");
    let mut reader = BufReader::with_capacity(64 << 10, File::open(&path).expect("open"));
    let mut value = vec![0u8; SIZE];
    for expected in values {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).expect("read");
        let len = u32::from_le_bytes(len) as usize;
        value.resize(len, 0);
        reader.read_exact(&mut value).expect("read");
        assert_eq!(&value[..], &expected[..]);
    }
    drop((reader, file));
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn workload(c: &mut Criterion) {
    let values = values();
    let backends = backends();

    let mut group = c.benchmark_group("fresh_log_10k_100B");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.bench_function("raw_file", |b| {
        b.iter_custom(|iters| each_in_fresh_dir(iters, |dir| timed(|| raw_file_workload(dir, &values))))
    });
    for (name, backend) in &backends {
        group.bench_function(format!("ringlog/{name}"), |b| {
            b.iter_custom(|iters| {
                each_in_fresh_dir(iters, |dir| timed(|| ringlog_workload(dir, backend, &values)))
            })
        });
    }
    group.bench_function("raft-engine", |b| {
        b.iter_custom(|iters| {
            each_in_fresh_dir(iters, |dir| timed(|| raft_engine_workload(dir, &values, true)))
        })
    });
    group.bench_function("raft-engine/no_compression", |b| {
        b.iter_custom(|iters| {
            each_in_fresh_dir(iters, |dir| timed(|| raft_engine_workload(dir, &values, false)))
        })
    });
    group.bench_function("commitlog", |b| {
        b.iter_custom(|iters| each_in_fresh_dir(iters, |dir| timed(|| commitlog_workload(dir, &values))))
    });
    group.finish();
}

fn ringlog_steps(c: &mut Criterion) {
    let values = values();
    let backends = backends();

    let mut group = c.benchmark_group("fresh_log_10k_100B_ringlog_steps");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(1500));
    for (name, backend) in &backends {
        let open = |dir: &Path| Log::open(dir, ringlog_config(backend)).expect("open");
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/open_fresh_dir"), |b| {
            b.iter_custom(|iters| {
                each_in_fresh_dir(iters, |dir| {
                    let start = Instant::now();
                    let log = open(dir);
                    let took = start.elapsed();
                    log.close().expect("close");
                    took
                })
            })
        });
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_function(format!("{name}/append_10k_fresh"), |b| {
            b.iter_custom(|iters| {
                each_in_fresh_dir(iters, |dir| {
                    let log = open(dir);
                    let took = timed(|| ringlog_append(&log, &values));
                    log.close().expect("close");
                    took
                })
            })
        });
        group.bench_function(format!("{name}/append_10k_after_10k"), |b| {
            b.iter_custom(|iters| {
                each_in_fresh_dir(iters, |dir| {
                    let log = open(dir);
                    ringlog_append(&log, &values);
                    let took = timed(|| ringlog_append(&log, &values));
                    log.close().expect("close");
                    took
                })
            })
        });
        group.bench_function(format!("{name}/read_10k"), |b| {
            b.iter_custom(|iters| {
                each_in_fresh_dir(iters, |dir| {
                    let log = open(dir);
                    ringlog_append(&log, &values);
                    log.sync().expect("sync");
                    let took = timed(|| ringlog_read_back(&log, 0, &values));
                    log.close().expect("close");
                    took
                })
            })
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/sync_after_10k"), |b| {
            b.iter_custom(|iters| {
                each_in_fresh_dir(iters, |dir| {
                    let log = open(dir);
                    ringlog_append(&log, &values);
                    let took = timed(|| log.sync().expect("sync"));
                    log.close().expect("close");
                    took
                })
            })
        });
        group.bench_function(format!("{name}/close_after_sync"), |b| {
            b.iter_custom(|iters| {
                each_in_fresh_dir(iters, |dir| {
                    let log = open(dir);
                    ringlog_append(&log, &values);
                    log.sync().expect("sync");
                    timed(|| log.close().expect("close"))
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, workload, ringlog_steps);
criterion_main!(benches);
