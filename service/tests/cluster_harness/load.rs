//! Continuous produce load with unique values, recorded in a [`History`]: producers that
//! keep writing through kills and elections, retrying on UNAVAILABLE.
//!
//! Producer `k` prefers node `k` (so most of them write through a follower, which forwards
//! to the leader) and moves to the next node when its node refuses connections. Producers
//! 0 and 1 use ProduceStream with up to [`WINDOW`] requests in flight (one after a failure,
//! until the new stream answers); producer 2 uses unary Produce. Every send is recorded
//! before it goes out ([`History::sent`]) and every answer as an acknowledgement. When a
//! call fails, what was in flight has an unknown outcome and is sent again (a retry the
//! history allows to appear twice).
//!
//! A failure code other than UNAVAILABLE is a service bug, unless the node the producer
//! talked to was SIGKILLed during the call (then the code is whatever the broken
//! connection gives): such codes are collected in [`Load::unexpected`].

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use ringlog_service::proto::{ProduceRequest, Record};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::{Liveness, connect, history::History};

/// How many ProduceStream requests a producer keeps unanswered.
pub const WINDOW: usize = 16;

/// How long a producer waits for one answer before it counts the call as failed with an
/// unknown outcome (and retries): only decides when to retry, never a verdict.
const ANSWER_BOUND: Duration = Duration::from_secs(20);

/// Pause before retrying after UNAVAILABLE or a refused connection.
const BACKOFF: Duration = Duration::from_millis(50);

/// How long [`Load::wait_acked`] waits for the acknowledgements it asks for.
const PROGRESS_BOUND: Duration = Duration::from_secs(60);

/// What all producers share.
#[derive(Clone)]
struct Shared {
    cycle: u64,
    addrs: Arc<Vec<SocketAddr>>,
    liveness: Arc<Liveness>,
    history: Arc<Mutex<History>>,
    acked: Arc<Notify>,
    unexpected: Arc<Mutex<Vec<String>>>,
    timeouts: Arc<Mutex<u64>>,
    stop: watch::Receiver<bool>,
}

/// Running producers.
pub struct Load {
    shared: Shared,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What a cycle of load did.
#[derive(Debug)]
pub struct Summary {
    pub acked_total: u64,
    pub retries_total: u64,
    pub timeouts: u64,
    /// Failure codes no producer should have been given (see the module doc).
    pub unexpected: Vec<String>,
}

fn request(value: Bytes) -> ProduceRequest {
    ProduceRequest { record: Some(Record { value, ..Record::default() }), records: Vec::new() }
}

impl Load {
    /// Starts the three producers of the module doc, writing `c{cycle}-p{producer}-{seq}`
    /// to the nodes at `addrs`.
    pub fn start(
        cycle: u64,
        addrs: Vec<SocketAddr>,
        liveness: Arc<Liveness>,
        history: Arc<Mutex<History>>,
    ) -> Load {
        let (stop, stop_rx) = watch::channel(false);
        let shared = Shared {
            cycle,
            addrs: Arc::new(addrs),
            liveness,
            history,
            acked: Arc::new(Notify::new()),
            unexpected: Arc::default(),
            timeouts: Arc::default(),
            stop: stop_rx,
        };
        let tasks = vec![
            tokio::spawn(stream_producer(shared.clone(), 0)),
            tokio::spawn(stream_producer(shared.clone(), 1)),
            tokio::spawn(unary_producer(shared.clone(), 2)),
        ];
        Load { shared, stop, tasks }
    }

    fn acked_count(&self) -> u64 {
        self.shared.history.lock().unwrap().acked_count()
    }

    /// Waits until `more` acknowledgements beyond the current count have been recorded
    /// (bounded by [`PROGRESS_BOUND`]; `context` goes into the failure message).
    pub async fn wait_acked(&self, more: u64, context: &str) {
        let target = self.acked_count() + more;
        let deadline = Instant::now() + PROGRESS_BOUND;
        loop {
            let notified = self.shared.acked.notified();
            let count = self.acked_count();
            if count >= target {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "{context}: only {count} of {target} acknowledgements after {PROGRESS_BOUND:?}; \
                     unexpected errors: {:?}",
                    self.unexpected()
                );
            }
        }
    }

    /// Failure codes no producer should have been given.
    pub fn unexpected(&self) -> Vec<String> {
        self.shared.unexpected.lock().unwrap().clone()
    }

    /// Stops the producers: no new values; each waits for the answers to what it has in
    /// flight (giving up on them if the call fails) and ends.
    pub async fn stop(self) -> Summary {
        self.stop.send_replace(true);
        for task in self.tasks {
            task.await.expect("a producer panicked");
        }
        let history = self.shared.history.lock().unwrap();
        Summary {
            acked_total: history.acked_count(),
            retries_total: history.retries(),
            timeouts: *self.shared.timeouts.lock().unwrap(),
            unexpected: self.shared.unexpected.lock().unwrap().clone(),
        }
    }
}

impl Shared {
    fn value(&self, producer: u64, seq: u64) -> Bytes {
        Bytes::from(format!("c{}-p{producer}-{seq}", self.cycle))
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn sent(&self, value: &Bytes) {
        self.history.lock().unwrap().sent(value);
    }

    fn ack(&self, offset: u64, value: Bytes) {
        self.history.lock().unwrap().acked(offset, value);
        self.acked.notify_waiters();
    }

    /// Judges a failed call to `node` on a connection made when the node had been killed
    /// `kills` times (a kill since then broke the connection, so any code is the broken
    /// connection's, not the service's). Returns whether the producer should move to
    /// another node.
    fn failed(&self, producer: u64, node: usize, kills: u64, status: &Status) -> bool {
        let killed = self.liveness.kills(node) != kills;
        if status.code() != Code::Unavailable && !killed {
            self.unexpected.lock().unwrap().push(format!(
                "producer {producer} on node {node} (alive): {:?}: {}",
                status.code(),
                status.message()
            ));
        }
        killed
    }

    fn unexpected(&self, what: String) {
        self.unexpected.lock().unwrap().push(what);
    }
}

/// A ProduceStream producer.
async fn stream_producer(shared: Shared, producer: u64) {
    let n = shared.addrs.len();
    let mut node = producer as usize % n;
    let mut seq = 0;
    // Values whose last send had an unknown outcome, to send again first, in order.
    let mut retry: VecDeque<Bytes> = VecDeque::new();
    let mut stop = shared.stop.clone();
    while !shared.stopping() {
        let kills = shared.liveness.kills(node);
        let Some(mut client) = connect(shared.addrs[node]).await else {
            node = (node + 1) % n;
            tokio::time::sleep(BACKOFF).await;
            continue;
        };
        let (tx, rx) = mpsc::channel(WINDOW);
        let mut answers = match client.produce_stream(ReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                if shared.failed(producer, node, kills, &status) {
                    node = (node + 1) % n;
                }
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        let mut tx = Some(tx);
        // Sent on this stream and not answered yet, in request order.
        let mut pending: VecDeque<Bytes> = VecDeque::new();
        // After a failure, one request until the stream answers: while there is no leader
        // a whole window of retries would only add attempts (and so weaken what the history
        // can tell about duplicates).
        let mut window = if retry.is_empty() { WINDOW } else { 1 };
        let failure = loop {
            let stopping = shared.stopping();
            if stopping {
                // Half-close: the server answers what it took, then ends the stream.
                tx = None;
            }
            if let Some(sender) = &tx {
                while pending.len() < window {
                    let value = retry.pop_front().unwrap_or_else(|| {
                        seq += 1;
                        shared.value(producer, seq - 1)
                    });
                    shared.sent(&value);
                    // The channel holds at most the unanswered requests, fewer than WINDOW.
                    sender.try_send(request(value.clone())).expect("room in the request channel");
                    pending.push_back(value);
                }
            }
            tokio::select! {
                answer = tokio::time::timeout(ANSWER_BOUND, answers.message()) => match answer {
                    Ok(Ok(Some(answer))) => {
                        let Some(value) = pending.pop_front() else {
                            shared.unexpected(format!("producer {producer} on node {node}: an answer {answer:?} to no request"));
                            break None;
                        };
                        if answer.count != 1 {
                            shared.unexpected(format!("producer {producer}: {answer:?} for one record"));
                        }
                        shared.ack(answer.offset, value);
                        window = WINDOW;
                    }
                    Ok(Ok(None)) => {
                        if !(stopping && pending.is_empty()) {
                            shared.unexpected(format!(
                                "producer {producer} on node {node}: ProduceStream ended with OK, {} requests \
                                 unanswered, half-closed: {stopping}",
                                pending.len()
                            ));
                        }
                        break None;
                    }
                    Ok(Err(status)) => break Some(status),
                    Err(_) => {
                        *shared.timeouts.lock().unwrap() += 1;
                        break Some(Status::deadline_exceeded("no answer within the producer's bound"));
                    }
                },
                _ = stop.wait_for(|stop| *stop), if !stopping => {}
            }
        };
        if let Some(status) = failure {
            if status.code() != Code::DeadlineExceeded && shared.failed(producer, node, kills, &status) {
                node = (node + 1) % n;
            }
            // Unknown outcomes: sent again first on the next stream (unless stopping).
            while let Some(value) = pending.pop_back() {
                retry.push_front(value);
            }
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

/// A unary Produce producer.
async fn unary_producer(shared: Shared, producer: u64) {
    let n = shared.addrs.len();
    let mut node = producer as usize % n;
    let mut seq = 0;
    let mut retry: Option<Bytes> = None;
    // The client, with the node's kill count when it connected: a kill after that breaks
    // the connection, whenever the next call on it is made.
    let mut client = None;
    while !shared.stopping() {
        if client.is_none() {
            let kills = shared.liveness.kills(node);
            client = connect(shared.addrs[node]).await.map(|client| (client, kills));
            if client.is_none() {
                node = (node + 1) % n;
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        }
        let (connected, kills) = client.as_mut().unwrap();
        let kills = *kills;
        let value = retry.take().unwrap_or_else(|| {
            seq += 1;
            shared.value(producer, seq - 1)
        });
        shared.sent(&value);
        let call = connected.produce(request(value.clone()));
        match tokio::time::timeout(ANSWER_BOUND, call).await {
            Ok(Ok(answer)) => {
                let answer = answer.into_inner();
                if answer.count != 1 {
                    shared.unexpected(format!("producer {producer}: {answer:?} for one record"));
                }
                shared.ack(answer.offset, value);
            }
            Ok(Err(status)) => {
                if shared.failed(producer, node, kills, &status) {
                    node = (node + 1) % n;
                }
                client = None;
                retry = Some(value);
                tokio::time::sleep(BACKOFF).await;
            }
            Err(_) => {
                *shared.timeouts.lock().unwrap() += 1;
                client = None;
                retry = Some(value);
            }
        }
    }
}
