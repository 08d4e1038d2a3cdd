//! A fixed append workload to profile with `perf record` (criterion's groups are in
//! `benches/`). Usage: `append_profile [pwrite|io_uring] [record bytes] [records] [batch]`.
use bytes::Bytes;
use ringlog_benches::drive_engine;
use ringlog_engine::{Backend, Config, Log};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = match args.get(1).map(String::as_str) {
        Some("io_uring") => Backend::IoUring,
        _ => Backend::Pwrite,
    };
    let arg = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (size, records, batch) = (arg(2, 100) as usize, arg(3, 2_000_000), arg(4, 1) as usize);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), Config { backend, ..Config::default() }).expect("open");
    let value = Bytes::from(vec![1u8; size]);
    let start = std::time::Instant::now();
    drive_engine(&log, 1, 256, batch, records, &value);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{records} records of {size} B in batches of {batch}: {:.0} records/s, {:.1} MB/s, {} writes",
        records as f64 / secs,
        records as f64 * size as f64 / secs / 1e6,
        log.stats().writes
    );
}
