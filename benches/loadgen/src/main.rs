//! `ringlog-bench`: the end-to-end load generator of ringlog's gRPC service, and
//! `ringlog-bench server --bare`, the storage-less baseline it compares with. A binary of its
//! own, so the `ringlog` binary that people deploy carries nothing for measuring.
//!
//! A run measures one workload against one or more servers: a running one (`--addr`), or
//! servers it starts itself in this process on `127.0.0.1:0` (`--server ringlog|bare|both`):
//! ringlog over a fresh log in a temporary directory, and the bare tonic server of
//! [`bare`] (same proto, no storage). With `both`, the two alternate `--repeat` times and
//! the run prints ringlog's records/s as a ratio to bare tonic's, per repetition, so every
//! ratio comes from one run on one machine. Each server runs on a tokio runtime of its own,
//! as a separate process would; client and server share the machine's cores.
//!
//! Workloads: Produce (unary), ProduceStream (one record per message, or batched),
//! ConsumeStream (reading a prefilled log), and mixed (producers and followers of the tail
//! at once: append-to-delivery latency). Closed loop by default (each worker sends as fast as
//! it is let); `--rate` makes it open loop (see [`schedule`]).
//!
//! Real processes: `--server node` is one `ringlog serve` process, `--server cluster` a
//! 3-node Raft cluster of them on loopback ([`cluster`]), produced to at its leader;
//! `--server compare` alternates bare tonic, the node and the cluster, and adds each
//! process target's CPU time per record (read from `/proc/<pid>/stat`). Two measurements
//! of a cluster are subcommands of their own: `failover` (SIGKILL of the leader to the next
//! acknowledged produce, [`failover`]) and `catch-up` (a new node's catch-up rate,
//! [`catchup`]).

#![forbid(unsafe_code)]

mod bare;
mod catchup;
mod cluster;
mod failover;
mod load;
mod node;
mod report;
mod schedule;
mod tls;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ringlog_engine::{Backend, Config, Durability, Log};
use ringlog_service::{
    Server,
    config::{BackendKind, DurabilityMode},
};
use serde::Serialize;
use tokio::{sync::watch, task::JoinSet};

use bare::BenchServerArgs;
use cluster::{Cluster, ClusterSpec};
use load::{Shape, Tally};
use report::{Ratio, Report, Run};
use schedule::{Limit, now_ns};

/// Load-test ringlog's gRPC service (or in-process ringlog and bare tonic): records/s, MB/s,
/// latency percentiles.
#[derive(Debug, Parser)]
#[command(name = "ringlog-bench", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve log.v1 with no storage: the bare tonic baseline that a run compares with.
    Server(BenchServerArgs),
    /// Failover time of a 3-node cluster of `ringlog serve` processes: SIGKILL the leader
    /// under a producer, time until a produce is acknowledged again, restart, repeat.
    Failover(failover::FailoverArgs),
    /// Catch-up rate: fill a 3-node cluster, add an empty fourth node, time until it holds
    /// everything.
    CatchUp(catchup::CatchUpArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Some(Command::Server(_))) {
        kill_nodes_when_interrupted();
    }
    let result = match cli.command {
        Some(Command::Server(args)) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|runtime| runtime.block_on(bare::run_server(args))),
        Some(Command::Failover(args)) => client_runtime().and_then(|rt| rt.block_on(failover::run(args))),
        Some(Command::CatchUp(args)) => client_runtime().and_then(|rt| rt.block_on(catchup::run(args))),
        None => run(cli.bench),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringlog-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Unary Produce, one record per call; each worker waits for its answer
    ProduceUnary,
    /// ProduceStream, one record per message (the original API), pipelined
    ProduceStream,
    /// ProduceStream with `--batch` records per message (the `records` field)
    ProduceBatched,
    /// ConsumeStream reading a prefilled log from its start (`--batch` is `max_records`)
    ConsumeStream,
    /// ProduceStream producers and `--followers` ConsumeStream followers of the tail at once
    Mixed,
}

/// Which servers `ringlog-bench` starts: in this process, or `ringlog serve` processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerChoice {
    /// ringlog over a log in a fresh temporary directory
    Ringlog,
    /// The bare tonic server (no storage)
    Bare,
    /// Both, alternating, and their ratio
    Both,
    /// One `ringlog serve` process (built next to ringlog-bench) on a fresh directory
    Node,
    /// Three `ringlog serve` processes as a Raft cluster on loopback; produces go to the leader
    Cluster,
    /// Bare tonic, one node process and the 3-node cluster, alternating: ratios and CPU/record
    Compare,
}

/// What to measure, and against which servers.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct BenchArgs {
    /// What to measure
    #[arg(long, value_enum, default_value_t = Workload::ProduceStream)]
    workload: Workload,
    /// Measure a running server at this address instead of starting servers in-process
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// Servers to start, in this process or as `ringlog serve` processes, on 127.0.0.1 (ignored with --addr)
    #[arg(long, value_enum, default_value_t = ServerChoice::Both)]
    server: ServerChoice,
    /// HTTP/2 connections
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Concurrent RPC streams (or unary callers) per connection
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Bytes per record value (at least 8 to carry the send time)
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// produce-batched: records per request [default: 100]; consume-stream and mixed
    /// followers: `max_records` [default: 1, one record per message]
    #[arg(long)]
    batch: Option<u64>,
    /// Records to produce (over all workers), or for consume-stream to prefill and read
    /// per stream [default: consume-stream 200000]
    #[arg(long, conflicts_with = "duration")]
    records: Option<u64>,
    /// How long producers send, e.g. `10s`, `500ms` [default: 5s]
    #[arg(long, value_parser = parse_duration, value_name = "TIME")]
    #[serde(serialize_with = "serialize_secs")]
    duration: Option<Duration>,
    /// Open loop: records per second over all producers, latency from the intended send time
    #[arg(long, value_name = "RECORDS_PER_S")]
    rate: Option<u64>,
    /// mixed: ConsumeStream followers of the tail, each on its own connection
    #[arg(long, default_value_t = 4)]
    followers: usize,
    /// Measure each server this many times (alternating) to show the spread
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Write the settings and results as JSON
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    json: Option<PathBuf>,
    /// ringlog (in-process or `ringlog serve` processes): when appends are acknowledged
    #[arg(long, value_enum, default_value_t = DurabilityMode::Interval)]
    #[serde(serialize_with = "serialize_debug")]
    durability: DurabilityMode,
    /// `ringlog serve` processes (`--server node` or `cluster`) serve with mutual TLS, the
    /// bench's clients present a certificate, and a cluster's nodes dial one another over TLS
    /// (certificates from `ringlog certs`)
    #[arg(long)]
    tls: bool,
    /// The `ringlog serve` flags `--tls` adds (set when the run starts).
    #[arg(skip)]
    #[serde(skip)]
    tls_flags: Vec<String>,
    /// ringlog (in-process or `ringlog serve` processes): append backend
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    #[serde(serialize_with = "serialize_debug")]
    backend: BackendKind,
    /// ringlog (in-process or processes): where its temporary directory goes [default: the system's]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Worker threads of each in-process server's runtime [default: one per CPU]
    #[arg(long)]
    server_threads: Option<usize>,
    /// Cluster processes: the Raft heartbeat (`ringlog serve --raft-heartbeat-ms`)
    #[arg(long, default_value_t = 250)]
    raft_heartbeat_ms: u64,
    /// Cluster processes: the election timeout (`ringlog serve --raft-election-timeout-ms`)
    #[arg(long, default_value_t = 1000)]
    raft_election_timeout_ms: u64,
}

/// On SIGINT or SIGTERM, kills the `ringlog serve` processes this run started (their
/// destructors do not run when the process is interrupted) and exits.
fn kill_nodes_when_interrupted() {
    let listen = || -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            std::io::Result::Ok(())
        })?;
        node::kill_running();
        eprintln!("ringlog-bench: interrupted; killed the ringlog serve processes it started");
        std::process::exit(130)
    };
    let unguarded = |error: std::io::Error| {
        eprintln!("ringlog-bench: no signal listener ({error}): an interrupted run may leave nodes running")
    };
    let listener = std::thread::Builder::new().name("bench-signals".into()).spawn(move || {
        listen().unwrap_or_else(unguarded);
    });
    listener.map_or_else(unguarded, drop);
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
        .context("starting the client runtime")
}

fn serialize_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(|d| d.as_secs_f64()).serialize(s)
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    d.as_secs_f64().serialize(s)
}

fn serialize_debug<T: std::fmt::Debug, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    format!("{v:?}").to_lowercase().serialize(s)
}

/// `10s`, `250ms`, `2m`, or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let number: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 10s or 500ms"))?;
    let secs = match unit {
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("`{unit}` is not a unit (ms, s, m)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{text}` must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl BenchArgs {
    fn workers(&self) -> usize {
        self.connections * self.streams
    }

    fn shape(&self) -> Shape {
        match self.workload {
            Workload::ProduceBatched => {
                Shape { record_bytes: self.record_bytes, batch: Some(self.batch.unwrap_or(100)) }
            }
            _ => Shape { record_bytes: self.record_bytes, batch: None },
        }
    }

    /// `max_records` of consumers.
    fn max_records(&self) -> u64 {
        match self.workload {
            Workload::ConsumeStream | Workload::Mixed => self.batch.unwrap_or(1),
            _ => 1,
        }
    }

    /// How many produce requests: a count, or a duration.
    fn limit(&self) -> Limit {
        match (self.records, self.duration) {
            (Some(records), _) => Limit::Requests(records.div_ceil(self.shape().records())),
            (None, Some(duration)) => Limit::Duration(duration),
            (None, None) => Limit::Duration(Duration::from_secs(5)),
        }
    }

    /// consume-stream: records each stream reads.
    fn consume_records(&self) -> u64 {
        self.records.unwrap_or(200_000)
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.connections >= 1 && self.streams >= 1,
            "--connections and --streams must be at least 1"
        );
        anyhow::ensure!(self.repeat >= 1, "--repeat must be at least 1");
        anyhow::ensure!(
            !self.tls
                || (self.addr.is_none() && matches!(self.server, ServerChoice::Node | ServerChoice::Cluster)),
            "--tls measures `ringlog serve` processes: use it with --server node or --server cluster"
        );
        anyhow::ensure!(self.batch.is_none_or(|b| (1..=1000).contains(&b)), "--batch must be 1 to 1000");
        anyhow::ensure!(self.rate.is_none_or(|r| r > 0), "--rate must be positive");
        if self.workload == Workload::ConsumeStream {
            anyhow::ensure!(
                self.duration.is_none(),
                "consume-stream reads a prefilled log: give --records, not --duration"
            );
            anyhow::ensure!(
                self.rate.is_none(),
                "consume-stream reads as fast as it can: --rate does not apply"
            );
        }
        if self.workload == Workload::Mixed {
            anyhow::ensure!(
                self.record_bytes >= 8,
                "mixed needs --record-bytes of at least 8 (the send time)"
            );
            anyhow::ensure!(self.followers >= 1, "mixed needs at least one follower");
        }
        Ok(())
    }

    /// The servers to measure, in the order of repetition `repeat` (alternating, so that
    /// neither always runs first).
    fn targets(&self, repeat: u32) -> Vec<Target> {
        if let Some(addr) = &self.addr {
            return vec![Target::External(addr.clone())];
        }
        match self.server {
            ServerChoice::Ringlog => vec![Target::Ringlog],
            ServerChoice::Bare => vec![Target::Bare],
            ServerChoice::Both if repeat.is_multiple_of(2) => vec![Target::Bare, Target::Ringlog],
            ServerChoice::Both => vec![Target::Ringlog, Target::Bare],
            ServerChoice::Node => vec![Target::Node],
            ServerChoice::Cluster => vec![Target::Cluster],
            ServerChoice::Compare if repeat.is_multiple_of(2) => {
                vec![Target::Bare, Target::Node, Target::Cluster]
            }
            ServerChoice::Compare => vec![Target::Cluster, Target::Node, Target::Bare],
        }
    }

    /// The flags of `ringlog serve` processes: this run's durability and backend, and for a
    /// cluster the Raft timers.
    fn serve_flags(&self, cluster: bool) -> Vec<String> {
        let mut flags = vec![
            "--durability".to_owned(),
            value_name(&self.durability),
            "--backend".to_owned(),
            value_name(&self.backend),
        ];
        if cluster {
            flags.extend(raft_flags(self.raft_heartbeat_ms, self.raft_election_timeout_ms));
        }
        flags.extend(self.tls_flags.iter().cloned());
        flags
    }

    /// The processes target `target` starts, if it is one.
    fn cluster_spec(&self, target: &Target) -> Option<ClusterSpec> {
        let nodes = match target {
            Target::Node => 1,
            Target::Cluster => 3,
            _ => return None,
        };
        Some(ClusterSpec { nodes, flags: self.serve_flags(nodes > 1), parent_dir: self.data_dir.clone() })
    }
}

/// The command-line spelling of `value`.
fn value_name<T: clap::ValueEnum>(value: &T) -> String {
    value.to_possible_value().expect("every value has a name").get_name().to_owned()
}

/// `--raft-heartbeat-ms` and `--raft-election-timeout-ms` for `ringlog serve`.
pub fn raft_flags(heartbeat_ms: u64, election_timeout_ms: u64) -> Vec<String> {
    vec![
        "--raft-heartbeat-ms".to_owned(),
        heartbeat_ms.to_string(),
        "--raft-election-timeout-ms".to_owned(),
        election_timeout_ms.to_string(),
    ]
}

/// A server to measure.
#[derive(Clone, Debug)]
enum Target {
    External(String),
    Ringlog,
    Bare,
    /// One `ringlog serve` process.
    Node,
    /// Three `ringlog serve` processes, measured at the leader.
    Cluster,
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::External(_) => "external",
            Target::Ringlog => "ringlog",
            Target::Bare => "bare",
            Target::Node => "node",
            Target::Cluster => "cluster",
        }
    }
}

/// Runs the measurement `args` asks for.
pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    args.check()?;
    // Kept until the run ends: the nodes read their certificates from it.
    let certs = args.tls.then(tempfile::tempdir).transpose().context("a directory for certificates")?;
    if let Some(certs) = &certs {
        args.tls_flags = tls::enable(&node::ringlog_binary()?, certs.path())?;
    }
    let client = client_runtime()?;
    println!(
        "{:?}: {} connection(s) x {} stream(s), {} B records{}{}{}",
        args.workload,
        args.connections,
        args.streams,
        args.record_bytes,
        if args.tls { ", mutual TLS" } else { "" },
        args.rate.map(|r| format!(", open loop at {r} records/s")).unwrap_or_default(),
        if args.workload == Workload::Mixed {
            format!(", {} followers", args.followers)
        } else {
            String::new()
        },
    );
    let mut runs = Vec::new();
    for repeat in 0..args.repeat {
        for target in args.targets(repeat) {
            if args.workload == Workload::Mixed && matches!(target, Target::Bare) {
                println!(
                    "bare     #{repeat}  skipped: the bare server stores nothing, so it has no tail to follow"
                );
                continue;
            }
            let run = match args.cluster_spec(&target) {
                Some(spec) => client.block_on(measure_processes(&args, spec, target.name(), repeat)),
                None => {
                    let server = InProcess::start(&target, &args)?;
                    let measured = client.block_on(measure(&args, &server.addr, target.name(), repeat));
                    let stopped = server.stop();
                    measured.and_then(|run| stopped.map(|()| run))
                }
            }
            .with_context(|| format!("measuring {}", target.name()))?;
            println!("{}", run.line());
            runs.push(run);
        }
    }
    let ratio = Ratio::of(&runs);
    let ratios = Ratio::pairs(&runs);
    for ratio in &ratios {
        let each: Vec<String> = ratio.each.iter().map(|r| format!("{:.0}%", r * 100.0)).collect();
        println!(
            "{} / {} records/s: median {:.0}% (min {:.0}%, max {:.0}%; each {})",
            ratio.server,
            ratio.baseline,
            ratio.median * 100.0,
            ratio.min * 100.0,
            ratio.max * 100.0,
            each.join(", ")
        );
    }
    if let Some(path) = &args.json {
        let report = Report {
            tool: report::tool(),
            settings: args.clone(),
            cpus: report::cpus(),
            runs,
            ratio_to_bare: ratio,
            ratios,
        };
        report::write_json(path, &report)?;
    }
    Ok(())
}

/// A server running on a runtime (and thread) of its own, or one that is already running.
struct InProcess {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    fn start(target: &Target, args: &BenchArgs) -> anyhow::Result<InProcess> {
        let (kind, dir) = match target {
            Target::External(addr) => return Ok(InProcess { addr: addr.clone(), stop: None, thread: None }),
            Target::Ringlog => {
                let dir = match &args.data_dir {
                    Some(parent) => tempfile::tempdir_in(parent),
                    None => tempfile::tempdir(),
                }
                .context("making a temporary log directory")?;
                (Some(ringlog_config(args)), Some(dir))
            }
            Target::Bare => (None, None),
            Target::Node | Target::Cluster => {
                anyhow::bail!("{} is a target of processes, not in-process", target.name())
            }
        };
        let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .context("binding 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime.enable_all().thread_name(format!("bench-{}", target.name()));
        if let Some(threads) = args.server_threads {
            runtime.worker_threads(threads);
        }
        let runtime = runtime.build().context("starting a server runtime")?;
        let record_bytes = args.record_bytes;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread =
            std::thread::Builder::new().name(format!("bench-{}", target.name())).spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    match (kind, dir) {
                        (Some(config), Some(dir)) => {
                            let log = Log::open(dir.path(), config).context("opening the in-process log")?;
                            Server::new(log)
                                .shutdown_grace(Duration::from_secs(2))
                                .serve(listener, shutdown)
                                .await?;
                            drop(dir);
                        }
                        _ => bare::serve(listener, record_bytes, shutdown).await?,
                    }
                    anyhow::Ok(())
                })
            })?;
        Ok(InProcess { addr, stop: Some(stop), thread: Some(thread) })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| anyhow::anyhow!("the in-process server panicked"))?,
            None => Ok(()),
        }
    }
}

fn ringlog_config(args: &BenchArgs) -> Config {
    Config {
        durability: match args.durability {
            DurabilityMode::None => Durability::None,
            DurabilityMode::Interval => Durability::Interval { interval_ms: 100, bytes: 4 << 20 },
            DurabilityMode::Always => Durability::Always,
        },
        backend: match args.backend {
            BackendKind::Auto => Backend::Auto,
            BackendKind::IoUring => Backend::IoUring,
            BackendKind::Pwrite => Backend::Pwrite,
        },
        ..Config::default()
    }
}

/// Shows progress on stderr (when it is a terminal) until dropped.
struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(label: &str, done: Arc<AtomicU64>, total: Option<u64>, duration: Option<Duration>) -> Progress {
        let bar = match (total, duration) {
            (Some(total), _) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(
                ProgressStyle::with_template(
                    "{prefix:8} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records ({per_sec})",
                )
                .expect("valid template"),
            ),
            (None, Some(duration)) => {
                ProgressBar::with_draw_target(Some(duration.as_millis() as u64), ProgressDrawTarget::stderr())
                    .with_style(
                        ProgressStyle::with_template("{prefix:8} [{elapsed_precise}] {wide_bar} {msg}")
                            .expect("valid template"),
                    )
            }
            (None, None) => ProgressBar::hidden(),
        };
        bar.set_prefix(label.to_owned());
        let by_time = total.is_none();
        let started = Instant::now();
        let ticker = tokio::spawn({
            let bar = bar.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    let records = done.load(Ordering::Relaxed);
                    if by_time {
                        bar.set_position(started.elapsed().as_millis() as u64);
                        bar.set_message(format!("{records} records"));
                    } else {
                        bar.set_position(records);
                    }
                }
            }
        });
        Progress { bar, ticker }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// Waits for every worker; the first error ends the run.
async fn join(mut workers: JoinSet<anyhow::Result<Tally>>) -> anyhow::Result<Tally> {
    let mut total = Tally::empty();
    while let Some(done) = workers.join_next().await {
        let tally = done.context("a worker panicked")??;
        total.merge(&tally);
    }
    Ok(total)
}

/// Starts the processes of `spec`, measures the workload at the leader, and adds the CPU
/// time the processes spent during the measurement. The processes are killed at the end,
/// also when the measurement fails.
async fn measure_processes(
    args: &BenchArgs,
    spec: ClusterSpec,
    server: &str,
    repeat: u32,
) -> anyhow::Result<Run> {
    let cluster = Cluster::start(spec).await?;
    let leader = cluster.leader().await?;
    let before = cluster.cpu_time()?;
    let run = measure(args, &cluster.addr(leader).to_string(), server, repeat)
        .await
        .with_context(|| format!("the nodes' logs:\n{}", cluster.logs()))?;
    let spent = cluster.cpu_time()?.saturating_sub(before);
    // A consume run's time includes the prefill it reads: no cost per record then.
    Ok(if args.workload == Workload::ConsumeStream { run } else { run.with_server_cpu(spent) })
}

/// One measurement of the workload against the server at `addr`.
async fn measure(args: &BenchArgs, addr: &str, server: &str, repeat: u32) -> anyhow::Result<Run> {
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        clients.push(load::connect(addr).await?);
    }
    let worker_clients = (0..args.workers()).map(|i| clients[i % args.connections].clone());
    let done = Arc::new(AtomicU64::new(0));
    let shape = args.shape();
    let no_latency = report::histogram();

    if args.workload == Workload::ConsumeStream {
        let records = args.consume_records();
        let first = if server == "bare" {
            0
        } else {
            load::prefill(clients[0].clone(), records, args.record_bytes, 1000).await?
        };
        let (_keep, until) = watch::channel(records);
        let progress = Progress::start(server, done.clone(), Some(records * args.workers() as u64), None);
        let started = Instant::now();
        let mut workers = JoinSet::new();
        for client in worker_clients {
            workers.spawn(load::consume_stream(
                client,
                first,
                args.max_records(),
                until.clone(),
                false,
                done.clone(),
            ));
        }
        let tally = join(workers).await?;
        let elapsed = started.elapsed();
        drop(progress);
        return Ok(Run::new(
            server,
            repeat,
            tally.records,
            tally.messages,
            args.record_bytes,
            elapsed,
            &no_latency,
            0,
            &no_latency,
        ));
    }

    // Mixed: followers of the tail first, so they see every record the producers append.
    let (target, until) = watch::channel(u64::MAX);
    let mut followers = JoinSet::new();
    let delivered = Arc::new(AtomicU64::new(0));
    if args.workload == Workload::Mixed {
        let from = load::end_offset(clients[0].clone()).await?;
        for _ in 0..args.followers {
            let client = load::connect(addr).await?;
            followers.spawn(load::consume_stream(
                client,
                from,
                args.max_records(),
                until.clone(),
                true,
                delivered.clone(),
            ));
        }
        // Let every follower's stream open before the first append.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let limit = args.limit();
    let start = now_ns() + 1_000_000;
    let rate = args.rate.map(|r| (r / shape.records()).max(1));
    let (sources, pacer) = schedule::sources(args.workers(), limit, rate, start);
    let total = match limit {
        Limit::Requests(n) => Some(n * shape.records()),
        Limit::Duration(_) => None,
    };
    let duration = match limit {
        Limit::Duration(d) => Some(d),
        Limit::Requests(_) => None,
    };
    let progress = Progress::start(server, done.clone(), total, duration);
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for (client, source) in worker_clients.zip(sources) {
        let done = done.clone();
        match args.workload {
            Workload::ProduceUnary => workers.spawn(load::produce_unary(client, source, shape, done)),
            _ => workers.spawn(load::produce_stream(client, source, shape, done)),
        };
    }
    let produced = join(workers).await;
    let elapsed = started.elapsed();
    if let Some(pacer) = pacer {
        pacer.join().map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    }
    let produced = produced?;
    drop(progress);

    let mut delivery = Tally::empty();
    if args.workload == Workload::Mixed {
        // Followers stop once they have every acknowledged record; a follower that is
        // missing records for 10 s fails the run instead of waiting forever.
        let _ = target.send(produced.records);
        delivery = tokio::time::timeout(Duration::from_secs(10), join(followers))
            .await
            .context("followers did not receive every record within 10 s")??;
    }
    drop(until);
    Ok(Run::new(
        server,
        repeat,
        produced.records,
        produced.messages,
        args.record_bytes,
        elapsed,
        &produced.latency,
        delivery.records,
        &delivery.latency,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
