//! A misbehaving source for the host's sandbox tests.
//!
//! The configuration picks one misbehaviour with `mode`; `check` and `discover` always
//! succeed, `open` succeeds for every known mode, and the misbehaviour happens in
//! [`StreamReader::next`]:
//!
//! | mode | what `next` does |
//! |---|---|
//! | `ok` | 30 valid records `{"id":N,"v":"x"}` in batches of 10 with checkpoints `"1"`, `"2"`, `"3"`, then `None` |
//! | `infinite_loop` | spins forever |
//! | `memory_bomb` | allocates and touches 1 MiB chunks forever |
//! | `disallowed_host` | sends `GET url` and returns the error |
//! | `panic` | panics |
//! | `malformed_json` | a batch with a good record and a truncated one |
//! | `not_object` | a batch with a good record and the line `[1,2,3]` |
//! | `wrong_count` | a batch of 5 lines whose `count` says 2 |
//! | `oversized_batch` | one batch of about `bytes` bytes of valid records |
//! | `sleep` | blocks `millis` ms on a `wasi:clocks` pollable, then one record |
//! | `error_kind` | an error of kind `kind` |
//! | `random_loop` | asks `wasi:random` for `bytes` random bytes (default 64 MiB), forever |
//! | `big_log_lines` | logs `log_lines` lines (default 40) of `bytes` bytes (default 50 MB) starting with `log_secret`, with `log_secret` as their context, then one record |
//! | `log_flood` | logs `log_lines` short lines (default 100,000), then one record |
//! | `big_checkpoint` | one record with a checkpoint of `bytes` bytes (default 100 MB) |
//! | `big_error` | an error of kind `kind` (default `permanent`) with a message of `bytes` bytes (default 20 MB) |
//! | `big_record` | one record of about `bytes` bytes (default 8 MiB) |
//! | `invalid_utf8` | a good record, then a record whose string holds bytes that are not UTF-8 |
//! | `leak_secret` | sends `GET url?token=<token>` with `token` as bearer, logs a line ending in the token's first 18 bytes, and returns the SDK's error for the answer (`check` does the same) |
//!
//! | `get` | sends `GET url` over raw `wasi:http`, its authority as written, and returns one record with the status or error |
//! | `big_body` | POSTs `bytes` bytes (default 64 MiB) to `url`, streamed without a declared length |
//! | `big_headers` | GETs `url` with `count` header fields (default 16,000) of `field_bytes` bytes (default 120 KB) |
//! | `concurrent_requests` | sends `count` GETs of `url` (default 20) before reading any answer |
//! | `many_fields` | holds `count` header fields resources (default 16,000) of one `field_bytes` field (default 60 KB) |
//!
//! An unknown mode is an error of kind `config` from `open`.

mod egress;

use std::hint::black_box;

use serde::Deserialize;
use serde_json::json;
use sluice_sdk::http::Request;
use sluice_sdk::prelude::*;

/// The one stream this source offers.
const STREAM: &str = "items";
/// Batches of the `ok` mode.
const OK_BATCHES: u64 = 3;
/// Records per batch of the `ok` mode.
const OK_BATCH_SIZE: u64 = 10;
/// Default size of the `oversized_batch` batch: 64 MiB.
const DEFAULT_OVERSIZED_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest record of the `oversized_batch` batch, in bytes with its newline.
const OVERSIZED_RECORD_BYTES: u64 = 1024;
/// Default wait of the `sleep` mode: one minute.
const DEFAULT_SLEEP_MILLIS: u64 = 60_000;
/// Retry-after of the `rate_limited` error kind.
const RETRY_AFTER_MS: u64 = 1500;
/// Default request of the `random_loop` mode: 64 MiB.
const DEFAULT_RANDOM_BYTES: u64 = 64 * 1024 * 1024;
/// Default lines of the `big_log_lines` mode.
const DEFAULT_BIG_LOG_LINES: u64 = 40;
/// Default size of a `big_log_lines` line: 50 MB.
const DEFAULT_BIG_LOG_LINE_BYTES: u64 = 50_000_000;
/// Default lines of the `log_flood` mode.
const DEFAULT_FLOOD_LINES: u64 = 100_000;
/// Default checkpoint of the `big_checkpoint` mode: 100 MB.
const DEFAULT_BIG_CHECKPOINT_BYTES: u64 = 100_000_000;
/// Default message of the `big_error` mode: 20 MB.
const DEFAULT_BIG_ERROR_BYTES: u64 = 20_000_000;
/// Default record of the `big_record` mode: 8 MiB.
const DEFAULT_BIG_RECORD_BYTES: u64 = 8 << 20;
/// Bytes of the token the `leak_secret` mode logs: a secret cut short.
const LEAKED_PREFIX_BYTES: usize = 18;
/// Chunk the `memory_bomb` mode allocates at a time.
const MEMORY_BOMB_CHUNK: usize = 1024 * 1024;

/// The hostile source.
pub struct Hostile;

/// Configuration: which misbehaviour, and its parameters.
#[derive(Debug, Deserialize)]
pub struct Config {
    /// The misbehaviour, e.g. `infinite_loop`.
    pub mode: String,
    /// Target of the `disallowed_host` request.
    #[serde(default)]
    pub url: Option<String>,
    /// Size of the `oversized_batch` batch.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Wait of the `sleep` mode.
    #[serde(default)]
    pub millis: Option<u64>,
    /// Error kind of the `error_kind` mode: `auth`, `config`, `rate_limited`,
    /// `transient`, `permanent` or `schema`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Header fields of `big_headers`; requests of `concurrent_requests`.
    #[serde(default)]
    pub count: Option<u64>,
    /// Bytes of each `big_headers` field value.
    #[serde(default)]
    pub field_bytes: Option<u64>,
    /// The secret the `leak_secret` mode gives away (from the connection's secrets).
    #[serde(default)]
    pub token: Option<String>,
    /// Lines of the `big_log_lines` and `log_flood` modes.
    #[serde(default)]
    pub log_lines: Option<u64>,
    /// What each `big_log_lines` line starts with, and its context: a secret the host
    /// must redact.
    #[serde(default)]
    pub log_secret: Option<String>,
}

/// The misbehaviour a reader carries out, with its parameters.
#[derive(Debug)]
enum Mode {
    Ok,
    InfiniteLoop,
    MemoryBomb,
    DisallowedHost(String),
    Panic,
    MalformedJson,
    NotObject,
    WrongCount,
    OversizedBatch(u64),
    Sleep(u64),
    ErrorKind(ErrorKind),
    Egress(egress::Misbehaviour),
    BigCheckpoint(u64),
    BigError(ErrorKind, u64),
    BigRecord(u64),
    InvalidUtf8,
    LeakSecret {
        url: String,
        token: String,
    },
    RandomLoop(u64),
    BigLogLines {
        lines: u64,
        bytes: u64,
        secret: String,
    },
    LogFlood(u64),
}

impl Mode {
    fn from_config(config: Config) -> Result<Self> {
        if let Some(egress) = egress::Misbehaviour::from_config(&config.mode, &config)? {
            return Ok(Mode::Egress(egress));
        }
        Ok(match config.mode.as_str() {
            "ok" => Mode::Ok,
            "infinite_loop" => Mode::InfiniteLoop,
            "memory_bomb" => Mode::MemoryBomb,
            "disallowed_host" => Mode::DisallowedHost(
                config
                    .url
                    .ok_or_else(|| Error::config("mode disallowed_host needs a url"))?,
            ),
            "panic" => Mode::Panic,
            "malformed_json" => Mode::MalformedJson,
            "not_object" => Mode::NotObject,
            "wrong_count" => Mode::WrongCount,
            "oversized_batch" => {
                Mode::OversizedBatch(config.bytes.unwrap_or(DEFAULT_OVERSIZED_BYTES))
            }
            "sleep" => Mode::Sleep(config.millis.unwrap_or(DEFAULT_SLEEP_MILLIS)),
            "error_kind" => Mode::ErrorKind(match config.kind.as_deref() {
                Some("auth") => ErrorKind::Auth,
                Some("config") => ErrorKind::Config,
                Some("rate_limited") => ErrorKind::RateLimited(Some(RETRY_AFTER_MS)),
                Some("transient") => ErrorKind::Transient,
                Some("permanent") => ErrorKind::Permanent,
                Some("schema") => ErrorKind::Schema,
                other => {
                    return Err(Error::config(format!(
                        "mode error_kind needs a kind among auth, config, rate_limited, \
                         transient, permanent, schema; got {other:?}"
                    )));
                }
            }),
            "random_loop" => Mode::RandomLoop(config.bytes.unwrap_or(DEFAULT_RANDOM_BYTES)),
            "big_log_lines" => Mode::BigLogLines {
                lines: config.log_lines.unwrap_or(DEFAULT_BIG_LOG_LINES),
                bytes: config.bytes.unwrap_or(DEFAULT_BIG_LOG_LINE_BYTES),
                secret: config.log_secret.unwrap_or_default(),
            },
            "log_flood" => Mode::LogFlood(config.log_lines.unwrap_or(DEFAULT_FLOOD_LINES)),
            "big_checkpoint" => {
                Mode::BigCheckpoint(config.bytes.unwrap_or(DEFAULT_BIG_CHECKPOINT_BYTES))
            }
            "big_error" => Mode::BigError(
                match config.kind.as_deref() {
                    Some("transient") => ErrorKind::Transient,
                    _ => ErrorKind::Permanent,
                },
                config.bytes.unwrap_or(DEFAULT_BIG_ERROR_BYTES),
            ),
            "big_record" => Mode::BigRecord(config.bytes.unwrap_or(DEFAULT_BIG_RECORD_BYTES)),
            "invalid_utf8" => Mode::InvalidUtf8,
            "leak_secret" => Mode::LeakSecret {
                url: config
                    .url
                    .ok_or_else(|| Error::config("mode leak_secret needs a url"))?,
                token: config
                    .token
                    .ok_or_else(|| Error::config("mode leak_secret needs a token"))?,
            },
            other => return Err(Error::config(format!("unknown mode {other:?}"))),
        })
    }
}

impl Source for Hostile {
    type Config = Config;
    type Reader = HostileReader;

    fn spec() -> serde_json::Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "required": ["mode"],
            "properties": {
                "mode": {"type": "string"},
                "url": {"type": "string"},
                "count": {"type": "integer", "minimum": 0},
                "field_bytes": {"type": "integer", "minimum": 0},
                "bytes": {"type": "integer", "minimum": 0},
                "millis": {"type": "integer", "minimum": 0},
                "kind": {
                    "enum": ["auth", "config", "rate_limited", "transient", "permanent", "schema"]
                }
            }
        })
    }

    fn check(config: &Config) -> Result<()> {
        if config.mode == "leak_secret"
            && let (Some(url), Some(token)) = (&config.url, &config.token)
        {
            leak_secret(url, token)?;
        }
        Ok(())
    }

    fn discover(_config: &Config) -> Result<Vec<StreamDescriptor>> {
        Ok(vec![
            StreamDescriptor::new(
                STREAM,
                json!({
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "v": {"type": "string"}
                    },
                    "required": ["id"]
                }),
            )
            .primary_key(["id"]),
        ])
    }

    fn open(
        config: Config,
        stream: &str,
        _mode: SyncMode,
        checkpoint: Option<&str>,
    ) -> Result<HostileReader> {
        if stream != STREAM {
            return Err(Error::config(format!("unknown stream {stream:?}")));
        }
        let mode = Mode::from_config(config)?;
        // Only the `ok` mode reads checkpoints; it resumes after the batch named.
        let position = match (&mode, checkpoint) {
            (Mode::Ok, Some(cp)) => match cp.parse::<u64>() {
                Ok(batch) if batch <= OK_BATCHES => batch * OK_BATCH_SIZE,
                _ => return Err(Error::config(format!("invalid checkpoint {cp:?}"))),
            },
            _ => 0,
        };
        Ok(HostileReader {
            mode,
            position,
            done: false,
        })
    }
}

/// Reads the `items` stream, misbehaving as configured.
pub struct HostileReader {
    mode: Mode,
    /// Records emitted so far (the `ok` mode).
    position: u64,
    /// Whether the one batch of a single-batch mode was returned.
    done: bool,
}

impl StreamReader for HostileReader {
    fn next(&mut self, max_records: u32) -> Result<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        match &self.mode {
            Mode::Ok => return self.next_ok(max_records),
            Mode::InfiniteLoop => spin(),
            Mode::MemoryBomb => memory_bomb(),
            Mode::Panic => panic!("hostile connector panicked on purpose"),
            Mode::ErrorKind(kind) => {
                return Err(Error::new(*kind, "hostile connector failed on purpose"));
            }
            Mode::BigError(kind, bytes) => return Err(big_error(*kind, *bytes)),
            _ => {}
        }
        self.done = true;
        let batch = match &self.mode {
            Mode::Egress(misbehaviour) => misbehaviour.run()?,
            Mode::DisallowedHost(url) => {
                let response = Request::get(url)?.send()?;
                let mut batch = Batch::new();
                batch.push(&json!({"id": 1, "v": format!("status {}", response.status)}))?;
                batch
            }
            Mode::MalformedJson => {
                let mut batch = Batch::new();
                batch.push_json(br#"{"id":1,"v":"x"}"#);
                batch.push_json(br#"{"id": 2, "v":"#);
                batch.checkpoint("1")
            }
            Mode::NotObject => {
                let mut batch = Batch::new();
                batch.push_json(br#"{"id":1,"v":"x"}"#);
                batch.push_json(b"[1,2,3]");
                batch.checkpoint("1")
            }
            Mode::WrongCount => {
                // `Batch` counts one record per push; a push holding several lines
                // makes `count` (2) disagree with the lines (5).
                let mut batch = Batch::new();
                batch.push_json(
                    b"{\"id\":1,\"v\":\"x\"}\n{\"id\":2,\"v\":\"x\"}\n{\"id\":3,\"v\":\"x\"}",
                );
                batch.push_json(b"{\"id\":4,\"v\":\"x\"}\n{\"id\":5,\"v\":\"x\"}");
                batch.checkpoint("1")
            }
            Mode::OversizedBatch(bytes) => oversized_batch(*bytes, max_records),
            Mode::BigCheckpoint(bytes) => {
                let size = usize::try_from(*bytes).unwrap_or(usize::MAX);
                let mut batch = Batch::new();
                batch.push(&json!({"id": 1, "v": "x"}))?;
                batch.checkpoint("c".repeat(size))
            }
            Mode::BigRecord(bytes) => {
                let size = usize::try_from(*bytes).unwrap_or(usize::MAX);
                let mut batch = Batch::new();
                batch.push(&json!({"id": 1, "v": "x".repeat(size)}))?;
                batch.checkpoint("1")
            }
            Mode::InvalidUtf8 => {
                let mut batch = Batch::new();
                batch.push_json(br#"{"id":1,"v":"x"}"#);
                batch.push_json(b"{\"id\":2,\"v\":\"\xff\xfe\"}");
                batch.checkpoint("1")
            }
            Mode::LeakSecret { url, token } => {
                leak_secret(url, token)?;
                let mut batch = Batch::new();
                batch.push(&json!({"id": 1, "v": "not leaked"}))?;
                batch.checkpoint("1")
            }
            Mode::RandomLoop(bytes) => random_loop(*bytes),
            Mode::BigLogLines {
                lines,
                bytes,
                secret,
            } => {
                big_log_lines(*lines, *bytes, secret);
                one_record("logged")?
            }
            Mode::LogFlood(lines) => {
                for n in 0..*lines {
                    sluice_sdk::log::info(&format!("flood line {n}"));
                }
                one_record("flooded")?
            }
            Mode::Sleep(millis) => {
                let nanos = millis.saturating_mul(1_000_000);
                wasip2::clocks::monotonic_clock::subscribe_duration(nanos).block();
                let mut batch = Batch::new();
                batch.push(&json!({"id": 1, "v": "slept"}))?;
                batch.checkpoint("1")
            }
            Mode::Ok
            | Mode::InfiniteLoop
            | Mode::MemoryBomb
            | Mode::Panic
            | Mode::ErrorKind(_)
            | Mode::BigError(..) => {
                return Ok(None);
            }
        };
        Ok(Some(batch))
    }
}

impl HostileReader {
    /// The `ok` mode: records 1 to 30, ten per checkpoint. Batches hold at most
    /// `max_records`; a batch that ends inside a group of ten carries no checkpoint.
    fn next_ok(&mut self, max_records: u32) -> Result<Option<Batch>> {
        let total = OK_BATCHES * OK_BATCH_SIZE;
        if self.position >= total {
            return Ok(None);
        }
        let group_end = (self.position / OK_BATCH_SIZE + 1) * OK_BATCH_SIZE;
        let end = group_end.min(self.position + u64::from(max_records.max(1)));
        let mut batch = Batch::new();
        for id in self.position + 1..=end {
            batch.push(&json!({"id": id, "v": "x"}))?;
        }
        self.position = end;
        if end == group_end {
            batch.set_checkpoint((end / OK_BATCH_SIZE).to_string());
        }
        Ok(Some(batch))
    }
}

/// Ask the host for `bytes` random bytes, forever: the time goes into host calls.
fn random_loop(bytes: u64) -> ! {
    loop {
        black_box(wasip2::random::random::get_random_bytes(bytes));
    }
}

/// Log `lines` lines of `bytes` bytes each, starting with `secret` and with `secret`
/// as their context. The line is built once, at its exact size, so the guest's
/// memory holds it once.
fn big_log_lines(lines: u64, bytes: u64, secret: &str) {
    let size = usize::try_from(bytes).unwrap_or(usize::MAX);
    let mut line = String::with_capacity(size.max(secret.len()));
    line.push_str(secret);
    while line.len() < size {
        line.push('x');
    }
    for _ in 0..lines {
        sluice_sdk::log::emit(sluice_sdk::log::LogLevel::Info, secret, &line);
    }
}

/// A batch of one record `{"id":1,"v":v}` with checkpoint `"1"`.
fn one_record(v: &str) -> Result<Batch> {
    let mut batch = Batch::new();
    batch.push(&json!({"id": 1, "v": v}))?;
    Ok(batch.checkpoint("1"))
}

/// An error of `kind` whose message is `bytes` bytes long.
fn big_error(kind: ErrorKind, bytes: u64) -> Error {
    let size = usize::try_from(bytes).unwrap_or(usize::MAX);
    let mut message = String::with_capacity(size);
    message.push_str("hostile connector failed on purpose with a long message: ");
    while message.len() < size {
        message.push('e');
    }
    Error::new(kind, message)
}

/// Give `token` away every way a connector may by mistake: in the query and as bearer
/// of a request, cut short at the end of a log line, and in the SDK's error for the
/// answer (whose body the test server makes quote it).
fn leak_secret(url: &str, token: &str) -> Result<()> {
    let cut = token.floor_char_boundary(LEAKED_PREFIX_BYTES);
    sluice_sdk::log::warn(&format!("about to send token {}", &token[..cut]));
    Request::get(url)?
        .query("token", token)
        .bearer(token)
        .send()?
        .error_for_status()?;
    Ok(())
}

/// Spin forever; `black_box` keeps the optimizer from removing the loop.
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocate and touch memory until the host stops us (or allocation fails, which
/// aborts).
fn memory_bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // A non-zero fill writes every page, so the memory is really used.
        hoard.push(vec![0xA5; MEMORY_BOMB_CHUNK]);
        black_box(&mut hoard);
    }
}

/// One batch of about `bytes` bytes of valid records of at least 1 KiB each, sized
/// so the batch holds at most `max_records` records when it can: only its size is
/// out of bounds.
fn oversized_batch(bytes: u64, max_records: u32) -> Batch {
    let record_bytes = bytes
        .div_ceil(u64::from(max_records.max(1)))
        .max(OVERSIZED_RECORD_BYTES);
    let mut batch = Batch::with_capacity(usize::try_from(bytes).unwrap_or(usize::MAX).min(1 << 30));
    let mut id = 0u64;
    while (batch.byte_len() as u64) < bytes {
        id += 1;
        batch.push_with(|buf| {
            let start = buf.len();
            buf.extend_from_slice(format!("{{\"id\":{id},\"v\":\"").as_bytes());
            // Pad so the line, with `"}` and its newline, is `record_bytes` long.
            let used = (buf.len() - start) as u64 + 3;
            let pad = usize::try_from(record_bytes.saturating_sub(used)).unwrap_or(0);
            buf.resize(buf.len() + pad, b'x');
            buf.extend_from_slice(b"\"}");
        });
    }
    batch.checkpoint("1")
}

sluice_sdk::export_source!(Hostile);
