//! What the storage suite does not check: that a node's Raft state survives closing and
//! reopening its directory, through every write the log store makes.

use std::path::Path;

use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use openraft::{LogState, RaftLogReader, StorageHelper};
use ringlog_cluster::{Entry, LogId, LogStore, Membership, Record, StateMachine, TypeConfig, Vote, log_id};
use ringlog_engine::{Config, Durability};

/// Segments of three entries (or two large ones), so that truncations and purges cross
/// segment boundaries.
fn open(dir: &Path) -> (LogStore, StateMachine) {
    let config = Config {
        durability: Durability::Always,
        index_bytes_max: 32 + 3 * 8,
        store_bytes_max: 2 << 20,
        ..Config::default()
    };
    ringlog_cluster::open(dir, config).unwrap()
}

fn close(store: LogStore) {
    store.log().close().unwrap();
}

fn record(i: u64) -> Record {
    Record { timestamp_ms: 1_700_000_000_000 + i, value: Bytes::from(format!("value-{i}")) }
}

fn membership() -> Membership {
    Membership::new_with_defaults(vec![[1, 2, 3].into()], [])
}

/// Index 0 a blank, 1 a membership, the rest data entries, all in `term`.
fn entries(term: u64, indexes: std::ops::Range<u64>) -> Vec<Entry> {
    indexes
        .map(|i| match i {
            0 => Entry::new_blank(log_id(term, 0)),
            1 => Entry::new_membership(log_id(term, 1), membership()),
            i => Entry::new_normal(log_id(term, i), record(i).into()),
        })
        .collect()
}

async fn all_entries(store: &mut LogStore) -> Vec<Entry> {
    store.get_log_reader().await.try_get_log_entries(0..).await.unwrap()
}

fn run(f: impl AsyncFnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    TypeConfig::run(f(dir.path()));
}

#[test]
fn entries_vote_and_committed_survive_reopen() {
    run(async |dir| {
        let (mut store, _sm) = open(dir);
        let written = entries(1, 0..6);
        store.blocking_append(written.clone()).await.unwrap();
        let vote = Vote::new_committed(1, 2);
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(log_id(1, 4))).await.unwrap();
        close(store);

        let (mut store, _sm) = open(dir);
        assert_eq!(all_entries(&mut store).await, written);
        assert_eq!(store.get_log_reader().await.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 4)));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state, LogState { last_purged_log_id: None, last_log_id: Some(log_id(1, 5)) });
    });
}

#[test]
fn truncation_survives_reopen_and_the_log_continues_in_a_new_term() {
    run(async |dir| {
        let (mut store, _sm) = open(dir);
        store.blocking_append(entries(1, 0..10)).await.unwrap();
        store.truncate_after(Some(log_id(1, 5))).await.unwrap();
        close(store);

        let (mut store, _sm) = open(dir);
        assert_eq!(all_entries(&mut store).await, entries(1, 0..6));
        store.blocking_append(entries(2, 6..8)).await.unwrap();
        let got = all_entries(&mut store).await;
        assert_eq!(
            got.iter().map(|e| e.log_id).collect::<Vec<LogId>>(),
            [
                log_id(1, 0),
                log_id(1, 1),
                log_id(1, 2),
                log_id(1, 3),
                log_id(1, 4),
                log_id(1, 5),
                log_id(2, 6),
                log_id(2, 7)
            ]
        );
        store.truncate_after(None).await.unwrap();
        close(store);

        let (mut store, _sm) = open(dir);
        assert!(all_entries(&mut store).await.is_empty());
        assert_eq!(store.get_log_state().await.unwrap(), LogState::default());
    });
}

/// A purge inside the log is logical: Raft stops reading the entries, which stay as records
/// (a snapshot's data is those entries), and after a reopen Raft sees them again, which
/// openraft allows. A purge past the last entry is the engine's, and survives a reopen.
#[test]
fn a_purge_inside_the_log_is_logical_and_one_past_the_last_entry_survives_reopen() {
    run(async |dir| {
        let (mut store, _sm) = open(dir);
        store.blocking_append(entries(1, 0..10)).await.unwrap();
        store.purge(log_id(1, 4)).await.unwrap();
        assert_eq!(all_entries(&mut store).await, entries(1, 5..10));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(
            state,
            LogState { last_purged_log_id: Some(log_id(1, 4)), last_log_id: Some(log_id(1, 9)) }
        );
        assert_eq!((store.log().first_index(), store.log().next_index()), (0, 10), "the records stay");
        close(store);

        let (mut store, _sm) = open(dir);
        assert_eq!(all_entries(&mut store).await, entries(1, 0..10));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state, LogState { last_purged_log_id: None, last_log_id: Some(log_id(1, 9)) });

        // A follower that installed a snapshot past its log purges everything, then appends
        // right after the snapshot.
        store.purge(log_id(3, 20)).await.unwrap();
        close(store);
        let (mut store, _sm) = open(dir);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(
            state,
            LogState { last_purged_log_id: Some(log_id(3, 20)), last_log_id: Some(log_id(3, 20)) }
        );
        store.blocking_append(entries(3, 21..23)).await.unwrap();
        close(store);
        let (mut store, _sm) = open(dir);
        assert_eq!(all_entries(&mut store).await, entries(3, 21..23));
    });
}

#[test]
fn a_reader_taken_before_a_truncation_does_not_see_the_removed_tail() {
    run(async |dir| {
        let (mut store, _sm) = open(dir);
        store.blocking_append(entries(1, 0..10)).await.unwrap();
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.try_get_log_entries(0..).await.unwrap().len(), 10);
        store.truncate_after(Some(log_id(1, 3))).await.unwrap();
        assert_eq!(reader.try_get_log_entries(0..).await.unwrap(), entries(1, 0..4));
        store.blocking_append(entries(2, 4..6)).await.unwrap();
        assert_eq!(reader.try_get_log_entries(4..).await.unwrap(), entries(2, 4..6));
    });
}

#[test]
fn limited_reads_return_a_prefix_and_never_nothing() {
    run(async |dir| {
        let (mut store, _sm) = open(dir);
        let big = |i: u64| Record { timestamp_ms: i, value: Bytes::from(vec![i as u8; 700 * 1024]) };
        let written: Vec<Entry> = (0..4).map(|i| Entry::new_normal(log_id(1, i), big(i).into())).collect();
        store.blocking_append(written.clone()).await.unwrap();
        let mut reader = store.get_log_reader().await;
        let mut start = 0;
        while start < 4 {
            let got = reader.limited_get_log_entries(start, 4).await.unwrap();
            assert!(!got.is_empty());
            assert_eq!(got[..], written[start as usize..start as usize + got.len()]);
            start += got.len() as u64;
        }
        assert_eq!(reader.try_get_log_entries(0..4).await.unwrap(), written);
    });
}

#[test]
fn a_restarted_node_is_back_at_its_committed_mark_with_records_numbered_alike() {
    run(async |dir| {
        let (mut store, mut sm) = open(dir);
        let written = entries(1, 0..12);
        store.blocking_append(written.clone()).await.unwrap();
        store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        let apply =
            |entries: Vec<Entry>| futures_util::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
        // Applied up to 6 and snapshotted there; applied on to 9 and committed; then killed.
        sm.apply(apply(written[..7].to_vec())).await.unwrap();
        let snapshot = sm.try_create_snapshot_builder(true).await.unwrap().build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 6)));
        sm.apply(apply(written[7..10].to_vec())).await.unwrap();
        store.save_committed(Some(log_id(1, 9))).await.unwrap();
        assert_eq!(sm.records(), 8);
        close(store);
        drop(sm);

        let (mut store, mut sm) = open(dir);
        assert_eq!(sm.applied(), Some(log_id(1, 6)), "a fresh state machine starts at its snapshot");
        assert_eq!(sm.records(), 5);
        StorageHelper::new(&mut store, &mut sm).with_id(1).get_initial_state().await.unwrap();
        assert_eq!(sm.applied(), Some(log_id(1, 9)));
        assert_eq!(sm.records(), 8, "re-applying the log recounts the records");
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
        let (_, membership) = sm.applied_state().await.unwrap();
        assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
    });
}
