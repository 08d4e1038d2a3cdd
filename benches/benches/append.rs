//! Append throughput: each group asks one question and runs every backend on it, next to
//! a raw baseline that writes the same frames with no log logic.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringlog_benches::{RawWriter, drive_engine};
use ringlog_engine::{Backend, Config, Durability, Log};

fn backends() -> Vec<(&'static str, Backend)> {
    let mut backends = vec![("pwrite", Backend::Pwrite)];
    let probe = tempfile::tempdir().unwrap();
    if Log::open(probe.path(), Config { backend: Backend::IoUring, ..Config::default() }).is_ok() {
        backends.push(("io_uring", Backend::IoUring));
    }
    backends
}

/// One question: append `records` records of `size` bytes with `durability` from
/// `appenders` threads keeping `window` appends each in flight.
fn group(
    c: &mut Criterion,
    name: &str,
    size: usize,
    durability: Durability,
    appenders: usize,
    window: usize,
    records: u64,
) {
    let value = Bytes::from(vec![0xA5; size]);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(records));
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));

    group.bench_function(BenchmarkId::new("raw_baseline", size), |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let mut raw = RawWriter::create(dir.path());
            let start = Instant::now();
            for _ in 0..iters {
                match durability {
                    Durability::Always => raw.append_durable(records, &value),
                    _ => raw.append(records, &value),
                }
            }
            start.elapsed()
        })
    });
    for (backend_name, backend) in backends() {
        group.bench_function(BenchmarkId::new(backend_name, size), |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let config = Config { backend: backend.clone(), durability, ..Config::default() };
                let log = Log::open(dir.path(), config).unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    drive_engine(&log, appenders, window, records, &value);
                }
                let elapsed = start.elapsed();
                log.close().unwrap();
                elapsed
            })
        });
    }
    group.finish();
}

fn append(c: &mut Criterion) {
    group(c, "append_100B_no_fsync", 100, Durability::None, 4, 256, 100_000);
    group(c, "append_1KiB_no_fsync", 1024, Durability::None, 4, 256, 50_000);
    group(c, "append_100B_fdatasync_before_ack_64_appenders", 100, Durability::Always, 64, 1, 20_000);
    group(c, "append_1KiB_fdatasync_before_ack_64_appenders", 1024, Durability::Always, 64, 1, 20_000);
}

criterion_group!(benches, append);
criterion_main!(benches);
