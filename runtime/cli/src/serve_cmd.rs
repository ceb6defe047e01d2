//! `sluice serve FILE`: a node that keeps running: it defines the file's connections
//! and workflows, resumes runs in flight, runs each workflow once at start, then
//! follows their schedules, printing each run's outcome as it ends, until stopped
//! (SIGINT or SIGTERM). Stopping at any moment is safe: runs resume on the next start.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sluice_api::{ApiServer, Scope, Tls, Tokens, serve_metrics_with_token};
use sluice_engine::{ClusterSettings, Trigger};

use crate::run_cmd::{
    define, engine_named, limits, location, read_definitions, report, run_duration,
};

/// Run a node in the foreground until stopped.
#[derive(Args)]
pub struct ServeArgs {
    /// JSON file of definitions: `{"connections": [...], "workflows": [...]}`.
    pub(crate) file: PathBuf,
    /// JSON file of node settings (`store`, `data_dir`, `listen`, `metrics_listen`, `slots`,
    /// `per_tenant`, `tokens`, `read_tokens`, `tokens_file`, `api_tokens`,
    /// `metrics_token`, `secrets_key_file`); flags and environment win over it.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Directory of the embedded store, and of the node's files beside any store.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data")]
    pub(crate) data_dir: PathBuf,
    /// The store: a `postgres://user:password@host:port/database` URL, or a
    /// directory for the embedded store (default: `--data-dir`).
    #[arg(long, env = "SLUICE_STORE", hide_env_values = true)]
    pub(crate) store: Option<String>,
    /// Print each run's outcome as one JSON object per line on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Runs driven at once; the others wait in the ready queue by priority.
    #[arg(long, default_value_t = 8)]
    pub(crate) slots: usize,
    /// Runs driven at once per tenant.
    #[arg(long)]
    pub(crate) per_tenant: Option<usize>,
    /// Do not start a run of each workflow at start; only follow the schedules.
    #[arg(long)]
    pub(crate) no_initial_runs: bool,
    /// Address of the gRPC API (port 0: any free port, printed at start).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:7600")]
    pub(crate) listen: String,
    /// Admin API tokens: everything on every tenant (comma-separated in the
    /// environment); with no token configured the API is open to every caller.
    #[arg(
        long = "token",
        env = "SLUICE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) tokens: Vec<String>,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`).
    #[arg(long, env = "SLUICE_METRICS_LISTEN", default_value = "127.0.0.1:9600")]
    pub(crate) metrics_listen: String,
    /// Serve the API over TLS with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Read-only API tokens on every tenant.
    #[arg(
        long = "read-token",
        env = "SLUICE_READ_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) read_tokens: Vec<String>,
    /// JSON file of API tokens with roles and tenants:
    /// `[{"token" | "token_sha256": "…", "role": "admin" | "operator" | "read-only",
    /// "tenants": ["…"]}]` (no tenants: every tenant). Keep `token_sha256` (hex
    /// SHA-256 of the token) to store no usable secret.
    #[arg(long, env = "SLUICE_TOKENS_FILE")]
    pub(crate) tokens_file: Option<PathBuf>,
    /// API token entries from the node config file (`api_tokens`), same shape as
    /// the tokens file.
    #[arg(skip)]
    pub(crate) api_tokens: Vec<sluice_api::TokenEntry>,
    /// Require this token (`Authorization: Bearer …`) to scrape `/metrics`; API
    /// tokens are not accepted there. Without it `/metrics` is open.
    #[arg(long, env = "SLUICE_METRICS_TOKEN", hide_env_values = true)]
    pub(crate) metrics_token: Option<String>,
    /// The node's name in a cluster (default: the host's name); its id adds the
    /// process and start time, so a restarted node is a new node.
    #[arg(long, env = "SLUICE_NODE_NAME")]
    pub(crate) node_name: Option<String>,
    /// In a cluster: how often the node renews its record (milliseconds).
    #[arg(long, env = "SLUICE_HEARTBEAT_MS", default_value_t = 1_000)]
    pub(crate) heartbeat_ms: u64,
    /// In a cluster: a node silent this long is lost, and its workflows move to
    /// the others (milliseconds). Its runs move as their leases expire (each
    /// workflow's `timeouts.heartbeat_secs`).
    #[arg(long, env = "SLUICE_NODE_TIMEOUT_MS", default_value_t = 10_000)]
    pub(crate) node_timeout_ms: u64,
    /// In a cluster: how often the node looks for runs to take over or pick up
    /// (milliseconds).
    #[arg(long, env = "SLUICE_SWEEP_MS", default_value_t = 1_000)]
    pub(crate) sweep_ms: u64,
    /// In a cluster: on SIGTERM, drain first (start nothing new, let the runs driven
    /// here finish) for at most this many seconds, then hand the rest over.
    #[arg(long, env = "SLUICE_DRAIN_SECS", default_value_t = 0)]
    pub(crate) drain_secs: u64,
    #[command(flatten)]
    pub(crate) secrets: crate::secrets_cmd::SecretsKeyArgs,
}

/// The node's id: its name, its process and its start time, unique per start.
fn node_id(name: &str) -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000);
    format!("{name}-{}-{started:06}", std::process::id())
}

/// The host's name, or `node` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

/// A listener on `addr` (port 0: any free port) and the address it got.
async fn bind(
    addr: &str,
    what: &str,
) -> anyhow::Result<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for {what} on {addr}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("the address of {what}"))?;
    Ok((listener, local))
}

/// The API tokens: `--token` (admin), `--read-token` (read-only), the tokens file
/// and the config file's `api_tokens` (roles and tenants).
fn api_tokens(args: &ServeArgs) -> anyhow::Result<Tokens> {
    let mut entries = args.api_tokens.clone();
    if let Some(file) = &args.tokens_file {
        entries.extend(Tokens::read_file(file)?);
    }
    let tokens = Tokens::new(
        args.tokens
            .iter()
            .map(|t| (t.clone(), Scope::Write))
            .chain(args.read_tokens.iter().map(|t| (t.clone(), Scope::Read))),
    )
    .with_entries(&entries)?;
    Ok(tokens)
}

/// Runs the command.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let defs = read_definitions(&args.file)?;
    let location = location(args.store.as_deref(), &args.data_dir);
    let name = args.node_name.clone().unwrap_or_else(host_name);
    let id = node_id(&name);
    let engine = engine_named(
        &location,
        &args.data_dir,
        limits(args.slots, args.per_tenant)?,
        id.clone(),
    )
    .await?;
    let clustered = engine.store().shared();
    crate::secrets_cmd::unlock(&engine, &args.secrets, &location, &args.data_dir).await?;
    define(&engine, &defs).await?;
    let mut ended = engine.subscribe_ended();
    // A node of a cluster leaves the runs in flight to the sweeps: other nodes may be
    // driving them.
    if !clustered {
        let recovery = engine.recover().await.context("resuming runs in flight")?;
        for run in &recovery.resumed {
            eprintln!("resuming run {run} from its last checkpoint");
        }
        for (run, error) in &recovery.unreadable {
            eprintln!("warning: run {run} cannot be resumed: {error}");
        }
    }
    let (listener, addr) = bind(&args.listen, "the API").await?;
    if clustered {
        let settings = ClusterSettings {
            name,
            address: addr.to_string(),
            heartbeat: Duration::from_millis(args.heartbeat_ms.max(1)),
            node_timeout: Duration::from_millis(args.node_timeout_ms.max(1)),
            sweep: Duration::from_millis(args.sweep_ms.max(1)),
            slots: args.slots,
        };
        engine
            .join_cluster(settings, sluice_store::postgres::SCHEMA_VERSION)
            .await
            .context("joining the cluster")?;
        eprintln!("node {id} joined the cluster");
    }
    if !args.no_initial_runs {
        for w in &defs.workflows {
            // In a cluster, each workflow's owner starts its initial run.
            if engine.owns(&w.name) && engine.in_flight_run(&w.name).await?.is_none() {
                match engine.start(&w.name, Trigger::Manual).await {
                    Ok(run) => eprintln!("started run {run} of workflow {}", w.name),
                    // The node still serves (and reports) while its store cannot write.
                    Err(e) if cannot_write(&e) => {
                        eprintln!(
                            "warning: workflow {}'s first run did not start: {e}",
                            w.name
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    engine.start_scheduler(Duration::from_secs(1));
    eprintln!("API listening on {addr}");
    let tokens = api_tokens(&args)?;
    let (metrics_listener, metrics_addr) = bind(&args.metrics_listen, "metrics").await?;
    eprintln!(
        "metrics on http://{metrics_addr}/metrics{}",
        if args.metrics_token.is_some() {
            " (token required)"
        } else {
            ""
        }
    );
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_metrics_with_token(
        engine.clone(),
        metrics_listener,
        args.metrics_token.clone(),
        async {
            let _ = metrics_stopped.await;
        },
    ));
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = ApiServer::new(engine.clone(), tokens);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |p: &PathBuf| {
            std::fs::read(p).with_context(|| format!("reading the TLS file {}", p.display()))
        };
        server = server.with_tls(Tls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        });
    }
    let api = tokio::spawn(server.serve(listener, async {
        let _ = api_stopped.await;
    }));
    eprintln!(
        "serving {} workflow(s) from {location}; stop with Ctrl-C",
        defs.workflows.len(),
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let mut terminated = false;
    let mut reopen = false;
    loop {
        tokio::select! {
            // The store stopped writing and can be opened again (space was freed):
            // the node restarts in place to open it, and its runs resume.
            () = store_reopenable(&engine), if !clustered => {
                reopen = true;
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => {
                terminated = true;
                break;
            }
            // Asked to drain (`sluice nodes drain`): once the runs driven here are
            // over, the node leaves.
            () = async {
                while !engine.draining() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                engine.drained().await;
            }, if clustered => {
                eprintln!("drained: every run driven here is over");
                break;
            }
            run = ended.recv() => {
                let Ok(run) = run else { continue };
                match engine.state(run).await {
                    // Parked until the store writes again (see `sluice_engine::StoreFault`).
                    Ok(state) if !state.status.kind().is_terminal() => {
                        if let Some(fault) = engine.store_fault() {
                            eprintln!("run {run} waits for the store: {}", fault.message);
                        }
                    }
                    Ok(state) => report(&state.workflow.clone(), &state, run_duration(&state), args.json),
                    Err(e) => eprintln!("run {run}: {e}"),
                }
            }
        }
    }
    if clustered {
        if terminated && args.drain_secs > 0 && !engine.draining() {
            eprintln!("draining for at most {} s", args.drain_secs);
            engine.drain().await.context("draining")?;
            let _ =
                tokio::time::timeout(Duration::from_secs(args.drain_secs), engine.drained()).await;
        }
        engine
            .leave_cluster()
            .await
            .context("leaving the cluster")?;
        eprintln!("node {id} left the cluster; its runs go on on the other nodes");
    } else {
        eprintln!("stopping; runs in flight resume on the next start");
    }
    let _ = stop_api.send(());
    let _ = stop_metrics.send(());
    if let Ok(Err(e)) = api.await {
        eprintln!("the API stopped with an error: {e}");
    }
    if reopen {
        return Err(restart_in_place());
    }
    Ok(())
}

/// Whether an error means the store cannot write for now.
fn cannot_write(e: &sluice_engine::EngineError) -> bool {
    matches!(e, sluice_engine::EngineError::Store(sluice_store::StoreError::Log(e))
        if e.is_out_of_space() || e.is_stopped())
}

/// Returns once the store stopped writing and opening it again would succeed.
async fn store_reopenable(engine: &sluice_engine::Engine) {
    loop {
        if engine.store_fault().is_some_and(|f| f.reopen) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Replaces this process by a fresh `sluice` with the same arguments: the only way
/// to open again a store whose engine stopped (its file lock and threads go with the
/// process). Runs in flight resume from their last checkpoint, as after any stop.
/// Returns only if that failed.
fn restart_in_place() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    eprintln!("the store can be opened again: the node restarts to open it");
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return anyhow::Error::new(e).context("finding this program to restart it"),
    };
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    anyhow::Error::new(err).context(format!("restarting {}", exe.display()))
}
