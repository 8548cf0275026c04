//! Flow control: a queue that calls a rate-limited partner API, and a queue whose jobs hold a
//! per-account lock, both declared in `raindrop.manifest` and kept across every process.
//!
//! The partner API is a stand-in started in this process on its first call (set
//! `PARTNER_API_URL` to call another): it answers 429 to any request beyond 15 in the last
//! second. The `calls` queue starts at most 10 jobs a second (bursts of 2), so 32 workers never
//! hear a 429.
//!
//! ```sh
//! cargo run -p example-flow-control
//! for i in $(seq 40); do
//!   curl -s -X POST localhost:8080/v1/jobs -d "{\"queue\": \"calls\", \"payload\": {\"n\": $i}}"
//! done
//! curl -s -X POST localhost:8080/v1/jobs -d '{"queue": "syncs", "payload": {"account": "acme"}}'
//! curl -s localhost:8080/v1/queues
//! ```

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use raindrop::prelude::*;
use serde::Deserialize;
use tokio::sync::OnceCell;

raindrop::app!();

/// Requests the stand-in partner API takes in any second before it answers 429.
const PARTNER_LIMIT: usize = 15;

/// The stand-in's answers so far: `(ok, refused)`, and the times of the last second's requests.
static PARTNER: Mutex<(u64, u64, VecDeque<Instant>)> = Mutex::new((0, 0, VecDeque::new()));

/// The partner API's URL: `PARTNER_API_URL`, else the stand-in, started on first use.
async fn partner_url() -> &'static str {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("PARTNER_API_URL") {
            return url;
        }
        let router = axum::Router::new().route("/call", axum::routing::post(partner_call));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the stand-in partner API");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{address}/call")
    })
    .await
}

/// The stand-in: 429 beyond [`PARTNER_LIMIT`] requests in the last second, else 200.
async fn partner_call() -> StatusCode {
    let mut partner = PARTNER.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    while partner
        .2
        .front()
        .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1))
    {
        partner.2.pop_front();
    }
    if partner.2.len() >= PARTNER_LIMIT {
        partner.1 += 1;
        return StatusCode::TOO_MANY_REQUESTS;
    }
    partner.2.push_back(now);
    partner.0 += 1;
    StatusCode::OK
}

#[derive(Debug, Deserialize)]
struct Call {
    n: u64,
}

/// Calls the partner API; a 429 would be an error to retry (it never comes: the queue's
/// `rate_limit` keeps the calls under the partner's limit).
#[raindrop::task]
async fn caller(job: Job<Call>) -> Result<String, TaskError> {
    let status = reqwest::Client::new()
        .post(partner_url().await)
        .send()
        .await
        .map_err(TaskError::retry)?
        .status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(TaskError::retry_after(
            Duration::from_secs(1),
            "the partner API answered 429",
        ));
    }
    let (ok, refused, _) = &*PARTNER.lock().unwrap_or_else(|p| p.into_inner());
    Ok(format!(
        "call {} answered {status}; the partner has answered {ok} calls and refused {refused}",
        job.payload.n
    ))
}

#[derive(Debug, Deserialize)]
struct Sync {
    account: String,
}

/// Syncs one account: at most two of one account's syncs run at once (`concurrency_limit` by
/// `payload.account`); other accounts' syncs go by.
#[raindrop::task]
async fn syncer(job: Job<Sync>) -> Result<String, TaskError> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(format!("synced {}", job.payload.account))
}

#[raindrop::main]
fn main() {}
