//! `sluice serve FILE`: a node that keeps running: it defines the file's connections
//! and workflows, resumes runs in flight, runs each workflow once at start, then
//! follows their schedules, printing each run's outcome as it ends, until stopped
//! (SIGINT or SIGTERM). Stopping at any moment is safe: runs resume on the next start.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sluice_engine::Trigger;

use crate::run_cmd::{define, engine, limits, read_definitions, report};

/// Run a node in the foreground until stopped.
#[derive(Args)]
pub struct ServeArgs {
    /// JSON file of definitions: `{"connections": [...], "workflows": [...]}`.
    file: PathBuf,
    /// Directory of the embedded store.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data")]
    data_dir: PathBuf,
    /// Print each run's outcome as one JSON object per line on stdout.
    #[arg(long)]
    json: bool,
    /// Runs driven at once; the others wait in the ready queue by priority.
    #[arg(long, default_value_t = 8)]
    slots: usize,
    /// Runs driven at once per tenant.
    #[arg(long)]
    per_tenant: Option<usize>,
    /// Do not start a run of each workflow at start; only follow the schedules.
    #[arg(long)]
    no_initial_runs: bool,
}

/// Runs the command.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let defs = read_definitions(&args.file)?;
    let engine = engine(&args.data_dir, limits(args.slots, args.per_tenant)?)?;
    define(&engine, &defs)?;
    let mut ended = engine.subscribe_ended();
    let recovery = engine.recover().await.context("resuming runs in flight")?;
    for run in &recovery.resumed {
        eprintln!("resuming run {run} from its last checkpoint");
    }
    for (run, error) in &recovery.unreadable {
        eprintln!("warning: run {run} cannot be resumed: {error}");
    }
    if !args.no_initial_runs {
        for w in &defs.workflows {
            if engine.in_flight_run(&w.name).await?.is_none() {
                let run = engine.start(&w.name, Trigger::Manual).await?;
                eprintln!("started run {run} of workflow {}", w.name);
            }
        }
    }
    engine.start_scheduler(Duration::from_secs(1));
    eprintln!(
        "serving {} workflow(s) from {}; stop with Ctrl-C",
        defs.workflows.len(),
        args.data_dir.display()
    );
    let started = Instant::now();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            run = ended.recv() => {
                let Ok(run) = run else { continue };
                match engine.state(run).await {
                    Ok(state) => report(&state.workflow.clone(), &state, started.elapsed(), args.json),
                    Err(e) => eprintln!("run {run}: {e}"),
                }
            }
        }
    }
    eprintln!("stopping; runs in flight resume on the next start");
    Ok(())
}
