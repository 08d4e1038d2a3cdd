//! The Raft transport on its own: how failures reach openraft (an unreachable or silent peer
//! is an `Unreachable` or `Timeout`, never fatal), the fault switch in both directions, a
//! snapshot of records streamed in many chunks (and one too large for the disk refused),
//! pipelined appends (against a scripted peer),
//! and the bootstrap rule.

mod common;

use std::time::Duration;

use common::{Cluster, WAIT, config};
use futures_util::StreamExt;
use openraft::RaftNetworkV2;
use openraft::async_runtime::WatchReceiver;
use openraft::entry::RaftEntry;
use openraft::error::{RPCError, ReplicationClosed};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, StreamAppendError, VoteRequest};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use ringlog_cluster::proto::raft_client::RaftClient;
use ringlog_cluster::proto::raft_server::{Raft as RaftRpc, RaftServer};
use ringlog_cluster::proto::{
    Header, RaftReply, RaftRequest, SnapshotChunk, SnapshotStart, StatusReply, StatusRequest, snapshot_chunk,
};
use ringlog_cluster::{Entry, Faults, Membership, Network, Peer, Record, Vote, log_id};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

fn harmless_vote(from: u64) -> VoteRequest<ringlog_cluster::TypeConfig> {
    // Term 0 is below every vote, so the receiver answers without changing anything.
    VoteRequest::new(Vote::new(0, from), None)
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_millis(400))
}

#[tokio::test]
async fn a_peer_on_a_closed_port_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let network = Network::new(1, &config(), Faults::new());
    let err = network.client(2, &Peer { addr }).vote(harmless_vote(1), option()).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
}

#[tokio::test]
async fn a_bad_address_is_unreachable() {
    let network = Network::new(1, &config(), Faults::new());
    let peer = Peer { addr: "not an address".into() };
    let err = network.client(2, &peer).vote(harmless_vote(1), option()).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
}

#[tokio::test]
async fn a_peer_that_never_answers_times_out() {
    // Accepts connections and never speaks: the call must end with the deadline, as a timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let network = Network::new(1, &config(), Faults::new());
    let mut client = network.client(2, &Peer { addr });
    let err = tokio::time::timeout(WAIT, client.vote(harmless_vote(1), option()))
        .await
        .expect("the call hangs")
        .unwrap_err();
    assert!(matches!(err, RPCError::Timeout(_)), "{err}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_switch_cuts_a_node_off_in_both_directions() {
    let cluster = Cluster::start(3).await;
    cluster.leader(&[1, 2, 3]).await;
    let peers = cluster.peers.clone();
    cluster.node(1).faults().cut([2]);

    // Outgoing: node 1's calls to node 2 fail before anything is sent.
    let from_1 = Network::new(1, &config(), cluster.node(1).faults().clone());
    let err = from_1.client(2, &peers[&2]).vote(harmless_vote(1), option()).await.unwrap_err();
    assert!(matches!(&err, RPCError::Unreachable(_)) && err.to_string().contains("fault switch"), "{err}");

    // Incoming: node 1's service refuses node 2, and still answers node 3.
    let from_2 = Network::new(2, &config(), Faults::new());
    let err = from_2.client(1, &peers[&1]).vote(harmless_vote(2), option()).await.unwrap_err();
    assert!(matches!(&err, RPCError::Unreachable(_)) && err.to_string().contains("fault switch"), "{err}");
    let from_3 = Network::new(3, &config(), Faults::new());
    let resp = from_3.client(1, &peers[&1]).vote(harmless_vote(3), option()).await.unwrap();
    assert!(!resp.vote_granted);

    cluster.node(1).faults().heal();
    from_2.client(1, &peers[&1]).vote(harmless_vote(2), option()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_for_another_node_id_is_refused() {
    let cluster = Cluster::start_some(3, [3]).await;
    let from_1 = Network::new(1, &config(), Faults::new());
    // Node 3's address, called as if it were node 2.
    let err = from_1.client(2, &cluster.peers[&3]).vote(harmless_vote(1), option()).await.unwrap_err();
    assert!(err.to_string().contains("this is node 3, not node 2"), "{err}");
}

/// A snapshot carries the records: node 3 (empty) receives the leader's entries, streamed in
/// seven-byte chunks, and serves them afterwards at the same offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_streams_its_records_in_many_chunks_and_installs_them() {
    // Node 3 alone, pristine: it is not the lowest id, so it waits for a leader.
    let cluster = Cluster::start_some(3, [3]).await;

    // A log of a membership entry and 40 records, applied: the snapshot ships its segments.
    let dir = tempfile::tempdir().unwrap();
    let engine = ringlog_engine::Config { store_bytes_max: 512, record_bytes_max: 100, ..config().engine };
    let (store, mut sm) = ringlog_cluster::open(dir.path(), engine).unwrap();
    let membership = Membership::new_with_defaults(vec![[1, 2, 3].into()], []);
    let value = |i: u64| bytes::Bytes::from(format!("record {i}"));
    let mut raw = vec![ringlog_engine::Entry {
        id: ringlog_engine::EntryId { term: 1, index: 0 },
        kind: ringlog_engine::EntryKind::Membership,
        timestamp_ms: 0,
        // Never read back: the entries under a snapshot are not Raft's any more.
        payload: bytes::Bytes::new(),
    }];
    let mut applied = vec![Entry::new_membership(log_id(1, 0), membership.clone())];
    for i in 1..=40 {
        let id = ringlog_engine::EntryId { term: 1, index: i };
        raw.push(ringlog_engine::Entry {
            id,
            kind: ringlog_engine::EntryKind::Data,
            timestamp_ms: i,
            payload: value(i),
        });
        applied.push(Entry::new_normal(log_id(1, i), Record { timestamp_ms: i, value: value(i) }.into()));
    }
    store.log().append_entries(raw, |_| {}).unwrap().wait().unwrap();
    sm.apply(futures_util::stream::iter(applied.into_iter().map(|e| Ok((e, None))))).await.unwrap();
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert!(store.log().segment_count() > 2, "the records span several segments");

    // Seven-byte chunks: the receiver must put them back together in order.
    let tiny_chunks = ringlog_cluster::ClusterConfig { snapshot_chunk_bytes: 7, ..config() };
    let from_1 = Network::new(1, &tiny_chunks, Faults::new());
    let vote = Vote::new_committed(1, 1);
    let never_cancelled = std::future::pending::<ReplicationClosed>();
    let resp = from_1
        .client(3, &cluster.peers[&3])
        .full_snapshot(vote, snapshot, never_cancelled, RPCOption::new(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(resp.vote, vote);

    let node = cluster.node(3);
    let m =
        node.raft().wait(Some(WAIT)).snapshot(log_id(1, 40), "node 3 installs the snapshot").await.unwrap();
    assert_eq!(m.last_applied, Some(log_id(1, 40)));
    assert_eq!(m.membership_config.membership(), &membership);
    for offset in 0..40 {
        let record = node.log().read(offset).unwrap();
        assert_eq!(record.value, value(offset + 1), "offset {offset}");
    }
    assert_eq!(node.log().next_offset(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lowest_node_initializes_only_once_every_peer_answered() {
    let mut cluster = Cluster::start_some(3, [1, 2]).await;
    // Node 3 does not answer: node 1 must not start a cluster it cannot know is the only one.
    // (A broken rule would initialize within one bootstrap round, 200 ms.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in [1, 2] {
        assert!(!cluster.node(id).raft().is_initialized().await.unwrap(), "node {id} has a membership");
    }

    cluster.start_node(3).await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let m = cluster.node(leader).raft().metrics().borrow_watched().clone();
    let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
    assert_eq!(voters, [1, 2, 3]);
}

/// A peer whose `StreamAppend` takes `hold` requests before it answers anything, then gives
/// `answers` (payloads in the append response layout) in turn and keeps the stream open. It
/// implements nothing else.
#[derive(Clone, Default)]
struct ScriptedPeer {
    hold: usize,
    answers: Vec<Vec<u8>>,
    /// An older version: no `StreamAppend`, and this answer to every `AppendEntries`.
    unary_only: Option<Vec<u8>>,
}

type Replies = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<RaftReply, Status>> + Send>>;

#[tonic::async_trait]
impl RaftRpc for ScriptedPeer {
    async fn vote(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn pre_vote(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn append_entries(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        match &self.unary_only {
            Some(answer) => Ok(Response::new(RaftReply { payload: answer.clone().into() })),
            None => Err(Status::unimplemented("scripted: appends come on a stream")),
        }
    }

    type StreamAppendStream = Replies;

    async fn stream_append(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Replies>, Status> {
        if self.unary_only.is_some() {
            return Err(Status::unimplemented("scripted: an older version"));
        }
        let mut incoming = request.into_inner();
        let script = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            for _ in 0..script.hold {
                if incoming.message().await.ok().flatten().is_none() {
                    return;
                }
            }
            for payload in script.answers {
                let _ = tx.send(Ok(RaftReply { payload: payload.into() })).await;
            }
            // Keep the stream open, reading what comes, until the client goes away.
            while let Ok(Some(_)) = incoming.message().await {}
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn install_snapshot(
        &self,
        _: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Err(Status::unimplemented("scripted"))
    }
}

/// Serves `peer` on an ephemeral port of 127.0.0.1; returns its address.
async fn serve_scripted(peer: ScriptedPeer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder().add_service(RaftServer::new(peer)).serve_with_incoming(incoming),
    );
    addr
}

/// An append of the blank entries `first..=last` of term 1 from leader 1.
fn append(first: u64, last: u64) -> AppendEntriesRequest<ringlog_cluster::TypeConfig> {
    let prev = first.checked_sub(1).map(|i| log_id(1, i));
    let entries = (first..=last).map(|i| Entry::new_blank(log_id(1, i))).collect();
    AppendEntriesRequest { vote: Vote::new_committed(1, 1), prev_log_id: prev, leader_commit: None, entries }
}

/// A partial success naming `(term 1, index)`, in the append response layout.
fn holds(index: u64) -> Vec<u8> {
    let mut b = vec![1, 1, 1];
    b.extend(1u64.to_le_bytes());
    b.extend(index.to_le_bytes());
    b
}

#[tokio::test]
async fn appends_are_pipelined_and_answered_in_order() {
    // The peer answers nothing until it holds three requests: a transport that waited for an
    // answer before sending the next request would never get one.
    let addr = serve_scripted(ScriptedPeer {
        hold: 3,
        answers: vec![holds(2), holds(5), vec![1, 2]],
        ..Default::default()
    })
    .await;
    let network = Network::new(1, &config(), Faults::new());
    let mut client = network.client(2, &Peer { addr });
    let requests = futures_util::stream::iter([append(0, 2), append(3, 5), append(6, 9)])
        .chain(futures_util::stream::pending());
    let mut answers = client.stream_append(Box::pin(requests), option()).await.unwrap();
    let expected = [
        Ok(Some(log_id(1, 2))),
        Ok(Some(log_id(1, 5))),
        // A conflict is reported at the request's previous entry, as openraft expects.
        Err(StreamAppendError::Conflict(log_id(1, 5))),
    ];
    for expected in expected {
        let answer = tokio::time::timeout(WAIT, answers.next()).await.expect("no answer");
        assert_eq!(answer.expect("an answer").expect("no transport error"), expected);
    }
}

#[tokio::test]
async fn an_unanswered_append_times_out() {
    let addr = serve_scripted(ScriptedPeer { hold: 1, ..Default::default() }).await;
    let network = Network::new(1, &config(), Faults::new());
    let mut client = network.client(2, &Peer { addr });
    let requests = futures_util::stream::iter([append(0, 2)]).chain(futures_util::stream::pending());
    let mut answers = client.stream_append(Box::pin(requests), option()).await.unwrap();
    let answer = tokio::time::timeout(WAIT, answers.next()).await.expect("the stream hangs");
    let err = answer.expect("an answer").unwrap_err();
    assert!(matches!(err, RPCError::Timeout(_)), "{err}");
    assert!(answers.next().await.is_none(), "the stream ends after its error");
}

#[tokio::test]
async fn an_answer_to_no_request_is_refused() {
    // The peer answers twice though it was sent one request.
    let addr =
        serve_scripted(ScriptedPeer { hold: 1, answers: vec![holds(2), holds(2)], ..Default::default() })
            .await;
    let network = Network::new(1, &config(), Faults::new());
    let mut client = network.client(2, &Peer { addr });
    let requests = futures_util::stream::iter([append(0, 2)]).chain(futures_util::stream::pending());
    let mut answers = client.stream_append(Box::pin(requests), option()).await.unwrap();
    assert_eq!(answers.next().await.unwrap().unwrap(), Ok(Some(log_id(1, 2))));
    let err = answers.next().await.unwrap().unwrap_err();
    assert!(matches!(&err, RPCError::Unreachable(_)) && err.to_string().contains("no request"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_the_free_disk_is_refused_before_its_data() {
    let cluster = Cluster::start_some(3, [2]).await;
    let mut client = RaftClient::connect(format!("http://{}", cluster.peers[&2].addr)).await.unwrap();
    // Node 1's vote (term 1, committed) and an empty snapshot's metadata, in the codec's
    // layouts (see `codec`), announcing more data than any disk holds.
    let vote = [&[1u8][..], &1u64.to_le_bytes(), &1u64.to_le_bytes(), &[1]].concat();
    let membership = [&[1u8][..], &0u32.to_le_bytes(), &0u32.to_le_bytes()].concat();
    let meta = [&[1u8, 0, 0][..], &(membership.len() as u32).to_le_bytes(), &membership].concat();
    let start = SnapshotStart {
        header: Some(Header { cluster: config().cluster_name, from: 1, to: 2 }),
        vote: vote.into(),
        meta: meta.into(),
        data_bytes: u64::MAX / 2,
    };
    let start = SnapshotChunk { kind: Some(snapshot_chunk::Kind::Start(start)) };
    let status = client.install_snapshot(futures_util::stream::iter([start])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("does not fit in the"), "{status:?}");
}

#[tokio::test]
async fn an_answer_naming_another_entry_is_refused() {
    // The append of 0..=2 answered as if it were the append of 0..=3.
    let addr = serve_scripted(ScriptedPeer { hold: 1, answers: vec![holds(3)], ..Default::default() }).await;
    let network = Network::new(1, &config(), Faults::new());
    let mut client = network.client(2, &Peer { addr });
    let requests = futures_util::stream::iter([append(0, 2)]).chain(futures_util::stream::pending());
    let mut answers = client.stream_append(Box::pin(requests), option()).await.unwrap();
    let err = answers.next().await.unwrap().unwrap_err();
    assert!(
        matches!(&err, RPCError::Unreachable(_)) && err.to_string().contains("to the append of"),
        "{err}"
    );
}

#[tokio::test]
async fn the_requests_stop_when_the_answers_are_dropped() {
    let addr = serve_scripted(ScriptedPeer { hold: 1, answers: vec![holds(2)], ..Default::default() }).await;
    let network = Network::new(1, &config(), Faults::new());
    let mut client = network.client(2, &Peer { addr });
    let (requests, input) = tokio::sync::mpsc::channel(4);
    requests.send(append(0, 2)).await.unwrap();
    let input = Box::pin(tokio_stream::wrappers::ReceiverStream::new(input));
    let mut answers = client.stream_append(input, option()).await.unwrap();
    assert_eq!(answers.next().await.unwrap().unwrap(), Ok(Some(log_id(1, 2))));
    // openraft ends the session: the transport must let go of its request stream, or it would
    // go on taking requests meant for the next session.
    drop(answers);
    tokio::time::timeout(WAIT, requests.closed()).await.expect("the request stream is still taken from");
}

#[tokio::test]
async fn a_peer_without_stream_append_gets_one_append_at_a_time() {
    // An older version answers StreamAppend with UNIMPLEMENTED: the first session fails, and
    // the next ones use AppendEntries (a partial success naming index 2, which is where
    // the request ends).
    let addr = serve_scripted(ScriptedPeer { unary_only: Some(holds(2)), ..Default::default() }).await;
    let network = Network::new(1, &config(), Faults::new());
    let mut client = network.client(2, &Peer { addr });
    let requests = futures_util::stream::iter([append(0, 2)]);
    match client.stream_append(Box::pin(requests), option()).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("the first session: {:?}", other.err()),
    }
    let requests = futures_util::stream::iter([append(0, 2)]);
    let mut answers = client.stream_append(Box::pin(requests), option()).await.unwrap();
    assert_eq!(answers.next().await.unwrap().unwrap(), Ok(Some(log_id(1, 2))));
    assert!(answers.next().await.is_none());
}
