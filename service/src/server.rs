//! Hosting: the log service with health and reflection on one listener, and a graceful stop.
//!
//! Health (`grpc.health.v1`) reports SERVING for the server (`""`) and for `log.v1.Log` from
//! the start (the log is open before the server exists), and NOT_SERVING as soon as the
//! shutdown signal fires. Shutting down then goes in order: stop accepting connections,
//! end followers and stop reading produce streams (both end with UNAVAILABLE, after every
//! append already taken is answered), wait for every in-flight call, and close the log,
//! which finishes queued appends and syncs.

use std::{future::Future, time::Duration};

use ringlog_engine::Log;
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
};
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::{
    proto::{self, log_server::LogServer},
    service::{LogService, message_bytes_max},
};

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
    shutdown_grace: Duration,
}

impl Server {
    /// A server for `log`.
    pub fn new(log: Log) -> Server {
        Server { log, shutdown_grace: Duration::from_secs(30) }
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
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<LogServer<LogService>>().await;

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let (stop, stop_rx) = watch::channel(false);
        let limit = message_bytes_max(log.config().record_bytes_max);
        let log_service = LogServer::new(LogService::new(log.clone(), stop_rx))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);

        let addr = listener.local_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        info!(addr = %addr, dir = %log.dir().display(), backend = log.backend(),
              next_offset = log.next_offset(), "serving");
        let (signalled, signalled_rx) = oneshot::channel::<()>();
        let stopping = async move {
            shutdown.await;
            let _ = signalled.send(());
            info!("shutting down: no new connections; finishing in-flight calls");
            health.set_service_status("", ServingStatus::NotServing).await;
            health.set_not_serving::<LogServer<LogService>>().await;
            let _ = stop.send(true);
        };
        let serving = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(log_service)
            .serve_with_incoming_shutdown(incoming, stopping);
        let grace = self.shutdown_grace;
        let grace_over = async move {
            match signalled_rx.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending().await,
            }
        };
        let served = tokio::select! {
            served = serving => served,
            () = grace_over => {
                warn!(?grace, "calls still open after the shutdown grace period; closing the log anyway");
                Ok(())
            }
        };

        // Close even when serving failed, so that queued appends are finished and synced.
        let closing = log.clone();
        let closed = tokio::task::spawn_blocking(move || closing.close())
            .await
            .unwrap_or(Err(ringlog_engine::Error::Closed));
        served?;
        closed?;
        info!(next_offset = log.next_offset(), "log closed");
        Ok(())
    }
}
