//! Benchmark statistics: percentiles of sorted samples, rates, the usual spread of
//! latencies as one line, and settings read from the environment.

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
}
