//! Who is calling: API keys (from an environment secret, kept only as SHA-256 hashes and
//! compared in constant time), the tenant and scopes each key carries, and the per-key rate
//! limit.
//!
//! The keys variable holds entries separated by `;` or newlines, each `TENANT:SCOPES:KEY` where
//! SCOPES is a comma-separated subset of `submit`, `read`, `admin` and KEY is the key itself or
//! `sha256:HEX`, its hash (so the environment need not hold the key in the clear):
//!
//! ```text
//! RAINDROP_API_KEYS="acme:submit,read:9f86d0…; ops:admin:sha256:2c26b4…"
//! ```

use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, ErrorCode};
use crate::control::View;
use crate::store::rate::{Decision, Limit};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Submit jobs and cancel or retry the tenant's own.
    Submit,
    /// Read the tenant's jobs, their events, queues and dead letters.
    Read,
    /// Everything, for every tenant: pause and resume queues, purge dead letters, metrics.
    Admin,
}

impl Scope {
    fn bit(self) -> u8 {
        match self {
            Scope::Submit => 1,
            Scope::Read => 2,
            Scope::Admin => 4,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "submit" => Some(Scope::Submit),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// One configured key: never the key itself, only its hash.
#[derive(Clone)]
struct KeyEntry {
    hash: [u8; 32],
    tenant: String,
    scopes: u8,
    /// A prefix of the hash, to name the key in logs and rate limits.
    id: Arc<str>,
}

/// The configured API keys.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<KeyEntry>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl ApiKeys {
    /// Parses keys in the format above. Errors name the entry by its position, never its key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, entry) in text
            .split([';', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let position = n + 1;
            let mut parts = entry.splitn(3, ':');
            let (Some(tenant), Some(scopes), Some(key)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "API key entry {position} is not `TENANT:SCOPES:KEY`"
                ));
            };
            let tenant = tenant.trim();
            if tenant.is_empty() {
                return Err(format!("API key entry {position} has no tenant"));
            }
            let scopes = scopes
                .split(',')
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        format!(
                            "API key entry {position} has an unknown scope `{}`: use submit, read, admin",
                            s.trim()
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let key = key.trim();
            let hash = match key.strip_prefix("sha256:") {
                Some(hex) => hex_digest(&hex.to_ascii_lowercase()).ok_or_else(|| {
                    format!("API key entry {position}: `sha256:` takes 64 hex digits")
                })?,
                None if key.len() < 16 => {
                    return Err(format!(
                        "API key entry {position}: a key needs at least 16 characters"
                    ));
                }
                None => sha256(key.as_bytes()),
            };
            keys.push(KeyEntry {
                hash,
                tenant: tenant.to_owned(),
                scopes: scopes.iter().fold(0, |bits, s| bits | s.bit()),
                id: hash[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into(),
            });
        }
        if keys.is_empty() {
            return Err("no API keys are configured".into());
        }
        Ok(Self { keys })
    }

    /// The keys in the environment variable `var`.
    pub fn from_env(var: &str) -> crate::Result<Self> {
        let text = std::env::var(var).map_err(|_| {
            crate::Error::Config(format!(
                "the service authenticates with API keys (`auth = \"api_key\"`), but `{var}` is not set: give it `TENANT:SCOPES:KEY` entries"
            ))
        })?;
        Self::parse(&text).map_err(|e| crate::Error::Config(format!("`{var}`: {e}")))
    }

    /// The caller who presents `presented`, if it is one of these keys.
    pub(crate) fn caller(&self, presented: &str) -> Option<Caller> {
        self.find(presented).map(|entry| Caller {
            tenant: Some(entry.tenant.clone()),
            scopes: entry.scopes,
            key_id: entry.id.clone(),
        })
    }

    /// The entry whose key is `presented`. Every configured hash is compared, in constant time,
    /// whatever matches, so timing tells nothing about the keys.
    fn find(&self, presented: &str) -> Option<&KeyEntry> {
        let hash = sha256(presented.as_bytes());
        let mut found = None;
        for entry in &self.keys {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(entry);
            }
        }
        found
    }
}

/// How the service authenticates, and its rate limit.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    /// `None`: every request is accepted (local development).
    pub(crate) keys: Option<ApiKeys>,
    pub(crate) limit: Option<Limit>,
}

impl Guard {
    /// Whether requests go through [`authenticate`].
    pub(crate) fn active(&self) -> bool {
        self.keys.is_some() || self.limit.is_some()
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's tenant; `None` when the service does not authenticate.
    pub tenant: Option<String>,
    scopes: u8,
    /// Identifies the key in logs and rate limits: a prefix of its hash, never the key.
    key_id: Arc<str>,
}

impl Caller {
    pub(crate) fn anonymous() -> Self {
        static ANONYMOUS: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        Self {
            tenant: None,
            scopes: Scope::Admin.bit(),
            key_id: ANONYMOUS.get_or_init(|| "anonymous".into()).clone(),
        }
    }

    /// Names the caller's key (without authentication: one name for everyone), never the key.
    pub(crate) fn key_id(&self) -> &Arc<str> {
        &self.key_id
    }

    /// Whether the caller has `scope` (admin has every scope).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// Refuses with 403 unless the caller has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this API key lacks the `{}` scope", scope.as_str()),
            ))
        }
    }

    /// Whether the caller may see a job of `tenant`: its own, or any with admin (or without
    /// authentication).
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        self.view().sees(tenant)
    }

    /// Whose jobs the caller sees: every tenant's with admin (so also without authentication),
    /// else its key's tenant's.
    pub(crate) fn view(&self) -> View {
        if self.has(Scope::Admin) {
            View::All
        } else {
            // Every key names a tenant (`ApiKeys::parse` refuses an empty one); were one
            // missing, the empty tenant, which no key has, sees no job.
            View::Tenant(self.tenant.clone().unwrap_or_default())
        }
    }
}

impl FromRequestParts<super::State> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &super::State) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        // Without keys and limits the guard is not installed at all: everyone may do anything.
        if !state.guard.active() {
            return Ok(Caller::anonymous());
        }
        Err(ApiError::new(
            ErrorCode::Internal,
            "the route is not behind authentication",
        ))
    }
}

pub(crate) fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(ErrorCode::Unauthorized, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"raindrop\""),
    );
    response
}

/// The key a request presents: `Authorization: Bearer KEY` or `X-API-Key: KEY`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn rate_headers(headers: &mut HeaderMap, decision: &Decision) {
    for (name, value) in [
        ("ratelimit-limit", u64::from(decision.limit)),
        ("ratelimit-remaining", u64::from(decision.remaining)),
        ("ratelimit-reset", seconds(decision.reset)),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    if !decision.allowed {
        retry_after(headers, decision.retry_after);
    }
}

/// Whole seconds, rounded up.
fn seconds(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `Retry-After`: in `wait`, at least a second.
pub(crate) fn retry_after(headers: &mut HeaderMap, wait: std::time::Duration) {
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds(wait).max(1)));
}

/// Why a request's key was not accepted.
#[derive(Debug)]
pub(crate) enum Refused {
    /// No key, or not a valid one (401): how to present one.
    Unauthorized(String),
    /// Too many wrong keys from the client lately (429): how long until it may try again.
    TooManyFailures(std::time::Duration),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Unauthorized(how) => unauthorized(&how),
            Refused::TooManyFailures(wait) => {
                let mut response = ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many wrong API keys from this address: retry in {} s",
                        seconds(wait).max(1)
                    ),
                )
                .into_response();
                retry_after(response.headers_mut(), wait);
                response
            }
        }
    }
}

/// Who presents `key` (anyone, when the service does not authenticate); why not otherwise,
/// with `client` refused outright when it has presented too many wrong keys lately (see
/// [`super::failures`]). `how` says how to present a key, for the 401.
pub(crate) fn identify(
    state: &super::State,
    client: Option<std::net::IpAddr>,
    key: Option<&str>,
    how: &str,
) -> Result<Caller, Refused> {
    let Some(keys) = &state.guard.keys else {
        return Ok(Caller::anonymous());
    };
    let Some(key) = key else {
        return Err(Refused::Unauthorized(how.to_owned()));
    };
    if let Some(wait) = state.failures.blocked(client) {
        return Err(Refused::TooManyFailures(wait));
    }
    keys.caller(key).ok_or_else(|| {
        state.failures.record(client);
        Refused::Unauthorized("the API key is not valid".to_owned())
    })
}

/// Takes a token of the rate limit for `caller`'s key; the 429 when there is none left.
pub(crate) async fn limit(
    state: &super::State,
    caller: &Caller,
) -> Result<Option<Decision>, Response> {
    let Some(limit) = &state.guard.limit else {
        return Ok(None);
    };
    let bucket = format!("api:{}", caller.key_id);
    let decision = state
        .control
        .engine()
        .store()
        .take_token(&bucket, limit, crate::job::now())
        .await
        .map_err(|err| ApiError::from(err).into_response())?;
    if !decision.allowed {
        tracing::debug!(key = %caller.key_id, tenant = ?caller.tenant, "rate limited");
        let mut response = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "too many requests for this key: retry in {} ms",
                decision.retry_after.as_millis()
            ),
        )
        .into_response();
        rate_headers(response.headers_mut(), &decision);
        return Err(response);
    }
    Ok(Some(decision))
}

/// Authenticates the request, applies the rate limit and hands the [`Caller`] to the route.
pub(crate) async fn authenticate(
    State(state): State<super::State>,
    mut request: Request,
    next: Next,
) -> Response {
    let client =
        super::failures::client(request.headers(), request.extensions(), state.behind_proxy);
    let key = presented(request.headers());
    let how = "this API needs a key: send `Authorization: Bearer <key>`";
    let caller = match identify(&state, client, key, how) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.into_response(),
    };
    let decision = match limit(&state, &caller).await {
        Ok(decision) => decision,
        Err(refusal) => return refusal,
    };
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    if let Some(decision) = decision {
        rate_headers(response.headers_mut(), &decision);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_tenants_scopes_and_hashes() {
        let hashed: String = sha256(b"ops-key-0123456789")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let keys = ApiKeys::parse(&format!(
            "acme:submit,read:acme-key-0123456789;\n ops:admin:sha256:{hashed}"
        ))
        .unwrap();
        let acme = keys.find("acme-key-0123456789").unwrap();
        assert_eq!(acme.tenant, "acme");
        assert_eq!(acme.scopes, Scope::Submit.bit() | Scope::Read.bit());
        assert_eq!(keys.find("ops-key-0123456789").unwrap().tenant, "ops");
        assert!(keys.find("acme-key-012345678").is_none());
        assert!(keys.find("").is_none());
    }

    #[test]
    fn bad_entries_are_named_by_position_never_by_key() {
        for (text, expected) in [
            ("acme:read", "entry 1 is not `TENANT:SCOPES:KEY`"),
            (
                "acme:read:k3y-0123456789abcdef; b:write:s3cret-0123456789",
                "entry 2 has an unknown scope `write`",
            ),
            ("acme:read:short", "at least 16 characters"),
            ("acme:read:sha256:abc", "64 hex digits"),
            ("", "no API keys"),
        ] {
            let err = ApiKeys::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains("s3cret") && !err.contains("k3y"), "{err}");
        }
        let debug = format!(
            "{:?}",
            ApiKeys::parse("acme:read:k3y-0123456789abcdef").unwrap()
        );
        assert!(!debug.contains("k3y"), "{debug}");
    }
}
