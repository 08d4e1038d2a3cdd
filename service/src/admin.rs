//! `ringlog.admin.v1.Cluster`: a node's view of its cluster, and membership changes.
//!
//! Status answers on every node from openraft's metrics (a single node answers for itself,
//! with the role `single`). AddNode and RemoveNode run on the leader: another node answers
//! `FAILED_PRECONDITION` naming the leader, so that the caller goes there (the `ringlog
//! cluster` commands do). A node is added as a learner first and becomes a voter once it has
//! caught up, so a slow newcomer never holds up commits; a removed node leaves the voters and
//! the members at once.

use std::collections::{BTreeMap, BTreeSet};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use ringlog_cluster::{NodeId, Peer, TypeConfig};
use ringlog_engine::Log;
use tonic::{Request, Response, Status};

use crate::{
    cluster::{entries_through, followers},
    proto::admin::{
        AddNodeRequest, Member, MembershipResponse, RemoveNodeRequest, StatusRequest, StatusResponse,
        cluster_server::Cluster,
    },
    service::Role,
};

/// The admin service of one server.
#[derive(Clone, Debug)]
pub struct AdminService {
    log: Log,
    role: Role,
}

impl AdminService {
    pub(crate) fn new(log: Log, role: Role) -> AdminService {
        AdminService { log, role }
    }

    /// The replica, or `FAILED_PRECONDITION` on a single node.
    fn replica(&self) -> Result<&crate::cluster::Replica, Status> {
        match &self.role {
            Role::Replica(replica) => Ok(replica),
            Role::Single(_) => Err(Status::failed_precondition(
                "this server is a single node, not a cluster member (start it with --peers)",
            )),
        }
    }

    /// `FAILED_PRECONDITION` naming the leader unless this node leads.
    fn leader_only(&self) -> Result<&crate::cluster::Replica, Status> {
        let replica = self.replica()?;
        let me = replica.node().id();
        match replica.leader() {
            Some(leader) if leader == me => Ok(replica),
            Some(leader) => Err(Status::failed_precondition(format!(
                "node {me} is not the leader; node {leader} is: ask it"
            ))),
            None => Err(Status::unavailable(format!("node {me} knows no leader yet: retry"))),
        }
    }
}

/// The members of `replica`'s current membership, with replication progress on the leader.
fn members(replica: &crate::cluster::Replica) -> Vec<Member> {
    let m = replica.node().raft().metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let followers = followers(&m);
    let last = m.last_log_index.map_or(0, |i| i + 1);
    membership
        .nodes()
        .map(|(id, peer)| {
            // This node holds its whole log; a follower's progress is known on the leader only.
            let (matched, lag) = match followers.get(id) {
                _ if *id == m.id => (last, 0),
                Some(progress) => (progress.matched, progress.lag),
                None => (0, 0),
            };
            Member {
                node_id: id.to_string(),
                addr: peer.addr.clone(),
                voter: voters.contains(id),
                matched_index: matched,
                lag,
            }
        })
        .collect()
}

/// The status of a failed membership change.
fn change_failed(what: &str, error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Status {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            Status::failed_precondition(format!("{what}: this node is not the leader ({forward})"))
        }
        RaftError::APIError(error) => Status::failed_precondition(format!("{what}: {error}")),
        RaftError::Fatal(fatal) => Status::unavailable(format!("{what}: the Raft node stopped: {fatal}")),
    }
}

#[tonic::async_trait]
impl Cluster for AdminService {
    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let log = &self.log;
        let status = match &self.role {
            Role::Single(me) => StatusResponse {
                node_id: me.id.clone(),
                role: "single".into(),
                term: 0,
                leader_id: me.id.clone(),
                last_index: log.next_index(),
                committed_index: log.next_index(),
                applied_index: log.next_index(),
                next_offset: log.next_offset(),
                readable_offset: log.readable_offset(),
                members: vec![Member {
                    node_id: me.id.clone(),
                    addr: me.rpc_addr.clone(),
                    voter: true,
                    matched_index: log.next_index(),
                    lag: 0,
                }],
            },
            Role::Replica(replica) => {
                let m = replica.node().raft().metrics().borrow_watched().clone();
                let role = match m.state {
                    ServerState::Leader => "leader",
                    ServerState::Follower => "follower",
                    ServerState::Candidate => "candidate",
                    ServerState::Learner => "learner",
                    ServerState::Shutdown => "shutdown",
                };
                StatusResponse {
                    node_id: m.id.to_string(),
                    role: role.into(),
                    term: m.current_term,
                    leader_id: m.current_leader.map(|id| id.to_string()).unwrap_or_default(),
                    last_index: m.last_log_index.map_or(0, |i| i + 1),
                    committed_index: entries_through(m.cluster_committed),
                    applied_index: entries_through(m.last_applied),
                    next_offset: log.next_offset(),
                    readable_offset: log.readable_offset(),
                    members: members(replica),
                }
            }
        };
        Ok(Response::new(status))
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let AddNodeRequest { node_id, addr } = request.into_inner();
        if addr.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
            return Err(Status::invalid_argument(format!("addr `{addr}` is not HOST:PORT")));
        }
        let replica = self.leader_only()?;
        let raft = replica.node().raft();
        let what = format!("adding node {node_id} at {addr}");
        // A learner first: it receives the log and catches up without counting for commits.
        raft.add_learner(node_id, Peer { addr }, true).await.map_err(|e| change_failed(&what, e))?;
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            .await
            .map_err(|e| change_failed(&what, e))?;
        Ok(Response::new(MembershipResponse { members: members(replica) }))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let node_id = request.into_inner().node_id;
        let replica = self.leader_only()?;
        let raft = replica.node().raft();
        let membership = raft.metrics().borrow_watched().membership_config.membership().clone();
        let what = format!("removing node {node_id}");
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, Peer> =
            membership.nodes().map(|(id, peer)| (*id, peer.clone())).collect();
        if !nodes.contains_key(&node_id) {
            return Err(Status::not_found(format!("node {node_id} is not a member")));
        }
        if voters.contains(&node_id) {
            if voters.len() == 1 {
                return Err(Status::failed_precondition(format!("{what}: it is the only voter")));
            }
            raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node_id])), false)
                .await
                .map_err(|e| change_failed(&what, e))?;
        } else {
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
                .await
                .map_err(|e| change_failed(&what, e))?;
        }
        Ok(Response::new(MembershipResponse { members: members(replica) }))
    }
}
