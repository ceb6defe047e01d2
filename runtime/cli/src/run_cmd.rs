//! `sluice run FILE`: define connections and workflows from a JSON file and run them
//! in the foreground against the node's store (the embedded one by default, or
//! PostgreSQL with `--store postgres://…`), with a progress display.
//!
//! On start it first resumes every run the store holds in flight (a run never
//! silently vanishes), then starts a run of each selected workflow that has none in
//! flight. Killing the process at any instant is safe: the next `sluice run` resumes
//! from the last committed checkpoint.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_engine::{Aging, Connectors, Definitions, Engine, Limits, Trigger};
use sluice_host::{Host, HostSettings};
use sluice_store::{Location, RunId, RunState, RunStatus, Store};

use crate::exit;

/// Run workflows defined in a file, in the foreground.
#[derive(Args)]
pub struct RunArgs {
    /// JSON file of definitions: `{"connections": [...], "workflows": [...]}`.
    file: PathBuf,
    /// Directory of the embedded store, and of the node's files beside any store.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data")]
    data_dir: PathBuf,
    /// The store: a `postgres://user:password@host:port/database` URL, or a
    /// directory for the embedded store (default: `--data-dir`).
    #[arg(long, env = "SLUICE_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Run only these workflows of the file (repeatable); default: all of them.
    #[arg(long = "workflow")]
    workflows: Vec<String>,
    /// Print each run's outcome as one JSON object per line on stdout.
    #[arg(long)]
    json: bool,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
    /// Only queue a run of each selected workflow (durably) and exit; a later
    /// `sluice run` drives them.
    #[arg(long, conflicts_with = "resume_only")]
    enqueue_only: bool,
    /// Only resume runs in flight; start no new run.
    #[arg(long)]
    resume_only: bool,
    /// Runs driven at once; the others wait in the ready queue by priority.
    #[arg(long, default_value_t = 8)]
    slots: usize,
    /// Runs driven at once per tenant.
    #[arg(long)]
    per_tenant: Option<usize>,
    #[command(flatten)]
    secrets: crate::secrets_cmd::SecretsKeyArgs,
}

/// Where the store is: `store` if given, else the embedded store in `data_dir`.
pub fn location(store: Option<&str>, data_dir: &std::path::Path) -> Location {
    match store {
        Some(s) => Location::parse(s),
        None => Location::Dir(data_dir.to_owned()),
    }
}

/// Opens the store at `location`, whose node keeps its files in `data_dir`.
pub async fn open_store(location: &Location, data_dir: &std::path::Path) -> anyhow::Result<Store> {
    location
        .open(data_dir)
        .await
        .with_context(|| match location {
            // The store's own error says why: another process, a full disk, damage.
            Location::Dir(dir) => format!("opening the store in {}", dir.display()),
            // The store's own error names the URL (without its password).
            Location::Postgres(_) => "opening the store".to_owned(),
        })
}

/// The engine of a foreground process: first-party connectors by name.
pub async fn engine(
    location: &Location,
    data_dir: &std::path::Path,
    limits: Limits,
) -> anyhow::Result<Engine> {
    engine_named(
        location,
        data_dir,
        limits,
        format!("pid-{}", std::process::id()),
    )
    .await
}

/// An engine whose attempts name `worker` as their holder (a node's id).
pub async fn engine_named(
    location: &Location,
    data_dir: &std::path::Path,
    limits: Limits,
    worker: String,
) -> anyhow::Result<Engine> {
    let store = open_store(location, data_dir).await?;
    let host = Host::new(HostSettings::default()).context("starting the connector host")?;
    let named = sluice_artifacts::FIRST_PARTY
        .iter()
        .map(|c| (c.name.to_owned(), c.wasm));
    let engine = Engine::with_limits(
        store,
        Connectors::new(host, named),
        worker,
        limits,
        Aging::default(),
    );
    // On a store several nodes share, a credential's declared budget is the
    // cluster's: nodes hold slots of each window in the store.
    sluice_engine::share_rate_budgets(&engine);
    Ok(engine)
}

/// The concurrency limits from `--slots` and `--per-tenant`.
pub fn limits(slots: usize, per_tenant: Option<usize>) -> anyhow::Result<Limits> {
    if slots == 0 {
        bail!("--slots must be at least 1");
    }
    if per_tenant == Some(0) {
        bail!("--per-tenant must be at least 1");
    }
    Ok(Limits {
        slots,
        per_tenant,
        ..Limits::default()
    })
}

/// Reads and checks a file of definitions.
pub fn read_definitions(file: &std::path::Path) -> anyhow::Result<Definitions> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Definitions::from_json(&text).with_context(|| format!("in {}", file.display()))
}

/// Stores every connection and workflow of `defs` in the engine's catalog.
pub async fn define(engine: &Engine, defs: &Definitions) -> anyhow::Result<()> {
    for c in &defs.connections {
        engine
            .define_connection(c)
            .await
            .with_context(|| format!("connection `{}`", c.name))?;
    }
    for w in &defs.workflows {
        engine
            .define_workflow(w)
            .await
            .with_context(|| format!("workflow `{}`", w.name))?;
    }
    Ok(())
}

/// Runs the command.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let defs = read_definitions(&args.file)?;
    for name in &args.workflows {
        if !defs.workflows.iter().any(|w| &w.name == name) {
            bail!(
                "--workflow {name}: no workflow of that name in {}",
                args.file.display()
            );
        }
    }
    let selected: Vec<String> = defs
        .workflows
        .iter()
        .map(|w| w.name.clone())
        .filter(|n| args.workflows.is_empty() || args.workflows.contains(n))
        .collect();

    let limits = limits(args.slots, args.per_tenant)?;
    let location = location(args.store.as_deref(), &args.data_dir);
    let engine = engine(&location, &args.data_dir, limits).await?;
    crate::secrets_cmd::unlock(&engine, &args.secrets, &location, &args.data_dir).await?;
    define(&engine, &defs).await?;

    if args.enqueue_only {
        for name in &selected {
            match engine.in_flight_run(name).await? {
                Some(run) => eprintln!("workflow {name} already has run {run} in flight"),
                None => {
                    let run = engine.start(name, Trigger::Manual).await?;
                    eprintln!("queued run {run} of workflow {name}");
                }
            }
        }
        return Ok(());
    }
    let started = Instant::now();
    let recovery = engine.recover().await.context("resuming runs in flight")?;
    for run in &recovery.resumed {
        eprintln!("resuming run {run} from its last checkpoint");
    }
    for (run, error) in &recovery.unreadable {
        eprintln!("warning: run {run} cannot be resumed: {error}");
    }
    let mut runs: Vec<(String, RunId)> = Vec::new();
    for name in &selected {
        let run = match engine.in_flight_run(name).await? {
            Some(run) => run,
            None if args.resume_only => continue,
            None => engine.start(name, Trigger::Manual).await?,
        };
        runs.push((name.clone(), run));
    }
    // Runs resumed from the store that this file does not select run to the end too.
    for run in &recovery.resumed {
        if !runs.iter().any(|(_, r)| r == run) {
            let state = engine.state(*run).await?;
            runs.push((state.workflow, *run));
        }
    }

    let display = Display::new(args.quiet);
    let mut watchers = Vec::new();
    for (workflow, run) in &runs {
        watchers.push(display.watch(&engine, workflow, *run));
    }
    let mut failed = 0;
    for (workflow, run) in &runs {
        let state = engine.wait(*run).await?;
        report(workflow, &state, started.elapsed(), args.json);
        if let Some(fault) = engine.store_fault()
            && !state.status.kind().is_terminal()
        {
            eprintln!(
                "run {run} stopped: {}; it resumes from its last checkpoint with the next \
                 `sluice run` on this store",
                fault.message
            );
        }
        if !matches!(state.status, RunStatus::Completed) {
            failed += 1;
        }
    }
    for w in watchers {
        w.abort();
    }
    display.clear();
    if failed > 0 {
        return Err(anyhow::Error::new(exit::RunsFailed(failed)));
    }
    Ok(())
}

struct Display {
    bars: MultiProgress,
}

impl Display {
    fn new(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Display {
            bars: MultiProgress::with_draw_target(target),
        }
    }

    fn watch(&self, engine: &Engine, workflow: &str, run: RunId) -> tokio::task::JoinHandle<()> {
        let bar = self.bars.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}: {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(workflow.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        let rx = engine.watch(run);
        tokio::spawn(async move {
            let Some(mut rx) = rx else { return };
            loop {
                let p = rx.borrow_and_update().clone();
                bar.set_message(format!(
                    "attempt {} · {} · {} records · {} batches · {:.1} MiB · {:.0} records/s",
                    p.attempt,
                    p.stream.as_deref().unwrap_or("-"),
                    p.records,
                    p.batches,
                    p.bytes as f64 / (1 << 20) as f64,
                    p.records_per_sec
                ));
                if p.finished || rx.changed().await.is_err() {
                    break;
                }
            }
            bar.finish_and_clear();
        })
    }

    fn clear(&self) {
        let _ = self.bars.clear();
    }
}

fn status_text(status: &RunStatus) -> String {
    match status {
        RunStatus::DeadLettered { cause } => {
            format!("dead-lettered ({:?}): {}", cause.kind, cause.message)
        }
        other => other.kind().as_str().to_owned(),
    }
}

/// How long a run took, from its log: first start to its end (zero if it has not
/// both started and ended).
pub fn run_duration(state: &RunState) -> Duration {
    match (state.started_at_unix_ms, state.finished_at_unix_ms) {
        (Some(start), Some(end)) => Duration::from_millis(u64::try_from(end - start).unwrap_or(0)),
        _ => Duration::ZERO,
    }
}

pub fn report(workflow: &str, state: &RunState, elapsed: Duration, json: bool) {
    let sum = |f: fn(&sluice_store::log::StreamProgress) -> u64| -> u64 {
        state.progress.values().map(f).sum()
    };
    let records = state.total_records();
    if json {
        let streams: serde_json::Map<String, serde_json::Value> = state
            .progress
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "records": p.records, "batches": p.batches, "bytes": p.bytes,
                        "created": p.created, "updated": p.updated,
                        "unchanged": p.unchanged, "deleted": p.deleted,
                        "complete": p.complete, "checkpoint": p.checkpoint,
                    }),
                )
            })
            .collect();
        let line = serde_json::json!({
            "run": state.run_id.to_string(),
            "workflow": workflow,
            "status": state.status.kind().as_str(),
            "error": state.last_error.as_ref().map(|f| &f.message),
            "attempts": state.attempts,
            "records": records,
            "streams": streams,
        });
        println!("{line}");
        return;
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "run {} of {workflow}: {} after {} attempt(s): {records} records \
         ({} created, {} updated, {} unchanged, {} deleted) in {:.1} s, {:.0} records/s",
        state.run_id,
        status_text(&state.status),
        state.attempts,
        sum(|p| p.created),
        sum(|p| p.updated),
        sum(|p| p.unchanged),
        sum(|p| p.deleted),
        secs,
        records as f64 / secs
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_duration_is_its_own_start_to_end() {
        let event = |seq, at, kind| sluice_store::RunEvent::new(RunId::default(), seq, at, kind);
        use sluice_store::log::{EventKind, RunCompleted, RunScheduled, RunStarted, fold};
        let events = [
            event(
                1,
                1_000,
                EventKind::RunScheduled(RunScheduled {
                    workflow: "w".into(),
                    ..Default::default()
                }),
            ),
            event(2, 61_000, EventKind::RunStarted(RunStarted::default())),
            event(3, 63_500, EventKind::RunCompleted(RunCompleted {})),
        ];
        let state = fold(&events).expect("folds");
        assert_eq!(run_duration(&state), Duration::from_millis(2_500));
        let running = fold(&events[..2]).expect("folds");
        assert_eq!(run_duration(&running), Duration::ZERO);
    }
}
