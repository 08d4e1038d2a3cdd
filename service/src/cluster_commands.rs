//! `ringlog cluster status|add|remove`: a cluster's state, and membership changes.
//!
//! `status` asks any node named in `--addr` for the members (GetServers), then every member
//! for its own view (`ringlog.admin.v1.Cluster/Status`), and prints one line per node; a node
//! that does not answer is printed as unreachable. `add` and `remove` go to the leader.

use std::io::Write;

use anyhow::Context;
use ringlog_service::proto::{
    GetServersRequest,
    admin::{AddNodeRequest, Member, RemoveNodeRequest, StatusRequest, cluster_client::ClusterClient},
};

use crate::client::{self, Connect, Route, describe};

/// `ringlog cluster ...`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ClusterCommand {
    /// One line per node: role, term, leader, its log's last, committed and applied index,
    /// and (from the leader) how far it is behind.
    Status {
        #[command(flatten)]
        connect: Connect,
    },
    /// Adds a node (started with the same --peers plus itself, on an empty directory): it
    /// joins as a learner, catches up, then becomes a voter.
    Add {
        #[command(flatten)]
        connect: Connect,
        /// The new node's id (never used before in this cluster)
        #[arg(long)]
        node_id: u64,
        /// The new node's address (HOST:PORT, its log.v1 and raft.v1 port)
        #[arg(long, value_name = "HOST:PORT")]
        node_addr: String,
    },
    /// Removes a node from the cluster (its process is not stopped).
    Remove {
        #[command(flatten)]
        connect: Connect,
        /// The node's id
        #[arg(long)]
        node_id: u64,
    },
}

/// Runs a `ringlog cluster` command.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    match args.command {
        ClusterCommand::Status { connect } => status(&connect).await,
        ClusterCommand::Add { connect, node_id, node_addr } => {
            let mut admin = ClusterClient::new(client::connect_routed(&connect, Route::Leader).await?);
            let request = AddNodeRequest { node_id, addr: node_addr.clone() };
            let members = admin.add_node(request).await.map_err(describe)?.into_inner().members;
            print_members(&format!("node {node_id} ({node_addr}) added"), &members)
        }
        ClusterCommand::Remove { connect, node_id } => {
            let mut admin = ClusterClient::new(client::connect_routed(&connect, Route::Leader).await?);
            let members = admin
                .remove_node(RemoveNodeRequest { node_id })
                .await
                .map_err(describe)?
                .into_inner()
                .members;
            print_members(&format!("node {node_id} removed"), &members)
        }
    }
}

fn print_members(what: &str, members: &[Member]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{what}; members now:")?;
    for member in members {
        let kind = if member.voter { "voter" } else { "learner" };
        writeln!(out, "  node {} at {} ({kind})", member.node_id, member.addr)?;
    }
    Ok(())
}

async fn status(connect: &Connect) -> anyhow::Result<()> {
    let first = client::connect_any(connect).await?;
    let servers = client::log_client(first)
        .get_servers(GetServersRequest {})
        .await
        .map_err(describe)?
        .into_inner()
        .servers;
    let mut lines = Vec::new();
    let mut lag_by_node = std::collections::BTreeMap::new();
    for server in &servers {
        let answer = match client::connect_one(connect, &server.rpc_addr).await {
            Ok(channel) => ClusterClient::new(channel).status(StatusRequest {}).await.map_err(describe),
            Err(error) => Err(error),
        };
        match answer {
            Ok(status) => {
                let status = status.into_inner();
                if status.role == "leader" {
                    for member in &status.members {
                        lag_by_node.insert(member.node_id.clone(), member.lag);
                    }
                }
                lines.push((server.id.clone(), server.rpc_addr.clone(), Ok(status)));
            }
            Err(error) => lines.push((server.id.clone(), server.rpc_addr.clone(), Err(error))),
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "node  addr                   role       term  leader  last      committed applied   lag")?;
    for (id, addr, status) in lines {
        match status {
            Ok(s) => {
                let leader = if s.leader_id.is_empty() { "-".to_owned() } else { s.leader_id };
                let lag = lag_by_node.get(&id).map_or_else(|| "-".to_owned(), u64::to_string);
                writeln!(
                    out,
                    "{id:<5} {addr:<22} {:<10} {:<5} {leader:<7} {:<9} {:<9} {:<9} {lag}",
                    s.role, s.term, s.last_index, s.committed_index, s.applied_index
                )?;
            }
            Err(error) => writeln!(out, "{id:<5} {addr:<22} unreachable: {error:#}")?,
        }
    }
    out.flush().context("writing the status")?;
    Ok(())
}
