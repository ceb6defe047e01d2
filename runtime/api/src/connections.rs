//! The `Connections` service: define, read, check and discover connections.

use sluice_engine::{ConnectionDef, Engine};
use tonic::{Request, Response, Status};

use crate::auth::require_write;
use crate::convert;
use crate::pb::connections_server::Connections;
use crate::pb::{
    CheckConnectionResponse, Connection, DiscoverConnectionResponse, GetConnectionRequest,
    ListConnectionsRequest, ListConnectionsResponse, PutConnectionRequest, Stream,
};
use crate::status::{self, invalid, required};

pub(crate) struct ConnectionsApi {
    pub engine: Engine,
}

#[tonic::async_trait]
impl Connections for ConnectionsApi {
    async fn put_connection(
        &self,
        request: Request<PutConnectionRequest>,
    ) -> Result<Response<Connection>, Status> {
        require_write(&request)?;
        let text = &request.get_ref().definition_json;
        let def: ConnectionDef =
            serde_json::from_str(text).map_err(|e| invalid("definition_json", e))?;
        self.engine
            .define_connection(&def)
            .await
            .map_err(status::of)?;
        Ok(Response::new(convert::connection(&def)))
    }

    async fn get_connection(
        &self,
        request: Request<GetConnectionRequest>,
    ) -> Result<Response<Connection>, Status> {
        let name = &request.get_ref().name;
        required("name", name)?;
        let def = self.engine.connection(name).await.map_err(status::of)?;
        Ok(Response::new(convert::connection(&def)))
    }

    async fn list_connections(
        &self,
        request: Request<ListConnectionsRequest>,
    ) -> Result<Response<ListConnectionsResponse>, Status> {
        let tenant = &request.get_ref().tenant;
        let connections = self
            .engine
            .connections()
            .await
            .map_err(status::of)?
            .iter()
            .filter(|c| tenant.is_empty() || &c.tenant == tenant)
            .map(|c| convert::connection(c))
            .collect();
        Ok(Response::new(ListConnectionsResponse { connections }))
    }

    async fn check_connection(
        &self,
        request: Request<GetConnectionRequest>,
    ) -> Result<Response<CheckConnectionResponse>, Status> {
        require_write(&request)?;
        let name = &request.get_ref().name;
        required("name", name)?;
        let failure = self
            .engine
            .check_connection(name)
            .await
            .map_err(status::of)?;
        Ok(Response::new(match failure {
            None => CheckConnectionResponse {
                ok: true,
                ..CheckConnectionResponse::default()
            },
            Some(f) => CheckConnectionResponse {
                ok: false,
                message: f.message,
                error_kind: convert::kind_name(f.kind),
            },
        }))
    }

    async fn discover_connection(
        &self,
        request: Request<GetConnectionRequest>,
    ) -> Result<Response<DiscoverConnectionResponse>, Status> {
        require_write(&request)?;
        let name = &request.get_ref().name;
        required("name", name)?;
        let streams = self
            .engine
            .discover_connection(name)
            .await
            .map_err(status::of)?
            .map_err(|f| Status::failed_precondition(f.message))?;
        Ok(Response::new(DiscoverConnectionResponse {
            streams: streams
                .into_iter()
                .map(|s| Stream {
                    name: s.name,
                    primary_key: s.primary_key,
                    sync_modes: s
                        .sync_modes
                        .iter()
                        .map(|m| format!("{m:?}").to_ascii_lowercase())
                        .collect(),
                    cursor_field: s.cursor_field.unwrap_or_default(),
                })
                .collect(),
        }))
    }
}
