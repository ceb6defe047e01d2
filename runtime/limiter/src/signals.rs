//! What an API's answer says about its limits: `Retry-After` (seconds or an HTTP
//! date), `X-RateLimit-Remaining`/`-Reset` (epoch seconds or seconds to go, as APIs
//! differ), `RateLimit-Remaining`/`-Reset` and the structured `RateLimit` header of
//! the IETF draft.
//!
//! Pure parsing: it never changes limiter state. Unreadable headers are ignored,
//! never an error: a malformed hint must not fail a request that succeeded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// Resets further away than this are not believed (a garbled header must not park
/// a key for days).
pub const MAX_HINT: Duration = Duration::from_secs(24 * 3600);

/// Epoch seconds below this are taken as "seconds from now" in `X-RateLimit-Reset`
/// (GitHub sends epoch seconds, others send a delta).
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

/// The limit hints of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// The status says "slow down": 429, or 503 with `Retry-After`.
    pub throttled: bool,
    /// How long the API asked to wait.
    pub retry_after: Option<Duration>,
    /// Requests left in the current window.
    pub remaining: Option<u64>,
    /// Time until the window resets.
    pub reset: Option<Duration>,
}

impl Signals {
    /// Read the hints of an answer with `status` and `headers`, received at `now`.
    pub fn read(status: u16, headers: &HeaderMap, now: SystemTime) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let retry_after = text("retry-after").and_then(|v| retry_after(v, now));
        let mut remaining = None;
        let mut reset = None;
        if let Some(v) = text("ratelimit") {
            (remaining, reset) = structured(v);
        }
        remaining = remaining
            .or_else(|| text("ratelimit-remaining").and_then(first_number))
            .or_else(|| text("x-ratelimit-remaining").and_then(first_number));
        reset = reset
            .or_else(|| {
                text("ratelimit-reset")
                    .and_then(first_number)
                    .map(Duration::from_secs)
            })
            .or_else(|| text("x-ratelimit-reset").and_then(|v| reset_time(v, now)));
        let cap = |d: Duration| (d <= MAX_HINT).then_some(d);
        Signals {
            throttled: status == 429 || (status == 503 && retry_after.is_some()),
            retry_after: retry_after.and_then(cap),
            remaining,
            reset: reset.and_then(cap),
        }
    }

    /// Whether the answer carried any limit header at all.
    pub fn informed(&self) -> bool {
        self.remaining.is_some() || self.reset.is_some()
    }

    /// How long a throttled key should pause: what the API asked for, else until
    /// its window resets.
    pub fn pause(&self) -> Option<Duration> {
        self.retry_after.or(self.reset)
    }
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn first_number(value: &str) -> Option<u64> {
    // `RateLimit-Remaining: 10, 100;w=60` lists several windows; the first is the
    // one closest to running out.
    let head = value.split([',', ';']).next()?.trim();
    head.parse::<u64>().ok().or_else(|| {
        head.parse::<f64>()
            .ok()
            .filter(|f| *f >= 0.0)
            .map(|f| f.ceil() as u64)
    })
}

fn reset_time(value: &str, now: SystemTime) -> Option<Duration> {
    let n = first_number(value)?;
    if n < EPOCH_THRESHOLD {
        return Some(Duration::from_secs(n));
    }
    // An epoch past what a `SystemTime` holds is garbage, not a reason to panic.
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(n))?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `RateLimit: limit=100, remaining=50, reset=5` (draft 6/7) or
/// `RateLimit: "default";r=50;t=5` (draft 8 and later).
fn structured(value: &str) -> (Option<u64>, Option<Duration>) {
    let mut remaining = None;
    let mut reset = None;
    for part in value.split([',', ';']) {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim() {
            "remaining" | "r" => remaining = remaining.or(v.parse().ok()),
            "reset" | "t" => reset = reset.or(v.parse().ok().map(Duration::from_secs)),
            _ => {}
        }
    }
    (remaining, reset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = Signals::read(429, &headers(&[("retry-after", "7")]), now);
        assert!(s.throttled);
        assert_eq!(s.pause(), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let s = Signals::read(503, &headers(&[("retry-after", &date)]), now);
        assert!(s.throttled);
        assert_eq!(s.retry_after, Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
        let s = Signals::read(429, &headers(&[("retry-after", &past)]), now);
        assert_eq!(s.retry_after, Some(Duration::ZERO));
        let s = Signals::read(503, &headers(&[]), now);
        assert!(
            !s.throttled,
            "a 503 without Retry-After is a failure, not a limit"
        );
        let s = Signals::read(429, &headers(&[("retry-after", "soon")]), now);
        assert_eq!((s.throttled, s.retry_after), (true, None));
    }

    #[test]
    fn remaining_and_reset_in_each_dialect() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let x = Signals::read(
            200,
            &headers(&[
                ("x-ratelimit-remaining", "4"),
                ("x-ratelimit-reset", "1700000030"),
            ]),
            now,
        );
        assert_eq!(
            (x.remaining, x.reset),
            (Some(4), Some(Duration::from_secs(30)))
        );
        let delta = Signals::read(
            200,
            &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "12")]),
            now,
        );
        assert_eq!(
            (delta.remaining, delta.reset),
            (Some(0), Some(Duration::from_secs(12)))
        );
        let ietf = Signals::read(
            200,
            &headers(&[
                ("ratelimit-remaining", "10, 100;w=60"),
                ("ratelimit-reset", "3"),
            ]),
            now,
        );
        assert_eq!(
            (ietf.remaining, ietf.reset),
            (Some(10), Some(Duration::from_secs(3)))
        );
        let draft7 = Signals::read(
            200,
            &headers(&[("ratelimit", "limit=100, remaining=5, reset=9")]),
            now,
        );
        assert_eq!(
            (draft7.remaining, draft7.reset),
            (Some(5), Some(Duration::from_secs(9)))
        );
        let draft8 = Signals::read(200, &headers(&[("ratelimit", "\"default\";r=2;t=4")]), now);
        assert_eq!(
            (draft8.remaining, draft8.reset),
            (Some(2), Some(Duration::from_secs(4)))
        );
        let none = Signals::read(200, &headers(&[("x-ratelimit-remaining", "lots")]), now);
        assert!(!none.informed());
    }

    #[test]
    fn resets_past_the_clock_s_range_are_not_believed() {
        // An epoch this far out does not fit a `SystemTime`; adding it panicked.
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for huge in ["18446744073709551615", "1e300", "9223372036854775808"] {
            let s = Signals::read(
                429,
                &headers(&[("x-ratelimit-reset", huge), ("x-ratelimit-remaining", "0")]),
                now,
            );
            assert_eq!((s.remaining, s.reset), (Some(0), None), "{huge}");
        }
    }

    #[test]
    fn absurd_hints_are_not_believed() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = Signals::read(429, &headers(&[("retry-after", "99999999")]), now);
        assert_eq!(s.retry_after, None);
    }
}
