//! Dead peers: a follower whose client vanishes without a word (a host gone, a network that
//! drops packets) is found by HTTP/2 keepalive and dropped, while a live idle follower is kept.
//! The client reaches the server through a proxy that can blackhole the connection: bytes
//! stop flowing both ways and no reset tells either end.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{TestServer, produce_request};
use ringlog_service::{ServerLimits, proto::ConsumeRequest};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// How long a condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// `GET /metrics`; returns the body.
async fn metrics(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the metrics endpoint");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split_once("\r\n\r\n").expect("an HTTP response").1.to_owned()
}

async fn followers(addr: SocketAddr) -> Option<f64> {
    let text = metrics(addr).await;
    text.lines().find_map(|line| line.strip_prefix("ringlog_active_followers ")?.parse().ok())
}

/// A proxy to `target` for one connection; sending `true` on the switch blackholes it.
async fn proxy(target: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, mut cut_rx) = watch::channel(false);
    tokio::spawn(async move {
        let (mut inbound, _) = listener.accept().await.unwrap();
        let mut outbound = TcpStream::connect(target).await.unwrap();
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
            _ = cut_rx.wait_for(|cut| *cut) => {}
        }
        // Hold both sockets, and read neither.
        std::future::pending::<()>().await;
        drop((inbound, outbound));
    });
    (addr, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_peer_vanished_is_dropped_and_a_live_one_is_kept() {
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    // A PING every 300 ms; a generous 5 s for the answer, so that a loaded machine does not
    // drop the live client.
    let limits = ServerLimits {
        http2_keepalive_interval: Some(Duration::from_millis(300)),
        http2_keepalive_timeout: Duration::from_secs(5),
        ..ServerLimits::default()
    };
    let server =
        TestServer::start_with(|server| server.limits(limits).metrics_listener(metrics_listener)).await;
    let mut direct = server.client().await;
    let (via_proxy, cut) = proxy(server.addr).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{via_proxy}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut behind_proxy = ringlog_service::proto::log_client::LogClient::new(channel);

    let mut live =
        direct.consume_stream(ConsumeRequest { offset: 0, max_records: 0 }).await.unwrap().into_inner();
    let _vanishing =
        behind_proxy.consume_stream(ConsumeRequest { offset: 0, max_records: 0 }).await.unwrap().into_inner();
    assert_eq!(followers(metrics_addr).await, Some(2.0));

    // The peer behind the proxy vanishes: its follower is dropped once a PING goes unanswered.
    cut.send(true).unwrap();
    let dropped = tokio::time::timeout(PATIENCE, async {
        while followers(metrics_addr).await != Some(1.0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(dropped.is_ok(), "the follower of a vanished peer is still open after {PATIENCE:?}");

    // The live follower, idle through all those PINGs, still follows.
    let offset = direct.produce(produce_request("after the keepalive")).await.unwrap().into_inner().offset;
    let next =
        tokio::time::timeout(PATIENCE, live.message()).await.expect("the live follower gets the record");
    assert_eq!(next.unwrap().unwrap().record.unwrap().offset, offset);
    assert_eq!(followers(metrics_addr).await, Some(1.0));
    drop(live);
    server.stop().await.unwrap();
}
