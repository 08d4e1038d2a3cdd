//! A loopback ringlog of real processes: one `ringlog serve` (a single node), or a Raft
//! cluster of several, each a [`Node`] on its own port and data directory under one
//! temporary directory.
//!
//! Nodes `0..n` have Raft ids `1..=n` and are all first voters (`--peers` lists every one).
//! [`Cluster::start`] spawns them all (the lowest id initializes the cluster only once every
//! peer answers), waits for each one's `serving` line and for a leader that the nodes agree
//! on through `log.v1.Log/GetServers`. Every wait is bounded. Dropping the cluster kills
//! every node and removes the directory.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use ringlog_service::proto::{
    GetServersRequest,
    admin::{StatusRequest, StatusResponse, cluster_client::ClusterClient},
    log_client::LogClient,
};
use tonic::transport::Channel;

use crate::node::{Node, NodeSpec, free_addrs, ringlog_binary};

/// The bound on a node's start and on an election.
pub const WAIT: Duration = Duration::from_secs(30);

/// The longest a probe of one node (GetServers, Status) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// What every node of a cluster is started with.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Nodes: 1 is a single node (no `--peers`), more a Raft cluster.
    pub nodes: usize,
    /// Flags for every node (`--durability`, `--backend`, the Raft timers).
    pub flags: Vec<String>,
    /// Where the temporary directory goes [default: the system's].
    pub parent_dir: Option<PathBuf>,
}

/// Running nodes, killed when dropped.
pub struct Cluster {
    spec: ClusterSpec,
    binary: PathBuf,
    nodes: Vec<Node>,
    // After `nodes`, so that the processes are killed before their directories go.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `spec.nodes` nodes and waits until they serve and (for a cluster) agree on a
    /// leader.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Cluster> {
        anyhow::ensure!(spec.nodes >= 1, "a cluster needs a node");
        let dir = match &spec.parent_dir {
            Some(parent) => tempfile::Builder::new().prefix("ringlog-bench-").tempdir_in(parent),
            None => tempfile::Builder::new().prefix("ringlog-bench-").tempdir(),
        }
        .context("making a temporary directory for the nodes")?;
        crate::node::own_dir(dir.path(), true);
        let binary = ringlog_binary()?;
        let addrs = free_addrs(spec.nodes)?;
        let peers = (spec.nodes > 1).then(|| peers(&addrs));
        let mut cluster = Cluster { spec, binary, nodes: Vec::new(), dir };
        for (i, addr) in addrs.into_iter().enumerate() {
            let node = cluster.spec_for(i, addr, peers.clone());
            cluster.nodes.push(Node::spawn(node)?);
        }
        for node in &mut cluster.nodes {
            node.wait_serving(WAIT).await?;
        }
        cluster.leader().await?;
        Ok(cluster)
    }

    fn spec_for(&self, i: usize, addr: SocketAddr, peers: Option<String>) -> NodeSpec {
        NodeSpec {
            binary: self.binary.clone(),
            id: i as u64 + 1,
            addr,
            dir: self.dir.path().join(format!("node{}", i + 1)),
            peers,
            flags: self.spec.flags.clone(),
        }
    }

    /// Nodes, running or killed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].spec.addr
    }

    /// Every node's address, comma-separated.
    pub fn addrs(&self) -> String {
        self.nodes.iter().map(|n| n.spec.addr.to_string()).collect::<Vec<_>>().join(",")
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].spec.dir.clone()
    }

    /// Whether node `i`'s process runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].pid().is_some()
    }

    /// The `ringlog` binary the nodes run.
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    /// The leader's index, once a running node names a running leader (bounded by [`WAIT`]).
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + WAIT;
        loop {
            for i in (0..self.len()).filter(|&i| self.is_running(i)) {
                if let Some(leader) = self.leader_seen_by(i).await
                    && self.is_running(leader)
                {
                    return Ok(leader);
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no leader within {WAIT:?}:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The leader node `i` names (GetServers), if it answers within [`PROBE_TIMEOUT`].
    pub async fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let ask = async {
            let mut client = LogClient::new(channel(self.addr(i)).await.ok()?);
            let servers = client.get_servers(GetServersRequest {}).await.ok()?.into_inner().servers;
            let leader = servers.iter().find(|s| s.is_leader)?;
            let id: usize = leader.id.parse().ok()?;
            (1..=self.len()).contains(&id).then(|| id - 1)
        };
        tokio::time::timeout(PROBE_TIMEOUT, ask).await.ok().flatten()
    }

    /// Node `i`'s own view (`ringlog.admin.v1.Cluster/Status`).
    pub async fn status(&self, i: usize) -> anyhow::Result<StatusResponse> {
        let ask = async {
            let mut admin = ClusterClient::new(channel(self.addr(i)).await?);
            anyhow::Ok(admin.status(StatusRequest {}).await?.into_inner())
        };
        tokio::time::timeout(PROBE_TIMEOUT, ask)
            .await
            .with_context(|| format!("node {} did not answer Status", i + 1))?
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts killed node `i` again on its directory and waits for it to serve.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].start()?;
        self.nodes[i].wait_serving(WAIT).await
    }

    /// Starts one more node, empty, with every node in its `--peers` (itself included), as
    /// `ringlog cluster add` expects; returns its index once it serves.
    pub async fn spawn_joiner(&mut self) -> anyhow::Result<usize> {
        let i = self.len();
        let addr = free_addrs(1)?[0];
        let mut addrs: Vec<SocketAddr> = self.nodes.iter().map(|n| n.spec.addr).collect();
        addrs.push(addr);
        let node = self.spec_for(i, addr, Some(peers(&addrs)));
        self.nodes.push(Node::spawn(node)?);
        self.nodes[i].wait_serving(WAIT).await?;
        Ok(i)
    }

    /// CPU time (user + system) of every running node, summed.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        self.nodes.iter().filter(|n| n.pid().is_some()).map(Node::cpu_time).sum()
    }

    /// Everything node `i` has logged.
    pub fn log_text(&self, i: usize) -> String {
        self.nodes[i].log_text()
    }

    /// The tail of every node's log, for error messages.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| format!("--- node {} ---\n{}\n", n.spec.id, n.log_tail())).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The fields drop after this: the nodes are killed, then the directory goes.
        crate::node::own_dir(self.dir.path(), false);
    }
}

/// `1=HOST:PORT,2=...` for nodes at `addrs`.
fn peers(addrs: &[SocketAddr]) -> String {
    addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",")
}

/// A connection to `addr` that fails fast when nothing listens there.
pub async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    crate::tls::endpoint(&addr.to_string())?
        .connect_timeout(PROBE_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_number_nodes_from_one() {
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
        assert_eq!(peers(&addrs), "1=127.0.0.1:1,2=127.0.0.1:2");
    }
}
