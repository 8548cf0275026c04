//! The web dashboard: every page and action through the router, with its form tokens and its
//! login.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use raindrop::engine::Engine;
use raindrop::job::{JobError, JobId, JobState, NewJob, Payload, now};
use raindrop::service::{ApiKeys, Service};
use raindrop::store::{AfterFailure, Store};
use tower::ServiceExt;

mod support;
use support::{memory, succeed};

const ACME: &str = "acme-key-0123456789";
const GLOBEX: &str = "globex-key-0123456789";
const ADMIN: &str = "admin-key-0123456789";

fn app(keys: bool) -> (axum::Router, Arc<dyn Store>) {
    let app = support::app(
        "application \"t\" {\n  service \"api\" {}\n  queue \"jobs\" {}\n  task \"worker\" {}\n  kv_cache \"status\" {}\n}\n",
    );
    let store = memory();
    let engine = Engine::builder(app)
        .store(store.clone())
        .task("worker", succeed())
        .build()
        .unwrap();
    let mut service = Service::new(engine, "api").unwrap();
    if keys {
        service = service.api_keys(
            ApiKeys::parse(&format!(
                "acme:submit,read:{ACME}; globex:submit,read:{GLOBEX}; ops:admin:{ADMIN}"
            ))
            .unwrap(),
        );
    }
    (service.router(), store)
}

/// A browser: keeps the cookies the dashboard sets.
struct Browser {
    router: axum::Router,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(router: axum::Router) -> Self {
        Self {
            router,
            cookies: Vec::new(),
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        form: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(path);
        if !self.cookies.is_empty() {
            let cookie: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            request = request.header(header::COOKIE, cookie.join("; "));
        }
        let request = match form {
            Some(form) => request
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form.to_owned())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        for set in parts.headers.get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let (status, _, body) = self.send(Method::GET, path, None).await;
        (status, body)
    }

    async fn post(&mut self, path: &str, form: &str) -> (StatusCode, HeaderMap, String) {
        self.send(Method::POST, path, Some(form)).await
    }

    fn token(&self) -> String {
        self.cookies
            .iter()
            .find(|(k, _)| k == "raindrop_csrf")
            .map(|(_, v)| v.clone())
            .expect("the dashboard gave this browser a form token")
    }
}

async fn enqueue(store: &Arc<dyn Store>, tenant: Option<&str>, payload: &str) -> JobId {
    let mut job = NewJob::new("jobs", "report", Payload::from_json(payload).unwrap());
    job.tenant = tenant.map(str::to_owned);
    store.enqueue(vec![job], now()).await.unwrap()[0].id()
}

async fn dead_letter(store: &Arc<dyn Store>, tenant: Option<&str>) -> JobId {
    let id = enqueue(store, tenant, r#"{"doomed":true}"#).await;
    let claimed = store
        .claim("jobs", "w", 100, std::time::Duration::from_secs(30), now())
        .await
        .unwrap();
    for job in claimed {
        let token = job.lease_token().unwrap();
        if job.id == id {
            store
                .fail(id, token, JobError::new("boom"), AfterFailure::Dead, now())
                .await
                .unwrap();
        } else {
            store.release(job.id, token, now()).await.unwrap();
        }
    }
    id
}

#[tokio::test]
async fn the_overview_shows_every_queue_with_counts_and_charts() {
    let (router, store) = app(false);
    enqueue(&store, None, r#"{"n":1}"#).await;
    enqueue(&store, None, r#"{"n":2}"#).await;
    dead_letter(&store, None).await;
    let mut browser = Browser::new(router);
    let (status, page) = browser.get("/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("<h2><a href=\"/dashboard/jobs?queue=jobs\">jobs</a>"),
        "{page}"
    );
    assert!(
        page.contains("href=\"/dashboard/jobs?queue=jobs&amp;state=queued\">2</a>"),
        "{page}"
    );
    assert!(page.contains("href=\"/dashboard/jobs?queue=jobs&amp;state=dead\">1</a>"));
    assert!(page.contains("<svg"), "charts are SVG");
    assert!(
        page.contains("aria-label=\"succeeded jobs and failed attempts per minute, last hour\"")
    );
    assert!(
        page.contains("http-equiv=\"refresh\""),
        "it refreshes without JavaScript"
    );
    assert!(
        !page.contains("<script src"),
        "nothing is loaded from elsewhere"
    );
    browser.token();
}

#[tokio::test]
async fn jobs_are_listed_filtered_found_by_id_and_shown_with_their_payload() {
    let (router, store) = app(false);
    let id = enqueue(&store, None, r#"{"title":"<b>Q3</b>"}"#).await;
    let dead = dead_letter(&store, None).await;
    let mut browser = Browser::new(router);
    let (status, list) = browser.get("/dashboard/jobs?state=dead").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(&dead.to_string()) && !list.contains(&id.to_string()));
    let (status, headers, _) = browser
        .send(Method::GET, &format!("/dashboard/jobs?id={id}"), None)
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        format!("/dashboard/jobs/{id}").as_str()
    );
    let (status, page) = browser.get(&format!("/dashboard/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("&lt;b&gt;Q3&lt;/b&gt;"),
        "payloads are escaped: {page}"
    );
    let (status, page) = browser.get(&format!("/dashboard/jobs/{dead}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("boom"), "the attempt's error is shown");
    let (status, page) = browser.get("/dashboard/jobs/not-an-id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        page.contains("<!DOCTYPE html>") && page.contains("is not a job id"),
        "errors are pages: {page}"
    );
    let (status, page) = browser
        .get(&format!("/dashboard/jobs/{}", JobId::new()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("Not Found") && page.contains("no job"));
}

#[tokio::test]
async fn actions_need_the_browsers_form_token() {
    let (router, store) = app(false);
    let id = enqueue(&store, None, r#"{"n":1}"#).await;
    let mut browser = Browser::new(router);
    browser.get("/dashboard").await;
    let token = browser.token();
    for form in [
        String::new(),
        "csrf=0000".to_owned(),
        format!("csrf={}", "f".repeat(32)),
    ] {
        let (status, _, body) = browser
            .post(&format!("/dashboard/jobs/{id}/cancel"), &form)
            .await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{form}: {status} {body}"
        );
    }
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Queued
    );
    let (status, headers, _) = browser
        .post(
            &format!("/dashboard/jobs/{id}/cancel"),
            &format!("csrf={token}"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        format!("/dashboard/jobs/{id}").as_str()
    );
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
}

#[tokio::test]
async fn dead_letters_are_retried_and_purged_with_a_confirmation() {
    let (router, store) = app(false);
    let first = dead_letter(&store, None).await;
    let second = dead_letter(&store, None).await;
    let mut browser = Browser::new(router);
    let (status, page) = browser.get("/dashboard/dead-letters").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&first.to_string()) && page.contains("boom"));
    let token = browser.token();
    let (status, _, _) = browser
        .post(
            &format!("/dashboard/jobs/{first}/retry"),
            &format!("csrf={token}"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        store.get(first).await.unwrap().unwrap().state,
        JobState::Queued
    );
    let (_, page) = browser.get(&format!("/dashboard/jobs/{first}")).await;
    assert!(
        page.contains("attempt 1 failed: boom") && page.contains("enqueued"),
        "the job's history: {page}"
    );
    let (status, _, body) = browser
        .post("/dashboard/dead-letters/purge", &format!("csrf={token}"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        store.get(second).await.unwrap().is_some(),
        "nothing purged unconfirmed"
    );
    let (status, _, _) = browser
        .post(
            "/dashboard/dead-letters/purge",
            &format!("csrf={token}&confirm=yes"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(store.get(second).await.unwrap().is_none());
}

#[tokio::test]
async fn queues_pause_and_resume() {
    let (router, store) = app(false);
    let mut browser = Browser::new(router);
    browser.get("/dashboard").await;
    let token = browser.token();
    let (status, _, _) = browser
        .post("/dashboard/queues/jobs/pause", &format!("csrf={token}"))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(store.paused().await.unwrap(), ["jobs"]);
    let (_, page) = browser.get("/dashboard").await;
    assert!(page.contains("(paused)") && page.contains("Resume"));
    browser
        .post("/dashboard/queues/jobs/resume", &format!("csrf={token}"))
        .await;
    assert!(store.paused().await.unwrap().is_empty());
    let (status, _, _) = browser
        .post("/dashboard/queues/nope/pause", &format!("csrf={token}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn with_keys_the_dashboard_asks_for_one_and_shows_a_tenant_only_its_jobs() {
    let (router, store) = app(true);
    let theirs = enqueue(&store, Some("globex"), r#"{"n":1}"#).await;
    let mine = enqueue(&store, Some("acme"), r#"{"n":2}"#).await;
    let mut browser = Browser::new(router);
    for path in [
        "/dashboard",
        "/dashboard/jobs",
        "/dashboard/dead-letters",
        &format!("/dashboard/jobs/{mine}"),
    ] {
        let (status, headers, _) = browser.send(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(headers[header::LOCATION], "/dashboard/login");
    }
    let (status, _, _) = browser.post("/dashboard/jobs/x/cancel", "csrf=x").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "actions too");
    let (status, _, page) = browser
        .post("/dashboard/login", "key=wrong-key-0123456789")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!page.contains("wrong-key"));
    let (status, _, _) = browser
        .post("/dashboard/login", &format!("key={ACME}"))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, page) = browser.get("/dashboard/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&mine.to_string()) && !page.contains(&theirs.to_string()));
    let (status, _) = browser.get(&format!("/dashboard/jobs/{theirs}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's job");
    let (_, page) = browser.get("/dashboard").await;
    assert!(!page.contains("Pause"), "pausing needs admin");
    browser.get("/dashboard").await;
    let token = browser.token();
    let (status, _, _) = browser
        .post("/dashboard/queues/jobs/pause", &format!("csrf={token}"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An admin sees everyone's jobs and may pause.
    let mut admin = Browser::new(browser.router.clone());
    admin
        .post("/dashboard/login", &format!("key={ADMIN}"))
        .await;
    let (_, page) = admin.get("/dashboard/jobs").await;
    assert!(page.contains(&mine.to_string()) && page.contains(&theirs.to_string()));
    let token = admin.token();
    let (status, _, _) = admin
        .post("/dashboard/queues/jobs/pause", &format!("csrf={token}"))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // Logging out forgets the key.
    admin.post("/dashboard/logout", "").await;
    let (status, _, _) = admin.send(Method::GET, "/dashboard", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn workers_schedules_and_alerts_have_their_pages() {
    use raindrop::store::KvEntry;
    let app = support::app(
        "application \"t\" {\n  service \"api\" {}\n  queue \"jobs\" {}\n  task \"worker\" {}\n  task \"nightly\" {\n    type = \"cron\"\n    cron = \"0 2 * * *\"\n  }\n}\n",
    );
    let store = memory();
    let engine = Engine::builder(app)
        .store(store.clone())
        .task("worker", succeed())
        .cron(
            "nightly",
            raindrop::cron::cron_fn(|_event: raindrop::cron::ScheduledEvent| async move { Ok(()) }),
        )
        .build()
        .unwrap();
    let mut browser = Browser::new(Service::new(engine, "api").unwrap().router());

    let (status, page) = browser.get("/dashboard/schedules").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("nightly") && page.contains("0 2 * * *"));
    assert!(
        page.contains("02:00:00 UTC"),
        "next fire times in UTC: {page}"
    );
    assert!(
        page.contains("class=\"local\""),
        "and the viewer's local time"
    );
    assert!(page.contains("not run yet"));
    let run = raindrop::cron::CronRun {
        scheduled_time: now(),
        finished_at: now(),
        attempts: 1,
        outcome: "failed".into(),
        error: Some(JobError::new("disk full")),
    };
    let entry = KvEntry {
        value: serde_json::to_vec(&run).unwrap(),
        metadata: None,
        expires_at: None,
    };
    store
        .kv_put(raindrop::cron::CRON_RUNS_NAMESPACE, "nightly", entry)
        .await
        .unwrap();
    let (_, page) = browser.get("/dashboard/schedules").await;
    assert!(page.contains("failed") && page.contains("disk full"));

    let (status, page) = browser.get("/dashboard/workers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("No worker is running"));
    let pool = raindrop::registry::WorkerInfo {
        worker: "host-1-abc".into(),
        task: "worker".into(),
        queue: "jobs".into(),
        concurrency: 8,
        busy: 3,
        started_at: now(),
        seen_at: now(),
    };
    let entry = KvEntry {
        value: serde_json::to_vec(&pool).unwrap(),
        metadata: None,
        expires_at: Some(now() + chrono::Duration::seconds(30)),
    };
    store
        .kv_put(
            raindrop::registry::WORKERS_NAMESPACE,
            "host-1-abc/worker",
            entry,
        )
        .await
        .unwrap();
    let (_, page) = browser.get("/dashboard/workers").await;
    assert!(
        page.contains("host-1-abc") && page.contains("3 / 8"),
        "{page}"
    );

    let (status, page) = browser.get("/dashboard/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("No alert has fired"));
}

#[tokio::test]
async fn every_dead_letter_is_retried_at_once() {
    let (router, store) = app(false);
    let dead: Vec<JobId> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(dead_letter(&store, None).await);
        }
        ids
    };
    let mut browser = Browser::new(router);
    browser.get("/dashboard/dead-letters").await;
    let token = browser.token();
    let (status, _, _) = browser
        .post(
            "/dashboard/dead-letters/retry-all",
            &format!("csrf={token}"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    for id in dead {
        assert_eq!(
            store.get(id).await.unwrap().unwrap().state,
            JobState::Queued
        );
    }
}

#[tokio::test]
async fn the_next_page_link_keeps_a_filter_with_reserved_characters_intact() {
    let (router, store) = app(false);
    let kind = "a&state=dead c";
    let jobs = (0..51)
        .map(|n| NewJob::new("jobs", kind, Payload::from_value(&n).unwrap()))
        .collect();
    store.enqueue(jobs, now()).await.unwrap();
    let mut browser = Browser::new(router);
    let (status, page) = browser.get("/dashboard/jobs?kind=a%26state%3Ddead+c").await;
    assert_eq!(status, StatusCode::OK);
    let start = page.find("Next page").expect("a next page link");
    let link = &page[page[..start].rfind("href=\"").unwrap() + 6..start];
    let link = &link[..link.find('"').unwrap()].replace("&amp;", "&");
    assert!(
        link.starts_with("/dashboard/jobs?kind=a%26state%3Ddead+c&cursor="),
        "{link}"
    );
    // Following it lists the rest of that kind, not dead letters.
    let (status, next) = browser.get(link).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next.matches("/dashboard/jobs/").count(), 1, "{next}");
}
