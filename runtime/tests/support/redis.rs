#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of it
//! Redis for tests: find the server (or skip, or fail when CI requires it), give each test its
//! own key prefix and remove its keys afterwards, and start throwaway servers and clusters.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Redis tests use: `RAINDROP_TEST_REDIS`, else the local default.
pub fn url() -> String {
    std::env::var("RAINDROP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether Redis tests must run: CI sets `RAINDROP_REQUIRE_REDIS=1` so that a missing Redis
/// fails them instead of skipping them.
pub fn required() -> bool {
    std::env::var("RAINDROP_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

fn ping(url: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    redis::cmd("PING").query::<String>(&mut conn).map(drop)
}

/// The Redis URL if one answers. Without one, panics when Redis is required and otherwise
/// prints a notice and returns `None` (the caller skips).
pub fn available() -> Option<String> {
    let url = url();
    match ping(&url) {
        Ok(()) => Some(url),
        Err(err) if required() => {
            panic!("RAINDROP_REQUIRE_REDIS=1 but Redis at {url} does not answer: {err}")
        }
        Err(err) => {
            eprintln!(
                "note: skipping Redis tests: no Redis at {url} ({err}); start redis-server or set RAINDROP_TEST_REDIS"
            );
            None
        }
    }
}

/// A key prefix of one test on one Redis (or cluster); its keys are removed on drop.
#[derive(Debug)]
pub struct Prefix {
    nodes: Vec<String>,
    store_url: String,
    prefix: String,
}

impl Prefix {
    /// A fresh prefix on the Redis at `url`.
    pub fn new(url: &str) -> Self {
        let prefix = format!("rdtest-{}", uuid::Uuid::now_v7().simple());
        Self {
            nodes: vec![url.to_owned()],
            store_url: format!("{url}?prefix={prefix}"),
            prefix,
        }
    }

    /// A fresh prefix on a cluster.
    pub fn on_cluster(cluster: &Cluster) -> Self {
        let prefix = format!("rdtest-{}", uuid::Uuid::now_v7().simple());
        let hosts: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        Self {
            nodes: cluster
                .ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect(),
            store_url: format!("redis-cluster://{}?prefix={prefix}", hosts.join(",")),
            prefix,
        }
    }

    /// The prefix itself, which the store puts before each of its keys.
    pub fn name(&self) -> &str {
        &self.prefix
    }

    /// The store URL with this prefix.
    pub fn store_url(&self) -> &str {
        &self.store_url
    }

    /// How many keys carry this prefix.
    pub fn key_count(&self) -> usize {
        self.keys().len()
    }

    /// The keys that carry this prefix.
    pub fn key_names(&self) -> std::collections::BTreeSet<String> {
        self.keys().into_iter().map(|(_, key)| key).collect()
    }

    fn keys(&self) -> Vec<(String, String)> {
        let mut keys = Vec::new();
        for node in &self.nodes {
            let Ok(mut conn) = redis::Client::open(node.as_str()).and_then(|c| c.get_connection())
            else {
                continue;
            };
            let iter: redis::Iter<'_, String> = match redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter(&mut conn)
            {
                Ok(iter) => iter,
                Err(_) => continue,
            };
            let found: Vec<String> = iter.filter_map(Result::ok).collect();
            keys.extend(found.into_iter().map(|k| (node.clone(), k)));
        }
        keys
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        for (node, key) in self.keys() {
            if let Ok(mut conn) =
                redis::Client::open(node.as_str()).and_then(|c| c.get_connection())
            {
                let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(&key).query(&mut conn);
            }
        }
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A redis-server of the test's own, killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Server {
    /// Starts `redis-server` on `port` with `args`, its files in `dir`, and waits until it
    /// answers.
    pub fn start(port: u16, dir: &Path, args: &[&str]) -> Self {
        std::fs::create_dir_all(dir).expect("server dir");
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(dir)
            .arg("--save")
            .arg("")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (install the `redis-server` package)");
        let mut server = Self { child, port };
        server.wait_ready();
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        // A process we start has no readiness signal but its port: poll it, bounded.
        let deadline = Instant::now() + Duration::from_secs(20);
        while ping(&self.url()).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redis-server on {} exited at start: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it the way an operator would (SHUTDOWN, which writes its append-only file).
    pub fn stop(&mut self) {
        if let Ok(mut conn) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut conn);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port for a cluster node: its bus listens on the port + 10,000, so that one must be
/// free too and the port at most 55,535 (an ephemeral port may be higher, and a node on it
/// never starts).
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A three-master Redis Cluster on loopback, torn down on drop.
#[derive(Debug)]
pub struct Cluster {
    servers: Vec<Server>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts three `redis-server --cluster-enabled yes` and joins them with
    /// `redis-cli --cluster create`.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("cluster dir");
        let ports: Vec<u16> = (0..3).map(|_| free_cluster_port()).collect();
        let servers: Vec<Server> = ports
            .iter()
            .map(|port| {
                Server::start(
                    *port,
                    &dir.path().join(port.to_string()),
                    &["--cluster-enabled", "yes", "--appendonly", "no"],
                )
            })
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli (install the `redis-tools` package)");
        assert!(status.success(), "redis-cli --cluster create failed");
        // The nodes agree on the slot map a moment after the create returns: poll, bounded.
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in &ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
            loop {
                let info: String = client
                    .get_connection()
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c))
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not become ready"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self {
            servers,
            ports,
            _dir: dir,
        }
    }

    /// How many masters it has.
    pub fn len(&self) -> usize {
        self.servers.len()
    }
}
