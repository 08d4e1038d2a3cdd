//! Acknowledgement latency with `fdatasync` before each acknowledgement: the engine's
//! p50/p99 next to the raw baseline's (one `pwrite` of a record per client, then
//! `fdatasync`, which is what every client of a perfect group commit waits), measured in
//! the same run. Usage: `durable_latency [pwrite|io_uring] [record bytes] [clients] [rounds]
//! [threads|tasks]`: clients are OS threads blocking on their tickets, or tokio tasks
//! awaiting them (as the service's are).

use std::time::{Duration, Instant};

use ringlog_benches::{RawWriter, backend_named, percentile, static_value};
use ringlog_engine::{Config, Durability, Log};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = backend_named(args.get(1).map(String::as_str));
    let arg = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (size, clients, rounds) = (arg(2, 1024) as usize, arg(3, 64) as usize, arg(4, 200));
    let tasks = args.get(5).is_some_and(|mode| mode == "tasks");
    let value = static_value(size);
    let records = clients as u64 * rounds;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut raw = RawWriter::create(dir.path());
    let start = Instant::now();
    let mut raw_latencies = raw.append_durable(records, &value, clients);
    let raw_rate = records as f64 / start.elapsed().as_secs_f64();

    let config = Config { backend, durability: Durability::Always, ..Config::default() };
    let log = Log::open(dir.path().join("log"), config).expect("open");
    let start = Instant::now();
    let mut engine_latencies: Vec<Duration> = if tasks {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        runtime.block_on(async {
            let clients: Vec<_> = (0..clients)
                .map(|_| {
                    let (log, value) = (log.clone(), value.clone());
                    tokio::spawn(async move {
                        let mut latencies = Vec::with_capacity(rounds as usize);
                        for _ in 0..rounds {
                            let sent = Instant::now();
                            log.submit(vec![value.clone()]).expect("submit").await.expect("append");
                            latencies.push(sent.elapsed());
                        }
                        latencies
                    })
                })
                .collect();
            let mut all = Vec::new();
            for client in clients {
                all.extend(client.await.expect("client"));
            }
            all
        })
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..clients)
                .map(|_| {
                    scope.spawn(|| {
                        (0..rounds)
                            .map(|_| {
                                let sent = Instant::now();
                                log.append(value.clone()).expect("append");
                                sent.elapsed()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("client")).collect()
        })
    };
    let engine_rate = records as f64 / start.elapsed().as_secs_f64();
    let syncs = log.stats().syncs;
    log.close().expect("close");

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (raw_p50, raw_p99) = (percentile(&mut raw_latencies, 0.5), percentile(&mut raw_latencies, 0.99));
    let (p50, p99) = (percentile(&mut engine_latencies, 0.5), percentile(&mut engine_latencies, 0.99));
    println!(
        "{records} records of {size} B, {clients} clients ({}):",
        if tasks { "tokio tasks" } else { "threads" }
    );
    println!(
        "  raw write+fdatasync: {raw_rate:>9.0} records/s  p50 {:.2} ms  p99 {:.2} ms",
        ms(raw_p50),
        ms(raw_p99)
    );
    println!(
        "  engine ({}):     {engine_rate:>9.0} records/s  p50 {:.2} ms  p99 {:.2} ms  ({syncs} syncs)",
        log.backend(),
        ms(p50),
        ms(p99)
    );
    println!(
        "  ratio: {:.2} of raw throughput, p99 {:.2}x raw p99",
        engine_rate / raw_rate,
        p99.as_secs_f64() / raw_p99.as_secs_f64()
    );
}
