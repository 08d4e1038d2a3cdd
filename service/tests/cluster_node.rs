//! One node of a cluster, in process: a one-voter cluster (its own peer list) served by
//! `Server::replica`. Produce goes through Raft and is readable once applied; GetServers
//! names the node as leader; health turns SERVING once it leads; `/metrics` shows the Raft
//! state; stopping the server stops the node and releases its directory.

use std::{collections::BTreeMap, time::Duration};

use ringlog_cluster::{ClusterConfig, Faults, Node, Peer};
use ringlog_service::{
    Server,
    cluster::Replica,
    proto::{ConsumeRequest, GetServersRequest, ProduceRequest, Record, log_client::LogClient},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The value of the sample named exactly `sample` in a `/metrics` scrape.
async fn scrape(addr: std::net::SocketAddr, sample: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_voter_cluster_serves_log_v1_through_raft() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = metrics_listener.local_addr().unwrap();
    let peers = BTreeMap::from([(1, Peer { addr: addr.to_string() })]);
    let node = Node::start(1, dir.path(), peers, ClusterConfig::default(), Faults::new()).await.unwrap();
    let replica = Replica::new(node, BTreeMap::from([(1, addr.to_string())]), 8 << 20);
    let (stop, stopped) = oneshot::channel::<()>();
    let server =
        tokio::spawn(Server::replica(replica).metrics_listener(metrics_listener).serve(listener, async {
            let _ = stopped.await;
        }));

    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    // Health turns SERVING once the node leads (it initializes itself: the lowest id, alone).
    let mut health = HealthClient::new(channel.clone());
    let check = HealthCheckRequest { service: "log.v1.Log".into() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while health.check(check.clone()).await.unwrap().into_inner().status() != ServingStatus::Serving {
        assert!(tokio::time::Instant::now() < deadline, "the node never reported SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut client = LogClient::new(channel);
    let servers = client.get_servers(GetServersRequest {}).await.unwrap().into_inner().servers;
    assert_eq!(servers.len(), 1);
    assert_eq!(
        (servers[0].id.as_str(), servers[0].rpc_addr.clone(), servers[0].is_leader),
        ("1", addr.to_string(), true)
    );

    let records = ["a", "b", "c"].map(|v| Record { value: v.into(), ..Record::default() }).to_vec();
    let produced = client.produce(ProduceRequest { record: None, records }).await.unwrap().into_inner();
    assert_eq!(
        (produced.offset, produced.count),
        (0, 3),
        "offsets from 0 although Raft wrote entries before"
    );
    let read = client.consume(ConsumeRequest { offset: 0, max_records: 10 }).await.unwrap().into_inner();
    let values: Vec<_> = read.records.iter().map(|r| (r.offset, r.value.clone())).collect();
    assert_eq!(values, [(0, "a".into()), (1, "b".into()), (2, "c".into())]);

    assert_eq!(scrape(metrics, "ringlog_raft_is_leader").await, Some(1.0));
    assert_eq!(scrape(metrics, "ringlog_raft_leader_id").await, Some(1.0));
    assert!(scrape(metrics, "ringlog_raft_term").await.unwrap() >= 1.0);
    // A membership entry, the leader's blank entry, then the three records.
    let applied = scrape(metrics, "ringlog_raft_applied_index").await.unwrap();
    assert!(applied >= 5.0, "applied {applied}");
    assert_eq!(scrape(metrics, "ringlog_raft_last_log_index").await, Some(applied));
    assert_eq!(scrape(metrics, "ringlog_raft_leader_changes_total").await, Some(1.0));
    assert_eq!(scrape(metrics, "ringlog_next_offset").await, Some(3.0));

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    // The node is stopped and its directory released: it opens again, with the records.
    let (store, _sm) = ringlog_cluster::open(dir.path(), ringlog_engine::Config::default()).unwrap();
    assert_eq!(store.log().next_offset(), 3);
}

/// Three nodes in process, each served by `Server::replica` on its own port.
struct Three {
    addrs: Vec<std::net::SocketAddr>,
    faults: Vec<Faults>,
    stops: Vec<oneshot::Sender<()>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Three {
    async fn start() -> Three {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let peers: BTreeMap<u64, Peer> =
            addrs.iter().enumerate().map(|(i, a)| (i as u64 + 1, Peer { addr: a.to_string() })).collect();
        let names: BTreeMap<u64, String> = peers.iter().map(|(id, p)| (*id, p.addr.clone())).collect();
        let (mut faults, mut stops, mut dirs) = (Vec::new(), Vec::new(), Vec::new());
        for (i, listener) in listeners.into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let switch = Faults::new();
            let config = ClusterConfig {
                heartbeat_interval_ms: 100,
                election_timeout_min_ms: 500,
                election_timeout_max_ms: 1000,
                ..ClusterConfig::default()
            };
            let node =
                Node::start(i as u64 + 1, dir.path(), peers.clone(), config, switch.clone()).await.unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let server = Server::replica(Replica::new(node, names.clone(), 8 << 20));
            tokio::spawn(server.serve(listener, async {
                let _ = stopped.await;
            }));
            faults.push(switch);
            stops.push(stop);
            dirs.push(dir);
        }
        Three { addrs, faults, stops, _dirs: dirs }
    }

    async fn client(&self, i: usize) -> LogClient<tonic::transport::Channel> {
        LogClient::connect(format!("http://{}", self.addrs[i])).await.unwrap()
    }

    /// The index of the leader, once every node names the same one.
    async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut named = Vec::new();
            for i in 0..3 {
                let servers = self
                    .client(i)
                    .await
                    .get_servers(GetServersRequest {})
                    .await
                    .unwrap()
                    .into_inner()
                    .servers;
                named.push(servers.iter().find(|s| s.is_leader).map(|s| s.id.clone()));
            }
            if let Some(Some(id)) = named.first().cloned()
                && named.iter().all(|n| n.as_deref() == Some(id.as_str()))
            {
                return id.parse::<usize>().unwrap() - 1;
            }
            assert!(tokio::time::Instant::now() < deadline, "no agreed leader: {named:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A follower that lags (cut off from the leader's replication) still never calls an
/// acknowledged offset missing: it asks the leader, and waits for the record to arrive.
/// Produce on a follower is forwarded and gets the next offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_waits_for_an_acknowledged_record_instead_of_calling_it_missing() {
    let cluster = Three::start().await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let lagging = (leader + 2) % 3;
    let record = |v: &'static str| ProduceRequest {
        record: Some(Record { value: v.into(), ..Record::default() }),
        records: vec![],
    };

    // Forwarded from a follower: offsets from 0 as on the leader.
    let first = cluster.client(follower).await.produce(record("forwarded")).await.unwrap().into_inner();
    assert_eq!(first.offset, 0);

    // Cut the lagging node off from Raft (its log.v1 port still answers), then produce.
    let leader_id = leader as u64 + 1;
    let others: Vec<u64> = (1..=3).filter(|&id| id != lagging as u64 + 1).collect();
    cluster.faults[lagging].cut(others);
    let acked = cluster.client(leader).await.produce(record("while cut off")).await.unwrap().into_inner();
    assert_eq!(acked.offset, 1, "committed by the leader and the other follower");

    // Heal a moment later: the lagging node's Consume must wait for the record, not fail.
    let heal = cluster.faults[lagging].clone();
    let healer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        heal.heal();
    });
    let read = cluster.client(lagging).await.consume(ConsumeRequest { offset: 1, max_records: 0 }).await;
    let read = read
        .unwrap_or_else(|status| panic!("the lagging node called acknowledged offset 1 missing: {status:?}"));
    assert_eq!(read.into_inner().record.unwrap().value, "while cut off");
    healer.await.unwrap();

    // An offset nobody wrote is still OUT_OF_RANGE on a follower.
    let missing = cluster
        .client(lagging)
        .await
        .consume(ConsumeRequest { offset: 99, max_records: 0 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::OutOfRange, "{missing:?}");
    assert_ne!(leader_id, lagging as u64 + 1);
    for stop in cluster.stops {
        let _ = stop.send(());
    }
}
