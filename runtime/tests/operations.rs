//! The operations face: the Prometheus exposition every role serves (`/metrics` with HELP on
//! every metric, histograms in the documented buckets, a counter for each outcome, `promtool
//! check metrics` clean), `/healthz` and `/readyz`; and the shipped dashboard and alert rules
//! use exactly the metrics Raindrop exports.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use raindrop::engine::{Engine, Settings};
use raindrop::event::EventKind;
use raindrop::feed::EventFollower;
use raindrop::operations::{BUCKETS, METRICS};
use raindrop::task::{JobContext, TaskError, handler_fn};

#[path = "support/promtool.rs"]
mod promtool;
mod support;
use support::{app, memory};

const MANIFEST: &str = r#"application "t" {
  service "api" {}
  queue "jobs" {
    max_attempts       = 2
    # Heartbeats every 200ms: a running job hears of its cancellation well within its timeout.
    visibility_timeout = "600ms"
    backoff {
      initial = "10ms"
      max     = "10ms"
    }
  }
  task "worker" {
    timeout = "1s"
  }
  observer "monitor" {}
}
"#;

/// The value of the sample `series` (name and labels exactly as rendered) in `scrape`.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_counted_and_the_scrape_passes_promtool() {
    // The recorder every process installs (the application binary does the same at startup).
    assert!(raindrop::operations::prometheus().is_some());
    let engine = Engine::builder(app(MANIFEST))
        .store(memory())
        .settings(Settings {
            observer_tick: Duration::from_millis(20),
            idle_poll: Duration::from_millis(20),
            ..Settings::default()
        })
        .task(
            "worker",
            handler_fn(|ctx: JobContext| async move {
                let action: String = ctx.payload()?;
                match action.as_str() {
                    "ok" => Ok(()),
                    "fail-once" if ctx.attempt() == 1 => Err(TaskError::retry("first try")),
                    "fail-once" => Ok(()),
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        Ok(())
                    }
                    // Runs until stopped: its cancellation ends it.
                    "block" => std::future::pending().await,
                    _ => Err(TaskError::abort("no")),
                }
            }),
        )
        .build()
        .unwrap();
    let mut events = EventFollower::from_now(engine.store().clone())
        .await
        .unwrap();
    let running = engine.start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(raindrop::operations::serve(
        listener,
        engine.clone(),
        async move { stopped.cancelled().await },
    ));
    let router = raindrop::service::Service::new(engine.clone(), "api")
        .unwrap()
        .router();
    let call = |method: &str, path: &str, body: &str| {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap();
        tower::ServiceExt::oneshot(router.clone(), request)
    };

    let queue = engine.queue("jobs").unwrap();
    let mut expected = Vec::new();
    for (action, end) in [
        ("ok", EventKind::Succeeded),
        ("fail-once", EventKind::Succeeded),
        ("slow", EventKind::DeadLettered),
        ("abort", EventKind::DeadLettered),
    ] {
        expected.push((queue.send(action).await.unwrap(), end));
    }
    let blocked = queue.send("block").await.unwrap();
    // Every event seen, so waiting for one does not lose another.
    let mut seen = BTreeSet::new();
    let mut wait = async |id, kind: EventKind| {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !seen.contains(&(id, format!("{kind:?}"))) {
                let event = events.next().await.unwrap();
                seen.insert((event.job, format!("{:?}", event.kind)));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("job {id} never got {kind:?}"));
    };
    wait(blocked, EventKind::Started).await;
    let cancel = call("POST", &format!("/v1/jobs/{blocked}/cancel"), "").await;
    assert!(cancel.unwrap().status().is_success());
    expected.push((blocked, EventKind::Cancelled));
    // A refused submission: a body that is not JSON.
    let refused = call("POST", "/v1/jobs", "{").await;
    assert_eq!(refused.unwrap().status(), 400);
    for (id, kind) in expected {
        wait(id, kind).await;
    }

    let http = reqwest::Client::new();
    let scrape = || async {
        let response = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    // The observer's gauges catch up on its next pass.
    let dead = r#"raindrop_queue_jobs{queue="jobs",state="dead"}"#;
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = scrape().await;
            if sample(&text, dead) == Some(2.0) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the observer publishes two dead letters");

    let qt = r#"{queue="jobs",task="worker"}"#;
    let counter = |name: &str, labels: &str| sample(&text, &format!("{name}{labels}"));
    assert_eq!(counter("raindrop_jobs_started_total", qt), Some(7.0));
    assert_eq!(counter("raindrop_jobs_succeeded_total", qt), Some(2.0));
    // fail-once's first attempt, slow's two, abort's one.
    assert_eq!(counter("raindrop_jobs_failed_total", qt), Some(4.0));
    // fail-once's and slow's first attempts.
    assert_eq!(counter("raindrop_jobs_retried_total", qt), Some(2.0));
    assert_eq!(counter("raindrop_jobs_timed_out_total", qt), Some(2.0));
    // The cancelled job stopped when told; no outcome was refused.
    assert_eq!(counter("raindrop_jobs_lease_lost_total", qt), Some(0.0));
    assert_eq!(
        counter("raindrop_jobs_dead_lettered_total", r#"{queue="jobs"}"#),
        Some(2.0)
    );
    assert_eq!(
        counter("raindrop_jobs_cancelled_total", r#"{queue="jobs"}"#),
        Some(1.0)
    );
    assert_eq!(
        counter(
            "raindrop_submissions_refused_total",
            r#"{reason="invalid_json"}"#
        ),
        Some(1.0)
    );
    // Histograms, not summaries: every documented bucket, and the +Inf one counts every
    // attempt that ended (two succeeded, four failed).
    let duration = "raindrop_job_duration_seconds";
    assert_eq!(counter(&format!("{duration}_count"), qt), Some(6.0));
    for le in BUCKETS
        .iter()
        .map(ToString::to_string)
        .chain(["+Inf".into()])
    {
        let series = format!(r#"{duration}_bucket{{queue="jobs",task="worker",le="{le}"}}"#);
        assert!(sample(&text, &series).is_some(), "no {series} in\n{text}");
    }
    assert_eq!(
        sample(
            &text,
            &format!(r#"{duration}_bucket{{queue="jobs",task="worker",le="+Inf"}}"#)
        ),
        Some(6.0)
    );
    assert!(!text.contains("quantile="), "no summaries:\n{text}");
    // HELP for every metric, and every metric is one of the documented ones.
    let known: BTreeSet<&str> = METRICS.iter().map(|m| m.name).collect();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(known.contains(name), "undocumented metric {name}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    promtool::check_metrics("the operations listener", &text);

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
    stop.cancel();
    server.await.unwrap().unwrap();
    running.shutdown().await;
}

/// The metric names an expression file (dashboard JSON, rules YAML) uses, without the
/// `_bucket`/`_count`/`_sum` series suffixes.
fn metrics_used(text: &str) -> BTreeSet<String> {
    let known: BTreeSet<&str> = METRICS.iter().map(|m| m.name).collect();
    let mut used = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("raindrop_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| known.contains(b)))
            .unwrap_or(name);
        used.insert(base.to_owned());
        rest = &tail[end..];
    }
    used
}

fn docs(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn the_dashboard_and_the_alert_rules_use_only_exported_metrics() {
    let known: BTreeSet<String> = METRICS.iter().map(|m| m.name.to_owned()).collect();
    let dashboard = std::fs::read_to_string(docs("docs/grafana/raindrop.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(!parsed["panels"].as_array().unwrap().is_empty());
    let rules = docs("docs/prometheus/alerts.yml");
    for (file, text) in [
        ("docs/grafana/raindrop.json", dashboard.clone()),
        (
            "docs/prometheus/alerts.yml",
            std::fs::read_to_string(&rules).unwrap(),
        ),
    ] {
        let used = metrics_used(&text);
        assert!(!used.is_empty(), "{file} uses no metric");
        let unknown: Vec<_> = used.difference(&known).collect();
        assert!(unknown.is_empty(), "{file} uses unexported {unknown:?}");
    }
    promtool::check_rules(&rules);
}

#[test]
fn the_metric_table_documents_every_metric() {
    let engine_md = std::fs::read_to_string(docs("runtime/src/docs/engine.md")).unwrap();
    for m in METRICS {
        assert!(
            engine_md.contains(&format!("| `{}` |", m.name)),
            "runtime/src/docs/engine.md's table lacks {}",
            m.name
        );
    }
}
