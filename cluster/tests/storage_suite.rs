//! openraft's own storage suite against the real engine on disk.
//!
//! Every case gets a fresh node directory (a new engine log with `Durability::Always` and an
//! empty state machine), removed when the case ends. The suite runs twice: with the engine's
//! default segments, and with segments of three entries, so that its reads, truncations and
//! purges cross segment boundaries and delete whole segments.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use ringlog_cluster::{LogStore, StateMachine, TypeConfig};
use ringlog_engine::{Config, Durability};
use tempfile::TempDir;

struct FreshNode {
    config: Config,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for FreshNode {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let err = |e: std::io::Error| StorageError::read(TypeConfig::err_from_error(&e));
        let dir = TempDir::new().map_err(err)?;
        let (store, sm) = ringlog_cluster::open(dir.path(), self.config.clone()).map_err(err)?;
        Ok((dir, store, sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_the_engine() {
    let config = Config { durability: Durability::Always, ..Config::default() };
    TypeConfig::run(Suite::test_all(FreshNode { config })).unwrap();
}

fn three_entries_per_segment() -> Config {
    Config {
        durability: Durability::Always,
        index_bytes_max: 32 + 3 * 8, // the index header and three 8-byte entries
        store_bytes_max: 4096,
        record_bytes_max: 1024,
        ..Config::default()
    }
}

#[test]
fn openraft_storage_suite_passes_with_three_entries_per_segment() {
    TypeConfig::run(Suite::test_all(FreshNode { config: three_entries_per_segment() })).unwrap();
}

#[test]
fn three_entries_per_segment_really_rolls_every_three_entries() {
    use openraft::entry::RaftEntry;
    use openraft::storage::RaftLogStorageExt;

    let dir = TempDir::new().unwrap();
    TypeConfig::run(async {
        let (mut store, _sm) = ringlog_cluster::open(dir.path(), three_entries_per_segment()).unwrap();
        let blanks = (0..10).map(|i| ringlog_cluster::Entry::new_blank(ringlog_cluster::log_id(1, i)));
        store.blocking_append(blanks).await.unwrap();
        assert_eq!(store.log().segment_count(), 4);
    });
}
