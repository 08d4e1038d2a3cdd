//! The openraft type configuration of a ringlog cluster, and the few types it names.
//!
//! A Raft log id is `(term, index)`: the leader id is openraft's standard one (one leader per
//! term), so an entry stores a term and nothing about which node led it. An application entry
//! carries a [`Command`]: one [`Record`] (a data entry), or a decision every replica applies
//! (retention); applying it answers the client with an [`Ack`]. A cluster member is a
//! [`Peer`], known by the address its Raft service listens on.
//!
//! The aliases at the end spell openraft's generic types for this configuration, so the rest of
//! the crate (and its users) never repeat the generic parameters.

use std::fmt;

use bytes::Bytes;

openraft::declare_raft_types!(
    /// ringlog's openraft type configuration: node ids are `u64`, log ids are `(term, index)`,
    /// an application entry is a [`Command`] and applying it answers with an [`Ack`].
    pub TypeConfig:
        D = Command,
        R = Ack,
        NodeId = u64,
        Node = Peer,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// The payload of a data entry: one record, as the leader accepted it.
///
/// The leader stamps the time, so that every replica stores the same bytes and age-based
/// retention removes the same records everywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the Unix epoch, set by the leader when it accepted the record.
    pub timestamp_ms: u64,
    /// The record's value, opaque to the cluster.
    pub value: Bytes,
}

impl fmt::Debug for Record {
    // Values can be large; logs show their size, not their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("timestamp_ms", &self.timestamp_ms)
            .field("value_bytes", &self.value.len())
            .finish()
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record({} bytes at {} ms)", self.value.len(), self.timestamp_ms)
    }
}

/// What an application entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A record: a data entry, which gets the next `log.v1` offset.
    Record(Record),
    /// Retention, decided by the leader: every replica deletes the records of the entries
    /// below this index (whole segments; see `docs/cluster.md`). It takes no offset.
    RetainFrom(u64),
}

impl From<Record> for Command {
    fn from(record: Record) -> Command {
        Command::Record(record)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Record(record) => record.fmt(f),
            Command::RetainFrom(index) => write!(f, "retain-from({index})"),
        }
    }
}

/// The answer to an applied entry.
///
/// For a data entry, `offset` is its record's `log.v1` offset. For a blank or membership entry
/// (which hold no record), it is the offset the next record will get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The record's `log.v1` offset (see the type's docs for non-data entries).
    pub offset: u64,
}

/// A cluster member, as the membership config stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// Where the member's Raft service listens, for example `127.0.0.1:8401`.
    pub addr: String,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// A Raft node id.
pub type NodeId = u64;
/// A Raft log id: `(term, index)`.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A Raft vote: `(term, voted_for, committed)`.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A membership config: voter sets (two during a joint change) plus every member's [`Peer`].
pub type Membership = openraft::Membership<NodeId, Peer>;
/// A membership config with the log id of the entry that carried it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// What a snapshot covers: its last log id and the membership in force there.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// A log id from its parts.
pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new_term_index(term, index)
}
