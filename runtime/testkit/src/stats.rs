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

/// What a process did with its time: ran on a CPU, or was ready to run and waited for
/// one (the machine was busy with other work).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcTimes {
    /// User + system CPU time, all threads (10 ms resolution).
    pub cpu: Duration,
    /// Time its threads were runnable but waited for a CPU (threads that have ended
    /// are not counted).
    pub waited: Duration,
}

impl std::ops::Add for ProcTimes {
    type Output = ProcTimes;
    fn add(self, o: ProcTimes) -> ProcTimes {
        ProcTimes {
            cpu: self.cpu + o.cpu,
            waited: self.waited + o.waited,
        }
    }
}

impl std::iter::Sum for ProcTimes {
    fn sum<I: Iterator<Item = ProcTimes>>(iter: I) -> ProcTimes {
        iter.fold(ProcTimes::default(), |a, b| a + b)
    }
}

impl ProcTimes {
    /// What happened since `before` (never negative).
    pub fn since(self, before: ProcTimes) -> ProcTimes {
        ProcTimes {
            cpu: self.cpu.saturating_sub(before.cpu),
            waited: self.waited.saturating_sub(before.waited),
        }
    }
}

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

/// The run-queue wait in a `/proc/<pid>/task/<tid>/schedstat` line (on-CPU ns, waiting
/// ns, time slices).
fn wait_in_schedstat(schedstat: &str) -> Option<Duration> {
    let ns = schedstat.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The times of the process whose `/proc` directory is `dir`.
fn times_in(dir: &str) -> Option<ProcTimes> {
    let cpu = cpu_in_stat(&std::fs::read_to_string(format!("{dir}/stat")).ok()?)?;
    let waited = std::fs::read_dir(format!("{dir}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| {
                    let path = t.ok()?.path().join("schedstat");
                    wait_in_schedstat(&std::fs::read_to_string(path).ok()?)
                })
                .sum()
        })
        .unwrap_or_default();
    Some(ProcTimes { cpu, waited })
}

/// The times of process `pid`, from `/proc`; `None` if it is gone or there is no
/// `/proc`.
pub fn process_times(pid: u32) -> Option<ProcTimes> {
    times_in(&format!("/proc/{pid}"))
}

/// The times of this process; zero where there is no `/proc`.
pub fn own_times() -> ProcTimes {
    times_in("/proc/self").unwrap_or_default()
}

/// The times of a set of processes, to subtract from a later reading: processes that
/// started in between count whole, processes that ended in between are lost.
#[derive(Clone, Debug, Default)]
pub struct TimesReading {
    by_pid: std::collections::HashMap<u32, ProcTimes>,
}

impl TimesReading {
    /// The times of each of `pids` so far (the ones still running).
    pub fn of(pids: impl IntoIterator<Item = u32>) -> Self {
        TimesReading {
            by_pid: pids
                .into_iter()
                .filter_map(|pid| Some((pid, process_times(pid)?)))
                .collect(),
        }
    }

    /// Whether it read no process.
    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// The times used since `before`.
    pub fn since(&self, before: &TimesReading) -> ProcTimes {
        self.by_pid
            .iter()
            .map(|(pid, now)| now.since(before.by_pid.get(pid).copied().unwrap_or_default()))
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
    fn process_times_from_proc() {
        // A name with a space and a parenthesis; utime 250 and stime 50 ticks.
        let stat = "42 (post gres)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 100 20 20 0 1 0";
        assert_eq!(cpu_in_stat(stat), Some(Duration::from_secs(3)));
        assert_eq!(cpu_in_stat("42 (x) S 1"), None);
        assert_eq!(
            wait_in_schedstat("1185867 79957 2\n"),
            Some(Duration::from_nanos(79957))
        );
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(process_times(std::process::id()).is_some());
            assert!(!TimesReading::of([std::process::id()]).is_empty());
        }
        let t = |cpu, waited| ProcTimes {
            cpu: Duration::from_secs(cpu),
            waited: Duration::from_secs(waited),
        };
        let before = TimesReading {
            by_pid: [(1, t(1, 1)), (2, t(5, 0))].into(),
        };
        let after = TimesReading {
            // 2 ended, 3 started.
            by_pid: [(1, t(3, 1)), (3, t(1, 2))].into(),
        };
        assert_eq!(after.since(&before), t(3, 2));
        assert_eq!(t(1, 0).since(t(2, 0)), t(0, 0));
    }
}
