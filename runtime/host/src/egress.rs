//! All outbound HTTP of every connector goes through here: pooled clients, the
//! connection's allowlist, the node's rate limiter and per-host breakers, retries
//! of throttled answers, response size caps, timeouts (connect, request, total) and
//! the per-run request log (secrets redacted).
//!
//! This module must never hand a guest a response it has not fully read and
//! measured: responses are buffered up to the cap, so size and latency are known
//! and a slow or huge response cannot pin a guest's memory.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use sluice_limiter::{BreakerOpen, Key, Limiter};
use tokio::time::Instant;

use crate::activity::RequestRecord;
use crate::limits::{Grant, Limits};

/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type PooledClient = Client<HttpConnector, Full<Bytes>>;

/// The process's outbound HTTP: pooled clients and the rate limiter every request
/// asks first.
pub struct Egress {
    /// One pool per connect timeout in use (hyper sets it per client).
    clients: Mutex<HashMap<Duration, PooledClient>>,
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

    fn client(&self, connect_timeout: Duration) -> PooledClient {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(connect_timeout)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(connect_timeout));
                connector.set_nodelay(true);
                connector.enforce_http(true);
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .build(connector)
            })
            .clone()
    }

    /// Send `request` and read the whole response body, at most `max_bytes`.
    async fn send(
        &self,
        request: http::Request<Bytes>,
        limits: &Limits,
    ) -> Result<(http::response::Parts, Bytes), HttpError> {
        let max_bytes = limits.max_response_bytes;
        let https = request.uri().scheme() == Some(&Scheme::HTTPS);
        let (parts, body) = if https {
            // TLS goes through wasmtime's own client (unpooled), until the pooled
            // client grows TLS support.
            let request = request.map(|b| Full::new(b).map_err(never).boxed_unsync());
            let config = RequestOptions {
                connect_timeout: Some(limits.http_connect_timeout),
                first_byte_timeout: Some(limits.http_request_timeout),
                between_bytes_timeout: Some(limits.http_request_timeout),
            };
            let (response, _io) =
                wasmtime_wasi_http::default_send_request(request, Some(config)).await?;
            let (parts, body) = response.into_parts();
            (parts, read_limited(body, max_bytes).await?)
        } else {
            let request = request.map(Full::new);
            let client = self.client(limits.http_connect_timeout);
            let response = client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    HttpError::ConnectionRefused
                } else {
                    HttpError::InternalError(Some(format!("{e:#}")))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body.map_err(|e| HttpError::InternalError(Some(e.to_string())));
            (parts, read_limited(body, max_bytes).await?)
        };
        Ok((parts, body))
    }
}

fn never(e: Infallible) -> HttpError {
    match e {}
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

/// The wasi:http hooks of one store: checks the allowlist, sends through [`Egress`]
/// and records every request.
pub(crate) struct EgressHooks {
    egress: Arc<Egress>,
    grant: Arc<Grant>,
    /// Hosts the guest tried to reach during the current call but may not.
    pub denied: Vec<String>,
    /// Set when a request of the current call was handed back rate limited: how
    /// long the API (or the limiter) asked to wait.
    pub throttled: Arc<Mutex<Option<Duration>>>,
    /// Set when a request of the current call failed at once on an open breaker.
    pub breaker: Arc<Mutex<Option<BreakerOpen>>>,
}

impl EgressHooks {
    pub fn new(egress: Arc<Egress>, grant: Arc<Grant>) -> Self {
        Self {
            egress,
            grant,
            denied: Vec::new(),
            throttled: Arc::default(),
            breaker: Arc::default(),
        }
    }

    /// Forget what the previous call saw.
    pub fn begin_call(&mut self) {
        self.denied.clear();
        *lock(&self.throttled) = None;
        *lock(&self.breaker) = None;
    }

    /// The open breaker a request of this call ran into, if any.
    pub fn breaker_open(&self) -> Option<BreakerOpen> {
        lock(&self.breaker).clone()
    }

    /// How long to wait, if a request of this call was handed back rate limited.
    pub fn throttled(&self) -> Option<Duration> {
        *lock(&self.throttled)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let host = uri.host().unwrap_or_default().to_string();
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let grant = self.grant.clone();
        let record = RequestRecord {
            at: SystemTime::now(),
            method: request.method().to_string(),
            host: authority.clone(),
            path: grant.redact(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")),
            status: None,
            waited: Duration::ZERO,
            latency: Duration::ZERO,
            bytes_sent: 0,
            bytes_received: 0,
            error: None,
        };
        if !grant.allows(&host, uri.port_u16()) {
            tracing::warn!(host = %authority, "connector request denied: host not in allowlist");
            let mut record = record;
            record.error = Some("denied: host not in the connection's allowlist".into());
            grant.activity.record_request(record);
            self.denied.push(authority);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let egress = self.egress.clone();
        let marks = Marks {
            throttled: self.throttled.clone(),
            breaker: self.breaker.clone(),
        };
        Box::new(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let (parts, body) = exchange(&egress, &grant, &parts, body, record, &marks).await?;
            let response =
                http::Response::from_parts(parts, Full::new(body).map_err(never).boxed_unsync());
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
}

/// One HTTP call of a guest: budget from the limiter, the host's breaker, the
/// request, and retries of throttled answers while the budget for them lasts.
/// Each try is one entry of the request log.
async fn exchange(
    egress: &Egress,
    grant: &Grant,
    parts: &http::request::Parts,
    body: Bytes,
    record: RequestRecord,
    marks: &Marks,
) -> Result<(http::response::Parts, Bytes), HttpError> {
    let scope = &grant.rates;
    let limits = &grant.limits;
    let authority = record.host.clone();
    let rule = sluice_limiter::matching(&scope.rules, &authority, parts.uri.path());
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
        let pass = match egress.limiter.pass(&authority, &scope.breaker) {
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
            egress.send(rebuild(parts, body.clone()), limits),
        )
        .await
        {
            Ok(outcome) => outcome,
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
