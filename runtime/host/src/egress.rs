//! All outbound HTTP of every connector goes through here: pooled clients, the
//! connection's allowlist, the node's rate limiter and per-credential breakers,
//! retries of throttled answers, size caps (request body, header fields, response
//! body), requests in flight per store, timeouts (connect, request, total) and the
//! per-run request log (secrets redacted).
//!
//! A request is matched, keyed and logged by its parsed, normalised destination
//! ([`Destination`]: lowercase host, port as a number with the scheme's default),
//! never by the authority as written; a URL with user info is refused. Connections
//! are made by [`dial`](crate::dial), which checks every address at connect time.
//!
//! This module must never hand a guest a response it has not fully read and
//! measured, nor buffer more than a named limit: the request body is read up to
//! `max_request_bytes` and refused past it while it streams in; responses are
//! buffered up to `max_response_bytes`, and a store holds at most
//! `max_concurrent_requests` requests (and their unread answers) at once, so a
//! store's HTTP buffers stay within their product.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::uri::Scheme;
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks,
};

use sluice_limiter::{BreakerOpen, Destination, Key, Limiter};
use tokio::time::Instant;

use crate::activity::RequestRecord;
use crate::dial::{AddressRefused, DialError, DialPolicy, Dialer};
use crate::limits::{Grant, Limits};

/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type PooledClient = Client<Dialer, Full<Bytes>>;

/// A pool's key: connections are shared only between requests with the same
/// connect timeout and address policy.
type PoolKey = (Duration, Arc<DialPolicy>);

/// Why the host refused a request of a connector, with the limit or rule that
/// refused it: what the call fails with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressRefusal {
    /// The URL carries user info (`user@host`), which the host never sends.
    #[error(
        "the URL of a request to {host} carries user info (`user@host`); send credentials in a header, not in the URL"
    )]
    UserInfo {
        /// The host the URL names.
        host: String,
    },
    /// The request body grew past `max_request_bytes`.
    #[error("a request body to {host} is larger than max_request_bytes ({limit} bytes)")]
    RequestTooLarge {
        /// The destination.
        host: String,
        /// The limit.
        limit: usize,
    },
    /// The request's header fields take more than `max_header_bytes`.
    #[error(
        "the header fields of a request to {host} take {bytes} bytes, more than max_header_bytes ({limit} bytes)"
    )]
    HeadersTooLarge {
        /// The destination.
        host: String,
        /// Bytes of names and values.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A `wasi:http` fields resource grew past `max_header_bytes` while the
    /// connector built it (wasmtime counts names and values with their in-memory
    /// overhead, and traps the guest).
    #[error(
        "header fields built by the connector grew past max_header_bytes ({limit} bytes, counted as wasmtime holds them)"
    )]
    FieldsTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More requests at once than `max_concurrent_requests`.
    #[error(
        "more than max_concurrent_requests ({limit}) requests in flight at once (an answer counts until its body is dropped)"
    )]
    TooManyRequests {
        /// The limit.
        limit: usize,
    },
    /// An address the host resolves to is denied.
    #[error(transparent)]
    Address(#[from] AddressRefused),
}

impl EgressRefusal {
    /// A refusal the connection's definition must change to avoid (an address, a
    /// URL), rather than a connector going past a limit of its sandbox.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            EgressRefusal::UserInfo { .. } | EgressRefusal::Address(_)
        )
    }

    /// What the guest is told: the `wasi:http` error code closest to the cause.
    fn code(&self) -> HttpError {
        match self {
            EgressRefusal::UserInfo { .. } => HttpError::HttpRequestUriInvalid,
            EgressRefusal::RequestTooLarge { limit, .. } => {
                HttpError::HttpRequestBodySize(Some(*limit as u64))
            }
            EgressRefusal::HeadersTooLarge { limit, .. } => {
                HttpError::HttpRequestHeaderSectionSize(Some(
                    u32::try_from(*limit).unwrap_or(u32::MAX),
                ))
            }
            EgressRefusal::FieldsTooLarge { limit } => HttpError::HttpRequestHeaderSectionSize(
                Some(u32::try_from(*limit).unwrap_or(u32::MAX)),
            ),
            EgressRefusal::TooManyRequests { .. } => HttpError::ConnectionLimitReached,
            EgressRefusal::Address(_) => HttpError::DestinationIpProhibited,
        }
    }
}

/// The `wasi:http` context of one store: no fields resource may hold more than
/// `max_header_bytes` (the limit wasmtime applies as the guest builds them).
pub(crate) fn http_ctx(limits: &Limits) -> WasiHttpCtx {
    let mut ctx = WasiHttpCtx::new();
    ctx.set_field_size_limit(limits.max_header_bytes);
    ctx
}

/// The refusal behind a trap, when wasmtime trapped the guest for building header
/// fields past `max_header_bytes` (or more fields than a map holds).
pub(crate) fn refusal_of_trap(trap: &wasmtime::Error, limits: &Limits) -> Option<EgressRefusal> {
    trap.chain()
        .filter_map(|e| e.downcast_ref::<wasmtime_wasi_http::FieldMapError>())
        .any(|e| {
            matches!(
                e,
                wasmtime_wasi_http::FieldMapError::TotalSizeTooBig
                    | wasmtime_wasi_http::FieldMapError::TooManyFields
            )
        })
        .then_some(EgressRefusal::FieldsTooLarge {
            limit: limits.max_header_bytes,
        })
}

/// The process's outbound HTTP: pooled clients and the rate limiter every request
/// asks first.
pub struct Egress {
    /// One pool per connect timeout and address policy in use (hyper sets the
    /// connector per client).
    clients: Mutex<HashMap<PoolKey, PooledClient>>,
    limiter: Arc<Limiter>,
}

impl Default for Egress {
    fn default() -> Self {
        Self::new()
    }
}

impl Egress {
    /// Pooled clients and an empty limiter.
    pub fn new() -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            limiter: Limiter::new(),
        }
    }

    /// The node's rate limiter.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    fn client(&self, connect_timeout: Duration, policy: Arc<DialPolicy>) -> PooledClient {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry((connect_timeout, policy.clone()))
            .or_insert_with(|| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .build(Dialer::new(policy, connect_timeout))
            })
            .clone()
    }

    /// Send `request` through a connection checked under `policy` and read the
    /// whole response body, at most `max_response_bytes`.
    async fn send(
        &self,
        request: http::Request<Bytes>,
        limits: &Limits,
        policy: Arc<DialPolicy>,
    ) -> Result<(http::response::Parts, Bytes), SendError> {
        let max_bytes = limits.max_response_bytes;
        let request = request.map(Full::new);
        let client = self.client(limits.http_connect_timeout, policy);
        let response = client.request(request).await.map_err(|e| {
            if let Some(dial) = dial_error(&e) {
                return match dial {
                    DialError::Refused(refused) => SendError::Refused(refused.clone().into()),
                    DialError::Timeout { .. } => SendError::Http(HttpError::ConnectionTimeout),
                    DialError::Resolve { .. } => SendError::Http(HttpError::DestinationNotFound),
                    DialError::Tls { source, .. } => SendError::Http(HttpError::InternalError(
                        Some(format!("TLS handshake failed: {source}")),
                    )),
                    DialError::Connect { .. } | DialError::BadHost(_) => {
                        SendError::Http(HttpError::ConnectionRefused)
                    }
                };
            }
            if e.is_connect() {
                SendError::Http(HttpError::ConnectionRefused)
            } else {
                SendError::Http(HttpError::InternalError(Some(format!("{e:#}"))))
            }
        })?;
        let (parts, body) = response.into_parts();
        let body = body.map_err(|e| HttpError::InternalError(Some(e.to_string())));
        let body = read_limited(body, max_bytes)
            .await
            .map_err(SendError::Http)?;
        Ok((parts, body))
    }
}

/// A send that failed: at the peer, or refused by the host before connecting.
enum SendError {
    Http(HttpError),
    Refused(EgressRefusal),
}

/// The dial error behind a client error, if a dial failed.
fn dial_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a DialError> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(dial) = s.downcast_ref::<DialError>() {
            return Some(dial);
        }
        source = s.source();
    }
    None
}

async fn read_limited<B>(body: B, max_bytes: usize) -> Result<Bytes, HttpError>
where
    B: http_body::Body<Data = Bytes, Error = HttpError>,
{
    match Limited::new(body, max_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => match e.downcast::<HttpError>() {
            Ok(e) => Err(*e),
            Err(_) => Err(HttpError::HttpResponseBodySize(Some(max_bytes as u64))),
        },
    }
}

/// Read a request body while it streams in, refusing it once it passes `limit`:
/// at most `limit` bytes are ever held.
async fn read_request_body(body: WasiBody, limit: usize) -> Result<Bytes, Option<HttpError>> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => match e.downcast::<HttpError>() {
            Ok(e) => Err(Some(*e)),
            Err(_) => Err(None),
        },
    }
}

/// Bytes of a request's header fields: names and values.
fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// A request's normalised destination, or why it may not be sent.
fn destination(uri: &http::Uri) -> Result<Destination, EgressRefusal> {
    let host = uri.host().unwrap_or_default();
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(EgressRefusal::UserInfo {
            host: host.to_ascii_lowercase(),
        });
    }
    let default_port = if uri.scheme() == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    };
    Ok(Destination::new(
        host,
        uri.port_u16().unwrap_or(default_port),
        default_port,
    ))
}

/// One of a store's requests in flight: counted until dropped, which an answer's
/// body does when the guest drops it.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Take a slot if fewer than `limit` are taken.
    fn take(counter: &Arc<AtomicUsize>, limit: usize) -> Option<Slot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(counter.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body handed to the guest: the buffered bytes, holding the
/// request's slot until the guest drops it.
struct SlotBody {
    data: Option<Bytes>,
    _slot: Slot,
}

impl http_body::Body for SlotBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// The wasi:http hooks of one store: checks the allowlist, sends through [`Egress`]
/// and records every request.
pub(crate) struct EgressHooks {
    egress: Arc<Egress>,
    grant: Arc<Grant>,
    /// Requests of this store in flight, answers not yet dropped included.
    in_flight: Arc<AtomicUsize>,
    /// Hosts the guest tried to reach during the current call but may not.
    pub denied: Vec<String>,
    /// Set when a request of the current call was handed back rate limited: how
    /// long the API (or the limiter) asked to wait.
    pub throttled: Arc<Mutex<Option<Duration>>>,
    /// Set when a request of the current call failed at once on an open breaker.
    pub breaker: Arc<Mutex<Option<BreakerOpen>>>,
    /// Set when the host refused a request of the current call (a limit, an
    /// address, a URL).
    pub refused: Arc<Mutex<Option<EgressRefusal>>>,
}

impl EgressHooks {
    pub fn new(egress: Arc<Egress>, grant: Arc<Grant>) -> Self {
        Self {
            egress,
            grant,
            in_flight: Arc::default(),
            denied: Vec::new(),
            throttled: Arc::default(),
            breaker: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// Forget what the previous call saw.
    pub fn begin_call(&mut self) {
        self.denied.clear();
        *lock(&self.throttled) = None;
        *lock(&self.breaker) = None;
        *lock(&self.refused) = None;
    }

    /// The open breaker a request of this call ran into, if any.
    pub fn breaker_open(&self) -> Option<BreakerOpen> {
        lock(&self.breaker).clone()
    }

    /// How long to wait, if a request of this call was handed back rate limited.
    pub fn throttled(&self) -> Option<Duration> {
        *lock(&self.throttled)
    }

    /// What the host refused during this call, if anything (the first refusal).
    pub fn refused(&self) -> Option<EgressRefusal> {
        lock(&self.refused).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remember the call's first refusal.
fn mark_refused(marks: &Arc<Mutex<Option<EgressRefusal>>>, refusal: &EgressRefusal) {
    lock(marks).get_or_insert_with(|| refusal.clone());
}

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> ResponseFuture {
        let uri = request.uri().clone();
        let grant = self.grant.clone();
        let limits = &grant.limits;
        let mut record = RequestRecord {
            at: SystemTime::now(),
            method: request.method().to_string(),
            host: uri.host().unwrap_or_default().to_ascii_lowercase(),
            path: grant.redact(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")),
            status: None,
            waited: Duration::ZERO,
            latency: Duration::ZERO,
            bytes_sent: 0,
            bytes_received: 0,
            error: None,
        };
        let refuse = |mut record: RequestRecord, refusal: EgressRefusal, marks: &Arc<Mutex<_>>| {
            tracing::warn!(host = %record.host, "connector request refused: {refusal}");
            record.error = Some(format!("refused: {refusal}"));
            grant.activity.record_request(record);
            mark_refused(marks, &refusal);
            let code = refusal.code();
            Box::new(async move { Err(code) }) as ResponseFuture
        };
        let destination = match destination(&uri) {
            Ok(d) => d,
            Err(refusal) => return refuse(record, refusal, &self.refused),
        };
        record.host = destination.authority();
        if !grant.allows(destination.host(), Some(destination.port())) {
            tracing::warn!(host = %record.host, "connector request denied: host not in allowlist");
            record.error = Some("denied: host not in the connection's allowlist".into());
            grant.activity.record_request(record.clone());
            self.denied.push(record.host);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let headers = header_bytes(request.headers());
        if headers > limits.max_header_bytes {
            let refusal = EgressRefusal::HeadersTooLarge {
                host: record.host.clone(),
                bytes: headers,
                limit: limits.max_header_bytes,
            };
            return refuse(record, refusal, &self.refused);
        }
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_request_bytes as u64) {
            let refusal = EgressRefusal::RequestTooLarge {
                host: record.host.clone(),
                limit: limits.max_request_bytes,
            };
            return refuse(record, refusal, &self.refused);
        }
        let Some(slot) = Slot::take(&self.in_flight, limits.max_concurrent_requests) else {
            let refusal = EgressRefusal::TooManyRequests {
                limit: limits.max_concurrent_requests,
            };
            return refuse(record, refusal, &self.refused);
        };
        let policy = Arc::new(DialPolicy::for_request(
            destination.host(),
            &grant.allowed_hosts,
            &grant.allowed_networks,
            &grant.pinned_names,
        ));
        let egress = self.egress.clone();
        let marks = Marks {
            throttled: self.throttled.clone(),
            breaker: self.breaker.clone(),
            refused: self.refused.clone(),
        };
        Box::new(async move {
            let (parts, body) = request.into_parts();
            let limit = grant.limits.max_request_bytes;
            let body = match read_request_body(body, limit).await {
                Ok(body) => body,
                Err(Some(e)) => return Err(e),
                Err(None) => {
                    let refusal = EgressRefusal::RequestTooLarge {
                        host: record.host.clone(),
                        limit,
                    };
                    tracing::warn!(host = %record.host, "connector request refused: {refusal}");
                    let mut record = record;
                    record.error = Some(format!("refused: {refusal}"));
                    grant.activity.record_request(record);
                    mark_refused(&marks.refused, &refusal);
                    return Err(refusal.code());
                }
            };
            let sent = Sent {
                parts: &parts,
                destination: &destination,
                policy,
            };
            let (parts, body) = exchange(&egress, &grant, sent, body, record, &marks).await?;
            let body = SlotBody {
                data: Some(body),
                _slot: slot,
            };
            let response = http::Response::from_parts(parts, body.boxed_unsync());
            let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// Where a request tells its call what happened beyond its answer.
struct Marks {
    throttled: Arc<Mutex<Option<Duration>>>,
    breaker: Arc<Mutex<Option<BreakerOpen>>>,
    refused: Arc<Mutex<Option<EgressRefusal>>>,
}

/// What a request is, beyond its body: its head, where it goes, and the address
/// policy its connection dials under.
struct Sent<'a> {
    parts: &'a http::request::Parts,
    destination: &'a Destination,
    policy: Arc<DialPolicy>,
}

/// One HTTP call of a guest: budget from the limiter, the host's breaker, the
/// request, and retries of throttled answers while the budget for them lasts.
/// Each try is one entry of the request log.
async fn exchange(
    egress: &Egress,
    grant: &Grant,
    sent: Sent<'_>,
    body: Bytes,
    record: RequestRecord,
    marks: &Marks,
) -> Result<(http::response::Parts, Bytes), HttpError> {
    let scope = &grant.rates;
    let limits = &grant.limits;
    let parts = sent.parts;
    let authority = sent.destination.authority();
    let rule = sluice_limiter::matching(&scope.rules, sent.destination, parts.uri.path());
    let key = Key {
        connector: scope.connector.clone(),
        credential: scope.credential.clone(),
        endpoint: Arc::from(rule.map_or(authority.as_str(), |r| r.endpoint.as_str())),
    };
    let deadline = Instant::now() + limits.http_total_timeout;
    let max_wait = scope.max_wait;
    let mut retries = 0;
    loop {
        let mut record = RequestRecord {
            at: SystemTime::now(),
            ..record.clone()
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let permit = match egress
            .limiter
            .acquire(&key, rule, scope.priority, max_wait.min(left))
            .await
        {
            Ok(permit) => permit,
            Err(saturated) => {
                *lock(&marks.throttled) = Some(saturated.retry_after);
                record.waited = max_wait.min(left);
                record.error = Some(format!(
                    "rate limited: no budget for `{}` within {} ms; handed back with Retry-After",
                    key.endpoint,
                    record.waited.as_millis()
                ));
                grant.activity.record_request(record);
                return Ok(rate_limited(saturated.retry_after, &key.endpoint));
            }
        };
        record.waited = permit.waited();
        let pass = match egress
            .limiter
            .pass(&scope.credential, &authority, &scope.breaker)
        {
            Ok(pass) => pass,
            Err(open) => {
                record.error = Some(open.to_string());
                grant.activity.record_request(record);
                let message = open.to_string();
                *lock(&marks.breaker) = Some(open);
                return Err(HttpError::InternalError(Some(message)));
            }
        };
        let started = Instant::now();
        let outcome = match tokio::time::timeout(
            limits.http_request_timeout,
            egress.send(rebuild(parts, body.clone()), limits, sent.policy.clone()),
        )
        .await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(SendError::Http(e))) => Err(e),
            Ok(Err(SendError::Refused(refusal))) => {
                // Refused before connecting: the host is not failing, so the
                // breaker hears nothing of it.
                drop(pass);
                tracing::warn!(host = %record.host, "connector request refused: {refusal}");
                record.error = Some(format!("refused: {refusal}"));
                grant.activity.record_request(record);
                mark_refused(&marks.refused, &refusal);
                return Err(refusal.code());
            }
            Err(_) => Err(HttpError::HttpResponseTimeout),
        };
        record.latency = started.elapsed();
        let failed = match &outcome {
            Err(_) => true,
            Ok((p, _)) => {
                p.status.is_server_error()
                    && !(p.status == 503 && p.headers.contains_key(http::header::RETRY_AFTER))
            }
        };
        pass.report(failed);
        let pause = match &outcome {
            Ok((p, body)) => {
                record.status = Some(p.status.as_u16());
                record.bytes_received = body.len() as u64;
                permit.observe(p.status.as_u16(), &p.headers)
            }
            Err(e) => {
                record.error = Some(grant.redact(&e.to_string()));
                None
            }
        };
        drop(permit);
        record.bytes_sent = body.len() as u64;
        tracing::debug!(
            method = %record.method, host = %record.host, path = %record.path,
            status = ?record.status, waited_ms = record.waited.as_millis() as u64,
            latency_ms = record.latency.as_millis() as u64,
            bytes = record.bytes_received, "connector request"
        );
        grant.activity.record_request(record);
        if let Some(pause) = pause {
            let fits = pause <= max_wait && Instant::now() + pause < deadline;
            if retries < scope.retries && fits {
                retries += 1;
                continue;
            }
            *lock(&marks.throttled) = Some(pause);
        }
        return outcome;
    }
}

/// The request again, for another try.
fn rebuild(parts: &http::request::Parts, body: Bytes) -> http::Request<Bytes> {
    let mut request = http::Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// The answer a guest gets when the node's limiter has no budget for its request
/// in time: a 429 like the API's own, so connectors handle both alike.
fn rate_limited(retry_after: Duration, endpoint: &str) -> (http::response::Parts, Bytes) {
    let secs = retry_after.as_millis().div_ceil(1000).max(1);
    let mut response = http::Response::new(Bytes::from(format!(
        "rate limited by the Sluice node: no budget for `{endpoint}` now; retry after {secs} s"
    )));
    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    response.headers_mut().insert(
        "x-sluice-limiter",
        http::HeaderValue::from_static("saturated"),
    );
    response.into_parts()
}
