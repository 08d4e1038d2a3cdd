//! Retention while serving: the log is held under its byte limit while producers write, a
//! consumer asking below the lowest offset gets OUT_OF_RANGE naming it, and a ConsumeStream
//! that retention overtakes delivers a contiguous run of records and then a clear
//! OUT_OF_RANGE, never a gap or garbage.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, config};
use ringlog_engine::{Config, Log};
use ringlog_service::{
    proto::{ConsumeRequest, ProduceRequest, Record},
    retention::RetentionPolicy,
};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

/// Small segments, so that a few hundred KiB make many.
fn small_segments() -> Config {
    Config { store_bytes_max: 16 << 10, record_bytes_max: 1024, ..config() }
}

const LIMIT: u64 = 64 << 10;

fn policy() -> RetentionPolicy {
    RetentionPolicy {
        max_bytes: Some(LIMIT),
        max_age: None,
        segment_age: None,
        check_every: Duration::from_millis(10),
    }
}

/// `count` records of 100 bytes in one request (at most 100: a batch fits in a segment).
fn batch(first: u64, count: u64) -> ProduceRequest {
    let records = (first..first + count)
        .map(|i| Record { value: Bytes::from(format!("{i:0100}")), ..Record::default() })
        .collect();
    ProduceRequest { record: None, records }
}

/// Waits (bounded, by condition) until the log's files hold at most `LIMIT` bytes.
async fn wait_under_limit(log: &Log) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while log.size_bytes() > LIMIT {
        assert!(tokio::time::Instant::now() < deadline, "the log still holds {} bytes", log.size_bytes());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `lowest` of an OUT_OF_RANGE status's details.
fn lowest_of(status: &tonic::Status) -> u64 {
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
    let info = status.get_details_error_info().expect("error info");
    info.metadata["lowest"].parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_held_under_its_byte_limit_while_producing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let server = TestServer::serve_with(log.clone(), |server| server.retention(policy())).await;
    let mut client = server.client().await;
    let mut most = 0;
    for round in 0..20 {
        // About 64 KiB of frames per round: each round fills the limit on its own.
        for part in 0..5 {
            client.produce(batch(round * 500 + part * 100, 100)).await.unwrap();
            most = most.max(log.size_bytes());
        }
        wait_under_limit(&log).await;
    }
    let stats = log.stats();
    assert!(stats.segments_dropped > 0 && stats.bytes_dropped > 0, "{stats:?}");
    let lowest = log.lowest_offset();
    assert!(lowest > 0);
    let below = client.consume(ConsumeRequest { offset: 0, max_records: 0 }).await.unwrap_err();
    assert_eq!(lowest_of(&below), lowest);
    let record = client.consume(ConsumeRequest { offset: lowest, max_records: 0 }).await.unwrap();
    assert_eq!(record.into_inner().record.unwrap().value, format!("{lowest:0100}").as_bytes());
    eprintln!(
        "10 000 records of 100 B, limit {LIMIT} B: at most {most} B after a produce, {} segments and {} B \
         deleted, lowest offset {lowest}",
        stats.segments_dropped, stats.bytes_dropped
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_overtaken_by_retention_gets_a_contiguous_run_then_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let server = TestServer::serve_with(log.clone(), |server| server.retention(policy())).await;
    let mut client = server.client().await;
    client.produce(batch(0, 100)).await.unwrap();

    // A follower from 0 that reads one message, then stops reading while retention deletes
    // far more than the server and the transport can have buffered for it.
    let mut stream =
        client.consume_stream(ConsumeRequest { offset: 0, max_records: 10 }).await.unwrap().into_inner();
    let mut received: Vec<u64> = Vec::new();
    let first = stream.next().await.expect("a first message").unwrap();
    received.extend(first.records.iter().map(|r| r.offset));
    let mut producer = server.client().await;
    let mut next = 100;
    while log.lowest_offset() < 20_000 {
        producer.produce(batch(next, 100)).await.unwrap();
        next += 100;
    }

    let ended = loop {
        match stream.next().await {
            Some(Ok(message)) => {
                for record in message.records {
                    assert_eq!(record.value, format!("{:0100}", record.offset).as_bytes(), "never garbage");
                    received.push(record.offset);
                }
            }
            Some(Err(status)) => break status,
            None => panic!("the stream ended without an error after {} records", received.len()),
        }
    };
    let expected: Vec<u64> = (0..received.len() as u64).collect();
    assert_eq!(received, expected, "a contiguous run from 0");
    let lowest = lowest_of(&ended);
    assert!(lowest > *received.last().unwrap() + 1, "the records it missed were deleted: lowest {lowest}");
    server.stop().await.unwrap();
}
