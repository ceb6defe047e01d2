//! Scheduler benchmark: many workflows on 1-second schedules with trivial work (the
//! `sample` connector with no records: discover, open, read nothing, complete; or a
//! few records each run, see below).
//! Reports scheduling latency (due → started, from the run's log) and dispatch
//! throughput, how much CPU the node used, and how much of it was the scheduler's own
//! (handling fires and starting runs, apart from the runs' work and log writes).
//!
//! `cargo bench -p sluice-engine --bench schedule`; `SLUICE_BENCH_WORKFLOWS` (default
//! 10,000), `SLUICE_BENCH_SECS` (default 10), `SLUICE_BENCH_SLOTS` (default 512: a
//! run holds its slot for about one durable round trip, so 10,000 runs a second need
//! a few hundred), `SLUICE_BENCH_DATA` (the node's data directory, kept; default a
//! temporary one), `SLUICE_BENCH_RECORDS` (records each run reads and commits to the
//! hub, default 0), `SLUICE_BENCH_WARMUP_SECS` (the first seconds of fires, reported
//! apart: they hold each connection's first run; default 2).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary"
)]

/// The allocator `sluice` itself runs with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_engine::{Limits, ScheduleDef};
use sluice_store::log::{EventKind, RunFilter};
use sluice_testkit::NodeBuilder;
use sluice_testkit::node::{self, open_store};
use sluice_testkit::stats::{env_or, percentile, rate, spread};

/// The name and CPU seconds (user + system) of a `/proc/.../stat` line.
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(').map_or("", |(_, n)| n);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime), counted after the command name.
    Some((name, (ticks(11) + ticks(12)) / 100.0))
}

/// User + system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    parse_stat(&stat).map_or(0.0, |(_, secs)| secs)
}

/// CPU seconds (user + system) of each of this process's threads so far, summed by
/// thread name with any trailing number dropped (`tokio-rt-worker`, the store's I/O thread, ...).
fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((name, secs)) = parse_stat(&stat) else {
            continue;
        };
        let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        *out.entry(name.to_owned()).or_default() += secs;
    }
    out
}

fn main() {
    let workflows: u64 = env_or("SLUICE_BENCH_WORKFLOWS", 10_000);
    let secs: u64 = env_or("SLUICE_BENCH_SECS", 10);
    let slots: usize = env_or("SLUICE_BENCH_SLOTS", 512);
    let records: u64 = env_or("SLUICE_BENCH_RECORDS", 0);
    let warm_up_secs: i64 = env_or("SLUICE_BENCH_WARMUP_SECS", 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    // Where the node keeps its data: a fresh temporary directory, or one to inspect
    // afterwards.
    let data_dir = std::env::var_os("SLUICE_BENCH_DATA")
        .map_or_else(|| data.path().to_path_buf(), PathBuf::from);
    let cache = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let engine = NodeBuilder::new()
            .cache_dir(cache.path())
            .worker("bench")
            .engine_with(
                open_store(&data_dir),
                Limits {
                    slots,
                    ..Limits::default()
                },
            );
        let schedule: ScheduleDef = serde_json::from_value(serde_json::json!({
            "trigger": {"kind": "interval", "every_secs": 1}, "jitter_ms": 1000
        }))
        .unwrap();
        // One connection per workflow, as with one customer per connection: runs of
        // different workflows then share no hub stream.
        for i in 0..workflows {
            node::connection(
                &engine,
                serde_json::json!({
                    "name": format!("c{i:05}"), "tenant": format!("t{}", i % 100),
                    "connector": "sample", "config": {"records": records}
                }),
            ).await;
            node::workflow(
                &engine,
                serde_json::json!({
                    "name": format!("w{i:05}"), "connection": format!("c{i:05}"),
                    "streams": [{"name": "users"}], "schedule": schedule
                }),
            ).await;
        }
        let cpu0 = cpu_secs();
        let threads0 = cpu_by_thread();
        let scheduler0 = engine.scheduler_cpu_seconds();
        let t0 = Instant::now();
        engine.start_scheduler(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_secs(secs)).await;
        engine.pause_scheduler(true).await.unwrap();
        let stopped = t0.elapsed();
        let stopped_unix_ms = chrono::Utc::now().timestamp_millis();
        let cpu = cpu_secs() - cpu0;
        let threads = cpu_by_thread();
        let scheduler = engine.scheduler_cpu_seconds() - scheduler0;
        while engine.load() != (0, 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drained = t0.elapsed();

        let compiled = schedule.compile().unwrap();
        let runs = engine.store().log().list(&RunFilter::default()).await.unwrap();
        let mut latency = Vec::with_capacity(runs.len());
        let mut durations = Vec::with_capacity(runs.len());
        let mut first_start = i64::MAX;
        // How long before its due time each fire was recorded (negative: late).
        let mut lead = Vec::with_capacity(runs.len());
        let mut completed = 0;
        // Each fire of a workflow must start one run: counted to show none started twice.
        let mut fires = std::collections::HashSet::with_capacity(runs.len());
        let mut twice = 0;
        // Latencies by the second their runs were due, to tell a steady tail from a
        // burst.
        let mut by_second = std::collections::BTreeMap::<i64, Vec<i64>>::new();
        for r in &runs {
            let events = engine.store().log().read(r.run_id).await.unwrap();
            let mut due = None;
            let mut recorded = None;
            let mut started = None;
            for e in &events {
                match &e.kind {
                    EventKind::RunScheduled(s) if s.fire_at_unix_ms > 0 => {
                        if !fires.insert((s.workflow.clone(), s.fire_at_unix_ms)) {
                            twice += 1;
                        }
                        let fire = chrono::DateTime::from_timestamp_millis(s.fire_at_unix_ms)
                            .unwrap();
                        due = Some(compiled.jittered(&s.workflow, fire).timestamp_millis());
                        recorded = Some(e.at_unix_ms);
                    }
                    EventKind::RunStarted(_) => {
                        started = Some(e.at_unix_ms);
                        first_start = first_start.min(e.at_unix_ms);
                    }
                    EventKind::RunCompleted(_) => {
                        completed += 1;
                        if let Some(s) = started {
                            durations.push(e.at_unix_ms - s);
                        }
                    }
                    _ => {}
                }
            }
            if let (Some(d), Some(s)) = (due, started) {
                latency.push(s - d);
                by_second.entry(d / 1000).or_default().push(s - d);
            }
            if let (Some(d), Some(r)) = (due, recorded) {
                lead.push(d - r);
            }
        }
        // The first seconds include each connection's first run (its hub stream is
        // loaded, its connector's answers cached): reported apart from the steady
        // state that follows.
        let first_due = by_second.keys().next().copied().unwrap_or(0);
        let mut warm_up: Vec<i64> = Vec::new();
        let mut steady: Vec<i64> = Vec::new();
        for (second, l) in &by_second {
            if *second < first_due + warm_up_secs {
                warm_up.extend(l);
            } else {
                steady.extend(l);
            }
        }
        warm_up.sort_unstable();
        steady.sort_unstable();
        latency.sort_unstable();
        durations.sort_unstable();
        lead.sort_unstable();
        println!(
            "{workflows} workflows on 1 s schedules (jitter 1 s), {records} records a run, {slots} slots, {secs} s:"
        );
        // Schedules seen for the first time fire one interval later: the rate counts
        // from the first start.
        let window = Duration::from_millis((stopped_unix_ms - first_start).max(1) as u64);
        println!(
            "  runs started {} ({} completed, {} for a fire already started), {:.0} runs/s dispatched over {:.1} s from the first (drained at {:.1} s)",
            latency.len(),
            completed,
            twice,
            rate(latency.len() as u64, window),
            window.as_secs_f64(),
            drained.as_secs_f64()
        );
        println!("  latency due -> started: {}", spread(&latency));
        let after_secs = by_second.len() as i64 - warm_up_secs;
        for (span, l) in [
            (format!("the first {warm_up_secs} s"), &warm_up),
            (format!("the {after_secs} s after"), &steady),
        ] {
            println!("    runs due in {span}: {} runs, {}", l.len(), spread(l));
        }
        let seconds: Vec<String> = by_second
            .into_values()
            .map(|mut l| {
                l.sort_unstable();
                format!("{}/{}", percentile(&l, 0.5), percentile(&l, 0.99))
            })
            .collect();
        println!(
            "  latency p50/p99 ms by second due: {}",
            seconds.join(" ")
        );
        println!(
            "  fire recorded ahead of due: p1 {} ms, p50 {} ms, p99 {} ms",
            percentile(&lead, 0.01),
            percentile(&lead, 0.5),
            percentile(&lead, 0.99)
        );
        println!(
            "  run duration started -> completed: p50 {} ms, p99 {} ms",
            percentile(&durations, 0.5),
            percentile(&durations, 0.99)
        );
        println!(
            "  node CPU while scheduling: {:.2} cores of 2 ({cpu:.1} CPU-s in {:.1} s)",
            cpu / stopped.as_secs_f64(),
            stopped.as_secs_f64()
        );
        println!(
            "  node CPU per run started: {:.0} us",
            cpu * 1e6 / latency.len().max(1) as f64
        );
        let mut by_thread: Vec<(String, f64)> = threads
            .into_iter()
            .map(|(name, secs)| {
                let before = threads0.get(&name).copied().unwrap_or(0.0);
                (name, (secs - before) / stopped.as_secs_f64())
            })
            .filter(|(_, cores)| *cores >= 0.01)
            .collect();
        by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
        let by_thread: Vec<String> = by_thread
            .iter()
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect();
        println!("  cores by thread: {}", by_thread.join(", "));
        println!(
            "  scheduler's own CPU (fire passes + dispatcher, not the runs' work nor log \
             writes): {:.2} cores, {:.0} us per run, {:.0}% of the node's",
            scheduler / stopped.as_secs_f64(),
            scheduler * 1e6 / latency.len().max(1) as f64,
            100.0 * scheduler / cpu.max(f64::EPSILON)
        );
    });
}
