//! `ringlog-bench catch-up`: how fast a new node receives a cluster's log.
//!
//! A 3-node cluster of `ringlog serve` processes is filled with `--megabytes` of records
//! (batched ProduceStream to the leader, not measured). A fourth node is started on an
//! empty directory (its `--peers` naming all four) and, once it serves, `ringlog cluster
//! add --node-id 4` is run against the leader: the clock starts there. The bench polls the
//! new node's `ringlog.admin.v1.Cluster/Status` until its applied index reaches the index
//! the leader had written when the add began, and also notes when `cluster add` returned
//! (it returns once the node is a voter and caught up). The rate is the records' value
//! bytes, and the new node's log directory's bytes, over that time.
//!
//! Without retention the leader's log is whole, so the new node gets every entry by
//! AppendEntries. With `--retention-megabytes` the nodes run with that byte retention (and
//! `--segment-megabytes` segments, so that retention has whole segments to delete); the bench
//! waits until the start of the log is gone (a Consume at offset 0 is `OUT_OF_RANGE`), and
//! the new node then receives the leader's segment files as a snapshot, streamed and
//! installed, and the entries after it by AppendEntries. The report says which it was.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use ringlog_service::config::DurabilityMode;
use serde::Serialize;

use crate::{
    cluster::{Cluster, ClusterSpec},
    load,
};

/// The bound on the whole catch-up.
const CATCH_UP_MAX: Duration = Duration::from_secs(600);

/// The bound on waiting for retention to delete the start of the log.
const RETENTION_WAIT_MAX: Duration = Duration::from_secs(120);

/// Arguments of `ringlog-bench catch-up`.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct CatchUpArgs {
    /// Value bytes the cluster holds before the new node is added, in 10^6 bytes
    #[arg(long, default_value_t = 200)]
    megabytes: u64,
    /// Bytes per record value
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records per produce request while filling
    #[arg(long, default_value_t = 256)]
    batch: u64,
    /// The nodes' durability
    #[arg(long, value_enum, default_value_t = DurabilityMode::Interval)]
    #[serde(serialize_with = "crate::serialize_debug")]
    durability: DurabilityMode,
    /// `ringlog serve --raft-heartbeat-ms`
    #[arg(long, default_value_t = 250)]
    raft_heartbeat_ms: u64,
    /// `ringlog serve --raft-election-timeout-ms`
    #[arg(long, default_value_t = 1000)]
    raft_election_timeout_ms: u64,
    /// Run the nodes with `--retention-bytes` of this many 10^6 bytes, so that the new node
    /// catches up by a snapshot of segment files
    #[arg(long, value_name = "MB")]
    retention_megabytes: Option<u64>,
    /// With `--retention-megabytes`: the nodes' `--segment-bytes`, in MiB
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    segment_megabytes: u64,
    /// Where the nodes' temporary directory goes [default: the system's]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Write the settings and results as JSON
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    json: Option<PathBuf>,
}

/// What `catch-up` measured.
#[derive(Debug, Serialize)]
struct CatchUpReport {
    tool: String,
    settings: CatchUpArgs,
    cpus: usize,
    /// Records in the log when the node was added.
    records: u64,
    /// Their value bytes.
    value_bytes: u64,
    /// How long filling took (one batched ProduceStream to the leader): the cluster's own
    /// write rate, to compare the catch-up rate with.
    fill_s: f64,
    /// The leader's last Raft index when the add began: the target.
    target_index: u64,
    /// From the add to the new node's applied index reaching the target.
    caught_up_s: f64,
    /// From the add to `ringlog cluster add` returning.
    add_returned_s: f64,
    /// `value_bytes / caught_up_s`, 10^6 bytes per second (every record written, also those
    /// that retention deleted before the add: `received_mb_per_s` is the rate then).
    value_mb_per_s: f64,
    /// Bytes of the new node's segment store files once caught up (each entry's frame:
    /// header, Raft metadata, value).
    received_bytes: u64,
    /// `received_bytes / caught_up_s`.
    received_mb_per_s: f64,
    /// The new node's applied index over time: (seconds since the add, index).
    progress: Vec<(f64, u64)>,
    /// Bytes of the snapshot the new node installed, if it got one (from its log).
    snapshot_bytes: Option<u64>,
}

/// Runs `ringlog-bench catch-up`.
pub async fn run(args: CatchUpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.record_bytes >= 1 && args.batch >= 1, "--record-bytes and --batch must be positive");
    let mut flags = vec!["--durability".to_owned(), crate::value_name(&args.durability)];
    flags.extend(crate::raft_flags(args.raft_heartbeat_ms, args.raft_election_timeout_ms));
    if let Some(megabytes) = args.retention_megabytes {
        flags.extend([
            "--retention-bytes".to_owned(),
            (megabytes * 1_000_000).to_string(),
            "--segment-bytes".to_owned(),
            (args.segment_megabytes << 20).to_string(),
            "--retention-check-interval".to_owned(),
            "200ms".to_owned(),
        ]);
    }
    let spec = ClusterSpec { nodes: 3, flags, parent_dir: args.data_dir.clone() };
    let mut cluster = Cluster::start(spec).await?;
    let leader = cluster.leader().await?;

    let records = (args.megabytes * 1_000_000).div_ceil(args.record_bytes as u64);
    let value_bytes = records * args.record_bytes as u64;
    println!(
        "catch-up: filling the 3-node cluster with {records} records of {} B ({:.0} MB)",
        args.record_bytes,
        value_bytes as f64 / 1e6
    );
    let filling = Instant::now();
    let client = load::connect(&cluster.addr(leader).to_string()).await?;
    load::prefill(client, records, args.record_bytes, args.batch).await.context("filling the cluster")?;
    let fill_s = filling.elapsed().as_secs_f64();
    println!("filled in {fill_s:.2} s ({:.1} MB/s)", value_bytes as f64 / fill_s / 1e6);

    if args.retention_megabytes.is_some() {
        wait_for_retention(&cluster, leader).await?;
    }

    let joiner = cluster.spawn_joiner().await?;
    let target_index = cluster.status(leader).await?.last_index;
    let mut add = std::process::Command::new(cluster.binary())
        .args(["cluster", "add", "--addr", &cluster.addrs(), "--node-id"])
        .arg((joiner + 1).to_string())
        .args(["--node-addr", &cluster.addr(joiner).to_string()])
        .env_remove("RINGLOG_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Reaped)
        .context("running ringlog cluster add")?;
    let started = Instant::now();
    println!(
        "added node {} at {}; waiting for its applied index to reach {target_index}",
        joiner + 1,
        cluster.addr(joiner)
    );

    let mut progress = Vec::new();
    let mut add_returned = None;
    let caught_up = loop {
        let elapsed = started.elapsed();
        anyhow::ensure!(
            elapsed < CATCH_UP_MAX,
            "node {} did not catch up within {CATCH_UP_MAX:?}",
            joiner + 1
        );
        if add_returned.is_none()
            && let Some(status) = add.0.try_wait()?
        {
            add_returned = Some(elapsed);
            anyhow::ensure!(status.success(), "ringlog cluster add failed ({status}):\n{}", cluster.logs());
        }
        if let Ok(status) = cluster.status(joiner).await {
            progress.push((elapsed.as_secs_f64(), status.applied_index));
            if status.applied_index >= target_index {
                break elapsed;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let add_returned = match add_returned {
        Some(at) => at,
        None => loop {
            if let Some(status) = add.0.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "ringlog cluster add failed ({status}):\n{}",
                    cluster.logs()
                );
                break started.elapsed();
            }
            anyhow::ensure!(started.elapsed() < CATCH_UP_MAX, "ringlog cluster add did not return");
            tokio::time::sleep(Duration::from_millis(10)).await;
        },
    };
    let received_bytes = store_bytes(&cluster.data_dir(joiner))?;
    let snapshot_bytes = installed_snapshot_bytes(&cluster.log_text(joiner));
    drop(cluster);

    let seconds = caught_up.as_secs_f64();
    let report = CatchUpReport {
        tool: crate::report::tool(),
        settings: args.clone(),
        cpus: crate::report::cpus(),
        records,
        value_bytes,
        fill_s,
        target_index,
        caught_up_s: seconds,
        add_returned_s: add_returned.as_secs_f64(),
        value_mb_per_s: value_bytes as f64 / seconds / 1e6,
        received_bytes,
        received_mb_per_s: received_bytes as f64 / seconds / 1e6,
        progress,
        snapshot_bytes,
    };
    println!(
        "caught up in {:.2} s (cluster add returned after {:.2} s): {:.1} MB/s of values, {:.1} MB/s of log files ({:.0} MB received)",
        report.caught_up_s,
        report.add_returned_s,
        report.value_mb_per_s,
        report.received_mb_per_s,
        received_bytes as f64 / 1e6
    );
    match snapshot_bytes {
        Some(bytes) => {
            println!("by a snapshot of {:.0} MB of segment files, then appends", bytes as f64 / 1e6)
        }
        None => println!("by appends only (no snapshot)"),
    }
    if let Some(path) = &args.json {
        crate::report::write_json(path, &report)?;
    }
    Ok(())
}

/// Waits until retention has removed the start of the leader's log: a Consume at offset 0 is
/// answered `OUT_OF_RANGE`.
async fn wait_for_retention(cluster: &Cluster, leader: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut client = load::connect(&cluster.addr(leader).to_string()).await?;
    loop {
        let request = ringlog_service::proto::ConsumeRequest { offset: 0, max_records: 1 };
        match client.consume(request).await {
            Err(status) if status.code() == tonic::Code::OutOfRange => return Ok(()),
            _ if started.elapsed() > RETENTION_WAIT_MAX => {
                anyhow::bail!("retention removed nothing within {RETENTION_WAIT_MAX:?}:\n{}", cluster.logs())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The bytes of the snapshot a node's log says it installed (`installing a snapshot`, with
/// `bytes=N` as text or `"bytes":N` as JSON, the nodes' format when not on a terminal), if any.
fn installed_snapshot_bytes(log: &str) -> Option<u64> {
    let line = log.lines().find(|line| line.contains("installing a snapshot"))?;
    let (_, after) = line.split_once("bytes=").or_else(|| line.split_once("\"bytes\":"))?;
    after.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A child process that is killed and reaped when dropped (when a wait fails, too).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Bytes of the segment store files (`*.store`) under `dir`: the log's frames, without the
/// preallocated index files.
fn store_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += store_bytes(&entry.path())?;
        } else if entry.path().extension().is_some_and(|ext| ext == "store") {
            total += meta.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_size_is_read_from_the_install_line() {
        let log = "2026-11-26T10:00:00Z  INFO ringlog_cluster::node: raft node started node=4\n\
                   2026-11-26T10:00:01Z  INFO ringlog_cluster::raft_service: installing a snapshot node=4 from=1 meta=x bytes=104857600\n";
        assert_eq!(installed_snapshot_bytes(log), Some(104_857_600));
        let json = r#"{"level":"INFO","fields":{"message":"installing a snapshot","node":4,"bytes":20185772},"target":"t"}"#;
        assert_eq!(installed_snapshot_bytes(json), Some(20_185_772));
        assert_eq!(installed_snapshot_bytes("INFO raft node started node=4\n"), None);
    }
}
