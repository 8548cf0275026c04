//! Alert rules end to end: `for` keeps a rule pending, a rule fires once and resolves once,
//! `workers_alive below 1` sees nobody pulling, and sinks deliver each firing and resolve to a
//! real HTTP server, retrying a refused delivery.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use raindrop::engine::{Engine, Roles, Settings};
use raindrop::event::Event;
use raindrop::job::now;
use raindrop::observer::{AlertState, ObserverHandler};
use raindrop::secret::Secret;
use tokio::sync::mpsc;

mod support;
use support::{app, memory, succeed};

/// Sends each alert the observer hears of as `name status`.
struct Collect(mpsc::UnboundedSender<String>);

#[async_trait]
impl ObserverHandler for Collect {
    async fn on_event(&self, _event: &Event) {}

    async fn on_alert(&self, alert: &AlertState) {
        let _ = self.0.send(format!("{} {}", alert.name, alert.status()));
    }
}

fn observer_only() -> Settings {
    Settings {
        roles: Roles {
            workers: false,
            ..Roles::ALL
        },
        observer_tick: Duration::from_secs(1),
        ..Settings::default()
    }
}

#[tokio::test(start_paused = true)]
async fn an_alert_fires_only_after_its_for_and_resolves_once() {
    let manifest = r#"application "t" {
  queue "jobs" {}
  task "worker" {}
  observer "monitor" {
    alert "backlog" {
      metric    = "queue_depth"
      threshold = 0
      for       = "1m"
      severity  = "critical"
    }
  }
}"#;
    let (sender, mut alerts) = mpsc::unbounded_channel();
    let engine = Engine::builder(app(manifest))
        .store(memory())
        .settings(observer_only())
        .task("worker", succeed())
        .observer("monitor", Collect(sender))
        .build()
        .unwrap();
    let job = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    let started = tokio::time::Instant::now();
    let running = engine.start().await.unwrap();

    // Half the `for`: the condition holds, the rule is pending, nothing fires.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(alerts.try_recv().is_err(), "fired before its `for`");
    assert!(engine.alerts().firing().is_empty());

    let fired = tokio::time::timeout(Duration::from_secs(60), alerts.recv())
        .await
        .expect("fires once the condition has held for a minute");
    assert_eq!(fired.as_deref(), Some("backlog firing"));
    assert!(started.elapsed() >= Duration::from_secs(60));
    let firing = engine.alerts().firing();
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].severity.as_str(), "critical");

    // Still over the threshold: no second firing.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(alerts.try_recv().is_err(), "fired twice");

    engine.store().cancel(job, now()).await.unwrap();
    let resolved = tokio::time::timeout(Duration::from_secs(5), alerts.recv())
        .await
        .expect("resolves once the queue is empty");
    assert_eq!(resolved.as_deref(), Some("backlog resolved"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(alerts.try_recv().is_err(), "resolved twice");
    assert!(engine.alerts().firing().is_empty());
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn workers_alive_below_one_fires_when_nobody_pulls_the_queue() {
    let manifest = r#"application "t" {
  queue "jobs" {}
  task "worker" {}
  observer "monitor" {
    alert "nobody-pulling" {
      metric     = "workers_alive"
      comparison = "below"
      threshold  = 1
      for        = "30s"
    }
  }
}"#;
    let store = memory();
    let workers = Engine::builder(app(manifest))
        .store(store.clone())
        .settings(Settings {
            roles: Roles {
                workers: true,
                scheduler: false,
                observer: false,
            },
            ..Settings::default()
        })
        .task("worker", succeed())
        .build()
        .unwrap();
    let (sender, mut alerts) = mpsc::unbounded_channel();
    let monitor = Engine::builder(app(manifest))
        .store(store)
        .settings(observer_only())
        .task("worker", succeed())
        .observer("monitor", Collect(sender))
        .build()
        .unwrap();
    let pool = workers.start().await.unwrap();
    // The pool announces itself before the monitor's first look.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let watching = monitor.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(alerts.try_recv().is_err(), "fired while a pool pulls");

    pool.shutdown().await;
    let fired = tokio::time::timeout(Duration::from_secs(60), alerts.recv())
        .await
        .expect("fires once nobody has pulled for 30s");
    assert_eq!(fired.as_deref(), Some("nobody-pulling firing"));
    assert_eq!(monitor.alerts().firing()[0].value, 0.0);
    watching.shutdown().await;
}

/// A monitor alone (no workers) with `rule` on queue "jobs", reporting to the returned channel.
fn monitor_with(rule: &str) -> (Engine, mpsc::UnboundedReceiver<String>) {
    let manifest = format!(
        "application \"t\" {{\n  queue \"jobs\" {{}}\n  task \"worker\" {{}}\n  observer \"monitor\" {{\n{rule}\n  }}\n}}"
    );
    let (sender, alerts) = mpsc::unbounded_channel();
    let engine = Engine::builder(app(&manifest))
        .store(memory())
        .settings(observer_only())
        .task("worker", succeed())
        .observer("monitor", Collect(sender))
        .build()
        .unwrap();
    (engine, alerts)
}

#[tokio::test(start_paused = true)]
async fn a_retry_rate_alert_fires_when_attempts_are_retried() {
    use raindrop::job::{JobError, NewJob, Payload};
    use raindrop::store::AfterFailure;
    let (engine, mut alerts) = monitor_with(
        "    alert \"retries\" {\n      metric    = \"retry_rate\"\n      threshold = 0\n      window    = \"1m\"\n    }",
    );
    let store = engine.store().clone();
    let running = engine.start().await.unwrap();
    // A job that succeeds at once is no retry.
    store
        .enqueue(vec![NewJob::new("jobs", "k", Payload::null())], now())
        .await
        .unwrap();
    let job = store
        .claim("jobs", "w", 1, Duration::from_secs(60), now())
        .await
        .unwrap()
        .remove(0);
    store
        .complete(job.id, job.lease_token().unwrap(), Payload::null(), now())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(alerts.try_recv().is_err(), "fired without a retry");

    let mut retried = NewJob::new("jobs", "k", Payload::null());
    retried.max_attempts = 3;
    store.enqueue(vec![retried], now()).await.unwrap();
    let job = store
        .claim("jobs", "w", 1, Duration::from_secs(60), now())
        .await
        .unwrap()
        .remove(0);
    let later = now() + chrono::Duration::hours(1);
    store
        .fail(
            job.id,
            job.lease_token().unwrap(),
            JobError::new("flaky"),
            AfterFailure::Retry { at: later },
            now(),
        )
        .await
        .unwrap();
    let fired = tokio::time::timeout(Duration::from_secs(10), alerts.recv())
        .await
        .expect("a retry raises the rate above 0");
    assert_eq!(fired.as_deref(), Some("retries firing"));
    let value = engine.alerts().firing()[0].value;
    assert!(
        (value - 1.0 / 60.0).abs() < 1e-9,
        "one retry in a minute: {value}"
    );
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_wait_p99_alert_fires_when_an_attempt_started_long_after_it_was_due() {
    use raindrop::job::{NewJob, Payload};
    let (engine, mut alerts) = monitor_with(
        "    alert \"slow-start\" {\n      metric    = \"wait_p99\"\n      threshold = 60\n      window    = \"5m\"\n    }",
    );
    let store = engine.store().clone();
    let running = engine.start().await.unwrap();
    // Started as soon as it was due: no alert.
    store
        .enqueue(vec![NewJob::new("jobs", "k", Payload::null())], now())
        .await
        .unwrap();
    store
        .claim("jobs", "w", 1, Duration::from_secs(60), now())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        alerts.try_recv().is_err(),
        "fired for a job that did not wait"
    );

    // Due two hours ago, started now.
    let mut late = NewJob::new("jobs", "k", Payload::null());
    late.run_at = Some(now() - chrono::Duration::hours(2));
    store.enqueue(vec![late], now()).await.unwrap();
    store
        .claim("jobs", "w", 1, Duration::from_secs(60), now())
        .await
        .unwrap();
    let fired = tokio::time::timeout(Duration::from_secs(10), alerts.recv())
        .await
        .expect("a two-hour wait is over a minute");
    assert_eq!(fired.as_deref(), Some("slow-start firing"));
    let value = engine.alerts().firing()[0].value;
    assert!(value >= 7_199.0, "the p99 wait is the late job's: {value}");
    running.shutdown().await;
}

/// One request the receiver got: its path, signature header and JSON body.
type Received = (String, Option<String>, serde_json::Value);

/// An HTTP server on 127.0.0.1:0 that records every POST; the first request to `/json` is
/// answered 503, so the sink must retry it.
async fn receiver() -> (
    std::net::SocketAddr,
    Arc<Mutex<Vec<Received>>>,
    mpsc::UnboundedReceiver<()>,
) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};

    type Shared = (
        Arc<Mutex<Vec<Received>>>,
        mpsc::UnboundedSender<()>,
        Arc<Mutex<bool>>,
    );
    async fn hook(
        State((log, ping, refused)): State<Shared>,
        Path(path): Path<String>,
        headers: HeaderMap,
        body: String,
    ) -> StatusCode {
        let signature = headers
            .get("x-raindrop-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        log.lock().unwrap().push((path.clone(), signature, body));
        let _ = ping.send(());
        let mut refused = refused.lock().unwrap();
        if path == "json" && !*refused {
            *refused = true;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        StatusCode::ACCEPTED
    }

    let log = Arc::new(Mutex::new(Vec::new()));
    let (ping, pings) = mpsc::unbounded_channel();
    let router = axum::Router::new()
        .route("/hook/{path}", axum::routing::post(hook))
        .with_state((log.clone(), ping, Arc::new(Mutex::new(false))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, log, pings)
}

fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn sinks_receive_one_firing_and_one_resolve_each_over_http() {
    let (addr, log, mut pings) = receiver().await;
    let manifest = format!(
        r#"application "t" {{
  env "HOOK_SECRET" {{
    secret = true
  }}
  env "PD_ROUTING_KEY" {{
    secret = true
  }}
  queue "jobs" {{}}
  task "worker" {{}}
  observer "monitor" {{
    alert "backlog" {{
      metric    = "queue_depth"
      threshold = 0
      severity  = "error"
    }}
    sink "hook" {{
      url        = "http://{addr}/hook/json"
      secret_env = "HOOK_SECRET"
      auth       = "hmac"
    }}
    sink "chat" {{
      url    = "http://{addr}/hook/slack"
      format = "slack"
    }}
    sink "pager" {{
      url        = "http://{addr}/hook/pagerduty"
      format     = "pagerduty"
      secret_env = "PD_ROUTING_KEY"
    }}
  }}
}}"#
    );
    let engine = Engine::builder(app(&manifest))
        .store(memory())
        .settings(Settings {
            observer_tick: Duration::from_millis(20),
            ..observer_only()
        })
        .secret("HOOK_SECRET", Secret::new("s3cret"))
        .secret("PD_ROUTING_KEY", Secret::new("R0UTING"))
        .task("worker", succeed())
        .build()
        .unwrap();
    let job = engine.queue("jobs").unwrap().send(&1).await.unwrap();
    let running = engine.start().await.unwrap();
    let wait_for = |count: usize| {
        let log = log.clone();
        async move { log.lock().unwrap().len() >= count }
    };
    // Firing: 503 then accepted on /json, once on each of the others.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !wait_for(4).await {
            pings.recv().await;
        }
    })
    .await
    .expect("every sink hears of the firing");
    engine.store().cancel(job, now()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !wait_for(7).await {
            pings.recv().await;
        }
    })
    .await
    .expect("every sink hears of the resolve");
    running.shutdown().await;

    let log = log.lock().unwrap().clone();
    let of = |path: &str| -> Vec<(Option<String>, serde_json::Value)> {
        log.iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, s, b)| (s.clone(), b.clone()))
            .collect()
    };
    let json = of("json");
    assert_eq!(
        json.len(),
        3,
        "refused once, then firing and resolve: {json:?}"
    );
    assert_eq!(
        json[0].1, json[1].1,
        "the refused delivery is retried as it was"
    );
    assert_eq!(json[1].1["status"], "firing");
    assert_eq!(json[2].1["status"], "resolved");
    assert_eq!(json[1].1["alert"], "backlog");
    assert_eq!(json[1].1["severity"], "error");
    assert_eq!(json[1].1["value"], 1.0);
    for (signature, body) in &json {
        let expected = hmac_sha256_hex(b"s3cret", body.to_string().as_bytes());
        assert_eq!(
            signature.as_deref(),
            Some(format!("sha256={expected}").as_str())
        );
    }

    let slack = of("slack");
    assert_eq!(slack.len(), 2);
    let text = |i: usize| slack[i].1["text"].as_str().unwrap().to_owned();
    assert!(
        text(0).contains("FIRING backlog on queue jobs"),
        "{}",
        text(0)
    );
    assert!(text(1).contains("RESOLVED backlog"), "{}", text(1));

    let pager = of("pagerduty");
    assert_eq!(pager.len(), 2);
    assert_eq!(pager[0].1["event_action"], "trigger");
    assert_eq!(pager[1].1["event_action"], "resolve");
    assert_eq!(pager[0].1["routing_key"], "R0UTING");
    assert_eq!(pager[0].1["payload"]["severity"], "error");
    assert_eq!(pager[0].1["dedup_key"], pager[1].1["dedup_key"]);
    assert_eq!(pager[0].1["dedup_key"], "raindrop/monitor/backlog/jobs");
}
