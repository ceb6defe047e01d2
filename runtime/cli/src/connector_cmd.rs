//! `sluice connector spec|check|discover|read`: run a connector `.wasm` in the
//! embedded host, no server needed.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use sluice_host::{Connector, Grant, Host, HostSettings, Limits, RateScope, SyncMode};

/// Run a connector directly.
#[derive(Subcommand)]
pub enum ConnectorCommand {
    /// Print the JSON Schema of the connector's configuration.
    Spec(WasmArgs),
    /// Validate a configuration and test that the system is reachable.
    Check(ConfigArgs),
    /// List the streams a configuration can read.
    Discover(ConfigArgs),
    /// Read a stream: records go to stdout as NDJSON, then the checkpoint to stderr.
    Read(ReadArgs),
    /// Print the rate limits the connector declares for a configuration (the
    /// other commands keep within them too).
    Limits(ConfigArgs),
}

/// Which component.
#[derive(Args)]
pub struct WasmArgs {
    /// The connector component (`.wasm`), or a first-party connector's name
    /// (`sample`, `rest`, `http-post`).
    #[arg(long)]
    wasm: String,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

/// A component with a configuration and its grant.
#[derive(Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    wasm: WasmArgs,
    /// Configuration file (JSON).
    #[arg(long, conflicts_with = "config_json")]
    config: Option<PathBuf>,
    /// Configuration as inline JSON.
    #[arg(long)]
    config_json: Option<String>,
    /// A host the connector may reach over HTTP (`api.example.com`, `127.0.0.1:8080`,
    /// `*.example.com`); repeat for more. Without any, no HTTP is allowed.
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// Memory cap of the connector, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mb: usize,
    /// Wall-clock timeout of one call, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    FullRefresh,
    Incremental,
}

/// What to read.
#[derive(Args)]
pub struct ReadArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The stream to read.
    #[arg(long)]
    stream: String,
    /// Sync mode.
    #[arg(long, value_enum, default_value = "full-refresh")]
    mode: Mode,
    /// Stop after this many records (rounded to whole batches of `--batch-size`).
    #[arg(long)]
    limit: Option<u64>,
    /// Resume after this checkpoint.
    #[arg(long)]
    checkpoint: Option<String>,
    /// Records per batch asked of the connector.
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
    /// Also write the final checkpoint to this file.
    #[arg(long)]
    checkpoint_file: Option<PathBuf>,
    /// Count records without printing them.
    #[arg(long)]
    quiet: bool,
}

/// Run one `sluice connector` command.
pub async fn run(cmd: ConnectorCommand) -> anyhow::Result<()> {
    let host = Host::new(HostSettings::default()).context("starting the connector host")?;
    match cmd {
        ConnectorCommand::Spec(args) => {
            let connector = load(&host, &args.wasm)?;
            let spec = connector.spec().await?;
            println!("{}", serde_json::to_string_pretty(&spec)?);
        }
        ConnectorCommand::Limits(args) => {
            let connector = load(&host, &args.wasm.wasm)?;
            let (grant, config) = grant_and_config(&args)?;
            let rules = connector.declared_limits(&grant, &config).await?;
            if args.wasm.json {
                println!("{}", serde_json::to_string_pretty(&rules)?);
            } else if rules.is_empty() {
                println!("the connector declares no rate limits for this configuration");
            } else {
                println!(
                    "{:<40} {:>10} {:>10} {:>10}",
                    "ENDPOINT", "REQUESTS", "PER MS", "IN FLIGHT"
                );
                for r in &rules {
                    let or_dash = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
                    println!(
                        "{:<40} {:>10} {:>10} {:>10}",
                        r.endpoint,
                        or_dash(r.requests),
                        r.per_ms,
                        or_dash(r.concurrent)
                    );
                }
            }
        }
        ConnectorCommand::Check(args) => {
            let connector = load(&host, &args.wasm.wasm)?;
            let (grant, config) = grant_and_config(&args)?;
            let grant = within_declared_limits(&connector, grant, &config).await?;
            connector.check(&grant, &config).await?;
            if args.wasm.json {
                println!("{}", serde_json::json!({"ok": true}));
            } else {
                println!("ok: the configuration is valid and the system is reachable");
            }
        }
        ConnectorCommand::Discover(args) => {
            let connector = load(&host, &args.wasm.wasm)?;
            let (grant, config) = grant_and_config(&args)?;
            let grant = within_declared_limits(&connector, grant, &config).await?;
            let streams = connector.discover(&grant, &config).await?;
            if args.wasm.json {
                println!("{}", serde_json::to_string_pretty(&streams)?);
            } else {
                println!(
                    "{:<24} {:<20} {:<16} MODES",
                    "STREAM", "PRIMARY KEY", "CURSOR"
                );
                for s in &streams {
                    let modes: Vec<&str> = s
                        .sync_modes
                        .iter()
                        .map(|m| match m {
                            SyncMode::FullRefresh => "full-refresh",
                            SyncMode::Incremental => "incremental",
                        })
                        .collect();
                    println!(
                        "{:<24} {:<20} {:<16} {}",
                        s.name,
                        s.primary_key.join(","),
                        s.cursor_field.as_deref().unwrap_or("-"),
                        modes.join(",")
                    );
                }
            }
        }
        ConnectorCommand::Read(args) => read(&host, args).await?,
    }
    Ok(())
}

async fn read(host: &Host, args: ReadArgs) -> anyhow::Result<()> {
    let connector = load(host, &args.config.wasm.wasm)?;
    let (grant, config) = grant_and_config(&args.config)?;
    let grant = within_declared_limits(&connector, grant, &config).await?;
    let mode = match args.mode {
        Mode::FullRefresh => SyncMode::FullRefresh,
        Mode::Incremental => SyncMode::Incremental,
    };
    let started = Instant::now();
    let mut reader = connector
        .open(
            &grant,
            &config,
            &args.stream,
            mode,
            args.checkpoint.as_deref(),
        )
        .await?;
    let mut checkpoint = args.checkpoint.clone();
    let (mut records, mut batches, mut bytes) = (0u64, 0u64, 0u64);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut complete = false;
    loop {
        let want = match args.limit {
            Some(limit) if records >= limit => break,
            Some(limit) => args
                .batch_size
                .min((limit - records).min(u64::from(u32::MAX)) as u32),
            None => args.batch_size,
        };
        let Some(batch) = reader.next(want).await? else {
            complete = true;
            break;
        };
        if !args.quiet {
            out.write_all(&batch.records)?;
        }
        records += u64::from(batch.count);
        bytes += batch.records.len() as u64;
        batches += 1;
        if batch.checkpoint.is_some() {
            checkpoint = batch.checkpoint;
        }
    }
    out.flush()?;
    drop(out);
    let elapsed = started.elapsed();
    let checkpoint_text = checkpoint.as_deref().unwrap_or("");
    if let Some(path) = &args.checkpoint_file {
        std::fs::write(path, checkpoint_text)
            .with_context(|| format!("writing the checkpoint to {}", path.display()))?;
    }
    let summary = serde_json::json!({
        "stream": args.stream,
        "records": records,
        "batches": batches,
        "bytes": bytes,
        "complete": complete,
        "checkpoint": checkpoint,
        "seconds": elapsed.as_secs_f64(),
        "records_per_second": rate(records, elapsed),
    });
    if args.config.wasm.json {
        eprintln!("{summary}");
    } else {
        eprintln!(
            "read {records} records in {batches} batches ({bytes} bytes) in {:.2?}: {:.0} records/s{}",
            elapsed,
            rate(records, elapsed),
            if complete { ", stream complete" } else { "" }
        );
        eprintln!("checkpoint: {checkpoint_text}");
    }
    Ok(())
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The connector `--wasm` names: a file, else a first-party connector (embedded in
/// this binary, so it needs no build directory).
fn load(host: &Host, wasm: &str) -> anyhow::Result<Connector> {
    // A file wins over a first-party name, so `./sample` can be tried as `sample`.
    let (path, bytes) = match sluice_artifacts::first_party(wasm) {
        Some(c) if !Path::new(wasm).exists() => {
            (PathBuf::from(c.built_from), Cow::Borrowed(c.wasm))
        }
        _ => {
            let bytes = std::fs::read(wasm).with_context(|| format!("reading connector {wasm}"))?;
            (PathBuf::from(wasm), Cow::Owned(bytes))
        }
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(host
        .load(&bytes)
        .with_context(|| format!("loading connector {}", path.display()))?
        .named(name))
}

fn grant_and_config(args: &ConfigArgs) -> anyhow::Result<(Arc<Grant>, String)> {
    let config = match (&args.config, &args.config_json) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?,
        (None, Some(json)) => json.clone(),
        (None, None) => "{}".to_string(),
    };
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&config) {
        let source = args
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "--config-json".into());
        bail!("the config in {source} is not valid JSON: {e}");
    }
    let grant = Grant {
        allowed_hosts: args.allow_hosts.clone(),
        limits: Limits {
            memory_bytes: args.memory_mb << 20,
            call_timeout: Duration::from_secs(args.timeout_secs),
            ..Limits::default()
        },
        ..Grant::default()
    };
    Ok((Arc::new(grant), config))
}

/// `grant` keeping within the rate limits the connector declares for `config`, so a
/// local read against a real API behaves as it will on a node.
async fn within_declared_limits(
    connector: &Connector,
    grant: Arc<Grant>,
    config: &str,
) -> anyhow::Result<Arc<Grant>> {
    let rules = connector.declared_limits(&grant, config).await?;
    Ok(Arc::new(Grant {
        rates: Arc::new(RateScope {
            connector: connector.name().into(),
            rules,
            ..RateScope::default()
        }),
        ..Grant::clone(&grant)
    }))
}
