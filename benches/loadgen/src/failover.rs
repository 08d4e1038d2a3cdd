//! `ringlog-bench failover`: how long a 3-node cluster of `ringlog serve` processes makes
//! producers wait when its leader dies.
//!
//! One producer sends unary Produce calls, one at a time, to the node that `GetServers`
//! names leader (as the `ringlog` CLI routes). A failed call (the connection to a killed
//! node, `UNAVAILABLE` while there is no leader, a timeout) makes it ask the nodes for the
//! leader again, every [`RETRY`], and send there. Each cycle: wait until the producer is
//! acknowledged by the leader, note the time, SIGKILL the leader; the cycle's **failover
//! time** runs from the kill to the first acknowledgement by another node. Also noted: when
//! the producer first learned of a new leader. Then the killed node is restarted on its
//! directory, the bench waits until it has applied what the leader committed, lets the
//! cluster settle, and kills the next leader. Every wait is bounded, and the nodes are
//! killed at the end, whatever happened.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use ringlog_service::{
    config::DurabilityMode,
    proto::{GetServersRequest, ProduceRequest, Record, log_client::LogClient},
};
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::{
    cluster::{Cluster, ClusterSpec, PROBE_TIMEOUT, WAIT},
    load,
    report::Percentiles,
    schedule::now_ns,
};

/// The producer's pause between rounds of asking for the leader.
const RETRY: Duration = Duration::from_millis(5);

/// The longest one Produce may take before the producer gives up on it.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(1);

/// Arguments of `ringlog-bench failover`.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct FailoverArgs {
    /// Leader kills (cycles)
    #[arg(long, default_value_t = 20)]
    kills: u32,
    /// `ringlog serve --raft-heartbeat-ms`
    #[arg(long, default_value_t = 250)]
    raft_heartbeat_ms: u64,
    /// `ringlog serve --raft-election-timeout-ms`
    #[arg(long, default_value_t = 1000)]
    raft_election_timeout_ms: u64,
    /// The nodes' durability
    #[arg(long, value_enum, default_value_t = DurabilityMode::Interval)]
    #[serde(serialize_with = "crate::serialize_debug")]
    durability: DurabilityMode,
    /// Bytes per record value
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Pause between a restarted node catching up and the next kill
    #[arg(long, value_parser = crate::parse_duration, default_value = "1s", value_name = "TIME")]
    #[serde(serialize_with = "crate::serialize_duration")]
    settle: Duration,
    /// Where the nodes' temporary directory goes [default: the system's]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Write the settings and every cycle as JSON
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    json: Option<PathBuf>,
}

/// One kill.
#[derive(Clone, Debug, Serialize)]
pub struct Cycle {
    /// The killed leader's node id.
    pub killed: u64,
    /// The node id that acknowledged first afterwards.
    pub new_leader: u64,
    /// From the SIGKILL to the first acknowledged produce, in milliseconds.
    pub failover_ms: f64,
    /// From the SIGKILL to the first GetServers answer naming a live leader, in milliseconds.
    pub leader_known_ms: f64,
    /// Produce calls that failed in between.
    pub failed_calls: u64,
}

/// The whole of `--json FILE`.
#[derive(Debug, Serialize)]
struct FailoverReport {
    tool: String,
    settings: FailoverArgs,
    cpus: usize,
    cycles: Vec<Cycle>,
    /// Failover times (ms): min, p50, p90, max, ...
    failover_ms: Percentiles,
    /// Times until a new leader was known (ms).
    leader_known_ms: Percentiles,
    /// Records acknowledged over the whole run.
    acknowledged: u64,
}

/// What the producer reports after a kill.
#[derive(Debug)]
struct Recovered {
    node: usize,
    at: Instant,
    leader_known: Instant,
    failed_calls: u64,
}

/// The kill the producer is to time: when, and which node.
#[derive(Clone, Copy, Debug)]
struct Kill {
    at: Instant,
    node: usize,
}

/// State shared by the producer and the cycle loop.
#[derive(Default)]
struct Shared {
    /// The pending kill, until the producer reports recovery from it.
    kill: Option<Kill>,
    /// When a live leader was first named after the pending kill.
    leader_known: Option<Instant>,
    /// Failed calls since the pending kill.
    failed_calls: u64,
    /// Acknowledgements, by node index.
    acks: Vec<u64>,
}

/// Runs `ringlog-bench failover`.
pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.kills >= 1, "--kills must be at least 1");
    let mut flags = vec!["--durability".to_owned(), crate::value_name(&args.durability)];
    flags.extend(crate::raft_flags(args.raft_heartbeat_ms, args.raft_election_timeout_ms));
    let spec = ClusterSpec { nodes: 3, flags, parent_dir: args.data_dir.clone() };
    println!(
        "failover: 3 nodes, heartbeat {} ms, election timeout {} ms, durability {}, {} kills",
        args.raft_heartbeat_ms,
        args.raft_election_timeout_ms,
        crate::value_name(&args.durability),
        args.kills
    );
    let mut cluster = Cluster::start(spec).await?;
    let addrs: Vec<SocketAddr> = (0..cluster.len()).map(|i| cluster.addr(i)).collect();
    let shared = Arc::new(Mutex::new(Shared { acks: vec![0; addrs.len()], ..Shared::default() }));
    let (recovered_tx, mut recovered_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let producer = tokio::spawn(produce(addrs, args.record_bytes, shared.clone(), recovered_tx, stop_rx));

    let cycles = async {
        let mut cycles = Vec::new();
        for cycle in 0..args.kills {
            let leader = cluster.leader().await?;
            wait_for_acks(&shared, leader, 10).await.with_context(|| cluster.logs())?;
            shared.lock().expect("not poisoned").kill = Some(Kill { at: Instant::now(), node: leader });
            let killed_at = Instant::now();
            cluster.kill(leader);
            let recovered = tokio::time::timeout(WAIT, recovered_rx.recv())
                .await
                .with_context(|| format!("no produce was acknowledged within {WAIT:?} of the kill"))?
                .context("the producer stopped")?;
            let cycle_result = Cycle {
                killed: leader as u64 + 1,
                new_leader: recovered.node as u64 + 1,
                failover_ms: ms(recovered.at.saturating_duration_since(killed_at)),
                leader_known_ms: ms(recovered.leader_known.saturating_duration_since(killed_at)),
                failed_calls: recovered.failed_calls,
            };
            println!(
                "kill {:>2}: leader {} killed, node {} acknowledged after {:>7.1} ms (leader known after {:>7.1} ms, {} failed calls)",
                cycle + 1,
                cycle_result.killed,
                cycle_result.new_leader,
                cycle_result.failover_ms,
                cycle_result.leader_known_ms,
                cycle_result.failed_calls
            );
            cycles.push(cycle_result);
            cluster.restart(leader).await?;
            wait_caught_up(&cluster, leader).await?;
            tokio::time::sleep(args.settle).await;
        }
        anyhow::Ok(cycles)
    }
    .await;
    let _ = stop_tx.send(true);
    let produced = tokio::time::timeout(WAIT, producer).await;
    let cycles = cycles?;
    produced.context("the producer did not stop")?.context("the producer panicked")??;
    drop(cluster);

    let failover_ms = distribution(cycles.iter().map(|c| c.failover_ms));
    let leader_known_ms = distribution(cycles.iter().map(|c| c.leader_known_ms));
    let acknowledged = shared.lock().expect("not poisoned").acks.iter().sum();
    println!(
        "failover ms over {} kills: min {:.0} p50 {:.0} p90 {:.0} max {:.0} (leader known: min {:.0} p50 {:.0} p90 {:.0} max {:.0}); {acknowledged} records acknowledged",
        cycles.len(),
        failover_ms.min,
        failover_ms.p50,
        failover_ms.p90,
        failover_ms.max,
        leader_known_ms.min,
        leader_known_ms.p50,
        leader_known_ms.p90,
        leader_known_ms.max,
    );
    if let Some(path) = &args.json {
        let report = FailoverReport {
            tool: crate::report::tool(),
            settings: args.clone(),
            cpus: crate::report::cpus(),
            cycles,
            failover_ms,
            leader_known_ms,
            acknowledged,
        };
        crate::report::write_json(path, &report)?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Percentiles of millisecond values, through the same histogram as latencies (its
/// microseconds read as milliseconds here).
fn distribution(values: impl Iterator<Item = f64>) -> Percentiles {
    let mut histogram = crate::report::histogram();
    for value in values {
        crate::report::record(&mut histogram, (value * 1e6) as u64, 1);
    }
    let p = Percentiles::of(&histogram).expect("at least one kill");
    let to_ms = |us: f64| us / 1e3;
    Percentiles {
        count: p.count,
        mean: to_ms(p.mean),
        p50: to_ms(p.p50),
        p90: to_ms(p.p90),
        p99: to_ms(p.p99),
        p99_9: to_ms(p.p99_9),
        max: to_ms(p.max),
        min: to_ms(p.min),
    }
}

/// Waits until node `leader` has acknowledged `count` more records: the producer is on it.
async fn wait_for_acks(shared: &Mutex<Shared>, leader: usize, count: u64) -> anyhow::Result<()> {
    let acks = |shared: &Mutex<Shared>| shared.lock().expect("not poisoned").acks[leader];
    let from = acks(shared);
    let deadline = Instant::now() + WAIT;
    while acks(shared) < from + count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {} acknowledged nothing within {WAIT:?}",
            leader + 1
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Waits until restarted node `i` has applied everything its leader had committed.
async fn wait_caught_up(cluster: &Cluster, i: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = cluster.leader().await?;
        if let (Ok(lead), Ok(node)) = (cluster.status(leader).await, cluster.status(i).await)
            && node.applied_index >= lead.committed_index
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "node {} did not catch up within {WAIT:?}", i + 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The producer: see the module docs. Runs until `stop`.
async fn produce(
    addrs: Vec<SocketAddr>,
    record_bytes: usize,
    shared: Arc<Mutex<Shared>>,
    recovered: mpsc::UnboundedSender<Recovered>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let clients: Vec<LogClient<Channel>> =
        addrs.iter().map(|&addr| lazy_client(addr)).collect::<Result<_, _>>()?;
    let mut at: Option<usize> = None;
    while !*stop.borrow() {
        let Some(node) = at else {
            at = find_leader(&clients).await;
            match at {
                Some(leader) => {
                    let mut shared = shared.lock().expect("not poisoned");
                    if shared.kill.is_some_and(|kill| kill.node != leader) && shared.leader_known.is_none() {
                        shared.leader_known = Some(Instant::now());
                    }
                }
                None => pause(&mut stop).await,
            }
            continue;
        };
        let value = load::value(record_bytes, now_ns());
        let request =
            ProduceRequest { record: Some(Record { value, ..Record::default() }), records: Vec::new() };
        let answer = tokio::time::timeout(PRODUCE_TIMEOUT, clients[node].clone().produce(request)).await;
        let now = Instant::now();
        let failed = {
            let mut shared = shared.lock().expect("not poisoned");
            count_answer(&mut shared, &answer, node, now, &recovered)
        };
        if failed {
            at = None;
            pause(&mut stop).await;
        }
    }
    Ok(())
}

/// Counts the answer to a produce sent to `node`; reports the recovery from a pending kill.
/// Returns whether the call failed.
fn count_answer<T, E>(
    shared: &mut Shared,
    answer: &Result<Result<T, tonic::Status>, E>,
    node: usize,
    now: Instant,
    recovered: &mpsc::UnboundedSender<Recovered>,
) -> bool {
    match answer {
        Ok(Ok(_)) => {
            shared.acks[node] += 1;
            if let Some(kill) = shared.kill
                && node != kill.node
                && now > kill.at
            {
                let report = Recovered {
                    node,
                    at: now,
                    leader_known: shared.leader_known.unwrap_or(now),
                    failed_calls: shared.failed_calls,
                };
                shared.kill = None;
                shared.leader_known = None;
                shared.failed_calls = 0;
                let _ = recovered.send(report);
            }
            false
        }
        Ok(Err(_)) | Err(_) => {
            shared.failed_calls += 1;
            true
        }
    }
}

/// Waits [`RETRY`], or less when the run stops.
async fn pause(stop: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(RETRY) => {}
        _ = stop.changed() => {}
    }
}

/// A client whose connection is made on first use and remade after failures; connecting to
/// a killed node fails within [`PROBE_TIMEOUT`].
fn lazy_client(addr: SocketAddr) -> anyhow::Result<LogClient<Channel>> {
    let channel = crate::tls::endpoint(&addr.to_string())?
        .connect_timeout(PROBE_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(LogClient::new(channel))
}

/// The node a node names leader (the first that answers GetServers with one).
async fn find_leader(clients: &[LogClient<Channel>]) -> Option<usize> {
    for client in clients {
        let mut client = client.clone();
        let ask = client.get_servers(GetServersRequest {});
        let Ok(Ok(answer)) = tokio::time::timeout(PROBE_TIMEOUT, ask).await else { continue };
        let leader = answer.into_inner().servers.into_iter().find(|s| s.is_leader);
        if let Some(id) = leader.and_then(|s| s.id.parse::<usize>().ok())
            && (1..=clients.len()).contains(&id)
        {
            return Some(id - 1);
        }
    }
    None
}
