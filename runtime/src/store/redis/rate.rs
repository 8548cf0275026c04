//! Rate limits shared by every process on the Redis: a bucket per key (`P:rate:{KEY}`), taken
//! from by `rate.lua` with the same arithmetic as the in-process buckets (`store/rate.rs`).

use std::time::Duration;

use async_trait::async_trait;

use super::RedisStore;
use crate::error::Result;
use crate::job::Timestamp;
use crate::store::RateLimits;
use crate::store::rate::{Decision, Limit, micros_of};

#[async_trait]
impl RateLimits for RedisStore {
    async fn take_token(&self, key: &str, limit: &Limit, now: Timestamp) -> Result<Decision> {
        let bucket = self.shared.keys.rate_bucket(key);
        let mut invocation = self.shared.scripts.rate.key(bucket);
        invocation
            .arg(micros_of(now))
            .arg(limit.interval_us())
            .arg(limit.burst.max(1));
        let (allowed, remaining, retry_after, reset): (u8, u64, u64, u64) =
            self.shared.redis.invoke("rate limit", &invocation).await?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: limit.burst,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: Duration::from_micros(reset),
            retry_after: Duration::from_micros(retry_after),
        })
    }
}
