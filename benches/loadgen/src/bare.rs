//! The bare server: `log.v1.Log` over tonic with no storage, the baseline that
//! `ringlog-bench` divides by. Produce answers with incrementing offsets; ProduceStream answers each
//! request as it is read; ConsumeStream sends generated records (a shared value of the
//! configured size) as fast as HTTP/2 flow control takes them. Same generated code, codec,
//! message limits and transport settings as the real server, so the difference between the
//! two is the service and the engine.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use ringlog_service::{
    message_bytes_max,
    proto::{
        self, ConsumeRequest, ConsumeResponse, ProduceRequest, ProduceResponse, Record,
        log_server::{Log as LogRpc, LogServer},
    },
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming, transport::server::TcpIncoming};

/// Most records in one batched ConsumeResponse, as the real server caps `max_records`.
const CONSUME_RECORDS_MAX: u64 = 1000;

/// A storage-free `log.v1.Log`.
#[derive(Clone, Debug)]
pub struct BareService {
    next: Arc<AtomicU64>,
    value: Bytes,
}

impl BareService {
    /// A bare service whose ConsumeStream sends values of `record_bytes` bytes.
    pub fn new(record_bytes: usize) -> BareService {
        BareService { next: Arc::new(AtomicU64::new(0)), value: Bytes::from(vec![0u8; record_bytes]) }
    }

    fn assign(&self, request: &ProduceRequest) -> Result<ProduceResponse, Status> {
        let count = u64::from(request.record.is_some()) + request.records.len() as u64;
        if count == 0 {
            return Err(Status::invalid_argument("a produce request needs a record"));
        }
        Ok(ProduceResponse { offset: self.next.fetch_add(count, Ordering::Relaxed), count })
    }

    fn record(&self, offset: u64) -> Record {
        Record { value: self.value.clone(), offset, timestamp_ms: 0 }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl LogRpc for BareService {
    async fn produce(&self, request: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        self.assign(request.get_ref()).map(Response::new)
    }

    async fn get_servers(
        &self,
        _request: Request<proto::GetServersRequest>,
    ) -> Result<Response<proto::GetServersResponse>, Status> {
        // One server, leading itself, as a single ringlog node answers.
        let me = proto::Server { id: "1".into(), rpc_addr: String::new(), is_leader: true };
        Ok(Response::new(proto::GetServersResponse { servers: vec![me] }))
    }

    async fn consume(&self, request: Request<ConsumeRequest>) -> Result<Response<ConsumeResponse>, Status> {
        Ok(Response::new(ConsumeResponse {
            record: Some(self.record(request.get_ref().offset)),
            records: vec![],
        }))
    }

    type ConsumeStreamStream = BoxStream<ConsumeResponse>;

    async fn consume_stream(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStreamStream>, Status> {
        let ConsumeRequest { offset, max_records } = request.into_inner();
        let this = self.clone();
        let batch = max_records.min(CONSUME_RECORDS_MAX);
        let stream = futures_util::stream::unfold(offset, move |next| {
            let message = if batch <= 1 {
                ConsumeResponse { record: Some(this.record(next)), records: vec![] }
            } else {
                ConsumeResponse {
                    record: None,
                    records: (next..next + batch).map(|o| this.record(o)).collect(),
                }
            };
            std::future::ready(Some((Ok(message), next + batch.max(1))))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type ProduceStreamStream = BoxStream<ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let this = self.clone();
        let answers = request.into_inner().map(move |request| this.assign(&request?));
        Ok(Response::new(Box::pin(answers)))
    }
}

/// Serves the bare service on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    record_bytes: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // The real server's limits for its default 1 MiB records.
    let limit = message_bytes_max(1 << 20);
    let service = LogServer::new(BareService::new(record_bytes))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Arguments of `ringlog-bench server`.
#[derive(Debug, clap::Args)]
pub struct BenchServerArgs {
    /// Address to listen on (loopback)
    #[arg(long, default_value = "127.0.0.1:8401", value_name = "HOST:PORT")]
    addr: std::net::SocketAddr,
    /// Serve `log.v1.Log` with no storage (the only kind there is; the flag says so)
    #[arg(long, required = true)]
    bare: bool,
    /// Bytes per generated ConsumeStream record
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
}

/// `ringlog-bench server --bare`: serves until SIGINT or SIGTERM.
pub async fn run_server(args: BenchServerArgs) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(args.addr).await.map_err(|e| anyhow::anyhow!("listening on {}: {e}", args.addr))?;
    eprintln!("bare log.v1 server (no storage) on {}", listener.local_addr()?);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    serve(listener, args.record_bytes, stop).await?;
    Ok(())
}
