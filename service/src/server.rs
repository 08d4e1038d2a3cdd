//! Hosting: the log service with health and reflection on one listener, and a graceful stop.
//!
//! Health (`grpc.health.v1`) reports SERVING for the server (`""`) and for `log.v1.Log` from
//! the start (the log is open before the server exists), and NOT_SERVING as soon as the
//! shutdown signal fires. Shutting down then goes in order: stop accepting connections,
//! end followers and stop reading produce streams (both end with UNAVAILABLE, after every
//! append already taken is answered), wait for every in-flight call, and close the log,
//! which finishes queued appends and syncs.
//!
//! The server keeps to [`ServerLimits`]: connections, streams per connection,
//! HTTP/2 flow-control windows and keepalives (what each bounds is in `docs/service.md`,
//! "Limits").

use std::{future::Future, sync::Arc, time::Duration};

use ringlog_engine::Log;
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
};
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::{
    acl::Acl,
    admin::AdminService,
    auth::Policy,
    cluster::Replica,
    connections,
    metrics::{self, Metrics},
    proto::{self, admin::cluster_server::ClusterServer, log_server::LogServer},
    retention::RetentionPolicy,
    rpc::RpcLayer,
    service::{LogService, Role, message_bytes_max},
    tls::TlsConfig,
};

/// The server's limits against clients that misbehave: how many connections, how many calls
/// each, how much one call may make the server buffer, and how dead peers are found. The
/// defaults serve a single node with no configuration; `docs/service.md` ("Limits") says what
/// each one bounds and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most connections open at a time; further ones wait in the listen backlog until one
    /// closes. Lowered at start to what the open-file limit leaves room for.
    pub max_connections: usize,
    /// Most concurrent calls (HTTP/2 streams) on one connection
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`); a client's further calls wait for one to end.
    pub max_streams_per_connection: u32,
    /// HTTP/2 receive window of each call: what a client may send before the server reads it.
    pub stream_window_bytes: u32,
    /// HTTP/2 receive window of a connection, shared by its calls.
    pub connection_window_bytes: u32,
    /// Most value bytes one ProduceStream may have appended but not yet answered (plus the
    /// one request that crosses it); past that the server stops reading the stream.
    pub produce_in_flight_bytes: usize,
    /// How often an HTTP/2 PING checks the peer (`None`: never).
    pub http2_keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    pub http2_keepalive_timeout: Duration,
    /// How long a connection is idle before TCP keepalive probes start (`None`: no probes).
    /// Probes then go every [`TCP_KEEPALIVE_PROBE_INTERVAL`], and
    /// [`TCP_KEEPALIVE_PROBES`] unanswered ones close the connection.
    pub tcp_keepalive: Option<Duration>,
}

/// Time between TCP keepalive probes, once they start.
pub const TCP_KEEPALIVE_PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered TCP keepalive probes after which the kernel closes the connection.
pub const TCP_KEEPALIVE_PROBES: u32 = 3;
/// Open files `max_connections` leaves to the rest of the server (segments, peers, metrics).
const FD_RESERVE: usize = 256;

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 10_000,
            max_streams_per_connection: 1024,
            // hyper's own defaults, written down so that an upgrade cannot move the bound.
            stream_window_bytes: 1 << 20,
            connection_window_bytes: 1 << 20,
            http2_keepalive_interval: Some(Duration::from_secs(30)),
            http2_keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Some(Duration::from_secs(60)),
            produce_in_flight_bytes: 16 << 20,
        }
    }
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The gRPC transport failed.
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptors.
    #[error("building server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Closing the log after the server stopped failed.
    #[error("closing the log: {0}")]
    Close(#[from] ringlog_engine::Error),
    /// The metrics endpoint failed.
    #[error("serving metrics: {0}")]
    Metrics(#[source] std::io::Error),
    /// The Raft node stopped for good (a storage error, a panic in its core): the process
    /// should exit and be restarted.
    #[error("the raft node stopped: {0}")]
    RaftStopped(String),
    /// Stopping the Raft node (and closing its log) failed.
    #[error("stopping the raft node: {0}")]
    Cluster(#[from] ringlog_cluster::Error),
}

/// The gRPC server of one log.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use ringlog_engine::{Config, Log};
/// use ringlog_service::Server;
///
/// let log = Log::open("./ringlog-data", Config::default())?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8400").await?;
/// Server::new(log).serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    log: Log,
    /// A cluster node's Raft side; `None` for a single node.
    replica: Option<Arc<Replica>>,
    /// A single node's id and the address clients dial, for GetServers.
    identity: (u64, Option<String>),
    shutdown_grace: Duration,
    tls: Option<TlsConfig>,
    acl: Option<Acl>,
    retention: Option<RetentionPolicy>,
    metrics_listener: Option<TcpListener>,
    limits: ServerLimits,
}

impl Server {
    /// A server for `log`.
    pub fn new(log: Log) -> Server {
        Server {
            log,
            replica: None,
            identity: (1, None),
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            acl: None,
            retention: None,
            metrics_listener: None,
            limits: ServerLimits::default(),
        }
    }

    /// A server for a node of a cluster: log.v1 over the node's log, produces through Raft
    /// (see [`crate::cluster`]), and the node's `raft.v1` service on the same port. Stopping
    /// the server stops the node; a fatal error of the node stops the server with
    /// [`ServeError::RaftStopped`].
    pub fn replica(replica: Replica) -> Server {
        let log = replica.node().log().clone();
        Server { replica: Some(Arc::new(replica)), ..Server::new(log) }
    }

    /// How a single node describes itself in GetServers: its id (default 1) and the
    /// address clients dial (default: the address it listens on).
    pub fn identity(mut self, id: u64, advertise_addr: Option<String>) -> Server {
        self.identity = (id, advertise_addr);
        self
    }

    /// Serves over TLS; with a client CA in `tls`, every call needs a client certificate
    /// that chains to it (mutual TLS).
    pub fn tls(mut self, tls: TlsConfig) -> Server {
        self.tls = Some(tls);
        self
    }

    /// Authorizes every Produce and Consume call by `acl`, keyed on the client
    /// certificate's subject: what it does not allow is `PERMISSION_DENIED`.
    pub fn acl(mut self, acl: Acl) -> Server {
        self.acl = Some(acl);
        self
    }

    /// Applies `policy` while the server runs (see [`crate::retention`]; on a cluster node,
    /// through Raft).
    pub fn retention(mut self, policy: RetentionPolicy) -> Server {
        self.retention = Some(policy);
        self
    }

    /// Serves Prometheus metrics at `/metrics` on `listener` while the server runs.
    pub fn metrics_listener(mut self, listener: TcpListener) -> Server {
        self.metrics_listener = Some(listener);
        self
    }

    /// The server's limits (default: [`ServerLimits::default`]).
    pub fn limits(mut self, limits: ServerLimits) -> Server {
        self.limits = limits;
        self
    }

    /// How long a shutdown waits for open calls (a health `Watch`, a client that stopped
    /// reading) before it closes the log anyway. Default 30 s. Appends already handed to
    /// the log are finished by the close either way.
    pub fn shutdown_grace(mut self, grace: Duration) -> Server {
        self.shutdown_grace = grace;
        self
    }

    /// Serves on `listener` until `shutdown` resolves, then stops gracefully (see the
    /// module docs) and closes the log. Returns once the log is closed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let log = self.log;
        let replica = self.replica;
        let (health, health_service) = tonic_health::server::health_reporter();
        match &replica {
            None => health.set_serving::<LogServer<LogService>>().await,
            // A node serves log.v1 while it knows a leader (reads would be stale, writes fail).
            Some(_) => health.set_not_serving::<LogServer<LogService>>().await,
        }

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::new(log.clone(), replica.as_ref().map(|r| r.node())));
        let metrics_task = self.metrics_listener.map(|listener| {
            let mut stop_rx = stop_rx.clone();
            let stopping = async move {
                let _ = stop_rx.wait_for(|stopping| *stopping).await;
            };
            tokio::spawn(metrics::serve(listener, metrics.clone(), stopping))
        });
        let retention_task = self.retention.map(|policy| {
            tokio::spawn(crate::retention::run(log.clone(), replica.clone(), policy, stop_rx.clone()))
        });
        let policy = Policy {
            client_cert_required: self.tls.as_ref().is_some_and(TlsConfig::client_cert_required),
            acl: self.acl,
        };
        if policy.acl.is_some() && !policy.client_cert_required {
            warn!("an ACL is set without mutual TLS: clients have no subject, so only `*` rules apply");
        }
        if replica.is_some() && policy.client_cert_required && policy.acl.is_none() {
            warn!(
                "a cluster with mutual TLS and no ACL: any client whose certificate chains to the CA may \
                 call the Raft service; an ACL with `replicate` for the nodes' subjects limits it to them"
            );
        }
        let limit = message_bytes_max(log.config().record_bytes_max);
        let addr = listener.local_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let role = match &replica {
            Some(replica) => {
                tokio::spawn(report_leader(
                    replica.clone(),
                    health.clone(),
                    metrics.clone(),
                    stop_rx.clone(),
                ));
                Role::Replica(replica.clone())
            }
            None => {
                let (id, advertised) = &self.identity;
                let rpc_addr = advertised.clone().unwrap_or_else(|| addr.clone());
                Role::Single(proto::Server { id: id.to_string(), rpc_addr, is_leader: true })
            }
        };
        let admin_service = ClusterServer::new(AdminService::new(log.clone(), role.clone()));
        let mut rpcs = LogService::new(log.clone(), stop_rx, metrics.clone(), role);
        rpcs.limits.produce_in_flight_bytes_max = self.limits.produce_in_flight_bytes;
        let log_service =
            LogServer::new(rpcs).max_decoding_message_size(limit).max_encoding_message_size(limit);

        let limits = self.limits;
        let max_connections = match connections::fd_headroom(FD_RESERVE) {
            Some(room) if room < limits.max_connections => {
                warn!(
                    max_connections = limits.max_connections,
                    open_files_allow = room,
                    "the open-file limit (ulimit -n) leaves room for fewer connections than max-connections: capping at {room}"
                );
                room.max(1)
            }
            _ => limits.max_connections,
        };
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(limits.tcp_keepalive)
            .with_keepalive_interval(limits.tcp_keepalive.map(|_| TCP_KEEPALIVE_PROBE_INTERVAL))
            .with_keepalive_retries(limits.tcp_keepalive.map(|_| TCP_KEEPALIVE_PROBES));
        let incoming = connections::limit(incoming, max_connections);
        let security = match (&self.tls, &policy.acl) {
            (None, _) => "plaintext",
            (Some(tls), _) if !tls.client_cert_required() => "tls",
            (Some(_), None) => "mutual tls",
            (Some(_), Some(_)) => "mutual tls + acl",
        };
        let durability = format!("{:?}", log.config().durability);
        info!(addr = %addr, dir = %log.dir().display(), backend = log.backend(), durability = %durability,
              lowest_offset = log.lowest_offset(), next_offset = log.next_offset(),
              durable_offset = log.durable_offset(), security,
              node_id = replica.as_ref().map(|r| r.node().id()), max_connections,
              max_streams_per_connection = limits.max_streams_per_connection, "serving");
        let (signalled, signalled_rx) = oneshot::channel::<()>();
        let stopping = async move {
            shutdown.await;
            let _ = signalled.send(());
            info!("shutting down: no new connections; finishing in-flight calls");
            health.set_service_status("", ServingStatus::NotServing).await;
            health.set_not_serving::<LogServer<LogService>>().await;
            let _ = stop.send(true);
        };
        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(limits.max_streams_per_connection)
            .initial_stream_window_size(limits.stream_window_bytes)
            .initial_connection_window_size(limits.connection_window_bytes)
            .http2_keepalive_interval(limits.http2_keepalive_interval)
            .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout));
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.server_config())?;
        }
        let serving = builder
            .layer(RpcLayer::new(policy, metrics))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(log_service)
            .add_service(admin_service)
            .add_optional_service(replica.as_ref().map(|replica| replica.node().service()))
            .serve_with_incoming_shutdown(incoming, stopping);
        let node_stopped = async {
            match &replica {
                Some(replica) => replica.node().fatal().await.to_string(),
                None => std::future::pending().await,
            }
        };
        let grace = self.shutdown_grace;
        let grace_over = async move {
            match signalled_rx.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending().await,
            }
        };
        let served = tokio::select! {
            served = serving => served.map_err(ServeError::from),
            () = grace_over => {
                warn!(?grace, "calls still open after the shutdown grace period; closing the log anyway");
                Ok(())
            }
            reason = node_stopped => Err(ServeError::RaftStopped(reason)),
        };

        if let Some(task) = retention_task {
            // It stops at the signal; a check under way finishes first.
            let _ = task.await;
        }
        // Close even when serving failed, so that queued appends are finished and synced.
        let closed = match &replica {
            Some(replica) => replica.shutdown().await.map_err(ServeError::from),
            None => {
                let closing = log.clone();
                tokio::task::spawn_blocking(move || closing.close())
                    .await
                    .unwrap_or(Err(ringlog_engine::Error::Closed))
                    .map_err(ServeError::from)
            }
        };
        let metrics_served = match metrics_task {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        };
        served?;
        closed?;
        metrics_served.map_err(ServeError::Metrics)?;
        info!(next_offset = log.next_offset(), "log closed");
        Ok(())
    }
}

/// Keeps `log.v1.Log`'s health at SERVING while the node knows a leader and NOT_SERVING
/// while it does not, until the server starts shutting down.
async fn report_leader(
    replica: Arc<Replica>,
    health: tonic_health::server::HealthReporter,
    counters: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    use openraft::async_runtime::WatchReceiver;
    let mut metrics = replica.node().raft().metrics();
    let mut reported = None;
    let mut last_leader = None;
    loop {
        let leader = metrics.borrow_watched().current_leader;
        if leader != last_leader {
            counters.leader_changes.inc();
            last_leader = leader;
        }
        if reported != Some(leader.is_some()) {
            match leader {
                Some(leader) => {
                    info!(leader, "leader known: serving log.v1");
                    health.set_serving::<LogServer<LogService>>().await;
                }
                None => {
                    warn!("no leader known: log.v1 reports NOT_SERVING until one is elected");
                    health.set_not_serving::<LogServer<LogService>>().await;
                }
            }
            reported = Some(leader.is_some());
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
    }
}
