//! `sluice rate-limits`: the client of the node's `RateLimits` service: each key's
//! budget and counters, each host's circuit breaker.
//!
//! Owns the filter flags, the one request and the two tables. It prints only
//! through [`Render`] and only reads: it never changes a budget or a breaker.

use clap::Args;
use serde_json::{Value, json};
use sluice_api::pb;
use sluice_api::pb::rate_limits_client::RateLimitsClient;

use super::Client;
use super::render::{self, Render};

/// Which rate-limit keys to show.
#[derive(Args)]
pub struct RateLimitsFilter {
    /// Only keys of this connector.
    #[arg(long)]
    connector: Option<String>,
    /// Only keys of this credential.
    #[arg(long)]
    credential: Option<String>,
}

/// `sluice rate-limits`
pub(super) async fn run(
    client: &Client,
    out: Render,
    filter: RateLimitsFilter,
) -> anyhow::Result<()> {
    let r = super::decode_limit!(RateLimitsClient::new(client.channel()))
        .list_rate_limits(client.request(pb::ListRateLimitsRequest {
            connector: filter.connector.unwrap_or_default(),
            credential: filter.credential.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    let json = r
        .keys
        .iter()
        .map(key_json)
        .chain(r.breakers.iter().map(breaker_json));
    out.lines(json, || {
        render::print_table(&KEY_HEADER, r.keys.iter().map(key_row));
        if !r.breakers.is_empty() {
            render::print_table(
                &["host", "breaker", "failures", "opened", "open for"],
                r.breakers.iter().map(breaker_row),
            );
        }
    });
    Ok(())
}

const KEY_HEADER: [&str; 10] = [
    "connector",
    "credential",
    "endpoint",
    "requests",
    "throttled",
    "waits",
    "in flight/waiting",
    "window",
    "API left",
    "paused",
];

fn key_json(k: &pb::RateLimitKey) -> Value {
    json!({"connector": k.connector, "credential": k.credential, "endpoint": k.endpoint,
           "requests": k.requests, "throttled": k.throttled, "waits": k.waits,
           "wait_seconds": k.wait_seconds, "saturated": k.saturated,
           "in_flight": k.in_flight, "waiting": k.waiting,
           "window_used": k.window_used, "window_limit": k.window_limit,
           "learned_left": k.learned_left, "paused_ms": k.paused_ms})
}

fn key_row(k: &pb::RateLimitKey) -> Vec<String> {
    vec![
        k.connector.clone(),
        k.credential.clone(),
        k.endpoint.clone(),
        k.requests.to_string(),
        k.throttled.to_string(),
        format!("{} ({:.1} s)", k.waits, k.wait_seconds),
        format!("{}/{}", k.in_flight, k.waiting),
        if k.window_limit > 0 {
            format!("{}/{}", k.window_used, k.window_limit)
        } else {
            "-".into()
        },
        if k.learned_left >= 0 {
            k.learned_left.to_string()
        } else {
            "-".into()
        },
        millis_or_dash(k.paused_ms),
    ]
}

fn breaker_json(b: &pb::Breaker) -> Value {
    json!({"breaker": b.host, "state": b.state, "failures": b.failures,
           "opened": b.opened, "open_ms": b.open_ms})
}

fn breaker_row(b: &pb::Breaker) -> Vec<String> {
    vec![
        b.host.clone(),
        b.state.clone(),
        b.failures.to_string(),
        b.opened.to_string(),
        millis_or_dash(b.open_ms),
    ]
}

/// A duration still running, for people: `-` when there is none.
fn millis_or_dash(ms: u64) -> String {
    if ms > 0 {
        format!("{ms} ms")
    } else {
        "-".into()
    }
}
