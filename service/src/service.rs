//! The `log.v1.Log` RPCs over a [`Log`].
//!
//! Appends never block the runtime: a request's records are handed to the engine's
//! appender with [`Log::submit`] and the ticket is awaited. Reads are short `pread`s of
//! published records and run inline. Followers wait with [`Log::wait_for`], which the
//! appender wakes; nothing here polls.
//!
//! Every stream is bounded. ConsumeStream produces its next message only when the
//! transport asks for it, which it does only when HTTP/2 flow control lets the previous one
//! go out, so a slow consumer holds at most one message in memory (plus, when it asked for one record
//! per message, up to 64 KiB of records read ahead with one `pread`). ProduceStream keeps at
//! most [`Limits::produce_in_flight_max`] appends (and [`Limits::produce_in_flight_bytes_max`]
//! bytes, plus the one request that crosses it) appended but not yet answered; past that it
//! stops reading, which pushes back on the client through flow control. What one call can
//! make the server hold, whatever its client does, is in `docs/service.md` ("Limits").

use std::{collections::VecDeque, pin::Pin, sync::Arc, time::Instant};

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt, stream::FuturesOrdered};
use ringlog_engine::{Log, Record as EngineRecord};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, Span, debug};

use crate::{
    cluster::{Committed, FORWARDED, Replica},
    metrics::{Metrics, Open},
    proto::{
        ConsumeRequest, ConsumeResponse, GetServersRequest, GetServersResponse, ProduceRequest,
        ProduceResponse, Record, Server, log_server::Log as LogRpc,
    },
    status,
};

/// Bytes a gRPC message may carry beyond its records' values (framing, offsets, fields).
const MESSAGE_OVERHEAD_BYTES: usize = 64 << 10;
/// A follower sending one record per message reads up to this many records ahead with one
/// `pread` (and at most [`READ_AHEAD_BYTES`] of frames), instead of one `pread` per record.
const READ_AHEAD_RECORDS: usize = 256;
/// Frame bytes of a follower's read-ahead: what a slow one-record-per-message consumer holds.
const READ_AHEAD_BYTES: usize = 64 << 10;
/// The largest batch of records a produce request may carry, in value bytes (when the
/// record limit is smaller).
const BATCH_BYTES_MIN: usize = 4 << 20;

/// The largest gRPC message (in either direction) for a log whose records are at most
/// `record_bytes_max` bytes: room for one full record, or a 4 MiB batch of small ones.
pub fn message_bytes_max(record_bytes_max: u32) -> usize {
    (record_bytes_max as usize).max(BATCH_BYTES_MIN) + MESSAGE_OVERHEAD_BYTES
}

/// How long a lagging follower waits for a record the leader already serves.
const FOLLOWER_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Most ProduceStream requests handed to the engine (or to Raft) as one batch. Only requests
/// already decoded are taken, so a larger bound never makes a request wait; it makes a
/// backlog cheaper. On a cluster every batch costs a Raft round (an append on each node, an
/// answer from each follower, a commit), which is why 1024 rather than 64: 3.7 times the
/// records/s of a 3-node cluster for 100 B records, and a little more on a single node
/// (`docs/benchmarks.md`, "Cluster").
const COALESCE_REQUESTS_MAX: usize = 1024;

/// The bounds the service keeps to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The log's `record_bytes_max`: larger records are `INVALID_ARGUMENT`.
    pub record_bytes_max: u32,
    /// Most records in one ConsumeResponse (`max_records` is capped at this).
    pub consume_records_max: usize,
    /// Most frame bytes read for one batched ConsumeResponse (one record is always sent).
    pub consume_bytes_max: usize,
    /// Most requests of one ProduceStream appended but not yet answered.
    pub produce_in_flight_max: usize,
    /// Most value bytes of one ProduceStream appended but not yet answered (one request is
    /// always let through).
    pub produce_in_flight_bytes_max: usize,
}

impl Limits {
    /// The limits for `log`.
    pub fn for_log(log: &Log) -> Limits {
        let record_bytes_max = log.config().record_bytes_max;
        Limits {
            record_bytes_max,
            consume_records_max: 1000,
            consume_bytes_max: message_bytes_max(record_bytes_max) - MESSAGE_OVERHEAD_BYTES,
            produce_in_flight_max: 1024,
            produce_in_flight_bytes_max: 16 << 20,
        }
    }
}

/// The `log.v1.Log` service: the four RPC handlers over a [`Log`].
///
/// A [`Server`](crate::Server) builds its own; [`LogService::standalone`] is for calling the
/// handlers directly (the `request_handling` fuzz target does).
#[derive(Clone, Debug)]
pub struct LogService {
    log: Log,
    pub(crate) limits: Limits,
    /// Turns `true` when the server starts shutting down: streams stop taking new work.
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    /// How this server answers GetServers, and where produces go.
    role: Role,
}

/// A single node appends to its log; a cluster node produces through Raft.
#[derive(Clone, Debug)]
pub(crate) enum Role {
    /// A lone log: this server (its id and the address clients dial) leads itself.
    Single(Server),
    /// A node of a cluster.
    Replica(Arc<Replica>),
}

impl LogService {
    pub(crate) fn new(log: Log, stop: watch::Receiver<bool>, metrics: Arc<Metrics>, role: Role) -> Self {
        let limits = Limits::for_log(&log);
        LogService { log, limits, stop, metrics, role }
    }

    /// The service over `log` outside a server: nothing ever shuts it down, so streams end
    /// only when their client does (or the log is closed).
    pub fn standalone(log: Log) -> Self {
        // The sender is dropped at once, which `stopping` reads as "no shutdown will come".
        let metrics = Arc::new(Metrics::new(log.clone(), None));
        let me = Server { id: "1".into(), rpc_addr: String::new(), is_leader: true };
        LogService::new(log, watch::channel(false).1, metrics, Role::Single(me))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl LogRpc for LogService {
    async fn produce(&self, request: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED);
        let values = values(request.into_inner(), self.limits.record_bytes_max)?;
        let count = values.len() as u64;
        let submitted = Instant::now();
        let offset = append(&self.log, &self.role, values, forwarded).await?.await?;
        self.metrics.append_seconds.observe(submitted.elapsed().as_secs_f64());
        Ok(Response::new(ProduceResponse { offset, count }))
    }

    async fn get_servers(
        &self,
        _request: Request<GetServersRequest>,
    ) -> Result<Response<GetServersResponse>, Status> {
        let servers = match &self.role {
            Role::Single(me) => vec![me.clone()],
            Role::Replica(replica) => replica.servers(),
        };
        Ok(Response::new(GetServersResponse { servers }))
    }

    async fn consume(&self, request: Request<ConsumeRequest>) -> Result<Response<ConsumeResponse>, Status> {
        let request = request.into_inner();
        match read(&self.log, &self.limits, request.offset, request.max_records) {
            Err(status) if status::is_not_written(&status) => {
                // A follower may lag: an offset it lacks may be acknowledged already. Only the
                // leader can say; if it is, wait (bounded) for it here rather than call it
                // missing.
                if let Role::Replica(replica) = &self.role
                    && let Some(leader_readable) = replica.leader_readable_offset().await?
                    && request.offset < leader_readable
                {
                    let caught_up =
                        tokio::time::timeout(FOLLOWER_CATCH_UP, self.log.wait_for(request.offset)).await;
                    match caught_up {
                        Ok(waited) => waited.map_err(|e| status::from_engine(&e))?,
                        Err(_) => {
                            return Err(Status::unavailable(format!(
                                "offset {} is committed but this node has not caught up within {FOLLOWER_CATCH_UP:?}: retry, or ask another node",
                                request.offset
                            )));
                        }
                    };
                    let (response, _) = read(&self.log, &self.limits, request.offset, request.max_records)?;
                    return Ok(Response::new(response));
                }
                Err(status)
            }
            result => Ok(Response::new(result?.0)),
        }
    }

    type ConsumeStreamStream = BoxStream<ConsumeResponse>;

    async fn consume_stream(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStreamStream>, Status> {
        let request = request.into_inner();
        let lowest = self.log.lowest_offset();
        if request.offset < lowest {
            return Err(status::from_engine(&ringlog_engine::Error::OffsetBelowLowest {
                offset: request.offset,
                lowest,
            }));
        }
        debug!(offset = request.offset, max_records = request.max_records, "consumer follows");
        let follower = Follower {
            log: self.log.clone(),
            limits: self.limits,
            stop: self.stop.clone(),
            next: request.offset,
            max_records: request.max_records,
            ahead: VecDeque::new(),
            done: false,
            _open: Open::new(&self.metrics.followers),
        };
        let stream = futures_util::stream::unfold(follower, |mut follower| async move {
            let message = follower.next_message().await?;
            Some((message, follower))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type ProduceStreamStream = BoxStream<ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        // Answers wait here for the transport; a full channel stops the pump from reading.
        let (answers, rx) = mpsc::channel(64);
        let pump = ProducePump {
            log: self.log.clone(),
            role: self.role.clone(),
            limits: self.limits,
            stop: self.stop.clone(),
            requests: request.into_inner(),
            answers,
            metrics: self.metrics.clone(),
            _open: Open::new(&self.metrics.produce_streams),
        };
        tokio::spawn(pump.run().instrument(Span::current()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Hands `values` to the log (a single node) or to Raft (a cluster node, which forwards to
/// the leader unless it leads); the future gives the first offset once acknowledged. The
/// await returns once they are queued, in the order of the calls.
async fn append(log: &Log, role: &Role, values: Vec<Bytes>, forwarded: bool) -> Result<Committed, Status> {
    match role {
        Role::Single(_) => {
            let ticket = log.submit(values).map_err(|e| status::from_engine(&e))?;
            Ok(Box::pin(async move { ticket.await.map_err(|e| status::from_engine(&e)) }))
        }
        Role::Replica(replica) => replica.submit(values, forwarded).await,
    }
}

/// Records and frame bytes a produce request adds to an engine batch.
fn batch_size(request: &ProduceRequest) -> (usize, u64) {
    let records = request.record.iter().chain(&request.records);
    records.fold((0, 0), |(count, bytes), record| {
        (count + 1, bytes + ringlog_engine::record::frame_len(record.value.len()) as u64)
    })
}

/// The values of a produce request's records, checked against the size limit; nothing is
/// appended unless every record passes.
fn values(request: ProduceRequest, record_bytes_max: u32) -> Result<Vec<Bytes>, Status> {
    let mut values = Vec::with_capacity(usize::from(request.record.is_some()) + request.records.len());
    push_values(request, record_bytes_max, &mut values)?;
    Ok(values)
}

/// Checks a produce request's records against the size limit and appends their values to
/// `values` (which a stream's batch shares, so no vector per request); returns how many.
/// Nothing is added unless every record passes.
fn push_values(
    request: ProduceRequest,
    record_bytes_max: u32,
    values: &mut Vec<Bytes>,
) -> Result<u64, Status> {
    let check = |field: &dyn Fn() -> String, value: &Bytes| {
        if value.len() > record_bytes_max as usize {
            return Err(status::record_too_large(&field(), value.len(), record_bytes_max));
        }
        Ok(())
    };
    if let Some(record) = &request.record {
        check(&|| "record.value".to_owned(), &record.value)?;
    }
    for (i, record) in request.records.iter().enumerate() {
        check(&|| format!("records[{i}].value"), &record.value)?;
    }
    let before = values.len();
    values.extend(request.record.map(|r| r.value));
    values.extend(request.records.into_iter().map(|r| r.value));
    if values.len() == before {
        return Err(status::missing_record());
    }
    Ok((values.len() - before) as u64)
}

/// Reads the response to a ConsumeRequest at `offset`; returns it and its record count.
fn read(log: &Log, limits: &Limits, offset: u64, max_records: u64) -> Result<(ConsumeResponse, u64), Status> {
    let engine = |e: ringlog_engine::Error| status::from_engine(&e);
    if max_records <= 1 {
        let record = log.read(offset).map_err(engine)?;
        return Ok((ConsumeResponse { record: Some(to_proto(record)), records: Vec::new() }, 1));
    }
    let max_records = usize::try_from(max_records).unwrap_or(usize::MAX).min(limits.consume_records_max);
    let records = log.read_from(offset, max_records, limits.consume_bytes_max).map_err(engine)?;
    let count = records.len() as u64;
    Ok((ConsumeResponse { record: None, records: records.into_iter().map(to_proto).collect() }, count))
}

fn to_proto(record: EngineRecord) -> Record {
    Record { value: record.value, offset: record.offset, timestamp_ms: record.timestamp_ms }
}

/// Resolves once the server is shutting down. Without a sender (a standalone service, or a
/// server that ended without signalling a stop) no shutdown can come: it never resolves.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One ConsumeStream: reads from `next` on, waiting at the end of the log.
struct Follower {
    log: Log,
    limits: Limits,
    stop: watch::Receiver<bool>,
    next: u64,
    max_records: u64,
    /// Records read but not sent yet (one-record-per-message streams only), from `next` on.
    ahead: VecDeque<EngineRecord>,
    done: bool,
    /// Counts this stream as an open follower.
    _open: Open,
}

impl Follower {
    /// The next message of the stream, `None` after the last one.
    async fn next_message(&mut self) -> Option<Result<ConsumeResponse, Status>> {
        if self.done {
            return None;
        }
        let message = self.read_next().await;
        self.done = message.is_err();
        Some(message)
    }

    async fn read_next(&mut self) -> Result<ConsumeResponse, Status> {
        if *self.stop.borrow() {
            return Err(status::shutting_down());
        }
        if self.max_records <= 1
            && let Some(record) = self.ahead.pop_front()
        {
            self.next += 1;
            return Ok(ConsumeResponse { record: Some(to_proto(record)), records: Vec::new() });
        }
        // Readable, not merely appended: under `always` a record is readable once durable,
        // and on a cluster node once applied (committed).
        if self.log.readable_offset() <= self.next {
            tokio::select! {
                biased;
                () = stopping(&mut self.stop) => return Err(status::shutting_down()),
                waited = self.log.wait_for(self.next) => {
                    waited.map_err(|e| status::from_engine(&e))?;
                }
            }
        }
        if self.max_records <= 1 {
            // One pread for the records already published, sent one per message.
            let engine = |e: ringlog_engine::Error| status::from_engine(&e);
            let records =
                self.log.read_from(self.next, READ_AHEAD_RECORDS, READ_AHEAD_BYTES).map_err(engine)?;
            self.ahead.extend(records);
            let record = self.ahead.pop_front().expect("read_from returns at least one record");
            self.next += 1;
            return Ok(ConsumeResponse { record: Some(to_proto(record)), records: Vec::new() });
        }
        let (response, count) = read(&self.log, &self.limits, self.next, self.max_records)?;
        self.next += count;
        Ok(response)
    }
}

/// One ProduceStream: reads requests, appends them, answers in order.
struct ProducePump {
    log: Log,
    role: Role,
    limits: Limits,
    stop: watch::Receiver<bool>,
    requests: Streaming<ProduceRequest>,
    answers: mpsc::Sender<Result<ProduceResponse, Status>>,
    metrics: Arc<Metrics>,
    /// Counts this stream as open.
    _open: Open,
}

impl ProducePump {
    async fn run(mut self) {
        let mut pending = FuturesOrdered::new();
        let mut pending_bytes = 0usize;
        let mut reading = true;
        // How the stream ends once every pending append is answered: OK when `None`.
        let mut end: Option<Status> = None;
        // One shutdown watcher for the whole stream: making a new one on every turn of the
        // loop registered and dropped a waiter per request (a tenth of the pump's time).
        let mut stop = self.stop.clone();
        let shutdown = async move { stopping(&mut stop).await };
        tokio::pin!(shutdown);
        loop {
            if !reading && pending.is_empty() {
                break;
            }
            // A follower forwards one request at a time, so that the leader numbers them in
            // request order (clients that want pipelining produce to the leader).
            let in_flight_max = match &self.role {
                Role::Replica(replica) if replica.leader() != Some(replica.node().id()) => 1,
                _ => self.limits.produce_in_flight_max,
            };
            let room =
                pending.len() < in_flight_max && pending_bytes < self.limits.produce_in_flight_bytes_max;
            tokio::select! {
                biased;
                Some((appended, bytes)) = pending.next(), if !pending.is_empty() => {
                    pending_bytes -= bytes;
                    let appended: Result<Vec<ProduceResponse>, Status> = appended;
                    let answers = match appended {
                        Ok(answers) => answers.into_iter().map(Ok).collect(),
                        Err(status) => vec![Err(status)],
                    };
                    for answer in answers {
                        let failed = answer.is_err();
                        if self.answers.send(answer).await.is_err() || failed {
                            // The client went away, or an append failed and its status ends
                            // the stream (later in-flight appends are not answered).
                            return;
                        }
                    }
                }
                () = &mut shutdown, if reading => {
                    reading = false;
                    end = Some(status::shutting_down());
                }
                message = self.requests.message(), if reading && room => {
                    // Requests the transport has already decoded go to the engine together
                    // (one hand-off instead of one per request; 31% -> 70% of bare tonic for
                    // 100 B records); each still gets its own answer, in order. A group stays
                    // within one engine batch, so coalescing never makes a batch too large.
                    let limits = self.log.batch_limits();
                    let mut groups: Vec<(Vec<ProduceRequest>, usize, u64)> = Vec::new();
                    let mut requests = 0;
                    // Frame bytes taken by this turn: coalescing stops at the in-flight bound
                    // too, so that one turn cannot take up to 64 requests past it.
                    let mut taken = 0u64;
                    let mut next = Some(message);
                    while let Some(message) = next.take() {
                        match message {
                            Ok(Some(request)) => {
                                let (records, bytes) = batch_size(&request);
                                taken += bytes;
                                match groups.last_mut() {
                                    Some((group, group_records, group_bytes))
                                        if *group_records + records <= limits.records_max
                                            && *group_bytes + bytes <= limits.bytes_max =>
                                    {
                                        group.push(request);
                                        *group_records += records;
                                        *group_bytes += bytes;
                                    }
                                    _ => groups.push((vec![request], records, bytes)),
                                }
                                requests += 1;
                            }
                            // The client half-closed: answer what is pending, then end OK.
                            Ok(None) => reading = false,
                            Err(status) => {
                                reading = false;
                                end = Some(status);
                            }
                        }
                        let room = pending_bytes as u64 + taken < self.limits.produce_in_flight_bytes_max as u64;
                        if reading && requests < COALESCE_REQUESTS_MAX && room {
                            next = self.requests.message().now_or_never();
                        }
                    }
                    for (group, _, _) in groups {
                        let (append, bytes, refused) = self.submit(group).await;
                        if let Some(append) = append {
                            pending_bytes += bytes;
                            pending.push_back(append);
                        }
                        if let Some(status) = refused {
                            reading = false;
                            end = Some(status);
                            break;
                        }
                    }
                }
            }
        }
        if let Some(status) = end {
            debug!(code = ?status.code(), message = status.message(), "produce stream ends");
            let _ = self.answers.send(Err(status)).await;
        }
    }

    /// Checks the requests and submits the valid ones before the first invalid one as one
    /// batch; returns the append (answers in request order), its value bytes, and the
    /// status that ends the stream if a request was refused.
    #[allow(clippy::type_complexity)]
    async fn submit(
        &self,
        requests: Vec<ProduceRequest>,
    ) -> (
        Option<impl Future<Output = (Result<Vec<ProduceResponse>, Status>, usize)> + use<>>,
        usize,
        Option<Status>,
    ) {
        let mut values = Vec::with_capacity(requests.len());
        let mut counts = Vec::with_capacity(requests.len());
        let mut refused = None;
        for request in requests {
            match push_values(request, self.limits.record_bytes_max, &mut values) {
                Ok(count) => counts.push(count),
                Err(status) => {
                    refused = Some(status);
                    break;
                }
            }
        }
        if values.is_empty() {
            return (None, 0, refused);
        }
        let bytes = values.iter().map(Bytes::len).sum();
        let submitted = Instant::now();
        let committed = match append(&self.log, &self.role, values, false).await {
            Ok(committed) => committed,
            Err(status) => return (None, 0, Some(status)),
        };
        let append_seconds = self.metrics.append_seconds.clone();
        let append = async move {
            let appended = committed.await;
            append_seconds.observe(submitted.elapsed().as_secs_f64());
            let answers = appended.map(|first| {
                let mut offset = first;
                counts
                    .into_iter()
                    .map(|count| {
                        let answer = ProduceResponse { offset, count };
                        offset += count;
                        answer
                    })
                    .collect()
            });
            (answers, bytes)
        };
        (Some(append), bytes, refused)
    }
}
