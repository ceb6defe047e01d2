//! CPU time the scheduler spends on its own work.
//!
//! Owns [`CpuTimed`], a future that adds the thread CPU time of each poll of the future
//! it wraps to a counter. The engine wraps its two scheduling loops in it (the pass
//! that handles fires, and the dispatcher that starts runs), so operators and the
//! scheduler benchmark can tell the scheduler's own cost apart from the runs' work:
//! runs are driven by tasks of their own, and log writes by the log's threads, none of
//! which is counted here. It must never change what the future it wraps does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;

/// The scheduler's loops, as `scheduler_cpu_seconds` labels them.
pub(crate) const LOOPS: [&str; 2] = [FIRE_PASS, DISPATCH];
/// The pass that handles due fires.
pub(crate) const FIRE_PASS: &str = "fire_pass";
/// The dispatcher that starts ready runs.
pub(crate) const DISPATCH: &str = "dispatch";

/// Seconds as a Prometheus counter.
pub(crate) type Seconds = Counter<f64, std::sync::atomic::AtomicU64>;

/// A future whose polls' CPU time is added to a counter.
pub(crate) struct CpuTimed<F> {
    inner: Pin<Box<F>>,
    spent: Seconds,
}

impl<F: Future> CpuTimed<F> {
    pub(crate) fn new(inner: F, spent: Seconds) -> Self {
        CpuTimed {
            inner: Box::pin(inner),
            spent,
        }
    }
}

/// CPU time of the calling thread: a poll runs on one thread from start to end.
fn thread_cpu_secs() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let began = thread_cpu_secs();
        let polled = self.inner.as_mut().poll(cx);
        self.spent.inc_by((thread_cpu_secs() - began).max(0.0));
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_the_cpu_time_of_its_polls_only() {
        let spent = Seconds::default();
        let busy = CpuTimed::new(
            async {
                let began = std::time::Instant::now();
                let mut x = 0u64;
                while began.elapsed() < std::time::Duration::from_millis(20) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                // Waiting is no CPU time.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                x
            },
            spent.clone(),
        );
        assert!(busy.await > 0);
        let secs = spent.get();
        // About the 20 ms of spinning, and far from the 220 ms it took.
        assert!(secs > 0.0 && secs < 0.2, "{secs}");
    }
}
