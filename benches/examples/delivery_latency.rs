//! Append-to-delivery latency: a producer appends at a fixed open-loop rate, a follower
//! (as ConsumeStream does) waits for each record with `wait_for` and reads it; the time
//! from `submit` to the follower holding the record is measured. Run once with durability
//! `none` (delivery when the record is published: what a reader saw under `always` before
//! readers were held to the durable offset) and once with `always` (delivery after the
//! fdatasync that covers it), in one process.
//! Usage: `delivery_latency [pwrite|io_uring] [records/s] [seconds] [record bytes]`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ringlog_benches::{backend_named, percentile, static_value};
use ringlog_engine::{Backend, Config, Durability, Log};

fn run(backend: Backend, durability: Durability, rate: u64, seconds: u64, size: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), Config { backend, durability, ..Config::default() }).expect("open");
    let records = rate * seconds;
    let start = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..records).map(|_| AtomicU64::new(0)).collect());
    let follower = {
        let (log, sent) = (log.clone(), Arc::clone(&sent));
        std::thread::spawn(move || {
            let mut latencies = Vec::with_capacity(records as usize);
            let mut next = 0;
            while next < records {
                log.wait_for_blocking(next, None).expect("wait");
                for record in log.read_from(next, 1024, usize::MAX).expect("read") {
                    let delivered = start.elapsed().as_nanos() as u64;
                    let at = sent[record.offset as usize].load(Ordering::Acquire);
                    latencies.push(Duration::from_nanos(delivered.saturating_sub(at)));
                    next = record.offset + 1;
                }
            }
            latencies
        })
    };
    let value = static_value(size);
    let gap = Duration::from_secs(1) / rate as u32;
    let mut tickets = Vec::with_capacity(records as usize);
    for i in 0..records {
        let due = gap * i as u32;
        while start.elapsed() < due {
            std::hint::spin_loop();
        }
        sent[i as usize].store(start.elapsed().as_nanos() as u64, Ordering::Release);
        tickets.push(log.submit(vec![value.clone()]).expect("submit"));
    }
    for ticket in tickets {
        ticket.wait().expect("append");
    }
    let latencies = follower.join().expect("follower");
    log.close().expect("close");
    latencies
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (rate, seconds, size) = (arg(2, 10_000), arg(3, 3), arg(4, 100) as usize);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{rate} records/s of {size} B for {seconds} s, open loop, one follower:");
    let mut results = Vec::new();
    for (name, durability) in [
        ("none (delivered on publish)", Durability::None),
        ("always (delivered once durable)", Durability::Always),
    ] {
        let backend = backend_named(args.get(1).map(String::as_str));
        let mut latencies = run(backend, durability, rate, seconds, size);
        let (p50, p99) = (percentile(&mut latencies, 0.5), percentile(&mut latencies, 0.99));
        println!("  {name:<32} p50 {:>7.3} ms  p99 {:>7.3} ms", ms(p50), ms(p99));
        results.push((p50, p99));
    }
    let ((p50_none, p99_none), (p50_always, p99_always)) = (results[0], results[1]);
    println!(
        "  holding readers to the durable offset adds {:.3} ms at p50 and {:.3} ms at p99",
        ms(p50_always.saturating_sub(p50_none)),
        ms(p99_always.saturating_sub(p99_none))
    );
}
