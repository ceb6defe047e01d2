//! A source for the (fictional) Tickets helpdesk API, written as a third-party
//! author would: against `sluice-sdk` only.
//!
//! It reads two streams: `tickets`, incrementally by `updated_at` (the API filters
//! with `since`), and `agents`, always in full. Pages follow the `Link` header. The
//! checkpoint records the page to fetch next and how many of its records were
//! already emitted, so a batch may end mid-page; see the README for the API.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_sdk::http::{Request, Response, Url};
use sluice_sdk::paginate::next_from_link_header;
use sluice_sdk::prelude::*;

/// Records per page when the configuration does not say.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// The most records per page the API serves.
const MAX_PAGE_SIZE: u32 = 1000;

/// The connector's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The API's root, e.g. `https://acme.tickets.example`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <api_token>`.
    pub api_token: String,
    /// Records per page (`per_page`), 1 to 1000.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_page_size() -> u32 {
    DEFAULT_PAGE_SIZE
}

impl Config {
    fn validate(&self) -> Result<()> {
        Url::parse(&self.base_url)
            .map_err(|e| Error::config(format!("base_url {:?}: {e}", self.base_url)))?;
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err(Error::config(format!(
                "page_size must be between 1 and {MAX_PAGE_SIZE}, not {}",
                self.page_size
            )));
        }
        Ok(())
    }

    /// The first page of an endpoint, e.g. `/api/tickets`.
    fn first_page(&self, endpoint: &str) -> Result<Url> {
        let url = format!("{}{endpoint}", self.base_url.trim_end_matches('/'));
        let mut url = Url::parse(&url).map_err(|e| Error::config(format!("{url:?}: {e}")))?;
        url.query_pairs_mut()
            .append_pair("per_page", &self.page_size.to_string());
        Ok(url)
    }
}

/// The streams this source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Tickets,
    Agents,
}

impl Stream {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "tickets" => Ok(Stream::Tickets),
            "agents" => Ok(Stream::Agents),
            other => Err(Error::config(format!(
                "unknown stream {other:?}; this source reads \"tickets\" and \"agents\""
            ))),
        }
    }

    fn endpoint(self) -> &'static str {
        match self {
            Stream::Tickets => "/api/tickets",
            Stream::Agents => "/api/agents",
        }
    }

    /// The field incremental reads advance by, for the streams that have one.
    fn cursor_field(self) -> Option<&'static str> {
        match self {
            Stream::Tickets => Some("updated_at"),
            Stream::Agents => None,
        }
    }
}

/// Where a read resumes: `url` is the page to fetch next (`null` once the read is
/// complete), `skip` the records of that page already emitted, and `cursor` the
/// largest `updated_at` emitted so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The page to fetch next.
    pub url: Option<String>,
    /// Records of that page already emitted.
    #[serde(default)]
    pub skip: usize,
    /// The largest `updated_at` emitted so far (tickets only).
    #[serde(default)]
    pub cursor: Option<String>,
}

/// The Tickets source.
pub struct TicketsSource;

impl Source for TicketsSource {
    type Config = Config;
    type Reader = TicketsReader;

    fn spec() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Tickets helpdesk",
            "type": "object",
            "additionalProperties": false,
            "required": ["base_url", "api_token"],
            "properties": {
                "base_url": {"type": "string", "format": "uri"},
                "api_token": {"type": "string", "writeOnly": true},
                "page_size": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE,
                              "default": DEFAULT_PAGE_SIZE}
            }
        })
    }

    fn check(config: &Config) -> Result<()> {
        config.validate()?;
        let mut url = config.first_page(Stream::Agents.endpoint())?;
        sluice_sdk::http::set_query(&mut url, "per_page", "1");
        get(config, url)?;
        Ok(())
    }

    fn discover(_config: &Config) -> Result<Vec<StreamDescriptor>> {
        let tickets = json!({
            "type": "object",
            "required": ["id", "updated_at"],
            "properties": {
                "id": {"type": "integer"},
                "subject": {"type": "string"},
                "status": {"type": "string", "enum": ["open", "pending", "solved", "closed"]},
                "assignee_id": {"type": ["integer", "null"]},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"}
            }
        });
        let agents = json!({
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "email": {"type": "string"}
            }
        });
        Ok(vec![
            StreamDescriptor::new("tickets", tickets)
                .primary_key(["id"])
                .incremental_by("updated_at"),
            StreamDescriptor::new("agents", agents).primary_key(["id"]),
        ])
    }

    fn open(
        config: Config,
        stream: &str,
        mode: SyncMode,
        checkpoint: Option<&str>,
    ) -> Result<TicketsReader> {
        config.validate()?;
        let stream = Stream::parse(stream)?;
        if mode == SyncMode::Incremental && stream.cursor_field().is_none() {
            return Err(Error::config(
                "agents can only be read in full_refresh mode",
            ));
        }
        let checkpoint: Checkpoint = match checkpoint {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| Error::config(format!("invalid checkpoint {text:?}: {e}")))?,
            None => Checkpoint::default(),
        };
        let mut first = config.first_page(stream.endpoint())?;
        let (next, skip, cursor) = match checkpoint.url {
            // Resuming a read that was interrupted.
            Some(url) => {
                let url = Url::parse(&url)
                    .map_err(|e| Error::config(format!("checkpoint url {url:?}: {e}")))?;
                (url, checkpoint.skip, checkpoint.cursor)
            }
            // A new read: incremental ones ask only for what changed since the last.
            None if mode == SyncMode::Incremental => {
                if let Some(since) = &checkpoint.cursor {
                    sluice_sdk::http::set_query(&mut first, "since", since);
                }
                (first, 0, checkpoint.cursor)
            }
            None => (first, 0, None),
        };
        Ok(TicketsReader {
            config,
            stream,
            page: Vec::new(),
            page_url: None,
            pos: 0,
            next: Some(next),
            skip,
            cursor,
        })
    }
}

/// Reads one stream, a page at a time.
pub struct TicketsReader {
    config: Config,
    stream: Stream,
    /// Records of the current page, and the URL they came from.
    page: Vec<Value>,
    page_url: Option<Url>,
    /// Records of the current page already emitted.
    pos: usize,
    /// The page after the current one; `None` once the last page was fetched.
    next: Option<Url>,
    /// Records to pass over on the next page fetched (from a checkpoint).
    skip: usize,
    cursor: Option<String>,
}

impl TicketsReader {
    /// Fetch the next page into `self.page`. Returns false when there is none.
    fn fetch_next(&mut self) -> Result<bool> {
        // The reader only moves on once the page is read and parsed, so after an
        // error the next call tries the same page again.
        let Some(url) = self.next.clone() else {
            return Ok(false);
        };
        let response = get(&self.config, url.clone())?;
        let records: Vec<Value> = serde_json::from_slice(&response.body).map_err(|e| {
            Error::schema(format!("{url} did not answer a JSON array of records: {e}"))
        })?;
        self.next = response
            .header("link")
            .and_then(next_from_link_header)
            .and_then(|next| url.join(next).ok());
        self.pos = self.skip.min(records.len());
        self.skip = 0;
        self.page = records;
        self.page_url = Some(url);
        Ok(true)
    }

    fn checkpoint(&self) -> String {
        let checkpoint = if self.pos < self.page.len() {
            Checkpoint {
                url: self.page_url.as_ref().map(Url::to_string),
                skip: self.pos,
                cursor: self.cursor.clone(),
            }
        } else {
            Checkpoint {
                url: self.next.as_ref().map(Url::to_string),
                skip: self.skip,
                cursor: self.cursor.clone(),
            }
        };
        serde_json::to_string(&checkpoint).unwrap_or_default()
    }
}

impl StreamReader for TicketsReader {
    fn next(&mut self, max_records: u32) -> Result<Option<Batch>> {
        // Only fetch when the current page is used up, and at most one page per
        // batch, so a failed fetch never discards records already in a batch.
        if self.pos >= self.page.len() && !self.fetch_next()? {
            return Ok(None);
        }
        let mut batch = Batch::new();
        let end = self.page.len().min(self.pos + max_records as usize);
        for (i, record) in self.page[self.pos..end].iter().enumerate() {
            batch.push(record).map_err(|e| {
                let url = self.page_url.as_ref().map(Url::as_str).unwrap_or_default();
                Error::schema(format!("{url}: record {}: {}", self.pos + i, e.message))
            })?;
            if let Some(field) = self.stream.cursor_field()
                && let Some(value) = record.get(field).and_then(Value::as_str)
                && self.cursor.as_deref().is_none_or(|c| value > c)
            {
                // ISO 8601 timestamps in one format sort as text.
                self.cursor = Some(value.to_owned());
            }
        }
        self.pos = end;
        Ok(Some(batch.checkpoint(self.checkpoint())))
    }
}

/// GET `url` with the API token; any answer but a 2xx becomes the matching error.
fn get(config: &Config, url: Url) -> Result<Response> {
    Request::with_url("GET", url)
        .bearer(&config.api_token)
        .header("accept", "application/json")
        .send()?
        .error_for_status()
}

sluice_sdk::export_source!(TicketsSource);

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        serde_json::from_value(json!({"base_url": "http://127.0.0.1:8099/", "api_token": "t"}))
            .unwrap()
    }

    fn open(stream: &str, mode: SyncMode, cp: Option<&str>) -> Result<TicketsReader> {
        TicketsSource::open(config(), stream, mode, cp)
    }

    #[test]
    fn first_pages() {
        let r = open("tickets", SyncMode::FullRefresh, None).unwrap();
        assert_eq!(
            r.next.unwrap().as_str(),
            "http://127.0.0.1:8099/api/tickets?per_page=100"
        );
        let done = r#"{"url":null,"cursor":"2024-03-01T10:00:00Z"}"#;
        let r = open("tickets", SyncMode::Incremental, Some(done)).unwrap();
        assert_eq!(
            r.next.unwrap().as_str(),
            "http://127.0.0.1:8099/api/tickets?per_page=100&since=2024-03-01T10%3A00%3A00Z"
        );
        let r = open("tickets", SyncMode::FullRefresh, Some(done)).unwrap();
        assert_eq!(r.cursor, None);
    }

    #[test]
    fn resumes_mid_page() {
        let mut r = open("tickets", SyncMode::Incremental, None).unwrap();
        r.page = vec![
            json!({"id": 1, "updated_at": "2024-01-02T00:00:00Z"}),
            json!({"id": 2, "updated_at": "2024-01-03T00:00:00Z"}),
            json!({"id": 3, "updated_at": "2024-01-01T00:00:00Z"}),
        ];
        r.page_url = Some(Url::parse("http://127.0.0.1:8099/api/tickets?page=4").unwrap());
        r.next = None;
        let batch = r.next(2).unwrap().unwrap();
        assert_eq!(batch.len(), 2);
        let cp: Checkpoint = serde_json::from_str(&r.checkpoint()).unwrap();
        assert_eq!(
            cp.url.as_deref(),
            Some("http://127.0.0.1:8099/api/tickets?page=4")
        );
        assert_eq!(
            (cp.skip, cp.cursor.as_deref()),
            (2, Some("2024-01-03T00:00:00Z"))
        );
        let resumed = open("tickets", SyncMode::Incremental, Some(&r.checkpoint())).unwrap();
        assert_eq!(resumed.skip, 2);
        assert_eq!(r.next(5).unwrap().unwrap().len(), 1);
        let cp: Checkpoint = serde_json::from_str(&r.checkpoint()).unwrap();
        assert_eq!((cp.url, cp.skip), (None, 0));
        assert!(r.next(5).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(open("nope", SyncMode::FullRefresh, None).is_err());
        assert!(open("agents", SyncMode::Incremental, None).is_err());
        let err = open("tickets", SyncMode::FullRefresh, Some("{\"page\": 3}"))
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::Config);
    }
}
