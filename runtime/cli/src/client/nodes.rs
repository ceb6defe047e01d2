//! `sluice nodes list|drain`: the client of the node's `Nodes` service: the nodes
//! sharing its store, and draining one.
//!
//! Owns the subcommands, their requests and the node table. It prints only through
//! [`Render`].

use clap::Subcommand;
use serde_json::{Value, json};
use sluice_api::pb;
use sluice_api::pb::nodes_client::NodesClient;

use super::Client;
use super::render::{self, Render};

/// `sluice nodes …`
#[derive(Subcommand)]
pub enum NodesCommand {
    /// Every node sharing the store: state (live, draining, lost, stopped), last
    /// heartbeat and the runs it drives.
    List,
    /// Asks a node (by id or name) to drain: it starts nothing new, its waiting runs
    /// go to the other nodes, and it leaves once the runs it drives are over.
    Drain {
        /// The node's id or name.
        node: String,
    },
}

pub(super) async fn run(client: &Client, out: Render, command: NodesCommand) -> anyhow::Result<()> {
    let mut nodes = super::decode_limit!(NodesClient::new(client.channel()));
    match command {
        NodesCommand::List => {
            let r = nodes
                .list_nodes(client.request(pb::ListNodesRequest {}))
                .await?
                .into_inner();
            out.list(
                || Value::Array(r.nodes.iter().map(node_json).collect()),
                &[
                    "id",
                    "name",
                    "state",
                    "address",
                    "version",
                    "heartbeat",
                    "slots",
                    "runs",
                ],
                r.nodes.iter().map(|n| {
                    vec![
                        n.id.clone(),
                        n.name.clone(),
                        n.state.clone(),
                        n.address.clone(),
                        n.version.clone(),
                        render::time(n.heartbeat_at_unix_ms),
                        n.slots.to_string(),
                        n.runs.len().to_string(),
                    ]
                }),
            );
        }
        NodesCommand::Drain { node } => {
            nodes
                .drain_node(client.request(pb::DrainNodeRequest { node: node.clone() }))
                .await?;
            out.note(format!(
                "node {node} drains: it starts nothing new and leaves once its runs are over"
            ));
        }
    }
    Ok(())
}

fn node_json(n: &pb::Node) -> Value {
    json!({"id": n.id, "name": n.name, "state": n.state, "address": n.address,
           "version": n.version, "schema_version": n.schema_version,
           "started_at_unix_ms": n.started_at_unix_ms,
           "heartbeat_at_unix_ms": n.heartbeat_at_unix_ms, "slots": n.slots, "runs": n.runs})
}
