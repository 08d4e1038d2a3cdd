//! A cluster member: its storage, its [`openraft::Raft`], its transport and its bootstrap.
//!
//! [`Node::start`] opens the node's storage in its directory ([`crate::open`]), starts openraft
//! with the settings of a [`ClusterConfig`], and returns the node with its Raft service
//! ([`Node::service`]) for the caller to serve on its port. The node does not listen itself:
//! the service crate serves `raft.v1` beside `log.v1` on one port.
//!
//! # Bootstrap
//!
//! Every member of the static peer list is a first voter (`replication.md`, "Starting a
//! cluster"). Exactly one node initializes the cluster: the lowest id, and only if
//!
//! 1. its own store is pristine when it starts (no vote, no entry, nothing purged), and
//! 2. every other peer has answered the `Status` call, and none of them has a membership.
//!
//! Until then it asks again every `bootstrap_retry_ms`. Requiring an answer from *every* peer
//! (not a majority) is the simple safe rule: a peer that cannot be reached may be the one that
//! holds the cluster's membership, for example when the lowest node lost its disk and the
//! others were formed with it; initializing then would start a second cluster under the same
//! ids. The cost is that a cluster's very first start waits for all its nodes. The other nodes
//! never initialize: they wait, as learners without a membership, until the leader reaches
//! them. A node that restarts with a log does nothing: openraft elects as usual.
//!
//! # Fatal errors
//!
//! openraft stops for good on a storage error or a panic in its core. [`Node::fatal`] resolves
//! with that error (or with `Fatal::Stopped` after a shutdown), so the service can exit and be
//! restarted rather than keep answering with a dead node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{ConfigError, SnapshotPolicy};
use ringlog_engine::{Durability, Log};
use tokio::task::JoinHandle;

use crate::log_store::LogStore;
use crate::network::{Faults, Network};
use crate::proto::raft_server::RaftServer;
use crate::raft_service::RaftService;
use crate::snapshot::SnapshotStats;
use crate::state_machine::StateMachine;
use crate::types::{Ack, Command, NodeId, Peer, Record, TypeConfig};

/// openraft's Raft handle for this crate's types.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// The error of a write through Raft ([`Node::write`]): `ForwardToLeader` on a node that is
/// not the leader (with the leader when known), or `Fatal` when the node stopped.
pub type WriteError = RaftError<TypeConfig, ClientWriteError<TypeConfig>>;

/// The errors of starting and stopping a [`Node`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node's id is not in the peer list.
    #[error("node id {id} is not in the peer list {peers:?}")]
    NotAPeer {
        /// This node's id.
        id: NodeId,
        /// The peer list's ids.
        peers: Vec<NodeId>,
    },
    /// The settings do not make a valid openraft config.
    #[error("invalid cluster settings: {0}")]
    Config(#[from] ConfigError),
    /// The node's storage could not be opened.
    #[error("opening the node's storage in {dir}: {source}")]
    Storage {
        /// The node's directory.
        dir: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// openraft could not start, or stopped with this error.
    #[error("raft: {0}")]
    Raft(#[from] Fatal<TypeConfig>),
    /// Closing the engine's log at shutdown failed (its last sync, or an earlier poison).
    #[error("closing the log: {0}")]
    Close(#[from] ringlog_engine::Error),
    /// The data directory belongs to another node.
    #[error(
        "{dir} holds the data of node {found}, not of node {id}: start node {found} on it, or give node {id} its own directory"
    )]
    WrongNode {
        /// The directory.
        dir: PathBuf,
        /// The id this node was started with.
        id: NodeId,
        /// The id the directory belongs to.
        found: String,
    },
    /// The node starts with an empty directory, yet the cluster already counts it as a
    /// member: it lost its data, and rejoining under its old id could lose committed records
    /// (it would vote and acknowledge as if it held entries it does not).
    #[error(
        "node {id} starts with an empty data directory ({dir}), but node {peer} lists node {id} as a member of the cluster: a member that lost its data must not rejoin under its old id, since that can lose committed records. Remove node {id} from the cluster, then add this machine back as a new node with an id never used before"
    )]
    LostData {
        /// The directory.
        dir: PathBuf,
        /// This node's id.
        id: NodeId,
        /// The peer that knows it as a member.
        peer: NodeId,
    },
}

/// The file in a node's directory that says which node it belongs to, written once when the
/// node first starts on it.
pub const IDENTITY_FILE: &str = "node-id";

/// A node's settings, with defaults for a shared 2-core machine.
///
/// openraft's defaults (a 50 ms heartbeat, 150-300 ms election timeouts, a 200 ms snapshot
/// timeout) cause elections whenever an `fsync` stalls for a few hundred milliseconds, and
/// never finish a large snapshot; these are a few times larger.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The cluster's name; a node refuses Raft calls for another cluster.
    pub cluster_name: String,
    /// How often a leader sends heartbeats. It is also openraft's deadline for one append
    /// (of which the transport uses three quarters), so it must cover a follower's `fsync`.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in `[min, max)` starts an election.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// Deadline for each snapshot chunk to be taken by the receiver (and for its answer after
    /// the last one); never a deadline for the whole transfer.
    pub install_snapshot_timeout_ms: u64,
    /// Size of one snapshot chunk (at most [`SNAPSHOT_CHUNK_BYTES_MAX`](crate::network::SNAPSHOT_CHUNK_BYTES_MAX)).
    pub snapshot_chunk_bytes: u64,
    /// Largest snapshot this node accepts from a leader (`u64::MAX`: any that fits on the
    /// disk). A snapshot is the log's segment files and goes to disk as it arrives, so memory
    /// does not bound it; the receiver refuses one larger than the space free on its disk.
    pub snapshot_bytes_max: u64,
    /// Entries in one append at most (openraft's `max_payload_entries`); it is one of the
    /// terms of the transport's message limit ([`ClusterConfig::message_bytes_max`]). The
    /// default takes a leader's batch of small records in one append rather than seven (every
    /// append costs the follower a Raft round); an append's bytes stay bounded by
    /// [`READ_BATCH_BYTES`](crate::READ_BATCH_BYTES) whatever the count.
    pub max_payload_entries: u64,
    /// Deadline for opening a connection to a peer.
    pub connect_timeout_ms: u64,
    /// How often the bootstrapping node asks its peers again while some have not answered.
    pub bootstrap_retry_ms: u64,
    /// The engine's settings for the node's log.
    pub engine: ringlog_engine::Config,
    /// TLS for this node's calls to its peers: the CA their certificates chain to, and this
    /// node's own certificate (peers serving mutual TLS ask for one). `None`: plaintext.
    pub peer_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cluster_name: "ringlog".into(),
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            install_snapshot_timeout_ms: 10_000,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: u64::MAX,
            max_payload_entries: 2048,
            connect_timeout_ms: 1000,
            bootstrap_retry_ms: 500,
            // A record is acknowledged once a majority made it durable.
            engine: ringlog_engine::Config { durability: Durability::Always, ..Default::default() },
            peer_tls: None,
        }
    }
}

impl ClusterConfig {
    /// The openraft config these settings make, validated.
    pub fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            max_payload_entries: self.max_payload_entries,
            // A snapshot holds the state machine's state, not the records (see
            // `state_machine`): openraft must neither build one on its own nor purge the log
            // behind one. Retention is the log's business.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            // A node that rejoins after a partition must not depose a working leader with its
            // inflated term; the transport implements `pre_vote`.
            enable_pre_vote: Some(true),
            ..openraft::Config::default()
        }
        .validate()
    }

    /// The largest `raft.v1` message: one append. openraft replicates what
    /// `limited_get_log_entries` returns, which is one engine read of about
    /// [`READ_BATCH_BYTES`](crate::READ_BATCH_BYTES) of frames, or a single record when it is
    /// larger, and at most `max_payload_entries` entries.
    pub fn message_bytes_max(&self) -> usize {
        let per_entry = 64; // an entry's header in the append layout, with room to spare
        let append = (crate::READ_BATCH_BYTES as u64)
            .saturating_add(u64::from(self.engine.record_bytes_max))
            .saturating_add(self.max_payload_entries.saturating_mul(per_entry))
            .saturating_add(64 << 10);
        usize::try_from(append.max(4 << 20)).unwrap_or(usize::MAX)
    }
}

/// A running cluster member: see the module docs.
pub struct Node {
    id: NodeId,
    raft: Raft,
    log: Log,
    faults: Faults,
    service: RaftService,
    bootstrap: Option<JoinHandle<()>>,
    /// Carries out the retention decisions this node applies ([`follow_retention`]).
    retaining: JoinHandle<()>,
    /// The latest retention decision this node applied.
    retention: tokio::sync::watch::Receiver<u64>,
    /// Snapshots sent and received.
    snapshots: Arc<SnapshotStats>,
    peer_tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Whether `log` holds nothing at all: no vote, no entry, nothing purged.
fn is_pristine(log: &Log) -> Result<bool, ringlog_engine::Error> {
    let meta = log.meta();
    Ok(meta.vote.is_none() && meta.purged.is_none() && log.last_entry_id()?.is_none())
}

impl Node {
    /// Starts node `id` on the storage in `dir`, as a member of `peers` (every first voter,
    /// this node included, with the address of its Raft service). `faults` is the node's fault
    /// switch; pass `Faults::new()` outside tests.
    ///
    /// The node's Raft service ([`Node::service`]) must be served on this node's address in
    /// `peers` for the cluster to work.
    pub async fn start(
        id: NodeId,
        dir: impl AsRef<Path>,
        peers: BTreeMap<NodeId, Peer>,
        config: ClusterConfig,
        faults: Faults,
    ) -> Result<Node, Error> {
        if !peers.contains_key(&id) {
            return Err(Error::NotAPeer { id, peers: peers.keys().copied().collect() });
        }
        let raft_config = Arc::new(config.raft_config()?);
        let dir = dir.as_ref();
        let storage_error = |source| Error::Storage { dir: dir.to_path_buf(), source };
        let known = read_identity(dir, id)?;
        let (store, sm) = crate::open(dir, config.engine.clone()).map_err(storage_error)?;
        let log = store.log().clone();
        let pristine = is_pristine(&log)?;

        let network = Network::new(id, &config, faults.clone());
        if !known {
            let checked = if pristine { refuse_if_member(id, dir, &network, &peers).await } else { Ok(()) };
            if let Err(error) = checked.and_then(|()| write_identity(dir, id).map_err(storage_error)) {
                let _ = log.close();
                return Err(error);
            }
        }
        let (store_handle, retention) = (store.clone(), sm.retention());
        let raft = match Raft::new(id, raft_config, network.clone(), store, sm).await {
            Ok(raft) => raft,
            Err(fatal) => {
                // Release the directory, so that a caller may try again in this process.
                if let Err(e) = log.close() {
                    tracing::warn!(node = id, "closing the log after a failed start: {e}");
                }
                return Err(fatal.into());
            }
        };
        let service = RaftService::new(
            raft.clone(),
            log.clone(),
            faults.clone(),
            config.cluster_name.as_str().into(),
            config.snapshot_bytes_max,
            config.message_bytes_max(),
            network.snapshot_stats(),
        );
        let snapshots = network.snapshot_stats();

        let lowest = peers.keys().next().copied() == Some(id);
        let bootstrap = (pristine && lowest).then(|| {
            let retry = Duration::from_millis(config.bootstrap_retry_ms);
            tokio::spawn(bootstrap(raft.clone(), network, peers, retry))
        });
        tracing::info!(node = id, pristine, bootstraps = bootstrap.is_some(), "raft node started");
        let retaining = tokio::spawn(follow_retention(raft.clone(), store_handle, retention.clone()));
        Ok(Node {
            id,
            raft,
            log,
            faults,
            service,
            bootstrap,
            retaining,
            retention,
            snapshots,
            peer_tls: config.peer_tls,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft handle: metrics, `wait`, `client_write`, membership changes.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The engine log holding this node's Raft entries (and so its records).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The snapshots this node sent and received since it started.
    pub fn snapshot_stats(&self) -> Arc<SnapshotStats> {
        self.snapshots.clone()
    }

    /// The TLS this node dials its peers with ([`ClusterConfig::peer_tls`]).
    pub fn peer_tls(&self) -> Option<&tonic::transport::ClientTlsConfig> {
        self.peer_tls.as_ref()
    }

    /// This node's fault switch.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The node's `raft.v1.Raft` service, for `tonic::transport::Server::add_service`.
    pub fn service(&self) -> RaftServer<RaftService> {
        self.service.clone().into_server()
    }

    /// Writes one record through Raft, stamped with this node's clock, and returns its offset
    /// once it is applied here (so committed on a majority). Only the leader accepts writes.
    pub async fn write(&self, value: impl Into<Bytes>) -> Result<Ack, WriteError> {
        let timestamp_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let record = Record { timestamp_ms, value: value.into() };
        Ok(self.raft.client_write(record.into()).await?.data)
    }

    /// Retention, decided here when this node leads: the index `retention` keeps this node's
    /// log from ([`Log::retention_point`]), replicated as a [`Command::RetainFrom`] when it is
    /// past the last decision, so that every node deletes the same prefix (see
    /// `follow_retention`). Returns the index decided, if it moved. A follower decides
    /// nothing (`Ok(None)`).
    pub async fn retain(&self, retention: ringlog_engine::Retention) -> Result<Option<u64>, WriteError> {
        if self.raft.metrics().borrow_watched().current_leader != Some(self.id) {
            return Ok(None);
        }
        let log = self.log.clone();
        let point = tokio::task::spawn_blocking(move || log.retention_point(retention)).await.ok().flatten();
        match point {
            Some(point) if point > *self.retention.borrow() => {
                self.raft.client_write(Command::RetainFrom(point)).await?;
                tracing::info!(node = self.id, retain_from = point, "retention decided");
                Ok(Some(point))
            }
            _ => Ok(None),
        }
    }

    /// Resolves once openraft stopped running: with its fatal error (a storage error or a
    /// panic in its core), or `Fatal::Stopped` after a shutdown.
    pub async fn fatal(&self) -> Fatal<TypeConfig> {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_watched().running_state {
                return fatal.clone();
            }
            if metrics.changed().await.is_err() {
                // The core dropped its metrics sender: it is gone.
                return Fatal::Stopped;
            }
        }
    }

    /// Stops the node: its bootstrap, its Raft core, then its log (synced and closed, which
    /// releases the directory for a restart). Calls after the first only report the log's
    /// state.
    pub async fn shutdown(&self) -> Result<(), Error> {
        if let Some(task) = &self.bootstrap {
            task.abort();
        }
        self.retaining.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.id, "raft core ended with {e}");
        }
        self.log.close()?;
        Ok(())
    }
}

/// Carries out each retention decision the state machine applies (`retain_from` = P): makes
/// sure a snapshot covers the entries below P (building one if needed), asks openraft to purge
/// them, and deletes their records as soon as openraft has (see [`LogStore::delete_retained`];
/// a leader purges once no replication reads them, and a follower that lags behind the purge
/// gets a snapshot). Every node does this for itself, so every node deletes the same prefix.
async fn follow_retention(raft: Raft, store: LogStore, mut retention: tokio::sync::watch::Receiver<u64>) {
    use openraft::async_runtime::WatchReceiver;
    loop {
        let retain_from = *retention.borrow_and_update();
        if let Some(last) = retain_from.checked_sub(1) {
            let mut metrics = raft.metrics();
            let covered = |m: &openraft::RaftMetrics<TypeConfig>| m.snapshot.is_some_and(|s| s.index >= last);
            if !covered(&metrics.borrow_watched()) && raft.trigger().snapshot().await.is_err() {
                return; // The node stopped.
            }
            while !covered(&metrics.borrow_watched()) {
                if metrics.changed().await.is_err() {
                    return;
                }
            }
            if raft.trigger().purge_log(last).await.is_err() {
                return;
            }
            if let Err(error) = store.delete_retained().await {
                tracing::warn!(%error, retain_from, "deleting retained records failed; the next purge tries again");
            }
        }
        if retention.changed().await.is_err() {
            return;
        }
    }
}

/// Whether `dir` is known to belong to node `id` (its identity file says so); `false` when
/// it has none yet; an error when it belongs to another node.
fn read_identity(dir: &Path, id: NodeId) -> Result<bool, Error> {
    match std::fs::read_to_string(dir.join(IDENTITY_FILE)) {
        Ok(text) if text.trim() == id.to_string() => Ok(true),
        Ok(text) => Err(Error::WrongNode { dir: dir.to_path_buf(), id, found: text.trim().to_owned() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Storage { dir: dir.to_path_buf(), source }),
    }
}

/// Writes `dir`'s identity file durably (temporary file, fsync, rename, directory fsync).
fn write_identity(dir: &Path, id: NodeId) -> std::io::Result<()> {
    use std::io::Write;
    let temp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut file = std::fs::File::create(&temp)?;
    writeln!(file, "{id}")?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(IDENTITY_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// A node whose directory is new must not be a member already (`Error::LostData`). Asks
/// every peer once; peers that do not answer cannot say, so a node that lost its data while
/// every peer is down is not caught here.
async fn refuse_if_member(
    id: NodeId,
    dir: &Path,
    network: &Network,
    peers: &BTreeMap<NodeId, Peer>,
) -> Result<(), Error> {
    // All at once: a peer that is not serving yet costs the timeout once, not once each.
    let asked = peers.iter().filter(|(p, _)| **p != id).map(|(&peer, addr)| async move {
        (peer, network.client(peer, addr).status(Duration::from_secs(1)).await)
    });
    for (peer, reply) in futures_util::future::join_all(asked).await {
        let Ok(reply) = reply else { continue };
        if reply.membership.is_empty() {
            continue;
        }
        let membership = crate::codec::decode_membership(&reply.membership)
            .map_err(|source| Error::Storage { dir: dir.to_path_buf(), source })?;
        if membership.nodes().any(|(member, _)| *member == id) {
            return Err(Error::LostData { dir: dir.to_path_buf(), id, peer });
        }
    }
    Ok(())
}

/// The bootstrap rule of the module docs, run by the lowest node when it started pristine.
async fn bootstrap(raft: Raft, network: Network, peers: BTreeMap<NodeId, Peer>, retry: Duration) {
    let id = *raft.node_id();
    loop {
        match raft.is_initialized().await {
            Ok(true) => return, // A leader reached this node first: the cluster exists.
            Ok(false) => {}
            Err(fatal) => return tracing::warn!(node = id, "bootstrap stopped: {fatal}"),
        }
        let mut silent = Vec::new();
        for (&peer, addr) in peers.iter().filter(|(p, _)| **p != id) {
            match network.client(peer, addr).status(retry.max(Duration::from_millis(100))).await {
                Ok(reply) if !reply.membership.is_empty() => {
                    return tracing::info!(
                        node = id,
                        peer,
                        "not initializing: node {peer} already has a membership (an existing cluster)"
                    );
                }
                Ok(_) => {}
                Err(e) => silent.push((peer, e)),
            }
        }
        if silent.is_empty() {
            break;
        }
        tracing::info!(node = id, ?silent, "waiting for every peer to answer before initializing");
        tokio::time::sleep(retry).await;
    }
    match raft.initialize(peers.clone()).await {
        Ok(()) => {
            tracing::info!(node = id, voters = ?peers.keys().collect::<Vec<_>>(), "cluster initialized")
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
            tracing::info!(node = id, "not initializing: {e}");
        }
        Err(e) => tracing::error!(node = id, "initializing the cluster failed: {e}"),
    }
}
