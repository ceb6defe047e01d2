//! The engine's metrics, in Prometheus' registry: what operators watch.
//!
//! Owns the counters and histograms the engine updates as runs move (queue wait,
//! run duration, records and batches committed, attempt failures by kind, rate-limit
//! waits, runs ended by status, the scheduler's own CPU time) and the gauges read at
//! scrape time (runs waiting and driven, store size). It never decides anything:
//! dropping every metric would change no run.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sluice_model::{FailureKind, StatusKind};

use crate::cpu::Seconds;

/// Label of a metric by error kind or status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Kind {
    pub kind: String,
}

/// The engine's metrics. Cheap to clone; clones share the values.
#[derive(Clone)]
pub(crate) struct EngineMetrics {
    pub queue_wait_seconds: Histogram,
    pub run_duration_seconds: Histogram,
    pub runs_ended: Family<Kind, Counter>,
    pub attempt_failures: Family<Kind, Counter>,
    pub rate_limit_waits: Counter,
    pub rate_limit_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub records: Counter,
    pub batches: Counter,
    /// Appends refused because their attempt had lost the run (its lease).
    pub fenced_commits: Counter,
    /// Runs this node took over from a worker whose lease expired.
    pub runs_taken_over: Counter,
    /// Attempts this node stopped because it could not renew their lease in time.
    pub leases_lost: Counter,
    pub runs_waiting: Gauge,
    pub runs_driven: Gauge,
    pub store_bytes: Gauge,
    /// 1 while the store writes, 0 while it cannot (see `crate::store_health`).
    pub store_writable: Gauge,
    /// CPU time of the scheduler's own work, by loop (see `crate::cpu`).
    pub scheduler_cpu_seconds: Family<Kind, Seconds>,
    registry: Arc<Registry>,
}

impl EngineMetrics {
    pub(crate) fn new(limiter: Arc<sluice_host::limiter::Limiter>) -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let queue_wait_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 12));
        let run_duration_seconds = Histogram::new(exponential_buckets(0.01, 4.0, 12));
        let m = EngineMetrics {
            queue_wait_seconds,
            run_duration_seconds,
            runs_ended: Family::default(),
            attempt_failures: Family::default(),
            rate_limit_waits: Counter::default(),
            rate_limit_wait_seconds: Counter::default(),
            records: Counter::default(),
            batches: Counter::default(),
            fenced_commits: Counter::default(),
            runs_taken_over: Counter::default(),
            leases_lost: Counter::default(),
            runs_waiting: Gauge::default(),
            runs_driven: Gauge::default(),
            store_bytes: Gauge::default(),
            store_writable: Gauge::default(),
            scheduler_cpu_seconds: Family::default(),
            registry: Arc::new(Registry::default()),
        };
        registry.register(
            "queue_wait_seconds",
            "Time from a run being due to a slot taking it",
            m.queue_wait_seconds.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Time from a run's start to its end (completed, cancelled or dead-lettered)",
            m.run_duration_seconds.clone(),
        );
        registry.register(
            "runs_ended",
            "Runs that ended, by status",
            m.runs_ended.clone(),
        );
        registry.register(
            "attempt_failures",
            "Failed attempts, by error kind",
            m.attempt_failures.clone(),
        );
        registry.register(
            "rate_limit_waits",
            "Times a run waited because a source was rate limited",
            m.rate_limit_waits.clone(),
        );
        registry.register(
            "rate_limit_wait_seconds",
            "Seconds runs were asked to wait by rate-limited sources",
            m.rate_limit_wait_seconds.clone(),
        );
        registry.register("records", "Records committed to the hub", m.records.clone());
        registry.register(
            "batches",
            "Batches committed to the hub with their checkpoint",
            m.batches.clone(),
        );
        registry.register(
            "fenced_commits",
            "Commits and events of this node refused because their attempt had lost the \
             run to another node (its lease expired)",
            m.fenced_commits.clone(),
        );
        registry.register(
            "runs_taken_over",
            "Runs this node took over from a worker whose lease expired",
            m.runs_taken_over.clone(),
        );
        registry.register(
            "leases_lost",
            "Attempts this node stopped because it could not renew their lease in time \
             (the store was out of reach); the run goes on wherever it is taken over",
            m.leases_lost.clone(),
        );
        registry.register(
            "runs_waiting",
            "Runs in the ready queue",
            m.runs_waiting.clone(),
        );
        registry.register("runs_driven", "Runs holding a slot", m.runs_driven.clone());
        m.store_writable.set(1);
        registry.register(
            "store_writable",
            "1 while the store writes; 0 while it cannot (its disk is full, or it stopped \
             writing until the node restarts), and runs wait",
            m.store_writable.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes the embedded store takes on disk",
            m.store_bytes.clone(),
        );
        registry.register(
            "scheduler_cpu_seconds",
            "CPU time of the scheduler's own work: handling fires (fire_pass) and \
             starting runs (dispatch); runs' work and log writes are not part of it",
            m.scheduler_cpu_seconds.clone(),
        );
        registry.register_collector(Box::new(crate::limiter_metrics::LimiterCollector(limiter)));
        EngineMetrics {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// Counts a run that ended with status `kind`, with its (start, end) if known.
    pub(crate) fn run_ended(&self, kind: StatusKind, span: Option<(i64, i64)>) {
        self.runs_ended
            .get_or_create(&self::kind(kind.as_str()))
            .inc();
        if let Some((start, end)) = span {
            self.run_duration_seconds
                .observe(end.saturating_sub(start).max(0) as f64 / 1000.0);
        }
    }

    /// Counts a failed attempt by its kind, and a wait a rate-limited source asked for.
    pub(crate) fn attempt_failed(&self, failure: FailureKind, retry_after: Option<Duration>) {
        self.attempt_failures
            .get_or_create(&kind(failure.as_str()))
            .inc();
        if failure == FailureKind::RateLimited {
            self.rate_limit_waits.inc();
            if let Some(wait) = retry_after {
                self.rate_limit_wait_seconds.inc_by(wait.as_secs_f64());
            }
        }
    }

    /// The counter of the scheduler's own CPU time spent in loop `part`.
    pub(crate) fn scheduler_cpu(&self, part: &str) -> Seconds {
        self.scheduler_cpu_seconds
            .get_or_create(&kind(part))
            .clone()
    }

    /// CPU seconds the scheduler spent on its own work so far, all loops.
    pub(crate) fn scheduler_cpu_total(&self) -> f64 {
        crate::cpu::LOOPS
            .iter()
            .map(|part| self.scheduler_cpu(part).get())
            .sum()
    }

    /// The registry in the Prometheus text format, its gauges set to what they read
    /// now: runs `waiting` and `driven`, and the store's size if known.
    pub(crate) fn text(&self, waiting: usize, driven: usize, store_bytes: Option<u64>) -> String {
        self.runs_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.runs_driven
            .set(i64::try_from(driven).unwrap_or(i64::MAX));
        if let Some(bytes) = store_bytes {
            self.store_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        self.encode()
    }

    /// The registry, encoded in the Prometheus text format.
    fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// A label from a name.
pub(crate) fn kind(name: &str) -> Kind {
    Kind {
        kind: name.to_owned(),
    }
}
