//! Reads. Each group asks one question next to a raw baseline that reads the same bytes
//! from the page cache with no log logic:
//!
//! - `read_sequential_1KiB`: how fast does a consumer scan the log? Baseline: the store
//!   files read in 64 KiB `pread`s.
//! - `read_random_1KiB`: how fast are reads by offset? Baseline: one `pread` of the frame
//!   at a position known in advance.
//! - `append_to_follower_latency`: how long from an append until a waiting follower has
//!   the record? Baseline: waking a parked thread through a channel.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    sync::mpsc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringlog_benches::{RawWriter, full_matrix, measurement_time};
use ringlog_engine::{Config, Log, record};

const SIZE: usize = 1024;

fn filled_log(records: u64) -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), Config { store_bytes_max: 64 << 20, ..Config::default() }).expect("open");
    let value = Bytes::from(vec![7u8; SIZE]);
    for _ in 0..records / 100 {
        log.append_batch(vec![value.clone(); 100]).expect("append");
    }
    (dir, log)
}

fn store_files(dir: &std::path::Path) -> Vec<File> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "store"))
        .collect();
    paths.sort();
    paths.into_iter().map(|p| File::open(p).expect("store")).collect()
}

fn reads(c: &mut Criterion) {
    let records: u64 = if full_matrix() { 400_000 } else { 100_000 };
    let (dir, log) = filled_log(records);
    let frame = record::frame_len(SIZE) as u64;

    let mut group = c.benchmark_group("read_sequential_1KiB");
    group.throughput(Throughput::Elements(records));
    group.sample_size(10).measurement_time(measurement_time());
    group.bench_function("raw_pread_64KiB", |b| {
        let files = store_files(dir.path());
        let mut buf = vec![0u8; 64 << 10];
        b.iter(|| {
            let mut total = 0u64;
            for file in &files {
                let mut position = 0;
                loop {
                    let n = file.read_at(&mut buf, position).expect("pread");
                    if n == 0 {
                        break;
                    }
                    position += n as u64;
                    total += n as u64;
                }
            }
            std::hint::black_box(total)
        })
    });
    group.bench_function("engine_read_from_64KiB_batches", |b| {
        b.iter(|| {
            let mut offset = log.lowest_offset();
            while offset < log.next_offset() {
                let batch = log.read_from(offset, usize::MAX, 64 << 10).expect("read");
                offset += batch.len() as u64;
            }
            std::hint::black_box(offset)
        })
    });
    group.bench_function("engine_read_one_by_one", |b| {
        b.iter(|| {
            for offset in 0..log.next_offset() {
                std::hint::black_box(log.read(offset).expect("read"));
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("read_random_1KiB");
    let lookups = 10_000u64;
    group.throughput(Throughput::Elements(lookups));
    group.sample_size(10).measurement_time(measurement_time());
    // The same pseudo-random offsets for both members.
    let offsets: Vec<u64> = (0..lookups).map(|i| (i * 2_654_435_761) % records).collect();
    group.bench_function("raw_pread_known_position", |b| {
        // The same frames in one file, where a frame's position is `offset * frame`.
        let raw_dir = tempfile::tempdir().expect("temp dir");
        RawWriter::create(raw_dir.path()).append(records, &[7u8; SIZE]);
        let file = File::open(raw_dir.path().join("raw")).expect("raw file");
        let mut buf = vec![0u8; frame as usize];
        b.iter(|| {
            for &offset in &offsets {
                file.read_exact_at(&mut buf, offset * frame).expect("pread");
            }
        })
    });
    group.bench_function("engine_read", |b| {
        b.iter(|| {
            for &offset in &offsets {
                std::hint::black_box(log.read(offset).expect("read"));
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("append_to_follower_latency");
    group.sample_size(20).measurement_time(measurement_time());
    group.bench_function("raw_thread_wakeup_via_channel", |b| {
        b.iter_custom(|iters| {
            let (to_follower, follower_rx) = mpsc::channel::<Instant>();
            let (to_main, main_rx) = mpsc::channel::<Duration>();
            let follower = std::thread::spawn(move || {
                for sent in follower_rx {
                    to_main.send(sent.elapsed()).expect("send");
                }
            });
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                to_follower.send(Instant::now()).expect("send");
                total += main_rx.recv().expect("recv");
            }
            drop(to_follower);
            follower.join().expect("follower");
            total
        })
    });
    group.bench_function("engine_wait_for_then_read", |b| {
        b.iter_custom(|iters| {
            let (to_main, main_rx) = mpsc::channel::<Instant>();
            let first = log.next_offset();
            let follower_log = log.clone();
            let follower = std::thread::spawn(move || {
                for offset in first..first + iters {
                    follower_log.wait_for_blocking(offset, None).expect("wait");
                    std::hint::black_box(follower_log.read(offset).expect("read"));
                    to_main.send(Instant::now()).expect("send");
                }
            });
            let mut total = Duration::ZERO;
            let value = Bytes::from(vec![1u8; SIZE]);
            for _ in 0..iters {
                let start = Instant::now();
                let _ticket = log.submit(vec![value.clone()]).expect("submit");
                total += main_rx.recv().expect("recv").duration_since(start);
            }
            follower.join().expect("follower");
            total
        })
    });
    group.finish();
    log.close().expect("close");
}

criterion_group!(benches, reads);
criterion_main!(benches);
