//! Connection and workflow definitions: what users write (JSON), and the checks that
//! turn a mistake into an error naming the field.
//!
//! Owns the shape and validation of definitions, and the first event of a run, which
//! copies what the run needs of them. It never loads connectors and never touches
//! storage (the definitions service, module `definitions`, does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_host::limiter::{RateLimitRule, RateLimits};
use sluice_host::{ANONYMOUS, Limits, RateScope, SyncMode};
use sluice_model::{EventKind, RunScheduled, Trigger};
use sluice_scheduler::{CatchUp, OverlapPolicy, Schedule, TriggerDef};

use crate::error::DefinitionError;
use crate::retry::RetryPolicy;
use crate::secrets::{self, LabelKey, SecretsError};

/// A connector with its configuration and secrets, for one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionDef {
    /// Unique name.
    pub name: String,
    /// The customer this connection belongs to.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// A first-party connector's name (`sample`, `rest`, `http-post`) or the path of a
    /// `.wasm` component.
    pub connector: String,
    /// The connector's configuration (a JSON object).
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Secret parts of the configuration, with the same shape as `config` and merged
    /// into it when the connector runs; redacted from logs, sealed in the store. A
    /// value may be a reference resolved on the node at each attempt:
    /// `{"$env": "NAME"}` or `{"$file": "/path"}`.
    #[serde(default = "empty_object")]
    pub secrets: serde_json::Value,
    /// Hosts the connector may reach: `api.example.com`, `127.0.0.1:8080`,
    /// `*.example.com`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Networks the connector may reach although their addresses are refused by
    /// default at connect time (loopback, private, link-local, unique-local, ...):
    /// CIDRs such as `10.0.0.0/8` or single addresses. A host in `allowed_hosts`
    /// that is a literal IP or `localhost` needs none; a name resolving to such an
    /// address does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<String>,
    /// Resource limits of the connector's sandbox.
    #[serde(default)]
    pub limits: Limits,
    /// Rate limits of the connection's HTTP: rules that override or add to the
    /// connector's, the credential whose budget it shares, retries, the breaker.
    #[serde(default)]
    pub rate_limits: RateLimits,
}

/// One stream a workflow syncs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDef {
    /// The stream's name, as the connector's `discover` reports it.
    pub name: String,
    /// How it is read.
    #[serde(default = "default_mode")]
    pub mode: SyncMode,
    /// Primary key fields, overriding the connector's.
    #[serde(default)]
    pub primary_key: Vec<String>,
}

/// A sync of streams of a connection into the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    /// Unique name.
    pub name: String,
    /// The connection read from.
    pub connection: String,
    /// The streams synced, in order.
    pub streams: Vec<StreamDef>,
    /// Higher runs first when workers are scarce.
    #[serde(default)]
    pub priority: i32,
    /// Records asked of the connector per batch; each batch is one checkpoint.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// How failed attempts are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// When runs start by themselves; none: only when started by hand.
    #[serde(default)]
    pub schedule: Option<ScheduleDef>,
    /// What a fire does while a run of the workflow is in flight. The default never
    /// lets two runs of the workflow overlap.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// A paused workflow's schedule does not fire.
    #[serde(default)]
    pub paused: bool,
    /// When a run or an attempt is given up as stuck.
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// When a run or an attempt is given up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// An attempt that commits nothing (no batch, no stream end) for this long is
    /// stopped as stuck and retried by the retry policy.
    pub heartbeat_secs: u64,
    /// A run still going this long after it started is stopped and dead-lettered
    /// (a manual retry resumes it); none: no limit.
    pub run_secs: Option<u64>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            heartbeat_secs: 600,
            run_secs: None,
        }
    }
}

/// A workflow's schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    /// Cron (with a time zone), interval or manual.
    pub trigger: TriggerDef,
    /// Each fire is delayed by a stable amount below this, in milliseconds, so that
    /// many workflows on one schedule do not all start at once.
    #[serde(default)]
    pub jitter_ms: u64,
    /// What to do with fires missed while the node was down.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// A fire started up to this late is on time, not missed, in milliseconds.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
}

fn default_grace_ms() -> u64 {
    60_000
}

impl ScheduleDef {
    /// The parsed schedule.
    pub fn compile(&self) -> Result<Schedule, sluice_scheduler::TriggerError> {
        let mut s = Schedule::parse(&self.trigger)?;
        s.jitter_ms = self.jitter_ms;
        s.catch_up = self.catch_up;
        s.grace_ms = i64::try_from(self.grace_ms).unwrap_or(i64::MAX);
        Ok(s)
    }
}

/// A file of definitions, as the CLI reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definitions {
    /// Connections.
    #[serde(default)]
    pub connections: Vec<ConnectionDef>,
    /// Workflows.
    #[serde(default)]
    pub workflows: Vec<WorkflowDef>,
}

fn default_tenant() -> String {
    "default".into()
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

fn default_mode() -> SyncMode {
    SyncMode::FullRefresh
}

/// The default batch size: large enough that a checkpoint's durable commit is a small
/// share of a batch's cost.
pub const DEFAULT_BATCH_SIZE: u32 = 2_000;

fn default_batch_size() -> u32 {
    DEFAULT_BATCH_SIZE
}

fn check_name(field: &str, name: &str) -> Result<(), DefinitionError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DefinitionError::new(
            field,
            format!("`{name}` is not a valid name: use 1 to 128 letters, digits, `-`, `_` or `.`"),
        ))
    }
}

impl ConnectionDef {
    /// Checks the definition; `at` prefixes field paths.
    pub fn validate(&self, at: &str) -> Result<(), DefinitionError> {
        check_name(&format!("{at}name"), &self.name)?;
        check_name(&format!("{at}tenant"), &self.tenant)?;
        if self.connector.trim().is_empty() {
            return Err(DefinitionError::new(
                format!("{at}connector"),
                "name a first-party connector or the path of a .wasm component",
            ));
        }
        for (field, value) in [("config", &self.config), ("secrets", &self.secrets)] {
            if !value.is_object() {
                return Err(DefinitionError::new(
                    format!("{at}{field}"),
                    "must be a JSON object",
                ));
            }
        }
        secrets::validate_references(&self.secrets).map_err(|e| match e {
            SecretsError::Reference { at: path, message } => {
                DefinitionError::new(format!("{at}secrets.{path}"), message)
            }
            other => DefinitionError::new(format!("{at}secrets"), other.to_string()),
        })?;
        self.rate_limits
            .validate()
            .map_err(|e| DefinitionError::new(format!("{at}rate_limits.{}", e.field), e.message))?;
        for (i, network) in self.allowed_networks.iter().enumerate() {
            sluice_host::parse_network(network)
                .map_err(|m| DefinitionError::new(format!("{at}allowed_networks[{i}]"), m))?;
        }
        Ok(())
    }

    /// The networks of `allowed_networks`, parsed (a definition that passed
    /// [`validate`](Self::validate) has no other).
    pub fn networks(&self) -> Vec<sluice_host::IpNet> {
        self.allowed_networks
            .iter()
            .filter_map(|n| sluice_host::parse_network(n).ok())
            .collect()
    }

    /// Whose budget this connection's requests draw on: the credential it names
    /// (a [resolved](Self::resolved) connection with secrets names the keyed label of
    /// its secrets), else the node's anonymous budget.
    pub fn credential(&self) -> String {
        self.rate_limits
            .credential
            .clone()
            .unwrap_or_else(|| ANONYMOUS.to_owned())
    }

    /// The connection as its connector runs now: every secret reference resolved,
    /// and, unless it names its credential, the label of its secrets keyed by
    /// `labels` as its credential (connections with the same secrets share one
    /// budget; the label says nothing of the secrets without the node's key).
    pub(crate) fn resolved(&self, labels: &LabelKey) -> Result<ConnectionDef, SecretsError> {
        let mut resolved = self.clone();
        resolved.secrets = secrets::resolve(&self.secrets)?;
        if resolved.rate_limits.credential.is_none() {
            let values = resolved.secret_values();
            if !values.is_empty() {
                resolved.rate_limits.credential = Some(secrets::credential_label(labels, &values));
            }
        }
        Ok(resolved)
    }

    /// How this connection's requests draw on the node's limiter, for a run of
    /// `priority`, given the rules its connector declares.
    pub fn rate_scope(&self, declared: &[RateLimitRule], priority: i64) -> RateScope {
        RateScope {
            connector: self.connector.as_str().into(),
            credential: self.credential().into(),
            rules: self.rate_limits.effective_rules(declared),
            retries: self.rate_limits.retries,
            max_wait: self.rate_limits.max_wait(),
            breaker: self.rate_limits.breaker.clone(),
            priority,
        }
    }

    /// The configuration the connector receives: `config` with `secrets` merged in.
    pub fn effective_config(&self) -> serde_json::Value {
        let mut config = self.config.clone();
        merge(&mut config, &self.secrets);
        config
    }

    /// Every secret value, to redact.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_strings(&self.secrets, &mut out);
        out
    }
}

fn merge(into: &mut serde_json::Value, from: &serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

impl WorkflowDef {
    /// Checks the definition; `at` prefixes field paths.
    pub fn validate(&self, at: &str) -> Result<(), DefinitionError> {
        check_name(&format!("{at}name"), &self.name)?;
        check_name(&format!("{at}connection"), &self.connection)?;
        if self.streams.is_empty() {
            return Err(DefinitionError::new(
                format!("{at}streams"),
                "list at least one stream to sync",
            ));
        }
        let mut seen = BTreeMap::new();
        for (i, s) in self.streams.iter().enumerate() {
            if s.name.is_empty() {
                return Err(DefinitionError::new(
                    format!("{at}streams[{i}].name"),
                    "must not be empty",
                ));
            }
            if let Some(j) = seen.insert(s.name.as_str(), i) {
                return Err(DefinitionError::new(
                    format!("{at}streams[{i}].name"),
                    format!("stream `{}` is already listed at streams[{j}]", s.name),
                ));
            }
        }
        if self.batch_size == 0 {
            return Err(DefinitionError::new(
                format!("{at}batch_size"),
                "must be at least 1",
            ));
        }
        if self.timeouts.heartbeat_secs == 0 {
            return Err(DefinitionError::new(
                format!("{at}timeouts.heartbeat_secs"),
                "must be at least 1",
            ));
        }
        if let Some(schedule) = &self.schedule {
            schedule.compile().map_err(|e| {
                DefinitionError::new(format!("{at}schedule.trigger"), e.to_string())
            })?;
        }
        self.retry.validate(&format!("{at}retry."))
    }

    /// The stream definition of `name`.
    pub fn stream(&self, name: &str) -> Option<&StreamDef> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// The first event of a run of this workflow over `connection`, for `trigger`
    /// (and, for a schedule, the fire it runs for; else 0): what a run needs of its
    /// definitions is copied into its log, so a later change does not alter it.
    pub(crate) fn scheduled(
        &self,
        connection: &ConnectionDef,
        trigger: Trigger,
        fire_at_unix_ms: i64,
    ) -> EventKind {
        EventKind::RunScheduled(RunScheduled {
            workflow: self.name.clone(),
            connection: connection.name.clone(),
            tenant: connection.tenant.clone(),
            priority: self.priority,
            streams: self.streams.iter().map(|s| s.name.clone()).collect(),
            trigger,
            fire_at_unix_ms,
        })
    }
}

impl Definitions {
    /// Parses a JSON document of definitions and checks each; errors name the field.
    pub fn from_json(text: &str) -> Result<Self, DefinitionError> {
        let defs: Definitions = serde_json::from_str(text).map_err(|e| {
            DefinitionError::new(
                format!("line {} column {}", e.line(), e.column()),
                e.to_string(),
            )
        })?;
        for (i, c) in defs.connections.iter().enumerate() {
            c.validate(&format!("connections[{i}]."))?;
        }
        for (i, w) in defs.workflows.iter().enumerate() {
            w.validate(&format!("workflows[{i}]."))?;
            let known = defs.connections.iter().any(|c| c.name == w.connection);
            if !known {
                return Err(DefinitionError::new(
                    format!("workflows[{i}].connection"),
                    format!(
                        "no connection named `{}` is defined in this file",
                        w.connection
                    ),
                ));
            }
        }
        Ok(defs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let text = r#"{"connections":[{"name":"c","connector":"sample"}],
            "workflows":[{"name":"w","connection":"c","streams":[{"name":"users"},{"name":"users"}]}]}"#;
        let e = Definitions::from_json(text).unwrap_err();
        assert_eq!(e.field, "workflows[0].streams[1].name");
        let text = r#"{"connections":[{"name":"c","connector":"sample"}],
            "workflows":[{"name":"w","connection":"nope","streams":[{"name":"users"}]}]}"#;
        let e = Definitions::from_json(text).unwrap_err();
        assert_eq!(e.field, "workflows[0].connection");
        let e = Definitions::from_json(r#"{"connections":[{"name":"a b","connector":"x"}]}"#)
            .unwrap_err();
        assert_eq!(e.field, "connections[0].name");
        let e = Definitions::from_json(r#"{"connections":[{"nam":"a"}]}"#).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        let text = r#"{"connections":[{"name":"c","connector":"sample"}],
            "workflows":[{"name":"w","connection":"c","streams":[{"name":"users"}],
                          "schedule":{"trigger":{"kind":"cron","expression":"* * *"}}}]}"#;
        let e = Definitions::from_json(text).unwrap_err();
        assert_eq!(e.field, "workflows[0].schedule.trigger");
    }

    #[test]
    fn secrets_merge_into_config_and_are_listed_for_redaction() {
        let c: ConnectionDef = serde_json::from_str(
            r#"{"name":"c","connector":"rest","config":{"auth":{"type":"bearer"},"base_url":"u"},
                "secrets":{"auth":{"token":"s3cret"}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.effective_config(),
            serde_json::json!({"auth":{"type":"bearer","token":"s3cret"},"base_url":"u"})
        );
        assert_eq!(c.secret_values(), vec!["s3cret".to_string()]);
    }

    #[test]
    fn allowed_networks_are_cidrs_named_by_field() {
        let text = r#"{"connections":[{"name":"c","connector":"rest",
            "allowed_networks":["127.0.0.0/8","fd00::/8","example.com"]}]}"#;
        let e = Definitions::from_json(text).unwrap_err();
        assert_eq!(e.field, "connections[0].allowed_networks[2]");
        assert!(e.message.contains("not a network"), "{e}");
    }

    #[test]
    fn a_resolved_connection_is_labelled_by_a_keyed_hash_of_its_secrets() {
        let c: ConnectionDef = serde_json::from_str(
            r#"{"name":"c","connector":"rest","secrets":{"auth":{"token":"s3cret"}}}"#,
        )
        .unwrap();
        assert_eq!(c.credential(), ANONYMOUS);
        let key = crate::secrets::SecretsKey::from_bytes([9; 32]);
        let label = c.resolved(&key.label_key()).unwrap().credential();
        assert!(label.starts_with("secrets:"), "{label}");
        // Never the plain digest of the secret, which anyone could compute.
        let plain = sluice_host::digest(b"s3cret");
        assert!(
            !plain.contains(label.trim_start_matches("secrets:")),
            "{label}"
        );
        let other = crate::secrets::SecretsKey::from_bytes([8; 32]);
        assert_ne!(c.resolved(&other.label_key()).unwrap().credential(), label);
        // A credential the operator names is kept.
        let mut named = c.clone();
        named.rate_limits.credential = Some("acme-prod".into());
        let resolved = named.resolved(&key.label_key()).unwrap();
        assert_eq!(resolved.credential(), "acme-prod");
    }

    #[test]
    fn a_malformed_secret_reference_is_refused_naming_the_field() {
        let text = r#"{"connections":[{"name":"c","connector":"rest",
            "secrets":{"auth":{"token":{"$file":"token.txt"}}}}]}"#;
        let e = Definitions::from_json(text).unwrap_err();
        assert_eq!(e.field, "connections[0].secrets.auth.token");
        assert!(e.message.contains("absolute path"), "{e}");
    }
}
