//! Raw JSON: finding the records of a page and the fields the reader needs without
//! building a `serde_json::Value` per record.
//!
//! A page is walked once through borrowed maps; each record stays a slice of the
//! page's text, so emitting it is a copy and nothing more. Everything here is pure
//! and tested natively.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// What one walk over a page found.
#[derive(Debug, Default)]
pub struct PageParts<'a> {
    /// The records at the records path; `None` if the path is not in the page.
    pub records: Option<Vec<&'a RawValue>>,
    /// The value at the auxiliary path (a next link or a cursor), if present.
    pub aux: Option<&'a RawValue>,
}

/// Split a dotted path (`data.items`) into its segments; the empty path is the
/// value itself.
pub fn segments(path: &str) -> Vec<String> {
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('.').map(str::to_owned).collect()
    }
}

/// Walk `body` once, collecting the records array at `records` and the value at
/// `aux`. A `null` at the records path counts as no records: APIs often send it on
/// their last page.
pub fn parse_page<'a>(
    body: &'a str,
    records: &[String],
    aux: Option<&[String]>,
) -> serde_json::Result<PageParts<'a>> {
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let aux: Option<Vec<&str>> = aux.map(|a| a.iter().map(String::as_str).collect());
    // The records are collected as raw slices, so a path that continues inside
    // them cannot be followed in the same walk; it gets a walk of its own.
    let aux_inside_records = aux
        .as_ref()
        .is_some_and(|a| a.len() > records.len() && a.starts_with(&records));
    let mut parts = PageParts::default();
    walk(
        body,
        Walk {
            records: Some(&records),
            aux: if aux_inside_records {
                None
            } else {
                aux.as_deref()
            },
            out: &mut parts,
        },
    )?;
    if aux_inside_records {
        let mut aux_parts = PageParts::default();
        walk(
            body,
            Walk {
                records: None,
                aux: aux.as_deref(),
                out: &mut aux_parts,
            },
        )?;
        parts.aux = aux_parts.aux;
    }
    Ok(parts)
}

/// The raw text of top-level field `name` of the JSON object `record`, if present.
///
/// `record` must already be valid JSON (it was validated when its page was parsed),
/// which lets the common case be a plain scan that stops at the field instead of a
/// second full parse. Keys with escapes, or anything the scan does not expect, go
/// through serde. With duplicate keys the first one wins.
pub fn field<'a>(record: &'a str, name: &str) -> serde_json::Result<Option<&'a str>> {
    match scan_field(record.as_bytes(), name.as_bytes()) {
        Scan::Found(range) => Ok(record.get(range)),
        Scan::Absent => Ok(None),
        Scan::Unsure => {
            let mut de = serde_json::Deserializer::from_str(record);
            let found = FieldSeek(name).deserialize(&mut de)?;
            de.end()?;
            Ok(found.map(RawValue::get))
        }
    }
}

/// What [`scan_field`] found.
#[derive(Debug, PartialEq)]
enum Scan {
    Found(std::ops::Range<usize>),
    Absent,
    /// The scan cannot tell; ask serde.
    Unsure,
}

fn scan_field(b: &[u8], name: &[u8]) -> Scan {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Scan::Unsure;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Scan::Absent;
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Scan::Unsure;
        }
        let Some((key_end, escaped)) = string_end(b, i) else {
            return Scan::Unsure;
        };
        if escaped {
            return Scan::Unsure;
        }
        let key = &b[i + 1..key_end - 1];
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Scan::Unsure;
        }
        let start = skip_ws(b, i + 1);
        let Some(end) = value_end(b, start) else {
            return Scan::Unsure;
        };
        if key == name {
            return Scan::Found(start..end);
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Scan::Absent,
            _ => return Scan::Unsure,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// The index after the string starting at `b[start] == '"'`, and whether it holds
/// an escape.
fn string_end(b: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    let mut i = start + 1;
    loop {
        match b.get(i)? {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
}

/// The index after the JSON value starting at `b[start]`.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match b.get(start)? {
        b'"' => string_end(b, start).map(|(end, _)| end),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?.0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = start;
            while !matches!(
                b.get(i),
                None | Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
            ) {
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// Append `json` to `out` without the whitespace between tokens. `json` must be
/// valid JSON, so whitespace outside strings is insignificant and whitespace inside
/// strings is always escaped except for plain spaces, which are kept.
pub fn minify_into(json: &[u8], out: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b' ' | b'\n' | b'\r' | b'\t' => {}
                b'"' => {
                    in_string = true;
                    out.push(b);
                }
                _ => out.push(b),
            }
        }
    }
}

fn walk<'a>(body: &'a str, seed: Walk<'_, '_, 'a>) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_str(body);
    seed.deserialize(&mut de)?;
    de.end()
}

/// The remaining path below `key`, if `path` goes through it.
fn below<'p>(path: Option<&'p [&'p str]>, key: &str) -> Option<&'p [&'p str]> {
    match path?.split_first() {
        Some((head, rest)) if *head == key => Some(rest),
        _ => None,
    }
}

fn below_index<'p>(path: Option<&'p [&'p str]>, index: usize) -> Option<&'p [&'p str]> {
    match path?.split_first() {
        Some((head, rest)) if head.parse::<usize>().ok() == Some(index) => Some(rest),
        _ => None,
    }
}

/// One step of a page walk: the parts of the two paths still ahead, and where to
/// put what is found.
struct Walk<'p, 'o, 'a> {
    records: Option<&'p [&'p str]>,
    aux: Option<&'p [&'p str]>,
    out: &'o mut PageParts<'a>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match (self.records, self.aux) {
            (Some([]), _) => {
                self.out.records = Some(d.deserialize_any(RecordsVisitor)?);
                Ok(())
            }
            (None, Some([])) => {
                self.out.aux = Some(<&RawValue as de::Deserialize>::deserialize(d)?);
                Ok(())
            }
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let records = below(self.records, &key);
            let aux = below(self.aux, &key);
            if records.is_none() && aux.is_none() {
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(Walk {
                    records,
                    aux,
                    out: &mut *self.out,
                })?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            let records = below_index(self.records, index);
            let aux = below_index(self.aux, index);
            let more = if records.is_none() && aux.is_none() {
                seq.next_element::<IgnoredAny>()?.is_some()
            } else {
                seq.next_element_seed(Walk {
                    records,
                    aux,
                    out: &mut *self.out,
                })?
                .is_some()
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    // A scalar where the path wanted to go deeper: the path is simply not there.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The records array: each element kept as its raw text.
struct RecordsVisitor;

impl<'de> Visitor<'de> for RecordsVisitor {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0).max(64));
        while let Some(record) = seq.next_element::<&'de RawValue>()? {
            records.push(record);
        }
        Ok(records)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
}

/// A map key, borrowed from the page unless it had to be unescaped.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Finds one field of an object, skipping the others without building them.
struct FieldSeek<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for FieldSeek<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldSeek<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(parts: &PageParts<'_>) -> Vec<String> {
        parts
            .records
            .as_ref()
            .map(|r| r.iter().map(|v| v.get().to_owned()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn finds_records_and_next_link_in_one_walk() {
        let body = r#"{"meta":{"n":2},"data":[{"id":1},{"id":2,"x":[1,{"y":null}]}],"next":"/p2"}"#;
        let parts = parse_page(body, &segments("data"), Some(&segments("next"))).unwrap();
        assert_eq!(
            texts(&parts),
            [r#"{"id":1}"#, r#"{"id":2,"x":[1,{"y":null}]}"#]
        );
        assert_eq!(parts.aux.map(RawValue::get), Some(r#""/p2""#));
    }

    #[test]
    fn follows_nested_paths_and_escaped_keys() {
        let body = r#"{"res\u0075lt":{"items":[{"a":1}],"links":{"next":null}}}"#;
        let parts = parse_page(
            body,
            &segments("result.items"),
            Some(&segments("result.links.next")),
        )
        .unwrap();
        assert_eq!(texts(&parts), [r#"{"a":1}"#]);
        assert_eq!(parts.aux.map(RawValue::get), Some("null"));
    }

    #[test]
    fn top_level_array_and_missing_paths() {
        let parts = parse_page(r#" [ {"a":1} , {"b":2} ] "#, &[], None).unwrap();
        assert_eq!(texts(&parts), [r#"{"a":1}"#, r#"{"b":2}"#]);
        let parts = parse_page(r#"{"other":[1]}"#, &segments("data"), None).unwrap();
        assert!(parts.records.is_none());
        let parts = parse_page(r#"{"data":"nope"}"#, &segments("data.items"), None).unwrap();
        assert!(parts.records.is_none());
        let parts = parse_page(r#"{"data":null}"#, &segments("data"), None).unwrap();
        assert_eq!(parts.records.map(|r| r.len()), Some(0));
        assert!(parse_page(r#"{"data":{"a":1}}"#, &segments("data"), None).is_err());
        assert!(parse_page(r#"{"data":[1,]}"#, &segments("data"), None).is_err());
    }

    #[test]
    fn aux_inside_the_records_is_found_by_a_second_walk() {
        let body = r#"{"data":[{"id":1},{"id":2}]}"#;
        let parts = parse_page(body, &segments("data"), Some(&segments("data.1.id"))).unwrap();
        assert_eq!(texts(&parts).len(), 2);
        assert_eq!(parts.aux.map(RawValue::get), Some("2"));
    }

    #[test]
    fn field_finds_top_level_values_only() {
        let rec = r#"{"nested":{"updated_at":"x","a":[1,"}"]},"s":"q\"}","updated_at":"2024-01-02","n":3}"#;
        assert_eq!(field(rec, "updated_at").unwrap(), Some(r#""2024-01-02""#));
        assert_eq!(field(rec, "n").unwrap(), Some("3"));
        assert!(field(rec, "missing").unwrap().is_none());
        assert!(field("{}", "n").unwrap().is_none());
        assert_eq!(
            field(" { \"n\" : -1.5e3 , \"m\":null } ", "n").unwrap(),
            Some("-1.5e3")
        );
        assert_eq!(field(r#"{"a":1,"m":null}"#, "m").unwrap(), Some("null"));
        // Escaped keys take the slow path and still match.
        assert_eq!(field(r#"{"\u006e":true}"#, "n").unwrap(), Some("true"));
        assert!(field("[1]", "n").is_err());
    }

    #[test]
    fn scan_agrees_with_serde() {
        let recs = [
            r#"{"a":{"b":[{"c":"]"}]},"c":[],"d":"\\","e":{}}"#,
            r#"{"x":1}"#,
            r#"{ "e" : "v" }"#,
        ];
        for rec in recs {
            for key in ["a", "c", "d", "e", "x", "zz"] {
                let mut de = serde_json::Deserializer::from_str(rec);
                let slow = FieldSeek(key)
                    .deserialize(&mut de)
                    .unwrap()
                    .map(RawValue::get);
                assert_eq!(field(rec, key).unwrap(), slow, "{rec} {key}");
            }
        }
    }

    #[test]
    fn minify_keeps_strings_intact() {
        let mut out = Vec::new();
        minify_into(
            b"{\n  \"a b\": \"x\\\" \\n y\",\n  \"c\" : [1, 2]\n}",
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a b":"x\" \n y","c":[1,2]}"#
        );
    }
}
