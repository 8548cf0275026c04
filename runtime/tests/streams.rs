//! Event streams (`GET /v1/jobs/{id}/events`) under load and abuse: one reader of the event
//! feed for every stream, limits per key and in total, a bounded lifetime, resuming from
//! `Last-Event-ID`, a stream that falls behind, an outage of the feed. Driven through the
//! router in process, on a store that counts reads of its event feed.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use raindrop::engine::Engine;
use raindrop::job::{JobId, NewJob, Payload, Progress, now};
use raindrop::service::{ApiKeys, Service};
use raindrop::store::{JobStore, Store};
use serde_json::Value;
use tower::ServiceExt;

mod support;
use support::counting::CountingStore;
use support::{app, memory, succeed};

const ACME: &str = "acme-submit-read-0123456789";
const ACME_TOO: &str = "acme-read-only-0123456789";
const GLOBEX: &str = "globex-submit-read-0123456789";

/// A router whose service block has `settings`, over a counting memory store; with `keys` it
/// authenticates with the keys above, else everyone calls anonymously.
fn service(settings: &str, keys: bool) -> (axum::Router, Arc<CountingStore>) {
    let app = app(&format!(
        "application \"t\" {{\n  service \"api\" {{\n{settings}\n  }}\n  queue \"jobs\" {{}}\n  task \"worker\" {{}}\n  kv_cache \"status\" {{}}\n}}\n"
    ));
    let store = CountingStore::new(memory());
    let engine = Engine::builder(app)
        .store(store.clone() as Arc<dyn Store>)
        .task("worker", succeed())
        .build()
        .unwrap();
    let api_keys = ApiKeys::parse(&format!(
        "acme:submit,read:{ACME}; acme:read:{ACME_TOO}; globex:submit,read:{GLOBEX}"
    ))
    .unwrap();
    let service = Service::new(engine, "api").unwrap();
    let service = if keys {
        service.api_keys(api_keys)
    } else {
        service
    };
    (service.router(), store)
}

async fn enqueue(store: &CountingStore, n: usize) -> Vec<JobId> {
    enqueue_for(store, n, None).await
}

/// Enqueues `n` jobs of `tenant`.
async fn enqueue_for(store: &CountingStore, n: usize, tenant: Option<&str>) -> Vec<JobId> {
    let jobs = (0..n)
        .map(|i| {
            let mut job = NewJob::new("jobs", "test", Payload::from_value(&i).unwrap());
            job.tenant = tenant.map(str::to_owned);
            job
        })
        .collect();
    store
        .enqueue(jobs, now())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id())
        .collect()
}

/// Claims up to `n` jobs; returns their ids and lease tokens.
async fn claim(store: &CountingStore, n: usize) -> Vec<(JobId, u64)> {
    store
        .claim("jobs", "w", n, Duration::from_secs(600), now())
        .await
        .unwrap()
        .into_iter()
        .map(|job| (job.id, job.lease_token().unwrap()))
        .collect()
}

/// One Server-Sent Event as a client parses it; keep-alive comments are skipped.
#[derive(Debug, Default)]
struct Frame {
    event: Option<String>,
    id: Option<u64>,
    data: Option<Value>,
    retry: Option<u64>,
}

/// An open stream, read frame by frame.
struct Stream {
    body: axum::body::BodyDataStream,
    text: String,
    frames: VecDeque<Frame>,
}

impl Stream {
    /// The next frame; `None` when the stream has ended.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Some(frame);
            }
            let chunk = self.body.next().await?.unwrap();
            self.text.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut frame = Frame::default();
                for line in block.lines() {
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "event" => frame.event = Some(value.to_owned()),
                        "id" => frame.id = Some(value.parse().unwrap()),
                        "data" => frame.data = Some(serde_json::from_str(value).unwrap()),
                        "retry" => frame.retry = Some(value.parse().unwrap()),
                        _ => {}
                    }
                }
                if frame.event.is_some() || frame.retry.is_some() || frame.data.is_some() {
                    self.frames.push_back(frame);
                }
            }
        }
    }

    /// The names of the frames up to the end of the stream.
    async fn rest(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        while let Some(frame) = self.next().await {
            names.push(frame.event.unwrap_or_else(|| "(retry)".into()));
        }
        names
    }
}

/// Opens the event stream of `job` as `key`, resuming after `last_event_id` if given.
async fn open(
    router: &axum::Router,
    job: JobId,
    key: &str,
    last_event_id: Option<u64>,
) -> Result<Stream, (StatusCode, Value)> {
    let mut request = Request::get(format!("/v1/jobs/{job}/events"))
        .header("authorization", format!("Bearer {key}"));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    if status != StatusCode::OK {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        return Err((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ));
    }
    Ok(Stream {
        body: response.into_body().into_data_stream(),
        text: String::new(),
        frames: VecDeque::new(),
    })
}

#[tokio::test]
async fn a_thousand_streams_share_one_follower() {
    let (router, store) = service(
        "    streams {\n      per_key = 1000\n      total = 1000\n    }",
        false,
    );
    let jobs = enqueue(&store, 1000).await;
    let mut streams = Vec::new();
    for job in &jobs {
        let mut stream = open(&router, *job, ACME, None).await.unwrap();
        let status = stream.next().await.unwrap();
        assert_eq!(status.event.as_deref(), Some("status"));
        streams.push(stream);
    }
    let before = store.feed_reads();
    // Every job starts and succeeds: 2,000 events.
    for (id, token) in claim(&store, 1000).await {
        store
            .complete(id, token, Payload::null(), now())
            .await
            .unwrap();
    }
    for (stream, job) in streams.iter_mut().zip(&jobs) {
        let mut seen = Vec::new();
        while let Some(frame) = stream.next().await {
            let data = frame.data.unwrap();
            assert_eq!(
                data["job"],
                job.to_string(),
                "a stream sees only its job's events"
            );
            seen.push(frame.event.unwrap());
        }
        assert_eq!(seen, ["started", "succeeded"]);
    }
    let reads = store.feed_reads() - before;
    // One reader takes the 2,000 events in pages of 256, plus a few empty reads between
    // wake-ups; a follower per stream would read at least once per stream (1,000).
    assert!(
        reads <= 50,
        "{reads} reads of the event feed for 1,000 streams"
    );
}

#[tokio::test]
async fn streams_over_the_per_key_limit_are_refused_with_429() {
    let (router, store) = service("    streams {\n      per_key = 2\n    }", true);
    let job = enqueue_for(&store, 1, Some("acme")).await[0];
    let first = open(&router, job, ACME, None).await.unwrap();
    let _second = open(&router, job, ACME, None).await.unwrap();
    let Err((status, error)) = open(&router, job, ACME, None).await else {
        panic!("a third stream of one key was let through");
    };
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error["code"], "too_many_streams");
    assert!(
        error["message"].as_str().unwrap().contains("this API key"),
        "{error}"
    );
    // Another key of the same tenant, and another tenant's key, count on their own.
    let _other_key = open(&router, job, ACME_TOO, None).await.unwrap();
    let theirs = enqueue_for(&store, 1, Some("globex")).await[0];
    let _globex = open(&router, theirs, GLOBEX, None).await.unwrap();
    // A client that goes away gives its stream back.
    drop(first);
    let _again = open(&router, job, ACME, None).await.unwrap();
}

#[tokio::test]
async fn streams_over_the_total_limit_are_refused_with_429() {
    // Without authentication every caller shares one count per key: the total is the limit.
    let (router, store) = service(
        "    streams {\n      per_key = 3\n      total = 3\n    }",
        false,
    );
    let jobs = enqueue(&store, 4).await;
    let mut open_streams = Vec::new();
    for job in &jobs[..3] {
        open_streams.push(open(&router, *job, ACME, None).await.unwrap());
    }
    let Err((status, error)) = open(&router, jobs[3], ACME, None).await else {
        panic!("a fourth stream was let through");
    };
    assert_eq!(
        (status, &error["code"]),
        (
            StatusCode::TOO_MANY_REQUESTS,
            &Value::from("too_many_streams")
        )
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("this service has 3"),
        "{error}"
    );
    // A stream whose job ends gives its place back.
    let (id, token) = claim(&store, 1).await[0];
    let ended = jobs[..3].iter().position(|j| *j == id).unwrap();
    store
        .complete(id, token, Payload::null(), now())
        .await
        .unwrap();
    let names = open_streams[ended].rest().await;
    assert_eq!(names.last().map(String::as_str), Some("succeeded"));
    open(&router, jobs[3], ACME, None).await.unwrap();
}

#[tokio::test]
async fn streams_of_several_keys_are_refused_over_the_total_limit() {
    let (router, store) = service(
        "    streams {\n      per_key = 2\n      total = 3\n    }",
        true,
    );
    let mine = enqueue_for(&store, 1, Some("acme")).await[0];
    let _a = open(&router, mine, ACME, None).await.unwrap();
    let _b = open(&router, mine, ACME, None).await.unwrap();
    let _c = open(&router, mine, ACME_TOO, None).await.unwrap();
    let Err((status, error)) = open(&router, mine, ACME_TOO, None).await else {
        panic!("a fourth stream was let through");
    };
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("this service has 3"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_ends_after_its_lifetime_with_a_retry_hint() {
    let (router, store) = service("    streams {\n      lifetime = \"1m\"\n    }", false);
    // A job that never ends: no worker runs.
    let job = enqueue(&store, 1).await[0];
    let started = tokio::time::Instant::now();
    let mut stream = open(&router, job, ACME, None).await.unwrap();
    let status = stream.next().await.unwrap();
    assert_eq!(status.event.as_deref(), Some("status"));
    // Paused time: the clock jumps to the next timer, so a stream that never ends fails here
    // at once instead of hanging.
    let last = tokio::time::timeout(Duration::from_secs(3600), stream.next())
        .await
        .expect("the stream ends")
        .expect("a last frame before the end");
    assert_eq!(last.retry, Some(1000), "{last:?}");
    assert_eq!(last.event, None, "the hint dispatches no event");
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the hint"
    );
    assert_eq!(started.elapsed().as_secs(), 60);
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_misses_no_event() {
    let (router, store) = service("", false);
    let job = enqueue(&store, 1).await[0];
    let mut stream = open(&router, job, ACME, None).await.unwrap();
    let status = stream.next().await.unwrap();
    assert_eq!(status.event.as_deref(), Some("status"));
    let seen = status
        .id
        .expect("the status carries the feed position it reflects");
    drop(stream);
    // While the client is away its job starts and reports progress.
    let (id, token) = claim(&store, 1).await[0];
    let progress = Progress {
        percent: 50,
        message: "half".into(),
    };
    store.progress(id, token, progress, now()).await.unwrap();
    let mut stream = open(&router, job, ACME, Some(seen)).await.unwrap();
    let mut frames = Vec::new();
    for _ in 0..2 {
        frames.push(stream.next().await.unwrap());
    }
    store
        .complete(id, token, Payload::null(), now())
        .await
        .unwrap();
    while let Some(frame) = stream.next().await {
        frames.push(frame);
    }
    let names: Vec<_> = frames.iter().map(|f| f.event.as_deref().unwrap()).collect();
    assert_eq!(names, ["started", "progress", "succeeded"]);
    let ids: Vec<u64> = frames.iter().map(|f| f.id.unwrap()).collect();
    assert!(ids[0] > seen && ids.is_sorted(), "{seen} then {ids:?}");
    // Reconnecting after the last event: the job has ended and nothing is new, so 204 tells
    // an `EventSource` to stop.
    let Err((status, _)) = open(&router, job, ACME, ids.last().copied()).await else {
        panic!("a reconnect to an ended job streamed");
    };
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_stream_that_falls_behind_is_told_to_reconnect_and_catches_up() {
    let (router, store) = service("", false);
    let job = enqueue(&store, 1).await[0];
    let mut stream = open(&router, job, ACME, None).await.unwrap();
    stream.next().await.unwrap();
    let (id, token) = claim(&store, 1).await[0];
    // 200 events while the client reads none: more than a stream may have waiting.
    for percent in 0..199u8 {
        let progress = Progress {
            percent: percent / 2,
            message: format!("step {percent}"),
        };
        store.progress(id, token, progress, now()).await.unwrap();
    }
    let mut last_id = 0;
    let mut received = 0;
    loop {
        let frame = stream.next().await.expect("a hint before the end");
        if frame.retry.is_some() {
            break;
        }
        last_id = frame.id.unwrap();
        received += 1;
    }
    assert!(stream.next().await.is_none());
    assert!(received < 200, "the stream held every event: {received}");
    // The reconnect catches up with the rest, in order, none twice.
    let mut stream = open(&router, job, ACME, Some(last_id)).await.unwrap();
    let mut rest = 0;
    while received + rest < 200 {
        let frame = stream.next().await.unwrap();
        assert!(frame.id.unwrap() > last_id);
        last_id = frame.id.unwrap();
        rest += 1;
    }
    store
        .complete(id, token, Payload::null(), now())
        .await
        .unwrap();
    assert_eq!(stream.rest().await, ["succeeded"]);
}

#[tokio::test(start_paused = true)]
async fn streams_outlast_an_outage_of_the_event_feed() {
    let (router, store) = service("", false);
    let job = enqueue(&store, 1).await[0];
    let mut stream = open(&router, job, ACME, None).await.unwrap();
    stream.next().await.unwrap();
    store.feed_down(true);
    let (id, token) = claim(&store, 1).await[0];
    let before = store.feed_reads();
    // A minute of outage: the reader backs off instead of reading every poll interval.
    let waited = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
    assert!(waited.is_err(), "no event while the feed is down");
    let reads = store.feed_reads() - before;
    assert!(reads <= 20, "{reads} reads in a minute of outage");
    store.feed_down(false);
    let frame = stream.next().await.unwrap();
    assert_eq!(frame.event.as_deref(), Some("started"));
    store
        .complete(id, token, Payload::null(), now())
        .await
        .unwrap();
    assert_eq!(stream.rest().await, ["succeeded"]);
}

/// A `Last-Event-ID` past the end of the feed (made up, or from before the store was reset)
/// starts the stream from the current status, and later events arrive: it does not wait,
/// silent, for an id the feed will take long to reach.
#[tokio::test]
async fn a_last_event_id_from_the_future_starts_from_the_status() {
    let (router, store) = service("", false);
    let job = enqueue(&store, 1).await[0];
    let mut stream = open(&router, job, ACME, Some(u64::MAX / 2)).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the status arrives")
        .unwrap();
    assert_eq!(status.event.as_deref(), Some("status"));
    let (id, token) = claim(&store, 1).await[0];
    store
        .complete(id, token, Payload::null(), now())
        .await
        .unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), stream.rest())
        .await
        .expect("the job's events arrive");
    assert_eq!(rest, ["started", "succeeded"]);
}
