//! log.v1 on a node of a cluster: where a produce goes, and who the servers are.
//!
//! Every node serves every call (`replication.md`, decisions 4 and 6). Reads need nothing
//! from here: the node's log only lets readers see what this node applied, so Consume and
//! ConsumeStream read committed records from the local log as on a single node. A produce
//! goes through Raft on the leader (`Replica::submit`): its records become consecutive
//! entries of one batch, so their offsets are contiguous, and it is answered once they are
//! applied here (committed on a majority). A node that is not the leader forwards the request
//! to the leader over a cached channel, marked so that the leader never forwards it again.
//!
//! A producer gets `UNAVAILABLE` (retryable) whenever the outcome is "not written" or
//! "unknown": no leader known, a forward that failed, leadership lost while the entries were
//! in flight. A producer that retries after an unknown outcome may write a record twice
//! (at-least-once, as Kafka without idempotence).

use std::{
    collections::BTreeMap,
    future::Future,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures_util::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, Fatal};
use openraft::raft::WriteResult;
use ringlog_cluster::{Node, NodeId, Record as RaftRecord, TypeConfig};
use tonic::{Request, Status, transport::Channel};
use tracing::debug;

use crate::proto::{
    ProduceRequest, Record, Server,
    admin::{StatusRequest, cluster_client::ClusterClient},
    log_client::LogClient,
};

/// The metadata key a forwarded produce carries: its receiver must be the leader.
pub(crate) const FORWARDED: &str = "ringlog-forwarded";

/// How long a produce waits for a leader that has just been elected to accept writes (it
/// refuses them until a quorum has acknowledged it) before answering `UNAVAILABLE`.
const LEADER_SETTLE: Duration = Duration::from_secs(2);

/// A node of a cluster, as the log.v1 service sees it.
pub struct Replica {
    node: Node,
    /// Where clients dial each node: `--peers`, with `--advertise-addr` for this one.
    addrs: BTreeMap<NodeId, String>,
    message_bytes_max: usize,
    /// The channel to the leader last talked to.
    leader_channel: Mutex<Option<(NodeId, Channel)>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("id", &self.node.id()).field("addrs", &self.addrs).finish()
    }
}

/// The outcome of a produce handed to Raft: the first offset once applied.
pub(crate) type Committed = std::pin::Pin<Box<dyn Future<Output = Result<u64, Status>> + Send>>;

impl Replica {
    /// `addrs`: the address clients dial for each node; `message_bytes_max`: the log.v1
    /// message limit, for forwarded requests.
    pub fn new(node: Node, addrs: BTreeMap<NodeId, String>, message_bytes_max: usize) -> Replica {
        Replica { node, addrs, message_bytes_max, leader_channel: Mutex::new(None) }
    }

    /// The Raft node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Stops the node (and closes its log).
    pub async fn shutdown(&self) -> Result<(), ringlog_cluster::Error> {
        self.node.shutdown().await
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.node.raft().metrics().borrow_watched().current_leader
    }

    /// The cluster's members with the addresses clients dial, and which one leads.
    pub fn servers(&self) -> Vec<Server> {
        let metrics = self.node.raft().metrics().borrow_watched().clone();
        let leader = metrics.current_leader;
        let mut members: BTreeMap<NodeId, String> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, peer)| (*id, peer.addr.clone()))
            .collect();
        if members.is_empty() {
            // Not initialized yet: the static peer list is all there is.
            members = self.addrs.clone();
        }
        for (id, addr) in &self.addrs {
            // Clients dial the configured address (an advertised one may differ from the
            // Raft address in the membership).
            if let Some(member) = members.get_mut(id) {
                member.clone_from(addr);
            }
        }
        members
            .into_iter()
            .map(|(id, rpc_addr)| Server { id: id.to_string(), rpc_addr, is_leader: Some(id) == leader })
            .collect()
    }

    /// Hands `values` to Raft as consecutive entries (the await returns once they are
    /// queued, so requests submitted one after another get increasing offsets), or forwards
    /// them to the leader; the returned future gives the first offset once they are applied.
    pub(crate) async fn submit(&self, values: Vec<Bytes>, forwarded: bool) -> Result<Committed, Status> {
        let deadline = Instant::now() + LEADER_SETTLE;
        loop {
            let me = self.node.id();
            let leader = self.leader();
            if leader.is_some_and(|leader| leader != me) {
                if forwarded {
                    return Err(Status::unavailable(format!(
                        "node {me} is not the leader (node {} is): a forwarded produce is not forwarded again",
                        leader.unwrap_or_default()
                    )));
                }
                return Ok(self.forward(leader.expect("checked"), values));
            }
            if leader.is_none() && Instant::now() >= deadline {
                return Err(Status::unavailable(format!("node {me} knows no leader: retry")));
            }
            if leader.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let timestamp_ms =
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let count = values.len();
            let records = values.iter().cloned().map(|value| RaftRecord { timestamp_ms, value }.into());
            let mut results = self.node.raft().client_write_many(records).await.map_err(stopped)?;
            // The batch was queued as one: either every entry was refused before it was
            // appended, or every entry was appended. A refusal is safe to retry or forward.
            let first = match results.next().await {
                Some(Ok(Err(ClientWriteError::ForwardToLeader(refused)))) => {
                    debug!(reason = ?refused, "produce refused before append; retrying");
                    if Instant::now() >= deadline {
                        return Err(Status::unavailable(format!(
                            "node {me} cannot take writes yet: {refused}"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                first => first,
            };
            return Ok(Box::pin(async move {
                let first = applied_offset(first)?;
                for expected in first + 1..first + count as u64 {
                    let offset = applied_offset(results.next().await)?;
                    if offset != expected {
                        return Err(Status::internal(format!(
                            "a batch's records were applied at offsets {first}.. and {offset}, not contiguously"
                        )));
                    }
                }
                Ok(first)
            }));
        }
    }

    /// Sends `values` to the leader as one produce request.
    fn forward(&self, leader: NodeId, values: Vec<Bytes>) -> Committed {
        let client = self.leader_client(leader);
        Box::pin(async move {
            let mut client = client?;
            let records = values.into_iter().map(|value| Record { value, ..Record::default() }).collect();
            let mut request = Request::new(ProduceRequest { record: None, records });
            request.metadata_mut().insert(FORWARDED, "1".parse().expect("ascii"));
            match client.produce(request).await {
                Ok(response) => Ok(response.into_inner().offset),
                // What the leader answered is the answer (a bad request, a full disk, ...),
                // except that a transport failure (UNKNOWN) is retryable.
                Err(status) if status.code() == tonic::Code::Unknown => Err(Status::unavailable(format!(
                    "forwarding to the leader (node {leader}) failed: {status}"
                ))),
                Err(status) => Err(status),
            }
        })
    }

    /// A client of the leader's log.v1 service, on a channel cached while the leader stays
    /// the same.
    fn leader_client(&self, leader: NodeId) -> Result<LogClient<Channel>, Status> {
        let client = LogClient::new(self.leader_channel(leader)?)
            .max_decoding_message_size(self.message_bytes_max)
            .max_encoding_message_size(self.message_bytes_max);
        Ok(client)
    }

    fn leader_channel(&self, leader: NodeId) -> Result<Channel, Status> {
        let mut cached = self.leader_channel.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, channel)) = cached.as_ref()
            && *id == leader
        {
            return Ok(channel.clone());
        }
        let addr = self
            .servers()
            .into_iter()
            .find(|server| server.id == leader.to_string())
            .map(|server| server.rpc_addr)
            .ok_or_else(|| Status::unavailable(format!("the leader (node {leader}) has no known address")))?;
        let tls = self.node.peer_tls();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Status::unavailable(format!("the leader's address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(1));
        if let Some(tls) = tls {
            // The node's own certificate: the leader lets it forward (`replicate`).
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Status::unavailable(format!("TLS to the leader at {addr}: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        *cached = Some((leader, channel.clone()));
        Ok(channel)
    }

    /// On a follower, the offset below which the leader serves records (everything it
    /// acknowledged is below it); `None` on the leader, which serves whatever it acknowledged.
    pub(crate) async fn leader_readable_offset(&self) -> Result<Option<u64>, Status> {
        let me = self.node.id();
        let leader = match self.leader() {
            Some(leader) if leader == me => return Ok(None),
            Some(leader) => leader,
            None => return Err(Status::unavailable(format!("node {me} knows no leader: retry"))),
        };
        let mut admin = ClusterClient::new(self.leader_channel(leader)?);
        let status = admin.status(StatusRequest {}).await.map_err(|e| {
            Status::unavailable(format!("asking the leader (node {leader}) how far it is: {e}"))
        })?;
        Ok(Some(status.into_inner().readable_offset))
    }
}

/// One past `id`'s index (0 for none): how many entries a log holds up to it.
pub(crate) fn entries_through(id: Option<ringlog_cluster::LogId>) -> u64 {
    id.map_or(0, |id| id.index + 1)
}

/// How far a follower's log is known to reach, as its leader sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Progress {
    /// One past the last entry it is known to hold.
    pub(crate) matched: u64,
    /// Entries it is behind the leader's log.
    pub(crate) lag: u64,
}

/// On the leader, every other member's [`Progress`]; empty on any other node.
pub(crate) fn followers(m: &openraft::RaftMetrics<TypeConfig>) -> BTreeMap<NodeId, Progress> {
    let last = m.last_log_index.map_or(0, |i| i + 1);
    let Some(replication) = &m.replication else { return BTreeMap::new() };
    replication
        .iter()
        .filter(|(id, _)| **id != m.id)
        .map(|(id, matched)| {
            let matched = entries_through(*matched);
            (*id, Progress { matched, lag: last.saturating_sub(matched) })
        })
        .collect()
}

/// One entry's outcome from `client_write_many`.
type Applied = Result<WriteResult<TypeConfig>, Fatal<TypeConfig>>;

/// The offset of one applied entry, or the status of why its outcome is unknown.
fn applied_offset(result: Option<Applied>) -> Result<u64, Status> {
    match result {
        Some(Ok(Ok(applied))) => Ok(applied.response.offset),
        Some(Ok(Err(error))) => Err(Status::unavailable(format!(
            "leadership changed while the records were in flight (they may or may not be written): {error}"
        ))),
        Some(Err(fatal)) => Err(stopped(fatal)),
        None => Err(Status::unavailable("the Raft node stopped before answering")),
    }
}

fn stopped(fatal: Fatal<TypeConfig>) -> Status {
    Status::unavailable(format!("the Raft node stopped: {fatal}"))
}
