//! The log never holds a hole, whoever asks for one.

use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::type_config::TypeConfigExt;
use openraft::{LogState, RaftLogReader};
use ringlog_cluster::{Entry, TypeConfig, log_id};
use ringlog_engine::{Config, Durability};

fn blanks(term: u64, indexes: std::ops::Range<u64>) -> Vec<Entry> {
    indexes.map(|i| Entry::new_blank(log_id(term, i))).collect()
}

#[test]
fn appends_past_the_next_index_are_refused_once_the_log_has_a_start() {
    let dir = tempfile::tempdir().unwrap();
    TypeConfig::run(async {
        let config = Config { durability: Durability::Always, ..Config::default() };
        let (mut store, _sm) = ringlog_cluster::open(dir.path(), config).unwrap();
        store.blocking_append(blanks(1, 0..5)).await.unwrap();
        assert!(store.blocking_append(blanks(1, 6..7)).await.is_err(), "a gap after entries");

        store.purge(log_id(1, 9)).await.unwrap();
        assert!(store.blocking_append(blanks(1, 11..12)).await.is_err(), "a gap after a purge");
        store.blocking_append(blanks(2, 10..12)).await.unwrap();

        let entries = store.get_log_reader().await.try_get_log_entries(..).await.unwrap();
        assert_eq!(entries, blanks(2, 10..12));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(
            state,
            LogState { last_purged_log_id: Some(log_id(1, 9)), last_log_id: Some(log_id(2, 11)) }
        );
    });
}

#[test]
fn a_pristine_log_may_start_anywhere_and_reads_as_purged_below() {
    let dir = tempfile::tempdir().unwrap();
    TypeConfig::run(async {
        let config = Config { durability: Durability::Always, ..Config::default() };
        let (mut store, _sm) = ringlog_cluster::open(dir.path(), config).unwrap();
        store.blocking_append(blanks(3, 7..9)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(
            state,
            LogState { last_purged_log_id: Some(log_id(3, 6)), last_log_id: Some(log_id(3, 8)) }
        );
    });
}
