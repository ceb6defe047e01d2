//! The common pagination styles of REST APIs, as one configurable value.
//!
//! Every style reduces to the same question: given the page just fetched, what is the
//! URL of the next one? That URL is also a complete resume point, so a connector can
//! use it as its checkpoint.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{Response, Url, set_query};

/// How an API pages its results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One page only.
    #[default]
    None,
    /// The body holds the next page's URL (absolute or relative) at `path`
    /// (dotted, e.g. `links.next`); null or missing ends the stream.
    NextLink {
        /// Dotted path of the next URL in the body.
        path: String,
    },
    /// The `Link` response header holds the next URL (`<…>; rel="next"`).
    LinkHeader,
    /// The body holds an opaque cursor at `cursor_path`, sent back as query `param`.
    Cursor {
        /// Query parameter carrying the cursor.
        param: String,
        /// Dotted path of the next cursor in the body.
        cursor_path: String,
    },
    /// Pages are numbered in query `param`, from `start`. An empty page ends the
    /// stream, and so does a short page when `page_size` is given.
    PageNumber {
        /// Query parameter carrying the page number.
        param: String,
        /// The first page's number.
        #[serde(default = "one")]
        start: u64,
        /// Records per full page, if known.
        #[serde(default)]
        page_size: Option<u64>,
    },
    /// Records are addressed by offset in query `param`, `limit` at a time (sent
    /// in `limit_param`). A short page ends the stream.
    Offset {
        /// Query parameter carrying the offset.
        param: String,
        /// Query parameter carrying the page size.
        limit_param: String,
        /// Records per page.
        limit: u64,
    },
}

fn one() -> u64 {
    1
}

impl Pagination {
    /// The URL of the first page, from the endpoint's URL.
    pub fn first(&self, url: &Url) -> Url {
        let mut url = url.clone();
        match self {
            Pagination::PageNumber { param, start, .. } => {
                set_query(&mut url, param, &start.to_string())
            }
            Pagination::Offset {
                param,
                limit_param,
                limit,
            } => {
                set_query(&mut url, limit_param, &limit.to_string());
                set_query(&mut url, param, "0");
            }
            _ => {}
        }
        url
    }

    /// The URL of the page after `response` (whose body parsed to `body` and held
    /// `records` records), or `None` when this was the last page.
    pub fn next(&self, response: &Response, body: &Value, records: usize) -> Option<Url> {
        self.next_with(response, |path| select(body, path).cloned(), records)
    }

    /// Like [`Pagination::next`], for connectors that do not parse whole pages into a
    /// [`Value`] (large pages are much faster to read as raw JSON): `lookup(path)`
    /// returns the value at a dotted path of the body. It is called at most once,
    /// with the `path` of [`Pagination::NextLink`] or the `cursor_path` of
    /// [`Pagination::Cursor`]; the other styles need no body.
    pub fn next_with(
        &self,
        response: &Response,
        lookup: impl FnOnce(&str) -> Option<Value>,
        records: usize,
    ) -> Option<Url> {
        let current = &response.url;
        match self {
            Pagination::None => None,
            Pagination::NextLink { path } => {
                let next = lookup(path)?;
                let next = next.as_str()?;
                if next.is_empty() {
                    return None;
                }
                current.join(next).ok()
            }
            Pagination::LinkHeader => {
                let link = response.header("link")?;
                current.join(next_from_link_header(link)?).ok()
            }
            Pagination::Cursor { param, cursor_path } => {
                let cursor = match lookup(cursor_path)? {
                    Value::String(s) if !s.is_empty() => s,
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                let mut url = current.clone();
                set_query(&mut url, param, &cursor);
                Some(url)
            }
            Pagination::PageNumber {
                param, page_size, ..
            } => {
                if records == 0 || page_size.is_some_and(|size| (records as u64) < size) {
                    return None;
                }
                let page = query_u64(current, param)?;
                let mut url = current.clone();
                set_query(&mut url, param, &(page + 1).to_string());
                Some(url)
            }
            Pagination::Offset { param, limit, .. } => {
                if (records as u64) < *limit {
                    return None;
                }
                let offset = query_u64(current, param)?;
                let mut url = current.clone();
                set_query(&mut url, param, &(offset + records as u64).to_string());
                Some(url)
            }
        }
    }
}

fn query_u64(url: &Url, name: &str) -> Option<u64> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The `rel="next"` target of an RFC 8288 `Link` header.
pub fn next_from_link_header(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then_some(target)
    })
}

/// The value at a dotted `path` (`data.items`, `results.0.id`); the empty path is the
/// value itself.
pub fn select<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.').try_fold(value, |v, key| match v {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_finds_next() {
        let h = r#"<https://api.test/items?page=1>; rel="prev", <https://api.test/items?page=3>; rel="next""#;
        assert_eq!(
            next_from_link_header(h),
            Some("https://api.test/items?page=3")
        );
        assert_eq!(next_from_link_header(r#"<a>; rel="last""#), None);
    }

    #[test]
    fn select_walks_objects_and_arrays() {
        let v = serde_json::json!({"a": {"b": [10, {"c": "x"}]}});
        assert_eq!(select(&v, "a.b.1.c"), Some(&Value::String("x".into())));
        assert_eq!(select(&v, "a.b.5"), None);
        assert_eq!(select(&v, ""), Some(&v));
    }

    #[test]
    fn offset_and_page_number_advance_and_stop() {
        let base = Url::parse("http://h/items").unwrap();
        let offset = Pagination::Offset {
            param: "offset".into(),
            limit_param: "limit".into(),
            limit: 2,
        };
        let first = offset.first(&base);
        let resp = Response {
            status: 200,
            headers: vec![],
            body: vec![],
            url: first,
        };
        let next = offset.next(&resp, &Value::Null, 2).unwrap();
        assert_eq!(query_u64(&next, "offset"), Some(2));
        assert!(offset.next(&resp, &Value::Null, 1).is_none());

        let pages = Pagination::PageNumber {
            param: "page".into(),
            start: 1,
            page_size: None,
        };
        let resp = Response {
            status: 200,
            headers: vec![],
            body: vec![],
            url: pages.first(&base),
        };
        assert_eq!(
            query_u64(&pages.next(&resp, &Value::Null, 5).unwrap(), "page"),
            Some(2)
        );
        assert!(pages.next(&resp, &Value::Null, 0).is_none());
    }

    #[test]
    fn next_with_looks_up_only_what_the_style_needs() {
        let resp = Response {
            status: 200,
            headers: vec![],
            body: vec![],
            url: Url::parse("http://h/items?page=1").unwrap(),
        };
        let link = Pagination::NextLink {
            path: "links.next".into(),
        };
        let next = link.next_with(
            &resp,
            |p| (p == "links.next").then(|| "/items?page=2".into()),
            3,
        );
        assert_eq!(next.unwrap().as_str(), "http://h/items?page=2");
        assert!(link.next_with(&resp, |_| Some(Value::Null), 3).is_none());
        let cursor = Pagination::Cursor {
            param: "after".into(),
            cursor_path: "meta.cursor".into(),
        };
        let next = cursor.next_with(&resp, |_| Some(serde_json::json!(42)), 3);
        assert_eq!(query_u64(&next.unwrap(), "after"), Some(42));
        let none = Pagination::None.next_with(&resp, |_| unreachable!(), 3);
        assert!(none.is_none());
    }
}
