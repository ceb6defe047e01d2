//! A destination that POSTs records to an HTTP endpoint as NDJSON.
//!
//! This crate owns the configuration of the endpoint, the grouping of records into
//! requests (`batch_records`), and the count of records the endpoint has accepted:
//! a 2xx answer means the records in that request are durable.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use sluice_sdk::Auth;
use sluice_sdk::http::{Request, Url};
use sluice_sdk::prelude::*;

/// Content type of every request body.
pub const NDJSON: &str = "application/x-ndjson";
/// Header naming the stream the records belong to.
pub const STREAM_HEADER: &str = "x-sluice-stream";

/// The configuration of the destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The endpoint receiving the POSTs.
    pub url: String,
    /// Headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How requests authenticate, if at all.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Records per request. Writes are grouped or split to this size; the remainder
    /// waits for the next write or the flush. When absent, each write is one
    /// request.
    #[serde(default)]
    pub batch_records: Option<u32>,
}

impl Config {
    /// Check what serde cannot, and return the parsed URL.
    pub fn validate(&self) -> Result<Url> {
        let url = Url::parse(&self.url)
            .map_err(|e| Error::config(format!("url {:?} is not a URL: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::config(format!(
                "url {:?} must be http or https",
                self.url
            )));
        }
        if self.batch_records == Some(0) {
            return Err(Error::config("batch_records must be at least 1"));
        }
        Ok(url)
    }

    /// The headers every request carries: the configured ones, then auth.
    fn request_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        headers.extend(self.auth.as_ref().map(Auth::header));
        headers
    }
}

/// The HTTP POST destination.
pub struct HttpPost;

impl Destination for HttpPost {
    type Config = Config;
    type Writer = PostWriter;

    fn spec() -> serde_json::Value {
        spec()
    }

    /// POSTs an empty body (no records) to test reachability and credentials.
    fn check(config: &Config) -> Result<()> {
        let url = config.validate()?;
        post(&url, &config.request_headers(), None, Vec::new())
    }

    fn open_writer(config: Config, stream: StreamDescriptor) -> Result<PostWriter> {
        let url = config.validate()?;
        Ok(PostWriter {
            url,
            headers: config.request_headers(),
            stream: stream.name,
            batch_records: config.batch_records.map(|n| n as usize),
            pending: Vec::new(),
            pending_records: 0,
            durable: 0,
        })
    }
}

/// Writes one stream's records, one POST per group.
pub struct PostWriter {
    url: Url,
    headers: Vec<(String, String)>,
    stream: String,
    batch_records: Option<usize>,
    /// NDJSON not yet accepted by the endpoint, every line ending in `\n`.
    pending: Vec<u8>,
    pending_records: usize,
    durable: u64,
}

impl PostWriter {
    /// POST the first `records` pending records, which end at byte `end`. On
    /// failure they stay pending, so a later flush can still deliver them.
    fn send(&mut self, end: usize, records: usize) -> Result<()> {
        let body = self.pending[..end].to_vec();
        post(&self.url, &self.headers, Some(&self.stream), body)?;
        self.pending.drain(..end);
        self.pending_records -= records;
        self.durable += records as u64;
        Ok(())
    }

    /// POST every full group of pending records.
    fn send_full_groups(&mut self) -> Result<()> {
        let Some(size) = self.batch_records else {
            return self.send_all();
        };
        while self.pending_records >= size {
            let end = end_of_records(&self.pending, size);
            self.send(end, size)?;
        }
        Ok(())
    }

    fn send_all(&mut self) -> Result<()> {
        if self.pending_records > 0 {
            self.send(self.pending.len(), self.pending_records)?;
        }
        Ok(())
    }
}

impl Writer for PostWriter {
    fn write(&mut self, ndjson: &[u8]) -> Result<u64> {
        let records = append_records(&mut self.pending, ndjson);
        self.pending_records += records;
        self.send_full_groups()?;
        Ok(self.durable)
    }

    fn flush(&mut self) -> Result<u64> {
        self.send_full_groups()?;
        self.send_all()?;
        Ok(self.durable)
    }
}

/// Append the records of `ndjson` to `buf`, dropping blank lines and ending the
/// last record with `\n` if it lacks one; return how many records were appended.
pub fn append_records(buf: &mut Vec<u8>, ndjson: &[u8]) -> usize {
    let mut count = 0;
    for line in ndjson.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        buf.extend_from_slice(line);
        buf.push(b'\n');
        count += 1;
    }
    count
}

/// The byte just after the `records`-th line of `buf` (every line ends in `\n`).
pub fn end_of_records(buf: &[u8], records: usize) -> usize {
    buf.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(records.saturating_sub(1))
        .map_or(buf.len(), |(i, _)| i + 1)
}

/// POST `body` as NDJSON; any answer but a 2xx is an error of the matching kind.
fn post(
    url: &Url,
    headers: &[(String, String)],
    stream: Option<&str>,
    body: Vec<u8>,
) -> Result<()> {
    let mut request = headers
        .iter()
        .fold(Request::with_url("POST", url.clone()), |req, (k, v)| {
            req.header(k, v)
        });
    if let Some(stream) = stream {
        request = request.header(STREAM_HEADER, stream);
    }
    request.body(body, NDJSON).send()?.error_for_status()?;
    Ok(())
}

/// JSON Schema of [`Config`].
pub fn spec() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "HTTP POST destination",
        "type": "object",
        "additionalProperties": false,
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "format": "uri",
                    "description": "Endpoint receiving NDJSON POSTs."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "auth": Auth::json_schema(),
            "batch_records": {"type": ["integer", "null"], "minimum": 1,
                              "description": "Records per request; each write is one request when absent."}
        }
    })
}

sluice_sdk::export_destination!(HttpPost);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_normalised_and_counted() {
        let mut buf = Vec::new();
        assert_eq!(append_records(&mut buf, b"{\"a\":1}\n\n{\"b\":2}"), 2);
        assert_eq!(append_records(&mut buf, b""), 0);
        assert_eq!(append_records(&mut buf, b"{\"c\":3}\n"), 1);
        assert_eq!(buf, b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
        assert_eq!(end_of_records(&buf, 1), 8);
        assert_eq!(end_of_records(&buf, 2), 16);
        assert_eq!(end_of_records(&buf, 9), buf.len());
    }

    #[test]
    fn config_is_checked() {
        let parse = |v: serde_json::Value| -> Result<Url> {
            serde_json::from_value::<Config>(v)
                .map_err(|e| Error::config(e.to_string()))?
                .validate()
        };
        assert!(
            parse(json!({"url": "http://h/in", "auth": {"type": "bearer", "token": "t"}})).is_ok()
        );
        assert!(parse(json!({"url": "nope"})).is_err());
        assert!(parse(json!({"url": "http://h", "batch_records": 0})).is_err());
        assert!(parse(json!({"url": "http://h", "extra": 1})).is_err());
    }
}
