//! `sample`: a deterministic synthetic source, like a faker.
//!
//! Three streams — `users`, `orders`, `events` — of `records` records each, of about
//! `record_bytes` bytes. Every field is a pure function of the record id and `seed`,
//! so two reads of the same range give the same bytes, and a test can compute exactly
//! what a sync must have landed. `updated_at` grows with the id, so incremental reads
//! work; `generation` rewrites every tenth record and `delete_every` leaves records
//! out, so change and deletion detection can be exercised.
//!
//! It formats records by hand into the batch buffer: it exists to benchmark the
//! engine, so it must never be the bottleneck itself.

use std::io::Write;

use serde::Deserialize;
use serde_json::json;
use sluice_sdk::prelude::*;

/// The streams this source offers.
const STREAMS: [&str; 3] = ["users", "orders", "events"];
/// 2024-01-01T00:00:00Z, the timestamp of record 0.
const EPOCH_2024: u64 = 1_704_067_200;

/// The `sample` source.
pub struct Sample;

/// Configuration of the `sample` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Records per stream.
    #[serde(default = "default_records")]
    pub records: u64,
    /// Approximate size of one record in bytes (at least the size of its fields).
    #[serde(default = "default_record_bytes")]
    pub record_bytes: u32,
    /// Seed mixed into every generated field.
    #[serde(default)]
    pub seed: u64,
    /// Bumping it rewrites every tenth record (for change detection).
    #[serde(default)]
    pub generation: u64,
    /// When set, records whose id is a multiple of it are left out (for deletion
    /// detection).
    #[serde(default)]
    pub delete_every: Option<u64>,
}

fn default_records() -> u64 {
    1000
}
fn default_record_bytes() -> u32 {
    200
}

impl Source for Sample {
    type Config = Config;
    type Reader = SampleReader;

    fn spec() -> serde_json::Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "sample",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "records": {"type": "integer", "minimum": 0, "default": 1000, "description": "Records per stream."},
                "record_bytes": {"type": "integer", "minimum": 0, "default": 200, "description": "Approximate bytes per record."},
                "seed": {"type": "integer", "minimum": 0, "default": 0},
                "generation": {"type": "integer", "minimum": 0, "default": 0, "description": "Bump to rewrite every tenth record."},
                "delete_every": {"type": "integer", "minimum": 1, "description": "Leave out records whose id is a multiple of this."}
            }
        })
    }

    fn check(config: &Config) -> Result<()> {
        if config.delete_every == Some(0) {
            return Err(Error::config("delete_every must be at least 1"));
        }
        Ok(())
    }

    fn discover(_config: &Config) -> Result<Vec<StreamDescriptor>> {
        Ok(STREAMS
            .iter()
            .map(|name| {
                StreamDescriptor::new(*name, schema(name))
                    .primary_key(["id"])
                    .incremental_by("updated_at")
            })
            .collect())
    }

    fn open(
        config: Config,
        stream: &str,
        _mode: SyncMode,
        checkpoint: Option<&str>,
    ) -> Result<SampleReader> {
        Self::check(&config)?;
        let kind = match stream {
            "users" => Kind::Users,
            "orders" => Kind::Orders,
            "events" => Kind::Events,
            other => {
                return Err(Error::config(format!(
                    "unknown stream {other:?}; sample offers users, orders, events"
                )));
            }
        };
        // Ids run 1..=records; the checkpoint is the last id emitted.
        let next = match checkpoint {
            None => 1,
            Some(c) => {
                c.parse::<u64>().map_err(|_| {
                    Error::config(format!(
                        "checkpoint {c:?} is not a sample checkpoint (the last id read)"
                    ))
                })? + 1
            }
        };
        Ok(SampleReader { config, kind, next })
    }
}

fn schema(stream: &str) -> serde_json::Value {
    let mut props = json!({
        "id": {"type": "integer"},
        "updated_at": {"type": "string", "format": "date-time"},
        "pad": {"type": "string"}
    });
    let extra = match stream {
        "users" => {
            json!({"name": {"type": "string"}, "email": {"type": "string"}, "score": {"type": "integer"}})
        }
        "orders" => {
            json!({"user_id": {"type": "integer"}, "amount_cents": {"type": "integer"}, "status": {"type": "string"}})
        }
        _ => json!({"user_id": {"type": "integer"}, "kind": {"type": "string"}}),
    };
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    json!({"type": "object", "required": ["id", "updated_at"], "properties": props})
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Users,
    Orders,
    Events,
}

/// Reads one stream of generated records.
pub struct SampleReader {
    config: Config,
    kind: Kind,
    next: u64,
}

impl StreamReader for SampleReader {
    fn next(&mut self, max_records: u32) -> Result<Option<Batch>> {
        if self.next > self.config.records {
            return Ok(None);
        }
        let want = u64::from(max_records.max(1));
        let last = (self.next + want - 1).min(self.config.records);
        let per_record = self.config.record_bytes as usize + 16;
        let mut batch = Batch::with_capacity(per_record * (last + 1 - self.next) as usize);
        for id in self.next..=last {
            if self
                .config
                .delete_every
                .is_some_and(|k| id.is_multiple_of(k))
            {
                continue;
            }
            batch.push_with(|buf| write_record(buf, self.kind, id, &self.config));
        }
        self.next = last + 1;
        batch.set_checkpoint(last.to_string());
        Ok(Some(batch))
    }
}

/// splitmix64: a cheap, well-mixed hash of the id.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const FIRST: [&str; 8] = [
    "ada", "alan", "grace", "edsger", "barbara", "donald", "frances", "ken",
];
const STATUS: [&str; 4] = ["pending", "paid", "shipped", "refunded"];
const EVENT: [&str; 4] = ["login", "view", "click", "purchase"];

fn write_record(buf: &mut Vec<u8>, kind: Kind, id: u64, config: &Config) {
    let start = buf.len();
    // Every tenth record changes with the generation, and so does its updated_at.
    let generation = if id.is_multiple_of(10) {
        config.generation
    } else {
        0
    };
    let h = mix(id ^ config.seed.rotate_left(17) ^ generation.rotate_left(41));
    let ts = EPOCH_2024 + id + generation * 1_000_000_000;
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{{\"id\":{id},\"updated_at\":\"");
    write_timestamp(buf, ts);
    buf.push(b'"');
    let _ = match kind {
        Kind::Users => write!(
            buf,
            ",\"name\":\"{}\",\"email\":\"{}{}@example.com\",\"score\":{}",
            FIRST[(h % 8) as usize],
            FIRST[(h % 8) as usize],
            id,
            h % 1000
        ),
        Kind::Orders => write!(
            buf,
            ",\"user_id\":{},\"amount_cents\":{},\"status\":\"{}\"",
            h % (config.records.max(1)) + 1,
            (h >> 8) % 100_000,
            STATUS[((h >> 20) % 4) as usize]
        ),
        Kind::Events => write!(
            buf,
            ",\"user_id\":{},\"kind\":\"{}\"",
            h % (config.records.max(1)) + 1,
            EVENT[((h >> 20) % 4) as usize]
        ),
    };
    let used = buf.len() - start + 10; // `,"pad":""}`
    let pad = (config.record_bytes as usize).saturating_sub(used);
    buf.extend_from_slice(b",\"pad\":\"");
    let alphabet = b"abcdefghijklmnopqrstuvwxyz012345";
    let mut x = h;
    for i in 0..pad {
        if i % 12 == 0 {
            x = mix(x);
        }
        buf.push(alphabet[(x & 31) as usize]);
        x >>= 5;
    }
    buf.extend_from_slice(b"\"}");
}

/// Format unix seconds as RFC 3339 UTC (`2024-01-01T00:00:00Z`).
fn write_timestamp(buf: &mut Vec<u8>, unix: u64) {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let _ = write!(
        buf,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

sluice_sdk::export_source!(Sample);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let mut b = Vec::new();
        write_timestamp(&mut b, EPOCH_2024 + 86_400 * 59 + 3661);
        assert_eq!(String::from_utf8_lossy(&b), "2024-02-29T01:01:01Z");
    }

    #[test]
    fn records_are_json_of_the_requested_size() {
        let config: Config =
            serde_json::from_str(r#"{"records": 5, "record_bytes": 200}"#).unwrap();
        for kind in [Kind::Users, Kind::Orders, Kind::Events] {
            let mut b = Vec::new();
            write_record(&mut b, kind, 3, &config);
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["id"], 3);
            assert_eq!(b.len(), 200);
        }
    }

    #[test]
    fn generation_rewrites_every_tenth_record_only() {
        let g0: Config = serde_json::from_str(r#"{"generation": 0}"#).unwrap();
        let g1: Config = serde_json::from_str(r#"{"generation": 1}"#).unwrap();
        let rec = |c: &Config, id| {
            let mut b = Vec::new();
            write_record(&mut b, Kind::Users, id, c);
            b
        };
        assert_eq!(rec(&g0, 7), rec(&g1, 7));
        assert_ne!(rec(&g0, 10), rec(&g1, 10));
    }
}
