//! The `Workflows` service: define, read, pause, resume and trigger workflows, and
//! list a schedule's upcoming fires.
//!
//! A workflow belongs to its connection's tenant: a caller sees and changes only
//! those of its tenants.

use chrono::Utc;
use sluice_engine::{Engine, Trigger, WorkflowDef};
use tonic::{Request, Response, Status};

use crate::auth::{Caller, caller, require_write};
use crate::pb::workflows_server::Workflows;
use crate::pb::{
    DeleteWorkflowResponse, GetWorkflowRequest, ListUpcomingFiresRequest,
    ListUpcomingFiresResponse, ListWorkflowsRequest, ListWorkflowsResponse, PutWorkflowRequest,
    RunSummary, Workflow,
};
use crate::status::{self, invalid, required};
use crate::{convert, paging, visible};

/// Most upcoming fires listed at once.
const MAX_UPCOMING: usize = 1000;

pub(crate) struct WorkflowsApi {
    pub engine: Engine,
}

impl WorkflowsApi {
    async fn set_paused(
        &self,
        caller: &Caller,
        name: &str,
        paused: bool,
    ) -> Result<Response<Workflow>, Status> {
        required("name", name)?;
        visible::workflow(&self.engine, caller, name).await?;
        self.engine
            .pause_workflow(name, paused)
            .await
            .map_err(status::of)?;
        let def = self.engine.workflow(name).await.map_err(status::of)?;
        Ok(Response::new(convert::workflow(&def)))
    }
}

#[tonic::async_trait]
impl Workflows for WorkflowsApi {
    async fn put_workflow(
        &self,
        request: Request<PutWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let caller = require_write(&request)?;
        let text = &request.get_ref().definition_json;
        let def: WorkflowDef =
            serde_json::from_str(text).map_err(|e| invalid("definition_json", e))?;
        if caller.limited() {
            // Its connection must be one the caller sees (else: not found), and the
            // name must not hold another tenant's workflow.
            visible::connection(&self.engine, &caller, &def.connection).await?;
            let taken = match self.engine.workflow(&def.name).await {
                Ok(old) => !visible::sees_workflow(&self.engine, &caller, &old).await,
                Err(_) => false,
            };
            visible::name_free("workflow", &def.name, taken)?;
        }
        self.engine
            .define_workflow(&def)
            .await
            .map_err(status::of)?;
        Ok(Response::new(convert::workflow(&def)))
    }

    async fn get_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let name = &request.get_ref().name;
        required("name", name)?;
        let def = visible::workflow(&self.engine, &caller(&request), name).await?;
        Ok(Response::new(convert::workflow(&def)))
    }

    async fn list_workflows(
        &self,
        request: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
        let caller = caller(&request);
        let r = request.get_ref();
        let mut seen = Vec::new();
        for w in self.engine.workflows().await.map_err(status::of)? {
            if (r.connection.is_empty() || w.connection == r.connection)
                && visible::sees_workflow(&self.engine, &caller, &w).await
            {
                seen.push(w);
            }
        }
        let (workflows, next_page_token) = paging::by_name(
            seen,
            |w| w.name.as_str(),
            |w| convert::workflow(&w),
            r.page_size,
            &r.page_token,
        )?;
        Ok(Response::new(ListWorkflowsResponse {
            workflows,
            next_page_token,
        }))
    }

    async fn pause_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let caller = require_write(&request)?;
        self.set_paused(&caller, &request.get_ref().name, true)
            .await
    }

    async fn resume_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let caller = require_write(&request)?;
        self.set_paused(&caller, &request.get_ref().name, false)
            .await
    }

    async fn delete_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<DeleteWorkflowResponse>, Status> {
        let caller = require_write(&request)?;
        let name = &request.get_ref().name;
        required("name", name)?;
        visible::workflow(&self.engine, &caller, name).await?;
        self.engine
            .delete_workflow(name)
            .await
            .map_err(status::of)?;
        Ok(Response::new(DeleteWorkflowResponse {}))
    }

    async fn trigger_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<RunSummary>, Status> {
        let caller = require_write(&request)?;
        let name = &request.get_ref().name;
        required("name", name)?;
        visible::workflow(&self.engine, &caller, name).await?;
        let run = self
            .engine
            .start(name, Trigger::Manual)
            .await
            .map_err(status::of)?;
        let summary = self
            .engine
            .store()
            .log()
            .summary(run)
            .await
            .map_err(|e| status::of(e.into()))?
            .ok_or_else(|| Status::internal(format!("run {run} was started but has no summary")))?;
        Ok(Response::new(convert::summary(&summary)))
    }

    async fn list_upcoming_fires(
        &self,
        request: Request<ListUpcomingFiresRequest>,
    ) -> Result<Response<ListUpcomingFiresResponse>, Status> {
        let r = request.get_ref();
        required("name", &r.name)?;
        visible::workflow(&self.engine, &caller(&request), &r.name).await?;
        let count = match r.count {
            0 => 10,
            n => usize::try_from(n).unwrap_or(MAX_UPCOMING).min(MAX_UPCOMING),
        };
        let fires = self
            .engine
            .upcoming(&r.name, Utc::now(), count)
            .await
            .map_err(status::of)?;
        Ok(Response::new(ListUpcomingFiresResponse {
            fire_at_unix_ms: fires
                .iter()
                .map(chrono::DateTime::timestamp_millis)
                .collect(),
        }))
    }
}
