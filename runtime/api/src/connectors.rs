//! The `Connectors` service: register, list, inspect and remove connectors.
//!
//! The registry belongs to no tenant: registering and removing need an admin token;
//! every caller may list and inspect, but sees only its own tenants' connections
//! among a connector's users.

use sluice_engine::Engine;
use tonic::{Request, Response, Status};

use crate::auth::{Caller, caller, require_admin};
use crate::paging;
use crate::pb::connectors_server::Connectors;
use crate::pb::{
    ConnectorInfo, GetConnectorRequest, ListConnectorsRequest, ListConnectorsResponse,
    RegisterConnectorRequest, RemoveConnectorResponse,
};
use crate::status::{self, required};

pub(crate) struct ConnectorsApi {
    pub engine: Engine,
}

/// `c` without the users the caller does not see.
async fn seen_by(
    engine: &Engine,
    caller: &Caller,
    mut c: sluice_engine::ConnectorInfo,
) -> sluice_engine::ConnectorInfo {
    if caller.limited() {
        let mut used_by = Vec::new();
        for name in c.used_by {
            if engine
                .connection(&name)
                .await
                .is_ok_and(|d| caller.sees(&d.tenant))
            {
                used_by.push(name);
            }
        }
        c.used_by = used_by;
    }
    c
}

fn info(c: sluice_engine::ConnectorInfo) -> ConnectorInfo {
    ConnectorInfo {
        name: c.name,
        version: c.version,
        digest: c.digest,
        first_party: c.first_party,
        used_by: c.used_by,
        spec_json: String::new(),
    }
}

#[tonic::async_trait]
impl Connectors for ConnectorsApi {
    async fn register_connector(
        &self,
        request: Request<RegisterConnectorRequest>,
    ) -> Result<Response<ConnectorInfo>, Status> {
        require_admin(&request)?;
        let r = request.into_inner();
        required("name", &r.name)?;
        if r.wasm.is_empty() {
            return Err(status::invalid("wasm", "is empty"));
        }
        let registered = self
            .engine
            .register_connector(&r.name, &r.version, &r.wasm)
            .await
            .map_err(status::of)?;
        Ok(Response::new(info(registered)))
    }

    async fn list_connectors(
        &self,
        request: Request<ListConnectorsRequest>,
    ) -> Result<Response<ListConnectorsResponse>, Status> {
        let caller = caller(&request);
        let r = request.get_ref();
        let mut all = Vec::new();
        for c in self.engine.connector_infos().await.map_err(status::of)? {
            all.push(seen_by(&self.engine, &caller, c).await);
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let (connectors, next_page_token) =
            paging::by_name(all, |c| c.name.as_str(), info, r.page_size, &r.page_token)?;
        Ok(Response::new(ListConnectorsResponse {
            connectors,
            next_page_token,
        }))
    }

    async fn get_connector(
        &self,
        request: Request<GetConnectorRequest>,
    ) -> Result<Response<ConnectorInfo>, Status> {
        let name = &request.get_ref().name;
        required("name", name)?;
        let (c, spec) = self.engine.connector_info(name).await.map_err(status::of)?;
        let c = seen_by(&self.engine, &caller(&request), c).await;
        Ok(Response::new(ConnectorInfo {
            spec_json: spec.to_string(),
            ..info(c)
        }))
    }

    async fn remove_connector(
        &self,
        request: Request<GetConnectorRequest>,
    ) -> Result<Response<RemoveConnectorResponse>, Status> {
        require_admin(&request)?;
        let name = &request.get_ref().name;
        required("name", name)?;
        self.engine
            .remove_connector(name)
            .await
            .map_err(status::of)?;
        Ok(Response::new(RemoveConnectorResponse {}))
    }
}
