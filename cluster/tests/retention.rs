//! Retention in a cluster: the leader decides, every node deletes the same prefix, a dead
//! follower does not hold it up, and a node that lags behind it (restarted, or new) catches up
//! by a snapshot of segment files, then follows.

mod common;

use std::collections::BTreeSet;

use common::{Cluster, WAIT, config};
use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use ringlog_cluster::{ClusterConfig, NodeId};
use ringlog_engine::Retention;

/// Small segments, so that a few hundred records make many.
fn small_segments() -> ClusterConfig {
    let engine =
        ringlog_engine::Config { store_bytes_max: 4 << 10, record_bytes_max: 512, ..config().engine };
    ClusterConfig { engine, ..config() }
}

fn value(i: u64) -> bytes::Bytes {
    bytes::Bytes::from(format!("{i:0100}"))
}

async fn write(cluster: &Cluster, leader: NodeId, values: std::ops::Range<u64>) {
    for i in values {
        let ack = cluster.node(leader).write(value(i)).await.unwrap();
        assert_eq!(ack.offset, i);
    }
}

/// Waits (bounded) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Node `id` serves exactly `lowest..next` with the values written, and nothing below. (A
/// node may apply a committed entry before its own fsync of it ends; under `Always` its
/// readers wait for that fsync, so this waits until they may read through `next`.)
async fn assert_serves(cluster: &Cluster, id: NodeId, lowest: u64, next: u64) {
    let log = cluster.node(id).log();
    until(&format!("node {id} serves through {next}"), || log.readable_offset() >= next).await;
    assert_eq!((log.lowest_offset(), log.next_offset()), (lowest, next), "node {id}");
    for offset in lowest..next {
        assert_eq!(log.read(offset).unwrap().value, value(offset), "node {id}, offset {offset}");
    }
    assert!(log.read(lowest - 1).unwrap_err().is_out_of_range(), "node {id} below its lowest offset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_deletes_the_same_prefix_and_nodes_behind_it_catch_up_by_snapshot() {
    let mut cluster = Cluster::start_with(3, 1..=3, small_segments()).await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let (follower, dead) = {
        let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
        (others[0], others[1])
    };
    write(&cluster, leader, 0..150).await;
    // One follower dies: retention must not wait for it.
    cluster.stop(dead).await;
    write(&cluster, leader, 150..300).await;

    let retention = Retention { max_bytes: Some(8 << 10), max_age: None };
    let point = cluster.node(leader).retain(retention).await.unwrap().expect("the log is over the limit");
    assert_eq!(cluster.node(follower).retain(retention).await.unwrap(), None, "a follower decides nothing");
    until("the running nodes delete below the decided index", || {
        [leader, follower].iter().all(|&id| cluster.node(id).log().first_index() >= point)
    })
    .await;
    let lowest = cluster.node(leader).log().lowest_offset();
    assert!(lowest > 150, "records from before the dead node's last one are gone: lowest {lowest}");
    for id in [leader, follower] {
        assert_serves(&cluster, id, lowest, 300).await;
        assert!(
            cluster.node(id).log().size_bytes() <= (8 << 10) + (4 << 10),
            "node {id} holds about the limit"
        );
    }

    // The dead node comes back behind the purge: it gets the leader's segment files.
    cluster.restart(dead).await;
    let last = cluster.node(leader).raft().metrics().borrow_watched().last_log_index.unwrap();
    cluster.applied(dead, last).await;
    assert!(
        cluster.node(dead).raft().metrics().borrow_watched().snapshot.is_some(),
        "caught up by a snapshot"
    );
    assert_serves(&cluster, dead, lowest, 300).await;

    // A new node joins after retention removed the start of the log: a snapshot, then it follows.
    cluster.join(4).await;
    let raft = cluster.node(leader).raft().clone();
    raft.add_learner(4, cluster.peers[&4].clone(), true).await.unwrap();
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([4])), false).await.unwrap();
    write(&cluster, leader, 300..320).await;
    let last = raft.metrics().borrow_watched().last_log_index.unwrap();
    for id in [1, 2, 3, 4] {
        cluster.applied(id, last).await;
        assert_serves(&cluster, id, lowest, 320).await;
    }
    let counted = |id: NodeId| {
        let stats = cluster.node(id).snapshot_stats();
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        (load(&stats.sent), load(&stats.received), load(&stats.received_bytes))
    };
    let sent: u64 = [1, 2, 3, 4].into_iter().map(|id| counted(id).0).sum();
    assert!(sent >= 2, "the leader sent (at least) the two snapshots: {sent}");
    for id in [dead, 4] {
        let (_, received, bytes) = counted(id);
        assert!(received >= 1 && bytes > 4 << 10, "node {id} received segment files: {:?}", counted(id));
    }
}
