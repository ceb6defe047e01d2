//! The `Connectors` service: register, list, inspect and remove connectors.

use sluice_engine::Engine;
use tonic::{Request, Response, Status};

use crate::auth::require_write;
use crate::pb::connectors_server::Connectors;
use crate::pb::{
    ConnectorInfo, GetConnectorRequest, ListConnectorsRequest, ListConnectorsResponse,
    RegisterConnectorRequest, RemoveConnectorResponse,
};
use crate::status::{self, required};

pub(crate) struct ConnectorsApi {
    pub engine: Engine,
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
        require_write(&request)?;
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
        _request: Request<ListConnectorsRequest>,
    ) -> Result<Response<ListConnectorsResponse>, Status> {
        let connectors = self
            .engine
            .connector_infos()
            .await
            .map_err(status::of)?
            .into_iter()
            .map(info)
            .collect();
        Ok(Response::new(ListConnectorsResponse { connectors }))
    }

    async fn get_connector(
        &self,
        request: Request<GetConnectorRequest>,
    ) -> Result<Response<ConnectorInfo>, Status> {
        let name = &request.get_ref().name;
        required("name", name)?;
        let (c, spec) = self.engine.connector_info(name).await.map_err(status::of)?;
        Ok(Response::new(ConnectorInfo {
            spec_json: spec.to_string(),
            ..info(c)
        }))
    }

    async fn remove_connector(
        &self,
        request: Request<GetConnectorRequest>,
    ) -> Result<Response<RemoveConnectorResponse>, Status> {
        require_write(&request)?;
        let name = &request.get_ref().name;
        required("name", name)?;
        self.engine
            .remove_connector(name)
            .await
            .map_err(status::of)?;
        Ok(Response::new(RemoveConnectorResponse {}))
    }
}
