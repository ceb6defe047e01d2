//! The `Records` service: the hub's records by primary key and its change feed.
//!
//! Records belong to their connection's tenant: a token limited to tenants reads
//! only the hub of its tenants' connections (another's is NOT_FOUND, as an unknown
//! connection is).

use sluice_engine::Engine;
use sluice_store::hub::ChangeKind;
use tonic::{Request, Response, Status};

use crate::auth::{Caller, caller};
use crate::pb::records_server::Records;
use crate::pb::{Change, GetRecordRequest, ReadChangesRequest, ReadChangesResponse, Record};
use crate::status::{invalid, required};
use crate::visible;

/// Most changes returned at once.
const MAX_CHANGES: usize = 10_000;

pub(crate) struct RecordsApi {
    pub engine: Engine,
}

/// NOT_FOUND unless a caller limited to tenants sees `connection` (one of every
/// tenant reads any connection's hub, as before).
async fn check(engine: &Engine, caller: &Caller, connection: &str) -> Result<(), Status> {
    if caller.limited() {
        visible::connection(engine, caller, connection).await?;
    }
    Ok(())
}

fn hub_error(e: sluice_store::hub::HubError) -> Status {
    Status::internal(format!("hub: {e}"))
}

#[tonic::async_trait]
impl Records for RecordsApi {
    async fn get_record(
        &self,
        request: Request<GetRecordRequest>,
    ) -> Result<Response<Record>, Status> {
        let r = request.get_ref();
        required("connection", &r.connection)?;
        required("stream", &r.stream)?;
        check(&self.engine, &caller(&request), &r.connection).await?;
        let key: Vec<serde_json::Value> = serde_json::from_str(&r.primary_key_json)
            .map_err(|e| invalid("primary_key_json", format!("must be a JSON array: {e}")))?;
        let record = self
            .engine
            .store()
            .hub()
            .get(&r.connection, &r.stream, &key)
            .await
            .map_err(hub_error)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no record {} in stream `{}` of connection `{}`",
                    r.primary_key_json, r.stream, r.connection
                ))
            })?;
        Ok(Response::new(Record {
            primary_key_json: record.primary_key,
            version: record.version,
            data_json: record.data,
            first_seen_unix_ms: record.first_seen_ms,
            last_seen_unix_ms: record.last_seen_ms,
        }))
    }

    async fn read_changes(
        &self,
        request: Request<ReadChangesRequest>,
    ) -> Result<Response<ReadChangesResponse>, Status> {
        let r = request.get_ref();
        required("connection", &r.connection)?;
        required("stream", &r.stream)?;
        check(&self.engine, &caller(&request), &r.connection).await?;
        let limit = match r.limit {
            0 => 1000,
            n => usize::try_from(n).unwrap_or(MAX_CHANGES).min(MAX_CHANGES),
        };
        let (changes, next) = self
            .engine
            .store()
            .hub()
            .feed(&r.connection, &r.stream, r.after, limit)
            .await
            .map_err(hub_error)?;
        Ok(Response::new(ReadChangesResponse {
            changes: changes
                .into_iter()
                .map(|c| Change {
                    cursor: c.cursor,
                    kind: match c.kind {
                        ChangeKind::Created => "created",
                        ChangeKind::Updated => "updated",
                        ChangeKind::Deleted => "deleted",
                    }
                    .to_owned(),
                    primary_key_json: c.primary_key,
                    version: c.version,
                    data_json: c.data.unwrap_or_default(),
                })
                .collect(),
            next_cursor: next,
        }))
    }
}
