//! The `RateLimits` service: the node's limiter state, read-only.
//!
//! A token limited to tenants sees only the keys of its tenants' connections'
//! credentials (and anonymous keys of the connectors they use), and the breakers of
//! those credentials (and anonymous breakers of their allowed hosts): another
//! tenant's credentials stay hidden.

use std::collections::HashSet;

use sluice_engine::Engine;
use tonic::{Request, Response, Status};

use crate::auth::caller;
use crate::pb::rate_limits_server::RateLimits;
use crate::pb::{Breaker, ListRateLimitsRequest, ListRateLimitsResponse, RateLimitKey};
use crate::status;

/// What of the limiter a caller limited to tenants may see.
struct Seen {
    credentials: HashSet<String>,
    connectors: HashSet<String>,
    hosts: HashSet<String>,
}

impl Seen {
    fn key(&self, connector: &str, credential: &str) -> bool {
        self.credentials.contains(credential)
            || (credential == ANONYMOUS && self.connectors.contains(connector))
    }

    /// A breaker is a credential's: its own, or an anonymous one of a host its
    /// connections may reach.
    fn breaker(&self, credential: &str, host: &str) -> bool {
        self.credentials.contains(credential) || (credential == ANONYMOUS && self.host(host))
    }

    fn host(&self, host: &str) -> bool {
        let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
        self.hosts.contains(host) || self.hosts.contains(bare)
    }
}

/// The credential label of requests no credential makes.
const ANONYMOUS: &str = "anonymous";

pub(crate) struct RateLimitsApi {
    pub engine: Engine,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl RateLimits for RateLimitsApi {
    async fn list_rate_limits(
        &self,
        request: Request<ListRateLimitsRequest>,
    ) -> Result<Response<ListRateLimitsResponse>, Status> {
        let caller = caller(&request);
        let r = request.get_ref();
        let seen = if caller.limited() {
            let mine: Vec<_> = self
                .engine
                .connections()
                .await
                .map_err(status::of)?
                .into_iter()
                .filter(|c| caller.sees(&c.tenant))
                .collect();
            Some(Seen {
                credentials: mine.iter().map(|c| self.engine.credential_of(c)).collect(),
                connectors: mine.iter().map(|c| c.connector.clone()).collect(),
                hosts: mine.iter().flat_map(|c| c.allowed_hosts.clone()).collect(),
            })
        } else {
            None
        };
        let limiter = self.engine.limiter();
        let keys = limiter
            .keys()
            .into_iter()
            .filter(|k| r.connector.is_empty() || *k.key.connector == *r.connector)
            .filter(|k| r.credential.is_empty() || *k.key.credential == *r.credential)
            .filter(|k| {
                seen.as_ref()
                    .is_none_or(|s| s.key(&k.key.connector, &k.key.credential))
            })
            .map(|k| {
                let (window_used, window_limit) = k.window.unwrap_or((0, 0));
                RateLimitKey {
                    connector: k.key.connector.to_string(),
                    credential: k.key.credential.to_string(),
                    endpoint: k.key.endpoint.to_string(),
                    requests: k.stats.requests,
                    throttled: k.stats.throttled,
                    waits: k.stats.waits,
                    wait_seconds: k.stats.wait_time.as_secs_f64(),
                    saturated: k.stats.saturated,
                    in_flight: k.in_flight,
                    waiting: u32::try_from(k.waiting).unwrap_or(u32::MAX),
                    window_used,
                    window_limit,
                    learned_left: k
                        .learned_left
                        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)),
                    paused_ms: k.paused_for.map_or(0, millis),
                }
            })
            .collect();
        let breakers = limiter
            .breaker_views()
            .into_iter()
            .filter(|b| {
                seen.as_ref()
                    .is_none_or(|s| s.breaker(&b.credential, &b.host))
            })
            .map(|b| Breaker {
                credential: b.credential,
                host: b.host,
                state: b.state.to_owned(),
                failures: b.failures,
                opened: b.opened,
                open_ms: b.open_for.map_or(0, millis),
            })
            .collect();
        Ok(Response::new(ListRateLimitsResponse { keys, breakers }))
    }
}
