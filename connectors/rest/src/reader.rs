//! Reading one stream: fetching pages, handing out their records in batches of the
//! size the host asks for, and the checkpoint after each batch.
//!
//! The reader's position is always "page `url`, `skip` records in", so a batch may
//! end in the middle of a page and the next read resumes exactly there.

use std::ops::Range;

use sluice_sdk::http::{Response, Url, set_query};
use sluice_sdk::paginate::Pagination;
use sluice_sdk::{Batch, Error, Result, StreamReader, SyncMode, log};

use crate::checkpoint::{Checkpoint, Cursor};
use crate::config::{self, Config, StreamConfig};
use crate::raw;

/// Pages one call to `next` may fetch. Bounds the time a call takes when an API
/// returns many empty pages in a row.
const MAX_PAGES_PER_BATCH: usize = 256;
/// Once a batch holds this many bytes no further page is fetched for it, whatever
/// `max_records` allows: it bounds the memory of one batch on both sides.
const BATCH_SOFT_LIMIT_BYTES: usize = 32 << 20;
/// Record size assumed before the first page says otherwise.
const INITIAL_RECORD_BYTES: usize = 256;

/// A fetched page whose records are being handed out.
#[derive(Debug)]
pub struct Page {
    /// The URL it was fetched from.
    pub url: Url,
    /// The page after it, if any.
    pub next: Option<Url>,
    /// The body, which the record spans index.
    pub body: String,
    /// Where each record's JSON is in `body`.
    pub records: Vec<Range<usize>>,
    /// Records already handed out.
    pub pos: usize,
}

/// How to fetch and read pages of one stream.
#[derive(Debug, Clone)]
pub struct Fetcher {
    headers: Vec<(String, String)>,
    pagination: Pagination,
    records_path: Vec<String>,
    aux_path: Option<Vec<String>>,
    records_path_text: String,
}

impl Fetcher {
    /// A fetcher for `stream` of `config`.
    pub fn new(config: &Config, stream: &StreamConfig) -> Self {
        let aux_path = match &stream.pagination {
            Pagination::NextLink { path } => Some(raw::segments(path)),
            Pagination::Cursor { cursor_path, .. } => Some(raw::segments(cursor_path)),
            _ => None,
        };
        Self {
            headers: config.request_headers(),
            pagination: stream.pagination.clone(),
            records_path: raw::segments(&stream.records_path),
            aux_path,
            records_path_text: stream.records_path.clone(),
        }
    }

    /// Fetch the page at `url` and find its records and the next page.
    pub fn fetch(&self, url: &Url) -> Result<Page> {
        let mut response = config::get(url, &self.headers).send()?.error_for_status()?;
        let body = String::from_utf8(std::mem::take(&mut response.body))
            .map_err(|e| Error::schema(format!("page {url} is not UTF-8: {e}")))?;
        self.read_page(response, body)
    }

    /// Find the records of a fetched page and the URL of the next one.
    pub fn read_page(&self, response: Response, body: String) -> Result<Page> {
        let url = response.url.clone();
        let (records, aux) = {
            let parts = raw::parse_page(&body, &self.records_path, self.aux_path.as_deref())
                .map_err(|e| Error::schema(format!("page {url} is not the JSON expected: {e}")))?;
            let Some(found) = parts.records else {
                return Err(Error::schema(format!(
                    "page {url} has no records at {:?}",
                    self.records_path_text
                )));
            };
            let base = body.as_ptr() as usize;
            let mut records = Vec::with_capacity(found.len());
            for (i, record) in found.iter().enumerate() {
                let text = record.get();
                if !text.starts_with('{') {
                    return Err(Error::schema(format!(
                        "page {url}: record {i} at {:?} is not a JSON object",
                        self.records_path_text
                    )));
                }
                // The raw text borrows from `body`, so its offset is where it sits
                // in the body; storing offsets lets the page own its body.
                let start = text.as_ptr() as usize - base;
                records.push(start..start + text.len());
            }
            let aux = parts
                .aux
                .map(|v| serde_json::from_str::<serde_json::Value>(v.get()))
                .transpose()
                .map_err(|e| Error::schema(format!("page {url}: {e}")))?;
            (records, aux)
        };
        let mut next = self.pagination.next_with(&response, |_| aux, records.len());
        if next.as_ref() == Some(&url) {
            log::warn(&format!(
                "page {url} names itself as the next page; stopping there"
            ));
            next = None;
        }
        Ok(Page {
            url,
            next,
            body,
            records,
            pos: 0,
        })
    }
}

/// Reads one stream.
pub struct RestReader {
    fetcher: Fetcher,
    cursor_field: Option<String>,
    /// The page being handed out, if any.
    page: Option<Page>,
    /// The page to fetch once `page` is done; `None` when the stream is.
    next_url: Option<Url>,
    /// Records to pass over on `next_url` (a resumed checkpoint's `skip`).
    skip_next: usize,
    cursor: Option<Cursor>,
    record_bytes: usize,
}

impl RestReader {
    /// Start reading `stream` in `mode`, after `checkpoint` if given.
    pub fn open(
        config: &Config,
        stream: &str,
        mode: SyncMode,
        checkpoint: Option<&str>,
    ) -> Result<Self> {
        config.validate()?;
        let stream = config.stream(stream)?;
        if mode == SyncMode::Incremental && stream.cursor_field.is_none() {
            return Err(Error::config(format!(
                "stream {:?} has no cursor_field, so it cannot be read incrementally",
                stream.name
            )));
        }
        let first = stream.pagination.first(&config.stream_url(stream)?);
        let checkpoint = checkpoint.map(Checkpoint::parse).transpose()?;
        let (next_url, skip_next, cursor) = match checkpoint {
            None => (first, 0, None),
            Some(Checkpoint {
                url: Some(url),
                skip,
                cursor,
            }) => {
                let url = Url::parse(&url)
                    .map_err(|e| Error::config(format!("checkpoint url {url:?}: {e}")))?;
                (url, usize::try_from(skip).unwrap_or(usize::MAX), cursor)
            }
            // The previous read was complete: a new one starts from the first page,
            // incrementally from its cursor. A full refresh starts over entirely;
            // re-reading is harmless, whereas reporting an empty refresh would make
            // every record look deleted.
            Some(Checkpoint {
                url: None, cursor, ..
            }) => match mode {
                SyncMode::Incremental => {
                    let mut first = first;
                    if let (Some(param), Some(cursor)) = (&stream.cursor_param, &cursor) {
                        set_query(&mut first, param, cursor.as_param());
                    }
                    (first, 0, cursor)
                }
                SyncMode::FullRefresh => (first, 0, None),
            },
        };
        Ok(Self {
            fetcher: Fetcher::new(config, stream),
            cursor_field: stream.cursor_field.clone(),
            page: None,
            next_url: Some(next_url),
            skip_next,
            cursor,
            record_bytes: INITIAL_RECORD_BYTES,
        })
    }

    /// Where the next batch would start.
    fn checkpoint(&self) -> Checkpoint {
        let (url, skip) = match &self.page {
            Some(page) => (Some(page.url.as_str()), page.pos),
            None => (self.next_url.as_ref().map(Url::as_str), self.skip_next),
        };
        Checkpoint {
            url: url.map(str::to_owned),
            skip: skip as u64,
            cursor: self.cursor.clone(),
        }
    }

    /// Move up to `max` records of the current page into `batch`; return how many.
    fn take(&mut self, batch: &mut Batch, max: usize) -> Result<usize> {
        let Some(page) = &mut self.page else {
            return Ok(0);
        };
        let end = page.records.len().min(page.pos.saturating_add(max));
        let taken = end.saturating_sub(page.pos);
        for span in &page.records[page.pos..end] {
            let text = &page.body[span.clone()];
            if let Some(field) = &self.cursor_field
                && let Some(value) = raw::field(text, field).map_err(|e| {
                    Error::schema(format!("page {}: record field {field:?}: {e}", page.url))
                })?
            {
                Cursor::raise(&mut self.cursor, value)?;
            }
            emit(batch, text);
        }
        page.pos = end;
        if page.pos >= page.records.len() {
            self.next_url = page.next.take();
            self.page = None;
        }
        Ok(taken)
    }
}

/// Push one record. Records are emitted as their source text; the rare
/// pretty-printed one is compacted because NDJSON allows no newline inside a record.
fn emit(batch: &mut Batch, text: &str) {
    if text.as_bytes().contains(&b'\n') {
        batch.push_with(|buf| raw::minify_into(text.as_bytes(), buf));
    } else {
        batch.push_json(text.as_bytes());
    }
}

impl StreamReader for RestReader {
    fn next(&mut self, max_records: u32) -> Result<Option<Batch>> {
        if self.page.is_none() && self.next_url.is_none() {
            return Ok(None);
        }
        let max = max_records as usize;
        let mut batch = Batch::with_capacity(
            max.min(1 << 16)
                .saturating_mul(self.record_bytes)
                .min(BATCH_SOFT_LIMIT_BYTES),
        );
        let mut taken = 0;
        let mut fetched = 0;
        while taken < max {
            if self.page.is_some() {
                taken += self.take(&mut batch, max - taken)?;
                continue;
            }
            let Some(url) = &self.next_url else { break };
            if fetched >= MAX_PAGES_PER_BATCH || batch.byte_len() >= BATCH_SOFT_LIMIT_BYTES {
                break;
            }
            match self.fetcher.fetch(url) {
                Ok(mut page) => {
                    fetched += 1;
                    page.pos = self.skip_next.min(page.records.len());
                    self.skip_next = 0;
                    if !page.records.is_empty() {
                        self.record_bytes = page.body.len() / page.records.len() + 1;
                    }
                    if page.pos >= page.records.len() {
                        self.next_url = page.next;
                    } else {
                        self.page = Some(page);
                    }
                }
                // Records already in this batch are handed out first; the reader
                // has not moved past the failed page, so the next call fetches it
                // again and reports the error if it persists.
                Err(e) if taken > 0 => {
                    log::warn(&format!("{}; returning the records read so far", e.message));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(batch.checkpoint(self.checkpoint().to_json())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reader(
        stream: serde_json::Value,
        checkpoint: Option<&str>,
        mode: SyncMode,
    ) -> Result<RestReader> {
        let config: Config = serde_json::from_value(json!({
            "base_url": "http://h", "streams": [stream]
        }))
        .map_err(|e| Error::config(e.to_string()))?;
        RestReader::open(&config, "s", mode, checkpoint)
    }

    fn page(r: &RestReader, url: &str, body: &str) -> Page {
        let response = Response {
            status: 200,
            headers: vec![],
            body: vec![],
            url: Url::parse(url).unwrap(),
        };
        r.fetcher.read_page(response, body.to_owned()).unwrap()
    }

    fn drain(r: &mut RestReader, max: usize) -> (String, usize) {
        let mut batch = Batch::new();
        let n = r.take(&mut batch, max).unwrap();
        let batch: sluice_sdk::__private::source_world::sluice::connector::types::Batch =
            batch.into();
        assert_eq!(batch.count as usize, n);
        (String::from_utf8(batch.records).unwrap(), n)
    }

    #[test]
    fn resumes_inside_a_page_and_tracks_the_cursor() {
        let stream = json!({"name": "s", "path": "/p", "records_path": "data",
            "cursor_field": "u", "cursor_param": "since",
            "pagination": {"style": "next_link", "path": "next"}});
        let mut r = reader(stream.clone(), None, SyncMode::Incremental).unwrap();
        assert_eq!(r.checkpoint().url.as_deref(), Some("http://h/p"));
        let body = r#"{"data":[{"u":"b"},{"u":"c"},{"u":"a"}],"next":"/p?page=2"}"#;
        r.page = Some(page(&r, "http://h/p", body));
        r.next_url = None;
        assert_eq!(
            drain(&mut r, 2),
            ("{\"u\":\"b\"}\n{\"u\":\"c\"}\n".into(), 2)
        );
        let cp = r.checkpoint();
        assert_eq!((cp.url.as_deref(), cp.skip), (Some("http://h/p"), 2));
        assert_eq!(cp.cursor, Some(Cursor::Text("c".into())));
        assert_eq!(drain(&mut r, 5).1, 1);
        let cp = r.checkpoint();
        assert_eq!((cp.url.as_deref(), cp.skip), (Some("http://h/p?page=2"), 0));

        // A resumed reader passes over the records already emitted.
        let r2 = reader(
            stream.clone(),
            Some(&r.checkpoint().to_json()),
            SyncMode::Incremental,
        )
        .unwrap();
        assert_eq!(
            r2.next_url.as_ref().map(Url::as_str),
            Some("http://h/p?page=2")
        );

        // After a complete read, an incremental read starts over from the cursor.
        let done = r#"{"url":null,"skip":0,"cursor":"2024-05-01T00:00:00Z"}"#;
        let r3 = reader(stream.clone(), Some(done), SyncMode::Incremental).unwrap();
        assert_eq!(
            r3.next_url.as_ref().map(Url::as_str),
            Some("http://h/p?since=2024-05-01T00%3A00%3A00Z")
        );
        let r4 = reader(stream, Some(done), SyncMode::FullRefresh).unwrap();
        assert_eq!(r4.next_url.as_ref().map(Url::as_str), Some("http://h/p"));
        assert_eq!(r4.cursor, None);
    }

    #[test]
    fn reports_bad_pages_with_their_url() {
        let stream = json!({"name": "s", "path": "/p", "records_path": "data"});
        let r = reader(stream, None, SyncMode::FullRefresh).unwrap();
        let response = |u: &str| Response {
            status: 200,
            headers: vec![],
            body: vec![],
            url: Url::parse(u).unwrap(),
        };
        for body in [r#"{"items":[]}"#, r#"{"data":[1]}"#, r#"<html>"#] {
            let err = r
                .fetcher
                .read_page(response("http://h/p?x=1"), body.into())
                .unwrap_err();
            assert_eq!(err.kind, sluice_sdk::ErrorKind::Schema);
            assert!(err.message.contains("http://h/p?x=1"), "{}", err.message);
        }
    }

    #[test]
    fn rejects_bad_checkpoints_and_modes() {
        let stream = json!({"name": "s", "path": "/p"});
        let err = reader(stream.clone(), Some("garbage"), SyncMode::FullRefresh)
            .err()
            .unwrap();
        assert_eq!(err.kind, sluice_sdk::ErrorKind::Config);
        let err = reader(stream, None, SyncMode::Incremental).err().unwrap();
        assert_eq!(err.kind, sluice_sdk::ErrorKind::Config);
    }
}
