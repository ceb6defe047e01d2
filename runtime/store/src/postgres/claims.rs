//! The rules a group of writes keeps across runs, for several nodes on one store: one
//! run per schedule fire; no run of a workflow starting while another run of it
//! holds the workflow (running or waiting for a retry); no run starting while its
//! tenant has as many runs running as the start allows.
//!
//! Owns the statements that enforce them inside the committer's transaction: the
//! latest fire of each workflow (table `fires`) and a transaction-scoped advisory lock
//! per workflow and per tenant a group starts runs of, taken after the runs' row
//! locks and in name order, so that two nodes' groups never wait on each other in a
//! cycle. It must never
//! decide anything about a single run's log: that is `transition` and `fence`.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::Transaction;
use sluice_model::{EventKind, RunId, StatusKind};
use uuid::Uuid;

use crate::log::{LogError, RunSummary};

/// The runs holding each workflow a group starts, and the runs running of each tenant
/// it starts runs of, as the group goes on.
#[derive(Default)]
pub(crate) struct Holds {
    holders: HashMap<String, Vec<RunId>>,
    tenants: HashMap<String, Vec<RunId>>,
}

/// The tenant a job's events start a run of under a limit, and the limit.
pub(crate) fn limited_start<'a>(
    summary: Option<&'a RunSummary>,
    kinds: &[EventKind],
) -> Option<(&'a str, u32)> {
    let summary = summary?;
    if summary.status == StatusKind::Running {
        return None;
    }
    kinds.iter().find_map(|k| match k {
        EventKind::RunStarted(s) if s.tenant_slots > 0 => {
            Some((summary.tenant.as_str(), s.tenant_slots))
        }
        _ => None,
    })
}

/// The workflow a job's events start exclusively: a `RunStarted` that holds its
/// workflow alone, for a run that does not hold it yet.
pub(crate) fn exclusive_start<'a>(
    summary: Option<&'a RunSummary>,
    kinds: &[EventKind],
) -> Option<&'a str> {
    let summary = summary?;
    let holds = matches!(
        summary.status,
        StatusKind::Running | StatusKind::RetryWaiting
    );
    let exclusive = kinds
        .iter()
        .any(|k| matches!(k, EventKind::RunStarted(s) if s.exclusive));
    (exclusive && !holds).then_some(summary.workflow.as_str())
}

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('sluice ' || $1::text || ' ' \
     || current_schema() || ' ' || $2::text, 0))";

const HOLDERS: &str = "SELECT workflow, run_id FROM runs WHERE workflow = ANY($1) \
     AND status IN ('running', 'retry_waiting')";

const TENANT_RUNNING: &str =
    "SELECT tenant, run_id FROM runs WHERE tenant = ANY($1) AND status = 'running'";

impl Holds {
    /// Locks `workflows` and `tenants` for the rest of the transaction and reads the
    /// runs holding the workflows and the tenants' runs running.
    pub(crate) async fn lock(
        tx: &Transaction<'_>,
        workflows: BTreeSet<&str>,
        tenants: BTreeSet<&str>,
    ) -> Result<Holds, tokio_postgres::Error> {
        let mut holds = Holds::default();
        if workflows.is_empty() && tenants.is_empty() {
            return Ok(holds);
        }
        let lock = tx.prepare_cached(LOCK).await?;
        for (what, names) in [("workflow", &workflows), ("tenant", &tenants)] {
            for name in names {
                tx.execute(&lock, &[&what, name]).await?;
            }
        }
        for (sql, names, into) in [
            (HOLDERS, workflows, &mut holds.holders),
            (TENANT_RUNNING, tenants, &mut holds.tenants),
        ] {
            if names.is_empty() {
                continue;
            }
            let names: Vec<&str> = names.into_iter().collect();
            let read = tx.prepare_cached(sql).await?;
            for row in tx.query(&read, &[&names]).await? {
                let name: String = row.try_get(0)?;
                let run: Uuid = row.try_get(1)?;
                into.entry(name).or_default().push(RunId(run.into_bytes()));
            }
        }
        Ok(holds)
    }

    /// Refuses `run`'s start if its tenant has `limit` other runs running.
    pub(crate) fn check_tenant(
        &self,
        tenant: &str,
        limit: u32,
        run: RunId,
    ) -> Result<(), LogError> {
        let running = self
            .tenants
            .get(tenant)
            .map_or(0, |r| r.iter().filter(|r| **r != run).count());
        if u32::try_from(running).unwrap_or(u32::MAX) >= limit {
            return Err(LogError::TenantBusy {
                run,
                tenant: tenant.to_owned(),
                limit,
            });
        }
        Ok(())
    }

    /// Refuses `run`'s start if another run holds `workflow`.
    pub(crate) fn check(&self, workflow: &str, run: RunId) -> Result<(), LogError> {
        match self
            .holders
            .get(workflow)
            .and_then(|h| h.iter().find(|r| **r != run))
        {
            Some(holder) => Err(LogError::WorkflowBusy {
                run,
                workflow: workflow.to_owned(),
                holder: *holder,
            }),
            None => Ok(()),
        }
    }

    /// Notes where a written job left its run, so later jobs of the group see it.
    pub(crate) fn note(&mut self, summary: &RunSummary) {
        if let Some(holders) = self.holders.get_mut(&summary.workflow) {
            holders.retain(|r| *r != summary.run_id);
            if matches!(
                summary.status,
                StatusKind::Running | StatusKind::RetryWaiting
            ) {
                holders.push(summary.run_id);
            }
        }
        if let Some(running) = self.tenants.get_mut(&summary.tenant) {
            running.retain(|r| *r != summary.run_id);
            if summary.status == StatusKind::Running {
                running.push(summary.run_id);
            }
        }
    }
}

/// The schedule fire a job's `RunScheduled` creates a run for, if any.
pub(crate) fn fire_of(kinds: &[EventKind]) -> Option<(&str, i64)> {
    kinds.iter().find_map(|k| match k {
        EventKind::RunScheduled(s) if s.fire_at_unix_ms > 0 => {
            Some((s.workflow.as_str(), s.fire_at_unix_ms))
        }
        _ => None,
    })
}

const RECORD_FIRE: &str = "INSERT INTO fires (workflow, fire_at_ms, run_id) VALUES ($1, $2, $3) \
     ON CONFLICT (workflow) DO UPDATE SET fire_at_ms = excluded.fire_at_ms, \
     run_id = excluded.run_id WHERE fires.fire_at_ms < excluded.fire_at_ms";

/// Records `run` as the run of `workflow`'s fire at `fire_at_ms`, or refuses it: a
/// run for that fire or a later one exists.
pub(crate) async fn record_fire(
    tx: &Transaction<'_>,
    workflow: &str,
    fire_at_ms: i64,
    run: RunId,
) -> Result<Result<(), LogError>, tokio_postgres::Error> {
    let record = tx.prepare_cached(RECORD_FIRE).await?;
    let id = Uuid::from_bytes(run.0);
    let written = tx.execute(&record, &[&workflow, &fire_at_ms, &id]).await?;
    Ok(if written == 1 {
        Ok(())
    } else {
        Err(LogError::FireTaken {
            workflow: workflow.to_owned(),
            fire_at_unix_ms: fire_at_ms,
        })
    })
}
