//! A cluster of real nodes in one process: each in its own directory, each serving its Raft
//! service over tonic on its own ephemeral port of 127.0.0.1.
//!
//! Waits are on openraft's metrics (`Raft::wait`) with generous bounds: a bound only turns a
//! hang into a failure, it never decides a verdict.

#![allow(dead_code)] // Each test file uses part of the harness.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use ringlog_cluster::{ClusterConfig, Faults, Node, NodeId, Peer};
use ringlog_engine::EntryId;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The bound of every wait: long enough for a loaded 2-core machine, short enough to fail.
pub const WAIT: Duration = Duration::from_secs(20);

/// Settings for tests: the defaults, with elections a little quicker so failovers stay short.
pub fn config() -> ClusterConfig {
    ClusterConfig {
        heartbeat_interval_ms: 100,
        election_timeout_min_ms: 800,
        election_timeout_max_ms: 1600,
        bootstrap_retry_ms: 200,
        ..ClusterConfig::default()
    }
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A node's Raft service on a listener, stopped by `stop`.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Serves `node`'s Raft service on `listener` until stopped.
fn serve(node: &Node, listener: TcpListener) -> Server {
    let (stop, stopped) = oneshot::channel::<()>();
    let service = node.service();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                stopped.await.ok();
            })
            .await
            .expect("raft service");
    });
    Server { stop, task }
}

impl Server {
    /// Closes the listener and every connection (peers see them go away and reconnect later).
    async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
    }
}

struct Member {
    dir: PathBuf,
    addr: SocketAddr,
    faults: Faults,
    running: Option<(Node, Server)>,
}

/// Nodes `1..=n` on loopback, each in a directory under one temp dir.
pub struct Cluster {
    _root: TempDir,
    pub peers: BTreeMap<NodeId, Peer>,
    config: ClusterConfig,
    members: BTreeMap<NodeId, Member>,
}

impl Cluster {
    /// Binds `n` ephemeral ports first (every node must know every address), then starts the
    /// nodes and serves them.
    pub async fn start(n: u64) -> Cluster {
        Self::start_some(n, 1..=n).await
    }

    /// A cluster of `n` peers of which only `running` are started.
    pub async fn start_some(n: u64, running: impl IntoIterator<Item = NodeId>) -> Cluster {
        Self::start_with(n, running, config()).await
    }

    /// A cluster of `n` peers with settings `config`, of which only `running` are started.
    pub async fn start_with(
        n: u64,
        running: impl IntoIterator<Item = NodeId>,
        config: ClusterConfig,
    ) -> Cluster {
        init_tracing();
        let root = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            peers.insert(id, Peer { addr: listener.local_addr().unwrap().to_string() });
            listeners.insert(id, listener);
        }
        let members = listeners
            .iter()
            .map(|(&id, l)| {
                let member = Member {
                    dir: root.path().join(format!("node-{id}")),
                    addr: l.local_addr().unwrap(),
                    faults: Faults::new(),
                    running: None,
                };
                (id, member)
            })
            .collect();
        let mut cluster = Cluster { _root: root, peers, config, members };
        let running: Vec<_> = running.into_iter().collect();
        for (id, listener) in listeners {
            if running.contains(&id) {
                cluster.run(id, listener).await;
            }
        }
        cluster
    }

    async fn run(&mut self, id: NodeId, listener: TcpListener) {
        let member = self.members.get_mut(&id).unwrap();
        let node =
            Node::start(id, &member.dir, self.peers.clone(), self.config.clone(), member.faults.clone())
                .await
                .unwrap();
        let server = serve(&node, listener);
        member.running = Some((node, server));
    }

    /// The running node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.members[&id].running.as_ref().unwrap_or_else(|| panic!("node {id} is stopped")).0
    }

    /// The ids of the running nodes.
    pub fn running(&self) -> Vec<NodeId> {
        self.members.iter().filter(|(_, m)| m.running.is_some()).map(|(&id, _)| id).collect()
    }

    /// Stops node `id`: its service first (so peers' connections close), then the node.
    pub async fn stop(&mut self, id: NodeId) {
        let (node, server) = self.members.get_mut(&id).unwrap().running.take().unwrap();
        server.stop().await;
        node.shutdown().await.unwrap();
    }

    /// Starts node `id` again from its directory, on its old address.
    pub async fn restart(&mut self, id: NodeId) {
        let listener = TcpListener::bind(self.members[&id].addr).await.unwrap();
        self.run(id, listener).await;
    }

    /// Starts a node that was never started.
    pub async fn start_node(&mut self, id: NodeId) {
        self.restart(id).await;
    }

    /// Starts a new node `id`, not among the first peers, empty: it waits for a leader to add
    /// it (`Raft::add_learner` with `self.peers[&id]`).
    pub async fn join(&mut self, id: NodeId) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        self.peers.insert(id, Peer { addr: addr.to_string() });
        let dir = self._root.path().join(format!("node-{id}"));
        self.members.insert(id, Member { dir, addr, faults: Faults::new(), running: None });
        self.run(id, listener).await;
    }

    /// Waits until every node in `among` sees the same leader, itself one of `among`, in the
    /// leader state and acknowledged by a quorum, and returns it.
    pub async fn leader(&self, among: &[NodeId]) -> NodeId {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let first = self.node(among[0]);
            let m = first
                .raft()
                .wait(Some(WAIT))
                .metrics(|m| m.current_leader.is_some_and(|l| among.contains(&l)), "a leader among the nodes")
                .await
                .unwrap();
            let leader = m.current_leader.unwrap();
            let agreed = among.iter().all(|&id| {
                let m = self.node(id).raft().metrics().borrow_watched().clone();
                m.current_leader == Some(leader)
            });
            let leading = self.node(leader).raft().metrics().borrow_watched().state == ServerState::Leader;
            if agreed && leading {
                // A leader takes writes only once a quorum acknowledged it (its lease); before
                // that, a write is refused with `LeaseExpired`.
                self.node(leader)
                    .raft()
                    .wait(Some(WAIT))
                    .leader_with_quorum_acked(None, format!("node {leader} holds a lease"))
                    .await
                    .unwrap();
                return leader;
            }
            assert!(tokio::time::Instant::now() < deadline, "nodes {among:?} agree on no leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `id`'s data directory.
    pub fn dir(&self, id: NodeId) -> std::path::PathBuf {
        self.members[&id].dir.clone()
    }

    /// The settings every node runs with.
    pub fn config(&self) -> ClusterConfig {
        self.config.clone()
    }

    /// Waits until node `id` has applied up to `index`.
    pub async fn applied(&self, id: NodeId, index: u64) {
        self.node(id)
            .raft()
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), format!("node {id} applies up to {index}"))
            .await
            .unwrap();
    }
}

/// Every entry of `log`, in order: `(id, kind, timestamp, payload)`.
pub fn entries(log: &ringlog_engine::Log) -> Vec<(EntryId, ringlog_engine::EntryKind, u64, bytes::Bytes)> {
    let mut out = Vec::new();
    let mut next = log.first_index();
    loop {
        let batch = log.read_entries(next, u64::MAX, usize::MAX).unwrap();
        let Some(last) = batch.last() else { return out };
        next = last.id.index + 1;
        out.extend(batch.into_iter().map(|e| (e.id, e.kind, e.timestamp_ms, e.payload)));
    }
}
