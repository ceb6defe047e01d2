//! The typed errors of the connector host. Each names what failed and where, so the
//! engine can decide between retry, wait and dead-letter, and a user can act on it.

use std::time::Duration;

use sluice_model::FailureKind;

use crate::limits::Grant;

/// Everything that can go wrong when the host runs a connector.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The connector ran and returned an error of its own.
    #[error("connector error ({kind}) in {call}: {message}")]
    Connector {
        /// The call that failed, e.g. `source.reader.next`.
        call: &'static str,
        /// What kind of failure the connector reported (the WIT `error-kind`, or
        /// `rate_limited` when a request of the call was throttled).
        kind: FailureKind,
        /// How long the API asked to wait, for a rate limit, when it said.
        retry_after_ms: Option<u64>,
        /// The connector's message.
        message: String,
    },
    /// The bytes are not a WebAssembly component, or it failed to compile.
    #[error("cannot compile component {what}: {message}")]
    Compile {
        /// The file or digest.
        what: String,
        /// The compiler's message.
        message: String,
    },
    /// The component does not implement `sluice:connector/source` nor `/destination`,
    /// or imports something the host does not grant.
    #[error("component {digest} is not a Sluice connector: {reason}")]
    NotAConnector {
        /// Content digest of the component.
        digest: String,
        /// What is missing or extra.
        reason: String,
    },
    /// The call needs an export the connector does not have (e.g. reading from a
    /// destination-only connector).
    #[error("connector {digest} does not export {interface}")]
    MissingExport {
        /// Content digest of the component.
        digest: String,
        /// The interface, e.g. `sluice:connector/source`.
        interface: &'static str,
    },
    /// The call ran past its wall-clock timeout.
    #[error("{call} timed out after {limit:?}")]
    Timeout {
        /// The call.
        call: &'static str,
        /// The configured limit.
        limit: Duration,
    },
    /// The connector used more CPU time than one call may.
    #[error("{call} exceeded its CPU budget of {limit:?}")]
    CpuLimit {
        /// The call.
        call: &'static str,
        /// The configured budget.
        limit: Duration,
    },
    /// The connector held more host resources (HTTP requests, header fields,
    /// streams, pollables) at once than its store may.
    #[error(
        "{call} held more than {limit} host resources at once (HTTP requests, header \
         fields, streams); the limit (max_host_resources) is {limit}"
    )]
    ResourceLimit {
        /// The call.
        call: &'static str,
        /// The configured limit.
        limit: usize,
    },
    /// The connector tried to grow its memory past the cap.
    #[error("{call} exceeded the memory cap of {limit} bytes (asked for {requested} bytes)")]
    MemoryLimit {
        /// The call.
        call: &'static str,
        /// The cap.
        limit: usize,
        /// The size it tried to grow to.
        requested: usize,
    },
    /// The connector made an HTTP request to a host outside the connection's allowlist.
    #[error("{call} tried to reach {host}, which is not in the connection's allowlist")]
    DisallowedHost {
        /// The call.
        call: &'static str,
        /// The host it tried to reach.
        host: String,
    },
    /// The host refused an HTTP request of the call: a limit of the sandbox's HTTP
    /// (`max_request_bytes`, `max_header_bytes`, `max_concurrent_requests`), an
    /// address denied at connect time, or a URL with user info.
    #[error("{call}: the host refused an HTTP request: {refusal}")]
    EgressRefused {
        /// The call.
        call: &'static str,
        /// What was refused and by which limit or rule.
        refusal: crate::egress::EgressRefusal,
    },
    /// A request of the call failed at once because its host's circuit breaker is
    /// open after repeated failures; the connector's own error follows.
    #[error("{call}: {message} (the circuit breaker for {host} is open; it lets a probe through in {} ms)", retry_after.as_millis())]
    BreakerOpen {
        /// The call.
        call: &'static str,
        /// The host whose breaker is open.
        host: String,
        /// When the breaker lets a probe through.
        retry_after: Duration,
        /// The connector's message.
        message: String,
    },
    /// The connector panicked.
    #[error("connector panicked in {call}: {message}")]
    Panic {
        /// The call.
        call: &'static str,
        /// The panic message the guest printed.
        message: String,
    },
    /// The connector trapped (a WebAssembly fault other than the above).
    #[error("connector trapped in {call}: {message}")]
    Trap {
        /// The call.
        call: &'static str,
        /// The trap and its backtrace.
        message: String,
    },
    /// The connector returned output that breaks the contract.
    #[error("malformed output from {call}: {reason}")]
    MalformedOutput {
        /// The call.
        call: &'static str,
        /// What is wrong and where (e.g. the line of the batch).
        reason: String,
    },
    /// A batch larger than the host accepts.
    #[error(
        "{call} returned a batch of {bytes} bytes / {records} records; the limit is {max_bytes} bytes / {max_records} records"
    )]
    BatchTooLarge {
        /// The call.
        call: &'static str,
        /// Bytes in the batch.
        bytes: usize,
        /// Records in the batch.
        records: u64,
        /// Byte limit.
        max_bytes: usize,
        /// Record limit.
        max_records: u32,
    },
    /// A checkpoint larger than the host accepts (`max_checkpoint_bytes`).
    #[error(
        "{call} returned a checkpoint of {bytes} bytes; the limit (max_checkpoint_bytes) is {limit} bytes"
    )]
    CheckpointTooLarge {
        /// The call.
        call: &'static str,
        /// Bytes in the checkpoint.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A record (one NDJSON line) larger than the host accepts (`max_record_bytes`).
    #[error(
        "{call}: record {record} (line {record}, byte {offset} of the batch) is {bytes} bytes; the limit (max_record_bytes) is {limit} bytes"
    )]
    RecordTooLarge {
        /// The call.
        call: &'static str,
        /// The record's line number in the batch, from 1.
        record: u64,
        /// Where the record starts in the batch.
        offset: usize,
        /// Bytes in the record, without its newline.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A reader or writer that failed before cannot be used again.
    #[error(
        "{call}: this reader or writer failed earlier and cannot be used again; open a new one"
    )]
    Poisoned {
        /// The call.
        call: &'static str,
    },
    /// A failure of the host itself (I/O on the cache, wasmtime setup).
    #[error("host failure: {0}")]
    Internal(String),
}

impl HostError {
    /// The kind of failure, as the engine sees it: connector errors keep theirs;
    /// broken sandbox rules (CPU, memory, a trap or panic, a poisoned instance) are
    /// `sandbox`, malformed output `schema`, timeouts and host trouble transient.
    pub fn kind(&self) -> FailureKind {
        match self {
            HostError::Connector { kind, .. } => *kind,
            HostError::Timeout { .. } | HostError::Internal(_) | HostError::BreakerOpen { .. } => {
                FailureKind::Transient
            }
            HostError::MalformedOutput { .. }
            | HostError::BatchTooLarge { .. }
            | HostError::CheckpointTooLarge { .. }
            | HostError::RecordTooLarge { .. } => FailureKind::Schema,
            HostError::Compile { .. }
            | HostError::NotAConnector { .. }
            | HostError::MissingExport { .. }
            | HostError::DisallowedHost { .. } => FailureKind::Config,
            HostError::EgressRefused { refusal, .. } if refusal.is_config() => FailureKind::Config,
            HostError::EgressRefused { .. } => FailureKind::Sandbox,
            HostError::CpuLimit { .. }
            | HostError::MemoryLimit { .. }
            | HostError::ResourceLimit { .. }
            | HostError::Panic { .. }
            | HostError::Trap { .. }
            | HostError::Poisoned { .. } => FailureKind::Sandbox,
        }
    }
}

impl HostError {
    /// How long to wait before trying again, when the host knows: the API's or the
    /// limiter's `Retry-After`, or an open breaker's cool-down.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HostError::Connector {
                retry_after_ms: Some(ms),
                ..
            } => Some(Duration::from_millis(*ms)),
            HostError::BreakerOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl HostError {
    /// The error with every text that came from the connector, or may hold what it
    /// was given, redacted of `grant`'s secrets and cut to its `max_error_bytes`: what
    /// every public call of the host returns.
    pub(crate) fn sealed(self, grant: &Grant) -> Self {
        let redactor = grant.redactor();
        let max = grant.limits.max_error_bytes;
        let seal = |text: String| {
            if redactor.is_empty() && text.len() <= max {
                text
            } else {
                redactor.seal(&text, max, "max_error_bytes")
            }
        };
        match self {
            HostError::Connector {
                call,
                kind,
                retry_after_ms,
                message,
            } => HostError::Connector {
                call,
                kind,
                retry_after_ms,
                message: seal(message),
            },
            HostError::Compile { what, message } => HostError::Compile {
                what: seal(what),
                message: seal(message),
            },
            HostError::NotAConnector { digest, reason } => HostError::NotAConnector {
                digest,
                reason: seal(reason),
            },
            HostError::DisallowedHost { call, host } => HostError::DisallowedHost {
                call,
                host: seal(host),
            },
            HostError::BreakerOpen {
                call,
                host,
                retry_after,
                message,
            } => HostError::BreakerOpen {
                call,
                host: seal(host),
                retry_after,
                message: seal(message),
            },
            HostError::Panic { call, message } => HostError::Panic {
                call,
                message: seal(message),
            },
            HostError::Trap { call, message } => HostError::Trap {
                call,
                message: seal(message),
            },
            HostError::MalformedOutput { call, reason } => HostError::MalformedOutput {
                call,
                reason: seal(reason),
            },
            HostError::Internal(message) => HostError::Internal(seal(message)),
            other @ (HostError::MissingExport { .. }
            | HostError::EgressRefused { .. }
            | HostError::Timeout { .. }
            | HostError::CpuLimit { .. }
            | HostError::MemoryLimit { .. }
            | HostError::ResourceLimit { .. }
            | HostError::BatchTooLarge { .. }
            | HostError::CheckpointTooLarge { .. }
            | HostError::RecordTooLarge { .. }
            | HostError::Poisoned { .. }) => other,
        }
    }
}

impl From<wasmtime::Error> for HostError {
    fn from(e: wasmtime::Error) -> Self {
        HostError::Internal(format!("{e:#}"))
    }
}
