//! The client side of the Raft transport: openraft's [`RaftNetworkFactory`] and
//! [`RaftNetworkV2`] over tonic (`raft.v1.Raft`, `proto/raft/v1/raft.proto`).
//!
//! [`Network`] is the factory one node hands to openraft. It keeps one lazily connected tonic
//! [`Channel`] per peer, cached by node id and address: openraft asks for a client every time
//! it (re)starts replication to a peer, and a channel per client would reconnect every time
//! (the pitfall of openraft's gRPC example). A channel connects on its first call and
//! reconnects by itself after the peer went away. Snapshots use a second cached channel per
//! peer, so that a long transfer does not hold up votes and heartbeats. With
//! [`ClusterConfig::peer_tls`] every channel speaks TLS and presents this node's certificate;
//! the receiving server decides whether that certificate may replicate.
//!
//! Replication is pipelined: openraft's request stream goes out on one `StreamAppend` call
//! per replication session, the next request sent before the answer to the last (a follower
//! answers after its `fsync`, so waiting would cost a round trip and an `fsync` per batch).
//!
//! Every call is bounded by openraft's [`RPCOption::soft_ttl`]: a `StreamAppend` per request
//! (the oldest unanswered one may wait that long), a full snapshot per chunk (the time the
//! receiver may take to accept the next chunk, or to answer after the last one), never for
//! the whole transfer, so a large snapshot is not cut off half way.
//!
//! Errors are what openraft needs to decide what to do next, never fatal:
//!
//! - the deadline passed (ours, or the peer's `DEADLINE_EXCEEDED`/`CANCELLED`):
//!   [`RPCError::Timeout`];
//! - anything else (no connection, the peer refused us, its node is stopped, a reply that does
//!   not decode, a wrong cluster or node id): [`RPCError::Unreachable`], so that openraft backs
//!   off before it tries that peer again rather than retrying at once.
//!
//! # The fault switch
//!
//! [`Faults`] is a small shared handle that cuts a node off from a set of peers in both
//! directions: its outgoing calls to them fail as `Unreachable` before anything is sent, and its
//! Raft service refuses their calls (`UNAVAILABLE`). One handle on one node is a symmetric
//! partition between that node and the set. Tests use it; a production node holds one that is
//! never set.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2, stream_append_sequential};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::codec;
use crate::node::ClusterConfig;
use crate::proto::raft_client::RaftClient;
use crate::proto::{
    Header, RaftReply, RaftRequest, SnapshotChunk, SnapshotStart, StatusReply, StatusRequest, snapshot_chunk,
};
use crate::snapshot::SnapshotStats;
use crate::state_machine::{Snapshot, SnapshotData};
use crate::types::{LogId, NodeId, Peer, TypeConfig, Vote};

/// Largest snapshot chunk sent, whatever openraft suggests: well below gRPC's usual 4 MiB
/// message limit.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1 << 20;

/// The fault switch: the set of peers this node is cut off from, in both directions.
///
/// Cloning gives another handle on the same set.
#[derive(Clone, Default)]
pub struct Faults {
    cut: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl Faults {
    /// A switch that cuts nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cuts this node off from `peers` (added to those already cut).
    pub fn cut(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.cut.write().unwrap().extend(peers);
    }

    /// Restores every connection.
    pub fn heal(&self) {
        self.cut.write().unwrap().clear();
    }

    /// Whether this node is cut off from `peer`.
    pub fn is_cut(&self, peer: NodeId) -> bool {
        self.cut.read().unwrap().contains(&peer)
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults").field("cut", &*self.cut.read().unwrap()).finish()
    }
}

/// Transport settings, taken from the node's [`ClusterConfig`].
#[derive(Clone, Debug)]
struct NetConfig {
    cluster: Arc<str>,
    connect_timeout: Duration,
    message_bytes_max: usize,
    /// Used when openraft suggests no chunk size.
    snapshot_chunk_bytes: usize,
    /// TLS to peers; `None`: plaintext.
    tls: Option<ClientTlsConfig>,
}

/// openraft's network factory for one node: see the module docs.
#[derive(Clone)]
pub struct Network {
    id: NodeId,
    config: NetConfig,
    faults: Faults,
    channels: Arc<Mutex<HashMap<(NodeId, Lane), CachedChannel>>>,
    snapshots: Arc<SnapshotStats>,
}

/// Which connection to a peer a call uses. Snapshots get their own, so that a large transfer
/// never queues votes, appends and heartbeats behind it in one HTTP/2 connection's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Lane {
    Raft,
    Snapshot,
}

/// A peer's address and the channel to it (or why there is none: a bad address).
type CachedChannel = (String, Result<Channel, Arc<str>>);

impl Network {
    /// The network of node `id`, with the transport settings of `config` and the node's fault
    /// switch.
    pub fn new(id: NodeId, config: &ClusterConfig, faults: Faults) -> Self {
        let config = NetConfig {
            cluster: config.cluster_name.as_str().into(),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            message_bytes_max: config.message_bytes_max(),
            snapshot_chunk_bytes: usize::try_from(config.snapshot_chunk_bytes).unwrap_or(usize::MAX),
            tls: config.peer_tls.clone(),
        };
        Network { id, config, faults, channels: Arc::default(), snapshots: Arc::default() }
    }

    /// The counts of the snapshots this network sent.
    pub fn snapshot_stats(&self) -> Arc<SnapshotStats> {
        self.snapshots.clone()
    }

    /// The cached channel to `target` at `addr`, created (unconnected) on first use, and
    /// replaced if the peer's address changed. A bad address is kept as its error, which every
    /// call then reports as `Unreachable`.
    fn channel(&self, target: NodeId, lane: Lane, addr: &str) -> Result<Channel, Arc<str>> {
        let mut channels = self.channels.lock().unwrap();
        if let Some((cached_addr, channel)) = channels.get(&(target, lane))
            && cached_addr == addr
        {
            return channel.clone();
        }
        let scheme = if self.config.tls.is_some() { "https" } else { "http" };
        let channel = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .and_then(|e| match &self.config.tls {
                Some(tls) => e.tls_config(tls.clone()),
                None => Ok(e),
            })
            .map(|e| {
                e.connect_timeout(self.config.connect_timeout)
                    .tcp_nodelay(true)
                    // Finds a peer that vanished without closing its connection (a dead
                    // machine, a dropped route) instead of waiting on it.
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true)
                    .connect_lazy()
            })
            .map_err(|e| Arc::<str>::from(format!("bad address {addr:?} for node {target}: {e}")));
        channels.insert((target, lane), (addr.to_owned(), channel.clone()));
        channel
    }

    /// A client for `target`, sharing the cached channel for votes and appends.
    pub fn client(&self, target: NodeId, peer: &Peer) -> PeerClient {
        self.client_on(target, Lane::Raft, peer)
    }

    fn client_on(&self, target: NodeId, lane: Lane, peer: &Peer) -> PeerClient {
        let client = self.channel(target, lane, &peer.addr).map(|channel| {
            RaftClient::new(channel)
                .max_decoding_message_size(self.config.message_bytes_max)
                .max_encoding_message_size(self.config.message_bytes_max)
        });
        PeerClient {
            from: self.id,
            target,
            snapshot_chunk_bytes: self.config.snapshot_chunk_bytes,
            cluster: self.config.cluster.clone(),
            faults: self.faults.clone(),
            client,
            snapshots: self.snapshots.clone(),
            sequential_appends: AtomicBool::new(false),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Peer) -> PeerClient {
        self.client(target, node)
    }

    async fn new_snapshot_client(&mut self, target: NodeId, node: &Peer) -> PeerClient {
        self.client_on(target, Lane::Snapshot, node)
    }
}

/// openraft's [`RaftNetworkV2`] for one peer: see the module docs.
pub struct PeerClient {
    from: NodeId,
    target: NodeId,
    snapshot_chunk_bytes: usize,
    cluster: Arc<str>,
    faults: Faults,
    client: Result<RaftClient<Channel>, Arc<str>>,
    snapshots: Arc<SnapshotStats>,
    /// The peer does not know `StreamAppend` (an older version, during a rolling upgrade):
    /// appends go one `AppendEntries` call at a time.
    sequential_appends: AtomicBool,
}

/// The unary calls of `raft.v1.Raft`.
#[derive(Clone, Copy, Debug)]
enum Call {
    Vote,
    PreVote,
    AppendEntries,
}

impl PeerClient {
    fn header(&self) -> Header {
        Header { cluster: self.cluster.to_string(), from: self.from, to: self.target }
    }

    fn unreachable(&self, why: impl fmt::Display) -> Unreachable<TypeConfig> {
        Unreachable::from_string(format!("node {}: {why}", self.target))
    }

    fn timeout(&self, action: RPCTypes, timeout: Duration) -> Timeout<TypeConfig> {
        Timeout { action, id: self.from, target: self.target, timeout }
    }

    /// The client, unless the fault switch cuts this peer off or its address is bad.
    fn ready(&self) -> Result<RaftClient<Channel>, Unreachable<TypeConfig>> {
        if self.faults.is_cut(self.target) {
            return Err(self.unreachable("cut off by the fault switch"));
        }
        self.client.clone().map_err(|e| self.unreachable(e))
    }

    /// A status from the peer (or from tonic on the way) as openraft's error.
    fn status_error(&self, action: RPCTypes, ttl: Duration, status: &Status) -> RPCError<TypeConfig> {
        match status.code() {
            Code::DeadlineExceeded | Code::Cancelled => RPCError::Timeout(self.timeout(action, ttl)),
            code => RPCError::Unreachable(self.unreachable(format!("{code:?}: {}", status.message()))),
        }
    }

    /// Sends one unary call and returns the reply's payload, within `option.soft_ttl()`.
    async fn unary(
        &mut self,
        call: Call,
        payload: Bytes,
        option: &RPCOption,
    ) -> Result<Bytes, RPCError<TypeConfig>> {
        let action = match call {
            Call::Vote | Call::PreVote => RPCTypes::Vote,
            Call::AppendEntries => RPCTypes::AppendEntries,
        };
        let mut client = self.ready()?;
        let ttl = option.soft_ttl();
        let mut request = tonic::Request::new(RaftRequest { header: Some(self.header()), payload });
        // The peer gives up too (gRPC's deadline header), so it does no work nobody waits for.
        request.set_timeout(ttl);
        let reply = async {
            match call {
                Call::Vote => client.vote(request).await,
                Call::PreVote => client.pre_vote(request).await,
                Call::AppendEntries => client.append_entries(request).await,
            }
        };
        match tokio::time::timeout(ttl, reply).await {
            Err(_elapsed) => Err(RPCError::Timeout(self.timeout(action, ttl))),
            Ok(Err(status)) => Err(self.status_error(action, ttl, &status)),
            Ok(Ok(reply)) => Ok(reply.into_inner().payload),
        }
    }

    /// Asks the peer what it knows of the cluster (bootstrap), within `ttl`.
    pub(crate) async fn status(&mut self, ttl: Duration) -> Result<StatusReply, RPCError<TypeConfig>> {
        let mut client = self.ready()?;
        let mut request = tonic::Request::new(StatusRequest { header: Some(self.header()) });
        request.set_timeout(ttl);
        match tokio::time::timeout(ttl, client.status(request)).await {
            Err(_elapsed) => Err(RPCError::Timeout(self.timeout(RPCTypes::Vote, ttl))),
            Ok(Err(status)) => Err(self.status_error(RPCTypes::Vote, ttl, &status)),
            Ok(Ok(reply)) => Ok(reply.into_inner()),
        }
    }

    /// A `StreamAppend` refused (or ended) with `status`. A peer that does not know the call
    /// gets appends one call at a time from now on (openraft starts the session again).
    fn stream_refused(&self, ttl: Duration, status: &Status) -> RPCError<TypeConfig> {
        if status.code() == Code::Unimplemented && !self.sequential_appends.swap(true, Ordering::Relaxed) {
            tracing::info!(
                peer = self.target,
                "peer has no StreamAppend (an older version): appending one call at a time"
            );
        }
        self.status_error(RPCTypes::AppendEntries, ttl, status)
    }

    /// A reply that does not decode: the peer speaks another layout. Backing off is all a
    /// retry could achieve.
    fn bad_reply(&self, e: std::io::Error) -> RPCError<TypeConfig> {
        RPCError::Unreachable(self.unreachable(format!("undecodable reply: {e}")))
    }
}

/// Requests a `StreamAppend` call has sent and not had answered, at most.
const PIPELINE_DEPTH: usize = 8;

/// A request sent on a `StreamAppend` call and not answered yet.
struct Unanswered {
    prev: Option<LogId>,
    last: Option<LogId>,
    sent: Instant,
    /// Its place among the `PIPELINE_DEPTH`, given back with the answer.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The answers of one `StreamAppend` call, matched with the requests they answer.
struct Answers<'s> {
    peer: &'s PeerClient,
    replies: tonic::Streaming<RaftReply>,
    unanswered: Arc<Mutex<VecDeque<Unanswered>>>,
    ttl: Duration,
    /// An error ended the stream.
    done: bool,
    /// Ends the requests.
    stop: futures_util::stream::AbortHandle,
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        self.stop.abort();
    }
}

impl Answers<'_> {
    /// The next answer: `None` when the receiver ended the stream (openraft then starts a
    /// new one for what is left unanswered) or after an error, which also ends the requests.
    async fn next(&mut self) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
        if self.done {
            return None;
        }
        let answer = self.receive().await;
        if matches!(answer, Some(Err(_))) {
            self.done = true;
            self.stop.abort();
        }
        answer
    }

    async fn receive(&mut self) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
        let peer = self.peer;
        let timeout = || RPCError::Timeout(peer.timeout(RPCTypes::AppendEntries, self.ttl));
        let reply = loop {
            if peer.faults.is_cut(peer.target) {
                return Some(Err(RPCError::Unreachable(peer.unreachable("cut off by the fault switch"))));
            }
            // An answer already here counts, however late this task runs.
            if let Some(reply) = self.replies.next().now_or_never() {
                break reply?;
            }
            // With nothing unanswered there is no deadline, but the switch is looked at again.
            let oldest = self.unanswered.lock().unwrap().front().map(|u| u.sent);
            if oldest.is_some_and(|sent| sent.elapsed() >= self.ttl) {
                return Some(Err(timeout()));
            }
            let deadline = oldest.unwrap_or_else(Instant::now) + self.ttl;
            match tokio::time::timeout_at(deadline.into(), self.replies.next()).await {
                Ok(reply) => break reply?,
                Err(_elapsed) => continue,
            }
        };
        let payload = match reply {
            Ok(reply) => reply.payload,
            Err(status) => return Some(Err(peer.stream_refused(self.ttl, &status))),
        };
        let Some(request) = self.unanswered.lock().unwrap().pop_front() else {
            return Some(Err(peer.bad_reply(std::io::Error::other("an answer to no request"))));
        };
        let response = match codec::decode_append_response(&payload) {
            Ok(response) => response,
            Err(e) => return Some(Err(peer.bad_reply(e))),
        };
        match &response {
            // Nothing comes before the first entry, so nothing can conflict there.
            AppendEntriesResponse::Conflict if request.prev.is_none() => {
                return Some(Err(peer.bad_reply(std::io::Error::other("a conflict before the first entry"))));
            }
            // The receiver names what it holds after each request: exactly the request's
            // last entry (an answer matched to the wrong request would show here).
            AppendEntriesResponse::PartialSuccess(held) if *held == request.last => {}
            AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_) => {}
            other => {
                let why = format!("answer {other} to the append of {:?}..={:?}", request.prev, request.last);
                return Some(Err(peer.bad_reply(std::io::Error::other(why))));
            }
        }
        Some(Ok(response.into_stream_result(request.prev, request.last)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let reply = self.unary(Call::AppendEntries, codec::encode_append_request(&rpc), &option).await?;
        codec::decode_append_response(&reply).map_err(|e| self.bad_reply(e))
    }

    /// Pipelined replication on one `StreamAppend` call: each request goes out as soon as
    /// openraft makes it, without waiting for the answer to the one before (which the
    /// receiver gives after its `fsync`). The answers come back in order on the same HTTP/2
    /// stream. The stream fails with [`RPCError::Timeout`] when the oldest unanswered request
    /// has waited `soft_ttl`, and as [`RPCError::Unreachable`] once the fault switch cuts
    /// the peer off.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if self.sequential_appends.load(Ordering::Relaxed) {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let mut client = self.ready()?;
            let ttl = option.soft_ttl();
            let unanswered = Arc::new(Mutex::new(VecDeque::new()));
            // At most PIPELINE_DEPTH requests wait for answers: the follower takes them all off
            // the connection at once (openraft queues up to 64), so a slow follower never
            // fills the connection's HTTP/2 window, which its heartbeats share.
            let depth = Arc::new(tokio::sync::Semaphore::new(PIPELINE_DEPTH));
            // The requests stop when the answers are dropped (openraft ended the session):
            // otherwise the body would go on taking openraft's requests for a stream nobody
            // reads (and hold openraft's replication state while it waits for them).
            let (stop, stopped) = futures_util::stream::AbortHandle::new_pair();
            let requests = {
                let (header, unanswered) = (self.header(), unanswered.clone());
                // Nothing more goes out once the switch is thrown (the stream stays open for
                // the answers, which fail in turn).
                let (faults, target) = (self.faults.clone(), self.target);
                let requests = input.take_while(move |_| std::future::ready(!faults.is_cut(target))).then(
                    move |request| {
                        let (header, unanswered, depth) = (header.clone(), unanswered.clone(), depth.clone());
                        async move {
                            let permit = depth.acquire_owned().await.expect("the semaphore is never closed");
                            let prev = request.prev_log_id;
                            let last = request.entries.last().map(|e| e.log_id).or(prev);
                            let sent = Instant::now();
                            unanswered.lock().unwrap().push_back(Unanswered {
                                prev,
                                last,
                                sent,
                                _permit: permit,
                            });
                            RaftRequest {
                                header: Some(header),
                                payload: codec::encode_append_request(&request),
                            }
                        }
                    },
                );
                futures_util::stream::Abortable::new(requests, stopped)
            };
            let replies = match tokio::time::timeout(ttl, client.stream_append(requests)).await {
                Err(_elapsed) => return Err(RPCError::Timeout(self.timeout(RPCTypes::AppendEntries, ttl))),
                Ok(Err(status)) => return Err(self.stream_refused(ttl, &status)),
                Ok(Ok(replies)) => replies.into_inner(),
            };
            let answers = Answers { peer: self, replies, unanswered, ttl, done: false, stop };
            let answers = futures_util::stream::unfold(answers, |mut answers| async move {
                answers.next().await.map(|answer| (answer, answers))
            });
            Ok(Box::pin(answers) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let reply = self.unary(Call::Vote, codec::encode_vote_request(&rpc), &option).await?;
        codec::decode_vote_response(&reply).map_err(|e| self.bad_reply(e))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let reply = self.unary(Call::PreVote, codec::encode_vote_request(&rpc), &option).await?;
        codec::decode_vote_response(&reply).map_err(|e| self.bad_reply(e))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.ready()?;
        let ttl = option.soft_ttl();
        let chunk_bytes = option.snapshot_chunk_size().unwrap_or(self.snapshot_chunk_bytes);
        let chunk_bytes = chunk_bytes.clamp(1, SNAPSHOT_CHUNK_BYTES_MAX);
        let (data_bytes, chunks) = snapshot.snapshot.chunks(chunk_bytes);
        let start = SnapshotStart {
            header: Some(self.header()),
            vote: codec::encode_vote(&vote),
            meta: codec::encode_snapshot_meta(&snapshot.meta),
            data_bytes,
        };

        // Each message the transport takes is progress; the watchdog below times out when the
        // receiver has taken nothing (or, after the last chunk, answered nothing) for `ttl`.
        // A segment file that cannot be read ends the stream short (the receiver refuses it)
        // and the error is kept for the answer.
        let progress = Arc::new(Mutex::new(Instant::now()));
        let read_error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
        let start = SnapshotChunk { kind: Some(snapshot_chunk::Kind::Start(start)) };
        let data = chunks.scan(read_error.clone(), |failed, chunk| {
            let message = match chunk {
                Ok(bytes) => Some(SnapshotChunk { kind: Some(snapshot_chunk::Kind::Chunk(bytes)) }),
                Err(error) => {
                    *failed.lock().unwrap() = Some(error);
                    None
                }
            };
            std::future::ready(message)
        });
        let messages = futures_util::stream::once(std::future::ready(start)).chain(data).inspect({
            let progress = progress.clone();
            move |_| *progress.lock().unwrap() = Instant::now()
        });
        let call = client.install_snapshot(messages);
        let watchdog = async {
            loop {
                let deadline = *progress.lock().unwrap() + ttl;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep_until(deadline.into()).await;
            }
        };
        tokio::select! {
            reply = call => match reply {
                Ok(reply) => {
                    let vote = codec::decode_vote(&reply.into_inner().payload)
                        .map_err(|e| self.unreachable(format!("undecodable snapshot reply: {e}")))?;
                    self.snapshots.count_sent(data_bytes);
                    Ok(SnapshotResponse::new(vote))
                }
                Err(status) => match read_error.lock().unwrap().take() {
                    Some(error) => Err(self.unreachable(format!("reading the snapshot's segment files: {error}")).into()),
                    None => Err(self.status_error(RPCTypes::InstallSnapshot, ttl, &status).into()),
                },
            },
            () = watchdog => Err(StreamingError::Timeout(self.timeout(RPCTypes::InstallSnapshot, ttl))),
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_switch_cuts_and_heals() {
        let faults = Faults::new();
        let other_handle = faults.clone();
        faults.cut([2, 3]);
        assert!(other_handle.is_cut(2) && other_handle.is_cut(3) && !other_handle.is_cut(1));
        other_handle.heal();
        assert!(!faults.is_cut(2));
    }
}
