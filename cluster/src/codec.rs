//! Byte layouts of what the cluster hands the engine as opaque bytes, and the mapping between
//! openraft's entries and the engine's.
//!
//! Every integer is little-endian, as in the engine's own format. Each layout starts with a
//! version byte so that it can change without guessing. Decoders validate everything and
//! never panic: bad bytes are an [`io::ErrorKind::InvalidData`] error naming what was wrong.
//!
//! ```text
//! vote (18 bytes)     version=1 u8 | term u64 | voted_for u64 | committed u8 (0 or 1)
//! membership          version=1 u8 | configs u32 | per config: ids u32, id u64 * ids
//!                                  | nodes u32   | per node: id u64, addr_len u32, addr (UTF-8)
//! state machine       version=2 u8 | applied log id | membership log id
//!                                  | membership_len u32 | membership | records u64
//!                                  | retain_from u64 (absent in version 1: 0)
//! log id option       present u8 (0 or 1) | if present: term u64, index u64
//! ```
//!
//! The Raft transport (`raft.v1`, see [`crate::network`]) carries openraft's messages in these
//! layouts; `vote body` is the vote's layout without its version byte:
//!
//! ```text
//! append request      version=1 u8 | vote body | prev log id option | leader commit log id option
//!                                  | entries u32 | per entry: term u64, index u64, kind u8, then
//!                                  |   kind 0 (blank):      nothing
//!                                  |   kind 1 (data):       timestamp_ms u64, len u32, value
//!                                  |   kind 2 (membership): len u32, membership
//!                                  |   kind 3 (retain from): index u64
//! append response     version=1 u8 | tag u8: 0 success | 1 partial success, log id option
//!                                  |         2 conflict | 3 higher vote, vote body
//! vote request        version=1 u8 | vote body | last log id option | leadership transfer u8 (0 or 1)
//! vote response       version=1 u8 | vote body | granted u8 (0 or 1) | last log id option
//! snapshot meta       version=1 u8 | last log id option | membership log id option
//!                                  | membership_len u32 | membership
//! ```
//!
//! An openraft entry maps to an engine entry of the same `(term, index)`:
//!
//! | openraft payload            | engine kind  | engine payload              | `timestamp_ms`         |
//! |-----------------------------|--------------|-----------------------------|------------------------|
//! | `Normal(Record(r))`         | `Data`       | the record's value          | the leader's timestamp |
//! | `Normal(RetainFrom(i))`     | `Control`    | version=1 u8, 1 u8, `i` u64 | 0                      |
//! | `Blank`                     | `Blank`      | empty                       | 0                      |
//! | `Membership(m)`             | `Membership` | `m` in the layout above     | 0                      |

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use ringlog_engine::{EntryId, EntryKind};

use crate::types::{
    Command, Entry, LogId, Membership, NodeId, Peer, Record, SnapshotMeta, StoredMembership, TypeConfig,
    Vote, log_id,
};

const VERSION: u8 = 1;
const VOTE_BYTES: usize = 1 + 8 + 8 + 1;

/// The engine's id of the entry openraft calls `id`.
pub(crate) fn entry_id(id: &LogId) -> EntryId {
    EntryId { term: id.leader_id.term, index: id.index }
}

/// openraft's id of the engine's entry `id`.
pub(crate) fn from_entry_id(id: EntryId) -> LogId {
    log_id(id.term, id.index)
}

/// An openraft entry as the engine stores it.
pub(crate) fn to_engine(entry: Entry) -> ringlog_engine::Entry {
    let id = entry_id(&entry.log_id);
    let (kind, timestamp_ms, payload) = match entry.payload {
        EntryPayload::Normal(Command::Record(record)) => (EntryKind::Data, record.timestamp_ms, record.value),
        EntryPayload::Normal(Command::RetainFrom(index)) => {
            (EntryKind::Control, 0, encode_retain_from(index))
        }
        EntryPayload::Blank => (EntryKind::Blank, 0, Bytes::new()),
        EntryPayload::Membership(m) => (EntryKind::Membership, 0, encode_membership(&m)),
    };
    ringlog_engine::Entry { id, kind, timestamp_ms, payload }
}

/// The openraft entry the engine's `entry` stores.
pub(crate) fn from_engine(entry: ringlog_engine::Entry) -> io::Result<Entry> {
    let id = from_entry_id(entry.id);
    Ok(match entry.kind {
        EntryKind::Data => {
            Entry::new_normal(id, Record { timestamp_ms: entry.timestamp_ms, value: entry.payload }.into())
        }
        EntryKind::Control => Entry::new_normal(id, Command::RetainFrom(decode_retain_from(&entry.payload)?)),
        EntryKind::Blank => Entry::new_blank(id),
        EntryKind::Membership => Entry::new_membership(id, decode_membership(&entry.payload)?),
    })
}

/// The vote in its 18-byte layout.
pub(crate) fn encode_vote(vote: &Vote) -> Bytes {
    let mut b = BytesMut::with_capacity(VOTE_BYTES);
    b.put_u8(VERSION);
    put_vote(&mut b, vote);
    b.freeze()
}

/// The vote stored as `bytes`.
pub(crate) fn decode_vote(bytes: &[u8]) -> io::Result<Vote> {
    let mut r = Reader::new(bytes, "vote");
    r.version()?;
    let vote = r.vote()?;
    r.end()?;
    Ok(vote)
}

/// The vote body: its layout without the version byte.
fn put_vote(b: &mut BytesMut, vote: &Vote) {
    b.put_u64_le(vote.leader_id().term);
    b.put_u64_le(vote.leader_id().voted_for);
    b.put_u8(u8::from(vote.is_committed()));
}

const ENTRY_BLANK: u8 = 0;
const ENTRY_DATA: u8 = 1;
const ENTRY_MEMBERSHIP: u8 = 2;
const ENTRY_RETAIN_FROM: u8 = 3;

/// The one control command so far.
const CONTROL_RETAIN_FROM: u8 = 1;

fn encode_retain_from(index: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(10);
    b.put_u8(VERSION);
    b.put_u8(CONTROL_RETAIN_FROM);
    b.put_u64_le(index);
    b.freeze()
}

fn decode_retain_from(bytes: &[u8]) -> io::Result<u64> {
    let mut r = Reader::new(bytes, "control entry");
    r.version()?;
    match r.u8()? {
        CONTROL_RETAIN_FROM => {}
        other => return Err(r.invalid(format!("unknown control command {other}"))),
    }
    let index = r.u64()?;
    r.end()?;
    Ok(index)
}

/// An append-entries request (also a heartbeat) in its wire layout.
pub(crate) fn encode_append_request(req: &AppendEntriesRequest<TypeConfig>) -> Bytes {
    let values: usize = req
        .entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(Command::Record(r)) => r.value.len(),
            _ => 0,
        })
        .sum();
    let mut b = BytesMut::with_capacity(1 + 17 + 2 * 17 + 4 + req.entries.len() * 32 + values);
    b.put_u8(VERSION);
    put_vote(&mut b, &req.vote);
    put_log_id(&mut b, req.prev_log_id.as_ref());
    put_log_id(&mut b, req.leader_commit.as_ref());
    b.put_u32_le(len_u32(req.entries.len()));
    for e in &req.entries {
        b.put_u64_le(e.log_id.leader_id.term);
        b.put_u64_le(e.log_id.index);
        match &e.payload {
            EntryPayload::Blank => b.put_u8(ENTRY_BLANK),
            EntryPayload::Normal(Command::Record(r)) => {
                b.put_u8(ENTRY_DATA);
                b.put_u64_le(r.timestamp_ms);
                b.put_u32_le(len_u32(r.value.len()));
                b.put_slice(&r.value);
            }
            EntryPayload::Normal(Command::RetainFrom(index)) => {
                b.put_u8(ENTRY_RETAIN_FROM);
                b.put_u64_le(*index);
            }
            EntryPayload::Membership(m) => {
                b.put_u8(ENTRY_MEMBERSHIP);
                let m = encode_membership(m);
                b.put_u32_le(len_u32(m.len()));
                b.put_slice(&m);
            }
        }
    }
    b.freeze()
}

/// The append-entries request in `bytes`. Record values are slices of `bytes`, not copies.
pub(crate) fn decode_append_request(bytes: &Bytes) -> io::Result<AppendEntriesRequest<TypeConfig>> {
    let mut r = Reader::new(bytes, "append-entries request");
    r.version()?;
    let vote = r.vote()?;
    let prev_log_id = r.log_id()?;
    let leader_commit = r.log_id()?;
    // An entry is at least 17 bytes (term, index, kind).
    let n = r.count(17)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let id = log_id(r.u64()?, r.u64()?);
        let entry = match r.u8()? {
            ENTRY_BLANK => Entry::new_blank(id),
            ENTRY_DATA => {
                let timestamp_ms = r.u64()?;
                let len = r.u32()? as usize;
                let value = bytes.slice_ref(r.take(len)?);
                Entry::new_normal(id, Record { timestamp_ms, value }.into())
            }
            ENTRY_RETAIN_FROM => Entry::new_normal(id, Command::RetainFrom(r.u64()?)),
            ENTRY_MEMBERSHIP => {
                let len = r.u32()? as usize;
                Entry::new_membership(id, decode_membership(r.take(len)?)?)
            }
            other => return Err(r.invalid(format!("unknown entry kind {other}"))),
        };
        entries.push(entry);
    }
    r.end()?;
    Ok(AppendEntriesRequest { vote, prev_log_id, entries, leader_commit })
}

/// An append-entries response in its wire layout.
pub(crate) fn encode_append_response(resp: &AppendEntriesResponse<TypeConfig>) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + 1 + 18);
    b.put_u8(VERSION);
    match resp {
        AppendEntriesResponse::Success => b.put_u8(0),
        AppendEntriesResponse::PartialSuccess(id) => {
            b.put_u8(1);
            put_log_id(&mut b, id.as_ref());
        }
        AppendEntriesResponse::Conflict => b.put_u8(2),
        AppendEntriesResponse::HigherVote(vote) => {
            b.put_u8(3);
            put_vote(&mut b, vote);
        }
    }
    b.freeze()
}

/// The append-entries response in `bytes`.
pub(crate) fn decode_append_response(bytes: &[u8]) -> io::Result<AppendEntriesResponse<TypeConfig>> {
    let mut r = Reader::new(bytes, "append-entries response");
    r.version()?;
    let resp = match r.u8()? {
        0 => AppendEntriesResponse::Success,
        1 => AppendEntriesResponse::PartialSuccess(r.log_id()?),
        2 => AppendEntriesResponse::Conflict,
        3 => AppendEntriesResponse::HigherVote(r.vote()?),
        other => return Err(r.invalid(format!("unknown response tag {other}"))),
    };
    r.end()?;
    Ok(resp)
}

/// One answer of a pipelined append stream (`StreamAppend`) in the append response layout:
/// what the receiver holds after that request is a partial success naming its last entry.
pub(crate) fn encode_stream_append_result(result: &StreamAppendResult<TypeConfig>) -> Bytes {
    let resp = match result {
        Ok(matched) => AppendEntriesResponse::PartialSuccess(*matched),
        Err(StreamAppendError::Conflict(_)) => AppendEntriesResponse::Conflict,
        Err(StreamAppendError::HigherVote(vote)) => AppendEntriesResponse::HigherVote(*vote),
    };
    encode_append_response(&resp)
}

/// A vote (or pre-vote) request in its wire layout.
pub(crate) fn encode_vote_request(req: &VoteRequest<TypeConfig>) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + 17 + 17 + 1);
    b.put_u8(VERSION);
    put_vote(&mut b, &req.vote);
    put_log_id(&mut b, req.last_log_id.as_ref());
    b.put_u8(u8::from(req.leadership_transfer));
    b.freeze()
}

/// The vote request in `bytes`.
pub(crate) fn decode_vote_request(bytes: &[u8]) -> io::Result<VoteRequest<TypeConfig>> {
    let mut r = Reader::new(bytes, "vote request");
    r.version()?;
    let vote = r.vote()?;
    let last_log_id = r.log_id()?;
    let leadership_transfer = r.bool()?;
    r.end()?;
    Ok(VoteRequest { vote, last_log_id, leadership_transfer })
}

/// A vote response in its wire layout.
pub(crate) fn encode_vote_response(resp: &VoteResponse<TypeConfig>) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + 17 + 1 + 17);
    b.put_u8(VERSION);
    put_vote(&mut b, &resp.vote);
    b.put_u8(u8::from(resp.vote_granted));
    put_log_id(&mut b, resp.last_log_id.as_ref());
    b.freeze()
}

/// The vote response in `bytes`.
pub(crate) fn decode_vote_response(bytes: &[u8]) -> io::Result<VoteResponse<TypeConfig>> {
    let mut r = Reader::new(bytes, "vote response");
    r.version()?;
    let vote = r.vote()?;
    let vote_granted = r.bool()?;
    let last_log_id = r.log_id()?;
    r.end()?;
    Ok(VoteResponse { vote, vote_granted, last_log_id })
}

/// A snapshot's metadata in its wire layout.
pub(crate) fn encode_snapshot_meta(meta: &SnapshotMeta) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(VERSION);
    put_log_id(&mut b, meta.last_log_id.as_ref());
    put_log_id(&mut b, meta.last_membership.log_id().as_ref());
    let m = encode_membership(meta.last_membership.membership());
    b.put_u32_le(len_u32(m.len()));
    b.put_slice(&m);
    b.freeze()
}

/// The snapshot metadata in `bytes`.
pub(crate) fn decode_snapshot_meta(bytes: &[u8]) -> io::Result<SnapshotMeta> {
    let mut r = Reader::new(bytes, "snapshot meta");
    r.version()?;
    let last_log_id = r.log_id()?;
    let membership_log_id = r.log_id()?;
    let len = r.u32()? as usize;
    let membership = decode_membership(r.take(len)?)?;
    r.end()?;
    Ok(SnapshotMeta { last_log_id, last_membership: StoredMembership::new(membership_log_id, membership) })
}

/// The membership config in its layout.
pub(crate) fn encode_membership(m: &Membership) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(VERSION);
    let configs = m.get_joint_config();
    b.put_u32_le(len_u32(configs.len()));
    for config in configs {
        b.put_u32_le(len_u32(config.len()));
        for id in config {
            b.put_u64_le(*id);
        }
    }
    let nodes: Vec<_> = m.nodes().collect();
    b.put_u32_le(len_u32(nodes.len()));
    for (id, peer) in nodes {
        b.put_u64_le(*id);
        b.put_u32_le(len_u32(peer.addr.len()));
        b.put_slice(peer.addr.as_bytes());
    }
    b.freeze()
}

/// The membership config stored as `bytes`.
pub(crate) fn decode_membership(bytes: &[u8]) -> io::Result<Membership> {
    let mut r = Reader::new(bytes, "membership");
    r.version()?;
    let membership = r.membership()?;
    r.end()?;
    Ok(membership)
}

/// What the state machine holds: enough to answer `applied_state` and to number records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SmState {
    /// The last applied entry.
    pub applied: Option<LogId>,
    /// The last membership config applied, with the id of its entry.
    pub membership: StoredMembership,
    /// Data entries applied so far: the `log.v1` offset the next record gets.
    pub records: u64,
    /// The latest retention decision applied: records below this index go.
    pub retain_from: u64,
}

/// The state machine layout's version: 2 added `retain_from`.
const SM_STATE_VERSION: u8 = 2;

pub(crate) fn encode_sm_state(s: &SmState) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(SM_STATE_VERSION);
    put_log_id(&mut b, s.applied.as_ref());
    put_log_id(&mut b, s.membership.log_id().as_ref());
    let m = encode_membership(s.membership.membership());
    b.put_u32_le(len_u32(m.len()));
    b.put_slice(&m);
    b.put_u64_le(s.records);
    b.put_u64_le(s.retain_from);
    b.freeze()
}

pub(crate) fn decode_sm_state(bytes: &[u8]) -> io::Result<SmState> {
    let mut r = Reader::new(bytes, "state machine");
    let version = r.u8()?;
    if !(1..=SM_STATE_VERSION).contains(&version) {
        return Err(
            r.invalid(format!("unknown version {version} (this build reads 1 to {SM_STATE_VERSION})"))
        );
    }
    let applied = r.log_id()?;
    let membership_log_id = r.log_id()?;
    let len = r.u32()? as usize;
    let membership = decode_membership(r.take(len)?)?;
    let records = r.u64()?;
    let retain_from = if version >= 2 { r.u64()? } else { 0 };
    r.end()?;
    let membership = StoredMembership::new(membership_log_id, membership);
    Ok(SmState { applied, membership, records, retain_from })
}

/// The head of a snapshot's data stream (see [`crate::snapshot`]): the state machine's state,
/// and the log's entries that follow, as parts of frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotHead {
    /// The state machine's state ([`encode_sm_state`]).
    pub state: Bytes,
    /// The entries shipped after the head; `None` when there are none.
    pub files: Option<FilesHead>,
}

/// What the parts after a [`SnapshotHead`] hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FilesHead {
    /// The entry before the first one.
    pub before: Option<ringlog_engine::EntryId>,
    /// The last entry.
    pub last: ringlog_engine::EntryId,
    /// The offset the first record after `last` gets.
    pub next_offset: u64,
    /// Each part's first index and length in bytes, in order.
    pub parts: Vec<ringlog_engine::FilePart>,
}

impl FilesHead {
    /// Bytes of all parts.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.len).sum()
    }
}

pub(crate) fn encode_snapshot_head(head: &SnapshotHead) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(VERSION);
    b.put_u32_le(len_u32(head.state.len()));
    b.put_slice(&head.state);
    match &head.files {
        None => b.put_u8(0),
        Some(files) => {
            b.put_u8(1);
            b.put_u8(u8::from(files.before.is_some()));
            let before = files.before.unwrap_or_default();
            for n in [before.term, before.index, files.last.term, files.last.index, files.next_offset] {
                b.put_u64_le(n);
            }
            b.put_u32_le(len_u32(files.parts.len()));
            for part in &files.parts {
                b.put_u64_le(part.first_index);
                b.put_u64_le(part.len);
            }
        }
    }
    b.freeze()
}

pub(crate) fn decode_snapshot_head(bytes: &[u8]) -> io::Result<SnapshotHead> {
    use ringlog_engine::{EntryId, FilePart};
    let mut r = Reader::new(bytes, "snapshot head");
    r.version()?;
    let len = r.u32()? as usize;
    let state = Bytes::copy_from_slice(r.take(len)?);
    let files = if r.bool()? {
        let has_before = r.bool()?;
        let before = EntryId { term: r.u64()?, index: r.u64()? };
        let last = EntryId { term: r.u64()?, index: r.u64()? };
        let next_offset = r.u64()?;
        let count = r.count(16)?;
        let mut parts = Vec::with_capacity(count);
        for _ in 0..count {
            parts.push(FilePart { first_index: r.u64()?, len: r.u64()? });
        }
        Some(FilesHead { before: has_before.then_some(before), last, next_offset, parts })
    } else {
        None
    };
    r.end()?;
    Ok(SnapshotHead { state, files })
}

fn put_log_id(b: &mut BytesMut, id: Option<&LogId>) {
    match id {
        None => b.put_u8(0),
        Some(id) => {
            b.put_u8(1);
            b.put_u64_le(id.leader_id.term);
            b.put_u64_le(id.index);
        }
    }
}

fn len_u32(n: usize) -> u32 {
    // Membership configs and addresses are tiny; four billion of anything is a bug upstream.
    u32::try_from(n).expect("length fits in u32")
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, pos: 0, what }
    }

    fn invalid(&self, reason: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad {} bytes at byte {}: {reason}", self.what, self.pos),
        )
    }

    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.invalid(format!("{n} more bytes needed, {} left", self.bytes.len() - self.pos)));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn bool(&mut self) -> io::Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.invalid(format!("flag {other} is neither 0 nor 1"))),
        }
    }

    fn version(&mut self) -> io::Result<()> {
        match self.u8()? {
            VERSION => Ok(()),
            other => Err(self.invalid(format!("unknown version {other} (this build reads {VERSION})"))),
        }
    }

    /// A count of items of at least `item_bytes` each, checked against the bytes left so that
    /// a corrupt count cannot make the decoder allocate without bound.
    fn count(&mut self, item_bytes: usize) -> io::Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item_bytes) > self.bytes.len() - self.pos {
            return Err(self.invalid(format!("count {n} exceeds the bytes left")));
        }
        Ok(n)
    }

    fn vote(&mut self) -> io::Result<Vote> {
        let term = self.u64()?;
        let voted_for = self.u64()?;
        let committed = self.bool()?;
        Ok(if committed { Vote::new_committed(term, voted_for) } else { Vote::new(term, voted_for) })
    }

    fn log_id(&mut self) -> io::Result<Option<LogId>> {
        if !self.bool()? {
            return Ok(None);
        }
        let term = self.u64()?;
        let index = self.u64()?;
        Ok(Some(log_id(term, index)))
    }

    fn membership(&mut self) -> io::Result<Membership> {
        let configs_len = self.count(4)?;
        let mut configs = Vec::with_capacity(configs_len);
        for _ in 0..configs_len {
            let ids = self.count(8)?;
            let mut config = BTreeSet::new();
            for _ in 0..ids {
                config.insert(self.u64()?);
            }
            configs.push(config);
        }
        let nodes_len = self.count(12)?;
        let mut nodes = BTreeMap::<NodeId, Peer>::new();
        for _ in 0..nodes_len {
            let id = self.u64()?;
            let len = self.u32()? as usize;
            let addr = std::str::from_utf8(self.take(len)?).map_err(|e| self.invalid(e))?;
            nodes.insert(id, Peer { addr: addr.to_owned() });
        }
        Membership::new(configs, nodes).map_err(|e| self.invalid(e))
    }

    fn end(&self) -> io::Result<()> {
        if self.pos != self.bytes.len() {
            return Err(self.invalid(format!("{} trailing bytes", self.bytes.len() - self.pos)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership() -> Membership {
        let configs = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([2, 3, 4])];
        let nodes = BTreeMap::from([
            (1, Peer { addr: "127.0.0.1:8401".into() }),
            (2, Peer { addr: "127.0.0.1:8402".into() }),
            (3, Peer { addr: "127.0.0.1:8403".into() }),
            (4, Peer { addr: "127.0.0.1:8404".into() }),
            (9, Peer { addr: "learner:1".into() }),
        ]);
        Membership::new(configs, nodes).unwrap()
    }

    #[test]
    fn vote_round_trips_in_18_bytes() {
        for vote in [Vote::new(0, 0), Vote::new(7, 3), Vote::new_committed(u64::MAX, 2)] {
            let bytes = encode_vote(&vote);
            assert_eq!(bytes.len(), 18);
            assert_eq!(decode_vote(&bytes).unwrap(), vote);
        }
    }

    #[test]
    fn bad_vote_bytes_are_invalid_data_not_a_panic() {
        let good = encode_vote(&Vote::new_committed(5, 1));
        let mut bad_flag = good.to_vec();
        bad_flag[17] = 2;
        let mut bad_version = good.to_vec();
        bad_version[0] = 9;
        let cases =
            [&good[..17], &bad_flag[..], &bad_version[..], &[][..], &[good.to_vec(), vec![0]].concat()[..]];
        for bytes in cases {
            let err = decode_vote(bytes).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bytes:?}: {err}");
        }
    }

    #[test]
    fn joint_membership_with_learners_round_trips() {
        let m = membership();
        assert_eq!(decode_membership(&encode_membership(&m)).unwrap(), m);
        let empty = Membership::default();
        assert_eq!(decode_membership(&encode_membership(&empty)).unwrap(), empty);
    }

    #[test]
    fn every_truncation_of_a_membership_is_rejected() {
        let bytes = encode_membership(&membership());
        for len in 0..bytes.len() {
            assert!(decode_membership(&bytes[..len]).is_err(), "prefix of {len} bytes accepted");
        }
    }

    #[test]
    fn a_huge_count_is_rejected_without_allocating() {
        let mut b = vec![VERSION];
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = decode_membership(&b).unwrap_err();
        assert!(err.to_string().contains("exceeds the bytes left"), "{err}");
    }

    #[test]
    fn a_voter_without_a_node_is_rejected() {
        let mut b = BytesMut::new();
        b.put_u8(VERSION);
        b.put_u32_le(1);
        b.put_u32_le(1);
        b.put_u64_le(7);
        b.put_u32_le(0);
        assert_eq!(decode_membership(&b).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn entries_map_to_engine_kinds_and_back() {
        let record = Record { timestamp_ms: 1_700_000_000_123, value: Bytes::from_static(b"hello") };
        let entries = [
            Entry::new_normal(log_id(3, 10), record.clone().into()),
            Entry::new_blank(log_id(3, 11)),
            Entry::new_membership(log_id(4, 12), membership()),
        ];
        let kinds = [EntryKind::Data, EntryKind::Blank, EntryKind::Membership];
        for (entry, kind) in entries.into_iter().zip(kinds) {
            let engine = to_engine(entry.clone());
            assert_eq!(engine.kind, kind);
            assert_eq!(engine.id, entry_id(&entry.log_id));
            assert_eq!(from_engine(engine).unwrap(), entry);
        }
        let engine = to_engine(Entry::new_normal(log_id(1, 1), record.clone().into()));
        assert_eq!(engine.timestamp_ms, record.timestamp_ms);
        assert_eq!(engine.payload, record.value);
    }

    #[test]
    fn state_machine_state_round_trips() {
        let s = SmState {
            applied: Some(log_id(4, 99)),
            membership: StoredMembership::new(Some(log_id(4, 12)), membership()),
            records: 80,
            retain_from: 30,
        };
        assert_eq!(decode_sm_state(&encode_sm_state(&s)).unwrap(), s);
        // Version 1 (before retention) reads with nothing retained away.
        let v2 = encode_sm_state(&s);
        let mut v1 = v2[..v2.len() - 8].to_vec();
        v1[0] = 1;
        assert_eq!(decode_sm_state(&v1).unwrap(), SmState { retain_from: 0, ..s.clone() });
        let files = FilesHead {
            before: Some(ringlog_engine::EntryId { term: 2, index: 9 }),
            last: ringlog_engine::EntryId { term: 3, index: 40 },
            next_offset: 7,
            parts: vec![ringlog_engine::FilePart { first_index: 10, len: 300 }],
        };
        for head in [
            SnapshotHead { state: encode_sm_state(&s), files: Some(files) },
            SnapshotHead { state: Bytes::new(), files: None },
        ] {
            let bytes = encode_snapshot_head(&head);
            assert_eq!(decode_snapshot_head(&bytes).unwrap(), head);
            assert!(decode_snapshot_head(&bytes[..bytes.len() - 1]).is_err());
        }
        let empty = SmState::default();
        assert_eq!(decode_sm_state(&encode_sm_state(&empty)).unwrap(), empty);
    }

    fn append_request() -> AppendEntriesRequest<TypeConfig> {
        let record = Record { timestamp_ms: 42, value: Bytes::from_static(b"a value") };
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(2, 9)),
            entries: vec![
                Entry::new_blank(log_id(3, 10)),
                Entry::new_normal(log_id(3, 11), record.into()),
                Entry::new_membership(log_id(3, 12), membership()),
                Entry::new_normal(log_id(3, 13), Record { timestamp_ms: 0, value: Bytes::new() }.into()),
            ],
            leader_commit: Some(log_id(2, 8)),
        }
    }

    fn assert_same_request(a: &AppendEntriesRequest<TypeConfig>, b: &AppendEntriesRequest<TypeConfig>) {
        assert_eq!(
            (&a.vote, &a.prev_log_id, &a.leader_commit, &a.entries),
            (&b.vote, &b.prev_log_id, &b.leader_commit, &b.entries)
        );
    }

    #[test]
    fn append_requests_round_trip_and_values_are_slices_of_the_message() {
        let req = append_request();
        let bytes = encode_append_request(&req);
        let back = decode_append_request(&bytes).unwrap();
        assert_same_request(&back, &req);
        let EntryPayload::Normal(Command::Record(record)) = &back.entries[1].payload else {
            panic!("not data")
        };
        let range = bytes.as_ptr_range();
        assert!(range.contains(&record.value.as_ptr()), "the value was copied");

        let heartbeat = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 2),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        assert_same_request(&decode_append_request(&encode_append_request(&heartbeat)).unwrap(), &heartbeat);
    }

    #[test]
    fn every_truncation_of_an_append_request_is_rejected() {
        let bytes = encode_append_request(&append_request());
        for len in 0..bytes.len() {
            let err = decode_append_request(&bytes.slice(..len)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "prefix of {len} bytes: {err}");
        }
        let mut bad_kind = bytes.to_vec();
        bad_kind[1 + 17 + 17 + 17 + 4 + 16] = 7;
        let err = decode_append_request(&Bytes::from(bad_kind)).unwrap_err();
        assert!(err.to_string().contains("unknown entry kind 7"), "{err}");
    }

    #[test]
    fn append_responses_round_trip() {
        let cases = [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::PartialSuccess(Some(log_id(4, 5))),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new_committed(9, 3)),
        ];
        for resp in cases {
            let bytes = encode_append_response(&resp);
            assert_eq!(decode_append_response(&bytes).unwrap(), resp);
            for len in 0..bytes.len() {
                assert!(decode_append_response(&bytes[..len]).is_err());
            }
        }
    }

    #[test]
    fn vote_requests_and_responses_round_trip() {
        for transfer in [false, true] {
            let req = VoteRequest::<TypeConfig> {
                vote: Vote::new(5, 2),
                last_log_id: Some(log_id(4, 77)),
                leadership_transfer: transfer,
            };
            assert_eq!(decode_vote_request(&encode_vote_request(&req)).unwrap(), req);
        }
        let req = VoteRequest::<TypeConfig>::new(Vote::new(1, 1), None);
        assert_eq!(decode_vote_request(&encode_vote_request(&req)).unwrap(), req);
        for granted in [false, true] {
            let resp =
                VoteResponse::<TypeConfig>::new(Vote::new_committed(5, 2), Some(log_id(5, 1)), granted);
            let bytes = encode_vote_response(&resp);
            assert_eq!(decode_vote_response(&bytes).unwrap(), resp);
            for len in 0..bytes.len() {
                assert!(decode_vote_response(&bytes[..len]).is_err());
            }
        }
    }

    #[test]
    fn snapshot_meta_round_trips() {
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(4, 99)),
            last_membership: StoredMembership::new(Some(log_id(4, 12)), membership()),
        };
        assert_eq!(decode_snapshot_meta(&encode_snapshot_meta(&meta)).unwrap(), meta);
        let empty = SnapshotMeta { last_log_id: None, last_membership: StoredMembership::default() };
        assert_eq!(decode_snapshot_meta(&encode_snapshot_meta(&empty)).unwrap(), empty);
    }
}
