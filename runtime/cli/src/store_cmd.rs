//! `sluice store …`: work on a store without running a node — bring a PostgreSQL
//! store's schema up to date; copy a whole store into an empty one of any backend,
//! verified.
//!
//! Owns the store commands' arguments and output; the work is the store crate's.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use sluice_store::Location;
use sluice_store::copy::{CopyError, CopyReport, Progress};
use sluice_store::postgres::PgStore;

/// Work on a store without running a node.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Bring a PostgreSQL store's schema up to date (a node also does at start).
    Migrate {
        /// The store: `postgres://user:password@host:port/database`.
        #[arg(long, env = "SLUICE_STORE", hide_env_values = true)]
        store: String,
    },
    /// Copy a whole store into an empty one, of either backend (typically a node's
    /// embedded store into PostgreSQL, before the node joins a cluster), then verify
    /// the copy: documents, runs and their events, and every stream's records, change
    /// feed and cursor, by counts and SHA-256 digests. Stop the node first.
    Copy {
        /// The store to copy: a directory (the embedded store) or a
        /// `postgres://user:password@host:port/database` URL.
        #[arg(long)]
        from: String,
        /// The store to copy into, which must be empty: a directory or a
        /// `postgres://` URL (its schema is created if need be).
        #[arg(long)]
        to: String,
        /// The node's files beside a PostgreSQL store (registered connectors'
        /// components); a directory store keeps its own. Components are copied when
        /// the two stores' files are in different directories.
        #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data")]
        data_dir: PathBuf,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command.
pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Copy {
            from,
            to,
            data_dir,
            json,
        } => copy(&from, &to, &data_dir, json).await,
        StoreCommand::Migrate { store } => {
            let location = Location::parse(&store);
            let Location::Postgres(url) = &location else {
                bail!(
                    "--store {location}: migrations apply to a PostgreSQL store \
                     (postgres://…); the embedded store needs none"
                );
            };
            let migrated = PgStore::migrate(url)
                .await
                .with_context(|| format!("migrating the store at {location}"))?;
            if migrated.from == migrated.to {
                println!(
                    "the store at {location} is at schema version {}: nothing to do",
                    migrated.to
                );
            } else {
                println!(
                    "migrated the store at {location} from schema version {} to {}",
                    migrated.from, migrated.to
                );
            }
            Ok(())
        }
    }
}

/// The directory of `location`'s files: its own for a directory store.
fn files_dir(location: &Location, data_dir: &std::path::Path) -> PathBuf {
    match location {
        Location::Dir(dir) => dir.clone(),
        Location::Postgres(_) => data_dir.to_owned(),
    }
}

async fn copy(from: &str, to: &str, data_dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let (from, to) = (Location::parse(from), Location::parse(to));
    let same = match (&from, &to) {
        (Location::Dir(a), Location::Dir(b)) => {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
        }
        (a, b) => a == b,
    };
    if same {
        bail!("--from and --to name the same store ({from}): nothing to copy");
    }
    if let Location::Dir(dir) = &from
        && !dir.exists()
    {
        bail!("--from {from}: no such directory");
    }
    let source = from
        .open(&files_dir(&from, data_dir))
        .await
        .with_context(|| format!("opening the store to copy at {from}"))?;
    let target = to
        .open(&files_dir(&to, data_dir))
        .await
        .with_context(|| format!("opening the store to copy into at {to}"))?;
    let began = Instant::now();
    let shown = Mutex::new(Instant::now());
    let progress = |p: Progress<'_>| {
        if json {
            return;
        }
        let mut last = shown.lock().unwrap_or_else(|e| e.into_inner());
        let line = match p {
            Progress::Catalog { documents } => format!("catalog: {documents} document(s)"),
            Progress::Runs { runs, events } => format!("runs: {runs} run(s), {events} event(s)"),
            Progress::Stream {
                connection,
                stream,
                changes,
            } => {
                // At most a line a second while a stream is copied.
                if last.elapsed() < Duration::from_secs(1) {
                    return;
                }
                format!("hub: {connection}/{stream}: {changes} change(s)")
            }
            Progress::Verifying => "verifying…".to_owned(),
        };
        *last = Instant::now();
        eprintln!("{line}");
    };
    let report = match sluice_store::copy::copy(&source, &target, &progress).await {
        Ok(report) => report,
        Err(e @ CopyError::TargetNotEmpty(_)) => {
            return Err(anyhow::Error::new(e).context(format!("copying {from} to {to}")));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "copying {from} to {to} (the target may hold part of the copy now: empty \
                 it before copying again)"
            )));
        }
    };
    let elapsed = began.elapsed();
    if json {
        println!("{}", report_json(&from, &to, &report, elapsed));
    } else {
        print_report(&from, &to, &report, elapsed);
    }
    Ok(())
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

/// `n` with thousands separated: 1,000,000.
fn n(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn print_report(from: &Location, to: &Location, r: &CopyReport, elapsed: Duration) {
    let v = &r.verified;
    println!(
        "copied {from} to {to} in {:.1} s: verified",
        elapsed.as_secs_f64()
    );
    println!(
        "  catalog     {} document(s) of {} kind(s)",
        n(v.documents as u64),
        v.kinds
    );
    println!(
        "  runs        {} run(s), {} event(s), {} log entries ({:.1} s with the catalog)",
        n(v.runs as u64),
        n(v.events),
        n(r.run_log_entries),
        r.runs_elapsed.as_secs_f64()
    );
    let rate = r.changes() as f64 / r.hub_elapsed.as_secs_f64().max(0.001);
    println!(
        "  hub         {} stream(s), {} live record(s), {} change(s) ({:.1} s, {} changes/s)",
        v.streams.len(),
        n(r.live_records()),
        n(r.changes()),
        r.hub_elapsed.as_secs_f64(),
        n(rate as u64)
    );
    for s in &v.streams {
        println!(
            "    {}/{}: {} live, {} change(s), cursor {}, feed sha256 {}, records sha256 {}",
            s.connection,
            s.stream,
            n(s.live),
            n(s.changes),
            s.cursor
                .as_deref()
                .map_or("none".to_owned(), |c| format!("{c:?}")),
            &s.feed_digest,
            &s.live_digest
        );
    }
    if r.components > 0 {
        println!("  components  {} file(s)", r.components);
    }
    println!(
        "  verified    in {:.1} s: the same documents, runs (summaries and events), and per \
         stream the same cursor, counts and digests",
        r.verify_elapsed.as_secs_f64()
    );
}

fn report_json(
    from: &Location,
    to: &Location,
    r: &CopyReport,
    elapsed: Duration,
) -> serde_json::Value {
    let v = &r.verified;
    serde_json::json!({
        "from": from.to_string(),
        "to": to.to_string(),
        "verified": true,
        "seconds": secs(elapsed),
        "catalog": {"kinds": v.kinds, "documents": v.documents},
        "runs": {"runs": v.runs, "events": v.events, "log_entries": r.run_log_entries,
                 "seconds": secs(r.runs_elapsed)},
        "hub": {
            "live_records": r.live_records(),
            "changes": r.changes(),
            "seconds": secs(r.hub_elapsed),
            "streams": v.streams.iter().map(|s| serde_json::json!({
                "connection": s.connection,
                "stream": s.stream,
                "live": s.live,
                "changes": s.changes,
                "cursor": s.cursor,
                "feed_sha256": s.feed_digest,
                "records_sha256": s.live_digest,
            })).collect::<Vec<_>>(),
        },
        "components": r.components,
        "verify_seconds": secs(r.verify_elapsed),
    })
}
