//! Splitting an NDJSON batch into records and reading each record's primary key.
//!
//! Owns the parsing of incoming records; never touches storage.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::hub::HubError;

/// One record of a batch, with its key and content hash.
pub(crate) struct ParsedRecord<'a> {
    /// The record's bytes, trimmed of surrounding whitespace.
    pub(crate) bytes: &'a [u8],
    /// The primary key's canonical bytes: a JSON array of the key fields' values.
    pub(crate) pk: Vec<u8>,
    /// Hash of `pk`; the in-memory index is keyed by it.
    pub(crate) pk_hash: u128,
    /// Hash of `bytes`.
    pub(crate) content_hash: u128,
}

/// The first 128 bits of SHA-256 of `bytes`.
pub(crate) fn hash128(bytes: &[u8]) -> u128 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// The non-blank lines of an NDJSON batch, trimmed.
pub(crate) fn lines(records: &[u8]) -> impl Iterator<Item = &[u8]> {
    records
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty())
}

/// Parses every record of a batch; the first bad record rejects the whole batch.
pub(crate) fn parse_batch<'a>(
    records: &'a [u8],
    pk_fields: &[&str],
) -> Result<Vec<ParsedRecord<'a>>, HubError> {
    if pk_fields.is_empty() {
        return Err(HubError::NoPrimaryKey);
    }
    lines(records)
        .enumerate()
        .map(|(index, line)| parse_record(index, line, pk_fields))
        .collect()
}

fn parse_record<'a>(
    index: usize,
    line: &'a [u8],
    pk_fields: &[&str],
) -> Result<ParsedRecord<'a>, HubError> {
    if line.first() != Some(&b'{') {
        return Err(HubError::NotAnObject { index });
    }
    let malformed = |e: serde_json::Error| HubError::MalformedRecord {
        index,
        reason: e.to_string(),
    };
    let mut de = serde_json::Deserializer::from_slice(line);
    let values = de
        .deserialize_map(KeyFields { fields: pk_fields })
        .map_err(malformed)?;
    de.end().map_err(malformed)?;
    let mut key = Vec::with_capacity(pk_fields.len());
    for (value, field) in values.into_iter().zip(pk_fields) {
        match value {
            Some(v) if !v.is_null() => key.push(v),
            _ => {
                return Err(HubError::MissingPrimaryKey {
                    index,
                    field: (*field).to_owned(),
                });
            }
        }
    }
    let pk = serde_json::to_vec(&key).map_err(malformed)?;
    Ok(ParsedRecord {
        bytes: line,
        pk_hash: hash128(&pk),
        pk,
        content_hash: hash128(line),
    })
}

/// Visits a JSON object and keeps only the values of the primary key fields.
struct KeyFields<'f> {
    fields: &'f [&'f str],
}

impl<'de> Visitor<'de> for KeyFields<'_> {
    type Value = Vec<Option<Value>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.fields.len()];
        while let Some(slot) = map.next_key_seed(FieldSlot {
            fields: self.fields,
        })? {
            match slot {
                Some(i) => found[i] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// Reads an object key and says which primary key field it is, without allocating.
struct FieldSlot<'f> {
    fields: &'f [&'f str],
}

impl<'de> DeserializeSeed<'de> for FieldSlot<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldSlot<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.fields.iter().position(|f| *f == key))
    }
}
