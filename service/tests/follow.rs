//! ConsumeStream at the tail: waiting, waking, not spinning, ending.

mod common;

use std::time::Duration;

use common::{TestServer, config, produce_request};
use ringlog_service::proto::ConsumeRequest;
use tonic::Code;

fn follow(offset: u64) -> ConsumeRequest {
    ConsumeRequest { offset, max_records: 0 }
}

#[tokio::test]
async fn a_follower_blocked_at_the_end_receives_a_later_record() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let mut producer = server.client().await;
    // An empty log: the follower can only wait.
    let mut stream = client.consume_stream(follow(0)).await.unwrap().into_inner();
    let receive = tokio::spawn(async move {
        let record = stream.message().await.unwrap().unwrap().record.unwrap();
        (record, stream)
    });
    producer.produce(produce_request("later")).await.unwrap();
    let (record, _stream) = receive.await.unwrap();
    assert_eq!((record.offset, &record.value[..]), (0, &b"later"[..]));
    drop(_stream);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_follower_past_the_end_waits_for_its_offset() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let mut stream = client.consume_stream(follow(3)).await.unwrap().into_inner();
    for i in 0..5 {
        client.produce(produce_request(format!("{i}"))).await.unwrap();
    }
    let record = stream.message().await.unwrap().unwrap().record.unwrap();
    assert_eq!((record.offset, &record.value[..]), (3, &b"3"[..]));
    let record = stream.message().await.unwrap().unwrap().record.unwrap();
    assert_eq!(record.offset, 4);
    drop(stream);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_follower_is_not_woken_and_each_append_wakes_it_a_bounded_number_of_times() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let mut stream = client.consume_stream(follow(0)).await.unwrap().into_inner();
    client.produce(produce_request("first")).await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().record.unwrap().offset, 0);

    // Idle: the follower waits for offset 1. Reads are not appends and must not wake it;
    // the pause gives a spinning follower time to show itself (only counts are asserted).
    let idle_start = server.log.stats().waiter_wakeups;
    for _ in 0..100 {
        client.consume(follow(0)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_end = server.log.stats().waiter_wakeups;
    assert_eq!(idle_end, idle_start, "an idle follower was woken {} times", idle_end - idle_start);

    // Each append wakes the waiting follower at most once.
    const APPENDS: u64 = 50;
    for i in 1..=APPENDS {
        client.produce(produce_request(format!("{i}"))).await.unwrap();
        assert_eq!(stream.message().await.unwrap().unwrap().record.unwrap().offset, i);
    }
    let woken = server.log.stats().waiter_wakeups - idle_end;
    assert!((1..=APPENDS).contains(&woken), "{woken} wakeups for {APPENDS} appends");
    drop(stream);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_a_waiting_follower_with_unavailable() {
    let mut server = TestServer::start(config()).await;
    let mut client = server.client().await;
    client.produce(produce_request("only")).await.unwrap();
    let mut stream = client.consume_stream(follow(0)).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().record.unwrap().offset, 0);
    server.signal_stop();
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "server is shutting down");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_follower_goes_away_cleanly() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let stream = client.consume_stream(follow(0)).await.unwrap().into_inner();
    drop(stream);
    // The server goes on, and its graceful stop does not wait for the dropped follower.
    assert_eq!(client.produce(produce_request("x")).await.unwrap().into_inner().offset, 0);
    server.stop().await.unwrap();
}
