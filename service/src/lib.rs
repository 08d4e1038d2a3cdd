//! ringlog's gRPC service: the `log.v1.Log` API over a [`ringlog_engine::Log`], with
//! `grpc.health.v1` health checks and server reflection, and the configuration of the
//! `ringlog` binary.
//!
//! The wire API is `proto/log/v1/log.proto`, compatible with the book's `log.v1`: Produce,
//! Consume, ConsumeStream (follows the tail) and ProduceStream (pipelined), with batching
//! through added fields. Engine errors map to gRPC statuses in one place (the `status`
//! module); see the proto for the codes.
//!
//! Security and operations are options of the [`Server`]: TLS and mutual TLS
//! ([`TlsConfig`]), authorization of produce and consume by the client certificate's subject
//! ([`Acl`], subject rule in [`subject`]), and Prometheus metrics at `/metrics`
//! ([`Server::metrics_listener`]), and limits against clients that misbehave
//! ([`ServerLimits`]: connections, streams per connection, what one call may make the server
//! buffer, keepalives). Every call runs in a tracing span `rpc` with its method,
//! peer, subject, status code and latency. [`certs`] makes certificates for trying it out.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ringlog_engine::{Config, Log};
//! use ringlog_service::{Server, proto::{ConsumeRequest, ProduceRequest, Record, log_client::LogClient}};
//!
//! let log = Log::open("./ringlog-data", Config::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(Server::new(log).serve(listener, async { let _ = stopped.await; }));
//!
//! let mut client = LogClient::connect(format!("http://{addr}")).await?;
//! let record = Record { value: "hello".into(), ..Record::default() };
//! let offset = client.produce(ProduceRequest { record: Some(record), ..Default::default() }).await?.into_inner().offset;
//! let read = client.consume(ConsumeRequest { offset, ..Default::default() }).await?.into_inner();
//! assert_eq!(read.record.unwrap().value, "hello");
//!
//! let _ = stop.send(());
//! server.await??; // graceful: in-flight calls finish, then the log is closed
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod acl;
mod admin;
mod auth;
pub mod certs;
pub mod cluster;
mod codec;
pub mod config;
mod connections;
mod metrics;
pub mod proto;
pub mod retention;
mod rpc;
mod server;
mod service;
mod status;
pub mod tls;

pub use acl::{Acl, Action};
pub use auth::subject;
pub use server::{ServeError, Server, ServerLimits, TCP_KEEPALIVE_PROBE_INTERVAL, TCP_KEEPALIVE_PROBES};
pub use service::{Limits, LogService, message_bytes_max};
pub use status::{DOMAIN, LOCALE, REASON_OUT_OF_RANGE, is_not_written};
pub use tls::TlsConfig;
