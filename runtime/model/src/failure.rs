//! [`FailureKind`]: why an attempt failed, which decides whether and when a run is
//! retried. The one failure kind of the host side: the connector host reports it, the
//! engine decides by it, the log records it and the API names it.

use std::fmt;

/// The kind of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The configuration is invalid: retrying the same config cannot help.
    Config,
    /// The credentials were rejected.
    Auth,
    /// The API asked to slow down: the run waits, it does not spend a retry.
    RateLimited,
    /// May go away on retry (network, 5xx, timeouts).
    Transient,
    /// Will not go away on retry.
    Permanent,
    /// Data does not match the stream's schema.
    Schema,
    /// The connector broke its sandbox's rules (trap, memory or CPU cap, bad output).
    Sandbox,
    /// The orchestrator itself stopped the attempt (a lost lease, a stuck attempt, a
    /// node that went away).
    Orchestration,
}

impl FailureKind {
    /// Every kind, in a stable order.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Config,
        FailureKind::Auth,
        FailureKind::RateLimited,
        FailureKind::Transient,
        FailureKind::Permanent,
        FailureKind::Schema,
        FailureKind::Sandbox,
        FailureKind::Orchestration,
    ];

    /// A stable lowercase name, as the API, the CLI and metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Config => "config",
            FailureKind::Auth => "auth",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Transient => "transient",
            FailureKind::Permanent => "permanent",
            FailureKind::Schema => "schema",
            FailureKind::Sandbox => "sandbox",
            FailureKind::Orchestration => "orchestration",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_serde() {
        let mut names: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FailureKind::ALL.len());
        for kind in FailureKind::ALL {
            let json = serde_json::to_string(&kind).unwrap_or_default();
            assert_eq!(json, format!("\"{kind}\""));
        }
    }
}
