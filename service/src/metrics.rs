//! Prometheus metrics, served as OpenMetrics text at `/metrics` on `--metrics-addr`.
//!
//! Two kinds: what the service observes as calls go by (RPC counts by method and code, RPC
//! and append latency, open streams), kept in `prometheus-client` metrics; and the
//! engine's own numbers (`Log::stats`, segments, size, offsets), read from the log on each
//! scrape by a collector, so there is no second copy to keep in step; that includes the
//! engine's fsync latency buckets, exported as the `ringlog_fsync_seconds` histogram. A
//! cluster node adds its Raft state (`ringlog_raft_*`: term, leader, last log, committed and
//! applied index, and on the leader each follower's matched index and lag), read from
//! openraft's metrics at scrape time too, the snapshots it sent and received, and counts the
//! leader changes it has seen.
//!
//! Registries are per server, never process-global, so tests can run many servers in one
//! process and each sees only its own numbers.

use std::{fmt::Write as _, future::Future, sync::Arc, time::Duration};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use ringlog_engine::{Log, SYNC_LATENCY_BOUNDS_US, Stats};
use tokio::net::TcpListener;
use tracing::info;

/// The labels of an RPC counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub(crate) grpc_service: String,
    pub(crate) grpc_method: String,
    pub(crate) grpc_code: String,
}

/// The labels of an RPC latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    pub(crate) grpc_service: String,
    pub(crate) grpc_method: String,
}

/// 50 µs to about 1.6 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(50e-6, 2.0, 16)
}

/// The metrics of one server.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Finished calls by service, method and code.
    pub(crate) calls: Family<CallLabels, Counter>,
    /// Call latency, from the request's arrival to its last byte (streams: their lifetime).
    pub(crate) call_seconds: Family<MethodLabels, Histogram>,
    /// Time from handing records to the appender to their acknowledgement.
    pub(crate) append_seconds: Histogram,
    /// Open ConsumeStreams.
    pub(crate) followers: Gauge,
    /// Open ProduceStreams.
    pub(crate) produce_streams: Gauge,
    /// Changes of the leader this node has seen (cluster nodes).
    pub(crate) leader_changes: Counter,
}

impl Metrics {
    /// Metrics for a server of `log`, and of its Raft node when it has one.
    pub(crate) fn new(log: Log, node: Option<&ringlog_cluster::Node>) -> Metrics {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        let call_seconds =
            Family::<MethodLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        let append_seconds = Histogram::new(latency_buckets());
        let followers = Gauge::default();
        let produce_streams = Gauge::default();
        registry.register(
            "ringlog_grpc_server_handled",
            "gRPC calls finished, by method and status code",
            calls.clone(),
        );
        registry.register(
            "ringlog_grpc_server_handling_seconds",
            "gRPC call latency (streams: until they end)",
            call_seconds.clone(),
        );
        registry.register(
            "ringlog_append_seconds",
            "Time from submitting records to the log until they are acknowledged",
            append_seconds.clone(),
        );
        registry.register("ringlog_active_followers", "Open ConsumeStream calls", followers.clone());
        registry.register(
            "ringlog_active_produce_streams",
            "Open ProduceStream calls",
            produce_streams.clone(),
        );
        registry.register_collector(Box::new(EngineCollector { log }));
        let leader_changes = Counter::default();
        if let Some(node) = node {
            registry.register(
                "ringlog_raft_leader_changes",
                "Times this node saw the leader change (elections, and losing the leader)",
                leader_changes.clone(),
            );
            let (raft, snapshots) = (node.raft().clone(), node.snapshot_stats());
            registry.register_collector(Box::new(RaftCollector { raft, snapshots }));
        }
        Metrics { registry, calls, call_seconds, append_seconds, followers, produce_streams, leader_changes }
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Records a finished call.
    pub(crate) fn call_finished(&self, service: &str, method: &str, code: tonic::Code, latency: Duration) {
        let mut grpc_code = String::new();
        let _ = write!(grpc_code, "{code:?}");
        self.calls
            .get_or_create(&CallLabels {
                grpc_service: service.to_owned(),
                grpc_method: method.to_owned(),
                grpc_code,
            })
            .inc();
        self.call_seconds
            .get_or_create(&MethodLabels { grpc_service: service.to_owned(), grpc_method: method.to_owned() })
            .observe(latency.as_secs_f64());
    }
}

/// Counts one open stream in a gauge until dropped.
#[derive(Debug)]
pub(crate) struct Open(Gauge);

impl Open {
    pub(crate) fn new(gauge: &Gauge) -> Open {
        gauge.inc();
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads the engine's numbers at scrape time.
#[derive(Debug)]
struct EngineCollector {
    log: Log,
}

fn counter<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstCounter<N>: EncodeMetric,
{
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// The engine's fdatasync latency buckets as a Prometheus histogram.
fn fsync_histogram(encoder: &mut DescriptorEncoder, stats: &Stats) -> Result<(), std::fmt::Error> {
    let bounds = SYNC_LATENCY_BOUNDS_US.iter().map(|&us| us as f64 / 1e6).chain([f64::INFINITY]);
    let buckets: Vec<(f64, u64)> = bounds.zip(stats.sync_latency_buckets).collect();
    let mut metric = encoder.encode_descriptor(
        "ringlog_fsync_seconds",
        "fdatasync latency (appends with --durability always wait for one)",
        None,
        prometheus_client::metrics::MetricType::Histogram,
    )?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        stats.sync_nanos as f64 / 1e9,
        stats.syncs,
        &buckets,
        None,
    )
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let log = &self.log;
        let stats = log.stats();
        let e = &mut encoder;
        counter(
            e,
            "ringlog_records_appended",
            "Records appended since the log was opened",
            stats.records_appended,
        )?;
        counter(
            e,
            "ringlog_appended_bytes",
            "Store bytes appended since open (frames included)",
            stats.bytes_appended,
        )?;
        counter(e, "ringlog_writes", "Group-commit writes since open", stats.writes)?;
        fsync_histogram(e, &stats)?;
        gauge(e, "ringlog_segments", "Segments in the log", log.segment_count() as u64)?;
        gauge(e, "ringlog_disk_bytes", "Bytes of the log's files on disk", log.size_bytes())?;
        gauge(e, "ringlog_lowest_offset", "The lowest offset retained", log.lowest_offset())?;
        counter(
            e,
            "ringlog_segments_dropped",
            "Segments deleted by retention since open",
            stats.segments_dropped,
        )?;
        counter(
            e,
            "ringlog_dropped_bytes",
            "Store bytes deleted by retention since open",
            stats.bytes_dropped,
        )?;
        if let Some(highest) = log.highest_offset() {
            gauge(e, "ringlog_highest_offset", "The highest offset written (absent while empty)", highest)?;
        }
        gauge(e, "ringlog_next_offset", "The offset the next record will get", log.next_offset())?;
        gauge(e, "ringlog_durable_offset", "Records below this offset are synced", log.durable_offset())?;
        Ok(())
    }
}

/// Reads a cluster node's Raft state at scrape time.
#[derive(Debug)]
struct RaftCollector {
    raft: ringlog_cluster::Raft,
    snapshots: Arc<ringlog_cluster::snapshot::SnapshotStats>,
}

/// A follower's label on the leader's replication metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabels {
    follower: String,
}

impl Collector for RaftCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use openraft::async_runtime::WatchReceiver;
        let m = self.raft.metrics().borrow_watched().clone();
        let e = &mut encoder;
        let next = crate::cluster::entries_through;
        gauge(e, "ringlog_raft_term", "The node's current Raft term", m.current_term)?;
        if let Some(leader) = m.current_leader {
            gauge(e, "ringlog_raft_leader_id", "The leader this node knows (absent while none)", leader)?;
        }
        let leading = u64::from(m.state == openraft::ServerState::Leader);
        gauge(e, "ringlog_raft_is_leader", "1 on the leader, else 0", leading)?;
        gauge(
            e,
            "ringlog_raft_last_log_index",
            "One past the last Raft entry in this node's log",
            m.last_log_index.map_or(0, |i| i + 1),
        )?;
        gauge(
            e,
            "ringlog_raft_committed_index",
            "One past the last entry this node knows committed",
            next(m.cluster_committed),
        )?;
        gauge(
            e,
            "ringlog_raft_applied_index",
            "One past the last entry applied here (consumers read below it)",
            next(m.last_applied),
        )?;
        let followers = crate::cluster::followers(&m);
        if !followers.is_empty() {
            let gauge_of = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            let (matched, lag) =
                (Family::<FollowerLabels, Gauge>::default(), Family::<FollowerLabels, Gauge>::default());
            for (follower, progress) in followers {
                let labels = FollowerLabels { follower: follower.to_string() };
                matched.get_or_create(&labels).set(gauge_of(progress.matched));
                lag.get_or_create(&labels).set(gauge_of(progress.lag));
            }
            for (name, help, family) in [
                (
                    "ringlog_raft_follower_matched_index",
                    "Leader only: one past the last entry each follower is known to hold",
                    &matched,
                ),
                (
                    "ringlog_raft_follower_lag_entries",
                    "Leader only: entries each follower is behind the leader's log",
                    &lag,
                ),
            ] {
                family.encode(e.encode_descriptor(name, help, None, family.metric_type())?)?;
            }
        }
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        let s = &self.snapshots;
        counter(e, "ringlog_raft_snapshots_sent", "Snapshots sent to followers", load(&s.sent))?;
        counter(e, "ringlog_raft_snapshot_sent_bytes", "Bytes of the snapshots sent", load(&s.sent_bytes))?;
        counter(e, "ringlog_raft_snapshots_received", "Snapshots received from a leader", load(&s.received))?;
        counter(
            e,
            "ringlog_raft_snapshot_received_bytes",
            "Bytes of the snapshots received",
            load(&s.received_bytes),
        )?;
        Ok(())
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::{http::header::CONTENT_TYPE, routing::get};
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                ([(CONTENT_TYPE, content_type)], metrics.encode())
            }
        }),
    );
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics endpoint listening at /metrics");
    }
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
