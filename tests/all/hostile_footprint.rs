//! Everything a connector causes inside its store is accounted to it: the linear
//! memory of all its core instances together under one cap, the instances, memories
//! and tables it may create, time spent in host calls under the CPU budget, and its
//! log lines cut and rate limited. Each attack fails with its named error (or, for
//! logs, is cut and counted), the host keeps serving, and the memory the attacks
//! took is given back (`attacks_one_after_another_give_their_memory_back` prints
//! the process's RSS before and after).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_host::{Connector, Grant, Host, HostError, Limits, LogLine};

use crate::hostile::{
    NEXT, NODE, first_batch, grant, hostile, limits, sandbox_failure, still_serves,
};

const MIB: usize = 1 << 20;
/// The memory cap of the attacks.
const MEMORY_CAP: usize = 64 * MIB;
/// Extra core instances given to the hostile component, each with a memory of
/// [`EXTRA_MEMORY_PAGES`]: together with the component's own memory, past the cap.
const EXTRA_INSTANCES: usize = 3;
/// 40 MiB of 64 KiB pages.
const EXTRA_MEMORY_PAGES: u32 = 640;
/// The secret the log attacks put in every line and context.
const SECRET: &str = "s3cret-api-key-8f2b1c";
/// The call components are instantiated in.
const INSTANTIATE: &str = "instantiate";

// ---------------------------------------------------------------------------------
// A component with extra core instances, made from the hostile one by appending a
// core module with one memory and instances of it: the Rust toolchain never makes
// such a component, an attacker's tools do.

fn leb128(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb128(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// A core module that defines one memory of `pages` pages.
fn module_with_memory(pages: u32) -> Vec<u8> {
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    let mut memory = vec![1, 0x00];
    leb128(u64::from(pages), &mut memory);
    section(5, &memory, &mut module);
    module
}

/// The core modules a component defines at its top level.
fn core_modules(component: &[u8]) -> u64 {
    let mut at = 8;
    let mut modules = 0;
    while at < component.len() {
        let id = component[at];
        at += 1;
        let (mut size, mut shift) = (0u64, 0);
        loop {
            let byte = component[at];
            at += 1;
            size |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if id == 1 {
            modules += 1;
        }
        at += size as usize;
    }
    modules
}

/// The hostile component with `instances` more core instances, each with a memory
/// of `pages` pages.
fn with_extra_instances(component: &[u8], instances: usize, pages: u32) -> Vec<u8> {
    let mut out = component.to_vec();
    let index = core_modules(component);
    section(1, &module_with_memory(pages), &mut out);
    let mut payload = Vec::new();
    leb128(instances as u64, &mut payload);
    for _ in 0..instances {
        payload.push(0x00);
        leb128(index, &mut payload);
        payload.push(0);
    }
    section(2, &payload, &mut out);
    out
}

fn multi_instance(host: &Host, instances: usize, pages: u32) -> Connector {
    let bytes = std::fs::read(sluice_artifacts::TEST_HOSTILE).expect("hostile component");
    host.load(&with_extra_instances(&bytes, instances, pages))
        .expect("the component with extra core instances loads")
}

async fn open_error(connector: &Connector, grant: &Arc<Grant>) -> HostError {
    match connector
        .open(
            grant,
            r#"{"mode":"ok"}"#,
            "items",
            sluice_host::SyncMode::FullRefresh,
            None,
        )
        .await
    {
        Ok(_) => panic!("open must fail"),
        Err(e) => e,
    }
}

/// Memories of extra core instances count against the one cap: instantiation fails
/// with the memory error naming the cap, though each memory alone is under it.
async fn core_instances_attack(host: &Host) {
    let connector = multi_instance(host, EXTRA_INSTANCES, EXTRA_MEMORY_PAGES);
    let grant = grant(Limits {
        memory_bytes: MEMORY_CAP,
        ..limits()
    });
    let err = open_error(&connector, &grant).await;
    assert!(
        matches!(&err, HostError::MemoryLimit { call, limit, requested }
            if *call == INSTANTIATE && *limit == MEMORY_CAP && *requested > MEMORY_CAP),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("memory cap of {MEMORY_CAP} bytes")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_instances_share_one_memory_cap() {
    let host = NODE.host();
    core_instances_attack(&host).await;
    // Under a cap that holds them all, the same component reads to the end: only the
    // total was too much.
    let connector = multi_instance(&host, EXTRA_INSTANCES, EXTRA_MEMORY_PAGES);
    crate::hostile::read_ok(
        &connector,
        &grant(Limits {
            memory_bytes: 200 * MIB,
            ..limits()
        }),
    )
    .await;
    still_serves(&host, &hostile(&host)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_and_memory_counts_are_capped() {
    let host = NODE.host();
    // Two extra memories of one page: three in all, past a limit of two.
    let connector = multi_instance(&host, 2, 1);
    let err = open_error(
        &connector,
        &grant(Limits {
            max_memories: 2,
            ..limits()
        }),
    )
    .await;
    assert!(
        matches!(&err, HostError::Trap { call, message }
            if *call == INSTANTIATE && message.contains("memory count too high")),
        "{err:?}"
    );
    let err = open_error(
        &hostile(&host),
        &grant(Limits {
            max_instances: 1,
            ..limits()
        }),
    )
    .await;
    assert!(
        matches!(&err, HostError::Trap { call, message }
            if *call == INSTANTIATE && message.contains("instance count too high")),
        "{err:?}"
    );
    // Under the default limits, the component with extra instances reads.
    crate::hostile::read_ok(&connector, &grant(limits())).await;
    still_serves(&host, &hostile(&host)).await;
}

// ---------------------------------------------------------------------------------
// Time in host calls.

const CPU: Duration = Duration::from_millis(300);

fn cpu_limits() -> Limits {
    Limits {
        cpu_per_call: CPU,
        call_timeout: Duration::from_secs(60),
        ..limits()
    }
}

/// A guest that spends its time asking for random bytes (each request at the limit)
/// runs out of CPU budget, long before its call times out.
async fn random_loop_attack(host: &Host) {
    let connector = hostile(host);
    let limits = cpu_limits();
    let config = json!({"mode": "random_loop", "bytes": limits.random_bytes_per_call});
    let err = sandbox_failure(&connector, &grant(limits), config).await;
    assert!(
        matches!(&err, HostError::CpuLimit { call, limit } if *call == NEXT && *limit == CPU),
        "{err:?}"
    );
}

/// A request for more random bytes than one call may have traps, naming the limit.
async fn random_past_limit_attack(host: &Host) {
    let connector = hostile(host);
    let limits = cpu_limits();
    let config = json!({"mode": "random_loop", "bytes": 64 * MIB});
    let err = sandbox_failure(&connector, &grant(limits.clone()), config).await;
    let expected = format!(
        "exceeds limit {0} (the limit is random_bytes_per_call, {0} bytes)",
        limits.random_bytes_per_call
    );
    assert!(
        matches!(&err, HostError::Trap { call, message }
            if *call == NEXT && message.contains(&expected)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_in_host_calls_is_charged() {
    let host = NODE.host();
    random_loop_attack(&host).await;
    random_past_limit_attack(&host).await;
    still_serves(&host, &hostile(&host)).await;
}

// ---------------------------------------------------------------------------------
// Log lines.

/// The batch of a log mode: its one record, and the lines the grant recorded.
async fn log_attack(host: &Host, config: Value) -> (Arc<Grant>, Vec<LogLine>) {
    let connector = hostile(host);
    let grant = Arc::new(Grant {
        secrets: vec![SECRET.into()],
        limits: limits(),
        ..Grant::default()
    });
    let (_, result) = first_batch(&connector, &grant, config.clone()).await;
    let batch = result
        .unwrap_or_else(|e| panic!("{config}: {e}"))
        .expect("a batch");
    assert_eq!(batch.count, 1);
    let lines = grant.activity.lines();
    (grant, lines)
}

/// Lines as large as the guest's memory are redacted, then cut with a marker;
/// their context is redacted too.
async fn big_log_lines_attack(host: &Host, lines: u64, bytes: u64) {
    let config = json!({"mode": "big_log_lines", "log_lines": lines, "bytes": bytes,
        "log_secret": SECRET});
    let (grant, kept) = log_attack(host, config).await;
    let max = grant.limits.log_line_bytes;
    assert_eq!(kept.len() as u64, lines, "every line is kept, cut");
    for line in &kept {
        assert!(line.message.len() <= max, "{} bytes", line.message.len());
        assert!(
            line.message.contains(&format!("log_line_bytes is {max}")),
            "{}",
            &line.message[line.message.len().saturating_sub(100)..]
        );
        assert!(line.message.starts_with("***"), "{}", &line.message[..40]);
        assert!(!line.message.contains("s3cret") && !line.context.contains("s3cret"));
        assert_eq!(line.context, "***");
    }
}

/// Lines past the rate are dropped, and one line says how many.
async fn log_flood_attack(host: &Host, lines: u64) {
    let config = json!({"mode": "log_flood", "log_lines": lines});
    let (grant, kept) = log_attack(host, config).await;
    let per_sec = u64::from(grant.limits.log_lines_per_sec);
    let reports: Vec<&LogLine> = kept.iter().filter(|l| l.context == "sluice").collect();
    let flood = kept.len() - reports.len();
    // The burst, plus what refilled while the flood lasted (it takes well under a
    // minute).
    assert!(
        (per_sec as usize..=60 * per_sec as usize).contains(&flood),
        "{flood} lines kept"
    );
    let dropped: u64 = reports
        .iter()
        .map(|r| {
            assert!(
                r.message.ends_with(&format!(
                    "log lines dropped: log_lines_per_sec is {per_sec}"
                )),
                "{}",
                r.message
            );
            r.message
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .expect("a count")
        })
        .sum();
    assert!(!reports.is_empty());
    assert_eq!(
        dropped + flood as u64,
        lines,
        "every line is kept or counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_log_lines_are_redacted_and_cut() {
    let host = NODE.host();
    big_log_lines_attack(&host, 40, 20_000_000).await;
    still_serves(&host, &hostile(&host)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_dropped_and_counted() {
    let host = NODE.host();
    log_flood_attack(&host, 100_000).await;
    still_serves(&host, &hostile(&host)).await;
}

// ---------------------------------------------------------------------------------
// Memory given back.

/// Resident set size of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// How much more the process may hold after the attacks than before them: the
/// attacks take gigabytes in all (each up to its cap), so anything they kept would
/// show far past this. Measured: a few MiB.
const RSS_GROWTH_BOUND: usize = 96 * MIB;
/// How often each attack runs, one after another.
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_one_after_another_give_their_memory_back() {
    let host = NODE.host();
    // Warm up: the components compiled and instantiated once, the runtime's threads
    // and pools made, so what follows measures the attacks alone.
    still_serves(&host, &hostile(&host)).await;
    let _ = multi_instance(&host, EXTRA_INSTANCES, EXTRA_MEMORY_PAGES);
    let before = rss();
    for _ in 0..ROUNDS {
        core_instances_attack(&host).await;
        let bomb = sandbox_failure(
            &hostile(&host),
            &grant(limits()),
            json!({"mode": "memory_bomb"}),
        )
        .await;
        assert!(matches!(bomb, HostError::MemoryLimit { .. }), "{bomb:?}");
        big_log_lines_attack(&host, 40, 50_000_000).await;
        log_flood_attack(&host, 100_000).await;
        random_loop_attack(&host).await;
        random_past_limit_attack(&host).await;
    }
    still_serves(&host, &hostile(&host)).await;
    let after = rss();
    println!(
        "RSS before the attacks: {} MiB; after {ROUNDS} rounds of them: {} MiB",
        before / MIB,
        after / MIB
    );
    assert!(
        after < before + RSS_GROWTH_BOUND,
        "RSS grew from {} MiB to {} MiB",
        before / MIB,
        after / MIB
    );
}
