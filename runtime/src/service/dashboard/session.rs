//! The dashboard's sessions: who a browser logged in as, kept on the server, and the tokens its
//! forms carry.
//!
//! Logging in with an API key opens a session: a random id from the OS's generator, which is
//! all the browser's `raindrop_session` cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over
//! HTTPS) holds. The server keeps the caller the key names (tenant, scopes, the key's id), never
//! the key. A session ends when its browser logs out (a form, so with a token), after
//! [`SessionLifetime::idle`] without a request, or [`SessionLifetime::absolute`] after login,
//! whichever comes first. Sessions live in this process's memory, at most [`MAX_SESSIONS`] (the
//! oldest go first): a restart logs everyone out, and several service processes behind one
//! address need sticky sessions (or their users log in again on each).
//!
//! Every form carries a token: the HMAC-SHA256, under a secret drawn when the process starts, of
//! the session's id. Another site can neither read it nor compute it, and it is worth nothing with
//! another session. The login form has one too, bound the same way to a `raindrop_login` cookie
//! the login page sets, so another site cannot log a browser in under its own key. Without API
//! keys there is nothing to log in to: the cookie's id then only binds the form tokens, and is
//! not stored.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::Form;
use axum::extract::State as Extract;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::Visitor;
use super::layout::{PageError, page};
use crate::service::auth::{self, Caller};
use crate::service::{ErrorCode, State};

const SESSION_COOKIE: &str = "raindrop_session";
const LOGIN_COOKIE: &str = "raindrop_login";
/// Sessions kept at most; opening one more drops the expired ones, then the oldest.
pub(crate) const MAX_SESSIONS: usize = 10_000;
/// Most sessions open at once for one key: one key logging in again and again ends its own
/// oldest sessions, not everyone else's.
const MAX_SESSIONS_PER_KEY: usize = 100;
/// How long the login page's cookie (and so its form) stays good.
const LOGIN_FORM_LIFETIME: Duration = Duration::from_secs(3600);

/// How long a dashboard session lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetime {
    /// From login, however busy the session is (default 12 hours).
    pub absolute: Duration,
    /// Without a request (default 1 hour; the overview's refresh counts as one).
    pub idle: Duration,
}

impl Default for SessionLifetime {
    fn default() -> Self {
        Self {
            absolute: Duration::from_secs(12 * 3600),
            idle: Duration::from_secs(3600),
        }
    }
}

/// A session's id: 32 bytes from the OS's random generator, hex in the cookie.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct SessionId([u8; 32]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The id is a credential: never in logs.
        f.write_str("SessionId(..)")
    }
}

impl SessionId {
    fn random() -> Result<Self, PageError> {
        let mut bytes = [0; 32];
        getrandom::fill(&mut bytes).map_err(|_| {
            PageError::new(ErrorCode::Internal, "the system's random generator failed")
        })?;
        Ok(Self(bytes))
    }

    fn parse(text: &str) -> Option<Self> {
        hex_bytes(text).map(Self)
    }

    fn hex(&self) -> String {
        hex(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_bytes(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts` under `key` (at most one block long).
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    debug_assert!(key.len() <= 64, "a longer key would be hashed first");
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// What a form token is for, so a token of one kind is never good for another.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Login,
    Forms,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Login => b"raindrop dashboard login\0",
            Purpose::Forms => b"raindrop dashboard forms\0",
        }
    }
}

/// One logged-in browser.
struct Session {
    caller: Caller,
    opened: Instant,
    seen: Instant,
}

/// The sessions of this process, and the secret its form tokens are made with.
pub(crate) struct Sessions {
    secret: [u8; 32],
    lifetime: SessionLifetime,
    capacity: usize,
    open: Mutex<HashMap<SessionId, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("lifetime", &self.lifetime)
            .field("open", &self.len())
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// No sessions yet, and a fresh secret from the OS's random generator.
    pub(crate) fn new(lifetime: SessionLifetime) -> crate::Result<Self> {
        let mut secret = [0; 32];
        getrandom::fill(&mut secret).map_err(|err| {
            crate::Error::Config(format!(
                "the system's random generator failed, so the dashboard cannot make session secrets: {err}"
            ))
        })?;
        Ok(Self {
            secret,
            lifetime,
            capacity: MAX_SESSIONS,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn set_lifetime(&mut self, lifetime: SessionLifetime) {
        self.lifetime = lifetime;
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Session>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.sessions().len()
    }

    fn expired(&self, session: &Session, at: Instant) -> bool {
        at >= session.opened + self.lifetime.absolute || at >= session.seen + self.lifetime.idle
    }

    /// Opens a session for `caller`; drops the expired sessions, then the oldest, to make room.
    fn open(&self, caller: Caller) -> Result<SessionId, PageError> {
        let id = SessionId::random()?;
        let at = Instant::now();
        let mut sessions = self.sessions();
        let key = caller.key_id().clone();
        let of_key = |sessions: &HashMap<SessionId, Session>| {
            sessions
                .iter()
                .filter(|(_, s)| *s.caller.key_id() == key)
                .min_by_key(|(_, s)| s.opened)
                .map(|(id, _)| *id)
        };
        if sessions
            .values()
            .filter(|s| *s.caller.key_id() == key)
            .count()
            >= MAX_SESSIONS_PER_KEY
            && let Some(oldest) = of_key(&sessions)
        {
            sessions.remove(&oldest);
        }
        if sessions.len() >= self.capacity {
            sessions.retain(|_, session| !self.expired(session, at));
        }
        while sessions.len() >= self.capacity {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.opened)
                .map(|(id, _)| *id)
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(
            id,
            Session {
                caller,
                opened: at,
                seen: at,
            },
        );
        Ok(id)
    }

    /// The caller of session `id`, if it is open (which counts as a request for its idle time).
    fn find(&self, id: &SessionId) -> Option<Caller> {
        let at = Instant::now();
        let mut sessions = self.sessions();
        let session = sessions.get_mut(id)?;
        if self.expired(session, at) {
            sessions.remove(id);
            return None;
        }
        session.seen = at;
        Some(session.caller.clone())
    }

    fn end(&self, id: &SessionId) {
        self.sessions().remove(id);
    }

    fn token(&self, purpose: Purpose, id: &SessionId) -> FormToken {
        FormToken(hex(&hmac_sha256(&self.secret, &[purpose.label(), &id.0])))
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached the service over HTTPS, so its cookies get `Secure`. The service
/// itself speaks plain HTTP: only a proxy it was declared to be behind
/// ([`crate::service::Service::behind_proxy`]) can say so, with `X-Forwarded-Proto: https`.
fn over_https(state: &State, headers: &HeaderMap) -> bool {
    state.behind_proxy
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: `value` for `name` on `path` for `max_age` (`None`: remove it).
fn set_cookie(name: &str, value: &str, path: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    );
    // Names, hex ids, paths and digits are all valid header text.
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
}

/// Who a dashboard request comes from: its session's caller and form token, with the cookie to
/// set when the browser had none. `None` when the service authenticates and the browser is not
/// logged in.
pub(super) fn visitor(
    state: &State,
    headers: &HeaderMap,
) -> Result<Option<(Visitor, Option<HeaderValue>)>, PageError> {
    let id = cookie(headers, SESSION_COOKIE).and_then(SessionId::parse);
    let sessions = &state.sessions;
    if state.guard.keys.is_some() {
        let Some((id, caller)) = id.and_then(|id| Some((id, sessions.find(&id)?))) else {
            return Ok(None);
        };
        let token = sessions.token(Purpose::Forms, &id);
        let visitor = Visitor {
            caller,
            token,
            session: Some(id),
        };
        return Ok(Some((visitor, None)));
    }
    // Without keys everyone may do everything: the id only binds this browser's form tokens.
    let (id, cookie) = match id {
        Some(id) => (id, None),
        None => {
            let id = SessionId::random()?;
            let cookie = set_cookie(
                SESSION_COOKIE,
                &id.hex(),
                "/dashboard",
                sessions.lifetime.absolute,
                over_https(state, headers),
            );
            (id, Some(cookie))
        }
    };
    let visitor = Visitor {
        caller: Caller::anonymous(),
        token: sessions.token(Purpose::Forms, &id),
        session: None,
    };
    Ok(Some((visitor, cookie)))
}

/// The token the forms of a page carry.
#[derive(Clone)]
pub(super) struct FormToken(String);

impl std::fmt::Debug for FormToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FormToken(..)")
    }
}

impl FormToken {
    /// The token, as a form's hidden field holds it.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token (compared in constant time).
    fn matches(&self, presented: &str) -> bool {
        presented.len() == self.0.len() && bool::from(presented.as_bytes().ct_eq(self.0.as_bytes()))
    }

    /// Refuses a form whose token is not this one (the one of this browser's session).
    pub(super) fn check(&self, form: &ActionForm) -> Result<(), PageError> {
        if self.matches(&form.csrf) {
            Ok(())
        } else {
            Err(PageError::new(
                ErrorCode::Csrf,
                "the form's token is not this session's: reload the page and try again",
            ))
        }
    }
}

/// A form's fields: its token, and a confirmation where one is asked for.
#[derive(Debug, Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    pub(super) confirm: Option<String>,
}

pub(super) async fn login_form(Extract(state): Extract<State>, headers: HeaderMap) -> Response {
    // A browser keeps its login cookie while it is good, so two open login tabs both work.
    let (id, fresh) = match cookie(&headers, LOGIN_COOKIE).and_then(SessionId::parse) {
        Some(id) => (id, false),
        None => match SessionId::random() {
            Ok(id) => (id, true),
            Err(err) => return err.into_response(),
        },
    };
    let token = state.sessions.token(Purpose::Login, &id);
    let body = page(
        "Log in",
        None,
        None,
        html! {
            form method="post" action="/dashboard/login" {
                input type="hidden" name="csrf" value=(token.as_str());
                label { "API key " input type="password" name="key" autocomplete="current-password" required; }
                " "
                button type="submit" { "Log in" }
            }
            p.muted { "The key opens a session on the server; the browser keeps only the session's id." }
        },
    );
    let mut response = body.into_response();
    if fresh {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(
                LOGIN_COOKIE,
                &id.hex(),
                "/dashboard/login",
                LOGIN_FORM_LIFETIME,
                over_https(&state, &headers),
            ),
        );
    }
    response
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    key: String,
}

pub(super) async fn login(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    extensions: Extensions,
    Form(form): Form<LoginForm>,
) -> Response {
    let login = cookie(&headers, LOGIN_COOKIE).and_then(SessionId::parse);
    let bound = login.is_some_and(|id| {
        state
            .sessions
            .token(Purpose::Login, &id)
            .matches(&form.csrf)
    });
    if !bound {
        return PageError::new(
            ErrorCode::Csrf,
            "the login form's token is not this browser's: open the login page again",
        )
        .into_response();
    }
    if state.guard.keys.is_none() {
        // Nothing to log in to: everyone is let in.
        return Redirect::to("/dashboard").into_response();
    }
    let client = crate::service::failures::client(&headers, &extensions, state.behind_proxy);
    let caller = match auth::identify(&state, client, Some(form.key.trim()), "") {
        Ok(caller) => caller,
        Err(auth::Refused::Unauthorized(_)) => {
            let body = page(
                "Log in",
                None,
                None,
                html! { p { "That key is not valid." } p { a href="/dashboard/login" { "Try again" } } },
            );
            return (StatusCode::UNAUTHORIZED, body).into_response();
        }
        Err(auth::Refused::TooManyFailures(wait)) => {
            let mut response = PageError::new(
                ErrorCode::RateLimited,
                "too many failed logins from this address: wait a minute and try again",
            )
            .into_response();
            auth::retry_after(response.headers_mut(), wait);
            return response;
        }
    };
    let session = match state.sessions.open(caller) {
        Ok(session) => session,
        Err(err) => return err.into_response(),
    };
    let secure = over_https(&state, &headers);
    let mut response = Redirect::to("/dashboard").into_response();
    let cookies = response.headers_mut();
    // A session the browser had before is replaced, never reused.
    if let Some(old) = cookie(&headers, SESSION_COOKIE).and_then(SessionId::parse) {
        state.sessions.end(&old);
    }
    cookies.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &session.hex(),
            "/dashboard",
            state.sessions.lifetime.absolute,
            secure,
        ),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/dashboard/login", Duration::ZERO, secure),
    );
    response
}

/// Ends the browser's session, on the server too; a form, so it needs the session's token.
pub(super) async fn logout(
    Extract(state): Extract<State>,
    visitor: Visitor,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    visitor.token.check(&form)?;
    if let Some(id) = &visitor.session {
        state.sessions.end(id);
    }
    let target = if state.guard.keys.is_some() {
        "/dashboard/login"
    } else {
        "/dashboard"
    };
    let mut response = Redirect::to(target).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            "",
            "/dashboard",
            Duration::ZERO,
            over_https(&state, &headers),
        ),
    );
    Ok(response)
}

/// A button posting the page's form token to `path`.
pub(super) fn action(path: &str, label: &str, token: &FormToken) -> Markup {
    html! {
        form method="post" action=(path) {
            input type="hidden" name="csrf" value=(token.as_str());
            button type="submit" { (label) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1 of RFC 4231.
        let mac = hmac_sha256(&[0x0b; 20], &[b"Hi ", b"There"]);
        assert_eq!(
            hex(&mac),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn ids_round_trip_and_nothing_else_parses() {
        let id = SessionId::random().unwrap();
        assert_eq!(SessionId::parse(&id.hex()), Some(id));
        assert_ne!(SessionId::random().unwrap(), id);
        for text in ["", "f", &"f".repeat(32), &"g".repeat(64), &"é".repeat(32)] {
            assert!(SessionId::parse(text).is_none(), "{text}");
        }
        assert_eq!(format!("{id:?}"), "SessionId(..)");
    }

    #[tokio::test(start_paused = true)]
    async fn the_session_store_is_bounded_and_drops_the_oldest() {
        let mut sessions = Sessions::new(SessionLifetime::default()).unwrap();
        sessions.capacity = 3;
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(sessions.open(Caller::anonymous()).unwrap());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(sessions.len(), 3);
        assert!(sessions.find(&ids[0]).is_none() && sessions.find(&ids[1]).is_none());
        assert!(ids[2..].iter().all(|id| sessions.find(id).is_some()));
    }

    #[tokio::test(start_paused = true)]
    async fn one_key_logging_in_again_and_again_ends_only_its_own_sessions() {
        let sessions = Sessions::new(SessionLifetime::default()).unwrap();
        let other = sessions.open(Caller::anonymous()).unwrap();
        let keys = crate::service::ApiKeys::parse("acme:read:acme-read-0123456789").unwrap();
        let flooder = keys.caller("acme-read-0123456789").unwrap();
        let mut ids = Vec::new();
        for _ in 0..MAX_SESSIONS_PER_KEY + 5 {
            ids.push(sessions.open(flooder.clone()).unwrap());
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(sessions.len(), MAX_SESSIONS_PER_KEY + 1);
        assert!(
            sessions.find(&other).is_some(),
            "another's session survives"
        );
        assert!(sessions.find(&ids[0]).is_none() && sessions.find(&ids[5]).is_some());
    }

    #[test]
    fn tokens_differ_by_session_and_purpose() {
        let sessions = Sessions::new(SessionLifetime::default()).unwrap();
        let (a, b) = (SessionId::random().unwrap(), SessionId::random().unwrap());
        let token = sessions.token(Purpose::Forms, &a);
        assert!(token.matches(sessions.token(Purpose::Forms, &a).as_str()));
        assert!(!token.matches(sessions.token(Purpose::Forms, &b).as_str()));
        assert!(!token.matches(sessions.token(Purpose::Login, &a).as_str()));
        let other = Sessions::new(SessionLifetime::default()).unwrap();
        assert!(!token.matches(other.token(Purpose::Forms, &a).as_str()));
    }
}
