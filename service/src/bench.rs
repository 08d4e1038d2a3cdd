//! `ringlog bench` (hidden): a closed-loop load generator against a running server.
//! It measures Produce (unary, `--connections` callers in parallel), ProduceStream
//! (`--connections` pipelined streams) and ConsumeStream (one follower reading back what
//! ProduceStream wrote), and prints records/s and MB/s of values for each.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use ringlog_service::proto::{ConsumeRequest, ProduceRequest, Record};
use tokio::task::JoinSet;

use crate::client::{Connect, connect};

/// Arguments of `ringlog bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    connect: Connect,
    /// Bytes per record value
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Records per measurement
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Parallel connections (callers for Produce, streams for ProduceStream)
    #[arg(long, default_value_t = 4)]
    connections: u64,
    /// Records per request (Produce, ProduceStream) and per message (ConsumeStream's
    /// `max_records`); 1 is the original, unbatched API
    #[arg(long, default_value_t = 1)]
    batch: u64,
}

/// Runs the three measurements.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let value = Bytes::from(vec![b'x'; args.record_bytes]);
    let per_connection = args.records / args.connections;
    let requests = per_connection / args.batch;
    let total = requests * args.batch * args.connections;
    let request = ProduceRequest {
        record: None,
        records: vec![Record { value, ..Record::default() }; args.batch as usize],
    };

    let started = Instant::now();
    let mut callers = JoinSet::new();
    for _ in 0..args.connections {
        let mut client = connect(&args.connect.addr).await?;
        let request = request.clone();
        callers.spawn(async move {
            for _ in 0..requests {
                client.produce(request.clone()).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = callers.join_next().await {
        done.context("a producer panicked")??;
    }
    report("Produce", &args, total, started.elapsed());

    let started = Instant::now();
    let mut streams = JoinSet::new();
    for _ in 0..args.connections {
        let mut client = connect(&args.connect.addr).await?;
        let requests = futures_util::stream::iter((0..requests).map({
            let request = request.clone();
            move |_| request.clone()
        }));
        streams.spawn(async move {
            let mut answers = client.produce_stream(requests).await?.into_inner();
            let mut first = u64::MAX;
            while let Some(answer) = answers.next().await {
                first = first.min(answer?.offset);
            }
            anyhow::Ok(first)
        });
    }
    let mut first = u64::MAX;
    while let Some(done) = streams.join_next().await {
        first = first.min(done.context("a producer panicked")??);
    }
    report("ProduceStream", &args, total, started.elapsed());

    let started = Instant::now();
    let mut client = connect(&args.connect.addr).await?;
    let mut stream =
        client.consume_stream(ConsumeRequest { offset: first, max_records: args.batch }).await?.into_inner();
    let mut read = 0;
    while read < total {
        let message = stream.next().await.context("the stream ended early")??;
        read += if args.batch <= 1 { 1 } else { message.records.len() as u64 };
    }
    report("ConsumeStream", &args, total, started.elapsed());
    Ok(())
}

fn report(rpc: &str, args: &BenchArgs, records: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let rate = records as f64 / secs;
    let mb = rate * args.record_bytes as f64 / 1e6;
    println!(
        "{rpc:<14} {:>5} B  batch {:>4}  conns {:>2}  {records:>9} records  {secs:>7.2} s  {rate:>10.0} records/s  {mb:>8.1} MB/s",
        args.record_bytes, args.batch, args.connections
    );
}
