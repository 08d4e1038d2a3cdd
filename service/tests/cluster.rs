//! Failure tests of a three-node cluster of real `ringlog serve` processes on loopback, under
//! continuous produce load with unique values (see `cluster_harness`): SIGKILL of the leader,
//! of a follower, of all three. After each, every node is read whole and checked against
//! what the producers were told: every acknowledged offset holds its value on every node,
//! offsets are contiguous from 0, no offset ever held two values, and each value appears
//! once per acknowledgement (more only where a producer retried after an unknown outcome).
//! A producer that gets any failure code but UNAVAILABLE from a live node fails the test.
//!
//! Load is counted in acknowledgements, never in time: each phase waits for [`LOAD`] more
//! (several hundred records per test, a few seconds). Every wait is bounded, and so is each
//! test as a whole.
//!
//! `RINGLOG_CLUSTER_SOAK=<cycles>` runs that many leader kill/restart cycles in
//! `leader_sigkill_under_load_loses_no_acknowledged_record`, and as many partition/heal cycles
//! in `a_partitioned_leader_acknowledges_nothing_and_follows_after_healing` (default 1), each
//! checked as above; for example `RINGLOG_CLUSTER_SOAK=50 cargo test -p ringlog-service --test cluster
//! leader_sigkill -- --nocapture`.

mod cluster_harness;
mod process;

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use cluster_harness::{Cluster, follow, history::History, load::Load};
use tokio::sync::watch;

/// Acknowledgements to wait for in each phase of load.
const LOAD: u64 = 100;

fn soak_cycles() -> u64 {
    match std::env::var("RINGLOG_CLUSTER_SOAK") {
        Ok(cycles) => cycles.parse().expect("RINGLOG_CLUSTER_SOAK is a number of cycles"),
        Err(_) => 1,
    }
}

/// Runs `test`, failing if it has not finished within `limit` (a hang, not a slow run: the
/// limit is far above what the test needs).
async fn bounded<F: Future>(limit: Duration, test: F) -> F::Output {
    tokio::time::timeout(limit, test)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"))
}

fn new_history() -> Arc<Mutex<History>> {
    Arc::new(Mutex::new(History::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_under_load_loses_no_acknowledged_record() {
    let cycles = soak_cycles();
    bounded(Duration::from_secs(120 + 120 * cycles), async {
        let mut cluster = Cluster::start(3).await;
        let history = new_history();
        for cycle in 0..cycles {
            let load = Load::start(cycle, cluster.addrs(), cluster.liveness(), history.clone());
            load.wait_acked(LOAD, &format!("cycle {cycle}, before the kill")).await;
            let old = cluster.leader().await;
            cluster.kill(old);
            let new = cluster.leader().await;
            assert_ne!(new, old, "a killed node is not the leader");
            load.wait_acked(LOAD, &format!("cycle {cycle}, after killing leader {old}")).await;
            cluster.restart(old).await;
            load.wait_acked(LOAD / 2, &format!("cycle {cycle}, after restarting node {old}")).await;
            let summary = load.stop().await;
            assert!(summary.unexpected.is_empty(), "cycle {cycle}: unexpected failures: {:#?}", summary.unexpected);
            let read = cluster.check(&history, &format!("cycle {cycle}")).await;
            eprintln!(
                "cycle {cycle}: killed leader {old}, new leader {new}; {} acknowledged so far, {} retries, \
                 {} answer timeouts; records per node {read:?} ({} written twice by retries), all checked",
                summary.acked_total,
                summary.retries_total,
                summary.timeouts,
                history.lock().unwrap().extra_copies()
            );
        }
        let history = history.lock().unwrap();
        eprintln!(
            "leader SIGKILL: {cycles} cycles, {} acknowledged records checked on every node, {} observations, lost 0",
            history.acked_count(),
            history.observations()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_under_load_catches_up_after_restart() {
    bounded(Duration::from_secs(240), async {
        let mut cluster = Cluster::start(3).await;
        let history = new_history();
        let load = Load::start(0, cluster.addrs(), cluster.liveness(), history.clone());
        load.wait_acked(LOAD, "before the kill").await;
        let leader = cluster.leader().await;
        let follower = (leader + 1) % cluster.len();
        cluster.kill(follower);
        load.wait_acked(LOAD, &format!("with follower {follower} down")).await;
        let missed = history.lock().unwrap().last_acked().unwrap();
        cluster.restart(follower).await;
        // A book client follows the restarted follower with ConsumeStream from 0 while it
        // catches up and producers go on: the stream waits for the follower's committed
        // records and must deliver every one, in order.
        let (read_through, through) = watch::channel(None);
        let reader = tokio::spawn(follow(cluster.client(follower).await, follower, through));
        load.wait_acked(LOAD / 2, &format!("after restarting follower {follower}")).await;
        let summary = load.stop().await;
        assert!(summary.unexpected.is_empty(), "unexpected failures: {:#?}", summary.unexpected);

        // The follower gets everything, including what was acknowledged while it was down.
        let last = history.lock().unwrap().last_acked().unwrap();
        assert!(last >= missed);
        read_through.send_replace(Some(last));
        let streamed = reader.await.expect("the ConsumeStream reader");
        cluster.record(&history, follower, &streamed, "the restarted follower through ConsumeStream");
        let read = cluster.check(&history, "after the follower's restart").await;
        eprintln!(
            "follower {follower} killed (leader {leader}): {} acknowledged ({} while it was down or before), \
             {} retries; records per node {read:?}, all checked",
            summary.acked_total,
            missed + 1,
            summary.retries_total
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_all_three_loses_nothing_acknowledged_and_the_cluster_serves_again() {
    bounded(Duration::from_secs(240), async {
        let mut cluster = Cluster::start(3).await;
        let history = new_history();
        let load = Load::start(0, cluster.addrs(), cluster.liveness(), history.clone());
        load.wait_acked(LOAD, "before the kills").await;
        // Leader first, so that the followers die with the latest entries in flight.
        let leader = cluster.leader().await;
        cluster.kill(leader);
        for i in 0..cluster.len() {
            if cluster.is_live(i) {
                cluster.kill(i);
            }
        }
        let before = history.lock().unwrap().acked_count();
        // The producers keep trying while every node is down, and go on after the restart.
        cluster.restart_all().await;
        let new = cluster.leader().await;
        load.wait_acked(LOAD, "after restarting all three").await;
        let summary = load.stop().await;
        assert!(summary.unexpected.is_empty(), "unexpected failures: {:#?}", summary.unexpected);
        let read = cluster.check(&history, "after restarting all three").await;
        eprintln!(
            "all three killed (leader {leader}, then {new}): {before} acknowledged before, {} in all, {} retries; \
             records per node {read:?}, all checked",
            summary.acked_total, summary.retries_total
        );
    })
    .await;
}

/// Runs `ringlog <args>` (a client command); returns its exit status, stdout and stderr.
fn ringlog(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(process::RINGLOG)
        .args(args)
        .env_remove("RINGLOG_ADDR")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ringlog");
    let input = stdin.unwrap_or("").to_owned();
    let mut pipe = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The `ringlog` CLI routes as the book's resolver and picker do: given the nodes (one of
/// them dead), it produces through the leader and consumes from a follower; it follows a
/// leader change; and `ringlog cluster status` shows one line per node with the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_the_leader_and_the_cluster_commands_show_it() {
    bounded(Duration::from_secs(180), async {
        let mut cluster = Cluster::start(3).await;
        let leader = cluster.leader().await;
        let addrs: Vec<String> = cluster.addrs().iter().map(|a| a.to_string()).collect();
        let all = addrs.join(",");

        let (ok, out, err) = tokio::task::spawn_blocking({
            let all = all.clone();
            move || ringlog(&["produce", "--addr", &all, "one", "two"], None)
        })
        .await
        .unwrap();
        assert!(ok, "{err}");
        assert_eq!(out, "0\n1\n");

        // The leader dies: the CLI, given every node (the dead one first), finds the new one.
        cluster.kill(leader);
        let dead_first = std::iter::once(addrs[leader].clone())
            .chain(addrs.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, a)| a.clone()))
            .collect::<Vec<_>>()
            .join(",");
        let (ok, out, err) = tokio::task::spawn_blocking({
            let dead_first = dead_first.clone();
            move || ringlog(&["produce", "--addr", &dead_first], Some("three\nfour\n"))
        })
        .await
        .unwrap();
        assert!(ok, "{err}");
        assert_eq!(out, "2\n3\n");
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            ringlog(&["consume", "--addr", &dead_first, "--from", "0"], None)
        })
        .await
        .unwrap();
        assert!(ok, "{err}");
        assert_eq!(out, "0\tone\n1\ttwo\n2\tthree\n3\tfour\n");

        let new_leader = cluster.leader().await;
        let (ok, out, err) =
            tokio::task::spawn_blocking(move || ringlog(&["cluster", "status", "--addr", &all], None))
                .await
                .unwrap();
        assert!(ok, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "a header and one line per node:\n{out}");
        let leader_line = lines.iter().find(|l| l.starts_with(&format!("{} ", new_leader + 1))).unwrap();
        assert!(leader_line.contains(" leader "), "{out}");
        let dead_line = lines.iter().find(|l| l.starts_with(&format!("{} ", leader + 1))).unwrap();
        assert!(dead_line.contains("unreachable"), "{out}");
        assert_eq!(lines.iter().filter(|l| l.contains(" follower ")).count(), 1, "{out}");
    })
    .await;
}

/// A client of node `addr` over mutual TLS, with the certificate `name` (`name.pem`) of the
/// CA in `certs`.
async fn tls_channel(
    certs: &std::path::Path,
    name: &str,
    addr: std::net::SocketAddr,
) -> tonic::transport::Channel {
    let tls = ringlog_service::tls::client_config(
        &certs.join("ca.pem"),
        Some((&certs.join(format!("{name}.pem")), &certs.join(format!("{name}-key.pem")))),
    )
    .unwrap();
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy()
}

/// With mutual TLS on, the nodes replicate over TLS with their own certificates (subject
/// `localhost` from `ringlog certs`, allowed to `replicate` by the ACL), and a follower
/// forwards a produce to the leader over TLS. A client certificate may do what the ACL lets
/// it, and nothing of a node's: the Raft service and a produce that claims to be forwarded
/// answer PERMISSION_DENIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_covers_replication_and_only_nodes_replicate() {
    use ringlog_cluster::proto::{StatusRequest, raft_client::RaftClient};
    use ringlog_service::proto::{ConsumeRequest, ProduceRequest, Record, log_client::LogClient};

    bounded(Duration::from_secs(180), async {
        let certs = tempfile::tempdir().unwrap();
        let dir = certs.path().to_str().unwrap().to_owned();
        let (ok, _, err) = tokio::task::spawn_blocking(move || {
            ringlog(&["certs", "--out", &dir, "--client", "writer", "--client", "intruder"], None)
        })
        .await
        .unwrap();
        assert!(ok, "{err}");
        let acl = certs.path().join("acl");
        std::fs::write(&acl, "localhost, replicate\nwriter, produce\n*, consume\n").unwrap();
        let path = |name: &str| certs.path().join(name).to_str().unwrap().to_owned();
        let (cert, key, ca, acl) = (path("server.pem"), path("server-key.pem"), path("ca.pem"), path("acl"));
        let args = [
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-client-ca-file",
            &ca,
            "--acl-file",
            &acl,
        ];
        let cluster = Cluster::start_with(3, &args).await;
        let addrs = cluster.addrs();

        // One record through each node: two of them are forwarded to the leader, over TLS.
        let mut offsets = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let mut writer = LogClient::new(tls_channel(certs.path(), "writer", *addr).await);
            let deadline = tokio::time::Instant::now() + cluster_harness::WAIT;
            let request = || ProduceRequest {
                record: Some(Record { value: format!("via node {i}").into(), ..Record::default() }),
                records: Vec::new(),
            };
            let offset = loop {
                match writer.produce(request()).await {
                    Ok(answer) => break answer.into_inner().offset,
                    // No leader yet: retry, bounded.
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        assert!(tokio::time::Instant::now() < deadline, "{status}\n{}", cluster.logs());
                        tokio::time::sleep(cluster_harness::POLL).await;
                    }
                    Err(status) => panic!("produce through node {i}: {status}\n{}", cluster.logs()),
                }
            };
            offsets.push(offset);
        }
        assert_eq!(offsets, [0, 1, 2]);
        // Every node holds all three, replicated over TLS.
        for addr in &addrs {
            let mut reader = LogClient::new(tls_channel(certs.path(), "intruder", *addr).await);
            for (offset, i) in (0..3).zip(0..) {
                let deadline = tokio::time::Instant::now() + cluster_harness::WAIT;
                let record = loop {
                    match reader.consume(ConsumeRequest { offset, ..ConsumeRequest::default() }).await {
                        Ok(answer) => break answer.into_inner().record.unwrap(),
                        Err(status) => {
                            assert!(tokio::time::Instant::now() < deadline, "{status}\n{}", cluster.logs());
                            tokio::time::sleep(cluster_harness::POLL).await;
                        }
                    }
                };
                assert_eq!(record.value, format!("via node {i}").as_bytes());
            }
        }

        // A client certificate is not a node's.
        let mut raft = RaftClient::new(tls_channel(certs.path(), "writer", addrs[0]).await);
        let refused = raft.status(StatusRequest { header: None }).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
        assert_eq!(refused.message(), "writer not permitted to replicate");
        let mut writer = LogClient::new(tls_channel(certs.path(), "writer", addrs[0]).await);
        let mut forged = tonic::Request::new(ProduceRequest {
            record: Some(Record { value: "forged".into(), ..Record::default() }),
            records: Vec::new(),
        });
        forged.metadata_mut().insert("ringlog-forwarded", "1".parse().unwrap());
        let refused = writer.produce(forged).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
        assert_eq!(refused.message(), "writer not permitted to replicate");
        let mut intruder = LogClient::new(tls_channel(certs.path(), "intruder", addrs[0]).await);
        let refused = intruder.produce(ProduceRequest::default()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    })
    .await;
}

/// A leader cut off from both followers (the proxies between the processes blackhole their
/// connections) acknowledges nothing: writes sent straight to it are appended as an
/// uncommitted tail while its commit index stands still, and never succeed. The other two
/// elect a leader and take the producers' writes. After healing, the old leader follows the
/// new one, its writes fail (none is acknowledged, ever), its tail is gone from every log, and
/// every node checks against the history. `RINGLOG_CLUSTER_SOAK=<cycles>` repeats it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_acknowledges_nothing_and_follows_after_healing() {
    use ringlog_service::proto::{ProduceRequest, Record};

    let cycles = soak_cycles();
    bounded(Duration::from_secs(120 + 120 * cycles), async {
        let mut cluster = Cluster::start_partitionable(3).await;
        let history = new_history();
        for cycle in 0..cycles {
            let load = Load::start(cycle, cluster.addrs(), cluster.liveness(), history.clone());
            load.wait_acked(LOAD, &format!("cycle {cycle}, before the partition")).await;
            let old = cluster.leader().await;
            let majority: Vec<usize> = (0..cluster.len()).filter(|&i| i != old).collect();
            cluster.isolate(old);
            let new = cluster.leader_among(&majority).await;
            let cut_off = cluster.status(old).await;

            // Writes straight to the old leader, which still thinks it leads: whether it
            // refuses them (once its leader lease has run out) or appends them as an
            // uncommitted tail, none may ever be acknowledged.
            let mut minority = Vec::new();
            for k in 0..3 {
                let mut client = cluster.client(old).await;
                let value = format!("c{cycle}-minority-{k}");
                let request = ProduceRequest {
                    record: Some(Record { value: value.clone().into(), ..Record::default() }),
                    records: Vec::new(),
                };
                minority.push((value, tokio::spawn(async move { client.produce(request).await })));
            }
            load.wait_acked(LOAD, &format!("cycle {cycle}, with the old leader {old} cut off")).await;
            let during = cluster.status(old).await;
            assert_eq!(
                during.committed_index, cut_off.committed_index,
                "the cut-off leader committed nothing"
            );
            assert_eq!(during.role, "leader", "the cut-off node hears of no newer term: {during:?}");

            cluster.heal();
            for (value, call) in minority {
                let answer = tokio::time::timeout(cluster_harness::WAIT, call)
                    .await
                    .unwrap_or_else(|_| panic!("the write of {value} still pending after healing"))
                    .unwrap();
                let status = answer.expect_err("a write to the cut-off leader must not be acknowledged");
                assert_eq!(status.code(), tonic::Code::Unavailable, "{value}: {status}");
            }
            let deadline = tokio::time::Instant::now() + cluster_harness::WAIT;
            loop {
                let status = cluster.status(old).await;
                if status.role == "follower" && status.leader_id == (new + 1).to_string() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {old} does not follow {new}: {status:?}"
                );
                tokio::time::sleep(cluster_harness::POLL).await;
            }
            load.wait_acked(LOAD / 2, &format!("cycle {cycle}, after healing")).await;
            let summary = load.stop().await;
            assert!(summary.unexpected.is_empty(), "unexpected failures: {:#?}", summary.unexpected);
            let read = cluster.check(&history, &format!("cycle {cycle}, after healing")).await;
            for i in 0..cluster.len() {
                let records = cluster.read_all(i).await;
                let kept: Vec<_> =
                    records.iter().filter(|(_, v)| v.windows(9).any(|w| w == b"-minority")).collect();
                assert!(
                    kept.is_empty(),
                    "node {i} holds writes the cut-off leader never committed: {kept:?}"
                );
            }
            eprintln!(
                "cycle {cycle}: old leader {old} cut off, new leader {new}; the old leader's uncommitted \
                 tail ({} entries past its commit index {}) is gone; {} acknowledged so far, records per \
                 node {read:?}, all checked",
                during.last_index - during.committed_index,
                during.committed_index,
                summary.acked_total
            );
        }
        let history = history.lock().unwrap();
        eprintln!(
            "partition: {cycles} cycles, {} acknowledged records checked on every node, lost 0",
            history.acked_count()
        );
    })
    .await;
}

/// The lowest offset node `i` serves (from the OUT_OF_RANGE details of a read at 0).
async fn lowest_served(cluster: &Cluster, i: usize) -> u64 {
    use ringlog_service::proto::ConsumeRequest;
    use tonic_types::StatusExt;
    let mut client = cluster.client(i).await;
    match client.consume(ConsumeRequest { offset: 0, max_records: 0 }).await {
        Ok(_) => 0,
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::OutOfRange, "node {i}: {status}");
            let info = status.get_details_error_info().expect("error info");
            info.metadata["lowest"].parse().expect("a number")
        }
    }
}

/// Waits until nodes `0..nodes` serve from one lowest offset, at least `at_least`; returns it.
async fn same_lowest(cluster: &Cluster, nodes: usize, at_least: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + cluster_harness::WAIT;
    loop {
        let mut seen = Vec::new();
        for i in 0..nodes {
            seen.push(lowest_served(cluster, i).await);
        }
        if seen[0] >= at_least && seen.iter().all(|&l| l == seen[0]) {
            return seen[0];
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lowest offsets per node {seen:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(cluster_harness::POLL).await;
    }
}

/// Retention in a cluster of real processes: with `--retention-bytes`, the leader decides
/// and every node deletes the same prefix; a fourth node added afterwards with `ringlog
/// cluster add` receives the leader's segment files by snapshot and serves the same records
/// at the same offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_the_same_prefix_everywhere_and_a_new_node_joins_by_snapshot() {
    use ringlog_service::proto::{ConsumeRequest, ProduceRequest, Record};

    bounded(Duration::from_secs(240), async {
        let limits = ["--max-record-bytes", "1024", "--segment-bytes", "16384"];
        let retention = ["--retention-bytes", "65536", "--retention-check-interval", "100ms"];
        let args: Vec<&str> = limits.iter().chain(&retention).copied().collect();
        let mut cluster = Cluster::start_with(3, &args).await;
        let leader = cluster.leader().await;
        let mut client = cluster.client(leader).await;
        let value = |i: u64| bytes::Bytes::from(format!("{i:0100}"));
        let next = 3000;
        for first in (0..next).step_by(50) {
            let records =
                (first..first + 50).map(|i| Record { value: value(i), ..Record::default() }).collect();
            let answer = client.produce(ProduceRequest { record: None, records }).await.unwrap();
            assert_eq!(answer.into_inner().offset, first);
        }

        // Every node deletes below the same decided index (about 400 KB written, 64 KiB kept).
        let lowest = same_lowest(&cluster, 3, 1).await;
        assert!(lowest > next / 2, "most of the log was deleted: lowest {lowest}");

        // A new node joins behind the deleted prefix.
        let new = cluster.start_new_node().await;
        let all = cluster.addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
        let node_addr = cluster.addrs()[new].to_string();
        let (ok, _, err) = tokio::task::spawn_blocking(move || {
            ringlog(&["cluster", "add", "--addr", &all, "--node-id", "4", "--node-addr", &node_addr], None)
        })
        .await
        .unwrap();
        assert!(ok, "{err}\n{}", cluster.logs());
        cluster.wait_committed(new, next - 1).await;
        // Retention may still be finishing (each check decides on the leader's log as it is):
        // the four nodes converge on one lowest offset and serve the same records above it.
        let settled = same_lowest(&cluster, 4, 0).await;
        assert!(settled >= lowest);
        for i in 0..4 {
            let mut client = cluster.client(i).await;
            for offset in [next - 1, (settled + next) / 2] {
                let answer = client.consume(ConsumeRequest { offset, max_records: 0 }).await.unwrap();
                assert_eq!(
                    answer.into_inner().record.unwrap().value,
                    value(offset),
                    "node {i}, offset {offset}"
                );
            }
        }
        eprintln!("retention: {next} records of 100 B, lowest offset {settled} on all four nodes");
    })
    .await;
}
