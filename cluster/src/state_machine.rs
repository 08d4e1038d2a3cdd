//! openraft's state machine ([`RaftStateMachine`]) for a log whose entries *are* the records.
//!
//! Applying an entry copies nothing: the record is already in the engine's log. The state
//! machine only moves its applied mark, remembers the last membership config, and counts the
//! data entries it applied, which numbers the records: the `n`th data entry is `log.v1` offset
//! `n - 1`, and that offset is the [`Ack`] a client's write gets back.
//!
//! # Persistence: snapshots only, re-applied up to `committed`
//!
//! `apply` writes nothing to disk (it would cost an `fsync` per batch for a few bytes). The
//! state survives a restart in two pieces, and openraft puts them back together:
//!
//! - the last **snapshot** (applied log id, membership, record count at that point) is a small
//!   file written atomically (temp file, `fsync`, rename, directory `fsync`) and CRC-checked
//!   when read; [`StateMachine::open`] starts from it;
//! - the **committed** log id is in the engine's metadata (see [`crate::log_store`]); at startup
//!   openraft re-applies the log from the snapshot up to it, which recounts the records.
//!
//! So after a clean restart the applied mark is back where it was, and the record count agrees
//! with the log. The engine writes `committed` with its next metadata write or on close, so
//! after a crash the mark may restart lower; it catches up once the node learns the cluster's
//! commit, and consumers must wait for that (`Raft::wait_for_recovery`) so that they never see
//! the high watermark go back.
//!
//! # Snapshots carry the records
//!
//! A snapshot's data ([`SnapshotData`], see [`crate::snapshot`]) is the state above plus a
//! view of the log's entries through the applied one: a follower whose leader purged what it
//! lacks receives the records themselves. The snapshot file keeps only the state; the view is
//! taken from the log whenever the snapshot is read. Installing one replaces the log's entries
//! with the shipped ones (unless the log already holds the snapshot's last entry) and the
//! state, in this order, with the new state written to `snapshot.pending` first: a node that
//! crashes in between finds the pending state at its next start and keeps it exactly when its
//! log holds that state's last applied entry (the install finished), so the log and the
//! state never disagree.
//!
//! How each contract is honoured:
//!
//! - **`applied_state`** returns the last applied log id and the last applied membership.
//! - **`apply`** records each entry's log id as applied, stores a membership entry's config,
//!   counts data entries, and answers every entry that has a responder once the entries at
//!   hand (a batch) are readable.
//! - **`try_create_snapshot_builder`** always returns a builder (building is cheap), whether or
//!   not `force` is set; the builder works on a copy of the state taken when it was created.
//! - **`build_snapshot`** persists the snapshot before returning it, so that
//!   `get_current_snapshot` returns it, now and after a restart.
//! - **`install_snapshot`** checks the data against the metadata, installs its entries in the
//!   log, persists the state (replacing the previous snapshot atomically) and replaces the
//!   state, all before it returns.
//! - **`get_current_snapshot`** returns the last snapshot built or installed, or `None`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::TypeConfigExt;

use crate::codec::{self, SmState};
pub use crate::snapshot::SnapshotData;
use crate::types::{Ack, Command, LogId, SnapshotMeta, StoredMembership, TypeConfig};

/// A snapshot as openraft sees it: metadata plus [`SnapshotData`].
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

const SNAPSHOT_MAGIC: &[u8; 4] = b"RLSS";

/// Entries applied together at most (see `apply`): enough to make the per-batch work rare,
/// few enough that the first client of a batch is not kept waiting for long.
const APPLY_BATCH_MAX: usize = 1024;

/// The index after `applied`: what readers may see below.
fn next_index(applied: Option<LogId>) -> u64 {
    applied.map_or(0, |id| id.index + 1)
}

struct Shared {
    /// The snapshot file.
    path: PathBuf,
    /// What has been applied.
    state: Mutex<SmState>,
    /// The last snapshot built or installed, as persisted. Its lock also serializes writes of
    /// the file.
    snapshot: Mutex<Option<SmState>>,
    /// The latest retention decision applied (its `retain_from` index), for the log store,
    /// which deletes below it, and the node, which purges Raft's log up to it.
    retention: tokio::sync::watch::Sender<u64>,
}

/// openraft's [`RaftStateMachine`] for ringlog: see the module docs.
pub struct StateMachine {
    shared: Arc<Shared>,
    /// The log whose entries snapshots carry and whose readers see only applied entries
    /// ([`StateMachine::limiting_reads_of`]).
    log: Option<ringlog_engine::Log>,
}

/// Builds a snapshot of the state as it was when the builder was created.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    state: SmState,
    log: Option<ringlog_engine::Log>,
}

impl StateMachine {
    /// Opens the state machine whose snapshot lives in the file `path` (created on the first
    /// snapshot; its directory must exist). It starts from that snapshot, or from nothing.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let snapshot = read_snapshot(&path)?;
        let state = snapshot.clone().unwrap_or_default();
        let retention = tokio::sync::watch::Sender::new(state.retain_from);
        let shared = Shared { path, state: Mutex::new(state), snapshot: Mutex::new(snapshot), retention };
        Ok(StateMachine { shared: Arc::new(shared), log: None })
    }

    /// Keeps `log`'s record readers below the applied mark from now on (its read limit
    /// follows every apply and snapshot install), so that Consume and ConsumeStream on this
    /// node serve committed records only (`replication.md`, decision 4).
    pub fn limiting_reads_of(mut self, log: ringlog_engine::Log) -> Self {
        log.set_read_limit(next_index(self.applied()));
        self.log = Some(log);
        self
    }

    fn applied_moved(&self, applied: Option<LogId>) {
        if let Some(log) = &self.log {
            log.set_read_limit(next_index(applied));
        }
    }

    /// Applies the entries of `batch` up to the first error, which it returns: the state
    /// moves, readers see the entries, then every responder is answered.
    fn apply_batch(&self, batch: Vec<io::Result<EntryResponder<TypeConfig>>>) -> io::Result<()> {
        let mut answers = Vec::with_capacity(batch.len());
        let mut failed = Ok(());
        let applied = {
            let mut state = self.shared.state.lock().unwrap();
            for item in batch {
                let (entry, responder) = match item {
                    Ok(item) => item,
                    Err(e) => {
                        failed = Err(e);
                        break;
                    }
                };
                state.applied = Some(entry.log_id);
                let offset = state.records;
                match entry.payload {
                    EntryPayload::Normal(Command::Record(_)) => state.records += 1,
                    EntryPayload::Normal(Command::RetainFrom(index)) if index > state.retain_from => {
                        state.retain_from = index;
                        self.shared.retention.send_replace(index);
                    }
                    EntryPayload::Normal(Command::RetainFrom(_)) => {}
                    EntryPayload::Blank => {}
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                }
                answers.extend(responder.map(|responder| (responder, Ack { offset })));
            }
            state.applied
        };
        // Readable here before the clients hear of it.
        self.applied_moved(applied);
        for (responder, ack) in answers {
            responder.send(ack);
        }
        failed
    }

    /// The last applied log id: the node's high watermark in Raft terms.
    pub fn applied(&self) -> Option<LogId> {
        self.shared.state.lock().unwrap().applied
    }

    /// The latest retention decision applied: the index below which records go (0: none).
    pub fn retention(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.retention.subscribe()
    }

    /// Records applied so far: the `log.v1` offset the next record gets.
    pub fn records(&self) -> u64 {
        self.shared.state.lock().unwrap().records
    }

    fn builder(&self) -> SnapshotBuilder {
        let state = self.shared.state.lock().unwrap().clone();
        SnapshotBuilder { shared: self.shared.clone(), state, log: self.log.clone() }
    }
}

/// The snapshot of `state`, with the view of `log`'s entries through its applied one when
/// the log holds them. (It holds none when a state was applied from entries never appended
/// here, as openraft's storage suite does; a node's own log always holds what it applied,
/// since it purges only below a snapshot.)
fn snapshot_of(state: &SmState, log: Option<&ringlog_engine::Log>) -> io::Result<Snapshot> {
    let meta = SnapshotMeta { last_log_id: state.applied, last_membership: state.membership.clone() };
    let files = match (log, state.applied) {
        (Some(log), Some(applied))
            if log.first_index() <= applied.index && applied.index < log.next_index() =>
        {
            Some(log.files_through(applied.index).map_err(crate::log_store::io_error)?)
        }
        _ => None,
    };
    Ok(Snapshot { meta, snapshot: SnapshotData::local(codec::encode_sm_state(state), files) })
}

/// Persists `state` as the current snapshot unless a newer one is already there.
/// `force` replaces it whatever its age (an installed snapshot is what the leader says).
async fn persist(shared: &Arc<Shared>, state: SmState, force: bool) -> io::Result<()> {
    let shared = shared.clone();
    TypeConfig::spawn_blocking(move || {
        let mut current = shared.snapshot.lock().unwrap();
        if current.as_ref() == Some(&state) {
            return Ok(());
        }
        if !force && current.as_ref().is_some_and(|c| c.applied >= state.applied) {
            return Ok(());
        }
        write_snapshot(&shared.path, &state)?;
        *current = Some(state);
        Ok(())
    })
    .await?
}

fn temp_path(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp")
}

/// Where the state of a snapshot being installed waits until its entries are in the log.
fn pending_path(path: &Path) -> PathBuf {
    with_suffix(path, ".pending")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// At a node's start: a snapshot whose install a crash interrupted becomes the snapshot if
/// its entries made it into `log` (the log holds its last applied entry), and is dropped
/// otherwise (the log is still the old one, and so is the snapshot).
pub(crate) fn settle_pending(path: &Path, log: &ringlog_engine::Log) -> io::Result<()> {
    let pending = pending_path(path);
    let state = match read_snapshot(&pending) {
        Ok(Some(state)) => state,
        Ok(None) => return Ok(()),
        // Torn before it was synced: the install never began.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return fs::remove_file(&pending),
        Err(e) => return Err(e),
    };
    let installed = state.applied.is_some_and(|applied| {
        let id = crate::codec::entry_id(&applied);
        log.read_entries(id.index, id.index + 1, 0).is_ok_and(|e| e.first().map(|e| e.id) == Some(id))
    });
    if installed {
        promote_pending(path)
    } else {
        fs::remove_file(&pending)?;
        sync_dir(path)
    }
}

/// The pending state becomes the snapshot (durably).
fn promote_pending(path: &Path) -> io::Result<()> {
    fs::rename(pending_path(path), path)?;
    sync_dir(path)
}

/// `magic | len u32 | state | crc32c(len | state) u32`, written to a temp file, synced,
/// renamed over the old one, and the directory synced.
fn write_snapshot(path: &Path, state: &SmState) -> io::Result<()> {
    let body = codec::encode_sm_state(state);
    let len = u32::try_from(body.len()).expect("a state machine state is small");
    let mut b = BytesMut::with_capacity(body.len() + 12);
    b.put_slice(SNAPSHOT_MAGIC);
    b.put_u32_le(len);
    b.put_slice(&body);
    let crc = crc32c::crc32c(&b[4..]);
    b.put_u32_le(crc);

    let temp = temp_path(path);
    let mut f = File::create(&temp)?;
    f.write_all(&b)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&temp, path)?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn read_snapshot(path: &Path) -> io::Result<Option<SmState>> {
    // A temp file is a write that never finished; the renamed file is the snapshot.
    match fs::remove_file(temp_path(path)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let bytes = match fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        r => r?,
    };
    let corrupt = |reason: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("corrupt snapshot file {}: {reason}", path.display()),
        )
    };
    if bytes.len() < 12 || &bytes[..4] != SNAPSHOT_MAGIC {
        return Err(corrupt(format!("no snapshot header in its {} bytes", bytes.len())));
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if bytes.len() != len + 12 {
        return Err(corrupt(format!(
            "header says {len} bytes of state, the file holds {}",
            bytes.len() - 12
        )));
    }
    let (covered, crc) = bytes[4..].split_at(4 + len);
    let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32c::crc32c(covered) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    codec::decode_sm_state(&covered[4..]).map(Some).map_err(|e| corrupt(e.to_string()))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        persist(&self.shared, self.state.clone(), false).await?;
        snapshot_of(&self.state, self.log.as_ref())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let state = self.shared.state.lock().unwrap();
        Ok((state.applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> io::Result<()>
    where
        Strm: futures_util::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        // The entries already at hand are applied together: one update of the state and one
        // wake-up of the readers, however many entries.
        let mut batches = entries.ready_chunks(APPLY_BATCH_MAX);
        while let Some(batch) = batches.next().await {
            self.apply_batch(batch)?;
        }
        Ok(())
    }
    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        Some(self.builder())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.builder()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> io::Result<()> {
        let state = codec::decode_sm_state(snapshot.state())?;
        let entries_match =
            snapshot.last_entry().is_none_or(|last| state.applied.map(|a| codec::entry_id(&a)) == Some(last))
                && snapshot.next_offset().is_none_or(|next| next == state.records);
        if state.applied != meta.last_log_id || state.membership != meta.last_membership || !entries_match {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot data (applied {:?}, entries through {:?}) does not match its metadata {meta}",
                    state.applied,
                    snapshot.last_entry()
                ),
            ));
        }
        match &self.log {
            Some(log) if snapshot.last_entry().is_some() => {
                // The state waits beside the snapshot file until the entries are in, then
                // becomes the snapshot.
                let (pending, pending_state) = (pending_path(&self.shared.path), state.clone());
                TypeConfig::spawn_blocking(move || write_snapshot(&pending, &pending_state)).await??;
                crate::snapshot::install(&snapshot, log).await?;
                let shared = self.shared.clone();
                let installed = state.clone();
                TypeConfig::spawn_blocking(move || {
                    let mut current = shared.snapshot.lock().unwrap();
                    promote_pending(&shared.path)?;
                    *current = Some(installed);
                    io::Result::Ok(())
                })
                .await??;
            }
            _ => persist(&self.shared, state.clone(), true).await?,
        }
        let (applied, retain_from) = (state.applied, state.retain_from);
        *self.shared.state.lock().unwrap() = state;
        self.shared.retention.send_if_modified(|current| {
            let moved = retain_from > *current;
            *current = (*current).max(retain_from);
            moved
        });
        self.applied_moved(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let Some(mut state) = self.shared.snapshot.lock().unwrap().clone() else { return Ok(None) };
        if let Some(log) = &self.log
            && state.applied.is_some_and(|applied| applied.index < log.first_index())
        {
            // Retention deleted the entries through this snapshot's last one, and a snapshot
            // must carry the records from the log's first on: take one of the current state
            // (applied past every purge, so the log holds it).
            let current = self.shared.state.lock().unwrap().clone();
            persist(&self.shared, current.clone(), false).await?;
            state = current;
        }
        snapshot_of(&state, self.log.as_ref()).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Membership, log_id};

    fn state() -> SmState {
        let m = Membership::new_with_defaults(vec![[1, 2, 3].into()], []);
        SmState {
            applied: Some(log_id(2, 40)),
            membership: StoredMembership::new(Some(log_id(1, 3)), m),
            records: 37,
            retain_from: 12,
        }
    }

    #[test]
    fn snapshot_file_round_trips_and_a_stale_temp_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        assert_eq!(read_snapshot(&path).unwrap(), None);
        write_snapshot(&path, &state()).unwrap();
        fs::write(temp_path(&path), b"half a write").unwrap();
        assert_eq!(read_snapshot(&path).unwrap(), Some(state()));
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn a_flipped_bit_in_the_snapshot_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        write_snapshot(&path, &state()).unwrap();
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            let err = read_snapshot(&path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains("snapshot"), "{err}");
        }
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(read_snapshot(&path).is_err());
    }
}
