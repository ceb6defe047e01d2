//! What users and connectors declare: rate-limit rules per endpoint pattern, the
//! credential a connection's budget is shared under, retry and breaker settings.
//!
//! Owns the shape, the validation (errors name the field) and the matching of a
//! request to its rule. It never counts anything and never waits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::destination::Destination;

/// A mistake in rate-limit settings, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    /// Path of the offending field, relative to the rate-limit settings, e.g.
    /// `rules[1].per_ms`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The most requests one rule may allow per interval; the limiter keeps one
/// timestamp per allowed request.
pub const MAX_REQUESTS_PER_INTERVAL: u32 = 1_000_000;

/// A limit on one endpoint: at most `requests` per `per_ms` milliseconds, at most
/// `concurrent` requests in flight, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// `host`, `host:port`, `*.domain`, each optionally followed by a path prefix:
    /// `api.example.com/v2/search`. A request uses the most specific rule that
    /// matches it.
    pub endpoint: String,
    /// Requests allowed in any interval of `per_ms` milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// The interval `requests` counts over, in milliseconds.
    #[serde(default = "default_per_ms")]
    pub per_ms: u64,
    /// Requests allowed in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u32>,
}

fn default_per_ms() -> u64 {
    1000
}

impl RateLimitRule {
    /// The interval `requests` counts over.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.per_ms)
    }

    fn validate(&self, at: &str) -> Result<(), RuleError> {
        let err = |field: &str, message: &str| {
            Err(RuleError {
                field: format!("{at}.{field}"),
                message: message.into(),
            })
        };
        if self.endpoint.trim().is_empty() {
            return err("endpoint", "must name a host, e.g. `api.example.com`");
        }
        if self.endpoint.contains("://") {
            return err(
                "endpoint",
                "is a host and optional path, without a scheme: `api.example.com/v1`",
            );
        }
        if self.requests.is_none() && self.concurrent.is_none() {
            return err(
                "requests",
                "set `requests` (per `per_ms`), `concurrent`, or both",
            );
        }
        match self.requests {
            Some(0) => return err("requests", "must be at least 1"),
            Some(n) if n > MAX_REQUESTS_PER_INTERVAL => {
                return err(
                    "requests",
                    &format!("must be at most {MAX_REQUESTS_PER_INTERVAL}; use a shorter `per_ms`"),
                );
            }
            _ => {}
        }
        if self.per_ms == 0 {
            return err("per_ms", "must be at least 1 millisecond");
        }
        if self.concurrent == Some(0) {
            return err("concurrent", "must be at least 1");
        }
        Ok(())
    }

    /// How well this rule matches a request to `destination` and `path`: `None`
    /// if it does not, otherwise higher for more specific rules. Ports compare as
    /// numbers and a rule without a port matches every port, so neither the way a
    /// URL spells its authority nor a default port left out changes the rule.
    pub fn specificity(&self, destination: &Destination, path: &str) -> Option<usize> {
        let pattern = self.endpoint.trim().trim_end_matches('*');
        let (host_pattern, prefix) = match pattern.find('/') {
            Some(i) => (&pattern[..i], &pattern[i..]),
            None => (pattern, ""),
        };
        let host_pattern = host_pattern.to_ascii_lowercase();
        let (pattern_host, pattern_port) = split_port(&host_pattern);
        let pattern_host = pattern_host.strip_suffix('.').unwrap_or(pattern_host);
        match pattern_port {
            Some(p) if p.parse::<u16>().ok() != Some(destination.port()) => return None,
            _ => {}
        }
        let host = destination.host();
        let exact = match pattern_host.strip_prefix("*.") {
            Some(suffix) => {
                if !host.ends_with(suffix) || !host[..host.len() - suffix.len()].ends_with('.') {
                    return None;
                }
                false
            }
            None if pattern_host == host => true,
            None => return None,
        };
        if !path.starts_with(prefix) {
            return None;
        }
        Some(prefix.len() * 4 + usize::from(pattern_port.is_some()) * 2 + usize::from(exact))
    }
}

fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

/// When the circuit breaker of a host opens, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures (connection errors, timeouts, 5xx other than a 503
    /// asking to retry later) that open the breaker.
    pub failures: u32,
    /// How long an open breaker fails requests at once before letting one probe
    /// through, in milliseconds.
    pub cool_down_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            cool_down_ms: 30_000,
        }
    }
}

impl BreakerSettings {
    /// The cool-down as a duration.
    pub fn cool_down(&self) -> Duration {
        Duration::from_millis(self.cool_down_ms)
    }
}

/// A connection's rate-limit settings: rules that override or add to the
/// connector's own, the credential its budget is shared under, how throttled
/// requests are retried, and its breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Connections naming the same credential share one budget per endpoint. By
    /// default, connections of a connector with the same secrets share one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Rules; one with the same `endpoint` as a rule the connector declares
    /// replaces it.
    pub rules: Vec<RateLimitRule>,
    /// How often a throttled request (429, or 503 with `Retry-After`) is retried by
    /// the host before the connector sees the answer and the run waits.
    pub retries: u32,
    /// The longest one request waits for its budget (a pause, a token, a slot)
    /// before it is handed back as rate limited, in milliseconds.
    pub max_wait_ms: u64,
    /// The circuit breaker of each host this connection reaches.
    pub breaker: BreakerSettings,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            credential: None,
            rules: Vec::new(),
            retries: 3,
            max_wait_ms: 60_000,
            breaker: BreakerSettings::default(),
        }
    }
}

impl RateLimits {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RuleError> {
        validate_rules(&self.rules, "rules")?;
        if self
            .credential
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(RuleError {
                field: "credential".into(),
                message: "must not be empty; leave it out to share by secrets".into(),
            });
        }
        if self.breaker.failures == 0 {
            return Err(RuleError {
                field: "breaker.failures".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// The longest one request waits for its budget.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    /// The connector's `declared` rules with this connection's rules applied: a rule
    /// for the same endpoint replaces the declared one, others are added.
    pub fn effective_rules(&self, declared: &[RateLimitRule]) -> Vec<RateLimitRule> {
        let same = |a: &RateLimitRule, b: &RateLimitRule| {
            a.endpoint.trim().eq_ignore_ascii_case(b.endpoint.trim())
        };
        let mut rules: Vec<RateLimitRule> = declared
            .iter()
            .filter(|d| !self.rules.iter().any(|r| same(r, d)))
            .cloned()
            .collect();
        rules.extend(self.rules.iter().cloned());
        rules
    }
}

/// Check a list of rules (a connection's or a connector's), naming fields under
/// `at`.
pub fn validate_rules(rules: &[RateLimitRule], at: &str) -> Result<(), RuleError> {
    for (i, rule) in rules.iter().enumerate() {
        rule.validate(&format!("{at}[{i}]"))?;
    }
    Ok(())
}

/// The most specific of `rules` matching a request, if any.
pub fn matching<'r>(
    rules: &'r [RateLimitRule],
    destination: &Destination,
    path: &str,
) -> Option<&'r RateLimitRule> {
    rules
        .iter()
        .filter_map(|r| r.specificity(destination, path).map(|s| (s, r)))
        .max_by_key(|(s, _)| *s)
        .map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(endpoint: &str) -> RateLimitRule {
        RateLimitRule {
            endpoint: endpoint.into(),
            requests: Some(10),
            per_ms: 1000,
            concurrent: None,
        }
    }

    #[test]
    fn the_most_specific_rule_matches() {
        let rules = [
            rule("*.example.com"),
            rule("api.example.com"),
            rule("api.example.com/v2/search*"),
            rule("127.0.0.1:8080"),
        ];
        let m = |a: &str, p: &str| {
            let (host, port) = match a.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().unwrap()),
                None => (a, 443),
            };
            let d = Destination::new(host, port, 443);
            matching(&rules, &d, p).map(|r| r.endpoint.as_str())
        };
        assert_eq!(
            m("api.example.com", "/v2/search?q=1"),
            Some("api.example.com/v2/search*")
        );
        assert_eq!(m("API.example.com", "/v2/users"), Some("api.example.com"));
        assert_eq!(m("eu.example.com", "/"), Some("*.example.com"));
        assert_eq!(m("example.com", "/"), None);
        assert_eq!(m("badexample.com", "/"), None);
        assert_eq!(m("127.0.0.1:8080", "/x"), Some("127.0.0.1:8080"));
        assert_eq!(m("127.0.0.1:8081", "/x"), None);
        assert_eq!(
            m("127.0.0.1:08080", "/x"),
            Some("127.0.0.1:8080"),
            "ports are numbers"
        );
        assert_eq!(m("api.example.com.", "/v2/users"), Some("api.example.com"));
    }

    #[test]
    fn a_rule_with_the_default_port_matches_a_url_without_one() {
        let rules = [rule("api.example.com:443")];
        let d = Destination::new("api.example.com", 443, 443);
        assert!(matching(&rules, &d, "/").is_some());
        let d = Destination::new("api.example.com", 8443, 443);
        assert!(matching(&rules, &d, "/").is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let mut limits = RateLimits {
            rules: vec![rule("api.example.com"), rule("x")],
            ..RateLimits::default()
        };
        limits.rules[1].per_ms = 0;
        let e = limits.validate().unwrap_err();
        assert_eq!(e.field, "rules[1].per_ms");
        limits.rules[1] = RateLimitRule {
            requests: None,
            ..rule("https://x")
        };
        assert_eq!(limits.validate().unwrap_err().field, "rules[1].endpoint");
        limits.rules[1].endpoint = "x".into();
        assert_eq!(limits.validate().unwrap_err().field, "rules[1].requests");
        let parsed: Result<RateLimits, _> = serde_json::from_str(r#"{"rule": []}"#);
        assert!(
            parsed
                .unwrap_err()
                .to_string()
                .contains("unknown field `rule`")
        );
    }

    #[test]
    fn a_connections_rule_replaces_the_declared_one_for_its_endpoint() {
        let declared = [rule("api.example.com"), rule("api.example.com/search")];
        let mut mine = rule("API.example.com");
        mine.requests = Some(2);
        let limits = RateLimits {
            rules: vec![mine.clone(), rule("other.example.com")],
            ..RateLimits::default()
        };
        let rules = limits.effective_rules(&declared);
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].endpoint, "api.example.com/search");
        assert_eq!(rules[1], mine);
    }
}
