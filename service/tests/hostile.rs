//! Hostile input over gRPC against the real binary: oversized messages, empty records,
//! offset `u64::MAX`, thousands of streams opened and abandoned, consumers that never read.
//! The server answers with proper statuses, keeps serving a well-behaved client throughout,
//! and its memory stays bounded: its RSS (from /proc) after many rounds of abuse is
//! compared with its RSS after the first, so a per-stream or per-connection leak shows.

mod process;

use std::time::Duration;

use bytes::Bytes;
use ringlog_service::proto::{ConsumeRequest, ProduceRequest, Record, log_client::LogClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, transport::Channel};

const ARGS: &[&str] = &["--durability", "none", "--backend", "pwrite", "--max-record-bytes", "1024"];

fn request(value: impl Into<Bytes>) -> ProduceRequest {
    ProduceRequest { record: Some(Record { value: value.into(), ..Record::default() }), records: Vec::new() }
}

fn batch(values: impl IntoIterator<Item = Bytes>) -> ProduceRequest {
    let records = values.into_iter().map(|value| Record { value, ..Record::default() }).collect();
    ProduceRequest { record: None, records }
}

/// A well-behaved client: appends a record and reads it back.
async fn still_serves(client: &mut LogClient<Channel>, what: &str) {
    let value = Bytes::from(format!("still serving after {what}"));
    let offset = client.produce(request(value.clone())).await.unwrap_or_else(|s| panic!("{what}: {s:?}"));
    let offset = offset.into_inner().offset;
    let read = client.consume(ConsumeRequest { offset, max_records: 0 }).await.unwrap().into_inner();
    assert_eq!(read.record.unwrap().value, value, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_proper_statuses_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = process::serve(dir.path(), ARGS).unwrap_or_else(|f| panic!("start: {f:?}"));
    let mut client = server.client().await;

    // Over gRPC's message limit (max(record limit, 4 MiB) + 64 KiB): tonic's own status
    // (docs/service.md), which tonic makes OUT_OF_RANGE, with a message that says why.
    let status = client.produce(request(vec![7u8; 5 << 20])).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("message length too large"), "{status:?}");
    // Under it but over the record limit: INVALID_ARGUMENT naming the field.
    let status = client.produce(request(vec![7u8; 1025])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("record.value"), "{status:?}");
    let status = client.produce(batch([Bytes::from_static(b"ok"), Bytes::from(vec![1u8; 2000])])).await;
    let status = status.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("records[1].value"), "{status:?}");
    // No record at all.
    let status = client.produce(ProduceRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // A produce stream with a bad request answers the good ones before it, then ends.
    let requests = [request("good"), request(vec![0u8; 4096]), request("never read")];
    let mut answers = client.produce_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
    assert_eq!(answers.message().await.unwrap().unwrap().offset, 0);
    assert_eq!(answers.message().await.unwrap_err().code(), Code::InvalidArgument);
    // Nothing of the bad requests was written.
    let status = client.consume(ConsumeRequest { offset: 1, max_records: 0 }).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "only the good record is in the log: {status:?}");

    // An empty record is a record.
    let offset = client.produce(request(Bytes::new())).await.unwrap().into_inner().offset;
    assert_eq!(offset, 1);
    let read = client.consume(ConsumeRequest { offset, max_records: 0 }).await.unwrap().into_inner();
    assert_eq!(read.record.unwrap().value, Bytes::new());

    // Offsets at the end of u64.
    for max_records in [0, 1, 1000, u64::MAX] {
        let status = client.consume(ConsumeRequest { offset: u64::MAX, max_records }).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        assert_eq!(status.message(), format!("offset out of range: {}", u64::MAX));
    }
    let read =
        client.consume(ConsumeRequest { offset: 0, max_records: u64::MAX }).await.unwrap().into_inner();
    assert_eq!(read.records.len(), 2, "max_records is capped, not allocated");
    // A follower past the end waits (format.md) and can be abandoned.
    let mut follower = client
        .consume_stream(ConsumeRequest { offset: u64::MAX, max_records: 0 })
        .await
        .unwrap()
        .into_inner();
    let waited = tokio::time::timeout(Duration::from_millis(200), follower.message()).await;
    assert!(waited.is_err(), "a follower past the end waits: {waited:?}");
    drop(follower);

    still_serves(&mut client, "bad requests").await;
    server.kill();
}

/// One round of abuse: `streams` produce and consume streams opened on one connection and
/// abandoned mid-way, `connections` connections opened with a stream each and dropped, and
/// `sleepers` consumers of the whole log that never read.
async fn abuse(addr: std::net::SocketAddr, streams: usize, connections: usize, sleepers: usize) {
    let mut client = process::client(addr).await;
    let mut held = Vec::new();
    for i in 0..streams {
        if i.is_multiple_of(2) {
            let (tx, rx) = mpsc::channel(4);
            tx.send(request(format!("abandoned {i}"))).await.unwrap();
            let answers = client.produce_stream(ReceiverStream::new(rx)).await.unwrap().into_inner();
            held.push((Some(tx), Some(answers), None));
        } else {
            let follow = client.consume_stream(ConsumeRequest { offset: 0, max_records: 100 }).await.unwrap();
            held.push((None, None, Some(follow.into_inner())));
        }
    }
    drop(held);
    for _ in 0..connections {
        let mut client = process::client(addr).await;
        let follow = client.consume_stream(ConsumeRequest { offset: 0, max_records: 0 }).await.unwrap();
        drop((follow, client));
    }
    let mut sleepers_held = Vec::new();
    for _ in 0..sleepers {
        let mut client = process::client(addr).await;
        let follow = client.consume_stream(ConsumeRequest { offset: 0, max_records: 1000 }).await.unwrap();
        sleepers_held.push((client, follow));
    }
    // A well-behaved client is served while the sleepers hold their streams.
    still_serves(&mut client, "abandoned streams, with consumers that never read").await;
    drop(sleepers_held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_streams_and_consumers_that_never_read_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = process::serve(dir.path(), ARGS).unwrap_or_else(|f| panic!("start: {f:?}"));
    let mut client = server.client().await;
    // 32 MiB of records for the consumers that never read to (not) read.
    for _ in 0..32 {
        client.produce(batch((0..1024).map(|i| Bytes::from(vec![i as u8; 1000])))).await.unwrap();
    }
    abuse(server.addr, 500, 50, 10).await;
    let after_first = server.rss_kib();
    let rounds = 6;
    for _ in 1..rounds {
        abuse(server.addr, 500, 50, 10).await;
    }
    still_serves(&mut client, "every round").await;
    let after_last = server.rss_kib();
    eprintln!("RSS after round 1: {after_first} KiB; after round {rounds}: {after_last} KiB");
    // Each round opens 500 streams and 60 connections, and 10 consumers that never read
    // each have up to an HTTP/2 window (2 MiB) of records in flight. Keeping the windows of
    // one round (20 MiB), or 1.4 KiB per abandoned stream or connection, breaks the bound.
    assert!(
        after_last < after_first + 16 * 1024,
        "RSS grew from {after_first} KiB to {after_last} KiB over {rounds} rounds: a leak"
    );
    server.kill();
}
