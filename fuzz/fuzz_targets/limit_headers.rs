//! The rate-limit headers of an API's answer (`sluice_limiter::Signals`):
//! `Retry-After`, `X-RateLimit-*`, `RateLimit-*` and the structured `RateLimit`.
//!
//! Input: a first line `<status> <unix seconds>` (the answer's status and the time it
//! arrived), then header lines `name: value` (value bytes as sent, not necessarily
//! UTF-8).
//!
//! Invariants: nothing panics, whatever the header or the clock; no hint is believed
//! past `MAX_HINT`; only a 429, or a 503 that says when to retry, is throttled.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice_limiter::{MAX_HINT, Signals, retry_after};

/// The clock is taken modulo this (about the year 3100): what a node's clock can say.
const MAX_NOW_SECS: u64 = 1 << 35;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut head = first.split_whitespace();
    let status = head
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(429);
    let secs = head
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1_700_000_000);
    let now = UNIX_EPOCH + Duration::from_secs(secs % MAX_NOW_SECS);

    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim_ascii()),
            HeaderValue::from_bytes(value.trim_ascii()),
        ) else {
            continue;
        };
        if let Ok(text) = value.to_str() {
            let _ = retry_after(text, now);
        }
        headers.append(name, value);
    }

    let s = Signals::read(status, &headers, now);
    assert!(s.retry_after.is_none_or(|d| d <= MAX_HINT), "{s:?}");
    assert!(s.reset.is_none_or(|d| d <= MAX_HINT), "{s:?}");
    if s.throttled {
        assert!(status == 429 || status == 503, "{status} throttled");
    }
    assert_eq!(s.informed(), s.remaining.is_some() || s.reset.is_some());
    if let Some(pause) = s.pause() {
        assert!(pause <= MAX_HINT);
    }
});
