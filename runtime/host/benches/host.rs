//! The connector host's benchmark: what it costs to compile, load, instantiate and
//! call a connector, and how fast records cross the component boundary.
//!
//! Run: `cargo bench -p sluice-host --bench host` (add `-- --quick` for fewer
//! iterations). Figures are printed as a table; compare ratios within one run, the
//! machine may be shared.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_host::{Grant, Host, HostSettings, SyncMode, engine_config};
use sluice_testkit::stats::percentile;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn new() -> Self {
        Self {
            samples: Vec::new(),
        }
    }
    fn add(&mut self, d: Duration) {
        self.samples.push(d);
    }
    fn pct(&mut self, p: f64) -> Duration {
        self.samples.sort();
        percentile(&self.samples, p)
    }
    fn line(&mut self, what: &str) {
        let (p50, p99) = (self.pct(0.5), self.pct(0.99));
        println!(
            "{what:<58} p50 {:>11}  p99 {:>11}  (n={})",
            fmt(p50),
            fmt(p99),
            self.samples.len()
        );
    }
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

struct ProbeState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for ProbeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let cache = std::env::temp_dir().join(format!("sluice-bench-cache-{}", std::process::id()));
    let settings = HostSettings {
        cache_dir: Some(cache.clone()),
        ..HostSettings::default()
    };
    let host = Host::new(settings.clone()).unwrap();
    let sample_wasm = std::fs::read(sluice_artifacts::SAMPLE).unwrap();
    let rest_wasm = std::fs::read(sluice_artifacts::REST).unwrap();
    println!("connector host benchmark (wasmtime 48, pooling allocator, epoch interruption)");
    println!(
        "sample.wasm {} KB, rest.wasm {} KB\n",
        sample_wasm.len() / 1024,
        rest_wasm.len() / 1024
    );

    // Validation of a batch: every record a JSON object of text, numbers in range.
    {
        let record = br#"{"id":123456,"name":"user-123456","email":"u123456@example.com","score":12.5,"tags":["a","b"],"bio":"line\u00e9 of text padded to two hundred bytes........................................"}"#;
        let mut batch = Vec::new();
        let count = 100_000u32;
        for _ in 0..count {
            batch.extend_from_slice(record);
            batch.push(b'\n');
        }
        let mut s = Stats::new();
        for _ in 0..(20 / scale).max(3) {
            let t = Instant::now();
            sluice_host::validate_records(&batch, count, 4 << 20).unwrap();
            s.add(t.elapsed());
        }
        let p50 = s.pct(0.5);
        println!(
            "validate a batch ({} records, {} MB): p50 {} = {:.0} MB/s",
            count,
            batch.len() >> 20,
            fmt(p50),
            batch.len() as f64 / p50.as_secs_f64() / 1e6
        );
    }

    // Cold compile: cranelift on the whole component, no cache.
    for (name, wasm) in [("sample", &sample_wasm), ("rest", &rest_wasm)] {
        let mut s = Stats::new();
        for _ in 0..(5 / scale).max(2) {
            let t = Instant::now();
            host.compile_uncached(wasm).unwrap();
            s.add(t.elapsed());
        }
        s.line(&format!("cold compile ({name})"));
    }

    // Load from the on-disk cache (mmap of the serialized artifact).
    let connector = host.load(&sample_wasm).unwrap();
    let digest = connector.digest().to_string();
    let mut s = Stats::new();
    for _ in 0..(200 / scale) {
        host.forget(&digest);
        let t = Instant::now();
        let c = host.load(&sample_wasm).unwrap();
        s.add(t.elapsed());
        assert_eq!(c.provenance(), sluice_host::Provenance::Disk);
    }
    s.line("load from disk cache + pre-instantiate (sample)");

    // Instantiate from InstancePre: a fresh store and instance, dropped.
    let connector = host.load(&sample_wasm).unwrap();
    let grant = Arc::new(Grant::default());
    for _ in 0..1000 {
        connector.instantiate_only(&grant).await.unwrap();
    }
    let mut s = Stats::new();
    for _ in 0..(20_000 / scale) {
        let t = Instant::now();
        connector.instantiate_only(&grant).await.unwrap();
        s.add(t.elapsed());
    }
    s.line("new store + instantiate from InstancePre + drop (sample)");

    // A whole attempt: store, instantiate, open a reader, read one batch of 1 record.
    let config = r#"{"records": 1000000, "record_bytes": 200}"#;
    let mut s = Stats::new();
    for _ in 0..(5_000 / scale) {
        let t = Instant::now();
        let mut r = connector
            .open(&grant, config, "users", SyncMode::FullRefresh, None)
            .await
            .unwrap();
        r.next(1).await.unwrap();
        drop(r);
        s.add(t.elapsed());
    }
    s.line("whole attempt: store, instantiate, open, next(1), drop");

    // Per-call overhead through the host (guarded call, 1-record batch, validation).
    let mut r = connector
        .open(&grant, config, "users", SyncMode::FullRefresh, None)
        .await
        .unwrap();
    let mut s = Stats::new();
    for _ in 0..(20_000 / scale) {
        let t = Instant::now();
        r.next(1).await.unwrap();
        s.add(t.elapsed());
    }
    s.line("host call: reader.next(1) incl. limits + validation");

    // Records through the host: sample source, batches of 1000 x 200 B, validated.
    let n_batches = 1000 / scale;
    let mut r = connector
        .open(&grant, config, "users", SyncMode::FullRefresh, None)
        .await
        .unwrap();
    let t = Instant::now();
    let mut records = 0u64;
    for _ in 0..n_batches {
        records += u64::from(r.next(1000).await.unwrap().unwrap().count);
    }
    let e = t.elapsed();
    println!(
        "{:<58} {:>10.0} records/s ({records} records, {:.1} MB/s)",
        "sample source via host (generate + cross + validate)",
        records as f64 / e.as_secs_f64(),
        records as f64 * 200.0 / e.as_secs_f64() / 1e6
    );

    probe(&settings, scale).await;
    let _ = std::fs::remove_dir_all(cache);
}

/// The boundary alone: the probe component returns or takes pre-built records.
async fn probe(settings: &HostSettings, scale: u32) {
    println!();
    let engine = Engine::new(&engine_config(settings)).unwrap();
    let mut linker: Linker<ProbeState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    let component = Component::from_file(&engine, sluice_artifacts::TEST_PROBE).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let state = ProbeState {
        wasi: WasiCtxBuilder::new().build(),
        table: ResourceTable::new(),
    };
    let mut store = Store::new(&engine, state);
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = pre.instantiate_async(&mut store).await.unwrap();

    let noop = instance
        .get_typed_func::<(), ()>(&mut store, "noop")
        .unwrap();
    for _ in 0..1000 {
        noop.call_async(&mut store, ()).await.unwrap();
    }
    let mut s = Stats::new();
    for _ in 0..(50_000 / scale) {
        let t = Instant::now();
        noop.call_async(&mut store, ()).await.unwrap();
        s.add(t.elapsed());
    }
    s.line("boundary: empty call round trip (probe.noop)");

    let ndjson = instance
        .get_typed_func::<(u32, u32), (Vec<u8>,)>(&mut store, "ndjson-batch")
        .unwrap();
    let strings = instance
        .get_typed_func::<(u32, u32), (Vec<String>,)>(&mut store, "string-batch")
        .unwrap();
    let take_ndjson = instance
        .get_typed_func::<(&[u8],), (u32,)>(&mut store, "take-ndjson")
        .unwrap();
    let take_strings = instance
        .get_typed_func::<(&[String],), (u32,)>(&mut store, "take-strings")
        .unwrap();
    let (n, size) = (1000u32, 200u32);
    let batches = 3000 / scale;
    let rate = |e: Duration| f64::from(n) * f64::from(batches) / e.as_secs_f64();

    ndjson.call_async(&mut store, (n, size)).await.unwrap();
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..batches {
        bytes = ndjson
            .call_async(&mut store, (n, size))
            .await
            .unwrap()
            .0
            .len();
    }
    let e = t.elapsed();
    println!(
        "{:<58} {:>10.0} records/s",
        format!("guest→host list<u8> NDJSON, {n} × {size} B ({bytes} B/batch)"),
        rate(e)
    );

    strings.call_async(&mut store, (n, size)).await.unwrap();
    let t = Instant::now();
    let mut kept = Vec::new();
    for _ in 0..batches {
        kept = strings.call_async(&mut store, (n, size)).await.unwrap().0;
    }
    let e = t.elapsed();
    println!(
        "{:<58} {:>10.0} records/s",
        format!("guest→host list<string>, {n} × {size} B"),
        rate(e)
    );

    let buf = ndjson.call_async(&mut store, (n, size)).await.unwrap().0;
    let t = Instant::now();
    for _ in 0..batches {
        let (c,) = take_ndjson.call_async(&mut store, (&buf,)).await.unwrap();
        assert_eq!(c, n);
    }
    let e = t.elapsed();
    println!(
        "{:<58} {:>10.0} records/s",
        "host→guest list<u8> NDJSON",
        rate(e)
    );

    let t = Instant::now();
    for _ in 0..batches {
        let (c,) = take_strings.call_async(&mut store, (&kept,)).await.unwrap();
        assert_eq!(c, n);
    }
    let e = t.elapsed();
    println!(
        "{:<58} {:>10.0} records/s",
        "host→guest list<string>",
        rate(e)
    );
}
