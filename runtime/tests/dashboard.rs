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
    let (service, store) = service(keys);
    (service.router(), store)
}

fn service(keys: bool) -> (Service, Arc<dyn Store>) {
    service_with(keys, "")
}

/// [`service`] with `settings` in its `service` block.
fn service_with(keys: bool, settings: &str) -> (Service, Arc<dyn Store>) {
    let app = support::app(&format!(
        "application \"t\" {{\n  service \"api\" {{\n{settings}\n  }}\n  queue \"jobs\" {{}}\n  task \"worker\" {{}}\n  kv_cache \"status\" {{}}\n}}\n",
    ));
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
    (service, store)
}

/// A browser: keeps the cookies the dashboard sets, and the form token of the last page that
/// had a form.
struct Browser {
    router: axum::Router,
    cookies: Vec<(String, String)>,
    /// Headers sent with every request (what a proxy in front would add).
    headers: Vec<(&'static str, String)>,
    token: Option<String>,
    /// Every `Set-Cookie` the dashboard sent, as sent.
    set_cookies: Vec<String>,
}

impl Browser {
    fn new(router: axum::Router) -> Self {
        Self {
            router,
            cookies: Vec::new(),
            headers: Vec::new(),
            token: None,
            set_cookies: Vec::new(),
        }
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Logs in with `key` through the login page, as a person would.
    async fn login(&mut self, key: &str) -> (StatusCode, HeaderMap, String) {
        let (status, _) = self.get("/dashboard/login").await;
        assert_eq!(status, StatusCode::OK);
        let token = self.token.clone().unwrap_or_default();
        self.post("/dashboard/login", &format!("csrf={token}&key={key}"))
            .await
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
        for (name, value) in &self.headers {
            request = request.header(*name, value);
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
            self.set_cookies.push(set.to_owned());
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let body = String::from_utf8_lossy(&body).into_owned();
        let field = r#"name="csrf" value=""#;
        if let Some(at) = body.find(field) {
            let rest = &body[at + field.len()..];
            self.token = Some(rest[..rest.find('"').unwrap()].to_owned());
        }
        (parts.status, parts.headers, body)
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let (status, _, body) = self.send(Method::GET, path, None).await;
        (status, body)
    }

    async fn post(&mut self, path: &str, form: &str) -> (StatusCode, HeaderMap, String) {
        self.send(Method::POST, path, Some(form)).await
    }

    fn token(&self) -> String {
        self.token
            .clone()
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
    // Grouped by their error: one group of two.
    assert!(page.contains("By error"), "{page}");
    assert!(
        page.contains("<td>boom</td><td>2</td>"),
        "the group and its count: {page}"
    );
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
    assert!(
        page.contains(r#"class="timeline""#) && page.contains(r#"class="failed""#),
        "the attempt drawn on the timeline: {page}"
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
    let (status, _, page) = browser.login("wrong-key-0123456789").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!page.contains("wrong-key"));
    let (status, _, _) = browser.login(ACME).await;
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
    admin.login(ADMIN).await;
    let (_, page) = admin.get("/dashboard/jobs").await;
    assert!(page.contains(&mine.to_string()) && page.contains(&theirs.to_string()));
    let token = admin.token();
    let (status, _, _) = admin
        .post("/dashboard/queues/jobs/pause", &format!("csrf={token}"))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // Logging out ends the session.
    let token = admin.token();
    admin
        .post("/dashboard/logout", &format!("csrf={token}"))
        .await;
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

#[tokio::test]
async fn a_stolen_session_cookie_does_not_reveal_the_api_key() {
    let (router, _) = app(true);
    let mut browser = Browser::new(router);
    let (status, _, _) = browser.login(ACME).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = browser.get("/dashboard").await;
    assert_eq!(status, StatusCode::OK, "logged in");
    assert!(!browser.set_cookies.is_empty());
    for set in &browser.set_cookies {
        assert!(!set.contains(ACME) && !set.contains("acme-key"), "{set}");
    }
    let session = browser.cookie("raindrop_session").unwrap();
    assert_eq!(session.len(), 64, "a random id: {session}");
    assert!(browser.cookie("raindrop_key").is_none());
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let (router, _) = app(true);
    let mut browser = Browser::new(router.clone());
    browser.login(ACME).await;
    // Someone copies the cookie before the owner logs out.
    let mut thief = Browser::new(router);
    thief.cookies = browser.cookies.clone();
    let (status, _) = thief.get("/dashboard").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the copy works while the session lasts"
    );
    let (status, page) = browser.get("/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    let token = browser.token.clone().unwrap_or_default();
    let (status, headers, _) = browser
        .post("/dashboard/logout", &format!("csrf={token}"))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dashboard/login");
    let (status, headers, _) = thief.send(Method::GET, "/dashboard", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the copied cookie is dead");
    assert_eq!(headers[header::LOCATION], "/dashboard/login");
    assert!(browser.cookie("raindrop_session").is_none());
    assert!(page.contains("Log out"), "every page has a logout button");
}

#[tokio::test]
async fn a_cross_site_logout_is_refused() {
    let (router, _) = app(true);
    let mut browser = Browser::new(router);
    browser.login(ACME).await;
    browser.get("/dashboard").await;
    for form in ["", "csrf=0000", &format!("csrf={}", "f".repeat(64))] {
        let (status, _, body) = browser.post("/dashboard/logout", form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{form}: {body}");
        assert!(body.contains("csrf"), "{body}");
    }
    let (status, _) = browser.get("/dashboard").await;
    assert_eq!(status, StatusCode::OK, "still logged in");
}

#[tokio::test]
async fn a_forged_csrf_cookie_is_refused() {
    // No keys: the form token alone keeps other sites from acting through a visitor's browser.
    let (router, store) = app(false);
    let id = enqueue(&store, None, r#"{"n":1}"#).await;
    // What a cookie planted by another site (or a sibling subdomain) and a matching form hold.
    for (cookies, form) in [
        (
            vec![("raindrop_csrf", "f".repeat(32))],
            format!("csrf={}", "f".repeat(32)),
        ),
        (
            vec![("raindrop_session", "f".repeat(64))],
            format!("csrf={}", "f".repeat(64)),
        ),
        (
            vec![
                ("raindrop_session", "f".repeat(64)),
                ("raindrop_csrf", "f".repeat(32)),
            ],
            format!("csrf={}", "f".repeat(32)),
        ),
    ] {
        let mut browser = Browser::new(router.clone());
        browser.cookies = cookies
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let (status, _, body) = browser
            .post(&format!("/dashboard/jobs/{id}/cancel"), &form)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{cookies:?}: {body}");
    }
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

#[tokio::test]
async fn form_tokens_are_bound_to_the_session() {
    let (router, store) = app(true);
    let id = enqueue(&store, Some("acme"), r#"{"n":1}"#).await;
    let mut attacker = Browser::new(router.clone());
    attacker.login(ACME).await;
    attacker.get("/dashboard").await;
    let mut victim = Browser::new(router);
    victim.login(ACME).await;
    victim.get("/dashboard").await;
    assert_ne!(attacker.token(), victim.token());
    let stolen = attacker.token();
    let (status, _, _) = victim
        .post(
            &format!("/dashboard/jobs/{id}/cancel"),
            &format!("csrf={stolen}"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        store.get(id).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

#[tokio::test]
async fn login_without_a_form_token_is_refused() {
    let (router, _) = app(true);
    // Another site posts its own key from a visitor's browser: no token, or the token of the
    // attacker's own login page, which is bound to the attacker's login cookie.
    let mut victim = Browser::new(router.clone());
    victim.get("/dashboard/login").await;
    let (status, _, body) = victim
        .post("/dashboard/login", &format!("key={ACME}"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("csrf"), "{body}");
    assert!(victim.cookie("raindrop_session").is_none());
    let mut attacker = Browser::new(router);
    attacker.get("/dashboard/login").await;
    let attackers = attacker.token();
    for form in [
        format!("csrf=&key={ACME}"),
        format!("csrf={attackers}&key={ACME}"),
    ] {
        let (status, _, body) = victim.post("/dashboard/login", &form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{form}: {body}");
        assert!(victim.cookie("raindrop_session").is_none(), "{form}");
    }
    let mut elsewhere = Browser::new(victim.router.clone());
    let (status, _, _) = elsewhere
        .post("/dashboard/login", &format!("csrf={attackers}&key={ACME}"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "without the login cookie");
    let (status, headers, _) = victim.login(ACME).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "with the page's own token");
    assert_eq!(headers[header::LOCATION], "/dashboard");
}

#[tokio::test]
async fn session_cookies_are_secure_behind_https() {
    // Declared by the builder, or in the manifest's service block.
    let (by_builder, _) = service(true);
    let (by_manifest, _) = service_with(true, "    behind_proxy = true");
    for service in [by_builder.behind_proxy(true), by_manifest] {
        let mut browser = Browser::new(service.router());
        browser
            .headers
            .push(("x-forwarded-proto", "https".to_owned()));
        browser.login(ACME).await;
        let sessions: Vec<_> = browser
            .set_cookies
            .iter()
            .filter(|c| c.starts_with("raindrop_session=") || c.starts_with("raindrop_login="))
            .collect();
        assert!(sessions.len() >= 2, "{sessions:?}");
        for set in sessions {
            assert!(set.contains("; Secure"), "{set}");
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Strict"),
                "{set}"
            );
        }
    }
    // Plain HTTP (no proxy declared, whatever a client claims): no `Secure`, which a browser
    // would not send back over HTTP.
    let (router, _) = app(true);
    let mut browser = Browser::new(router);
    browser
        .headers
        .push(("x-forwarded-proto", "https".to_owned()));
    browser.login(ACME).await;
    let (status, _) = browser.get("/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    assert!(browser.set_cookies.iter().all(|c| !c.contains("Secure")));
}

#[tokio::test(start_paused = true)]
async fn sessions_expire() {
    let hour = std::time::Duration::from_secs(3600);
    let (router, _) = app(true);
    // Idle: an hour without a request ends the session.
    let mut idle = Browser::new(router.clone());
    idle.login(ACME).await;
    tokio::time::advance(hour - std::time::Duration::from_secs(1)).await;
    let (status, _) = idle.get("/dashboard").await;
    assert_eq!(status, StatusCode::OK, "a request within the hour keeps it");
    tokio::time::advance(hour).await;
    let (status, headers, _) = idle.send(Method::GET, "/dashboard", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "idle for an hour");
    assert_eq!(headers[header::LOCATION], "/dashboard/login");
    // Absolute: 12 hours after login, however busy.
    let mut busy = Browser::new(router);
    busy.login(ACME).await;
    for _ in 0..23 {
        tokio::time::advance(hour / 2).await;
        let (status, _) = busy.get("/dashboard").await;
        assert_eq!(status, StatusCode::OK);
    }
    tokio::time::advance(hour / 2).await;
    let (status, _, _) = busy.send(Method::GET, "/dashboard", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "12 hours after login");
    // The browser is told the same.
    let set = busy
        .set_cookies
        .iter()
        .find(|c| c.starts_with("raindrop_session="))
        .unwrap();
    assert!(set.contains("Max-Age=43200"), "{set}");
}

#[tokio::test(start_paused = true)]
async fn repeated_wrong_dashboard_logins_are_rate_limited() {
    let (router, _) = app(true);
    let mut guesser = Browser::new(router);
    for n in 0..10 {
        let (status, _, _) = guesser.login(&format!("guess-{n:02}-0123456789")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {n}");
    }
    // Past ten failures even the right key is refused, so guessing stops here.
    let (status, headers, body) = guesser.login(ACME).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("rate_limited"), "{body}");
    let wait: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(guesser.cookie("raindrop_session").is_none());
    tokio::time::advance(std::time::Duration::from_secs(wait)).await;
    let (status, _, _) = guesser.login(ACME).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the window has passed");
}

#[tokio::test]
async fn a_jobs_page_says_which_limit_holds_it_back() {
    let app = support::app(
        r#"application "t" {
  service "api" {}
  queue "syncs" {
    concurrency_limit {
      max = 1
      key = "payload.account"
    }
  }
  task "worker" {
    queue = "syncs"
  }
}"#,
    );
    let store = memory();
    let engine = Engine::builder(app)
        .store(store.clone())
        .task("worker", succeed())
        .build()
        .unwrap();
    let queue = engine.queue("syncs").unwrap();
    let running = queue
        .send(&serde_json::json!({ "account": "acme" }))
        .await
        .unwrap();
    let held = queue
        .send(&serde_json::json!({ "account": "acme" }))
        .await
        .unwrap();
    let free = queue
        .send(&serde_json::json!({ "account": "globex" }))
        .await
        .unwrap();
    let limits = raindrop::store::ClaimLimits {
        running_per_key: Some(1),
        ..Default::default()
    };
    let claimed = store
        .claim_with(
            "syncs",
            "w",
            1,
            std::time::Duration::from_secs(60),
            limits,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(claimed[0].id, running);
    let mut browser = Browser::new(Service::new(engine, "api").unwrap().router());
    let (status, page) = browser.get(&format!("/dashboard/jobs/{held}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("limit key") && page.contains("acme"),
        "{page}"
    );
    assert!(
        page.contains("waiting: key acme at its limit of 1 running"),
        "{page}"
    );
    let (_, page) = browser.get(&format!("/dashboard/jobs/{free}")).await;
    assert!(!page.contains("at its limit"), "globex has room: {page}");
}

#[tokio::test]
async fn a_tenant_is_not_told_of_the_queues_other_running_jobs() {
    let app = support::app(
        r#"application "t" {
  service "api" {}
  queue "jobs" {
    concurrency_limit {
      max = 1
    }
  }
  task "worker" {}
}"#,
    );
    let store = memory();
    let engine = Engine::builder(app)
        .store(store.clone())
        .task("worker", succeed())
        .build()
        .unwrap();
    let keys = ApiKeys::parse(&format!(
        "acme:submit,read:{ACME}; globex:submit,read:{GLOBEX}; ops:admin:{ADMIN}"
    ))
    .unwrap();
    let router = Service::new(engine, "api").unwrap().api_keys(keys).router();
    enqueue(&store, Some("globex"), "{}").await;
    let limits = raindrop::store::ClaimLimits {
        running: Some(1),
        ..Default::default()
    };
    let claimed = store
        .claim_with(
            "jobs",
            "w",
            1,
            std::time::Duration::from_secs(60),
            limits,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(claimed[0].tenant.as_deref(), Some("globex"));
    let held = enqueue(&store, Some("acme"), "{}").await;
    let mut acme = Browser::new(router.clone());
    acme.login(ACME).await;
    let (status, page) = acme.get(&format!("/dashboard/jobs/{held}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains("at its limit"),
        "globex's running job is not acme's to hear of: {page}"
    );
    let mut ops = Browser::new(router);
    ops.login(ADMIN).await;
    let (_, page) = ops.get(&format!("/dashboard/jobs/{held}")).await;
    assert!(
        page.contains("waiting: the queue at its limit of 1 running"),
        "{page}"
    );
}
