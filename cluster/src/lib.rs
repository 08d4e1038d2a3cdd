//! ringlog's replication layer: openraft over the ringlog engine, with its storage, its gRPC
//! transport and the nodes that run it.
//!
//! A ringlog cluster is openraft running over one log per node, and that log is the record log
//! itself (`replication.md`, decision 2): every Raft entry (a record, a blank entry or a
//! membership change) is one engine entry at the same `(term, index)`, written and synced once
//! by the engine's group commit. This crate is the only place that knows openraft: the engine
//! has no openraft, tokio or gRPC in its API, and an upgrade of openraft (pinned exactly, the
//! 0.10 line is alpha) touches this crate alone and re-runs its storage suite.
//!
//! - [`types`]: the type configuration ([`TypeConfig`]): node ids are `u64`, a log id is
//!   `(term, index)`, a data entry carries a [`Record`] (value plus the leader's timestamp) and
//!   applying it answers with an [`Ack`] (the record's `log.v1` offset).
//! - [`log_store`]: [`LogStore`] / [`LogReader`], `RaftLogStorage` and `RaftLogReader` over the
//!   engine's [`Log`](ringlog_engine::Log); its docs list how each contract is honoured.
//! - [`state_machine`]: [`StateMachine`], `RaftStateMachine` for a log whose entries are the
//!   records: applying only moves the applied mark and numbers the records; snapshots hold
//!   that state (its docs say why, and what is left).
//! - `codec` (private): the byte layouts of the vote, membership configs and the state machine
//!   state, the entry mapping, and openraft's messages on the wire.
//! - [`network`]: the Raft transport's client side ([`Network`], openraft's network factory
//!   over tonic, one cached channel per peer) and the fault switch ([`Faults`]) tests use to
//!   partition a node.
//! - [`raft_service`]: the transport's server side ([`RaftService`], `raft.v1.Raft` from
//!   `proto/raft/v1/raft.proto`), served beside `log.v1` on one port.
//! - [`node`]: a cluster member ([`Node`]): storage, openraft with a [`ClusterConfig`], the
//!   bootstrap rule, and the report of a fatal error.
//!
//! openraft's own storage suite (`openraft::testing::log::Suite`) runs against [`open`] on a
//! real directory in `tests/storage_suite.rs`.
//!
//! ```
//! use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
//! use openraft::type_config::TypeConfigExt;
//! use openraft::entry::RaftEntry;
//! use openraft::RaftLogReader;
//! use ringlog_cluster::{Entry, Record, TypeConfig, log_id};
//! use ringlog_engine::{Config, Durability};
//!
//! let dir = tempfile::tempdir()?;
//! let config = Config { durability: Durability::Always, ..Config::default() };
//! TypeConfig::run(async move {
//!     let (mut store, _sm) = ringlog_cluster::open(dir.path(), config)?;
//!     let record = Record { timestamp_ms: 1, value: "hello".into() };
//!     let entries = [Entry::new_blank(log_id(1, 0)), Entry::new_normal(log_id(1, 1), record.into())];
//!     store.blocking_append(entries).await?;
//!     let entries = store.get_log_reader().await.try_get_log_entries(0..2).await?;
//!     assert_eq!(entries.len(), 2);
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod codec;
pub mod log_store;
pub mod network;
pub mod node;
pub mod raft_service;
pub mod snapshot;
pub mod state_machine;
pub mod types;

/// The generated `raft.v1` messages, client and server (from `proto/raft/v1/raft.proto`).
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("raft.v1");
}

use std::fs;
use std::io;
use std::path::Path;

pub use log_store::{LogReader, LogStore, READ_BATCH_BYTES};
pub use network::{Faults, Network, PeerClient};
pub use node::{ClusterConfig, Error, Node, Raft, WriteError};
pub use raft_service::RaftService;
pub use snapshot::SnapshotData;
pub use state_machine::{Snapshot, SnapshotBuilder, StateMachine};
pub use types::{Ack, Command, Entry, LogId, Membership, NodeId, Peer, Record, TypeConfig, Vote, log_id};

/// Where the engine's log lives inside a node's directory.
pub const LOG_DIR: &str = "log";
/// The state machine's snapshot file inside a node's directory.
pub const SNAPSHOT_FILE: &str = "snapshot";

/// Opens (creating if needed) a node's Raft storage in `dir`: the engine log in
/// `dir/`[`LOG_DIR`] and the state machine's snapshot in `dir/`[`SNAPSHOT_FILE`].
///
/// `config` is the engine's; use `Durability::Always` for a cluster that promises that an
/// acknowledged record survives a power loss on a majority.
pub fn open(dir: impl AsRef<Path>, config: ringlog_engine::Config) -> io::Result<(LogStore, StateMachine)> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        fs::create_dir_all(dir)?;
        // The new directory's entry is durable only once its parent is synced.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::File::open(parent)?.sync_all()?;
        }
    }
    let log = ringlog_engine::Log::open(dir.join(LOG_DIR), config).map_err(log_store::io_error)?;
    state_machine::settle_pending(&dir.join(SNAPSHOT_FILE), &log)?;
    let sm = StateMachine::open(dir.join(SNAPSHOT_FILE))?.limiting_reads_of(log.clone());
    let store = LogStore::new(log).deleting_below(sm.retention());
    Ok((store, sm))
}
