//! Times each step of the `fresh_log` bench's workload on ringlog (open a fresh directory,
//! 10,000 appends of 100 B in batches of 100, sync, read back, close; then, on a second
//! log, 10,000 appends into a log that already holds 10,000 records) and prints, per step,
//! the median time, minor page faults and context switches (process-wide `getrusage`),
//! and for the two append steps the mean time of one batch early and late in the step.
//! `writeback=BYTES` sets `Config::writeback_bytes` (`writeback=0`: no writeback before the
//! sync but the kernel's). With `mark`, each step is announced on stderr first, so an
//! `strace -f -T` of the program shows which system calls belong to which step:
//!
//! ```sh
//! cargo run --release -p ringlog-benches --example fresh_log_steps -- pwrite 200
//! strace -f -T -o trace.txt target/release/examples/fresh_log_steps pwrite 3 mark
//! cargo run --release -p ringlog-benches --example fresh_log_steps -- pwrite 200 writeback=0
//! ```

use std::{
    io::Write,
    time::{Duration, Instant},
};

use bytes::Bytes;
use ringlog_benches::backend_named;
use ringlog_engine::{Config, Durability, Log};

/// The workload's steps, then (on a second log) 10,000 appends into a log that already
/// holds 10,000 records.
const STEPS: [&str; 7] =
    ["open", "append_10k", "sync", "read_10k", "close", "open_2nd_log", "append_10k_after_10k"];
/// Batches are grouped into these ranges for the per-batch times.
const BATCH_RANGES: [(usize, usize); 4] = [(0, 1), (1, 10), (10, 50), (50, 100)];

#[derive(Clone, Copy, Default)]
struct Sample {
    time: Duration,
    minor_faults: i64,
    voluntary_switches: i64,
    involuntary_switches: i64,
}

fn usage() -> libc::rusage {
    // SAFETY: getrusage writes one `rusage` into the zeroed value it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

fn median<T: Copy + Ord>(mut values: Vec<T>) -> T {
    values.sort();
    values[values.len() / 2]
}

/// Appends 100 batches and returns each batch's time.
fn append_10k(log: &Log, batch: &[Bytes]) -> Vec<Duration> {
    (0..100)
        .map(|_| {
            let start = Instant::now();
            log.append_batch(batch.to_vec()).expect("append");
            start.elapsed()
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = backend_named(args.get(1).map(String::as_str));
    let runs: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100);
    let options = args.get(3..).unwrap_or_default();
    let mark = options.iter().any(|a| a == "mark");
    let writeback_bytes = options
        .iter()
        .find_map(|a| a.strip_prefix("writeback=")?.parse().ok())
        .unwrap_or(Config::default().writeback_bytes);
    let value = Bytes::from(vec![0xA5u8; 100]);
    let batch = vec![value; 100];
    let config = Config {
        durability: Durability::None,
        backend: backend.clone(),
        writeback_bytes,
        ..Config::default()
    };
    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(runs); STEPS.len()];
    // per append step, per batch: the time of each run
    let mut batches: [Vec<Vec<Duration>>; 2] = [vec![Vec::new(); 100], vec![Vec::new(); 100]];
    for _ in 0..runs {
        let dir = tempfile::tempdir().expect("temp dir");
        let steady_dir = tempfile::tempdir().expect("temp dir");
        let mut step = 0;
        let mut time = |f: &mut dyn FnMut()| {
            if mark {
                std::io::stderr().write_all(format!("== {}\n", STEPS[step]).as_bytes()).expect("stderr");
            }
            let before = usage();
            let start = Instant::now();
            f();
            let time = start.elapsed();
            let after = usage();
            samples[step].push(Sample {
                time,
                minor_faults: after.ru_minflt - before.ru_minflt,
                voluntary_switches: after.ru_nvcsw - before.ru_nvcsw,
                involuntary_switches: after.ru_nivcsw - before.ru_nivcsw,
            });
            step += 1;
        };
        let mut log = None;
        time(&mut || log = Some(Log::open(dir.path(), config.clone()).expect("open")));
        let log = log.expect("opened");
        let mut fresh = Vec::new();
        time(&mut || fresh = append_10k(&log, &batch));
        time(&mut || log.sync().expect("sync"));
        time(&mut || {
            let mut offset = 0;
            while offset < 10_000 {
                offset = log
                    .read_each(offset, usize::MAX, 1 << 20, |record| assert_eq!(record.value, &batch[0][..]))
                    .expect("read");
            }
        });
        time(&mut || log.close().expect("close"));
        let mut second = None;
        time(&mut || second = Some(Log::open(steady_dir.path(), config.clone()).expect("open")));
        let second = second.expect("opened");
        append_10k(&second, &batch);
        let mut steady = Vec::new();
        time(&mut || steady = append_10k(&second, &batch));
        second.close().expect("close");
        if mark {
            std::io::stderr().write_all(b"== end\n").expect("stderr");
        }
        for (step, times) in [fresh, steady].into_iter().enumerate() {
            for (i, t) in times.into_iter().enumerate() {
                batches[step][i].push(t);
            }
        }
    }
    println!("backend {} runs {runs}: medians per step", args.get(1).map_or("pwrite", String::as_str));
    println!("{:>22} {:>10} {:>12} {:>10} {:>10}", "step", "ms", "minor_flt", "vol_csw", "invol_csw");
    for (name, step) in STEPS.iter().zip(samples) {
        println!(
            "{name:>22} {:>10.3} {:>12} {:>10} {:>10}",
            median(step.iter().map(|s| s.time).collect()).as_secs_f64() * 1e3,
            median(step.iter().map(|s| s.minor_faults).collect()),
            median(step.iter().map(|s| s.voluntary_switches).collect()),
            median(step.iter().map(|s| s.involuntary_switches).collect()),
        );
    }
    println!("median time of one batch of 100 (µs), by batch number:");
    for (name, step) in ["append_10k (fresh)", "append_10k_after_10k"].iter().zip(&batches) {
        let ranges: Vec<String> = BATCH_RANGES
            .iter()
            .map(|&(from, to)| {
                let mean_of_medians =
                    (from..to).map(|i| median(step[i].clone())).sum::<Duration>() / (to - from) as u32;
                format!("[{from}..{to}) {:.1}", mean_of_medians.as_secs_f64() * 1e6)
            })
            .collect();
        println!("{name:>22} {}", ranges.join("  "));
    }
}
