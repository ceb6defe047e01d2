//! Benchmark statistics: percentiles of sorted samples, rates, the usual spread of
//! latencies as one line, settings read from the environment (among them the store
//! backends a benchmark compares), and the CPU time processes used.

use std::str::FromStr;
use std::time::Duration;

/// The sample at fraction `p` (0 to 1) of `sorted`, by nearest rank: index
/// `round((len - 1) * p)`. The default value (zero) when there are no samples.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    let i = (sorted.len().saturating_sub(1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// `count` events in `elapsed`, per second.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// A latency as milliseconds, for a line of figures.
pub trait Millis: Copy + Default {
    /// `12 ms` for whole milliseconds, `12.34 ms` for a [`Duration`].
    fn ms(self) -> String;
}

/// Whole milliseconds (differences of Unix times in milliseconds).
impl Millis for i64 {
    fn ms(self) -> String {
        format!("{self} ms")
    }
}

impl Millis for Duration {
    fn ms(self) -> String {
        format!("{:.2} ms", self.as_secs_f64() * 1e3)
    }
}

/// p50, p90, p99 and max of sorted latencies:
/// `p50 3 ms, p90 8 ms, p99 20 ms, max 41 ms`.
pub fn spread<T: Millis>(sorted: &[T]) -> String {
    format!(
        "p50 {}, p90 {}, p99 {}, max {}",
        percentile(sorted, 0.5).ms(),
        percentile(sorted, 0.9).ms(),
        percentile(sorted, 0.99).ms(),
        sorted.last().copied().unwrap_or_default().ms()
    )
}

/// The setting `name` from the environment, or `default` when it is unset or does not
/// parse.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The variable naming the store backends a benchmark compares: `sled`, `postgres` or
/// `both` (the default).
pub const STORE_VAR: &str = "SLUICE_BENCH_STORE";

/// The variable naming a PostgreSQL store for benchmarks to use as it is, instead of a
/// fresh schema of the test database.
pub const POSTGRES_VAR: &str = "SLUICE_BENCH_POSTGRES";

/// A store backend a benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchStore {
    /// The embedded sled store, in a temporary directory.
    Sled,
    /// PostgreSQL.
    Postgres,
}

impl BenchStore {
    /// Its name, as [`STORE_VAR`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            BenchStore::Sled => "sled",
            BenchStore::Postgres => "postgres",
        }
    }
}

/// The backends named by `value` (`sled`, `postgres`, `both`, or a comma-separated
/// list), in that order; `None` if a name is unknown.
pub fn parse_stores(value: &str) -> Option<Vec<BenchStore>> {
    let mut stores = Vec::new();
    for name in value.split(',').map(str::trim) {
        let named: &[BenchStore] = match name.to_ascii_lowercase().as_str() {
            "sled" => &[BenchStore::Sled],
            "postgres" | "postgresql" | "pg" => &[BenchStore::Postgres],
            "both" | "all" => &[BenchStore::Sled, BenchStore::Postgres],
            _ => return None,
        };
        for s in named {
            if !stores.contains(s) {
                stores.push(*s);
            }
        }
    }
    Some(stores)
}

/// The backends to measure, from [`STORE_VAR`]: both when it is unset or empty.
/// Panics, naming the choices, on a value it does not know.
pub fn bench_stores() -> Vec<BenchStore> {
    let value = std::env::var(STORE_VAR).unwrap_or_default();
    if value.trim().is_empty() {
        return vec![BenchStore::Sled, BenchStore::Postgres];
    }
    parse_stores(&value)
        .unwrap_or_else(|| panic!("{STORE_VAR}={value:?}: name sled, postgres or both"))
}

/// The PostgreSQL store given in [`POSTGRES_VAR`], if any.
pub fn bench_postgres_url() -> Option<String> {
    std::env::var(POSTGRES_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Linux reports process times in `/proc` in ticks of `USER_HZ`, 100 per second on
/// every architecture a benchmark runs on.
const TICKS_PER_SECOND: u64 = 100;

/// User + system CPU time in a `/proc/<pid>/stat` line.
fn cpu_in_stat(stat: &str) -> Option<Duration> {
    // `pid (comm) state ppid ...`: the name may hold spaces and parentheses, so the
    // fields are counted from the last `)`, after which field 3 (state) comes first;
    // utime is field 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = field(14)? + field(15)?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// The CPU time (user + system, all threads) process `pid` has used, from
/// `/proc/<pid>/stat`, at 10 ms resolution; `None` if it is gone or there is no
/// `/proc`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_in_stat(&stat)
}

/// The CPU time (user + system, all threads) this process has used; zero where there
/// is no `/proc`.
pub fn own_cpu() -> Duration {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| cpu_in_stat(&stat))
        .unwrap_or_default()
}

/// The CPU time of a set of processes between two readings: processes that started
/// in between count whole, processes that ended in between are lost.
#[derive(Clone, Debug, Default)]
pub struct CpuReading {
    by_pid: std::collections::HashMap<u32, Duration>,
}

impl CpuReading {
    /// The CPU time each of `pids` has used so far (the ones still running).
    pub fn of(pids: impl IntoIterator<Item = u32>) -> Self {
        CpuReading {
            by_pid: pids
                .into_iter()
                .filter_map(|pid| Some((pid, process_cpu(pid)?)))
                .collect(),
        }
    }

    /// The CPU time used since `before`.
    pub fn since(&self, before: &CpuReading) -> Duration {
        self.by_pid
            .iter()
            .map(|(pid, now)| {
                now.saturating_sub(before.by_pid.get(pid).copied().unwrap_or_default())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let ms: Vec<i64> = (1..=101).collect();
        assert_eq!(percentile(&ms, 0.0), 1);
        assert_eq!(percentile(&ms, 0.5), 51);
        assert_eq!(percentile(&ms, 0.99), 100);
        assert_eq!(percentile(&ms, 1.0), 101);
        assert_eq!(percentile::<i64>(&[], 0.5), 0);
        assert_eq!(percentile::<Duration>(&[], 0.99), Duration::ZERO);
    }

    #[test]
    fn spreads_and_rates() {
        let ms: Vec<i64> = (1..=10).collect();
        assert_eq!(spread(&ms), "p50 6 ms, p90 9 ms, p99 10 ms, max 10 ms");
        let d = [Duration::from_micros(1500)];
        assert_eq!(
            spread(&d),
            "p50 1.50 ms, p90 1.50 ms, p99 1.50 ms, max 1.50 ms"
        );
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
    }

    #[test]
    fn store_choices() {
        use BenchStore::{Postgres, Sled};
        assert_eq!(parse_stores("both"), Some(vec![Sled, Postgres]));
        assert_eq!(parse_stores("postgres"), Some(vec![Postgres]));
        assert_eq!(parse_stores("pg, sled"), Some(vec![Postgres, Sled]));
        assert_eq!(parse_stores("SLED,sled"), Some(vec![Sled]));
        assert_eq!(parse_stores("mysql"), None);
    }

    #[test]
    fn cpu_times_from_proc_stat() {
        // A name with a space and a parenthesis; utime 250 and stime 50 ticks.
        let stat = "42 (post gres)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 100 20 20 0 1 0";
        assert_eq!(cpu_in_stat(stat), Some(Duration::from_secs(3)));
        assert_eq!(cpu_in_stat("42 (x) S 1"), None);
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(process_cpu(std::process::id()).is_some());
        }
        let before = CpuReading {
            by_pid: [(1, Duration::from_secs(1)), (2, Duration::from_secs(5))].into(),
        };
        let after = CpuReading {
            // 2 ended, 3 started.
            by_pid: [(1, Duration::from_secs(3)), (3, Duration::from_secs(1))].into(),
        };
        assert_eq!(after.since(&before), Duration::from_secs(3));
    }
}
