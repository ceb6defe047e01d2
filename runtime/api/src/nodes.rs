//! The `Nodes` service: the nodes sharing the store, and draining one.
//!
//! Nodes belong to no tenant: listing needs a token of every tenant, draining an
//! admin token.

use sluice_engine::Engine;
use tonic::{Request, Response, Status};

use crate::pb::nodes_server::Nodes;
use crate::pb::{DrainNodeRequest, DrainNodeResponse, ListNodesRequest, ListNodesResponse, Node};
use crate::{auth, status};

pub(crate) struct NodesApi {
    pub engine: Engine,
}

#[tonic::async_trait]
impl Nodes for NodesApi {
    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        auth::require_all_tenants(&request)?;
        let nodes = self.engine.nodes().await.map_err(status::of)?;
        let nodes = nodes
            .into_iter()
            .map(|n| Node {
                id: n.record.id,
                name: n.record.name,
                address: n.record.address,
                version: n.record.version,
                schema_version: n.record.schema_version,
                started_at_unix_ms: n.record.started_at_unix_ms,
                heartbeat_at_unix_ms: n.record.heartbeat_at_unix_ms,
                state: n.state.as_str().to_owned(),
                slots: n.record.slots,
                runs: n.runs.iter().map(ToString::to_string).collect(),
            })
            .collect();
        Ok(Response::new(ListNodesResponse {
            nodes,
            answered_by: self.engine.node().map(|n| n.id).unwrap_or_default(),
        }))
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeResponse>, Status> {
        auth::require_admin(&request)?;
        let node = request.into_inner().node;
        if node.is_empty() {
            return Err(Status::invalid_argument("node: give a node's id or name"));
        }
        self.engine.drain_node(&node).await.map_err(status::of)?;
        Ok(Response::new(DrainNodeResponse {}))
    }
}
