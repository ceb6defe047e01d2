//! All outbound HTTP of every connector goes through here: one pooled client per
//! process, the connection's allowlist, response size caps, timeouts and the
//! per-connection request log (secrets redacted). Rate limiting hooks in here too.
//!
//! This module must never hand a guest a response it has not fully read and
//! measured: responses are buffered up to the cap, so size and latency are known
//! and a slow or huge response cannot pin a guest's memory.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::activity::RequestRecord;
use crate::limits::Grant;

/// Time to establish one outbound TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The process's one outbound HTTP client.
pub struct Egress {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Egress {
    fn default() -> Self {
        Self::new()
    }
}

impl Egress {
    /// A client with a connection pool.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Self { client }
    }

    /// Send `request` and read the whole response body, at most `max_bytes`.
    async fn send(
        &self,
        request: http::Request<Bytes>,
        max_bytes: usize,
    ) -> Result<(http::response::Parts, Bytes), HttpError> {
        let https = request.uri().scheme() == Some(&Scheme::HTTPS);
        let (parts, body) = if https {
            // TLS goes through wasmtime's own client (unpooled), until the pooled
            // client grows TLS support.
            let request = request.map(|b| Full::new(b).map_err(never).boxed_unsync());
            let (response, _io) = wasmtime_wasi_http::default_send_request(request, None).await?;
            let (parts, body) = response.into_parts();
            (parts, read_limited(body, max_bytes).await?)
        } else {
            let request = request.map(Full::new);
            let response = self.client.request(request).await.map_err(|e| {
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
}

impl EgressHooks {
    pub fn new(egress: Arc<Egress>, grant: Arc<Grant>) -> Self {
        Self {
            egress,
            grant,
            denied: Vec::new(),
        }
    }
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
        let method = request.method().to_string();
        let path = self
            .grant
            .redact(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        let grant = self.grant.clone();
        let mut record = RequestRecord {
            at: SystemTime::now(),
            method,
            host: authority.clone(),
            path,
            status: None,
            latency: Duration::ZERO,
            bytes_sent: 0,
            bytes_received: 0,
            error: None,
        };
        if !grant.allows(&host, uri.port_u16()) {
            tracing::warn!(host = %authority, "connector request denied: host not in allowlist");
            record.error = Some("denied: host not in the connection's allowlist".into());
            grant.activity.record_request(record);
            self.denied.push(authority);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let egress = self.egress.clone();
        Box::new(async move {
            let started = Instant::now();
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            record.bytes_sent = body.len() as u64;
            let request = http::Request::from_parts(parts, body);
            let limits = &grant.limits;
            let outcome = match tokio::time::timeout(
                limits.http_request_timeout,
                egress.send(request, limits.max_response_bytes),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(HttpError::HttpResponseTimeout),
            };
            record.latency = started.elapsed();
            match &outcome {
                Ok((parts, body)) => {
                    record.status = Some(parts.status.as_u16());
                    record.bytes_received = body.len() as u64;
                }
                Err(e) => record.error = Some(grant.redact(&e.to_string())),
            }
            tracing::debug!(
                method = %record.method, host = %record.host, path = %record.path,
                status = ?record.status, latency_ms = record.latency.as_millis() as u64,
                bytes = record.bytes_received, "connector request"
            );
            grant.activity.record_request(record);
            let (parts, body) = outcome?;
            let response =
                http::Response::from_parts(parts, Full::new(body).map_err(never).boxed_unsync());
            let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}
