//! A fixed append workload to profile with `perf record` or to try settings quickly
//! (criterion's groups are in `benches/`). Usage:
//! `append_profile BACKEND SIZE RECORDS BATCH BATCH_BYTES_MAX DURABILITY APPENDERS WINDOW
//! WRITEBACK_BYTES` with BACKEND `pwrite|io_uring` and DURABILITY `none|always`; every
//! argument is optional. WINDOW 0 appends with the blocking `Log::append_batch` instead of
//! tickets; WRITEBACK_BYTES sets `Config::writeback_bytes` (0: the kernel's writeback only).

use ringlog_benches::{backend_named, drive_engine, static_value};
use ringlog_engine::{Config, Durability, Log};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = backend_named(args.get(1).map(String::as_str));
    let arg = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (size, records, batch) = (arg(2, 100) as usize, arg(3, 2_000_000), arg(4, 1) as usize);
    let batch_bytes_max = arg(5, Config::default().batch_bytes_max as u64) as usize;
    let durability = match args.get(6).map(String::as_str) {
        Some("always") => Durability::Always,
        _ => Durability::None,
    };
    let (appenders, window) = (arg(7, 1) as usize, arg(8, 256) as usize);
    let writeback_bytes = arg(9, Config::default().writeback_bytes);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config { backend, batch_bytes_max, durability, writeback_bytes, ..Config::default() };
    let log = Log::open(dir.path(), config).expect("open");
    let value = static_value(size);
    let start = std::time::Instant::now();
    drive_engine(&log, appenders, window, batch, records, &value);
    let secs = start.elapsed().as_secs_f64();
    let stats = log.stats();
    // The close syncs what the appends left unsynced: counted separately, since a log that
    // leaves writeback to the kernel defers that work past the appends.
    log.close().expect("close");
    let with_close = start.elapsed().as_secs_f64();
    println!(
        "{records} records of {size} B, batches of {batch}, {appenders} appenders x {window} in flight: \
         {:.0} records/s, {:.1} MB/s, {} writes, {} syncs ({:.2} ms each); with the close: {:.0} records/s",
        records as f64 / secs,
        records as f64 * size as f64 / secs / 1e6,
        stats.writes,
        stats.syncs,
        stats.sync_nanos as f64 / stats.syncs.max(1) as f64 / 1e6,
        records as f64 / with_close,
    );
}
