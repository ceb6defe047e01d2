//! The hostile source's misbehaviours over raw `wasi:http`, below the SDK: URLs
//! sent with their authority exactly as written, request bodies streamed without a
//! declared length, header fields by the thousand, requests by the dozen at once.
//!
//! It only misbehaves as asked; the host must refuse each excess with its named
//! error.

use sluice_sdk::prelude::*;
use wasip2::http::outgoing_handler::{self, FutureIncomingResponse};
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

/// Bytes written per `write` of a streamed body.
const CHUNK: usize = 64 * 1024;
/// Default body of `big_body`: 64 MiB.
const DEFAULT_BODY_BYTES: u64 = 64 << 20;
/// Default header fields of `big_headers`.
const DEFAULT_FIELDS: u64 = 16_000;
/// Default size of one `big_headers` field value: 120 KB.
const DEFAULT_FIELD_BYTES: u64 = 120_000;
/// Default size of the one field of each `many_fields` resource: just under the
/// host's limit of one fields resource.
const DEFAULT_MANY_FIELD_BYTES: u64 = 60_000;
/// Default requests of `concurrent_requests`.
const DEFAULT_CONCURRENT: u64 = 20;

/// What an egress mode does.
#[derive(Debug)]
pub enum Misbehaviour {
    /// `get`: one GET of `url`, its authority sent as written.
    Get(String),
    /// `big_body`: POST `bytes` bytes to `url`, streamed, no `content-length`.
    BigBody { url: String, bytes: u64 },
    /// `big_headers`: GET `url` with `fields` fields of `field_bytes` bytes.
    BigHeaders {
        url: String,
        fields: u64,
        field_bytes: u64,
    },
    /// `concurrent_requests`: `count` GETs of `url` sent before any is read.
    Concurrent { url: String, count: u64 },
    /// `many_fields`: `count` header fields resources of one `field_bytes` field
    /// each, all held at once and never sent.
    ManyFields { count: u64, field_bytes: u64 },
}

impl Misbehaviour {
    /// The mode `mode` with its parameters, if it is an egress mode.
    pub fn from_config(mode: &str, config: &crate::Config) -> Result<Option<Self>> {
        let url = || {
            config
                .url
                .clone()
                .ok_or_else(|| Error::config(format!("mode {mode} needs a url")))
        };
        Ok(Some(match mode {
            "get" => Misbehaviour::Get(url()?),
            "big_body" => Misbehaviour::BigBody {
                url: url()?,
                bytes: config.bytes.unwrap_or(DEFAULT_BODY_BYTES),
            },
            "big_headers" => Misbehaviour::BigHeaders {
                url: url()?,
                fields: config.count.unwrap_or(DEFAULT_FIELDS),
                field_bytes: config.field_bytes.unwrap_or(DEFAULT_FIELD_BYTES),
            },
            "many_fields" => Misbehaviour::ManyFields {
                count: config.count.unwrap_or(DEFAULT_FIELDS),
                field_bytes: config.field_bytes.unwrap_or(DEFAULT_MANY_FIELD_BYTES),
            },
            "concurrent_requests" => Misbehaviour::Concurrent {
                url: url()?,
                count: config.count.unwrap_or(DEFAULT_CONCURRENT),
            },
            _ => return Ok(None),
        }))
    }

    /// Carry it out; one record says what came back.
    pub fn run(&self) -> Result<Batch> {
        let outcome = match self {
            Misbehaviour::Get(url) => answer(send_empty(url, Fields::new())?),
            Misbehaviour::BigBody { url, bytes } => big_body(url, *bytes)?,
            Misbehaviour::BigHeaders {
                url,
                fields,
                field_bytes,
            } => {
                let headers = Fields::new();
                let value = vec![b'v'; usize::try_from(*field_bytes).unwrap_or(usize::MAX)];
                for i in 0..*fields {
                    headers
                        .append(&format!("x-hostile-{i}"), &value)
                        .map_err(|e| Error::config(format!("header {i}: {e:?}")))?;
                }
                answer(send_empty(url, headers)?)
            }
            Misbehaviour::ManyFields { count, field_bytes } => {
                let value = vec![b'v'; usize::try_from(*field_bytes).unwrap_or(usize::MAX)];
                let mut held = Vec::new();
                for i in 0..*count {
                    let fields = Fields::new();
                    fields
                        .append("x-hostile", &value)
                        .map_err(|e| Error::config(format!("fields {i}: {e:?}")))?;
                    held.push(fields);
                }
                format!("held {} fields resources", held.len())
            }
            Misbehaviour::Concurrent { url, count } => {
                let mut pending = Vec::new();
                for _ in 0..*count {
                    pending.push(send_empty(url, Fields::new())?);
                }
                let outcomes: Vec<String> = pending.into_iter().map(answer).collect();
                outcomes.join("; ")
            }
        };
        let mut batch = Batch::new();
        batch.push(&serde_json::json!({"id": 1, "v": outcome}))?;
        Ok(batch.checkpoint("1"))
    }
}

/// A request of `method` to `url` (`http[s]://AUTHORITY/PATH`, the authority kept
/// as written) and its body.
fn request(url: &str, method: Method, headers: Fields) -> Result<(OutgoingRequest, OutgoingBody)> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(Error::config(format!("not an http(s) URL: {url}"))),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(headers);
    let invalid = |what: &str| Error::config(format!("invalid {what} in {url}"));
    request
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let body = request.body().map_err(|()| invalid("body"))?;
    Ok((request, body))
}

/// A GET of `url` with `headers` and an empty body, handed over.
fn send_empty(url: &str, headers: Fields) -> Result<FutureIncomingResponse> {
    let (request, body) = request(url, Method::Get, headers)?;
    let pending = handle(request)?;
    let _ = OutgoingBody::finish(body, None);
    Ok(pending)
}

fn handle(request: OutgoingRequest) -> Result<FutureIncomingResponse> {
    outgoing_handler::handle(request, None)
        .map_err(|e| Error::transient(format!("handle refused: {e:?}")))
}

/// Wait for an answer and say what it was (its body read and dropped).
fn answer(pending: FutureIncomingResponse) -> String {
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => {
            let status = response.status();
            drop(response);
            format!("status {status}")
        }
        Some(Ok(Err(code))) => format!("error {code:?}"),
        Some(Err(())) | None => "no answer".into(),
    }
}

/// Stream `bytes` bytes of body in chunks, as long as the host takes them.
fn big_body(url: &str, bytes: u64) -> Result<String> {
    let (request, body) = request(url, Method::Post, Fields::new())?;
    let pending = handle(request)?;
    let chunk = vec![b'x'; CHUNK];
    let mut sent = 0u64;
    let mut stopped = None;
    if let Ok(stream) = body.write() {
        while sent < bytes {
            match stream.check_write() {
                Ok(0) => stream.subscribe().block(),
                Ok(n) => {
                    let n = (n.min(CHUNK as u64)).min(bytes - sent) as usize;
                    if let Err(e) = stream.write(&chunk[..n]) {
                        stopped = Some(format!("{e:?}"));
                        break;
                    }
                    sent += n as u64;
                }
                Err(e) => {
                    stopped = Some(format!("{e:?}"));
                    break;
                }
            }
        }
    }
    let _ = OutgoingBody::finish(body, None);
    Ok(format!(
        "sent {sent} bytes (stopped: {stopped:?}); {}",
        answer(pending)
    ))
}
