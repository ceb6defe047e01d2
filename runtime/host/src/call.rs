//! One guarded call into a connector: per-call CPU budget and wall-clock timeout,
//! and the translation of whatever happened into one named [`HostError`].

use std::time::Duration;

use wasmtime::Store;

use crate::HostError;
use crate::bindings::wit;
use crate::state::State;
use sluice_model::FailureKind;

/// The outcome of a guest call that may return a connector error.
pub(crate) type GuestResult<R> = wasmtime::Result<Result<R, wit::ConnectorError>>;

/// Run `f` against `store` under the grant's limits, and name what went wrong. Every
/// text of the error is redacted and cut to `max_error_bytes` ([`HostError::sealed`]).
///
/// After an `Err` other than [`HostError::Connector`], the store must not be
/// entered again: the instance may have trapped mid-call.
pub(crate) async fn guarded<R, F>(
    store: &mut Store<State>,
    call: &'static str,
    f: F,
) -> Result<R, HostError>
where
    F: AsyncFnOnce(&mut Store<State>) -> GuestResult<R>,
{
    store.data_mut().begin_call();
    let limit = store.data().grant.limits.call_timeout;
    let outcome = tokio::time::timeout(limit, f(store)).await;
    store.data_mut().end_call();
    classify(store, call, limit, outcome).map_err(|e| e.sealed(&store.data().grant))
}

fn classify<R>(
    store: &Store<State>,
    call: &'static str,
    timeout: Duration,
    outcome: Result<GuestResult<R>, tokio::time::error::Elapsed>,
) -> Result<R, HostError> {
    let state = store.data();
    let limits = &state.grant.limits;
    let trap = match outcome {
        Err(_) => {
            return Err(HostError::Timeout {
                call,
                limit: timeout,
            });
        }
        Ok(Ok(Ok(value))) => {
            // A refused request fails the call even when the connector made
            // light of it: the refusal names a limit or rule it broke.
            if let Some(refusal) = state.hooks.refused() {
                return Err(HostError::EgressRefused { call, refusal });
            }
            return Ok(value);
        }
        Ok(Ok(Err(e))) => {
            if let Some(host) = state.hooks.denied.first() {
                return Err(HostError::DisallowedHost {
                    call,
                    host: host.clone(),
                });
            }
            // Whatever the connector made of a refused request, the refusal says
            // what to change.
            if let Some(refusal) = state.hooks.refused() {
                return Err(HostError::EgressRefused { call, refusal });
            }
            let (mut kind, mut retry_after_ms) = kind_of(&e.kind);
            // A request of this call was handed back rate limited: whatever the
            // connector made of it, the run should wait, not fail.
            if let Some(wait) = state.hooks.throttled()
                && kind != FailureKind::RateLimited
            {
                kind = FailureKind::RateLimited;
                retry_after_ms = Some(wait.as_millis() as u64);
            }
            let message = e.message;
            if let Some(open) = state.hooks.breaker_open()
                && kind == FailureKind::Transient
            {
                return Err(HostError::BreakerOpen {
                    call,
                    host: open.host,
                    retry_after: open.retry_after.unwrap_or(Duration::from_secs(1)),
                    message,
                });
            }
            return Err(HostError::Connector {
                call,
                kind,
                retry_after_ms,
                message,
            });
        }
        Ok(Err(trap)) => trap,
    };
    if let Some(refusal) = crate::egress::refusal_of_trap(&trap, limits) {
        return Err(HostError::EgressRefused { call, refusal });
    }
    if trap_is_full_table(&trap) {
        return Err(HostError::ResourceLimit {
            call,
            limit: limits.max_host_resources,
        });
    }
    if let Some(requested) = state.violations.memory_requested {
        return Err(HostError::MemoryLimit {
            call,
            limit: limits.memory_bytes,
            requested,
        });
    }
    if state.violations.cpu_exhausted {
        return Err(HostError::CpuLimit {
            call,
            limit: limits.cpu_per_call,
        });
    }
    let stderr = String::from_utf8_lossy(&state.stderr.contents()).into_owned();
    if let Some(message) = panic_message(&stderr) {
        return Err(HostError::Panic { call, message });
    }
    let mut message = format!("{trap:#}");
    // wasmtime's own refusal of a random-bytes request past the store's setting
    // names no setting: name ours.
    if message.contains("requested len") && message.contains("exceeds limit") {
        message.push_str(&format!(
            " (the limit is random_bytes_per_call, {} bytes)",
            limits.random_bytes_per_call
        ));
    }
    if !stderr.trim().is_empty() {
        message.push_str("; stderr: ");
        message.push_str(stderr.trim());
    }
    Err(HostError::Trap { call, message })
}

/// Whether the trap is the store's resource table refusing one more entry.
fn trap_is_full_table(trap: &wasmtime::Error) -> bool {
    trap.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    })
}

/// The panic message a Rust guest printed to stderr before aborting.
fn panic_message(stderr: &str) -> Option<String> {
    let at = stderr.find("panicked at ")?;
    let rest = &stderr[at + "panicked at ".len()..];
    // `panicked at src/lib.rs:3:5:\n<message>\nnote: ...`
    let (location, message) = rest.split_once('\n').unwrap_or((rest, ""));
    let message = message
        .lines()
        .take_while(|l| !l.starts_with("note:"))
        .collect::<Vec<_>>()
        .join("\n");
    Some(format!(
        "{} (at {})",
        message.trim(),
        location.trim_end_matches(':')
    ))
}

/// The failure kind a connector reported, and how long it asked to wait.
pub(crate) fn kind_of(kind: &wit::ErrorKind) -> (FailureKind, Option<u64>) {
    match kind {
        wit::ErrorKind::Config => (FailureKind::Config, None),
        wit::ErrorKind::Auth => (FailureKind::Auth, None),
        wit::ErrorKind::RateLimited(ms) => (FailureKind::RateLimited, *ms),
        wit::ErrorKind::Transient => (FailureKind::Transient, None),
        wit::ErrorKind::Permanent => (FailureKind::Permanent, None),
        wit::ErrorKind::Schema => (FailureKind::Schema, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_rust_panic_messages() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nboom went the connector\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("boom went the connector (at src/lib.rs:10:5)")
        );
        assert_eq!(panic_message("all fine"), None);
    }
}
