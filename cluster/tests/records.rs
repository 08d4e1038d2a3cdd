//! Records through Raft: the offsets the state machine acknowledges are the offsets the engine
//! reads the records back at, with blank and membership entries in between taking none.

use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use ringlog_cluster::{Entry, Membership, Record, TypeConfig, log_id};
use ringlog_engine::{Config, Durability};

#[test]
fn acknowledged_offsets_are_where_the_engine_reads_the_records() {
    let dir = tempfile::tempdir().unwrap();
    TypeConfig::run(async {
        let config = Config { durability: Durability::Always, ..Config::default() };
        let (mut store, mut sm) = ringlog_cluster::open(dir.path(), config).unwrap();
        let membership = Membership::new_with_defaults(vec![[1, 2, 3].into()], []);
        let record = |i: u64| Record { timestamp_ms: 1_000 + i, value: Bytes::from(format!("record-{i}")) };
        // Terms change as leaders do: each new leader writes a blank entry first.
        let mut entries =
            vec![Entry::new_membership(log_id(0, 0), membership.clone()), Entry::new_blank(log_id(1, 1))];
        entries.extend((2..5).map(|i| Entry::new_normal(log_id(1, i), record(i).into())));
        entries.push(Entry::new_blank(log_id(2, 5)));
        entries.push(Entry::new_membership(log_id(2, 6), membership));
        entries.extend((7..10).map(|i| Entry::new_normal(log_id(2, i), record(i).into())));
        store.blocking_append(entries.clone()).await.unwrap();

        let mut expected = Vec::new();
        for entry in &entries {
            let before = sm.records();
            let item = Ok((entry.clone(), None));
            sm.apply(futures_util::stream::iter([item])).await.unwrap();
            if let openraft::EntryPayload::Normal(ringlog_cluster::Command::Record(r)) = &entry.payload {
                assert_eq!(sm.records(), before + 1);
                expected.push((before, r.clone()));
            } else {
                assert_eq!(sm.records(), before, "{entry} took an offset");
            }
        }
        let log = store.log();
        assert_eq!(sm.records(), log.next_offset());
        for (offset, record) in expected {
            let read = log.read(offset).unwrap();
            assert_eq!(
                (read.value, read.timestamp_ms),
                (record.value, record.timestamp_ms),
                "offset {offset}"
            );
        }
    });
}

/// A replica serves committed records only: entries appended to its log but not yet applied
/// are invisible to record readers; each apply makes its records readable, and a reopened
/// node starts from its snapshot's applied mark, not from everything its log holds.
#[test]
fn records_become_readable_when_applied_not_when_appended() {
    let dir = tempfile::tempdir().unwrap();
    TypeConfig::run(async {
        let config = Config { durability: Durability::Always, ..Config::default() };
        let (mut store, mut sm) = ringlog_cluster::open(dir.path(), config.clone()).unwrap();
        let record = |i: u64| Record { timestamp_ms: i, value: Bytes::from(format!("record-{i}")) };
        let entries: Vec<Entry> = (0..4).map(|i| Entry::new_normal(log_id(1, i), record(i).into())).collect();
        store.blocking_append(entries.clone()).await.unwrap();
        let log = store.log().clone();
        assert_eq!(log.next_offset(), 4, "appended");
        assert_eq!(log.readable_offset(), 0, "nothing applied: nothing readable");
        assert!(matches!(log.read(0), Err(ringlog_engine::Error::OffsetNotWritten { offset: 0, next: 0 })));
        for (i, entry) in entries.iter().take(2).enumerate() {
            sm.apply(futures_util::stream::iter([Ok((entry.clone(), None))])).await.unwrap();
            assert_eq!(log.readable_offset(), i as u64 + 1);
        }
        assert_eq!(log.read(1).unwrap().value, record(1).value);
        assert!(log.read(2).is_err(), "appended, not applied");
        drop((store, sm));
        log.close().unwrap();
        // Nothing was snapshotted: after a restart nothing is readable until openraft
        // re-applies the committed entries.
        let (store, _sm) = ringlog_cluster::open(dir.path(), config).unwrap();
        assert_eq!(store.log().next_offset(), 4);
        assert_eq!(store.log().readable_offset(), 0);
    });
}
