//! `recovery_on_open`: how long does opening a log take after the process was killed?
//! The log is first left without a close (no index trim, no final sync), as a SIGKILL
//! would. Opening always scans the whole active segment and checks the last record of each
//! sealed one, so it does the same work after a clean close; each measured open is
//! therefore followed by an unmeasured close (which releases the files). Members: the
//! default open, and `verify_on_open` (every record's CRC). Baseline: reading every store
//! byte and computing its CRC32C, with no log logic.

use std::{fs::File, os::unix::fs::FileExt, time::Duration};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringlog_benches::full_matrix;
use ringlog_engine::{Config, Log};

fn recovery(c: &mut Criterion) {
    let log_bytes: u64 = if full_matrix() { 1 << 30 } else { 256 << 20 };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config { store_bytes_max: 128 << 20, ..Config::default() };
    {
        let log = Log::open(dir.path(), config.clone()).expect("open");
        let value = Bytes::from(vec![3u8; 1024]);
        while log.size_bytes() < log_bytes {
            log.append_batch(vec![value.clone(); 256]).expect("append");
        }
        // An unclean stop: no close.
        std::mem::forget(log);
    }
    let mut group = c.benchmark_group(format!("recovery_on_open_{}MiB", log_bytes >> 20));
    group.throughput(Throughput::Bytes(log_bytes));
    group.sample_size(10).measurement_time(Duration::from_secs(if full_matrix() { 30 } else { 10 }));
    group.bench_function("raw_read_and_crc32c", |b| {
        let mut buf = vec![0u8; 1 << 20];
        b.iter(|| {
            let mut crc = 0;
            for entry in std::fs::read_dir(dir.path()).expect("dir") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "store") {
                    let file = File::open(path).expect("store");
                    let mut position = 0;
                    loop {
                        let n = file.read_at(&mut buf, position).expect("pread");
                        if n == 0 {
                            break;
                        }
                        crc = crc32c::crc32c_append(crc, &buf[..n]);
                        position += n as u64;
                    }
                }
            }
            std::hint::black_box(crc)
        })
    });
    for (name, verify) in [("open_default", false), ("open_verify_every_record", true)] {
        let config = Config { verify_on_open: verify, ..config.clone() };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut opening = Duration::ZERO;
                for _ in 0..iters {
                    let start = std::time::Instant::now();
                    let log = Log::open(dir.path(), config.clone()).expect("open");
                    opening += start.elapsed();
                    log.close().expect("close");
                }
                opening
            })
        });
    }
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
