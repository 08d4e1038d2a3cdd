//! A cluster of real `ringlog serve` processes on loopback, for the failure tests: start N
//! nodes (each with its own data directory and a pre-picked port, `--durability always`),
//! SIGKILL and restart them (same directory, same port), find the leader through the book's
//! `GetServers`, wait until a node has committed an offset, read a node's whole log, and
//! check it against the [`history::History`] that the producers of [`load`] record.
//!
//! Every wait here is bounded and waits for a condition (a log line, an answer), never for
//! a fixed time; a bound that runs out fails the test with the nodes' logs.

#![allow(dead_code)]

pub mod history;
pub mod load;
pub mod partition;

use std::{
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use history::History;
use partition::Partitions;
use ringlog_service::proto::{
    ConsumeRequest, GetServersRequest,
    admin::{StatusRequest, StatusResponse, cluster_client::ClusterClient},
    log_client::LogClient,
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

/// The binary under test.
pub const RINGLOG: &str = env!("CARGO_BIN_EXE_ringlog");

/// The bound on every wait for the cluster (a leader, a start, a commit): generous, since
/// three fsyncing nodes share two cores with the build.
pub const WAIT: Duration = Duration::from_secs(30);

/// A pause between polls of a condition (never a verdict).
pub const POLL: Duration = Duration::from_millis(25);

/// The log filter of the nodes: the `serving` line, and openraft's warnings only.
const LOG_LEVEL: &str = "info,openraft=warn";

/// How many times each node was killed: a producer compares it before and after a failed
/// call to tell "the node I talked to was killed" from "a live node answered this".
#[derive(Debug)]
pub struct Liveness {
    kills: Vec<AtomicU64>,
}

impl Liveness {
    pub fn kills(&self, node: usize) -> u64 {
        self.kills[node].load(Ordering::SeqCst)
    }
}

/// One node: its id (index + 1), address, data directory, and the process when running.
struct Node {
    id: u64,
    addr: SocketAddr,
    /// Where its peers dial it: `addr`, or its proxy in a partitionable cluster.
    peer_addr: SocketAddr,
    /// Its `--peers` when not the cluster's (a node added later names itself too).
    own_peers: Option<String>,
    dir: tempfile::TempDir,
    process: Option<Child>,
    /// Everything every incarnation wrote to stderr, for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
}

/// A running cluster (nodes indexed from 0; node `i` has Raft id `i + 1`).
pub struct Cluster {
    nodes: Vec<Node>,
    peers: String,
    /// Flags every node gets besides the harness's own (TLS, say).
    extra_args: Vec<String>,
    liveness: Arc<Liveness>,
    /// The proxies between the nodes, in a partitionable cluster.
    partitions: Option<Partitions>,
}

/// `n` free loopback ports: bind port 0 `n` times (all held at once, so they differ), read
/// the ports, let them go.
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// A client of `addr`, or `None` when nothing answers there (within a short connect bound).
pub async fn connect(addr: SocketAddr) -> Option<LogClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    Some(LogClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20))
}

impl Cluster {
    /// Starts `n` nodes that name each other in `--peers`, and waits until each says it is
    /// serving (all are spawned first: the lowest id initializes only when every peer
    /// answers).
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// [`Cluster::start`], every node with `extra_args` too.
    pub async fn start_with(n: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_inner(n, extra_args, false).await
    }

    /// [`Cluster::start`], with the nodes reaching each other through proxies that
    /// [`Cluster::isolate`] can cut (see [`partition`]).
    pub async fn start_partitionable(n: usize) -> Cluster {
        Cluster::start_inner(n, &[], true).await
    }

    async fn start_inner(n: usize, extra_args: &[&str], partitionable: bool) -> Cluster {
        let addrs = free_addrs(n);
        let partitions = match partitionable {
            true => Some(Partitions::start(&addrs).await),
            false => None,
        };
        let peer_addr = |i: usize| partitions.as_ref().map_or(addrs[i], |p| p.addr(i));
        let peers = (0..n).map(|i| format!("{}={}", i + 1, peer_addr(i))).collect::<Vec<_>>().join(",");
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| Node {
                id: i as u64 + 1,
                addr: *addr,
                peer_addr: peer_addr(i),
                own_peers: None,
                dir: tempfile::tempdir().unwrap(),
                process: None,
                stderr: Arc::default(),
            })
            .collect();
        let liveness = Arc::new(Liveness { kills: (0..n).map(|_| AtomicU64::new(0)).collect() });
        let extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
        let mut cluster = Cluster { nodes, peers, extra_args, liveness, partitions };
        cluster.start_nodes(&(0..n).collect::<Vec<_>>()).await;
        cluster
    }

    /// Cuts node `i` off from every other node, both ways (a partitionable cluster only).
    pub fn isolate(&self, i: usize) {
        let others = (0..self.len()).filter(|&o| o != i);
        self.partitions.as_ref().expect("a partitionable cluster").isolate(i, others);
    }

    /// Ends every partition.
    pub fn heal(&self) {
        self.partitions.as_ref().expect("a partitionable cluster").heal();
    }

    /// The `--peers` every node was given.
    pub fn peers(&self) -> &str {
        &self.peers
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    pub fn is_live(&self, i: usize) -> bool {
        self.nodes[i].process.is_some()
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_live(i)).collect()
    }

    /// Starts a new, empty node (the next id) that names the cluster and itself in `--peers`
    /// and waits for a leader to add it (`ringlog cluster add`); returns its index.
    pub async fn start_new_node(&mut self) -> usize {
        assert!(self.partitions.is_none(), "not in a partitionable cluster");
        let addr = free_addrs(1)[0];
        let id = self.nodes.len() as u64 + 1;
        self.nodes.push(Node {
            id,
            addr,
            peer_addr: addr,
            own_peers: Some(format!("{},{id}={addr}", self.peers)),
            dir: tempfile::tempdir().unwrap(),
            process: None,
            stderr: Arc::default(),
        });
        self.liveness =
            Arc::new(Liveness { kills: (0..self.nodes.len()).map(|_| AtomicU64::new(0)).collect() });
        let i = self.nodes.len() - 1;
        self.start_nodes(&[i]).await;
        i
    }

    /// Spawns the given (stopped) nodes, then waits for each one's `serving` line.
    async fn start_nodes(&mut self, which: &[usize]) {
        let mut starting = Vec::new();
        for &i in which {
            assert!(!self.is_live(i), "node {i} is already running");
            starting.push((i, self.spawn(i)));
        }
        let deadline = Instant::now() + WAIT;
        for (i, mut rx) in starting {
            let addr = self.nodes[i].addr;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(line))
                        if line.contains("serving") && crate::process::logged_addr(&line) == Some(addr) =>
                    {
                        break;
                    }
                    Ok(Some(line))
                        if line.contains("Address already in use") && Instant::now() < deadline =>
                    {
                        // The port was picked free, but while this node was down another
                        // connection may have taken it as its source port: try again.
                        let child = self.nodes[i].process.take().unwrap();
                        reap(child);
                        tokio::time::sleep(POLL).await;
                        rx = self.spawn(i);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("node {i} exited before serving:\n{}", self.logs()),
                    Err(_) => panic!("node {i} did not say it is serving within {WAIT:?}:\n{}", self.logs()),
                }
            }
        }
    }

    /// Spawns node `i`; its stderr lines come on the returned channel (and into its log).
    fn spawn(&mut self, i: usize) -> mpsc::UnboundedReceiver<String> {
        let node = &mut self.nodes[i];
        node.stderr.lock().unwrap().push("----- starts -----".to_owned());
        let mut command = Command::new(RINGLOG);
        command
            .arg("serve")
            .args(["--node-id", &node.id.to_string()])
            .args(["--addr", &node.addr.to_string()])
            .arg("--data-dir")
            .arg(node.dir.path())
            .args(["--peers", node.own_peers.as_deref().unwrap_or(&self.peers)])
            .args(["--durability", "always"])
            .args(["--log-level", LOG_LEVEL])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Only the flags above configure the node.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RINGLOG_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().expect("start ringlog serve");
        if let Some(partitions) = &self.partitions {
            partitions.set_pid(i, Some(child.id()));
        }
        let stderr = child.stderr.take().unwrap();
        let kept = node.stderr.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        // Keeps draining stderr so that the node never blocks on a full pipe.
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        node.process = Some(child);
        rx
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        // Counted before the signal, so that a producer that sees the connection break
        // already sees the kill.
        self.liveness.kills[i].fetch_add(1, Ordering::SeqCst);
        let child = self.nodes[i].process.take().unwrap_or_else(|| panic!("node {i} is not running"));
        reap(child);
        if let Some(partitions) = &self.partitions {
            partitions.set_pid(i, None);
        }
        self.nodes[i].stderr.lock().unwrap().push("----- SIGKILLed -----".to_owned());
    }

    /// Starts node `i` again on its directory and port.
    pub async fn restart(&mut self, i: usize) {
        self.start_nodes(&[i]).await;
    }

    /// Starts every stopped node (all spawned before any is waited for).
    pub async fn restart_all(&mut self) {
        let stopped: Vec<usize> = (0..self.len()).filter(|&i| !self.is_live(i)).collect();
        self.start_nodes(&stopped).await;
    }

    /// Panics (with the logs) if a node that the test did not kill has exited.
    pub fn assert_running(&mut self) {
        for i in 0..self.len() {
            if let Some(child) = &mut self.nodes[i].process
                && let Some(status) = child.try_wait().unwrap()
            {
                panic!("node {i} (id {}) exited on its own with {status}:\n{}", i + 1, self.logs());
            }
        }
    }

    /// The last lines of every node's stderr.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let lines = node.stderr.lock().unwrap();
            text.push_str(&format!("===== node {i} (id {}, {}), last lines =====\n", node.id, node.addr));
            for line in &lines[lines.len().saturating_sub(40)..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// A client of node `i`, waiting (bounded) until it accepts connections.
    pub async fn client(&self, i: usize) -> LogClient<Channel> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(client) = connect(self.nodes[i].addr).await {
                return client;
            }
            assert!(Instant::now() < deadline, "node {i} refused connections for {WAIT:?}:\n{}", self.logs());
            tokio::time::sleep(POLL).await;
        }
    }

    /// The index of the leader: asks GetServers on the live nodes until one names a live
    /// leader and that leader names itself. Checks every answer lists the cluster's members
    /// at their `--peers` addresses.
    pub async fn leader(&mut self) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            self.assert_running();
            for i in self.live() {
                if let Some(leader) = self.leader_seen_by(i).await
                    && self.is_live(leader)
                    && self.leader_seen_by(leader).await == Some(leader)
                {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "no live leader within {WAIT:?}:\n{}", self.logs());
            tokio::time::sleep(POLL).await;
        }
    }

    /// The index of the leader that every node in `nodes` names, once they agree on one of
    /// themselves (a majority that elected a leader while the rest is cut off).
    pub async fn leader_among(&mut self, nodes: &[usize]) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            self.assert_running();
            let mut seen = Vec::new();
            for &i in nodes {
                seen.push(self.leader_seen_by(i).await);
            }
            if let Some(Some(leader)) = seen.first()
                && nodes.contains(leader)
                && seen.iter().all(|s| *s == Some(*leader))
            {
                return *leader;
            }
            assert!(
                Instant::now() < deadline,
                "{nodes:?} agreed on no leader within {WAIT:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Node `i`'s own view of the cluster (`ringlog.admin.v1.Cluster/Status`).
    pub async fn status(&self, i: usize) -> StatusResponse {
        let channel = Endpoint::from_shared(format!("http://{}", self.nodes[i].addr)).unwrap().connect_lazy();
        let answer = tokio::time::timeout(WAIT, ClusterClient::new(channel).status(StatusRequest {})).await;
        match answer {
            Ok(Ok(status)) => status.into_inner(),
            other => panic!("node {i}: Status: {other:?}\n{}", self.logs()),
        }
    }

    /// Node `i`'s answer to GetServers: the index of the server it marks leader, if any.
    async fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let mut client = connect(self.nodes[i].addr).await?;
        let answer = tokio::time::timeout(Duration::from_secs(5), client.get_servers(GetServersRequest {}))
            .await
            .ok()?
            .ok()?
            .into_inner();
        let leaders: Vec<&str> =
            answer.servers.iter().filter(|s| s.is_leader).map(|s| s.id.as_str()).collect();
        assert!(leaders.len() <= 1, "node {i}: GetServers marks several leaders: {leaders:?}");
        // Before the cluster is initialized a node may not know the members yet.
        let leader =
            leaders.first()?.parse::<usize>().unwrap_or_else(|_| panic!("node {i}: leader id {leaders:?}"))
                - 1;
        let mut listed: Vec<(u64, String)> = answer
            .servers
            .iter()
            .map(|s| {
                let id =
                    s.id.parse()
                        .unwrap_or_else(|_| panic!("node {i}: GetServers id {:?} is not a number", s.id));
                (id, s.rpc_addr.clone())
            })
            .collect();
        listed.sort();
        let expected: Vec<(u64, String)> =
            self.nodes.iter().map(|n| (n.id, n.peer_addr.to_string())).collect();
        assert_eq!(listed, expected, "node {i}: GetServers lists every member at its --peers address");
        Some(leader)
    }

    /// Waits (bounded) until node `i` serves `offset` through Consume: it has committed and
    /// applied it.
    pub async fn wait_committed(&self, i: usize, offset: u64) {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Some(mut client) = connect(self.nodes[i].addr).await {
                match client.consume(ConsumeRequest { offset, max_records: 0 }).await {
                    Ok(answer) => {
                        let record = answer.into_inner().record.expect("Consume answers with a record");
                        assert_eq!(
                            record.offset, offset,
                            "node {i}: Consume({offset}) answers its own offset"
                        );
                        return;
                    }
                    Err(status) if matches!(status.code(), Code::OutOfRange | Code::Unavailable) => {
                        last = Some(status);
                    }
                    Err(status) => panic!("node {i}: Consume({offset}) failed: {status:?}\n{}", self.logs()),
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not commit offset {offset} within {WAIT:?} (last answer {last:?}):\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Node `i`'s whole log through Consume (batches of up to 1000), from 0 to the first
    /// OUT_OF_RANGE, as `(offset the node gave, value)`.
    pub async fn read_all(&self, i: usize) -> Vec<(u64, Bytes)> {
        let deadline = Instant::now() + WAIT;
        let mut client = self.client(i).await;
        let mut records = Vec::new();
        let mut offset = 0;
        loop {
            match client.consume(ConsumeRequest { offset, max_records: 1000 }).await {
                Ok(answer) => {
                    let batch = answer.into_inner().records;
                    assert!(
                        !batch.is_empty(),
                        "node {i}: a batch read at {offset} returns at least one record"
                    );
                    offset += batch.len() as u64;
                    records.extend(batch.into_iter().map(|r| (r.offset, r.value)));
                }
                Err(status) if status.code() == Code::OutOfRange => return records,
                Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                    client = self.client(i).await;
                }
                Err(status) => panic!("node {i}: reading offset {offset}: {status:?}"),
            }
        }
    }

    /// Node `i`'s log from 0 through offset `through`, with ConsumeStream (see [`follow`]).
    pub async fn read_stream(&self, i: usize, through: u64) -> Vec<(u64, Bytes)> {
        let (_through, rx) = watch::channel(Some(through));
        follow(self.client(i).await, i, rx).await
    }

    /// Every live node caught up with the last acknowledged offset, and its whole log checked
    /// against the history (see [`History::observe`]). Returns the records read per node.
    pub async fn check(&mut self, history: &Mutex<History>, when: &str) -> Vec<usize> {
        self.assert_running();
        let last = history.lock().unwrap().last_acked();
        let mut read = Vec::new();
        for i in self.live() {
            if let Some(last) = last {
                self.wait_committed(i, last).await;
            }
            let records = self.read_all(i).await;
            read.push(records.len());
            self.record(history, i, &records, when);
        }
        read
    }

    /// Checks one complete observation of node `i` (it has every acknowledged offset).
    pub fn record(&self, history: &Mutex<History>, i: usize, records: &[(u64, Bytes)], when: &str) {
        let violations = history.lock().unwrap().observe(&format!("node {i}"), records, true);
        if !violations.is_empty() {
            let list: Vec<String> = violations.iter().take(20).map(|v| format!("  {v}")).collect();
            panic!(
                "{when}: {} violations reading node {i} ({} records), first ones:\n{}\n{}",
                violations.len(),
                records.len(),
                list.join("\n"),
                self.logs()
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test must not leave nodes behind.
        for node in &mut self.nodes {
            if let Some(child) = node.process.take() {
                reap(child);
            }
        }
    }
}

/// Node `i`'s log from 0 with ConsumeStream (one record per message, as the book's clients
/// read), following its committed tail until `through` names an offset and that offset has
/// been read. Each message is waited for within [`WAIT`] (while the offset is not named yet
/// or not reached).
pub async fn follow(
    mut client: LogClient<Channel>,
    i: usize,
    mut through: watch::Receiver<Option<u64>>,
) -> Vec<(u64, Bytes)> {
    let mut stream = client
        .consume_stream(ConsumeRequest { offset: 0, max_records: 0 })
        .await
        .unwrap_or_else(|status| panic!("node {i}: ConsumeStream: {status:?}"))
        .into_inner();
    let mut records = Vec::new();
    let mut named = true;
    loop {
        if let Some(through) = *through.borrow()
            && records.len() as u64 > through
        {
            return records;
        }
        tokio::select! {
            message = tokio::time::timeout(WAIT, stream.message()) => {
                let message = message
                    .unwrap_or_else(|_| panic!("node {i}: ConsumeStream stalled after {} records", records.len()))
                    .unwrap_or_else(|status| panic!("node {i}: ConsumeStream failed: {status:?}"))
                    .unwrap_or_else(|| panic!("node {i}: ConsumeStream ended after {} records", records.len()));
                let record = message.record.expect("ConsumeStream with max_records 0 answers with a record");
                records.push((record.offset, record.value));
            }
            changed = through.changed(), if named => named = changed.is_ok(),
        }
    }
}

/// SIGKILL (if still running) and wait for the process to be gone.
fn reap(mut child: Child) {
    let _ = child.kill();
    child.wait().expect("reap ringlog serve");
}
