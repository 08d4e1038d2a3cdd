//! Crash torture of the real process: `ringlog serve` takes several concurrent
//! ProduceStreams and is killed with SIGKILL mid-load, at a moment chosen (from a seed) by
//! the number of records acknowledged, not by time. After each kill it is restarted on the
//! same directory and checked: every acknowledged record is present and byte-identical at
//! its acknowledged offset, offsets are contiguous from the lowest, every record in the log
//! is one that a producer sent (once), and the log accepts appends.
//!
//! With `--durability always` an acknowledged record was synced; with `--durability none`
//! it reached the page cache, which a killed process (unlike a lost machine) cannot lose.
//!
//! 20 cycles per durability in the normal run; `RINGLOG_SOAK_CYCLES=500` runs as many as
//! asked, `RINGLOG_CRASH_SEED` picks another seed.

mod process;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use ringlog_service::proto::{ConsumeRequest, ProduceRequest, Record, log_client::LogClient};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const PRODUCERS: u64 = 4;
const CYCLES_DEFAULT: u64 = 20;

/// splitmix64: a deterministic stream of numbers from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The value producer `producer` sends as its `seq`th record in `cycle`: it names all three
/// and carries a padding (0 to 200 bytes) that follows from them, so any value read back
/// can be checked on its own.
fn value(cycle: u64, producer: u64, seq: u64) -> Bytes {
    let mut value = format!("c{cycle}p{producer}s{seq}:").into_bytes();
    let mut rng = Rng(cycle << 40 ^ producer << 32 ^ seq);
    let pad = rng.below(201) as usize;
    value.extend((0..pad).map(|i| b'a' + ((seq as usize + i) % 26) as u8));
    Bytes::from(value)
}

/// Parses a value back to (cycle, producer, seq) and checks it is exactly what was sent.
fn parse(value: &[u8]) -> Option<(u64, u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (head, _) = text.split_once(':')?;
    let head = head.strip_prefix('c')?;
    let (cycle, rest) = head.split_once('p')?;
    let (producer, seq) = rest.split_once('s')?;
    let key = (cycle.parse().ok()?, producer.parse().ok()?, seq.parse().ok()?);
    (value == value_of(key)).then_some(key)
}

fn value_of((cycle, producer, seq): (u64, u64, u64)) -> Bytes {
    value(cycle, producer, seq)
}

fn produce_request(value: Bytes) -> ProduceRequest {
    ProduceRequest { record: Some(Record { value, ..Record::default() }), records: Vec::new() }
}

/// What the clients learnt: acknowledged offsets and their values.
#[derive(Default)]
struct Acked {
    records: Mutex<HashMap<u64, Bytes>>,
    count: AtomicU64,
    notify: Notify,
}

/// One producer: a ProduceStream of `value(cycle, producer, 0..)`; records every answer
/// (answers come in request order) until the stream fails.
async fn produce(addr: SocketAddr, cycle: u64, producer: u64, acked: Arc<Acked>) {
    // The kill may come before a producer connects (it is chosen by record count).
    let Ok(channel) =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await
    else {
        return;
    };
    let mut client = LogClient::new(channel);
    let (tx, rx) = mpsc::channel(32);
    let Ok(response) = client.produce_stream(ReceiverStream::new(rx)).await else { return };
    let mut answers = response.into_inner();
    tokio::spawn(async move {
        for seq in 0.. {
            if tx.send(produce_request(value(cycle, producer, seq))).await.is_err() {
                return;
            }
        }
    });
    let mut seq = 0;
    while let Ok(Some(answer)) = answers.message().await {
        assert_eq!(answer.count, 1);
        acked.records.lock().unwrap().insert(answer.offset, value(cycle, producer, seq));
        seq += 1;
        acked.count.fetch_add(1, Ordering::SeqCst);
        acked.notify.notify_one();
    }
}

/// Reads the whole log through the server: (lowest, records in offset order).
async fn read_all(server: &process::Serving) -> Vec<(u64, Bytes)> {
    let mut client = server.client().await;
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        match client.consume(ConsumeRequest { offset, max_records: 1000 }).await {
            Ok(response) => {
                let response = response.into_inner();
                assert!(!response.records.is_empty(), "a batch read returns at least one record");
                for record in response.records {
                    assert_eq!(record.offset, offset, "offsets are contiguous");
                    records.push((record.offset, record.value));
                    offset += 1;
                }
            }
            Err(status) if status.code() == Code::OutOfRange => return records,
            Err(status) => panic!("reading offset {offset}: {status:?}"),
        }
    }
}

struct Totals {
    cycles: u64,
    acked: u64,
    in_log: u64,
}

/// Runs `cycles` produce-kill-restart-check cycles with `durability`; returns the totals.
async fn torture(durability: &str, cycles: u64, seed: u64) -> Totals {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    // Small segments and indexes, so that kills also land around segment rolls.
    let args = |cycle: u64| {
        let backend = if cycle.is_multiple_of(2) { "auto" } else { "pwrite" };
        vec![
            "--durability".to_owned(),
            durability.to_owned(),
            "--backend".to_owned(),
            backend.to_owned(),
            "--segment-bytes".to_owned(),
            "32768".to_owned(),
            "--index-bytes".to_owned(),
            "2048".to_owned(),
            "--max-record-bytes".to_owned(),
            "1024".to_owned(),
            "--log-level".to_owned(),
            "warn,ringlog_service::server=info".to_owned(),
        ]
    };
    let start = |dir: &Path, cycle: u64| {
        let args = args(cycle);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        process::serve(dir, &args).unwrap_or_else(|failed| panic!("restart failed: {failed:?}"))
    };
    let acked = Arc::new(Acked::default());
    for cycle in 0..cycles {
        let server = start(dir.path(), cycle);
        let kill_at = rng.below(600);
        let before = acked.count.load(Ordering::SeqCst);
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|producer| {
                let acked = acked.clone();
                produce(server.addr, cycle, producer, acked)
            })
            .collect();
        let producing = futures_util::future::join_all(producers);
        tokio::pin!(producing);
        // Kill once `kill_at` more records are acknowledged (the producers never stop on
        // their own, so they are mid-load).
        loop {
            let notified = acked.notify.notified();
            if acked.count.load(Ordering::SeqCst) - before >= kill_at {
                break;
            }
            tokio::select! {
                () = notified => {}
                _ = &mut producing => panic!("cycle {cycle}: producers ended before the kill: {}", server.stderr_text()),
            }
        }
        server.kill();
        // Every stream fails now; collect the last answers that made it out.
        producing.await;

        let server = start(dir.path(), cycle + 1);
        check(&server, &acked, cycle).await;
        // The log accepts appends, at the next offset.
        let records = read_all(&server).await;
        let next = records.last().map_or(0, |(offset, _)| offset + 1);
        let mut client = server.client().await;
        let appended = value(cycle, PRODUCERS, 0);
        let offset = client.produce(produce_request(appended.clone())).await.unwrap().into_inner().offset;
        assert_eq!(offset, next, "cycle {cycle}: an append after restart gets the next offset");
        acked.records.lock().unwrap().insert(offset, appended);
        // SIGKILL again before the next cycle's start, so that every start recovers.
        server.kill();
    }
    let server = start(dir.path(), cycles);
    check(&server, &acked, cycles).await;
    let in_log = read_all(&server).await.len() as u64;
    server.terminate();
    Totals { cycles, acked: acked.records.lock().unwrap().len() as u64, in_log }
}

/// Every acknowledged record at its offset, byte for byte; every record one that was sent,
/// once.
async fn check(server: &process::Serving, acked: &Acked, cycle: u64) {
    let records = read_all(server).await;
    let log: HashMap<u64, Bytes> = records.iter().cloned().collect();
    let mut seen = HashSet::new();
    for (offset, value) in &records {
        let key = parse(value)
            .unwrap_or_else(|| panic!("cycle {cycle}: offset {offset} holds {value:?}, never sent"));
        assert!(seen.insert(key), "cycle {cycle}: {key:?} is in the log twice");
    }
    for (offset, value) in acked.records.lock().unwrap().iter() {
        match log.get(offset) {
            Some(found) => assert_eq!(found, value, "cycle {cycle}: acknowledged offset {offset} changed"),
            None => panic!(
                "cycle {cycle}: acknowledged offset {offset} ({value:?}) lost; the log has {} records",
                records.len()
            ),
        }
    }
}

fn cycles() -> u64 {
    std::env::var("RINGLOG_SOAK_CYCLES").ok().and_then(|n| n.parse().ok()).unwrap_or(CYCLES_DEFAULT)
}

fn seed() -> u64 {
    std::env::var("RINGLOG_CRASH_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(0x5EED_0001)
}

async fn run(durability: &str) {
    let (cycles, seed) = (cycles(), seed());
    let totals = torture(durability, cycles, seed).await;
    eprintln!(
        "crash torture --durability {durability}: seed {seed}, {} SIGKILLs, {} acknowledged records \
         all present, {} records in the log",
        totals.cycles, totals.acked, totals.in_log
    );
    assert!(totals.acked >= totals.cycles, "every cycle acknowledged at least its post-restart append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill_with_durability_always() {
    run("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill_with_durability_none() {
    run("none").await;
}
