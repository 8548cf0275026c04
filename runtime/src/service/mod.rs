//! The HTTP job API (axum), bound to a `service` block: submission with validation, status,
//! real-time events, cancellation, listing, queues, dead letters, health, Prometheus metrics and
//! an OpenAPI document. Every error is JSON `{code, message, details}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use utoipa::{Modify, OpenApi};

use crate::control::Control;
use crate::engine::Engine;
use crate::error::{Error, Result};

mod admin;
mod auth;
mod dashboard;
mod error;
mod failures;
mod jobs;
mod schema;
mod streams;

pub use auth::{ApiKeys, Caller, Scope};
pub use dashboard::SessionLifetime;
pub use error::{ApiError, ErrorBody, ErrorCode, FieldError};
pub use schema::PayloadSchema;

/// Checks a job's payload (as submitted, JSON text) beyond its syntax; returns field-level
/// errors, with fields named from the body's root (`payload.values[1]`).
pub type Validator = Arc<dyn Fn(&RawValue) -> Result<(), Vec<FieldError>> + Send + Sync>;

/// A validator that accepts payloads that deserialize into `T`, reporting where they do not.
pub fn validate_as<T: DeserializeOwned + 'static>() -> Validator {
    Arc::new(|payload: &RawValue| {
        let deserializer = &mut serde_json::Deserializer::from_str(payload.get());
        serde_path_to_error::deserialize::<_, T>(deserializer)
            .map(drop)
            .map_err(|err| {
                let path = err.path().to_string();
                let field = if path == "." {
                    "payload".to_owned()
                } else {
                    format!("payload.{path}")
                };
                vec![FieldError {
                    field,
                    message: err.into_inner().to_string(),
                }]
            })
    })
}

/// What the routes share.
pub(crate) struct Shared {
    /// The engine, the queues this service accepts jobs for and the kv_cache holding job
    /// status: the operations the job API and the dashboard share.
    pub(crate) control: Control,
    pub(crate) max_body: usize,
    pub(crate) validators: HashMap<String, Validator>,
    /// The payload schemas of the typed queues served.
    pub(crate) schemas: std::collections::BTreeMap<String, PayloadSchema>,
    /// Whether submissions are checked against them.
    pub(crate) check_schemas: bool,
    /// Per queue, the payload field a submission without a `kind` takes its kind from.
    pub(crate) kind_fields: HashMap<String, String>,
    /// Producers of the queues served, made once.
    pub(crate) producers: HashMap<String, crate::queue::Queue>,
    /// The most a submission to each served queue may ask for.
    pub(crate) ceilings: HashMap<String, crate::plan::Ceiling>,
    pub(crate) metrics: Option<PrometheusHandle>,
    /// Authentication and rate limit.
    pub(crate) guard: auth::Guard,
    /// Limits for each tenant.
    pub(crate) quota: Option<raindrop_codegen::model::Quota>,
    /// The dashboard's sessions.
    pub(crate) sessions: dashboard::Sessions,
    /// Wrong keys by client address.
    pub(crate) failures: failures::Failures,
    /// Whether a proxy in front says how clients connected (`X-Forwarded-Proto`,
    /// `X-Forwarded-For`); without it those headers are ignored.
    pub(crate) behind_proxy: bool,
    /// The one reader of the event feed behind every event stream.
    pub(crate) hub: crate::feed::EventHub,
    /// How many event streams may be open, and for how long.
    pub(crate) streams: Arc<streams::StreamLimits>,
}

pub(crate) type State = Arc<Shared>;

/// Builds the job API of one `service` block.
pub struct Service {
    shared: Shared,
    extra: Router,
    /// Whether `extra` has routes (a route layer on no routes is refused).
    has_extra: bool,
    limits: ConnectionLimits,
}

/// What one HTTP connection may take before the server gives up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A client must have sent a request's whole header within this; else the connection is
    /// closed (slow clients cannot hold connections open by trickling headers). An idle
    /// keep-alive connection is closed after it too.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers); larger: 431.
    pub max_header_bytes: usize,
    /// Most headers in one request; more: 431.
    pub max_headers: usize,
    /// How long open connections may finish once the server stops; then they are closed (an
    /// event stream of a job that has not ended would otherwise hold shutdown forever).
    pub drain: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            drain: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("queues", &self.shared.control.served())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// The API of the service block `name` of the engine's application.
    pub fn new(engine: Engine, name: &str) -> Result<Self> {
        let app = engine.app();
        let block = app
            .services
            .iter()
            .find(|s| s.name.as_str() == name)
            .ok_or_else(|| Error::Unknown {
                kind: "service",
                name: name.to_owned(),
            })?;
        let producers = block
            .queues
            .iter()
            .map(|q| Ok((q.to_string(), engine.queue(q.as_str())?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let keys = match &block.auth {
            raindrop_codegen::model::Auth::None => None,
            raindrop_codegen::model::Auth::ApiKey { keys_env } => {
                Some(ApiKeys::from_env(keys_env)?)
            }
        };
        let guard = auth::Guard {
            keys,
            limit: block.rate_limit.map(|r| crate::store::rate::Limit {
                requests: r.requests,
                per: r.per.get(),
                burst: r.burst,
            }),
        };
        let ceilings = block
            .queues
            .iter()
            .map(|q| {
                (
                    q.to_string(),
                    crate::plan::submission_ceiling(app, q.as_str()),
                )
            })
            .collect();
        let schemas = block
            .queues
            .iter()
            .filter_map(|q| Some((q.to_string(), engine.payload_schema(q.as_str())?.clone())))
            .collect();
        let served = block.queues.iter().map(ToString::to_string).collect();
        let behind_proxy = block.behind_proxy;
        let shared = Shared {
            guard,
            quota: block.quota,
            producers,
            ceilings,
            max_body: usize::try_from(block.max_body.bytes()).unwrap_or(usize::MAX),
            validators: HashMap::new(),
            schemas,
            check_schemas: true,
            kind_fields: HashMap::new(),
            metrics: prometheus(),
            hub: crate::feed::EventHub::new(engine.store().clone()),
            streams: Arc::new(streams::StreamLimits::new(block.streams)),
            control: Control::new(engine, served),
            sessions: dashboard::Sessions::new(SessionLifetime::default())?,
            failures: failures::Failures::default(),
            behind_proxy,
        };
        Ok(Self {
            shared,
            extra: Router::new(),
            has_extra: false,
            limits: ConnectionLimits::default(),
        })
    }

    /// Adds a route beside the job API (`#[service]` functions use this).
    #[must_use]
    pub fn route(mut self, path: &str, method_router: axum::routing::MethodRouter) -> Self {
        self.extra = self.extra.route(path, method_router);
        self.has_extra = true;
        self
    }

    /// Replaces the default [`ConnectionLimits`].
    #[must_use]
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Authenticates requests with `keys` (instead of the manifest's keys variable).
    #[must_use]
    pub fn api_keys(mut self, keys: ApiKeys) -> Self {
        self.shared.guard.keys = Some(keys);
        self
    }

    /// Declares that the service is reached through a reverse proxy that terminates TLS and sets
    /// `X-Forwarded-Proto` and `X-Forwarded-For` (overwriting what clients send). Then the
    /// dashboard's cookies are `Secure` when the proxy says `https`, and wrong keys are counted
    /// per the address the proxy saw. Without it, both headers are ignored: any client can send
    /// them. The service itself speaks plain HTTP.
    #[must_use]
    pub fn behind_proxy(mut self, behind: bool) -> Self {
        self.shared.behind_proxy = behind;
        self
    }

    /// How long dashboard sessions last (default: 12 hours from login, 1 hour idle).
    #[must_use]
    pub fn dashboard_sessions(mut self, lifetime: SessionLifetime) -> Self {
        self.shared.sessions.set_lifetime(lifetime);
        self
    }

    /// The engine behind this API.
    pub fn engine(&self) -> &Engine {
        self.shared.control.engine()
    }

    /// Validates payloads for `queue` with `validator` before they are accepted.
    #[must_use]
    pub fn validate(mut self, queue: &str, validator: Validator) -> Self {
        self.shared.validators.insert(queue.to_owned(), validator);
        self
    }

    /// Declares (or replaces) the JSON schema of `queue`'s payloads: the document shows it and,
    /// unless [`check_payload_schemas`](Self::check_payload_schemas) turns checks off,
    /// submissions that do not match it are refused with 400 `validation_failed`. `#[task]`
    /// declares it for a handler taking `Job<T>` with `T: utoipa::ToSchema`; a queue this
    /// service does not serve is ignored.
    #[must_use]
    pub fn payload_schema(mut self, queue: &str, schema: PayloadSchema) -> Self {
        if self.shared.control.serves(queue) {
            self.shared.schemas.insert(queue.to_owned(), schema);
        }
        self
    }

    /// Whether submissions to typed queues are checked against their payload schemas (default:
    /// yes). Off, the document still shows the schemas, and only [`validate`](Self::validate)
    /// hooks check payloads.
    #[must_use]
    pub fn check_payload_schemas(mut self, check: bool) -> Self {
        self.shared.check_schemas = check;
        self
    }

    /// Gives a job submitted to `queue` without a `kind` the kind its payload's top-level
    /// string field `field` names (`{"type": "report", …}` is a `report` job), so listings,
    /// the dashboard and metrics say what each job is. A payload without that field keeps the
    /// queue's name as its kind.
    #[must_use]
    pub fn kind_from(mut self, queue: &str, field: &str) -> Self {
        self.shared
            .kind_fields
            .insert(queue.to_owned(), field.to_owned());
        self
    }

    /// The routes.
    pub fn router(self) -> Router {
        let state: State = Arc::new(self.shared);
        let guarded = axum::middleware::from_fn_with_state(state.clone(), auth::authenticate);
        // Without keys or a rate limit there is nothing to check: no middleware at all.
        let active = state.guard.active();
        // Routes added beside the job API need a key too (any scope).
        let extra = if self.has_extra && active {
            self.extra.route_layer(guarded.clone())
        } else {
            self.extra
        };
        let mut api = Router::new()
            .route("/v1/jobs", post(jobs::submit).get(jobs::list))
            .route("/v1/jobs/batch", post(jobs::submit_batch))
            .route("/v1/jobs/{id}", get(jobs::status))
            .route("/v1/jobs/{id}/events", get(streams::events))
            .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
            .route("/v1/queues", get(admin::queues))
            .route("/v1/workers", get(admin::workers))
            .route("/v1/queues/{name}/pause", post(admin::pause))
            .route("/v1/queues/{name}/resume", post(admin::resume))
            .route(
                "/v1/dead-letters",
                get(admin::dead_letters).delete(admin::purge_dead_letters),
            )
            .route(
                "/v1/dead-letters/{id}/retry",
                post(admin::retry_dead_letter),
            )
            .route("/metrics", get(admin::metrics));
        // Inside authentication: a caller without a key hears 401 first.
        api = api.route_layer(axum::middleware::from_fn(json_posts_only));
        // Everything above needs a key when the service authenticates; what follows does not.
        if active {
            api = api.route_layer(guarded);
        }
        // The dashboard authenticates by its own cookie and guards its forms itself.
        api.merge(dashboard::routes(state.clone()))
            .route("/healthz", get(admin::healthz))
            .route("/readyz", get(admin::readyz))
            .route(
                "/openapi.json",
                get(|Extract(state): Extract<State>| async move { axum::Json(document(&state)) }),
            )
            .fallback(|| async { ApiError::not_found("no such route") })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    "this route does not take that method",
                )
            })
            .with_state(state)
            // Routes added beside the job API (`#[service]` functions) are counted, traced and
            // timed out like every other: the layers go on after they are merged in.
            .merge(extra)
            .layer(axum::middleware::from_fn(count_requests))
            .layer(
                tower_http::trace::TraceLayer::new_for_http().make_span_with(
                    |request: &axum::http::Request<axum::body::Body>| {
                        let span = tracing::info_span!(
                            "request",
                            method = %request.method(),
                            uri = %request.uri().path(),
                        );
                        crate::telemetry::continue_request(&span, request.headers());
                        span
                    },
                ),
            )
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(30),
            ))
    }

    /// Serves on `listener` until `shutdown` completes, then finishes the requests in flight
    /// (HTTP/1.1, within the [`ConnectionLimits`]).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let limits = self.limits;
        let router = self.router();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes);
        // Setting it at all moves hyper's header buffer to the heap: only when it differs.
        if limits.max_headers != ConnectionLimits::default().max_headers {
            http.max_headers(limits.max_headers);
        }
        let stopping = tokio_util::sync::CancellationToken::new();
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: wait a moment, keep serving.
                        tracing::warn!(error = %err, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            // The peer's address, for what is counted per client (wrong keys).
            let service = hyper_util::service::TowerToHyperService::new(
                tower_http::add_extension::AddExtension::new(
                    router.clone(),
                    axum::extract::ConnectInfo(peer),
                ),
            );
            let connection = http
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades();
            let stopping = stopping.clone();
            connections.spawn(async move {
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                        return;
                    }
                    () = stopping.cancelled() => connection.as_mut().graceful_shutdown(),
                }
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
            });
            // Reap the connections that have ended.
            while connections.try_join_next().is_some() {}
        }
        drop(listener);
        stopping.cancel();
        // Requests in flight finish; a connection still open after the drain period (an event
        // stream of a job that has not ended) is closed.
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(limits.drain, drained).await.is_err() {
            tracing::warn!(
                open = connections.len(),
                "closing HTTP connections still open after the drain period"
            );
            connections.abort_all();
        }
        Ok(())
    }
}

/// Counts requests and times them, by route (its pattern, so ids do not make new series),
/// method and status. Labels are static strings: no allocation per request.
/// Refuses (415) a POST to the job API that is not sent as JSON. A browser sends a cross-site
/// form, or a `fetch` without a body, with no preflight; with `Content-Type: application/json`
/// it must ask first, and nothing here allows it. So a page on another site cannot cancel,
/// retry, pause or submit through the browser of someone who can reach this service, keys or
/// no keys.
async fn json_posts_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.method() == axum::http::Method::POST && !is_json(request.headers()) {
        return axum::response::IntoResponse::into_response(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send POST requests with `Content-Type: application/json` (an empty body is fine)",
        ));
    }
    next.run(request).await
}

/// Whether the request says its body is JSON (`application/json`, parameters allowed).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn count_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|p| ROUTES.iter().find(|r| **r == p.as_str()).copied())
        .unwrap_or("other");
    let method = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::DELETE => "DELETE",
        _ => "other",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = status_label(response.status());
    metrics::counter!(
        "raindrop_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status
    )
    .increment(1);
    metrics::histogram!(
        "raindrop_http_request_duration_seconds",
        "route" => route,
        "method" => method
    )
    .record(started.elapsed().as_secs_f64());
    if method == "POST"
        && matches!(route, "/v1/jobs" | "/v1/jobs/batch")
        && let Some(code) = response.extensions().get::<ErrorCode>()
    {
        metrics::counter!("raindrop_submissions_refused_total", "reason" => code.as_str())
            .increment(1);
    }
    response
}

/// The job API's routes, as label values.
const ROUTES: [&str; 15] = [
    "/v1/jobs",
    "/v1/jobs/batch",
    "/v1/jobs/{id}",
    "/v1/jobs/{id}/events",
    "/v1/jobs/{id}/cancel",
    "/v1/queues",
    "/v1/queues/{name}/pause",
    "/v1/queues/{name}/resume",
    "/v1/dead-letters",
    "/v1/dead-letters/{id}/retry",
    "/metrics",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "other",
];

/// The statuses the API answers with, as label values.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

pub use crate::operations::prometheus;

/// Reads a JSON body of at most `limit` bytes into `T`, with errors as the API reports them.
pub(crate) async fn read_json<T: DeserializeOwned>(
    body: axum::body::Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body exceeds this service's limit of {limit} bytes"),
        )
    })?;
    let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("the body is not valid: {inner}"),
            )
        } else {
            ApiError::validation(vec![FieldError {
                field: path,
                message: inner.to_string(),
            }])
        }
    })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Raindrop job API",
        description = "Submit background jobs and follow them to their result."
    ),
    paths(
        jobs::submit,
        jobs::submit_batch,
        jobs::list,
        jobs::status,
        streams::events,
        jobs::cancel,
        admin::queues,
        admin::workers,
        admin::pause,
        admin::resume,
        admin::dead_letters,
        admin::retry_dead_letter,
        admin::purge_dead_letters,
        admin::healthz,
        admin::readyz,
        admin::metrics,
    ),
    components(schemas(ErrorBody, FieldError))
)]
struct ApiDoc;

/// The OpenAPI document of this service as configured: the API-key scheme and the answers of
/// authentication and rate limiting appear only when they are on.
pub(crate) fn document(state: &Shared) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    Guarded {
        keys: state.guard.keys.is_some(),
        // With keys, too many wrong ones from an address answer 429 as well.
        limits: state.guard.keys.is_some() || state.guard.limit.is_some() || state.quota.is_some(),
    }
    .modify(&mut doc);
    schema::type_submissions(&mut doc, state.control.served(), &state.schemas);
    doc
}

/// Adds to every route but the probes the 400 any of them may answer, and, when they are on, the
/// API-key scheme and the answers authentication and rate limiting may give.
struct Guarded {
    keys: bool,
    limits: bool,
}

/// What the scheme says about keys.
const KEY_HELP: &str = "An API key, when the service authenticates (`auth = \"api_key\"`); \
                        also accepted as `X-API-Key`";
/// What a 429 means.
const TOO_MANY: &str = "Over the key's rate limit, or too many wrong keys from this \
                        address lately (see `Retry-After`), or over the tenant's quota of \
                        waiting jobs";

impl utoipa::Modify for Guarded {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        if self.keys {
            let scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(KEY_HELP))
                .build();
            components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
        }
        let error = |description: &str| {
            let content = ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build();
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", content)
                    .build(),
            )
        };
        let answers = [
            (true, "400", "A malformed id, query or body"),
            (self.keys, "401", "No API key, or not a valid one"),
            (self.keys, "403", "The key lacks the scope this route needs"),
            (self.limits, "429", TOO_MANY),
        ];
        let open = ["/healthz", "/readyz", "/openapi.json"];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if open.contains(&path.as_str()) {
                continue;
            }
            if let Some(post) = &mut item.post {
                post.responses
                    .responses
                    .entry("415".to_owned())
                    .or_insert_with(|| error("Not sent as `Content-Type: application/json`"));
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.delete,
                &mut item.put,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                if self.keys {
                    let requirement =
                        SecurityRequirement::new::<&str, [&str; 0], &str>("api_key", []);
                    operation.security = Some(vec![requirement]);
                }
                for (_, status, description) in answers.iter().filter(|(on, _, _)| *on) {
                    operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| error(description));
                }
            }
        }
    }
}
