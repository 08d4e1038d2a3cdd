//! Append throughput. Each group asks one question and runs every strategy on it next to
//! a raw baseline that writes the same frames with no log logic:
//!
//! - `append_<size>_no_fsync`: which backend, and which way of appending (closed-loop
//!   clients, one pipelined client, batches), is fastest when acknowledgement waits only
//!   for the page cache? Baseline: the frames in 64 KiB `pwrite`s from one thread.
//! - `append_<size>_fdatasync_before_ack`: what does an `fdatasync` before each group's
//!   acknowledgement cost with 1, 8 or 64 closed-loop clients? Baseline: one `pwrite` of
//!   one record per client, then `fdatasync`, repeated (perfect batching, no log logic).
//! - `append_<size>_interval_sync`: background syncing every 10 ms, one pipelined client.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringlog_benches::{RawWriter, backends, drive_engine, full_matrix, measurement_time, static_value};
use ringlog_engine::{Config, Durability, Log};

fn sizes() -> Vec<usize> {
    if full_matrix() { vec![100, 1024, 64 * 1024] } else { vec![100, 1024] }
}

fn size_name(size: usize) -> String {
    if size >= 1024 { format!("{}KiB", size / 1024) } else { format!("{size}B") }
}

/// Records per measured iteration: about 4 MiB of values, at least 64.
fn records_for(size: usize) -> u64 {
    ((4 << 20) / size as u64).clamp(64, 40_000)
}

/// Times `iters` runs of `drive` against a fresh log opened with `config`.
fn time_engine(config: &Config, iters: u64, drive: impl Fn(&Log)) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), config.clone()).expect("open");
    let start = Instant::now();
    for _ in 0..iters {
        drive(&log);
    }
    let elapsed = start.elapsed();
    log.close().expect("close");
    elapsed
}

fn no_fsync(c: &mut Criterion) {
    for size in sizes() {
        let value = static_value(size);
        let records = records_for(size);
        let mut group = c.benchmark_group(format!("append_{}_no_fsync", size_name(size)));
        group.throughput(Throughput::Elements(records));
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(measurement_time());
        group.bench_function("raw_pwrite_64KiB", |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("temp dir");
                let mut raw = RawWriter::create(dir.path());
                let start = Instant::now();
                for _ in 0..iters {
                    raw.append(records, &value);
                }
                start.elapsed()
            })
        });
        let appenders: &[usize] = if full_matrix() { &[1, 8, 64] } else { &[1, 8] };
        for (name, backend) in backends() {
            let config = Config { backend, ..Config::default() };
            for &clients in appenders {
                // Closed-loop clients are latency-bound: give them fewer records.
                let records = (records / 8).max(64);
                group.throughput(Throughput::Elements(records));
                group.bench_function(
                    BenchmarkId::new(name, format!("{clients}_closed_loop_appenders")),
                    |b| {
                        b.iter_custom(|iters| {
                            time_engine(&config, iters, |log| {
                                drive_engine(log, clients, 1, 1, records, &value)
                            })
                        })
                    },
                );
            }
            group.throughput(Throughput::Elements(records));
            group.bench_function(BenchmarkId::new(name, "pipelined_256_in_flight"), |b| {
                b.iter_custom(|iters| {
                    time_engine(&config, iters, |log| drive_engine(log, 1, 256, 1, records, &value))
                })
            });
            group.bench_function(BenchmarkId::new(name, "batches_of_64_x32_in_flight"), |b| {
                b.iter_custom(|iters| {
                    time_engine(&config, iters, |log| drive_engine(log, 1, 32, 64, records, &value))
                })
            });
        }
        group.finish();
    }
}

fn fdatasync_before_ack(c: &mut Criterion) {
    for size in sizes() {
        let value = static_value(size);
        let mut group = c.benchmark_group(format!("append_{}_fdatasync_before_ack", size_name(size)));
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(measurement_time());
        let clients_set: &[usize] = if full_matrix() { &[1, 8, 64] } else { &[1, 64] };
        for &clients in clients_set {
            // Ten sync rounds' worth of records per iteration.
            let records = (clients * 10) as u64;
            group.throughput(Throughput::Elements(records));
            group.bench_function(
                BenchmarkId::new("raw_write_then_fdatasync", format!("{clients}_clients")),
                |b| {
                    b.iter_custom(|iters| {
                        let dir = tempfile::tempdir().expect("temp dir");
                        let mut raw = RawWriter::create(dir.path());
                        let start = Instant::now();
                        for _ in 0..iters {
                            raw.append_durable(records, &value, clients);
                        }
                        start.elapsed()
                    })
                },
            );
            for (name, backend) in backends() {
                let config = Config { backend, durability: Durability::Always, ..Config::default() };
                group.bench_function(BenchmarkId::new(name, format!("{clients}_clients")), |b| {
                    b.iter_custom(|iters| {
                        time_engine(&config, iters, |log| drive_engine(log, clients, 1, 1, records, &value))
                    })
                });
            }
        }
        group.finish();
    }
}

fn interval_sync(c: &mut Criterion) {
    let size = 1024;
    let value = static_value(size);
    let records = records_for(size);
    let mut group = c.benchmark_group(format!("append_{}_interval_sync", size_name(size)));
    group.throughput(Throughput::Elements(records));
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(measurement_time());
    group.bench_function("raw_write_with_pipelined_fdatasync", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut raw = RawWriter::create(dir.path());
            let start = Instant::now();
            for _ in 0..iters {
                raw.append_durable_pipelined(records, &value);
            }
            start.elapsed()
        })
    });
    for (name, backend) in backends() {
        let durability = Durability::Interval { interval_ms: 10, bytes: 4 << 20 };
        let config = Config { backend, durability, ..Config::default() };
        group.bench_function(BenchmarkId::new(name, "pipelined_256_in_flight"), |b| {
            b.iter_custom(|iters| {
                time_engine(&config, iters, |log| {
                    drive_engine(log, 1, 256, 1, records, &value);
                    log.sync().expect("sync");
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, no_fsync, fdatasync_before_ack, interval_sync);
criterion_main!(benches);
