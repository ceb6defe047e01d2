//! The `Connections` service: define, read, check and discover connections.
//!
//! A connection belongs to its tenant: a caller sees and changes only those of its
//! tenants. Its connector comes from the registry only (never a file of the node).

use sluice_engine::{ConnectionDef, Engine};
use tonic::{Request, Response, Status};

use crate::auth::{caller, require_write};
use crate::pb::connections_server::Connections;
use crate::pb::{
    CheckConnectionResponse, Connection, DiscoverConnectionResponse, GetConnectionRequest,
    ListConnectionsRequest, ListConnectionsResponse, PutConnectionRequest, Stream,
};
use crate::status::{self, invalid, required};
use crate::{convert, paging, visible};

pub(crate) struct ConnectionsApi {
    pub engine: Engine,
}

#[tonic::async_trait]
impl Connections for ConnectionsApi {
    async fn put_connection(
        &self,
        request: Request<PutConnectionRequest>,
    ) -> Result<Response<Connection>, Status> {
        let caller = require_write(&request)?;
        let text = &request.get_ref().definition_json;
        let def: ConnectionDef =
            serde_json::from_str(text).map_err(|e| invalid("definition_json", e))?;
        caller.may_write_in(&def.tenant)?;
        if caller.limited() {
            let taken = self
                .engine
                .connection(&def.name)
                .await
                .is_ok_and(|old| !caller.sees(&old.tenant));
            visible::name_free("connection", &def.name, taken)?;
        }
        self.engine
            .define_connection_from_registry(&def)
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
        let def = visible::connection(&self.engine, &caller(&request), name).await?;
        Ok(Response::new(convert::connection(&def)))
    }

    async fn list_connections(
        &self,
        request: Request<ListConnectionsRequest>,
    ) -> Result<Response<ListConnectionsResponse>, Status> {
        let caller = caller(&request);
        let r = request.get_ref();
        let all = self.engine.connections().await.map_err(status::of)?;
        let (connections, next_page_token) = paging::by_name(
            all.iter().filter(|c| {
                (r.tenant.is_empty() || c.tenant == r.tenant) && caller.sees(&c.tenant)
            }),
            |c| c.name.as_str(),
            |c| convert::connection(c),
            r.page_size,
            &r.page_token,
        )?;
        Ok(Response::new(ListConnectionsResponse {
            connections,
            next_page_token,
        }))
    }

    async fn check_connection(
        &self,
        request: Request<GetConnectionRequest>,
    ) -> Result<Response<CheckConnectionResponse>, Status> {
        let caller = require_write(&request)?;
        let name = &request.get_ref().name;
        required("name", name)?;
        visible::connection(&self.engine, &caller, name).await?;
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
        let caller = require_write(&request)?;
        let name = &request.get_ref().name;
        required("name", name)?;
        visible::connection(&self.engine, &caller, name).await?;
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
