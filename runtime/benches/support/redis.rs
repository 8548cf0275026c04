//! What the Redis benches share.

/// Deletes every key under `prefix` on the Redis at `url` (what a bench run left behind).
pub(crate) fn remove_prefix(url: &str, prefix: &str) {
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap_or_default();
    for chunk in keys.chunks(1000) {
        let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(chunk).query(&mut conn);
    }
}
