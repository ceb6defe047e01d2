//! Hub upsert throughput: 1,000,000 records of ~200 bytes in batches of 1,000, one
//! transaction and one flush per batch, into a fresh store; then the same data again
//! (every record unchanged); then a full refresh that leaves out every seventh record,
//! and the time its completion takes to mark those deleted.
//!
//! Run with `cargo bench -p sluice-store --bench hub` (set `HUB_BENCH_RECORDS` for a
//! smaller run).

/// The allocator `sluice` itself runs with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use sluice_store::sled::{BatchMeta, SledHub};

const BATCH: usize = 1_000;

fn record(i: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(
        format!(
            r#"{{"id":{i},"name":"Contact {i}","email":"contact{i}@example.com","company":"Company {}","updated_at":"2024-01-01T00:00:00Z","note":""#,
            i % 977
        )
        .as_bytes(),
    );
    while out.len() - start < 198 {
        out.push(b'x');
    }
    out.extend_from_slice(b"\"}\n");
}

fn pass(hub: &SledHub, batches: &[&[u8]], generation: u64, label: &str) -> Result<(), String> {
    let mut latencies = Vec::with_capacity(batches.len());
    let mut totals = [0u64; 3];
    let start = Instant::now();
    for (n, batch) in batches.iter().enumerate() {
        let t = Instant::now();
        let cursor = n.to_string();
        let out = hub
            .upsert_batch(
                "bench",
                "contacts",
                &["id"],
                batch,
                BatchMeta {
                    generation,
                    source_cursor: Some(&cursor),
                    time_ms: 1,
                },
            )
            .map_err(|e| e.to_string())?;
        hub.flush().map_err(|e| e.to_string())?;
        latencies.push(t.elapsed());
        totals[0] += out.created;
        totals[1] += out.updated;
        totals[2] += out.unchanged;
    }
    let secs = start.elapsed().as_secs_f64();
    let records = totals.iter().sum::<u64>();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    println!(
        "{label}: {records} records in {secs:.2} s = {:.0} records/s (created {}, updated {}, unchanged {}); per batch p50 {:?}, p99 {:?}",
        records as f64 / secs,
        totals[0],
        totals[1],
        totals[2],
        p(0.5),
        p(0.99)
    );
    Ok(())
}

/// The id of a batch's first record.
fn batch_first(batch: &[u8]) -> usize {
    let digits = batch
        .iter()
        .skip(6)
        .take_while(|b| b.is_ascii_digit())
        .map(|b| usize::from(b - b'0'));
    digits.fold(0, |n, d| n * 10 + d)
}

fn main() -> Result<(), String> {
    let total: usize = std::env::var("HUB_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let batches: Vec<Vec<u8>> = (0..total.div_ceil(BATCH))
        .map(|b| {
            let mut out = Vec::with_capacity(BATCH * 205);
            for i in b * BATCH..((b + 1) * BATCH).min(total) {
                record(i, &mut out);
            }
            out
        })
        .collect();
    let bytes: usize = batches.iter().map(Vec::len).sum();
    println!(
        "{total} records, {:.0} bytes each, batches of {BATCH}",
        bytes as f64 / total as f64
    );
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let hub = SledHub::open_path(dir.path()).map_err(|e| e.to_string())?;
    let all: Vec<&[u8]> = batches.iter().map(Vec::as_slice).collect();
    pass(&hub, &all, 1, "first pass (all created)")?;
    pass(&hub, &all, 2, "second pass (all unchanged)")?;
    // A refresh that no longer sees every seventh record (ids 0, 7, 14, ...).
    let kept: Vec<Vec<u8>> = batches
        .iter()
        .map(|batch| {
            let mut out = Vec::with_capacity(batch.len());
            for (line, at) in batch.split_inclusive(|b| *b == b'\n').zip(0..) {
                let id = batch_first(batch) + at;
                if !id.is_multiple_of(7) {
                    out.extend_from_slice(line);
                }
            }
            out
        })
        .collect();
    let kept: Vec<&[u8]> = kept.iter().map(Vec::as_slice).collect();
    pass(&hub, &kept, 3, "third pass (every seventh left out)")?;
    let t = Instant::now();
    let out = hub
        .complete_refresh("bench", "contacts", 3, 2)
        .map_err(|e| e.to_string())?;
    hub.flush().map_err(|e| e.to_string())?;
    println!(
        "complete the refresh: {} records marked deleted in {:?}",
        out.deleted,
        t.elapsed()
    );
    drop(hub);
    let t = Instant::now();
    let hub = SledHub::open_path(dir.path()).map_err(|e| e.to_string())?;
    let count = hub.count("bench", "contacts").map_err(|e| e.to_string())?;
    println!(
        "reopen and load the index of {count} records: {:?}",
        t.elapsed()
    );
    Ok(())
}
