//! A graceful stop keeps every record and the next offset; a restart continues from there.

mod common;

use common::{TestServer, config, produce_request};
use ringlog_engine::{Durability, Log};
use ringlog_service::proto::ConsumeRequest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

#[tokio::test]
async fn records_and_the_next_offset_survive_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let config = || ringlog_engine::Config { durability: Durability::Always, ..config() };

    let server = TestServer::start_in(dir.path(), config()).await;
    let mut client = server.client().await;
    for i in 0..10 {
        client.produce(produce_request(format!("unary {i}"))).await.unwrap();
    }
    let requests = tokio_stream::iter((0..100).map(|i| produce_request(format!("stream {i}"))));
    let mut answers = client.produce_stream(requests).await.unwrap().into_inner();
    while let Some(answer) = answers.message().await.unwrap() {
        assert!(answer.offset >= 10);
    }
    server.stop().await.expect("a graceful stop");

    let log = Log::open(dir.path(), config()).unwrap();
    let next = log.next_offset();
    assert_eq!(next, 110, "every acknowledged record survived");
    for i in 0..10 {
        assert_eq!(log.read(i).unwrap().value, format!("unary {i}"));
    }
    for i in 0..100 {
        assert_eq!(log.read(10 + i).unwrap().value, format!("stream {i}"));
    }
    log.close().unwrap();

    let server = TestServer::start_in(dir.path(), config()).await;
    let mut client = server.client().await;
    assert_eq!(client.produce(produce_request("after restart")).await.unwrap().into_inner().offset, next);
    let record = client.consume(ConsumeRequest { offset: 0, max_records: 0 }).await.unwrap().into_inner();
    assert_eq!(record.record.unwrap().value, "unary 0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stopping_answers_every_taken_append_then_ends_produce_streams_with_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), config()).await;
    let mut client = server.client().await;
    let (tx, rx) = mpsc::channel(16);
    let mut answers = client.produce_stream(ReceiverStream::new(rx)).await.unwrap().into_inner();
    for i in 0..100 {
        tx.send(produce_request(format!("{i}"))).await.unwrap();
        assert_eq!(answers.message().await.unwrap().unwrap().offset, i);
    }
    // The stream stays open (no half-close) when the stop comes.
    server.signal_stop();
    let status = answers.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    drop((tx, answers));
    server.stop().await.unwrap();

    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.next_offset(), 100);
    assert_eq!(log.read(99).unwrap().value, "99");
}
