//! Hostile input over gRPC against the real binary: oversized messages, empty records,
//! offset `u64::MAX`, thousands of streams opened and abandoned, consumers that never read.
//! The server answers with proper statuses, keeps serving a well-behaved client throughout,
//! and its memory stays bounded: its RSS (from /proc) after many rounds of abuse is
//! compared with its RSS after the first, so a per-stream or per-connection leak shows.
//!
//! The server's limits (docs/service.md, "Limits"): past the connection cap a connection
//! waits, past the stream cap a call waits, each until one closes; and calls whose clients
//! never read or never stop sending hold the server's memory within the sum of the per-call
//! bounds, measured against the RSS of the same server before the abuse.

mod process;

use std::time::Duration;

use bytes::Bytes;
use ringlog_service::proto::{ConsumeRequest, ProduceRequest, Record, log_client::LogClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

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

/// How long a condition the test waits for may take before the test fails (a loaded machine
/// is slow; a broken server never gets there).
const PATIENCE: Duration = Duration::from_secs(60);
/// How long a call that must wait (past a cap) is watched: it proves nothing if the cap is
/// broken and the machine slow, but cannot fail a working server.
const WATCHED: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_caps_a_stream_or_a_connection_waits_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let args = [ARGS, &["--max-connections", "2", "--max-streams-per-connection", "4"]].concat();
    let server = process::serve(dir.path(), &args).unwrap_or_else(|f| panic!("start: {f:?}"));
    let mut client = server.client().await;
    client.produce(request("record 0")).await.unwrap();

    // Four followers past the end of the log hold the first connection's four streams.
    let mut followers = Vec::new();
    for _ in 0..4 {
        let follow = client.consume_stream(ConsumeRequest { offset: 1, max_records: 0 }).await.unwrap();
        followers.push(follow.into_inner());
    }
    let mut fifth = client.clone();
    let mut fifth =
        tokio::spawn(async move { fifth.consume(ConsumeRequest { offset: 0, max_records: 0 }).await });
    let waited = tokio::time::timeout(WATCHED, &mut fifth).await;
    assert!(waited.is_err(), "a fifth stream on a connection capped at 4 was served: {waited:?}");
    followers.pop();
    let fifth =
        tokio::time::timeout(PATIENCE, fifth).await.expect("the fifth stream is served once one closes");
    assert_eq!(fifth.unwrap().unwrap().into_inner().record.unwrap().value, "record 0");

    // A second connection is served; a third waits for one of the two to close.
    let mut second = process::client(server.addr).await;
    let second_follower =
        second.consume_stream(ConsumeRequest { offset: 1, max_records: 0 }).await.unwrap().into_inner();
    let addr = server.addr;
    let mut third = tokio::spawn(async move {
        let mut third = process::client(addr).await;
        third.consume(ConsumeRequest { offset: 0, max_records: 0 }).await
    });
    let waited = tokio::time::timeout(WATCHED, &mut third).await;
    assert!(waited.is_err(), "a third connection was served with the cap at 2: {waited:?}");
    drop((second_follower, second));
    let third =
        tokio::time::timeout(PATIENCE, third).await.expect("the third connection is served once one closes");
    assert_eq!(third.unwrap().unwrap().into_inner().record.unwrap().value, "record 0");

    // The followers still follow, and the server still serves.
    let offset = client.produce(request("record 1")).await.unwrap().into_inner().offset;
    for follower in &mut followers {
        let next =
            tokio::time::timeout(PATIENCE, follower.message()).await.expect("a follower gets record 1");
        assert_eq!(next.unwrap().unwrap().record.unwrap().offset, offset);
    }
    drop(followers);
    still_serves(&mut client, "calls and connections past the caps").await;
    server.kill();
}

/// A connection of the abuse: small receive windows, so that what it never reads is little
/// on its side and the producers' appends stop soon (their answers fill the windows).
async fn hostile_connection(addr: std::net::SocketAddr) -> LogClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(64 << 10)
        .initial_connection_window_size(256 << 10)
        .connect()
        .await
        .expect("connect to ringlog serve");
    LogClient::new(channel).max_decoding_message_size(64 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_never_read_or_never_stop_sending_hold_bounded_memory() {
    const PRODUCE_IN_FLIGHT: usize = 256 << 10;
    const WINDOW: usize = 256 << 10;
    let dir = tempfile::tempdir().unwrap();
    let (in_flight, window) = (PRODUCE_IN_FLIGHT.to_string(), WINDOW.to_string());
    let limits = ["--produce-in-flight-bytes", &in_flight, "--stream-window-bytes", &window];
    let args = [ARGS, &limits[..], &["--connection-window-bytes", &window]].concat();
    let server = process::serve(dir.path(), &args).unwrap_or_else(|f| panic!("start: {f:?}"));
    let mut client = server.client().await;
    // 32 MiB of 1000 B records, which each consumer wants to send at once and its client
    // never reads.
    for _ in 0..32 {
        client.produce(batch((0..1024).map(|i| Bytes::from(vec![i as u8; 1000])))).await.unwrap();
    }
    still_serves(&mut client, "filling the log").await;
    let baseline = server.rss_kib();

    // Per connection: batched consumers and one-record consumers that never read,
    // producers that send 100 B records as fast as flow control lets them and never read an
    // answer, and produce streams that send one request and never finish.
    const CONNECTIONS: usize = 8;
    const BATCHED: usize = 4;
    const SINGLE: usize = 2;
    const FLOODS: usize = 2;
    const OPEN: usize = 2;
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut hostile = hostile_connection(server.addr).await;
        for _ in 0..BATCHED {
            let follow = hostile.consume_stream(ConsumeRequest { offset: 0, max_records: 1000 });
            held.push(Box::new(follow.await.unwrap()) as Box<dyn std::any::Any + Send>);
        }
        for _ in 0..SINGLE {
            let follow = hostile.consume_stream(ConsumeRequest { offset: 0, max_records: 0 });
            held.push(Box::new(follow.await.unwrap()));
        }
        for _ in 0..FLOODS {
            let flood = tokio_stream::iter(std::iter::repeat_with(|| request(vec![b'f'; 100])));
            held.push(Box::new(hostile.produce_stream(flood).await.unwrap()));
        }
        for _ in 0..OPEN {
            let (tx, rx) = mpsc::channel(1);
            tx.send(request("never finished")).await.unwrap();
            held.push(Box::new((tx, hostile.produce_stream(ReceiverStream::new(rx)).await.unwrap())));
        }
        held.push(Box::new(hostile));
    }
    // Every call is open. The soak only lets the abuse reach its worst: a slower machine
    // makes it milder, never the bound tighter.
    let mut peak = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(server.rss_kib());
    }
    still_serves(&mut client, "calls that never read or never stop sending").await;
    peak = peak.max(server.rss_kib());

    // The bound (docs/service.md, "Limits"), with this test's messages: a batched consumer
    // holds at most three of its messages (one queued in HTTP/2 past the window, one in
    // hyper, the next being encoded; 1000 records of 1000 B, ~1 MB each) and 512 KiB of
    // send buffer; a one-record consumer its 64 KiB read-ahead, three 32 KiB chunks and the
    // buffer; a producer its appends in flight plus one request, its receive window, a
    // partial message and its answers (64 queued, two 32 KiB chunks).
    let message = 1000 * (1000 + 16) + 64;
    let batched = 3 * message + (512 << 10);
    let single = (64 << 10) + 3 * ((32 << 10) + 1100) + (512 << 10);
    let producer = PRODUCE_IN_FLIGHT + 1024 + WINDOW + (16 << 10) + 64 * 64 + 2 * (32 << 10);
    // A connection: its receive window and 256 KiB for hyper's and h2's state and buffers.
    let connection = WINDOW + (256 << 10);
    let bound = CONNECTIONS * (BATCHED * batched + SINGLE * single + (FLOODS + OPEN) * producer + connection);
    let grown = peak.saturating_sub(baseline) as usize * 1024;
    let calls = CONNECTIONS * (BATCHED + SINGLE + FLOODS + OPEN);
    eprintln!(
        "RSS before the abuse: {baseline} KiB; peak under it: {peak} KiB (+{} KiB for {calls} calls on \
         {CONNECTIONS} connections); bound: +{} KiB",
        grown / 1024,
        bound / 1024
    );
    assert!(grown <= bound, "RSS grew by {grown} B under the abuse, over the bound of {bound} B");

    drop(held);
    still_serves(&mut client, "the abuse ended").await;
    server.kill();
}
