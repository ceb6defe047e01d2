//! `sluice store …`: work on a store without running a node — bring a PostgreSQL
//! store's schema up to date; copy a whole store into an empty one of any backend,
//! verified; check a stopped store for damage, naming each; make the repairs that
//! lose nothing.
//!
//! Owns the store commands' arguments and output; the work is the store crate's.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use sluice_store::copy::{CopyError, CopyReport, Progress};
use sluice_store::postgres::PgStore;
use sluice_store::sled::repair::RepairOptions;
use sluice_store::verify::{Damage, Found, Report, Subject};
use sluice_store::{Location, Store};

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
    /// Check a stopped store for damage: every run's summary, events (read and folded)
    /// and log, the runs in flight, every stream's change feed, records and counts,
    /// every catalog document, and for the embedded store its indexes and stored
    /// batches. Each damage is printed as found, naming the run (and event), the
    /// stream (and record or batch), the document or the index entry. Exits 0 when
    /// the store is clean, 1 when damage was found. Stop the node first: a store
    /// another process holds is refused.
    Verify {
        /// The store: a directory (the embedded store) or a
        /// `postgres://user:password@host:port/database` URL.
        #[arg(long, env = "SLUICE_STORE", hide_env_values = true)]
        store: String,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Make the repairs of an embedded store that lose nothing, saying each: remove
    /// a snapshot a killed process left half written, rebuild the runs' indexes from
    /// the runs' summaries; then verify the store. Stop the node first.
    Repair {
        /// The store: a directory (the embedded store).
        #[arg(long, env = "SLUICE_STORE", hide_env_values = true)]
        store: String,
        /// Only say what would be done: nothing is opened or written.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Also accept a store refused because it lost writes it had made durable
        /// (damage made the storage engine drop them): it opens again with what it
        /// holds, and the runs and records written from the damaged place on are
        /// given up. Prefer restoring a backup.
        #[arg(long)]
        accept_loss: bool,
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
        StoreCommand::Verify { store, json } => verify(&Location::parse(&store), json).await,
        StoreCommand::Repair {
            store,
            dry_run,
            json,
            accept_loss,
        } => {
            let options = RepairOptions {
                dry_run,
                accept_loss,
            };
            repair(&Location::parse(&store), options, json).await
        }
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

/// Prints progress to stderr, at most a line a second (none with `--json`).
fn progress_line(json: bool) -> impl Fn(&str) + Send + Sync {
    let shown: Mutex<Option<Instant>> = Mutex::new(None);
    move |line: &str| {
        if json {
            return;
        }
        let mut last = shown.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        eprintln!("{line}");
    }
}

/// Verifies the store at `location`, printing each damage as it is found (not with
/// `json`).
async fn verify_store(location: &Location, json: bool) -> anyhow::Result<Report> {
    let progress = progress_line(json);
    let listen = |found: Found<'_>| match found {
        Found::Damage(d) => {
            if !json {
                println!("damaged: {d}");
            }
        }
        Found::Progress(p) => progress(&match p {
            sluice_store::verify::Progress::Catalog { documents } => {
                format!("catalog: {documents} document(s)")
            }
            sluice_store::verify::Progress::Runs { runs, events } => {
                format!("runs: {runs} run(s), {events} event(s)")
            }
            sluice_store::verify::Progress::Stream {
                connection,
                stream,
                changes,
            } => format!("hub: {connection}/{stream}: {changes} change(s)"),
            sluice_store::verify::Progress::Step(step) => format!("checking the {step}…"),
        }),
    };
    let report = match location {
        Location::Dir(dir) => {
            if !dir.is_dir() {
                bail!("--store {location}: no such directory");
            }
            sluice_store::sled::verify::verify_dir(dir, &listen).await
        }
        Location::Postgres(url) => {
            let backend = PgStore::connect(url)
                .await
                .with_context(|| format!("opening the store at {location}"))?;
            // Verifying reads no file beside the store.
            let store = Store::with_backend(std::sync::Arc::new(backend), "");
            sluice_store::verify::verify(&store, &listen).await
        }
    };
    report.with_context(|| format!("verifying the store at {location}"))
}

async fn verify(location: &Location, json: bool) -> anyhow::Result<()> {
    let report = match verify_store(location, json).await {
        Ok(report) => report,
        Err(e) => {
            // A reader of the JSON learns that the store could not be checked, and why.
            if json {
                println!(
                    "{}",
                    serde_json::json!({"store": location.to_string(), "clean": false,
                                       "error": format!("{e:#}")})
                );
            }
            return Err(e);
        }
    };
    if json {
        println!("{}", verify_json(location, &report));
    } else {
        print_verified(location, &report);
    }
    damage_found(location, &report)
}

/// The error a verification that found damage ends with (its exit code: 1).
fn damage_found(location: &Location, report: &Report) -> anyhow::Result<()> {
    if report.clean() {
        return Ok(());
    }
    bail!(
        "found {} damage(s) in the store at {location}{}",
        report.damaged,
        match location {
            Location::Dir(_) =>
                ": `sluice store repair` rebuilds the runs' indexes; other \
                               damage needs the store restored from a backup",
            Location::Postgres(_) => ": restore the damaged data from a backup",
        }
    )
}

fn print_verified(location: &Location, r: &Report) {
    let c = &r.checked;
    let verdict = if r.clean() {
        "no damage found".to_owned()
    } else {
        format!("{} damage(s) found", n(r.damaged))
    };
    println!(
        "verified the store at {location} in {:.1} s: {verdict}",
        r.elapsed.as_secs_f64()
    );
    println!(
        "  catalog     {} document(s) of {} kind(s)",
        n(c.documents),
        n(c.kinds)
    );
    println!(
        "  runs        {} run(s), {} event(s), {} log entries",
        n(c.runs),
        n(c.events),
        n(c.log_entries)
    );
    println!(
        "  hub         {} stream(s), {} change(s), {} live record(s){}",
        n(c.streams),
        n(c.changes),
        n(c.records),
        if c.segments > 0 {
            format!(", {} stored batch(es)", n(c.segments))
        } else {
            String::new()
        }
    );
    if c.index_entries > 0 {
        println!("  indexes     {} entries", n(c.index_entries));
    }
    println!(
        "  time        {}",
        r.phases
            .iter()
            .map(|(name, took)| format!("{name} {:.2} s", took.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for note in &r.notes {
        println!("  note: {note}");
    }
    if r.damage.len() < r.damaged as usize {
        println!(
            "  (the report keeps the first {} damages; all were printed as found)",
            n(r.damage.len() as u64)
        );
    }
}

fn subject_json(s: &Subject) -> serde_json::Value {
    match s {
        Subject::Run { run, seq } => serde_json::json!({"run": run.to_string(), "seq": seq}),
        Subject::RunLog { run, entry } => {
            serde_json::json!({"run_log": run.to_string(), "entry": entry})
        }
        Subject::Stream {
            connection,
            stream,
            key,
            segment,
        } => serde_json::json!({"connection": connection, "stream": stream, "key": key,
                                "segment": segment}),
        Subject::Document { kind, name } => {
            serde_json::json!({"document_kind": kind, "document": name})
        }
        Subject::Index { index, run } => {
            serde_json::json!({"index": index, "run": run.map(|r| r.to_string())})
        }
        Subject::Store { part } => serde_json::json!({"part": part}),
    }
}

fn damage_json(d: &Damage) -> serde_json::Value {
    serde_json::json!({
        "what": subject_json(&d.subject),
        "problem": d.problem,
        "text": d.to_string(),
    })
}

fn verify_json(location: &Location, r: &Report) -> serde_json::Value {
    let c = &r.checked;
    serde_json::json!({
        "store": location.to_string(),
        "clean": r.clean(),
        "damaged": r.damaged,
        "seconds": secs(r.elapsed),
        "checked": {
            "kinds": c.kinds, "documents": c.documents,
            "runs": c.runs, "events": c.events, "log_entries": c.log_entries,
            "streams": c.streams, "changes": c.changes, "records": c.records,
            "segments": c.segments, "index_entries": c.index_entries,
        },
        "phases": r.phases.iter().map(|(name, took)| (name.clone(), secs(*took).into()))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
        "damage": r.damage.iter().map(damage_json).collect::<Vec<_>>(),
        "notes": r.notes,
    })
}

async fn repair(location: &Location, options: RepairOptions, json: bool) -> anyhow::Result<()> {
    let dir = match location {
        Location::Dir(dir) => dir.clone(),
        Location::Postgres(_) => bail!(
            "--store {location}: `sluice store repair` mends the embedded store (a \
             directory); a PostgreSQL store has no repair here that loses nothing (its \
             indexes are the database's own): check it with `sluice store verify` and \
             restore damaged data from a backup"
        ),
    };
    if !dir.is_dir() {
        bail!("--store {location}: no such directory");
    }
    let dry_run = options.dry_run;
    let made = tokio::task::spawn_blocking(move || {
        sluice_store::sled::repair::repair(&dir, &options, &|made| {
            if !json {
                println!("{made}");
            }
        })
    })
    .await
    .context("repairing the store")?
    .with_context(|| format!("repairing the store at {location}"))?;
    if dry_run {
        if json {
            println!(
                "{}",
                serde_json::json!({"store": location.to_string(), "dry_run": true,
                                   "repairs": made})
            );
        } else {
            println!("would then verify the store");
        }
        return Ok(());
    }
    if !json {
        println!("verifying the store…");
    }
    let report = verify_store(location, json).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"store": location.to_string(), "dry_run": false,
                               "repairs": made, "verified": verify_json(location, &report)})
        );
    } else {
        print_verified(location, &report);
    }
    damage_found(location, &report)
}
