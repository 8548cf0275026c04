//! The connection to Redis (one server or a cluster), how it is opened, whether Redis is
//! reachable, and the helpers every command goes through.
//!
//! This is the only place Redis errors become the crate's errors: a failed command is a store
//! error whose kind says whether Redis is unreachable, slow or refused ([`redis_err`]), and a
//! reply that does not decode is a corrupt one ([`store_err`], [`decode`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Script, ScriptInvocation, Value};

use super::url::RedisUrl;
use crate::error::{Error, Result, StoreErrorKind};

/// A connection to one Redis or to a cluster; cheap to clone, reconnects by itself.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Logs each outage once when it starts and once, with its length, when it ends.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    since: Mutex<Option<Instant>>,
}

impl Health {
    fn up(&self) {
        if self.down.load(Ordering::Relaxed) {
            let since = self.since.lock().unwrap_or_else(|p| p.into_inner()).take();
            self.down.store(false, Ordering::Relaxed);
            if let Some(since) = since {
                tracing::warn!(
                    outage_ms = since.elapsed().as_millis() as u64,
                    "Redis is reachable again after {:.1?}",
                    since.elapsed()
                );
            }
        }
    }

    fn failed(&self, err: &RedisError) {
        let connection = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout();
        if connection && !self.down.swap(true, Ordering::Relaxed) {
            *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            tracing::error!(error = %err, "Redis is unreachable; store operations fail and are retried until it is back");
        }
    }
}

/// The store's connection, with the health it logs.
pub(super) struct Redis {
    conn: Conn,
    health: Health,
}

impl Redis {
    /// Connects to the Redis (or cluster) `url` names and loads `scripts` (on a cluster, the
    /// first call on each node loads them there). An unreachable Redis is an error naming the
    /// URL (without its password).
    pub(super) async fn connect(url: &RedisUrl, scripts: &[&Script]) -> Result<Self> {
        let unreachable = |err: RedisError| {
            Error::Config(format!("cannot reach Redis at {}: {err}", url.redacted()))
        };
        let connect = async {
            if url.cluster {
                let client = redis::cluster::ClusterClient::builder(url.nodes.clone())
                    .connection_timeout(Duration::from_secs(5))
                    .response_timeout(Duration::from_secs(30))
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            } else {
                let client = redis::Client::open(url.nodes[0].as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(Duration::from_secs(30)))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(2));
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
        };
        let mut conn = match tokio::time::timeout(Duration::from_secs(15), connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) => return Err(unreachable(err)),
            Err(_) => {
                return Err(Error::Config(format!(
                    "cannot reach Redis at {}: no answer within 15 s",
                    url.redacted()
                )));
            }
        };
        if !url.cluster {
            for script in scripts {
                script.load_async(&mut conn).await.map_err(unreachable)?;
            }
        }
        Ok(Self {
            conn,
            health: Health::default(),
        })
    }

    /// The result of a command of `op`, noting whether Redis answered.
    fn check<T>(&self, op: &'static str, result: RedisResult<T>) -> Result<T> {
        match result {
            Ok(value) => {
                self.health.up();
                Ok(value)
            }
            Err(err) => {
                self.health.failed(&err);
                Err(redis_err(op, err))
            }
        }
    }

    /// Runs one command.
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        let result = cmd.query_async(&mut conn).await;
        self.check(op, result)
    }

    /// Runs `cmds` together: pipelined on one Redis; on a cluster, where a pipeline may not
    /// cross slots, each on its own, concurrently.
    pub(super) async fn many<T: redis::FromRedisValue + Send>(
        &self,
        op: &'static str,
        cmds: Vec<Cmd>,
    ) -> Result<Vec<T>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let result = match &self.conn {
            Conn::Single(_) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                let mut conn = self.conn.clone();
                pipe.query_async(&mut conn).await
            }
            Conn::Cluster(_) => {
                futures_util::future::try_join_all(cmds.iter().map(|cmd| {
                    let mut conn = self.conn.clone();
                    async move { cmd.query_async::<T>(&mut conn).await }
                }))
                .await
            }
        };
        self.check(op, result)
    }

    /// Calls a script (by SHA, loading it where it is missing).
    pub(super) async fn invoke<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        let result = invocation.invoke_async(&mut conn).await;
        self.check(op, result)
    }
}

/// A Redis failure of `op`, of the kind the error says.
fn redis_err(op: &'static str, err: RedisError) -> Error {
    Error::store(op, redis_kind(&err), err)
}

/// How a Redis error failed: unreachable, slow, refused, or a reply we cannot read.
fn redis_kind(err: &RedisError) -> StoreErrorKind {
    if err.is_timeout() {
        StoreErrorKind::Timeout
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        StoreErrorKind::Unavailable
    } else if matches!(
        err.kind(),
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
    ) {
        StoreErrorKind::Corrupt
    } else {
        StoreErrorKind::Refused
    }
}

/// A value read from Redis that does not decode: a record of the wrong shape.
pub(super) fn store_err(op: &'static str, err: impl std::fmt::Display) -> Error {
    Error::store(op, StoreErrorKind::Corrupt, err.to_string())
}

/// One item of a reply, read as a `T` (a reply of the wrong shape is corrupt).
pub(super) fn decode<T: redis::FromRedisValue>(op: &'static str, value: Value) -> Result<T> {
    redis::from_redis_value(value).map_err(|e| store_err(op, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_errors_say_whether_redis_is_down_or_refused() {
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(
            redis_err("claim", refused).store_kind(),
            Some(StoreErrorKind::Unavailable)
        );
        let slow: RedisError = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow").into();
        assert_eq!(
            redis_err("claim", slow).store_kind(),
            Some(StoreErrorKind::Timeout)
        );
        let garbled: RedisError = (redis::ErrorKind::UnexpectedReturnType, "not a list").into();
        assert_eq!(
            redis_err("claim", garbled).store_kind(),
            Some(StoreErrorKind::Corrupt)
        );
        let script: RedisError = (
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "script failed",
        )
            .into();
        assert_eq!(
            redis_err("claim", script).store_kind(),
            Some(StoreErrorKind::Refused)
        );
    }
}
