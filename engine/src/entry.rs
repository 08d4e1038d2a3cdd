//! Entries: what the log holds at each index.
//!
//! Every position of the log is an entry with an index, a term and a kind. Producers' records
//! are `Data` entries; a Raft cluster also writes `Blank` and `Membership` entries, which
//! take an index but no record offset (see `offsets`). A single node writes data entries of
//! term 0, so there its offsets and indexes are the same numbers.

use bytes::Bytes;

/// Where an entry sits: its Raft term and its index in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EntryId {
    /// The term of the leader that created the entry (0 on a single node).
    pub term: u64,
    /// The entry's position in the log.
    pub index: u64,
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A producer's record: it has a record offset.
    Data,
    /// An entry a new Raft leader writes to commit its term.
    Blank,
    /// A Raft membership change.
    Membership,
    /// A command to the replicas above the log (a cluster's retention decision): no record
    /// offset, a payload only its writer reads.
    Control,
}

impl EntryKind {
    pub(crate) fn code(self) -> u32 {
        match self {
            EntryKind::Data => 0,
            EntryKind::Blank => 1,
            EntryKind::Membership => 2,
            EntryKind::Control => 3,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Data),
            1 => Some(EntryKind::Blank),
            2 => Some(EntryKind::Membership),
            3 => Some(EntryKind::Control),
            _ => None,
        }
    }
}

/// One entry of the log, as appended by [`Log::append_entries`](crate::Log::append_entries)
/// and read by [`Log::read_entries`](crate::Log::read_entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term and index.
    pub id: EntryId,
    /// Data, blank or membership.
    pub kind: EntryKind,
    /// Milliseconds since the Unix epoch, set by whoever created the entry (a cluster's
    /// leader, so that every replica holds the same bytes).
    pub timestamp_ms: u64,
    /// The record's value, or the Raft payload (opaque to the engine).
    pub payload: Bytes,
}
