//! The job API's production switches: API keys with scopes, tenant isolation and the per-key
//! rate limit, driven through the router in process.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use raindrop::engine::Engine;
use raindrop::service::{ApiKeys, Service};
use raindrop::store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

mod support;
use support::{app, memory, succeed};

const ACME: &str = "acme-submit-read-0123456789";
const GLOBEX: &str = "globex-submit-read-0123456789";
const READER: &str = "acme-read-only-0123456789";
const ADMIN: &str = "ops-admin-0123456789";

fn keys() -> ApiKeys {
    ApiKeys::parse(&format!(
        "acme:submit,read:{ACME}; globex:submit,read:{GLOBEX}; acme:read:{READER}; ops:admin:{ADMIN}"
    ))
    .unwrap()
}

fn router(manifest_service: &str) -> axum::Router {
    router_and_store(manifest_service).0
}

/// An engine (memory store) whose service block `api` has `manifest_service` in it.
fn engine(manifest_service: &str) -> (Engine, Arc<dyn Store>) {
    let app = app(&format!(
        "application \"t\" {{\n  service \"api\" {{\n{manifest_service}\n  }}\n  queue \"jobs\" {{}}\n  task \"worker\" {{}}\n  kv_cache \"status\" {{}}\n}}\n"
    ));
    let store = memory();
    let engine = Engine::builder(app)
        .store(store.clone())
        .task("worker", succeed())
        .build()
        .unwrap();
    (engine, store)
}

fn router_and_store(manifest_service: &str) -> (axum::Router, Arc<dyn Store>) {
    let (engine, store) = engine(manifest_service);
    let router = Service::new(engine, "api")
        .unwrap()
        .api_keys(keys())
        .router();
    (router, store)
}

#[test]
fn api_key_auth_without_its_variable_stops_startup_with_its_name() {
    let (engine, _) =
        engine("    auth = \"api_key\"\n    api_keys_env = \"RAINDROP_TEST_UNSET_KEYS\"");
    let err = Service::new(engine, "api").unwrap_err().to_string();
    assert!(
        err.contains("`RAINDROP_TEST_UNSET_KEYS` is not set"),
        "{err}"
    );
}

async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    call_from(router, None, &[], method, path, key, body).await
}

/// [`call`] as a client at `peer` (what `Service::serve` records of a connection), with extra
/// `headers`.
async fn call_from(
    router: &axum::Router,
    peer: Option<[u8; 4]>,
    headers: &[(&str, &str)],
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let post = method == Method::POST;
    let mut request = Request::builder().method(method).uri(path);
    if let Some(peer) = peer {
        let peer = std::net::SocketAddr::from((peer, 40_000));
        request = request.extension(axum::extract::ConnectInfo(peer));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    // A client of the JSON API sends its POSTs as JSON, with a body or without.
    if body.is_some() || post {
        request = request.header("content-type", "application/json");
    }
    let request = match body {
        Some(body) => request.body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (parts.status, parts.headers, value)
}

async fn submit(router: &axum::Router, key: &str) -> String {
    let (status, _, body) = call(
        router,
        Method::POST,
        "/v1/jobs",
        Some(key),
        Some(json!({ "payload": { "n": 1 } })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Every route that needs a key, with a body where it takes one.
fn guarded_routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    let job = json!({ "payload": { "n": 1 } });
    vec![
        (Method::POST, "/v1/jobs".into(), Some(job.clone())),
        (Method::GET, "/v1/jobs".into(), None),
        (
            Method::POST,
            "/v1/jobs/batch".into(),
            Some(json!({ "jobs": [job] })),
        ),
        (Method::GET, format!("/v1/jobs/{id}"), None),
        (Method::GET, format!("/v1/jobs/{id}/events"), None),
        (Method::POST, format!("/v1/jobs/{id}/cancel"), None),
        (Method::GET, "/v1/queues".into(), None),
        (Method::GET, "/v1/workers".into(), None),
        (Method::POST, "/v1/queues/jobs/pause".into(), None),
        (Method::POST, "/v1/queues/jobs/resume".into(), None),
        (Method::GET, "/v1/dead-letters".into(), None),
        (Method::DELETE, "/v1/dead-letters".into(), None),
        (Method::POST, format!("/v1/dead-letters/{id}/retry"), None),
        (Method::GET, "/metrics".into(), None),
    ]
}

#[tokio::test]
async fn every_guarded_route_refuses_a_missing_or_wrong_key() {
    let router = router("");
    let id = submit(&router, ACME).await;
    for (n, (method, path, body)) in guarded_routes(&id).into_iter().enumerate() {
        for key in [None, Some("not-a-key-0123456789")] {
            // Each route asked from its own address: wrong keys from one are limited.
            let peer = Some([192, 0, 2, u8::try_from(n).unwrap()]);
            let (status, headers, error) =
                call_from(&router, peer, &[], method.clone(), &path, key, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {key:?}");
            assert_eq!(error["code"], "unauthorized", "{method} {path}");
            assert!(headers.contains_key("www-authenticate"));
            assert!(!error.to_string().contains("not-a-key"), "{error}");
        }
    }
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let (status, _, _) = call(&router, Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path} stays open for probes");
    }
    let (status, _, _) = call(&router, Method::GET, "/v1/queues", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // `X-API-Key` works as well as a bearer token.
    let request = Request::get("/v1/queues")
        .header("x-api-key", ACME)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        router.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn scopes_decide_what_a_key_may_do() {
    let router = router("");
    let id = submit(&router, ACME).await;
    // Read-only: reads, but no submissions or cancellations.
    let (status, _, error) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        Some(READER),
        Some(json!({ "payload": {} })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error["code"], "forbidden");
    assert!(error["message"].as_str().unwrap().contains("`submit`"));
    let (status, _, _) = call(
        &router,
        Method::GET,
        &format!("/v1/jobs/{id}"),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "same tenant, read scope");
    let (status, _, _) = call(
        &router,
        Method::POST,
        &format!("/v1/jobs/{id}/cancel"),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Admin-only routes refuse tenants' keys.
    for (method, path) in [
        (Method::POST, "/v1/queues/jobs/pause"),
        (Method::POST, "/v1/queues/jobs/resume"),
        (Method::DELETE, "/v1/dead-letters"),
        (Method::GET, "/metrics"),
    ] {
        let (status, _, error) = call(&router, method.clone(), path, Some(ACME), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert!(error["message"].as_str().unwrap().contains("`admin`"));
        let (status, _, _) = call(&router, method.clone(), path, Some(ADMIN), None).await;
        assert_ne!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }
}

#[tokio::test]
async fn a_tenant_sees_follows_and_cancels_only_its_own_jobs() {
    let router = router("");
    let theirs = submit(&router, ACME).await;
    let mine = submit(&router, GLOBEX).await;
    for (method, path) in [
        (Method::GET, format!("/v1/jobs/{theirs}")),
        (Method::GET, format!("/v1/jobs/{theirs}/events")),
        (Method::POST, format!("/v1/jobs/{theirs}/cancel")),
        (Method::POST, format!("/v1/dead-letters/{theirs}/retry")),
    ] {
        let (status, _, error) = call(&router, method.clone(), &path, Some(GLOBEX), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {error}");
        assert_eq!(error["code"], "not_found");
    }
    let (_, _, page) = call(&router, Method::GET, "/v1/jobs", Some(GLOBEX), None).await;
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.as_str()]);
    let (_, _, own) = call(
        &router,
        Method::GET,
        &format!("/v1/jobs/{mine}"),
        Some(GLOBEX),
        None,
    )
    .await;
    assert_eq!(own["tenant"], "globex");
    // An admin sees every tenant's jobs, and may cancel them.
    let (_, _, all) = call(&router, Method::GET, "/v1/jobs", Some(ADMIN), None).await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2);
    let (status, _, _) = call(
        &router,
        Method::POST,
        &format!("/v1/jobs/{theirs}/cancel"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_headers_per_key() {
    let router =
        router("    rate_limit {\n      requests = 1\n      per = \"1m\"\n      burst = 3\n    }");
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let (status, headers, _) = call(&router, Method::GET, "/v1/queues", Some(ACME), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["ratelimit-limit"], "3");
        remaining.push(headers["ratelimit-remaining"].to_str().unwrap().to_owned());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let (status, headers, error) = call(&router, Method::GET, "/v1/queues", Some(ACME), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error["code"], "rate_limited");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(headers["ratelimit-remaining"], "0");
    // Another key has its own bucket; probes are never limited.
    let (status, _, _) = call(&router, Method::GET, "/v1/queues", Some(GLOBEX), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&router, Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Captures what is logged on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn keys_never_appear_in_logs_or_error_bodies() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let router =
        router("    rate_limit {\n      requests = 1\n      per = \"1m\"\n      burst = 1\n    }");
    let mut bodies = Vec::new();
    let id = submit(&router, ACME).await;
    for key in [ACME, ACME, "wrong-key-0123456789", READER, GLOBEX] {
        for (method, path, body) in guarded_routes(&id) {
            let (_, headers, body) = call(&router, method, &path, Some(key), body).await;
            bodies.push(format!("{headers:?} {body}"));
        }
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty(), "the requests were logged");
    for secret in [ACME, READER, GLOBEX, "wrong-key-0123456789"] {
        assert!(!logs.contains(secret), "a key is in the logs");
        assert!(
            bodies.iter().all(|b| !b.contains(secret)),
            "a key is in a response"
        );
    }
}

#[tokio::test]
async fn quotas_cap_waiting_jobs_and_payloads_and_clamp_priorities_per_tenant() {
    let (router, store) = router_and_store(
        "    quota {\n      max_queued = 2\n      max_payload = \"64B\"\n      min_priority = 0\n      max_priority = 5\n    }",
    );
    let job = |priority: i32| json!({ "payload": { "n": 1 }, "priority": priority });
    let (status, _, high) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        Some(ACME),
        Some(job(100)),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, _, low) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        Some(ACME),
        Some(job(-100)),
    )
    .await;
    let priority = |body: Value| {
        let store = store.clone();
        async move {
            let id = body["id"].as_str().unwrap().parse().unwrap();
            store.get(id).await.unwrap().unwrap().priority
        }
    };
    assert_eq!(priority(high).await, 5, "clamped down to max_priority");
    assert_eq!(priority(low).await, 0, "clamped up to min_priority");
    // Two waiting: a third is refused, for this tenant only.
    let (status, _, error) =
        call(&router, Method::POST, "/v1/jobs", Some(ACME), Some(job(0))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{error}");
    assert_eq!(error["code"], "quota_queued");
    let batch = json!({ "jobs": [job(0), job(0), job(0)] });
    let (status, _, error) = call(
        &router,
        Method::POST,
        "/v1/jobs/batch",
        Some(GLOBEX),
        Some(batch),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "a batch counts as a whole: {error}"
    );
    let (status, _, _) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        Some(GLOBEX),
        Some(job(0)),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "another tenant has its own quota"
    );
    let big = json!({ "payload": { "text": "x".repeat(100) } });
    let (status, _, error) = call(&router, Method::POST, "/v1/jobs", Some(GLOBEX), Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(error["code"], "quota_payload");
}

#[tokio::test]
async fn the_openapi_document_describes_authentication_when_it_is_on() {
    let router = router("    rate_limit {\n      requests = 100\n    }");
    let (status, _, doc) = call(&router, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    for (path, method) in [
        ("/v1/jobs", "post"),
        ("/v1/dead-letters", "delete"),
        ("/metrics", "get"),
    ] {
        let operation = &doc["paths"][path][method];
        for status in ["400", "401", "403", "429"] {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path} {status}"
            );
        }
        assert_eq!(operation["security"][0]["api_key"], json!([]));
    }
    assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());

    // Without keys the document promises no authentication.
    let (engine, _) = engine("");
    let open = Service::new(engine, "api").unwrap().router();
    let (_, _, doc) = call(&open, Method::GET, "/openapi.json", None, None).await;
    assert!(
        doc["components"]["securitySchemes"].is_null(),
        "{}",
        doc["components"]
    );
    let operation = &doc["paths"]["/v1/jobs"]["post"];
    assert!(operation["security"].is_null());
    assert!(operation["responses"]["401"].is_null());
    assert!(operation["responses"]["400"].is_object());
}

/// Serves the job API (keys off) on a loopback port with `limits`; returns its address.
async fn serve_with(limits: raindrop::service::ConnectionLimits) -> std::net::SocketAddr {
    let (engine, _) = engine("");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Service::new(engine, "api")
        .unwrap()
        .connection_limits(limits);
    tokio::spawn(service.serve(listener, std::future::pending()));
    addr
}

/// Everything the server sends on `stream` until it closes the connection.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    // A bound on a test that would otherwise hang, not a synchronisation.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes the connection")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let addr = serve_with(raindrop::service::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/jobs HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = read_to_close(&mut slow).await;
    assert!(
        !answer.contains("202"),
        "no request was made of a partial head: {answer}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    // Others are served meanwhile and after.
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn oversized_request_heads_are_refused_with_431() {
    use tokio::io::AsyncWriteExt;
    let addr = serve_with(raindrop::service::ConnectionLimits::default()).await;
    let big = "x".repeat(100 * 1024);
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_to_close(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_to_close(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test]
async fn shutdown_closes_event_streams_left_open_after_the_drain_period() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (engine, store) = engine("");
    let job = raindrop::job::NewJob::new(
        "jobs",
        "test",
        raindrop::job::Payload::from_value(&json!({})).unwrap(),
    );
    let id = job.id;
    store
        .enqueue(vec![job], raindrop::job::now())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Service::new(engine, "api")
            .unwrap()
            .connection_limits(raindrop::service::ConnectionLimits {
                drain: std::time::Duration::from_millis(200),
                ..Default::default()
            })
            .serve(listener, async move {
                let _ = stopped.await;
            }),
    );
    // Follow a job that will not end (no workers run).
    let mut follower = tokio::net::TcpStream::connect(addr).await.unwrap();
    follower
        .write_all(format!("GET /v1/jobs/{id}/events HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    follower.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    stop.send(()).unwrap();
    // A bound on a test that would otherwise hang, not a synchronisation.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    assert!(ended.is_ok(), "the server stops though a stream is open");
    assert!(ended.unwrap().unwrap().is_ok());
    let answer = read_to_close(&mut follower).await;
    assert!(!answer.contains("HTTP/1.1"), "{answer}");
}

/// Two queues served by one service: `small` takes payloads of 64 bytes at most and gives three
/// attempts of two seconds; `big` has no task working it.
fn two_queues() -> (axum::Router, Arc<dyn Store>) {
    let app = app(r#"application "t" {
  service "api" {}
  queue "small" {
    max_attempts = 3
    max_message_size = "64B"
  }
  queue "big" {}
  task "worker" {
    queue = "small"
    timeout = "2s"
  }
}"#);
    let store = memory();
    let engine = Engine::builder(app)
        .store(store.clone())
        .task("worker", succeed())
        .build()
        .unwrap();
    (Service::new(engine, "api").unwrap().router(), store)
}

#[tokio::test]
async fn a_submission_cannot_ask_for_more_time_or_attempts_than_the_manifest_allows() {
    let (router, store) = two_queues();
    let job = |extra: Value| {
        let mut job = json!({ "queue": "small", "payload": { "n": 1 } });
        job.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        job
    };
    for (asked, field, says) in [
        (
            json!({ "timeout_ms": 86_400_000_000u64 }),
            "timeout_ms",
            "at most 2000",
        ),
        (
            json!({ "timeout_ms": u64::MAX }),
            "timeout_ms",
            "at most 2000",
        ),
        (json!({ "timeout_ms": 0 }), "timeout_ms", "at least 1"),
        (
            json!({ "max_attempts": 1_000_000 }),
            "max_attempts",
            "at most 3",
        ),
        (json!({ "max_attempts": 0 }), "max_attempts", "at least 1"),
    ] {
        let (status, _, body) = call(
            &router,
            Method::POST,
            "/v1/jobs",
            None,
            Some(job(asked.clone())),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{asked}: {body}");
        assert_eq!(body["code"], "validation_failed", "{body}");
        let error = &body["details"]["fields"][0];
        assert_eq!(error["field"], field, "{body}");
        assert!(error["message"].as_str().unwrap().contains(says), "{body}");
    }
    // No task works `big`: it takes no timeout at all.
    let (status, _, body) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        None,
        Some(json!({ "queue": "big", "payload": 1, "timeout_ms": 10 })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Within the manifest's values, both are taken as asked.
    let (status, _, body) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        None,
        Some(job(json!({ "timeout_ms": 1500, "max_attempts": 2 }))),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().parse().unwrap();
    let stored = store.get(id).await.unwrap().unwrap();
    assert_eq!(stored.max_attempts, 2);
    assert_eq!(stored.timeout, Some(std::time::Duration::from_millis(1500)));
    let all = store
        .list(&raindrop::store::JobFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1, "only the job within bounds was stored");
}

#[tokio::test]
async fn a_batch_refused_for_one_queue_stores_no_job_of_another() {
    let (router, store) = two_queues();
    let too_big = "x".repeat(100);
    let (status, _, body) = call(
        &router,
        Method::POST,
        "/v1/jobs/batch",
        None,
        Some(json!({ "jobs": [
            { "queue": "big", "payload": { "n": 1 } },
            { "queue": "small", "payload": { "text": too_big } },
        ] })),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let all = store
        .list(&raindrop::store::JobFilter::default(), None, 10)
        .await
        .unwrap();
    assert!(
        all.items.is_empty(),
        "nothing of the refused batch was stored: {all:?}"
    );
}

#[tokio::test]
async fn a_service_does_not_reach_the_queues_of_another_service_sharing_its_store() {
    let app = app(r#"application "t" {
  service "alpha" {
    queues = ["a"]
  }
  service "beta" {
    queues = ["b"]
    listen = "127.0.0.1:8081"
  }
  queue "a" {}
  queue "b" {
    max_attempts = 1
  }
  task "worker-a" {
    queue = "a"
  }
  task "worker-b" {
    queue = "b"
  }
  kv_cache "status" {}
}"#);
    let store = memory();
    let engine = Engine::builder(app)
        .store(store.clone())
        .task("worker-a", succeed())
        .task("worker-b", succeed())
        .build()
        .unwrap();
    let alpha = Service::new(engine.clone(), "alpha").unwrap().router();
    let beta = Service::new(engine, "beta").unwrap().router();
    let submit = |router: axum::Router| async move {
        let (status, _, body) = call(
            &router,
            Method::POST,
            "/v1/jobs",
            None,
            Some(json!({ "payload": 1 })),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };
    let waiting = submit(beta.clone()).await;
    let dead = submit(beta.clone()).await;
    let own = submit(alpha.clone()).await;
    // Make `dead` a dead letter of queue b (no worker runs here).
    let claimed = store
        .claim(
            "b",
            "w",
            10,
            std::time::Duration::from_secs(30),
            raindrop::job::now(),
        )
        .await
        .unwrap();
    for job in claimed {
        let token = job.lease_token().unwrap();
        if job.id.to_string() == dead {
            let error = raindrop::job::JobError::new("boom");
            let then = raindrop::store::AfterFailure::Dead;
            store
                .fail(job.id, token, error, then, raindrop::job::now())
                .await
                .unwrap();
        } else {
            store
                .release(job.id, token, raindrop::job::now())
                .await
                .unwrap();
        }
    }

    for id in [&waiting, &dead] {
        for (method, path) in [
            (Method::GET, format!("/v1/jobs/{id}")),
            (Method::GET, format!("/v1/jobs/{id}/events")),
            (Method::POST, format!("/v1/jobs/{id}/cancel")),
            (Method::POST, format!("/v1/dead-letters/{id}/retry")),
        ] {
            let (status, _, body) = call(&alpha, method.clone(), &path, None, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        }
    }
    for path in ["/v1/jobs?queue=b", "/v1/dead-letters?queue=b"] {
        let (status, _, body) = call(&alpha, Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["code"], "unknown_queue", "{path}: {body}");
    }
    let (_, _, listed) = call(&alpha, Method::GET, "/v1/jobs", None, None).await;
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![own.as_str()], "alpha lists its own queue only");
    let (_, _, letters) = call(&alpha, Method::GET, "/v1/dead-letters", None, None).await;
    assert_eq!(letters["jobs"].as_array().unwrap().len(), 0, "{letters}");
    let (status, _, purged) = call(&alpha, Method::DELETE, "/v1/dead-letters", None, None).await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    let (status, _, body) = call(&alpha, Method::POST, "/v1/queues/b/pause", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Beta still has both of its jobs, the dead letter included.
    let (status, _, body) = call(&beta, Method::GET, &format!("/v1/jobs/{dead}"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "dead");
    let (status, _, _) = call(
        &beta,
        Method::GET,
        &format!("/v1/jobs/{waiting}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn headers_kind_and_the_idempotency_key_count_toward_the_size_limit() {
    let (router, store) = two_queues();
    let long = "h".repeat(100);
    for extra in [
        json!({ "headers": { "note": long } }),
        json!({ "kind": long }),
        json!({ "idempotency_key": long }),
    ] {
        let mut job = json!({ "queue": "small", "payload": 1 });
        job.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, _, body) = call(&router, Method::POST, "/v1/jobs", None, Some(job)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{extra}: {body}");
        assert_eq!(body["code"], "payload_too_large", "{body}");
    }
    let all = store
        .list(&raindrop::store::JobFilter::default(), None, 10)
        .await
        .unwrap();
    assert!(all.items.is_empty());
    // The same job without the extras fits.
    let (status, _, body) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        None,
        Some(json!({ "queue": "small", "payload": 1 })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn a_run_at_in_the_past_means_now() {
    let (router, store) = two_queues();
    let before = raindrop::job::now();
    let (status, _, body) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        None,
        Some(json!({ "queue": "small", "payload": 1, "run_at": "1970-01-01T00:00:00Z" })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().parse().unwrap();
    let job = store.get(id).await.unwrap().unwrap();
    assert!(
        job.run_at >= before,
        "run_at {} is before the submission",
        job.run_at
    );
}

#[tokio::test]
async fn a_tenant_cannot_squat_on_another_tenants_idempotency_key() {
    let router = router("");
    let job = json!({
        "payload": { "invoice": 42 },
        "idempotency_key": "invoice-42",
        "run_at": "2999-01-01T00:00:00Z",
    });
    let (status, _, squatted) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        Some(ACME),
        Some(job.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{squatted}");
    let (status, _, own) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        Some(GLOBEX),
        Some(job.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{own}");
    assert_eq!(own["duplicate"], false, "globex's job was stored: {own}");
    assert_ne!(
        own["id"], squatted["id"],
        "globex did not learn acme's job id"
    );
    let (status, _, body) = call(
        &router,
        Method::GET,
        &format!("/v1/jobs/{}", own["id"].as_str().unwrap()),
        Some(GLOBEX),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Each tenant's retry still finds its own job.
    let (_, _, again) = call(&router, Method::POST, "/v1/jobs", Some(GLOBEX), Some(job)).await;
    assert_eq!(
        (&again["duplicate"], &again["id"]),
        (&json!(true), &own["id"])
    );
}

#[tokio::test(start_paused = true)]
async fn a_route_added_beside_the_job_api_gets_the_same_timeout() {
    let (engine, _) = engine("");
    let router = Service::new(engine, "api")
        .unwrap()
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                "an hour later"
            }),
        )
        .router();
    // Paused time runs ahead whenever everything waits: the timeout fires before the hour.
    let (status, _, body) = call(&router, Method::GET, "/slow", None, None).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
}

#[tokio::test]
async fn a_cross_site_form_post_cannot_drive_the_api() {
    // No keys: what a page on another site can make a visitor's browser send without asking.
    let (router, store) = two_queues();
    let id = call(
        &router,
        Method::POST,
        "/v1/jobs",
        None,
        Some(json!({ "queue": "small", "payload": 1 })),
    )
    .await
    .2["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, content_type, body) in [
        (
            "/v1/jobs".to_owned(),
            Some("text/plain"),
            r#"{"queue":"small","payload":2}"#,
        ),
        (
            "/v1/jobs/batch".to_owned(),
            Some("application/x-www-form-urlencoded"),
            "a=1",
        ),
        (format!("/v1/jobs/{id}/cancel"), None, ""),
        (
            "/v1/queues/small/pause".to_owned(),
            Some("multipart/form-data; boundary=x"),
            "",
        ),
    ] {
        let mut request = Request::builder().method(Method::POST).uri(&path);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}: {body}");
        assert_eq!(body["code"], "unsupported_media_type");
    }
    let jobs = store
        .list(&raindrop::store::JobFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1, "nothing was submitted");
    assert_eq!(
        jobs.items[0].state,
        raindrop::job::JobState::Queued,
        "nor cancelled"
    );
    assert!(store.paused().await.unwrap().is_empty(), "nor paused");
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_jobs_in_the_queue_overview() {
    let router = router("");
    for _ in 0..3 {
        submit(&router, ACME).await;
    }
    submit(&router, GLOBEX).await;
    let queues = |key: &'static str| {
        let router = router.clone();
        async move {
            let (status, _, body) = call(&router, Method::GET, "/v1/queues", Some(key), None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body[0].clone()
        }
    };
    let globex = queues(GLOBEX).await;
    assert_eq!(globex["counts"]["queued"], 1, "{globex}");
    for figure in [
        "oldest_ready_age_seconds",
        "succeeded_last_minute",
        "failed_last_minute",
    ] {
        assert!(
            globex.get(figure).is_none(),
            "a tenant sees the queue's {figure}: {globex}"
        );
    }
    assert_eq!(queues(READER).await["counts"]["queued"], 3);
    let admin = queues(ADMIN).await;
    assert_eq!(admin["counts"]["queued"], 4, "{admin}");
    assert!(admin["oldest_ready_age_seconds"].is_number(), "{admin}");
    assert_eq!(admin["succeeded_last_minute"], 0);
}

#[tokio::test(start_paused = true)]
async fn repeated_wrong_keys_from_one_address_are_rate_limited() {
    let router = router("");
    let guesser = Some([192, 0, 2, 1]);
    let get = |peer, headers: &'static [(&'static str, &'static str)], key| {
        call_from(
            &router,
            peer,
            headers,
            Method::GET,
            "/v1/queues",
            Some(key),
            None,
        )
    };
    for n in 0..10 {
        let (status, _, body) = get(guesser, &[], "wrong-key-0123456789").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {n}: {body}");
    }
    let (status, headers, body) = get(guesser, &[], "wrong-key-0123456789").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], "rate_limited");
    assert!(!body.to_string().contains("wrong-key"), "{body}");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Even the right key is refused from there, so a guess that hits tells nothing, and a
    // forwarded address is not believed without a declared proxy.
    let (status, _, _) = get(guesser, &[], ACME).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = get(guesser, &[("x-forwarded-for", "203.0.113.5")], ACME).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "X-Forwarded-For ignored"
    );
    // Other addresses are not affected.
    let (status, _, body) = get(Some([192, 0, 2, 2]), &[], ACME).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::advance(std::time::Duration::from_secs(wait)).await;
    let (status, _, body) = get(guesser, &[], ACME).await;
    assert_eq!(status, StatusCode::OK, "the window has passed: {body}");
}

#[tokio::test]
async fn behind_a_declared_proxy_wrong_keys_count_per_forwarded_address() {
    let (engine, _) = engine("");
    let router = Service::new(engine, "api")
        .unwrap()
        .api_keys(keys())
        .behind_proxy(true)
        .router();
    let proxy = Some([10, 0, 0, 1]);
    let guesser: &[(&str, &str)] = &[("x-forwarded-for", "198.51.100.1, 203.0.113.5")];
    for _ in 0..10 {
        let (status, _, _) = call_from(
            &router,
            proxy,
            guesser,
            Method::GET,
            "/v1/queues",
            Some("wrong-key-0123456789"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, _) = call_from(
        &router,
        proxy,
        guesser,
        Method::GET,
        "/v1/queues",
        Some(ACME),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Another client through the same proxy.
    let other: &[(&str, &str)] = &[("x-forwarded-for", "203.0.113.6")];
    let (status, _, _) = call_from(
        &router,
        proxy,
        other,
        Method::GET,
        "/v1/queues",
        Some(ACME),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_served_api_counts_wrong_keys_per_connecting_address() {
    let (engine, _) = engine("");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Service::new(engine, "api").unwrap().api_keys(keys());
    tokio::spawn(service.serve(listener, std::future::pending()));
    // Two clients on two loopback addresses.
    let client = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (guesser, other) = (client([127, 0, 0, 1]), client([127, 0, 0, 2]));
    let url = format!("http://{addr}/v1/queues");
    for _ in 0..10 {
        let response = guesser
            .get(&url)
            .bearer_auth("wrong-key-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let response = guesser.get(&url).bearer_auth(ACME).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let response = other.get(&url).bearer_auth(ACME).send().await.unwrap();
    assert_eq!(response.status(), 200, "another address is served");
}

#[tokio::test]
async fn a_jobs_kind_comes_from_its_payload_field_when_the_service_says_so() {
    let (engine, store) = engine("");
    let router = Service::new(engine, "api")
        .unwrap()
        .kind_from("jobs", "type")
        .router();
    let kind_of = |body: Value| {
        let (router, store) = (router.clone(), store.clone());
        async move {
            let (status, _, answer) =
                call(&router, Method::POST, "/v1/jobs", None, Some(body)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
            let id = answer["id"].as_str().unwrap().parse().unwrap();
            store.get(id).await.unwrap().unwrap().kind
        }
    };
    assert_eq!(
        kind_of(json!({ "payload": { "type": "report", "n": 1 } })).await,
        "report"
    );
    let explicit = json!({ "kind": "mine", "payload": { "type": "report" } });
    assert_eq!(kind_of(explicit).await, "mine", "a kind given wins");
    for payload in [
        json!({ "n": 1 }),
        json!({ "type": 7 }),
        json!([1]),
        json!("x"),
    ] {
        assert_eq!(kind_of(json!({ "payload": payload })).await, "jobs");
    }
}

#[tokio::test]
async fn a_tenant_key_does_not_see_the_deployments_worker_pools() {
    let router = router("");
    for key in [ACME, READER] {
        let (status, _, error) = call(&router, Method::GET, "/v1/workers", Some(key), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
        assert!(
            error["message"].as_str().unwrap().contains("`admin`"),
            "{error}"
        );
    }
    let (status, _, pools) = call(&router, Method::GET, "/v1/workers", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{pools}");
    assert!(pools.is_array());
}

/// A payload type with a schema, as a handler of `Job<Resize>` would take it.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
struct Resize {
    url: String,
    width: u32,
}

/// `two_queues`, with `small` typed by `Resize` through the builder.
fn typed_queues(check: bool) -> axum::Router {
    let app = app(r#"application "t" {
  service "api" {}
  queue "small" {}
  queue "big" {}
  task "worker" { queue = "small" }
}"#);
    let engine = Engine::builder(app)
        .store(memory())
        .task("worker", succeed())
        .payload_schema("small", raindrop::service::PayloadSchema::of::<Resize>())
        .build()
        .unwrap();
    Service::new(engine, "api")
        .unwrap()
        .check_payload_schemas(check)
        .router()
}

#[tokio::test]
async fn the_document_carries_each_typed_queues_payload_schema() {
    let router = typed_queues(true);
    let (status, _, doc) = call(&router, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    let variants: Vec<&str> = schemas["SubmitJob"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["$ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        variants,
        [
            "#/components/schemas/SubmitJob_small",
            "#/components/schemas/SubmitUntypedJob"
        ],
        "{schemas}"
    );
    let small = &schemas["SubmitJob_small"];
    assert_eq!(small["properties"]["queue"]["enum"], json!(["small"]));
    assert_eq!(
        small["properties"]["payload"]["$ref"],
        "#/components/schemas/Resize"
    );
    assert_eq!(
        schemas["SubmitUntypedJob"]["properties"]["queue"]["enum"],
        json!(["big"])
    );
    assert_eq!(
        schemas["Resize"]["properties"]["width"]["type"], "integer",
        "{schemas}"
    );
    // The batch's jobs are the same submissions.
    assert_eq!(
        schemas["SubmitBatch"]["properties"]["jobs"]["items"]["$ref"],
        "#/components/schemas/SubmitJob"
    );
}

#[tokio::test]
async fn a_submission_to_a_typed_queue_is_checked_against_its_schema_unless_turned_off() {
    let router = typed_queues(true);
    let submit = |router: &axum::Router, body: Value| {
        let router = router.clone();
        async move { call(&router, Method::POST, "/v1/jobs", None, Some(body)).await }
    };
    let bad = json!({ "queue": "small", "payload": { "url": "u", "width": "wide" } });
    let (status, _, body) = submit(&router, bad.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["details"]["fields"][0]["field"], "payload.width");
    assert!(
        body["message"].as_str().unwrap().contains("payload.width"),
        "{body}"
    );
    let (status, _, body) = submit(
        &router,
        json!({ "queue": "small", "payload": { "url": "u" } }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["details"]["fields"][0]["field"], "payload.width");
    // In a batch, the job's index names it.
    let (status, _, body) = call(
        &router,
        Method::POST,
        "/v1/jobs/batch",
        None,
        Some(json!({ "jobs": [bad.clone()] })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["details"]["fields"][0]["field"], "jobs[0].payload.width",
        "{body}"
    );
    let good = json!({ "queue": "small", "payload": { "url": "u", "width": 3 } });
    assert_eq!(submit(&router, good).await.0, StatusCode::ACCEPTED);
    let untyped = json!({ "queue": "big", "payload": { "anything": [1] } });
    assert_eq!(submit(&router, untyped).await.0, StatusCode::ACCEPTED);

    let unchecked = typed_queues(false);
    assert_eq!(submit(&unchecked, bad).await.0, StatusCode::ACCEPTED);
}

/// A delay past the calendar's end waits until its end, and that end is a time every client
/// can read: RFC 3339 has four-digit years (schemathesis found `+262142-12-31T…` in a listing).
#[tokio::test]
async fn a_job_delayed_past_the_calendars_end_is_listed_with_a_readable_run_at() {
    let (router, _store) = two_queues();
    let (status, _, body) = call(
        &router,
        Method::POST,
        "/v1/jobs",
        None,
        Some(json!({ "queue": "big", "payload": 1, "delay_ms": u64::MAX })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    for path in [format!("/v1/jobs/{id}"), "/v1/jobs".to_owned()] {
        let (status, _, body) = call(&router, Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let job = body.get("jobs").map_or(&body, |jobs| &jobs[0]);
        let run_at = job["run_at"].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(run_at)
            .unwrap_or_else(|e| panic!("{path}: run_at {run_at} is not RFC 3339: {e}"));
        assert_eq!(parsed.format("%Y").to_string(), "9999", "{path}: {run_at}");
    }
}

#[tokio::test]
async fn a_unique_key_makes_a_resubmission_the_waiting_job_for_its_tenant_only() {
    let router = router("");
    let job = json!({
        "payload": { "report": "q3" },
        "unique_key": "report-q3",
        "run_at": "2999-01-01T00:00:00Z",
    });
    let post = |key, body| {
        let router = router.clone();
        async move { call(&router, Method::POST, "/v1/jobs", Some(key), Some(body)).await }
    };
    let (status, _, first) = post(ACME, job.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["duplicate"], false);
    let mut other = job.clone();
    other["payload"] = json!({ "report": "another payload, the same key" });
    let (status, _, again) = post(ACME, other).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(
        (&again["duplicate"], &again["id"]),
        (&json!(true), &first["id"])
    );
    let (_, _, theirs) = post(GLOBEX, job.clone()).await;
    assert_eq!(
        theirs["duplicate"], false,
        "globex's key is its own: {theirs}"
    );
    assert_ne!(theirs["id"], first["id"]);
    // Cancelled, the job no longer waits: the key is free again.
    let id = first["id"].as_str().unwrap();
    let (status, _, _) = call(
        &router,
        Method::POST,
        &format!("/v1/jobs/{id}/cancel"),
        Some(ACME),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, fresh) = post(ACME, job).await;
    assert_eq!(fresh["duplicate"], false, "{fresh}");
}

#[tokio::test]
async fn a_debounced_submission_says_which_waiting_job_it_went_into() {
    let app = app(r#"application "t" {
  service "api" {}
  queue "refresh" {
    debounce {
      key    = "payload.account"
      window = "1h"
    }
  }
  queue "plain" {}
  task "worker" {
    queue = "refresh"
  }
  task "other" {
    queue = "plain"
  }
}"#);
    let store = memory();
    let engine = Engine::builder(app)
        .store(store.clone())
        .task("worker", succeed())
        .task("other", succeed())
        .build()
        .unwrap();
    let router = Service::new(engine, "api").unwrap().router();
    let post = |body: Value| {
        let router = router.clone();
        async move { call(&router, Method::POST, "/v1/jobs", None, Some(body)).await }
    };
    let (status, _, first) =
        post(json!({ "queue": "refresh", "payload": { "account": "acme", "n": 1 } })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(
        (&first["duplicate"], &first["debounced"]),
        (&json!(false), &json!(false))
    );
    let (_, _, second) =
        post(json!({ "queue": "refresh", "payload": { "account": "acme", "n": 2 } })).await;
    assert_eq!(second["id"], first["id"], "{second}");
    assert_eq!(second["debounced"], true);
    let (_, _, other) =
        post(json!({ "queue": "refresh", "payload": { "account": "globex", "n": 3 } })).await;
    assert_ne!(other["id"], first["id"]);
    let id: raindrop::job::JobId = first["id"].as_str().unwrap().parse().unwrap();
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!(job.payload.as_str(), r#"{"account":"acme","n":2}"#);
    // Jobs without the key belong to no burst: each is its own.
    let (_, _, a) = post(json!({ "queue": "refresh", "payload": { "n": 5 } })).await;
    let (_, _, b) = post(json!({ "queue": "refresh", "payload": { "n": 6 } })).await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(
        (&b["debounced"], &b["duplicate"]),
        (&json!(false), &json!(false))
    );
    // An explicit key joins a burst too; on a queue without a rule it is refused.
    let (_, _, keyed) =
        post(json!({ "queue": "refresh", "payload": { "n": 4 }, "debounce_key": "acme" })).await;
    assert_eq!(
        (&keyed["id"], &keyed["debounced"]),
        (&first["id"], &json!(true))
    );
    let (status, _, refused) =
        post(json!({ "queue": "plain", "payload": 1, "debounce_key": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["code"], "validation_failed", "{refused}");
    assert_eq!(
        refused["details"]["fields"][0]["field"], "debounce_key",
        "{refused}"
    );
}

#[tokio::test]
async fn a_queues_unique_rule_keys_submissions_by_the_fields_it_names() {
    let app = app(r#"application "t" {
  service "api" {}
  queue "reports" {
    unique {
      by = ["kind", "payload.report"]
    }
  }
  task "worker" {
    queue = "reports"
  }
}"#);
    let engine = Engine::builder(app)
        .store(memory())
        .task("worker", succeed())
        .build()
        .unwrap();
    let router = Service::new(engine, "api").unwrap().router();
    let post = |body: Value| {
        let router = router.clone();
        async move { call(&router, Method::POST, "/v1/jobs", None, Some(body)).await }
    };
    let later = "2999-01-01T00:00:00Z";
    let (status, _, first) =
        post(json!({ "payload": { "report": "q3", "by": "ada" }, "run_at": later })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // The same report asked by someone else while the first waits: the first job.
    let (_, _, same) =
        post(json!({ "payload": { "report": "q3", "by": "grace" }, "run_at": later })).await;
    assert_eq!(
        (&same["id"], &same["duplicate"]),
        (&first["id"], &json!(true))
    );
    // Another report, or the same one of another kind: new jobs.
    let (_, _, other) = post(json!({ "payload": { "report": "q4" }, "run_at": later })).await;
    assert_eq!(other["duplicate"], false);
    let (_, _, kind) =
        post(json!({ "kind": "pdf", "payload": { "report": "q3" }, "run_at": later })).await;
    assert_eq!(kind["duplicate"], false);
    let (_, _, status) = call(
        &router,
        Method::GET,
        &format!("/v1/jobs/{}", first["id"].as_str().unwrap()),
        None,
        None,
    )
    .await;
    assert!(
        status["unique_key"].as_str().is_some_and(|k| k.len() == 64),
        "a SHA-256 in hex: {status}"
    );
}
