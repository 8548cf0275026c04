//! What the Redis benches share.

/// Deletes every key under `prefix` on the Redis at `url` (what a bench run left behind).
/// `SCAN`s rather than `KEYS`: after a run with millions of jobs, `KEYS` would block Redis for
/// seconds and hold every name in memory at once.
pub(crate) fn remove_prefix(url: &str, prefix: &str) {
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("redis");
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(10_000)
            .query(&mut conn)
        else {
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(&keys).query(&mut conn);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}
