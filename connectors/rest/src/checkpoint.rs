//! The reader's checkpoint and the cursor value it carries.
//!
//! A checkpoint is JSON: `{"url": <page to fetch next, or null>, "skip": <records of
//! that page already emitted>, "cursor": <largest cursor value emitted so far, or
//! null>}`. `url: null` means the previous read was complete.

use std::cmp::Ordering;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use sluice_sdk::{Error, Result};

/// A value of a stream's cursor field. Strings (ISO timestamps) compare as text,
/// numbers numerically; any number sorts before any string.
#[derive(Debug, Clone, PartialEq)]
pub enum Cursor {
    /// A JSON string, unescaped.
    Text(String),
    /// A JSON number, as its JSON text.
    Number(String),
}

impl Cursor {
    /// The value to send as the cursor query parameter.
    pub fn as_param(&self) -> &str {
        match self {
            Cursor::Text(s) | Cursor::Number(s) => s,
        }
    }

    /// The cursor as JSON text. A number is written as it was read, never through
    /// `f64`: a cursor past 2^64, or one `f64` parses a bit off, must come back from
    /// a checkpoint as the same value.
    fn to_raw(&self) -> Option<Box<RawValue>> {
        match self {
            Cursor::Text(s) => serde_json::value::to_raw_value(s).ok(),
            Cursor::Number(n) => RawValue::from_string(n.clone())
                .or_else(|_| serde_json::value::to_raw_value(n))
                .ok(),
        }
    }

    /// Raise `cursor` to `text` (a record's field, as valid JSON text) if that is
    /// larger. Values that cannot be cursors (null, booleans, objects, arrays) are
    /// ignored. Allocates only when the cursor moves and its buffer is too small.
    pub fn raise(cursor: &mut Option<Cursor>, text: &str) -> Result<()> {
        let candidate = match text.as_bytes().first() {
            Some(b'"') if !text.contains('\\') => CursorRef::Text(&text[1..text.len() - 1]),
            Some(b'"') => {
                let owned: String = serde_json::from_str(text)?;
                return Self::raise_owned(cursor, Cursor::Text(owned));
            }
            Some(b'-' | b'0'..=b'9') => CursorRef::Number(text),
            _ => return Ok(()),
        };
        match cursor {
            None => *cursor = Some(candidate.to_owned()),
            Some(current) => {
                if candidate.cmp_to(current) == Ordering::Greater {
                    candidate.store_in(current);
                }
            }
        }
        Ok(())
    }

    fn raise_owned(cursor: &mut Option<Cursor>, candidate: Cursor) -> Result<()> {
        let greater = match cursor {
            None => true,
            Some(current) => candidate.as_ref().cmp_to(current) == Ordering::Greater,
        };
        if greater {
            *cursor = Some(candidate);
        }
        Ok(())
    }

    fn as_ref(&self) -> CursorRef<'_> {
        match self {
            Cursor::Text(s) => CursorRef::Text(s),
            Cursor::Number(n) => CursorRef::Number(n),
        }
    }
}

/// A cursor value borrowed from a record.
#[derive(Debug, Clone, Copy)]
enum CursorRef<'a> {
    Text(&'a str),
    Number(&'a str),
}

impl CursorRef<'_> {
    fn cmp_to(self, other: &Cursor) -> Ordering {
        match (self, other) {
            (CursorRef::Text(a), Cursor::Text(b)) => a.cmp(b.as_str()),
            (CursorRef::Number(a), Cursor::Number(b)) => compare_numbers(a, b),
            (CursorRef::Number(_), Cursor::Text(_)) => Ordering::Less,
            (CursorRef::Text(_), Cursor::Number(_)) => Ordering::Greater,
        }
    }

    fn to_owned(self) -> Cursor {
        match self {
            CursorRef::Text(s) => Cursor::Text(s.to_owned()),
            CursorRef::Number(n) => Cursor::Number(n.to_owned()),
        }
    }

    /// Overwrite `target` reusing its buffer: the cursor of an ordered stream moves
    /// on every record.
    fn store_in(self, target: &mut Cursor) {
        match (self, target) {
            (CursorRef::Text(s), Cursor::Text(buf))
            | (CursorRef::Number(s), Cursor::Number(buf)) => {
                buf.clear();
                buf.push_str(s);
            }
            (candidate, target) => *target = candidate.to_owned(),
        }
    }
}

/// Compare two JSON numbers exactly when both are integers, as floats otherwise.
fn compare_numbers(a: &str, b: &str) -> Ordering {
    if let (Ok(a), Ok(b)) = (a.parse::<i128>(), b.parse::<i128>()) {
        return a.cmp(&b);
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(a), Ok(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        _ => a.cmp(b),
    }
}

/// Where a read resumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The page to fetch next; `None` once a read is complete.
    pub url: Option<String>,
    /// Records at the start of that page that were already emitted.
    pub skip: u64,
    /// The largest cursor value emitted so far.
    pub cursor: Option<Cursor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(deserialize_with = "present")]
    url: Option<String>,
    #[serde(default)]
    skip: u64,
    #[serde(default)]
    cursor: Option<Box<RawValue>>,
}

#[derive(Serialize)]
struct WireOut<'a> {
    url: Option<&'a str>,
    skip: u64,
    cursor: Option<Box<RawValue>>,
}

/// Makes an `Option` field required (it may be null, not absent), so that `{}` is
/// not mistaken for "start over".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

impl Checkpoint {
    /// Parse a checkpoint this connector wrote. Anything else is a `config` error
    /// naming what is wrong.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |why: String| {
            let shown: String = text.chars().take(200).collect();
            Error::config(format!(
                "invalid checkpoint {shown:?}: {why}; expected {{\"url\": <string or null>, \
                 \"skip\": <records>, \"cursor\": <string, number or null>}}"
            ))
        };
        let wire: Wire = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let cursor = match wire.cursor.as_deref().map(RawValue::get) {
            None => None,
            Some(raw) => match raw.as_bytes().first() {
                Some(b'"') => Some(Cursor::Text(
                    serde_json::from_str(raw).map_err(|e| invalid(e.to_string()))?,
                )),
                Some(b'-' | b'0'..=b'9') => Some(Cursor::Number(raw.to_owned())),
                _ => {
                    return Err(invalid(format!("cursor {raw} is not a string or number")));
                }
            },
        };
        Ok(Self {
            url: wire.url,
            skip: wire.skip,
            cursor,
        })
    }

    /// The checkpoint as JSON text.
    pub fn to_json(&self) -> String {
        let wire = WireOut {
            url: self.url.as_deref(),
            skip: self.skip,
            cursor: self.cursor.as_ref().and_then(Cursor::to_raw),
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cp = Checkpoint {
            url: Some("http://h/p?page=2".into()),
            skip: 3,
            cursor: Some(Cursor::Text("2024-01-01T00:00:00Z".into())),
        };
        assert_eq!(Checkpoint::parse(&cp.to_json()).unwrap(), cp);
        let done = Checkpoint {
            url: None,
            skip: 0,
            cursor: Some(Cursor::Number("42".into())),
        };
        assert_eq!(done.to_json(), r#"{"url":null,"skip":0,"cursor":42}"#);
        assert_eq!(Checkpoint::parse(&done.to_json()).unwrap(), done);
    }

    #[test]
    fn a_number_cursor_keeps_its_exact_text() {
        // Found by fuzzing (target `rest_checkpoint`): a number cursor went through
        // `f64`, so one past 2^64 came back from each checkpoint as another number.
        for n in [
            "117777771111111777770",
            "1e5",
            "-0.5",
            "12345678901234567890123",
            "1e400",
        ] {
            let text = format!(r#"{{"url":null,"skip":0,"cursor":{n}}}"#);
            let cp = Checkpoint::parse(&text).unwrap();
            assert_eq!(cp.cursor, Some(Cursor::Number(n.into())), "{n}");
            assert_eq!(cp.to_json(), text);
            assert_eq!(Checkpoint::parse(&cp.to_json()).unwrap(), cp);
        }
    }

    #[test]
    fn rejects_what_it_did_not_write() {
        for bad in [
            "",
            "{}",
            "[]",
            r#"{"url":1}"#,
            r#"{"url":null,"cursor":[1]}"#,
            r#"{"url":null,"x":1}"#,
        ] {
            let err = Checkpoint::parse(bad).unwrap_err();
            assert_eq!(err.kind, sluice_sdk::ErrorKind::Config, "{bad}");
        }
        assert!(Checkpoint::parse(r#"{"url":null}"#).is_ok());
    }

    #[test]
    fn cursor_keeps_the_maximum() {
        let mut c = None;
        for v in [
            r#""2024-01-02""#,
            r#""2024-01-01""#,
            r#""2024-01-03""#,
            "null",
            "true",
        ] {
            Cursor::raise(&mut c, v).unwrap();
        }
        assert_eq!(c, Some(Cursor::Text("2024-01-03".into())));

        let mut n = None;
        for v in ["9", "10", "2", "-1", "10.5"] {
            Cursor::raise(&mut n, v).unwrap();
        }
        assert_eq!(n, Some(Cursor::Number("10.5".into())));

        let mut e = Some(Cursor::Text("a\"b".into()));
        Cursor::raise(&mut e, r#""a\"c""#).unwrap();
        assert_eq!(e, Some(Cursor::Text("a\"c".into())));
    }
}
