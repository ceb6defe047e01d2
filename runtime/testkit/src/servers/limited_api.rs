//! A paged JSON API that enforces its own rate limit, as third-party APIs do, and
//! counts every request that broke it, so a test can check that Sluice's central rate
//! limiter keeps a sync within a provider's limits.
//!
//! `GET /items/page-N.json` answers `{"data": [...], "next": "/items/page-(N+1).json" | null}`
//! with [`LimitConfig::page_size`] contacts per page (see [`super::contacts::record`]),
//! ids 1..=[`LimitConfig::records`]; an unknown page answers 404.
//!
//! The limit is [`LimitConfig::limit`] requests per credential (the `Authorization`
//! header, or `anonymous`) in fixed windows of [`LimitConfig::window`], aligned to the
//! server's creation: window index = time since creation / window. Requests beyond the
//! limit in a window are violations, answered 429. Rate-limit headers
//! ([`LimitHeaders`]) go on every 200, 404 and 429; `Retry-After` ([`RetryAfter`]) on
//! every 429. A request that arrives before the instant a 429 told its credential to
//! wait for is counted as early. [`LimitedApi::fail_next`] makes requests fail outright,
//! for circuit-breaker tests. Every request is logged ([`Hit`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Which rate-limit headers the API sends on every answer that went through the limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHeaders {
    /// No rate-limit headers.
    None,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, and `X-RateLimit-Reset` as the Unix
    /// time in seconds (rounded up) at which the current window ends.
    XRateLimit,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, and `RateLimit-Reset` as the seconds
    /// (rounded up) until the current window ends, as in the IETF draft.
    Ietf,
}

/// How a 429 says when to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// No `Retry-After` header.
    None,
    /// `Retry-After: <seconds>`, the seconds until the window ends, rounded up.
    Seconds,
    /// `Retry-After: <HTTP date>`, the first whole second at or after the window's end.
    HttpDate,
}

/// A limited API's data set and limit.
#[derive(Clone, Debug)]
pub struct LimitConfig {
    /// Records served in all, ids 1..=records.
    pub records: u64,
    /// Records per page.
    pub page_size: u64,
    /// Requests each credential may make per window.
    pub limit: u64,
    /// Length of a window.
    pub window: Duration,
    /// Rate-limit headers sent.
    pub headers: LimitHeaders,
    /// Form of `Retry-After` on a 429.
    pub retry_after: RetryAfter,
}

impl Default for LimitConfig {
    /// 100 records in pages of 10, 5 requests a second, `X-RateLimit-*` headers and
    /// `Retry-After` in seconds.
    fn default() -> Self {
        Self {
            records: 100,
            page_size: 10,
            limit: 5,
            window: Duration::from_secs(1),
            headers: LimitHeaders::XRateLimit,
            retry_after: RetryAfter::Seconds,
        }
    }
}

/// One request that reached the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Milliseconds since the server was created.
    pub at_ms: u64,
    /// The `Authorization` header, or `anonymous`.
    pub credential: String,
    /// The request's path.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The `x-test-priority` request header, if any; lets a test tell whose request it was.
    pub priority: Option<String>,
}

/// State of a limited API: its limiter, counters and request log.
pub struct LimitedApi {
    config: LimitConfig,
    start: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    limiter: Limiter,
    served: u64,
    violations: u64,
    early: u64,
    throttled: BTreeMap<(String, u64), u64>,
    log: Vec<Hit>,
    failures: Option<(u64, u16)>,
}

impl LimitedApi {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        super::lock(&self.inner)
    }

    /// Makes the next `n` requests, of any credential, answer `status` with a short text
    /// body and no rate-limit headers. They do not count against the limit, but are
    /// logged, counted in [`hits`](Self::hits), and counted as early if they ignored a
    /// `Retry-After`.
    pub fn fail_next(&self, n: u64, status: u16) {
        self.lock().failures = (n > 0).then_some((n, status));
    }

    /// Pages answered 200.
    pub fn served(&self) -> u64 {
        self.lock().served
    }

    /// Requests beyond the limit of their credential's window (each answered 429).
    pub fn violations(&self) -> u64 {
        self.lock().violations
    }

    /// Requests that arrived before the instant a 429 told their credential to wait for.
    pub fn early(&self) -> u64 {
        self.lock().early
    }

    /// The number of 429s per credential and window index.
    pub fn throttled_per_window(&self) -> BTreeMap<(String, u64), u64> {
        self.lock().throttled.clone()
    }

    /// All requests that reached the API, injected failures included.
    pub fn hits(&self) -> u64 {
        self.lock().log.len() as u64
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<Hit> {
        self.lock().log.clone()
    }

    /// The configuration the API was created with.
    pub fn config(&self) -> &LimitConfig {
        &self.config
    }
}

/// A router serving a rate-limited paged API, and its state for inspection.
pub fn router(config: LimitConfig) -> (Router, Arc<LimitedApi>) {
    // Wall-clock time at creation, so window ends (kept as offsets from `start`) can
    // be told as Unix times and HTTP dates.
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let state = Arc::new(LimitedApi {
        start: Instant::now(),
        inner: Mutex::new(Inner {
            limiter: Limiter::new(&config, epoch),
            served: 0,
            violations: 0,
            early: 0,
            throttled: BTreeMap::new(),
            log: Vec::new(),
            failures: None,
        }),
        config,
    });
    let app = Router::new()
        .route("/items/{page}", get(page))
        .with_state(state.clone());
    (app, state)
}

async fn page(
    State(state): State<Arc<LimitedApi>>,
    Path(page): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let now = state.start.elapsed();
    let credential = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_else(|| "anonymous".to_string());
    let priority = headers
        .get("x-test-priority")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut hit = Hit {
        at_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
        credential,
        path: uri.path().to_string(),
        status: 0,
        priority,
    };

    // Decide and count under the lock; build the body after releasing it.
    let rate_headers = {
        let inner = &mut *state.lock();
        if inner.limiter.is_early(&hit.credential, now) {
            inner.early += 1;
        }
        if let Some((left, status)) = inner.failures {
            inner.failures = (left > 1).then_some((left - 1, status));
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            hit.status = status.as_u16();
            inner.log.push(hit);
            return (
                status,
                [(header::CONTENT_TYPE, "text/plain")],
                "failing on purpose",
            )
                .into_response();
        }
        let decision = inner.limiter.decide(&hit.credential, now);
        let rate_headers = inner.limiter.headers(&decision);
        if !decision.allowed {
            inner.violations += 1;
            *inner
                .throttled
                .entry((hit.credential.clone(), decision.window))
                .or_default() += 1;
            hit.status = StatusCode::TOO_MANY_REQUESTS.as_u16();
            inner.log.push(hit);
            return answer(
                StatusCode::TOO_MANY_REQUESTS,
                &rate_headers,
                "application/json",
                "{\"error\":\"rate limit exceeded\"}".to_string(),
            );
        }
        rate_headers
    };

    let (status, content_type, body) = match page_body(&state.config, &page) {
        Some(body) => (StatusCode::OK, "application/json", body),
        None => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "no such page".to_string(),
        ),
    };
    {
        let inner = &mut *state.lock();
        if status == StatusCode::OK {
            inner.served += 1;
        }
        hit.status = status.as_u16();
        inner.log.push(hit);
    }
    answer(status, &rate_headers, content_type, body)
}

fn answer(
    status: StatusCode,
    rate_headers: &[(&'static str, String)],
    content_type: &'static str,
    body: String,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in rate_headers {
        // Values are digits or an HTTP date, always valid; skip rather than panic.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    (status, headers, body).into_response()
}

/// The body of page `page` (`page-N.json`), or `None` when there is no such page.
fn page_body(config: &LimitConfig, page: &str) -> Option<String> {
    let size = config.page_size.max(1);
    let pages = config.records.div_ceil(size).max(1);
    let n = page
        .strip_prefix("page-")
        .and_then(|p| p.strip_suffix(".json"))
        .and_then(|p| p.parse::<u64>().ok())
        .filter(|n| (1..=pages).contains(n))?;
    let first = (n - 1) * size + 1;
    let last = (n * size).min(config.records);
    let mut body = String::from("{\"data\":[");
    for id in first..=last {
        if id > first {
            body.push(',');
        }
        body.push_str(&super::contacts::record(id));
    }
    body.push_str("],\"next\":");
    if n < pages {
        let _ = write!(body, "\"/items/page-{}.json\"", n + 1);
    } else {
        body.push_str("null");
    }
    body.push('}');
    Some(body)
}

/// The fixed-window limiter, free of clocks: every method takes the time since the
/// server's creation, so the arithmetic can be tested without waiting.
struct Limiter {
    limit: u64,
    window: Duration,
    headers: LimitHeaders,
    retry_after: RetryAfter,
    /// Wall-clock time of the server's creation, since the Unix epoch.
    epoch: Duration,
    credentials: HashMap<String, Credential>,
}

#[derive(Default)]
struct Credential {
    window: u64,
    count: u64,
    /// Time since creation before which a 429 told this credential not to come back.
    not_before: Option<Duration>,
}

/// What the limiter made of one request.
#[derive(Debug, PartialEq, Eq)]
struct Decision {
    allowed: bool,
    window: u64,
    /// Requests left in this window after this one.
    remaining: u64,
    /// Time since creation at which this window ends.
    window_end: Duration,
    /// Time until this window ends.
    reset_in: Duration,
    /// `Retry-After` value, on a refusal when configured.
    retry_after: Option<String>,
}

impl Limiter {
    fn new(config: &LimitConfig, epoch: Duration) -> Self {
        Self {
            limit: config.limit,
            // A zero window would divide by zero; a nanosecond is as good as none.
            window: config.window.max(Duration::from_nanos(1)),
            headers: config.headers,
            retry_after: config.retry_after,
            epoch,
            credentials: HashMap::new(),
        }
    }

    /// Whether a request of `credential` at `now` ignored an earlier `Retry-After`.
    fn is_early(&self, credential: &str, now: Duration) -> bool {
        self.credentials
            .get(credential)
            .and_then(|c| c.not_before)
            .is_some_and(|t| now < t)
    }

    /// Counts a request of `credential` at `now` and decides whether it is allowed.
    fn decide(&mut self, credential: &str, now: Duration) -> Decision {
        let window_nanos = self.window.as_nanos();
        let index = now.as_nanos() / window_nanos;
        let window = u64::try_from(index).unwrap_or(u64::MAX);
        let window_end = from_nanos((index + 1) * window_nanos);
        let reset_in = window_end.saturating_sub(now);

        let state = self.credentials.entry(credential.to_string()).or_default();
        if state.window != window {
            state.window = window;
            state.count = 0;
        }
        state.count += 1;
        let allowed = state.count <= self.limit;
        let retry_after = if allowed {
            None
        } else {
            let told = match self.retry_after {
                RetryAfter::None => None,
                RetryAfter::Seconds => {
                    let secs = ceil_secs(reset_in);
                    Some((secs.to_string(), now + Duration::from_secs(secs)))
                }
                RetryAfter::HttpDate => {
                    // The date names a whole second; the client may come back at that
                    // second, which is at or after the window's end.
                    let unix = ceil_secs(self.epoch + window_end);
                    let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix));
                    Some((date, Duration::from_secs(unix).saturating_sub(self.epoch)))
                }
            };
            told.map(|(value, until)| {
                state.not_before = Some(state.not_before.map_or(until, |t| t.max(until)));
                value
            })
        };
        Decision {
            allowed,
            window,
            remaining: self.limit.saturating_sub(state.count),
            window_end,
            reset_in,
            retry_after,
        }
    }

    /// Rate-limit headers (lowercase names) for an answer to `decision`.
    fn headers(&self, decision: &Decision) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        match self.headers {
            LimitHeaders::None => {}
            LimitHeaders::XRateLimit => {
                headers.push(("x-ratelimit-limit", self.limit.to_string()));
                headers.push(("x-ratelimit-remaining", decision.remaining.to_string()));
                let reset = ceil_secs(self.epoch + decision.window_end);
                headers.push(("x-ratelimit-reset", reset.to_string()));
            }
            LimitHeaders::Ietf => {
                headers.push(("ratelimit-limit", self.limit.to_string()));
                headers.push(("ratelimit-remaining", decision.remaining.to_string()));
                headers.push(("ratelimit-reset", ceil_secs(decision.reset_in).to_string()));
            }
        }
        if let Some(value) = &decision.retry_after {
            headers.push(("retry-after", value.clone()));
        }
        headers
    }
}

/// Whole seconds in `d`, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn from_nanos(n: u128) -> Duration {
    let secs = u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is under 10^9, so it fits.
    Duration::new(secs, (n % 1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(headers: LimitHeaders, retry_after: RetryAfter, epoch: Duration) -> Limiter {
        let config = LimitConfig {
            limit: 2,
            window: Duration::from_millis(1500),
            headers,
            retry_after,
            ..LimitConfig::default()
        };
        Limiter::new(&config, epoch)
    }

    fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn limit_per_credential_and_window() {
        let mut l = limiter(LimitHeaders::Ietf, RetryAfter::Seconds, Duration::ZERO);
        let ms = Duration::from_millis;
        assert!(l.decide("a", ms(0)).allowed);
        assert!(l.decide("a", ms(100)).allowed);
        let refused = l.decide("a", ms(200));
        assert!(!refused.allowed);
        assert_eq!(refused.window, 0);
        assert_eq!(refused.remaining, 0);
        // 1300 ms left: two seconds, rounded up.
        assert_eq!(refused.retry_after.as_deref(), Some("2"));
        let h = l.headers(&refused);
        assert_eq!(header(&h, "ratelimit-reset"), Some("2"));
        assert_eq!(header(&h, "ratelimit-limit"), Some("2"));
        assert_eq!(header(&h, "retry-after"), Some("2"));
        // Another credential has its own count.
        assert!(l.decide("b", ms(300)).allowed);
        // Told to wait until 2200 ms; the next window starts at 1500 ms.
        assert!(l.is_early("a", ms(1600)));
        assert!(!l.is_early("b", ms(1600)));
        let next = l.decide("a", ms(1600));
        assert!(next.allowed);
        assert_eq!(next.window, 1);
        assert_eq!(next.remaining, 1);
        assert!(!l.is_early("a", ms(2200)));
    }

    #[test]
    fn x_ratelimit_reset_and_http_date() {
        // Created at Unix time 1000.25 s: window 0 ends at 1001.75 s.
        let epoch = Duration::from_millis(1_000_250);
        let mut l = limiter(LimitHeaders::XRateLimit, RetryAfter::HttpDate, epoch);
        let ms = Duration::from_millis;
        let first = l.decide("a", ms(10));
        let h = l.headers(&first);
        assert_eq!(header(&h, "x-ratelimit-reset"), Some("1002"));
        assert_eq!(header(&h, "x-ratelimit-remaining"), Some("1"));
        assert_eq!(header(&h, "retry-after"), None);
        l.decide("a", ms(20));
        let refused = l.decide("a", ms(30));
        let expected = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(1002));
        assert_eq!(refused.retry_after.as_deref(), Some(expected.as_str()));
        // The date's instant is 1002 s, 1750 ms after creation.
        assert!(l.is_early("a", ms(1749)));
        assert!(!l.is_early("a", ms(1750)));
    }

    #[test]
    fn ceil_and_pages() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        let config = LimitConfig {
            records: 25,
            page_size: 10,
            ..LimitConfig::default()
        };
        let last = page_body(&config, "page-3.json").unwrap();
        assert!(last.ends_with("],\"next\":null}"));
        assert!(last.contains("\"id\":25,"));
        let first = page_body(&config, "page-1.json").unwrap();
        assert!(first.ends_with("\"next\":\"/items/page-2.json\"}"));
        assert_eq!(page_body(&config, "page-4.json"), None);
        assert_eq!(page_body(&config, "page-0.json"), None);
    }
}
