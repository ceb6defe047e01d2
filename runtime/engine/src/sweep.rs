//! The engine's side of a cluster: joining it, the loop that renews the node's record
//! and sweeps for work, listing nodes, draining and leaving.
//!
//! A sweep reads every node's record and the runs in flight, then queues here the
//! runs that are this node's to go on with: a running attempt whose lease expired
//! (whoever held it: the driver takes it over only by a conditional append), and a
//! run waiting to start or to retry whose workflow this node owns and that it does
//! not hold yet. It also forgets definitions other nodes changed. It never appends to
//! a run itself except when the node hands its own runs over as it stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_model::{AttemptFailed, EventKind, FailureKind, RetryScheduled, RunStatus, StatusKind};
use sluice_store::log::RunFilter;

use crate::clock::now_unix_ms;
use crate::cluster::{self, ClusterSettings, Membership, NodeInfo, NodeRecord};
use crate::definitions::kind::{DRAIN, NODE};
use crate::engine::Engine;
use crate::error::EngineError;

impl Engine {
    /// Joins the nodes sharing the store: writes this node's record (its id is the
    /// engine's worker name) and starts the loop that renews it and sweeps for work
    /// every `settings.sweep`. Returns the record.
    pub async fn join_cluster(
        &self,
        settings: ClusterSettings,
        schema_version: i64,
    ) -> Result<NodeRecord, EngineError> {
        let membership = Arc::new(Membership::new(
            settings,
            self.inner.worker.clone(),
            schema_version,
        ));
        if self.inner.cluster.set(Arc::clone(&membership)).is_err() {
            return Err(EngineError::Cluster("this node already joined".into()));
        }
        self.put_record(&membership).await?;
        // The first sweep before anything else: it sets who owns which workflow, so
        // the first schedule pass fires only this node's.
        self.sweep(&membership).await?;
        let weak = Arc::downgrade(&self.inner);
        let (heartbeat, sweep) = (membership.settings.heartbeat, membership.settings.sweep);
        let record = membership
            .record
            .read()
            .map(|r| r.clone())
            .map_err(|_| EngineError::Cluster("node record poisoned".into()))?;
        tokio::spawn(async move {
            let mut last_sweep = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(heartbeat.min(sweep)).await;
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine { inner };
                if let Err(e) = engine.put_record(&membership).await {
                    tracing::warn!(error = %e, "cannot renew this node's record");
                }
                if last_sweep.elapsed() >= sweep {
                    last_sweep = tokio::time::Instant::now();
                    if let Err(e) = engine.sweep(&membership).await {
                        tracing::warn!(error = %e, "sweep for work failed; trying again");
                    }
                }
                if membership.record.read().is_ok_and(|r| r.stopped) {
                    return;
                }
            }
        });
        Ok(record)
    }

    /// Whether this node handles `workflow`'s fires and initial runs: always on its
    /// own; in a cluster, when it is the workflow's owner among the live nodes.
    pub fn owns(&self, workflow: &str) -> bool {
        self.inner.cluster.get().is_none_or(|c| c.owns(workflow))
    }

    /// This node's record, once it joined a cluster.
    pub fn node(&self) -> Option<NodeRecord> {
        let c = self.inner.cluster.get()?;
        c.record.read().ok().map(|r| r.clone())
    }

    /// Renews this node's record, stamped now.
    async fn put_record(&self, membership: &Membership) -> Result<(), EngineError> {
        let record = {
            let mut r = membership
                .record
                .write()
                .map_err(|_| EngineError::Cluster("node record poisoned".into()))?;
            r.heartbeat_at_unix_ms = now_unix_ms();
            r.clone()
        };
        let json = serde_json::to_vec(&record).map_err(|e| EngineError::Cluster(e.to_string()))?;
        self.inner
            .store
            .catalog()
            .put(NODE, &record.id, &json)
            .await?;
        Ok(())
    }

    /// Every node's record that can be read.
    async fn records(&self) -> Result<Vec<NodeRecord>, EngineError> {
        let mut out = Vec::new();
        for (name, raw) in self.inner.store.catalog().list(NODE).await? {
            match serde_json::from_slice::<NodeRecord>(&raw) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(node = %name, error = %e, "unreadable node record"),
            }
        }
        Ok(out)
    }

    /// One sweep: the cluster's records and runs in flight read, and the runs that are
    /// this node's to go on with queued.
    async fn sweep(&self, membership: &Membership) -> Result<(), EngineError> {
        let me = membership.id();
        if !membership.draining() && self.inner.store.catalog().get(DRAIN, &me).await?.is_some() {
            self.drain().await?;
        }
        let records = self.records().await?;
        for r in records.iter().filter(|r| membership.first_seen_newer(r)) {
            tracing::warn!(
                node = %r.id,
                version = %r.version,
                "node {} knows store schema version {}, newer than this node: upgrade this \
                 node (it refuses to start on a newer schema; running, it may not read what \
                 the newer nodes record)",
                r.name,
                r.schema_version
            );
        }
        let now = now_unix_ms();
        let in_flight = self
            .inner
            .store
            .log()
            .list_in_flight(&RunFilter::default())
            .await?;
        let elsewhere = in_flight
            .iter()
            .filter(|s| !self.inner.dispatch.holds(s.run_id))
            .map(|s| {
                (
                    s.workflow.clone(),
                    s.run_id,
                    s.status == StatusKind::Running,
                )
            })
            .collect();
        membership.update(&records, elsewhere);
        self.inner.definitions.resync().await?;
        if membership.draining() {
            return Ok(());
        }
        for s in &in_flight {
            if self.inner.dispatch.holds(s.run_id) {
                continue;
            }
            let ours = match s.status {
                StatusKind::Running => s.lease_until_unix_ms <= now,
                StatusKind::Scheduled | StatusKind::RetryWaiting => membership.owns(&s.workflow),
                _ => false,
            };
            if ours && let Err(e) = self.resume(s.run_id).await {
                tracing::warn!(run = %s.run_id, error = %e, "cannot pick the run up");
            }
        }
        Ok(())
    }

    /// Every node that shares the store, with its state and the runs it drives.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, EngineError> {
        let timeout = self
            .inner
            .cluster
            .get()
            .map_or(ClusterSettings::default().node_timeout, |c| {
                c.settings.node_timeout
            });
        let running = self.running().await?;
        let mut driven = cluster::driven_by(&running);
        let now = now_unix_ms();
        let mut nodes: Vec<NodeInfo> = self
            .records()
            .await?
            .into_iter()
            .map(|record| NodeInfo {
                state: record.state(now, timeout),
                runs: driven.remove(&record.id).unwrap_or_default(),
                record,
            })
            .collect();
        nodes.sort_by(|a, b| {
            a.record
                .started_at_unix_ms
                .cmp(&b.record.started_at_unix_ms)
        });
        Ok(nodes)
    }

    /// Asks node `id` to drain: it starts nothing new, its waiting runs go to other
    /// nodes, and it leaves once the runs it drives are over. This node drains at
    /// once; another sees the request at its next sweep.
    pub async fn drain_node(&self, id: &str) -> Result<(), EngineError> {
        if self.node().is_some_and(|n| n.id == id) {
            return self.drain().await;
        }
        let known = self
            .records()
            .await?
            .into_iter()
            .any(|r| r.id == id || r.name == id);
        if !known {
            return Err(EngineError::UnknownNode(id.to_owned()));
        }
        for r in self.records().await? {
            if r.id == id || r.name == id {
                self.inner.store.catalog().put(DRAIN, &r.id, b"{}").await?;
            }
        }
        Ok(())
    }

    /// Drains this node: the dispatcher starts nothing more, the runs waiting here
    /// leave the node (their owners pick them up), and the record says so.
    pub async fn drain(&self) -> Result<(), EngineError> {
        self.inner.draining.store(true, Ordering::Release);
        for run in self.inner.dispatch.waiting() {
            self.inner.dispatch.unqueue(run);
        }
        if let Some(c) = self.inner.cluster.get() {
            if let Ok(mut r) = c.record.write() {
                r.draining = true;
            }
            self.put_record(c).await?;
        }
        tracing::info!("draining: starting nothing new; waiting for the runs driven here");
        Ok(())
    }

    /// Whether this node drains.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Waits until this node drives no run (after [`Engine::drain`]).
    pub async fn drained(&self) {
        let mut ended = self.subscribe_ended();
        loop {
            if self.load().1 == 0 && self.inner.dispatch.driven().is_empty() {
                return;
            }
            tokio::select! {
                _ = ended.recv() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// Leaves the cluster: every run still driven here is handed over (its attempt
    /// recorded as interrupted and a retry due now, which any node may take, so no
    /// lease has to expire first; whatever the attempt still tries to commit is
    /// refused), and the record says the node stopped.
    pub async fn leave_cluster(&self) -> Result<(), EngineError> {
        self.inner.draining.store(true, Ordering::Release);
        let me = self.inner.worker.clone();
        for run in self.inner.dispatch.driven() {
            // The attempt goes on appending meanwhile: read and try again.
            for _ in 0..10 {
                if self.hand_over(run, &me).await? {
                    break;
                }
            }
        }
        if let Some(c) = self.inner.cluster.get() {
            if let Ok(mut r) = c.record.write() {
                r.stopped = true;
            }
            self.put_record(c).await?;
            self.inner.store.catalog().remove(DRAIN, &me).await?;
        }
        Ok(())
    }

    /// Hands `run` over if this node holds its running attempt; false if the log
    /// moved while it tried.
    async fn hand_over(&self, run: sluice_model::RunId, me: &str) -> Result<bool, EngineError> {
        let state = self.inner.store.log().state(run).await?;
        let RunStatus::Running { attempt } = state.status else {
            return Ok(true);
        };
        if state.lease.as_ref().is_some_and(|l| l.worker != me) {
            return Ok(true);
        }
        let handed = vec![
            EventKind::AttemptFailed(AttemptFailed {
                attempt,
                kind: FailureKind::Orchestration,
                message: format!(
                    "node `{me}` stopped; the run goes on from its last checkpoint on \
                     another node"
                ),
                retry_after_ms: 0,
            }),
            EventKind::RetryScheduled(RetryScheduled {
                attempt: attempt + 1,
                not_before_unix_ms: now_unix_ms(),
            }),
        ];
        match self
            .inner
            .store
            .log()
            .append_expecting(run, state.last_seq, handed)
            .await
        {
            Ok(_) => {
                tracing::info!(%run, "handed the run over");
                Ok(true)
            }
            Err(sluice_store::LogError::Conflict { .. }) => Ok(false),
            Err(e) if e.is_fenced() => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}
