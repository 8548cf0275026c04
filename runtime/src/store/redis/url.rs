//! Where the store connects: a store URL parsed into the nodes to start from, whether they form
//! a cluster, and the key prefix; shown with any password hidden.

use crate::error::{Error, Result};
use crate::store::redact_url;

/// Where the store connects, parsed from `redis://…` or `redis-cluster://host:port,host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// One URL per node to start from (one unless it is a cluster).
    pub(super) nodes: Vec<String>,
    pub(super) cluster: bool,
    pub(super) prefix: String,
    /// Whose clock leases are measured by.
    pub(super) clock: LeaseClock,
    /// How many replicas must have an enqueue before it is acknowledged (`WAIT`), and how
    /// long to wait for them: none by default.
    pub(super) replicas: Option<(u32, u64)>,
}

/// Whose clock a Redis store measures leases by: when a claim's or a heartbeat's lease ends,
/// and whether it has ended when running jobs are taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaseClock {
    /// Redis's own (`TIME` in the scripts), the same for every process: an observer whose
    /// clock runs ahead takes back no live job, a worker whose clock runs behind holds no lease
    /// longer than asked. The default.
    #[default]
    Redis,
    /// The `now` each call passes, as the memory and SQLite stores do (`?clock=caller`): for
    /// tests that simulate time. Every process's clock must then agree.
    Caller,
}

impl RedisUrl {
    /// Parses a store URL. `?prefix=NAME` sets the key prefix (default `raindrop`),
    /// `?clock=caller` the [`LeaseClock`] (default `redis`).
    pub fn parse(url: &str) -> Result<Self> {
        let (url, query) = url.split_once('?').unwrap_or((url, ""));
        let mut prefix = "raindrop".to_owned();
        let mut clock = LeaseClock::default();
        let (mut replicas, mut replica_timeout_ms) = (None, 1000);
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("clock", "redis")) => clock = LeaseClock::Redis,
                Some(("clock", "caller")) => clock = LeaseClock::Caller,
                Some(("replicas", n)) => {
                    replicas = Some(n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Error::Config(format!("`replicas={n}`: a number of replicas, at least 1"))
                    })?);
                }
                Some(("replica_timeout_ms", ms)) => {
                    replica_timeout_ms = ms.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                        Error::Config(format!(
                            "`replica_timeout_ms={ms}`: milliseconds, at least 1"
                        ))
                    })?;
                }
                Some(("clock", other)) => {
                    return Err(Error::Config(format!(
                        "the Redis lease clock is `redis` or `caller`, not `{other}`"
                    )));
                }
                Some(("prefix", value)) if !value.is_empty() && !value.contains(['{', '}']) => {
                    prefix = value.to_owned();
                }
                Some(("prefix", _)) => {
                    return Err(Error::Config(
                        "the Redis key prefix must be non-empty and free of `{` and `}`".into(),
                    ));
                }
                _ => rest.push(pair),
            }
        }
        let query = if rest.is_empty() {
            String::new()
        } else {
            format!("?{}", rest.join("&"))
        };
        let replicas = replicas.map(|n| (n, replica_timeout_ms));
        if let Some(hosts) = url.strip_prefix("redis-cluster://") {
            if replicas.is_some() {
                return Err(Error::Config(
                    "`replicas=` needs one Redis with replicas: on a cluster, WAIT would go to a node that did not take the write"
                        .into(),
                ));
            }
            let hosts = hosts.trim_end_matches('/');
            let (auth, hosts) = match hosts.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), hosts),
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{auth}{h}{query}"))
                .collect();
            if nodes.is_empty() {
                return Err(Error::Config(
                    "a Redis Cluster URL names at least one node: redis-cluster://HOST:PORT,…"
                        .into(),
                ));
            }
            return Ok(Self {
                nodes,
                cluster: true,
                prefix,
                clock,
                replicas,
            });
        }
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://"))
        {
            return Err(Error::Config(format!(
                "`{}` is not a Redis URL",
                redact_url(url)
            )));
        }
        Ok(Self {
            nodes: vec![format!("{url}{query}")],
            cluster: false,
            prefix,
            clock,
            replicas,
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL with any password hidden, for messages and logs.
    pub fn redacted(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| redact_url(n)).collect();
        if self.cluster {
            format!("cluster {}", nodes.join(","))
        } else {
            nodes.join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_follow_redis_unless_the_url_says_caller() {
        let url = |s: &str| RedisUrl::parse(s).unwrap();
        assert_eq!(url("redis://h:1?prefix=p").clock, LeaseClock::Redis);
        let caller = url("redis://h:1?prefix=p&clock=caller");
        assert_eq!((caller.clock, caller.prefix()), (LeaseClock::Caller, "p"));
        assert_eq!(caller.nodes, vec!["redis://h:1".to_owned()]);
        assert_eq!(
            url("redis-cluster://a:1,b:2?clock=caller").clock,
            LeaseClock::Caller
        );
        let err = RedisUrl::parse("redis://h:1?clock=local").unwrap_err();
        assert!(err.to_string().contains("`redis` or `caller`"), "{err}");
    }

    #[test]
    fn replicas_are_an_opt_in_of_a_single_redis() {
        let url = |s: &str| RedisUrl::parse(s).unwrap();
        assert_eq!(url("redis://h:1").replicas, None);
        assert_eq!(url("redis://h:1?replicas=2").replicas, Some((2, 1000)));
        let both = url("redis://h:1?replica_timeout_ms=50&replicas=1&prefix=p");
        assert_eq!((both.replicas, both.prefix()), (Some((1, 50)), "p"));
        assert_eq!(both.nodes, vec!["redis://h:1".to_owned()]);
        for bad in [
            "redis://h:1?replicas=0",
            "redis://h:1?replicas=x",
            "redis-cluster://a:1?replicas=1",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
