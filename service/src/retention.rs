//! Retention: a task that, every `--retention-check-interval`, seals the active segment once
//! its oldest record is `--segment-age` old, then deletes whole segments from the front of
//! the log while its files hold more than `--retention-bytes` or while the oldest one's
//! newest record is older than `--retention-age`.
//!
//! The engine does the work ([`Log::roll_if_older`], [`Log::apply_retention`]): it never
//! deletes the active segment, and it decides what to delete without holding the segment
//! list's lock, so readers and appends never wait on its disk reads. A reader inside a
//! deleted segment finishes its read (it holds the open files); a later read below the
//! lowest offset gets `OUT_OF_RANGE` with the lowest offset in its details. The metrics
//! count what was deleted (`ringlog_segments_dropped`, `ringlog_dropped_bytes`).
//!
//! On a cluster node the leader decides instead ([`ringlog_cluster::Node::retain`]): it
//! replicates the index its own log would keep from, and every node deletes below it once
//! Raft has purged those entries, so that every node keeps the same prefix; a node that lags
//! behind it catches up by a snapshot of segment files. Each node still seals its own idle
//! segment (`--segment-age`), which changes no content.

use std::sync::Arc;
use std::time::Duration;

use ringlog_engine::{Log, Retention};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::Replica;

/// What retention keeps, and how often it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete the oldest segments while the log's store files hold more than this.
    pub max_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this.
    pub max_age: Option<Duration>,
    /// Seal the active segment once its oldest record is this old.
    pub segment_age: Option<Duration>,
    /// How often it runs.
    pub check_every: Duration,
}

/// Applies `policy` to `log` once; returns the number of segments deleted. It does disk IO:
/// call it off the async runtime.
pub fn apply(log: &Log, policy: &RetentionPolicy) -> ringlog_engine::Result<usize> {
    seal_idle(log, policy)?;
    log.apply_retention(policy.limits())
}

/// Seals `log`'s active segment when it is older than the policy's segment age.
fn seal_idle(log: &Log, policy: &RetentionPolicy) -> ringlog_engine::Result<()> {
    match policy.segment_age {
        Some(age) => log.roll_if_older(age),
        None => Ok(()),
    }
}

impl RetentionPolicy {
    fn limits(&self) -> Retention {
        Retention { max_bytes: self.max_bytes, max_age: self.max_age }
    }
}

/// Applies `policy` now and then every `check_every` until `stop` turns true: to `log` on a
/// single node, through the cluster when `replica` is set.
pub(crate) async fn run(
    log: Log,
    replica: Option<Arc<Replica>>,
    policy: RetentionPolicy,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(policy.check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        if let Some(replica) = &replica {
            decide(&log, replica, &policy).await;
            continue;
        }
        let target = log.clone();
        match tokio::task::spawn_blocking(move || apply(&target, &policy)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(dropped)) => info!(
                segments = dropped,
                lowest_offset = log.lowest_offset(),
                bytes = log.size_bytes(),
                "retention deleted segments"
            ),
            Ok(Err(error)) => warn!(%error, "retention failed; it tries again at the next check"),
            Err(panicked) => warn!(%panicked, "retention panicked; it tries again at the next check"),
        }
    }
}

/// One check on a cluster node: seal its idle segment, and on the leader decide.
async fn decide(log: &Log, replica: &Replica, policy: &RetentionPolicy) {
    let (target, sealing) = (log.clone(), *policy);
    if let Ok(Err(error)) = tokio::task::spawn_blocking(move || seal_idle(&target, &sealing)).await {
        warn!(%error, "sealing an idle segment failed; it tries again at the next check");
    }
    match replica.node().retain(policy.limits()).await {
        Ok(Some(index)) => {
            info!(retain_from = index, "retention decided: every node deletes the records below")
        }
        Ok(None) => {}
        // Leadership moved, or the node stopped: the next check (on whichever node leads) decides.
        Err(error) => warn!(%error, "replicating a retention decision failed; the next check tries again"),
    }
}
