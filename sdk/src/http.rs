//! An HTTP client over `wasi:http`.
//!
//! Every request goes through the host's one HTTP client, where the connection's
//! allowlist, rate limits and request log apply. Responses are read whole (the host
//! caps their size). [`Response::error_for_status`] turns HTTP failures into
//! [`Error`]s of the right kind, so the engine retries, waits or gives up correctly.

use std::time::{Duration, SystemTime};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme as WasiScheme,
};
use wasip2::io::streams::{OutputStream, StreamError};

use crate::{Error, Result};

pub use url::Url;

/// How much to ask for per read of a response body.
const READ_CHUNK: u64 = 256 * 1024;
/// Most bytes reserved up front from a `Content-Length` header, which the server
/// controls; larger bodies grow as they arrive.
const MAX_PREALLOCATION: usize = 64 * 1024 * 1024;
/// Most bytes of an error answer's body quoted in the error.
pub const ERROR_SNIPPET_BYTES: usize = 200;
/// What ends a quoted body that was cut short; the host redacts a piece of a secret
/// before it as it does at the end of a text.
pub const CUT_MARKER: &str = "…";

/// An HTTP request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: Url,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Request {
    /// A request with any method.
    pub fn new(method: &str, url: &str) -> Result<Self> {
        let url =
            Url::parse(url).map_err(|e| Error::config(format!("invalid URL {url:?}: {e}")))?;
        Ok(Self::with_url(method, url))
    }

    /// A request to an already parsed URL.
    pub fn with_url(method: &str, url: Url) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url,
            headers: Vec::new(),
            body: None,
        }
    }

    /// A GET request.
    pub fn get(url: &str) -> Result<Self> {
        Self::new("GET", url)
    }

    /// A POST request.
    pub fn post(url: &str) -> Result<Self> {
        Self::new("POST", url)
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Add `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// Set (or replace) a query parameter.
    pub fn query(mut self, name: &str, value: &str) -> Self {
        set_query(&mut self.url, name, value);
        self
    }

    /// Set a raw body.
    pub fn body(mut self, body: Vec<u8>, content_type: &str) -> Self {
        self.body = Some(body);
        self.header("content-type", content_type)
    }

    /// Set a JSON body.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self> {
        let body = serde_json::to_vec(value)?;
        Ok(self.body(body, "application/json"))
    }

    /// The URL this request goes to.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Send the request and read the whole response.
    pub fn send(self) -> Result<Response> {
        let mut fields: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes()))
            .collect();
        // A declared length spares the server a chunked body, which simple servers
        // do not read.
        if let Some(body) = &self.body
            && !fields.iter().any(|(k, _)| k == "content-length")
        {
            fields.push(("content-length".into(), body.len().to_string().into_bytes()));
        }
        let headers = Fields::from_list(&fields)
            .map_err(|e| Error::config(format!("invalid request header: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_string()),
        };
        let scheme = match self.url.scheme() {
            "http" => WasiScheme::Http,
            "https" => WasiScheme::Https,
            other => return Err(Error::config(format!("unsupported URL scheme {other:?}"))),
        };
        let authority = match (self.url.host_str(), self.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(Error::config(format!("URL {} has no host", self.url))),
        };
        let path = match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_string(),
        };
        let invalid =
            |what: &str| Error::config(format!("invalid request {what} for {}", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| invalid("path"))?;

        let outgoing = request.body().map_err(|()| invalid("body"))?;
        // The request is handed over before its body is written: the host buffers
        // only a chunk or two of body until the request is on its way, so writing
        // a large body first would block forever.
        let pending =
            outgoing_handler::handle(request, None).map_err(|e| transport(&self.url, e))?;
        // The stream closes as soon as the host has sent the declared length, and a
        // server may answer before reading the whole body; either way its answer
        // says more than the write error, so a write error only counts when there
        // is no answer.
        let mut write_error = None;
        if let Some(body) = &self.body {
            let stream = outgoing.write().map_err(|()| invalid("body"))?;
            write_error = write_all(&stream, body).err();
        }
        let finish_error = OutgoingBody::finish(outgoing, None).err();
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => {
                return Err(match (write_error, finish_error) {
                    (Some(w), _) => Error::transient(format!(
                        "request to {} failed while writing its body: {w}; {e:?}",
                        self.url
                    )),
                    (None, Some(f)) => transport(&self.url, f),
                    (None, None) => transport(&self.url, e),
                });
            }
            Some(Err(())) | None => {
                return Err(Error::transient(format!("no response from {}", self.url)));
            }
        };
        let status = response.status();
        let headers: Vec<(String, String)> = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| Error::transient("response body already consumed"))?;
        // Sized from Content-Length when given, so a large page is not regrown
        // and copied chunk after chunk.
        let expected = headers_content_length(&headers).unwrap_or(0);
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| Error::transient("response body unavailable"))?;
            loop {
                match stream.blocking_read(READ_CHUNK) {
                    Ok(chunk) if body.is_empty() && chunk.len() >= expected => body = chunk,
                    Ok(chunk) => {
                        if body.is_empty() {
                            body.reserve_exact(expected.min(MAX_PREALLOCATION));
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(Error::transient(format!(
                            "reading response from {}: {}",
                            self.url,
                            e.to_debug_string()
                        )));
                    }
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body,
            url: self.url,
        })
    }
}

/// Write `bytes` to `stream` in the largest pieces the host accepts, then flush.
fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> std::result::Result<(), String> {
    let describe = |e: StreamError| match e {
        StreamError::Closed => "the connection was closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    };
    while !bytes.is_empty() {
        let permitted = stream.check_write().map_err(describe)?;
        if permitted == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = bytes
            .len()
            .min(usize::try_from(permitted).unwrap_or(usize::MAX));
        stream.write(&bytes[..n]).map_err(describe)?;
        bytes = &bytes[n..];
    }
    stream.blocking_flush().map_err(describe)
}

/// The declared body size, if any. Only a hint for preallocation.
fn headers_content_length(headers: &[(String, String)]) -> Option<usize> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

fn transport(url: &Url, e: ErrorCode) -> Error {
    match e {
        ErrorCode::HttpRequestDenied => Error::permanent(format!(
            "request to {url} denied: its host is not in the connection's allowlist"
        )),
        ErrorCode::HttpResponseBodySize(_) => Error::permanent(format!(
            "response from {url} is larger than the host allows"
        )),
        other => Error::transient(format!("request to {url} failed: {other:?}")),
    }
}

/// Set (or replace) query parameter `name` on `url`.
pub fn set_query(url: &mut Url, name: &str, value: &str) {
    let others: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut pairs = url.query_pairs_mut();
    pairs.clear();
    for (k, v) in &others {
        pairs.append_pair(k, v);
    }
    pairs.append_pair(name, value);
}

/// A whole HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
    /// The URL that was requested.
    pub url: Url,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parse the body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::permanent(format!("response from {} is not valid JSON: {e}", self.url))
        })
    }

    /// Pass a 2xx response through; turn anything else into an [`Error`] of the kind
    /// the engine should act on: 429 (and 503 with `Retry-After`) → rate-limited,
    /// 401/403 → auth, 408 and 5xx → transient, other 4xx → permanent.
    pub fn error_for_status(self) -> Result<Self> {
        let status = self.status;
        if (200..300).contains(&status) {
            return Ok(self);
        }
        let snippet = snippet(&self.body, ERROR_SNIPPET_BYTES);
        let what = format!("{} answered {status}: {snippet}", self.url);
        let retry_after = self.header("retry-after").and_then(parse_retry_after);
        Err(match status {
            429 => Error::rate_limited(retry_after.map(|d| d.as_millis() as u64), what),
            503 if retry_after.is_some() => {
                Error::rate_limited(retry_after.map(|d| d.as_millis() as u64), what)
            }
            401 | 403 => Error::auth(what),
            408 | 500..=599 => Error::transient(what),
            _ => Error::permanent(what),
        })
    }
}

/// At most `max` bytes of the start of `body` as text, cut on a character boundary
/// (never inside a UTF-8 sequence), ending in [`CUT_MARKER`] when cut.
pub fn snippet(body: &[u8], max: usize) -> String {
    let mut cut = body.len().min(max);
    // Back off to the start of the character the cut falls in (a UTF-8 character is at
    // most four bytes; continuation bytes are 0b10xxxxxx).
    let mut back = 0;
    while cut < body.len() && cut > 0 && back < 3 && body[cut] & 0xC0 == 0x80 {
        cut -= 1;
        back += 1;
    }
    let text = String::from_utf8_lossy(&body[..cut]).into_owned();
    if cut < body.len() {
        text + CUT_MARKER
    } else {
        text
    }
}

/// Parse a `Retry-After` value: delay in seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod snippet_tests {
    use super::*;

    #[test]
    fn cuts_on_a_character_boundary_and_marks_the_cut() {
        assert_eq!(snippet(b"short", 200), "short");
        assert_eq!(snippet(b"abcdef", 3), "abc…");
        // "é" is two bytes: a cut after its first byte drops it whole.
        assert_eq!(snippet("aé".as_bytes(), 2), "a…");
        assert_eq!(snippet("a✓b".as_bytes(), 3), "a…");
        assert_eq!(snippet("a✓b".as_bytes(), 4), "a✓…");
        // Bytes that are not UTF-8 at all are shown replaced, not dropped.
        assert_eq!(snippet(b"\xff\xfeab", 3), "\u{fffd}\u{fffd}a…");
    }
}
