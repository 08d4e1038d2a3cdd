//! The server side of the Raft transport: `raft.v1.Raft` handing each call to the node's
//! [`openraft::Raft`].
//!
//! [`RaftService`] is a tonic service; [`RaftService::into_server`] wraps it for
//! `tonic::transport::Server::add_service`, so the service crate serves it on the same port as
//! `log.v1`. Each call is admitted only if it names this cluster and this node, and if the
//! node's fault switch does not cut the sender off ([`Faults`]); then its payload is decoded
//! with the crate's codecs and handed to openraft.
//!
//! Replication arrives on a `StreamAppend` stream (pipelined: the next request comes before
//! the answer to the last), handed to openraft's `Raft::stream_append`, which answers each
//! request in order once its entries are appended.
//!
//! A snapshot arrives as a stream: a start message (vote, metadata, size), then the data in
//! chunks. The receiver checks the declared size against its limit and against the space free
//! on its disk before it takes any data, writes the log's parts to staged files as they arrive
//! (`snapshot::Receiver`, so memory stays bounded), and refuses a stream that sends more or
//! less than declared.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};

use openraft::async_runtime::WatchReceiver;
use ringlog_engine::Log;
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::network::Faults;
use crate::node::Raft;
use crate::proto::raft_server::{Raft as RaftRpc, RaftServer};
use crate::proto::{
    Header, RaftReply, RaftRequest, SnapshotChunk, StatusReply, StatusRequest, snapshot_chunk,
};
use crate::snapshot::{Receiver, SnapshotStats};
use crate::state_machine::Snapshot;
use crate::types::NodeId;

/// The `raft.v1.Raft` service of one node: see the module docs.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    id: NodeId,
    cluster: Arc<str>,
    faults: Faults,
    log: Log,
    snapshot_bytes_max: u64,
    message_bytes_max: usize,
    snapshots: Arc<SnapshotStats>,
}

impl RaftService {
    pub(crate) fn new(
        raft: Raft,
        log: Log,
        faults: Faults,
        cluster: Arc<str>,
        snapshot_bytes_max: u64,
        message_bytes_max: usize,
        snapshots: Arc<SnapshotStats>,
    ) -> Self {
        let id = *raft.node_id();
        RaftService { raft, id, cluster, faults, log, snapshot_bytes_max, message_bytes_max, snapshots }
    }

    /// The service, ready for `tonic::transport::Server::add_service`, with message limits
    /// large enough for openraft's largest append.
    pub fn into_server(self) -> RaftServer<Self> {
        let limit = self.message_bytes_max;
        RaftServer::new(self).max_decoding_message_size(limit).max_encoding_message_size(limit)
    }

    /// Admits a call from the sender `header` names, or says why not.
    fn admit(&self, header: Option<&Header>) -> Result<NodeId, Status> {
        let Some(h) = header else {
            return Err(Status::invalid_argument("raft request without a header"));
        };
        if *h.cluster != *self.cluster {
            return Err(Status::failed_precondition(format!(
                "this node is in cluster {:?}, not {:?}",
                self.cluster, h.cluster
            )));
        }
        if h.to != self.id {
            return Err(Status::failed_precondition(format!("this is node {}, not node {}", self.id, h.to)));
        }
        if self.faults.is_cut(h.from) {
            return Err(Status::unavailable(format!(
                "node {} is cut off from node {} (fault switch)",
                self.id, h.from
            )));
        }
        Ok(h.from)
    }

    fn stopped(&self, e: impl std::fmt::Display) -> Status {
        Status::unavailable(format!("raft node {} is not running: {e}", self.id))
    }

    /// Whether this node's store holds nothing at all: no vote, no entry, nothing purged.
    fn pristine(&self) -> Result<bool, Status> {
        let meta = self.log.meta();
        let last =
            self.log.last_entry_id().map_err(|e| Status::unavailable(format!("reading the log: {e}")))?;
        Ok(meta.vote.is_none() && meta.purged.is_none() && last.is_none())
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A stream that does not add up is the sender's fault; a disk that cannot take it is ours.
fn snapshot_error(e: &std::io::Error) -> Status {
    match e.kind() {
        std::io::ErrorKind::InvalidData => invalid(e),
        _ => Status::unavailable(format!("staging the snapshot: {e}")),
    }
}

/// Free disk a snapshot must leave, so that the log can still write after the install (and
/// other writers get a little room while it arrives).
const SNAPSHOT_DISK_HEADROOM: u64 = 64 << 20;

/// Bytes an unprivileged writer may still use on the filesystem of `dir`.
fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn reply(payload: bytes::Bytes) -> Response<RaftReply> {
    Response::new(RaftReply { payload })
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        self.admit(request.header.as_ref())?;
        let vote = codec::decode_vote_request(&request.payload).map_err(invalid)?;
        let resp = self.raft.vote(vote).await.map_err(|e| self.stopped(e))?;
        Ok(reply(codec::encode_vote_response(&resp)))
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        self.admit(request.header.as_ref())?;
        let vote = codec::decode_vote_request(&request.payload).map_err(invalid)?;
        let resp = self.raft.pre_vote(vote).await.map_err(|e| self.stopped(e))?;
        Ok(reply(codec::encode_vote_response(&resp)))
    }

    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        self.admit(request.header.as_ref())?;
        let append = codec::decode_append_request(&request.payload).map_err(invalid)?;
        let resp = self.raft.append_entries(append).await.map_err(|e| self.stopped(e))?;
        Ok(reply(codec::encode_append_response(&resp)))
    }

    type StreamAppendStream = Pin<Box<dyn Stream<Item = Result<RaftReply, Status>> + Send + 'static>>;

    /// Hands the stream's requests to openraft as they arrive, and answers each once it is
    /// appended (durable as the durability setting says), in order. A request that is not
    /// admitted or does not decode ends the stream with its status after the answers to
    /// the requests before it.
    async fn stream_append(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let refused: Arc<Mutex<Option<Status>>> = Arc::default();
        let requests = futures_util::stream::unfold(
            (request.into_inner(), self.clone(), refused.clone()),
            |(mut incoming, service, refused)| async move {
                let admitted = match incoming.message().await {
                    Ok(None) => return None,
                    Ok(Some(request)) => service
                        .admit(request.header.as_ref())
                        .and_then(|_| codec::decode_append_request(&request.payload).map_err(invalid)),
                    Err(status) => Err(status),
                };
                match admitted {
                    Ok(append) => Some((append, (incoming, service, refused))),
                    Err(status) => {
                        *refused.lock().unwrap() = Some(status);
                        None
                    }
                }
            },
        );
        let id = self.id;
        let answers = self.raft.stream_append(requests).map(move |answer| match answer {
            Ok(result) => Ok(RaftReply { payload: codec::encode_stream_append_result(&result) }),
            Err(fatal) => Err(Status::unavailable(format!("raft node {id} is not running: {fatal}"))),
        });
        let refusal = futures_util::stream::once(async move { refused.lock().unwrap().take() })
            .filter_map(|refused| std::future::ready(refused.map(Err)));
        Ok(Response::new(Box::pin(answers.chain(refusal))))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(invalid("empty snapshot stream"));
        };
        let Some(snapshot_chunk::Kind::Start(start)) = first.kind else {
            return Err(invalid("a snapshot stream must begin with its start message"));
        };
        let from = self.admit(start.header.as_ref())?;
        let vote = codec::decode_vote(&start.vote).map_err(invalid)?;
        let meta = codec::decode_snapshot_meta(&start.meta).map_err(invalid)?;
        if start.data_bytes > self.snapshot_bytes_max {
            return Err(invalid(format!(
                "a snapshot of {} bytes exceeds this node's limit of {}",
                start.data_bytes, self.snapshot_bytes_max
            )));
        }
        let free = free_bytes(self.log.dir()).map_err(|e| snapshot_error(&e))?;
        if start.data_bytes.saturating_add(SNAPSHOT_DISK_HEADROOM) > free {
            return Err(Status::resource_exhausted(format!(
                "a snapshot of {} bytes does not fit in the {free} bytes free on the disk of {} (with {SNAPSHOT_DISK_HEADROOM} to spare for the log's next writes)",
                start.data_bytes,
                self.log.dir().display()
            )));
        }
        let mut receiver = Receiver::new(self.log.clone(), start.data_bytes);
        while let Some(message) = stream.message().await? {
            // The switch may be thrown while the stream runs.
            self.admit(start.header.as_ref())?;
            let Some(snapshot_chunk::Kind::Chunk(chunk)) = message.kind else {
                return Err(invalid("a second start message in a snapshot stream"));
            };
            receiver.push(chunk).await.map_err(|e| snapshot_error(&e))?;
        }
        let data = receiver.finish().map_err(|e| snapshot_error(&e))?;
        tracing::info!(node = self.id, from, %meta, bytes = start.data_bytes, "installing a snapshot");
        let snapshot = Snapshot { meta, snapshot: data };
        self.snapshots.count_received(start.data_bytes);
        let resp = self.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| self.stopped(e))?;
        Ok(reply(codec::encode_vote(&resp.vote)))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        self.admit(request.get_ref().header.as_ref())?;
        let membership = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let stored = &metrics.membership_config;
            stored.log_id().is_some().then(|| codec::encode_membership(stored.membership()))
        };
        Ok(Response::new(StatusReply {
            pristine: self.pristine()?,
            membership: membership.unwrap_or_default(),
        }))
    }
}
