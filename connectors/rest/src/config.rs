//! The connector's configuration: what each stream reads and how requests are
//! authenticated, its JSON Schema, and the checks serde cannot express.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use sluice_sdk::Auth;
use sluice_sdk::http::{Request, Url};
use sluice_sdk::paginate::Pagination;
use sluice_sdk::{Error, Result};

/// The configuration of a REST source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where relative stream paths start, e.g. `https://api.example.com/v2`.
    pub base_url: String,
    /// How requests authenticate, if at all.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The streams this source reads.
    pub streams: Vec<StreamConfig>,
    /// The API's rate limit, declared to Sluice for `base_url`'s host.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// An API's published rate limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests allowed in any interval of `per_ms`.
    #[serde(default)]
    pub requests: Option<u32>,
    /// The interval, in milliseconds.
    #[serde(default = "default_per_ms")]
    pub per_ms: u64,
    /// Requests allowed in flight at once.
    #[serde(default)]
    pub concurrent: Option<u32>,
}

fn default_per_ms() -> u64 {
    1000
}

impl Config {
    /// The rate limit to declare: the configured one, for `base_url`'s host.
    pub fn rate_limits(&self) -> Result<Vec<sluice_sdk::RateLimit>> {
        let Some(limit) = &self.rate_limit else {
            return Ok(Vec::new());
        };
        let base = Url::parse(&self.base_url)
            .map_err(|e| Error::config(format!("base_url {:?}: {e}", self.base_url)))?;
        let host = base.host_str().unwrap_or_default();
        let endpoint = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(vec![sluice_sdk::RateLimit {
            endpoint,
            requests: limit.requests,
            per_ms: limit.per_ms,
            concurrent: limit.concurrent,
        }])
    }
}

/// One stream: an endpoint returning pages of JSON records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Unique among the streams.
    pub name: String,
    /// The endpoint, relative to `base_url` (an absolute URL is used as is).
    pub path: String,
    /// Dotted path of the records array in a page; empty when the page is the array.
    #[serde(default)]
    pub records_path: String,
    /// Top-level fields forming the primary key.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Top-level field incremental reads advance by.
    #[serde(default)]
    pub cursor_field: Option<String>,
    /// Query parameter that asks the API for records changed since a cursor value.
    #[serde(default)]
    pub cursor_param: Option<String>,
    /// How the endpoint pages its results.
    #[serde(default)]
    pub pagination: Pagination,
    /// JSON Schema of one record; `{"type": "object"}` when absent.
    #[serde(default)]
    pub json_schema: Option<serde_json::Value>,
}

impl Config {
    /// Check what serde cannot: URLs, unique stream names, consistent cursors.
    pub fn validate(&self) -> Result<()> {
        let base = Url::parse(&self.base_url).map_err(|e| {
            Error::config(format!("base_url {:?} is not a URL: {e}", self.base_url))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::config(format!(
                "base_url {:?} must be http or https",
                self.base_url
            )));
        }
        for (i, stream) in self.streams.iter().enumerate() {
            let at = format!("streams[{i}] ({:?})", stream.name);
            if stream.name.is_empty() {
                return Err(Error::config(format!("streams[{i}] has an empty name")));
            }
            if self.streams[..i].iter().any(|s| s.name == stream.name) {
                return Err(Error::config(format!("{at}: stream name used twice")));
            }
            if stream.cursor_param.is_some() && stream.cursor_field.is_none() {
                return Err(Error::config(format!(
                    "{at}: cursor_param needs a cursor_field"
                )));
            }
            if stream
                .primary_key
                .iter()
                .chain(&stream.cursor_field)
                .any(String::is_empty)
            {
                return Err(Error::config(format!(
                    "{at}: empty field name in primary_key or cursor_field"
                )));
            }
            self.stream_url(stream)?;
        }
        Ok(())
    }

    /// The stream named `name`.
    pub fn stream(&self, name: &str) -> Result<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.streams.iter().map(|s| s.name.as_str()).collect();
            Error::config(format!(
                "unknown stream {name:?}; configured streams: {known:?}"
            ))
        })
    }

    /// The URL of a stream's endpoint, before pagination adds its parameters.
    /// Paths are appended to `base_url` (not resolved against it) so that a base
    /// with a path prefix such as `/v2` keeps it.
    pub fn stream_url(&self, stream: &StreamConfig) -> Result<Url> {
        let text = if stream.path.starts_with("http://") || stream.path.starts_with("https://") {
            stream.path.clone()
        } else {
            format!(
                "{}/{}",
                self.base_url.trim_end_matches('/'),
                stream.path.trim_start_matches('/')
            )
        };
        Url::parse(&text).map_err(|e| {
            Error::config(format!(
                "stream {:?}: {text:?} is not a URL: {e}",
                stream.name
            ))
        })
    }

    /// The headers every request carries: the configured ones, then auth.
    pub fn request_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        headers.extend(self.auth.as_ref().map(Auth::header));
        headers
    }
}

/// A GET of `url` with `headers`.
pub fn get(url: &Url, headers: &[(String, String)]) -> Request {
    headers
        .iter()
        .fold(Request::with_url("GET", url.clone()), |req, (k, v)| {
            req.header(k, v)
        })
}

/// JSON Schema of [`Config`].
pub fn spec() -> serde_json::Value {
    let name = json!({"type": "string", "minLength": 1});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "REST source",
        "type": "object",
        "additionalProperties": false,
        "required": ["base_url", "streams"],
        "properties": {
            "base_url": {"type": "string", "format": "uri",
                         "description": "Where relative stream paths start."},
            "auth": Auth::json_schema(),
            "headers": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Headers sent with every request."},
            "rate_limit": {"type": "object", "additionalProperties": false,
                           "description": "The API's rate limit for base_url's host, declared to Sluice.",
                           "properties": {
                               "requests": {"type": "integer", "minimum": 1},
                               "per_ms": {"type": "integer", "minimum": 1},
                               "concurrent": {"type": "integer", "minimum": 1}}},
            "streams": {"type": "array", "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["name", "path"],
                "properties": {
                    "name": name,
                    "path": {"type": "string",
                             "description": "Appended to base_url; an absolute URL is used as is."},
                    "records_path": {"type": "string", "default": "",
                                     "description": "Dotted path of the records array; empty when the body is the array."},
                    "primary_key": {"type": "array", "items": name},
                    "cursor_field": {"type": ["string", "null"],
                                     "description": "Top-level field incremental reads advance by."},
                    "cursor_param": {"type": ["string", "null"],
                                     "description": "Query parameter receiving the last cursor value."},
                    "pagination": pagination_spec(),
                    "json_schema": {"type": ["object", "null"]}
                }
            }}
        }
    })
}

fn pagination_spec() -> serde_json::Value {
    let string = json!({"type": "string"});
    let style = |s: &str| json!({"const": s});
    json!({"oneOf": [
        {"type": "object", "additionalProperties": false, "required": ["style"],
         "properties": {"style": style("none")}},
        {"type": "object", "additionalProperties": false, "required": ["style", "path"],
         "properties": {"style": style("next_link"), "path": string}},
        {"type": "object", "additionalProperties": false, "required": ["style"],
         "properties": {"style": style("link_header")}},
        {"type": "object", "additionalProperties": false,
         "required": ["style", "param", "cursor_path"],
         "properties": {"style": style("cursor"), "param": string, "cursor_path": string}},
        {"type": "object", "additionalProperties": false, "required": ["style", "param"],
         "properties": {"style": style("page_number"), "param": string,
                        "start": {"type": "integer", "minimum": 0, "default": 1},
                        "page_size": {"type": ["integer", "null"], "minimum": 1}}},
        {"type": "object", "additionalProperties": false,
         "required": ["style", "param", "limit_param", "limit"],
         "properties": {"style": style("offset"), "param": string, "limit_param": string,
                        "limit": {"type": "integer", "minimum": 1}}}
    ]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<Config> {
        let c: Config = serde_json::from_value(json).map_err(|e| Error::config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn parses_the_documented_example() {
        let c = config(json!({
            "base_url": "http://127.0.0.1:18080/api/",
            "auth": {"type": "header", "name": "X-Api-Key", "value": "k"},
            "headers": {"accept": "application/json"},
            "streams": [{"name": "contacts", "path": "/contacts/page-1.json", "records_path": "data",
                         "primary_key": ["id"], "cursor_field": "updated_at",
                         "cursor_param": "updated_since",
                         "pagination": {"style": "next_link", "path": "next"}}]
        }))
        .unwrap();
        let s = c.stream("contacts").unwrap();
        assert_eq!(
            c.stream_url(s).unwrap().as_str(),
            "http://127.0.0.1:18080/api/contacts/page-1.json"
        );
        assert_eq!(c.request_headers().last().unwrap().0, "X-Api-Key");
        assert_eq!(
            c.stream("nope").unwrap_err().kind,
            sluice_sdk::ErrorKind::Config
        );
    }

    #[test]
    fn rejects_bad_configs() {
        let stream = json!({"name": "a", "path": "/a"});
        let bad = [
            json!({"base_url": "not a url", "streams": []}),
            json!({"base_url": "ftp://h", "streams": []}),
            json!({"base_url": "http://h", "streams": [stream, stream]}),
            json!({"base_url": "http://h", "streams": [{"name": "a", "path": "/a", "cursor_param": "since"}]}),
            json!({"base_url": "http://h", "streams": [{"name": "a", "path": "/a", "extra": 1}]}),
            json!({"base_url": "http://h", "auth": {"type": "basic"}, "streams": []}),
            json!({"base_url": "http://h", "streams": [{"name": "a", "path": "/a",
                   "pagination": {"style": "next_link"}}]}),
        ];
        for b in bad {
            assert!(config(b.clone()).is_err(), "{b}");
        }
    }
}
