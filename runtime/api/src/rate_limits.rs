//! The `RateLimits` service: the node's limiter state, read-only.

use sluice_engine::Engine;
use tonic::{Request, Response, Status};

use crate::pb::rate_limits_server::RateLimits;
use crate::pb::{Breaker, ListRateLimitsRequest, ListRateLimitsResponse, RateLimitKey};

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
        let r = request.get_ref();
        let limiter = self.engine.limiter();
        let keys = limiter
            .keys()
            .into_iter()
            .filter(|k| r.connector.is_empty() || *k.key.connector == *r.connector)
            .filter(|k| r.credential.is_empty() || *k.key.credential == *r.credential)
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
            .map(|b| Breaker {
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
