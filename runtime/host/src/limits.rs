//! What a connection is granted: its limits, the hosts it may reach, the secrets to
//! redact, and where its activity is recorded. Every limit is a named setting here,
//! never a literal at the point of use.

use std::sync::Arc;
use std::time::Duration;

use sluice_limiter::{BreakerSettings, RateLimitRule, RateLimits};

use crate::activity::Activity;
use crate::redact::Redactor;

/// Resource limits for one connector store (one attempt, or one reader/writer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory a connector may grow to, in bytes.
    pub memory_bytes: usize,
    /// CPU time one call may spend running WebAssembly.
    #[serde(with = "millis")]
    pub cpu_per_call: Duration,
    /// Wall-clock time one call may take, waiting on HTTP included.
    #[serde(with = "millis")]
    pub call_timeout: Duration,
    /// Largest batch accepted from a source, in bytes of NDJSON.
    pub max_batch_bytes: usize,
    /// Largest batch accepted from a source, in records.
    pub max_batch_records: u32,
    /// Largest HTTP response body a connector may receive, in bytes.
    pub max_response_bytes: usize,
    /// Largest HTTP request body a connector may send, in bytes: the host reads a
    /// body as it streams in and refuses it once it passes this.
    pub max_request_bytes: usize,
    /// Bytes of header fields one HTTP request may carry (names and values), and
    /// the most one `wasi:http` fields resource may hold as the connector builds it.
    pub max_header_bytes: usize,
    /// HTTP requests one store may have in flight at once; an answer counts until
    /// the connector drops its body. One more fails at once. With
    /// `max_response_bytes` and `max_request_bytes` this bounds a store's HTTP
    /// buffers.
    pub max_concurrent_requests: usize,
    /// Time to open one outbound TCP connection.
    #[serde(with = "millis")]
    pub http_connect_timeout: Duration,
    /// Time for one outbound HTTP request, from sending to the last byte received.
    #[serde(with = "millis")]
    pub http_request_timeout: Duration,
    /// Time for one HTTP call of a connector in all: waiting for rate-limit budget,
    /// the request and the host's retries of throttled answers.
    #[serde(with = "millis")]
    pub http_total_timeout: Duration,
    /// Bytes of guest stderr kept (it carries panic messages).
    pub stderr_bytes: usize,
    /// Largest checkpoint a source may return with a batch, in bytes. A larger one
    /// fails the call: the store and the API carry checkpoints whole.
    pub max_checkpoint_bytes: usize,
    /// Largest message of an error the host reports for a connector (its own
    /// errors, panics, traps), in bytes: longer ones are cut, after redaction, with a
    /// marker naming this limit.
    pub max_error_bytes: usize,
    /// Largest record (one NDJSON line) a source may return or a destination be
    /// given, in bytes.
    pub max_record_bytes: usize,
    /// Core instances one store may create: a component's core modules, each
    /// instantiated (a connector built by the Rust toolchain has a handful).
    pub max_instances: usize,
    /// Linear memories one store may create, over all its core instances. Their
    /// total size is capped by `memory_bytes`.
    pub max_memories: usize,
    /// Tables one store may create, over all its core instances.
    pub max_tables: usize,
    /// Table elements one store may hold, over all its tables.
    pub table_elements: usize,
    /// Bytes one `wasi:random` `get-random-bytes` (or `get-insecure-random-bytes`)
    /// call may ask for: the host builds the answer in its own memory, and the time
    /// it takes must stay short enough for the CPU budget to see (see `state`).
    pub random_bytes_per_call: u64,
    /// Host resources (HTTP requests and answers, header fields, bodies, streams,
    /// pollables) one store may hold at once: each lives in the host's memory, a
    /// header fields resource up to `max_header_bytes`.
    pub max_host_resources: usize,
    /// Bytes of one connector log line's message (and of its context) kept, after
    /// redaction; the rest is cut with a marker naming this limit.
    pub log_line_bytes: usize,
    /// Connector log lines kept per second of a store's life (as many may come at
    /// once); lines past it are dropped, and one line says how many.
    pub log_lines_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            cpu_per_call: Duration::from_secs(60),
            call_timeout: Duration::from_secs(300),
            max_batch_bytes: 32 << 20,
            max_batch_records: 100_000,
            max_response_bytes: 64 << 20,
            max_request_bytes: 16 << 20,
            max_header_bytes: 64 << 10,
            max_concurrent_requests: 8,
            http_connect_timeout: Duration::from_secs(10),
            http_request_timeout: Duration::from_secs(120),
            http_total_timeout: Duration::from_secs(300),
            stderr_bytes: 64 << 10,
            max_checkpoint_bytes: 64 << 10,
            max_error_bytes: 4 << 10,
            max_record_bytes: 4 << 20,
            max_instances: 32,
            max_memories: 4,
            max_tables: 8,
            table_elements: 100_000,
            random_bytes_per_call: 1 << 20,
            max_host_resources: 1_024,
            log_line_bytes: 8 << 10,
            log_lines_per_sec: 100,
        }
    }
}

/// What the host grants one connection's connector.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Hosts the connector may reach over HTTP: `api.example.com`, `127.0.0.1:8080`
    /// (that port only) or `*.example.com` (any subdomain). Empty: no HTTP at all.
    /// An entry that is a literal IP or `localhost` also grants that address
    /// whatever its class (see [`crate::dial`]); a name never does.
    pub allowed_hosts: Vec<String>,
    /// Networks the connector may reach although their addresses are denied by
    /// default (loopback, private, link-local, ...): the connection's
    /// `allowed_networks`, e.g. `10.0.0.0/8`.
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Names resolved to these addresses instead of by DNS, as curl's `--resolve`
    /// does; the addresses are checked like any resolved address. Set by the
    /// embedding program (tests, a pinned API address), never from a connection's
    /// JSON.
    pub pinned_names: Vec<(String, Vec<std::net::IpAddr>)>,
    /// Secret values to redact from request logs and connector logs.
    pub secrets: Vec<String>,
    /// Resource limits.
    pub limits: Limits,
    /// Where requests and log lines are recorded.
    pub activity: Arc<Activity>,
    /// Whose rate-limit budget the connection's requests draw on, and how.
    pub rates: Arc<RateScope>,
}

/// How one connection's requests draw on the node's rate limiter.
#[derive(Debug, Clone)]
pub struct RateScope {
    /// The connector's name: the first part of every key.
    pub connector: Arc<str>,
    /// Whose budget: a credential's name, a digest of the secrets, or `anonymous`.
    pub credential: Arc<str>,
    /// The connector's declared rules with the connection's applied.
    pub rules: Vec<RateLimitRule>,
    /// How often a throttled request is retried before the connector sees it.
    pub retries: u32,
    /// The longest one request waits for budget.
    pub max_wait: Duration,
    /// The breaker of each host the connection reaches.
    pub breaker: BreakerSettings,
    /// Requests of higher priority get budget first.
    pub priority: i64,
}

impl Default for RateScope {
    fn default() -> Self {
        let defaults = RateLimits::default();
        Self {
            connector: Arc::from(""),
            credential: Arc::from(ANONYMOUS),
            rules: Vec::new(),
            retries: defaults.retries,
            max_wait: defaults.max_wait(),
            breaker: defaults.breaker,
            priority: 0,
        }
    }
}

/// The credential of connections without secrets: APIs limit those per client
/// address, which every connection of the node shares.
pub const ANONYMOUS: &str = "anonymous";

impl Grant {
    /// A grant with default limits that may reach the given hosts.
    pub fn allowing<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            allowed_hosts: hosts.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Whether `host` (with `port`) is in the allowlist.
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            let (pat_host, pat_port) = match pattern.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().ok()),
                _ => (pattern.clone(), None),
            };
            let host_ok = match pat_host.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => pat_host == host,
            };
            host_ok && (pat_port.is_none() || pat_port == port)
        })
    }

    /// `text` with every secret replaced by `***`: as it is, encoded (URL, JSON,
    /// base64) and cut short (see [`crate::redact`]).
    pub fn redact(&self, text: &str) -> String {
        self.redactor().redact(text)
    }

    /// `text` redacted, then cut to `max_error_bytes` with a marker if longer: every
    /// message the host reports for the connector.
    pub fn seal(&self, text: &str) -> String {
        self.redactor()
            .seal(text, self.limits.max_error_bytes, "max_error_bytes")
    }

    /// The redactor of the grant's secrets.
    pub(crate) fn redactor(&self) -> Redactor {
        Redactor::new(&self.secrets)
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_host_port_and_wildcards() {
        let g = Grant::allowing(["api.example.com", "127.0.0.1:8080", "*.test.io"]);
        assert!(g.allows("api.example.com", Some(443)));
        assert!(g.allows("API.example.com", None));
        assert!(g.allows("127.0.0.1", Some(8080)));
        assert!(!g.allows("127.0.0.1", Some(8081)));
        assert!(g.allows("eu.test.io", None));
        assert!(!g.allows("test.io", None));
        assert!(!g.allows("evil.com", None));
        assert!(!Grant::default().allows("api.example.com", None));
    }

    #[test]
    fn redaction_hides_secrets() {
        let g = Grant {
            secrets: vec!["s3cr3t-token".into()],
            ..Grant::default()
        };
        assert_eq!(g.redact("Bearer s3cr3t-token!"), "Bearer ***!");
    }
}
