//! Sluice's central rate limiter for connector HTTP.
//!
//! Every outbound request of every run on a node asks one [`Limiter`] for budget
//! on its [`Key`] — (connector, credential, endpoint) — so all runs that share a
//! credential share one budget, and higher-priority runs get it first. A key's
//! budget combines what is declared (a [`RateLimitRule`]: requests per interval,
//! requests in flight) with what the API says ([`Signals`]: `Retry-After`,
//! remaining/reset headers), and pauses after a throttle. Each credential has a
//! circuit breaker per host ([`Destination`]: the normalised host and port rules
//! and keys are matched by). The nodes of a cluster share each key's declared budget through a
//! [`BudgetSource`] ([`Limiter::share`]): a node sends only within the slots it
//! holds there, and pauses learned on one node reach the others.
//!
//! This crate decides who may send when; it never sends, never retries and never
//! reads a body. The host's egress does those.

mod breaker;
mod budget;
mod destination;
mod limiter;
mod rules;
mod shared;
mod signals;

pub use breaker::BreakerState;
pub use destination::Destination;
pub use limiter::{
    BreakerOpen, BreakerView, HostPass, Key, KeyStats, KeyView, Limiter, Permit, Saturated,
};
pub use rules::{
    BreakerSettings, MAX_REQUESTS_PER_INTERVAL, RateLimitRule, RateLimits, RuleError, matching,
    validate_rules,
};
pub use shared::{Ask, BudgetSource, Grant, Plan, Share, ShareSettings, SourceError, SyncFuture};
pub use signals::{MAX_HINT, Signals, retry_after};
