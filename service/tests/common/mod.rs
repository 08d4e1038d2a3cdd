//! A real server on a loopback port over a log in a temporary directory, and helpers.

#![allow(dead_code, missing_docs)]

use std::{net::SocketAddr, path::Path};

use bytes::Bytes;
use ringlog_engine::{Backend, Config, Durability, Log};
use ringlog_service::{
    ServeError, Server,
    proto::{ProduceRequest, Record, log_client::LogClient},
};
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, Endpoint};

/// The configuration most tests use: fast (no fsync) and portable.
pub fn config() -> Config {
    Config { durability: Durability::None, backend: Backend::Pwrite, ..Config::default() }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub log: Log,
    pub dir: Option<TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// A server over a new log in a temporary directory.
    pub async fn start(config: Config) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = TestServer::start_in(dir.path(), config).await;
        server.dir = Some(dir);
        server
    }

    /// A server over the log in `dir`.
    pub async fn start_in(dir: &Path, config: Config) -> TestServer {
        let log = Log::open(dir, config).expect("open log");
        TestServer::serve(log).await
    }

    /// A server over an open log.
    pub async fn serve(log: Log) -> TestServer {
        TestServer::serve_with(log, |server| server).await
    }

    /// A server over a new log in a temporary directory, set up by `configure` (TLS, ACL, ...).
    pub async fn start_with(configure: impl FnOnce(Server) -> Server) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), config()).expect("open log");
        let mut server = TestServer::serve_with(log, configure).await;
        server.dir = Some(dir);
        server
    }

    /// A server over an open log, set up by `configure`.
    pub async fn serve_with(log: Log, configure: impl FnOnce(Server) -> Server) -> TestServer {
        // Bound before serving: clients can connect as soon as this returns.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(configure(Server::new(log.clone())).serve(listener, async {
            let _ = stopped.await;
        }));
        TestServer { addr, log, dir: None, stop: Some(stop), task: Some(task) }
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.expect("connect")
    }

    pub async fn client(&self) -> LogClient<Channel> {
        LogClient::new(self.channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Signals a graceful shutdown without waiting for it.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully and returns how serving ended (after the log is closed).
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.signal_stop();
        self.task.take().expect("running").await.expect("server task panicked")
    }
}

pub fn record(value: impl Into<Bytes>) -> Record {
    Record { value: value.into(), ..Record::default() }
}

pub fn produce_request(value: impl Into<Bytes>) -> ProduceRequest {
    ProduceRequest { record: Some(record(value)), records: Vec::new() }
}

pub fn batch_request(values: &[&str]) -> ProduceRequest {
    ProduceRequest {
        record: None,
        records: values.iter().map(|v| record(Bytes::copy_from_slice(v.as_bytes()))).collect(),
    }
}
