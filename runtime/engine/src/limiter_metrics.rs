//! The node's rate limiter as Prometheus metrics, read at scrape time: per key
//! (connector, credential, endpoint) requests, throttled answers, waits and wait
//! time, budget handed back, requests in flight and waiting; per host the breaker's
//! state and how often it opened.
//!
//! It only reads the limiter; a scrape never changes a budget.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use sluice_host::limiter::Limiter;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    connector: String,
    credential: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
    credential: String,
}

/// Encodes the limiter's state on each scrape.
#[derive(Debug)]
pub(crate) struct LimiterCollector(pub Arc<Limiter>);

fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(L, M)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for LimiterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let keys = self.0.keys();
        let labels = |k: &sluice_host::limiter::KeyView| KeyLabels {
            connector: k.key.connector.to_string(),
            credential: k.key.credential.to_string(),
            endpoint: k.key.endpoint.to_string(),
        };
        let counter = |f: &dyn Fn(&sluice_host::limiter::KeyView) -> u64| {
            keys.iter()
                .map(|k| (labels(k), ConstCounter::new(f(k))))
                .collect::<Vec<_>>()
        };
        let e = &mut encoder;
        family(
            e,
            "rate_limit_requests",
            "Requests that got rate-limit budget, per key",
            MetricType::Counter,
            &counter(&|k| k.stats.requests),
        )?;
        family(
            e,
            "rate_limit_throttled",
            "Answers that asked to slow down (429, or 503 with Retry-After), per key",
            MetricType::Counter,
            &counter(&|k| k.stats.throttled),
        )?;
        family(
            e,
            "rate_limit_request_waits",
            "Requests that waited for budget, per key",
            MetricType::Counter,
            &counter(&|k| k.stats.waits),
        )?;
        family(
            e,
            "rate_limit_saturated",
            "Requests handed back rate limited after their longest wait, per key",
            MetricType::Counter,
            &counter(&|k| k.stats.saturated),
        )?;
        let wait_seconds: Vec<_> = keys
            .iter()
            .map(|k| {
                (
                    labels(k),
                    ConstCounter::new(k.stats.wait_time.as_secs_f64()),
                )
            })
            .collect();
        family(
            e,
            "rate_limit_request_wait_seconds",
            "Seconds requests waited for budget, per key",
            MetricType::Counter,
            &wait_seconds,
        )?;
        let gauge = |f: &dyn Fn(&sluice_host::limiter::KeyView) -> i64| {
            keys.iter()
                .map(|k| (labels(k), ConstGauge::new(f(k))))
                .collect::<Vec<_>>()
        };
        family(
            e,
            "rate_limit_in_flight",
            "Requests in flight, per key",
            MetricType::Gauge,
            &gauge(&|k| i64::from(k.in_flight)),
        )?;
        family(
            e,
            "rate_limit_waiting",
            "Requests waiting for budget, per key",
            MetricType::Gauge,
            &gauge(&|k| k.waiting as i64),
        )?;
        let breakers = self.0.breaker_views();
        let open: Vec<_> = breakers
            .iter()
            .map(|b| {
                (
                    HostLabels {
                        host: b.host.clone(),
                        credential: b.credential.clone(),
                    },
                    ConstGauge::new(i64::from(b.state != "closed")),
                )
            })
            .collect();
        family(
            e,
            "breaker_open",
            "1 while a host's circuit breaker is open or probing",
            MetricType::Gauge,
            &open,
        )?;
        let opened: Vec<_> = breakers
            .iter()
            .map(|b| {
                (
                    HostLabels {
                        host: b.host.clone(),
                        credential: b.credential.clone(),
                    },
                    ConstCounter::new(b.opened),
                )
            })
            .collect();
        family(
            e,
            "breaker_opened",
            "Times a host's circuit breaker opened",
            MetricType::Counter,
            &opened,
        )?;
        Ok(())
    }
}
