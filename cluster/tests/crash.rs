//! Power loss under the log store, on the engine's simulated disk: what openraft was told is
//! durable (through `IOFlushed`, or by `save_vote` returning) is there after the crash, and a
//! failed sync reaches openraft as an error.

use std::path::Path;

use bytes::Bytes;
use openraft::RaftLogReader;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use ringlog_cluster::{Entry, LogStore, Record, TypeConfig, Vote, log_id};
use ringlog_engine::{Backend, Config, Durability, SimDisk, SimFault};

fn open(dir: &Path, disk: &SimDisk) -> LogStore {
    let config = Config {
        durability: Durability::Always,
        backend: Backend::Simulated(disk.clone()),
        index_bytes_max: 32 + 4 * 8,
        ..Config::default()
    };
    ringlog_cluster::open(dir, config).unwrap().0
}

fn entries(term: u64, indexes: std::ops::Range<u64>) -> Vec<Entry> {
    let record = |i: u64| Record { timestamp_ms: i, value: Bytes::from(format!("record-{i}")) };
    indexes.map(|i| Entry::new_normal(log_id(term, i), record(i).into())).collect()
}

#[test]
fn entries_acknowledged_durable_and_the_vote_survive_power_loss() {
    for seed in 0..16 {
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::new();
        disk.defer_writes(seed % 2 == 1); // every other run through the pipelined write path
        TypeConfig::run(async {
            let mut store = open(dir.path(), &disk);
            let mut appended = Vec::new();
            let mut acked = 0; // entries below this index were reported durable
            let mut pending = Vec::new();
            for round in 0..8u64 {
                let batch = entries(1, round * 3..round * 3 + 3);
                let (tx, rx) = TypeConfig::oneshot();
                store.append(batch.clone(), IOFlushed::signal(tx)).await.unwrap();
                appended.extend(batch);
                pending.push((appended.len() as u64, rx));
                if round % 3 == 2 {
                    for (upto, rx) in pending.drain(..) {
                        rx.await.unwrap().unwrap();
                        acked = upto;
                    }
                }
            }
            // The vote is written only once every earlier append is durable.
            let before_vote = appended.len() as u64;
            store.save_vote(&Vote::new(2, 1)).await.unwrap();
            for start in (before_vote..before_vote + 12).step_by(3) {
                let batch = entries(2, start..start + 3);
                store.append(batch.clone(), IOFlushed::noop()).await.unwrap();
                appended.extend(batch);
            }

            let crashed = disk.crash_torn(seed);
            let mut store = open(dir.path(), &crashed);
            let mut reader = store.get_log_reader().await;
            assert_eq!(reader.read_vote().await.unwrap(), Some(Vote::new(2, 1)), "seed {seed}");
            let survived = reader.try_get_log_entries(..).await.unwrap();
            assert_eq!(
                survived[..],
                appended[..survived.len()],
                "seed {seed}: not a prefix of what was appended"
            );
            let survived = survived.len() as u64;
            assert!(survived >= acked.max(before_vote), "seed {seed}: {survived} entries survived");
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id.map(|id| id.index + 1), Some(survived), "seed {seed}");
        });
    }
}

#[test]
fn a_failed_sync_reaches_openraft_through_the_callback_and_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    TypeConfig::run(async {
        let mut store = open(dir.path(), &disk);
        let (tx, rx) = TypeConfig::oneshot();
        store.append(entries(1, 0..2), IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();

        disk.inject(SimFault::Sync { after: 0, errno: 5 }); // EIO
        let (tx, rx) = TypeConfig::oneshot();
        // `append` may succeed (the entries are published before the sync) or fail (the log
        // may be poisoned already); the callback must carry the error either way.
        let appended = store.append(entries(1, 2..4), IOFlushed::signal(tx)).await;
        if appended.is_ok() {
            assert!(rx.await.unwrap().is_err(), "a failed sync was reported durable");
        }
        assert!(store.save_vote(&Vote::new(1, 1)).await.is_err(), "a poisoned store took a vote");
        let (tx, _rx) = TypeConfig::oneshot();
        assert!(store.append(entries(1, 4..5), IOFlushed::signal(tx)).await.is_err());
    });
}
