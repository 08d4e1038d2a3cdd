//! `/metrics`: scraped over HTTP from a real server, the counters move with the calls.

mod common;

use common::{TestServer, produce_request};
use ringlog_service::proto::ConsumeRequest;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::Code;

/// `GET path` over HTTP/1.1; returns the status line, the headers and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_owned(), body.to_owned())
}

/// The value of the sample named exactly `sample` (with its labels), if present.
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

async fn metrics_server() -> (TestServer, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (TestServer::start_with(|server| server.metrics_listener(listener)).await, addr)
}

const PRODUCE_OK: &str =
    r#"ringlog_grpc_server_handled_total{grpc_service="log.v1.Log",grpc_method="Produce",grpc_code="Ok"}"#;

#[tokio::test]
async fn counters_move_after_produces() {
    let (server, metrics) = metrics_server().await;
    let (head, before) = get(metrics, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    assert_eq!(value(&before, "ringlog_records_appended_total"), Some(0.0), "{before}");
    assert_eq!(value(&before, "ringlog_segments"), Some(1.0), "{before}");
    assert_eq!(value(&before, PRODUCE_OK), None, "no call yet");
    assert_eq!(value(&before, "ringlog_highest_offset"), None, "absent while empty");

    let mut client = server.client().await;
    for value in ["a", "bb", "ccc"] {
        client.produce(produce_request(value)).await.unwrap();
    }
    let status = client.consume(ConsumeRequest { offset: 99, max_records: 0 }).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);

    let (_, after) = get(metrics, "/metrics").await;
    assert_eq!(value(&after, "ringlog_records_appended_total"), Some(3.0), "{after}");
    assert!(value(&after, "ringlog_appended_bytes_total").unwrap() >= 6.0, "{after}");
    assert_eq!(value(&after, PRODUCE_OK), Some(3.0), "{after}");
    let out_of_range = r#"ringlog_grpc_server_handled_total{grpc_service="log.v1.Log",grpc_method="Consume",grpc_code="OutOfRange"}"#;
    assert_eq!(value(&after, out_of_range), Some(1.0), "{after}");
    assert_eq!(
        value(
            &after,
            r#"ringlog_grpc_server_handling_seconds_count{grpc_service="log.v1.Log",grpc_method="Produce"}"#
        ),
        Some(3.0),
        "{after}"
    );
    assert_eq!(value(&after, "ringlog_append_seconds_count"), Some(3.0), "{after}");
    assert_eq!(value(&after, "ringlog_lowest_offset"), Some(0.0));
    assert_eq!(value(&after, "ringlog_highest_offset"), Some(2.0));
    assert_eq!(value(&after, "ringlog_next_offset"), Some(3.0));
    assert!(value(&after, "ringlog_disk_bytes").unwrap() > 0.0, "{after}");
    for name in
        ["ringlog_writes_total", "ringlog_fsync_seconds_count", r#"ringlog_fsync_seconds_bucket{le="+Inf"}"#]
    {
        assert!(value(&after, name).is_some(), "{name} in {after}");
    }
    assert!(after.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn open_streams_are_gauges_and_finished_streams_are_counted() {
    let (server, metrics) = metrics_server().await;
    server.log.append("x").unwrap();
    let mut client = server.client().await;
    let mut follow =
        client.consume_stream(ConsumeRequest { offset: 0, max_records: 0 }).await.unwrap().into_inner();
    follow.message().await.unwrap().expect("the record");
    let (_, open) = get(metrics, "/metrics").await;
    assert_eq!(value(&open, "ringlog_active_followers"), Some(1.0), "{open}");

    let requests = tokio_stream::iter([produce_request("y")]);
    let mut answers = client.produce_stream(requests).await.unwrap().into_inner();
    while answers.message().await.unwrap().is_some() {}
    drop(follow);
    // The follower's end is recorded when the server notices the cancel; the produce stream
    // ended OK before its last message arrived here.
    let (_, after) = get(metrics, "/metrics").await;
    let stream_ok = r#"ringlog_grpc_server_handled_total{grpc_service="log.v1.Log",grpc_method="ProduceStream",grpc_code="Ok"}"#;
    assert_eq!(value(&after, stream_ok), Some(1.0), "{after}");
    assert_eq!(value(&after, "ringlog_active_produce_streams"), Some(0.0), "{after}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_paths_are_not_found() {
    let (server, metrics) = metrics_server().await;
    let (head, _) = get(metrics, "/secrets").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    server.stop().await.unwrap();
}
