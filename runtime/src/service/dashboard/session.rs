//! The dashboard's session: the API key a browser logged in with (kept in an `HttpOnly`,
//! `SameSite=Strict` cookie only the dashboard reads), logging in and out, and the token every
//! form carries (double submit: it must match this browser's cookie).

use axum::Form;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::layout::{PageError, page};
use crate::service::{ErrorCode, State};

const KEY_COOKIE: &str = "raindrop_key";
const CSRF_COOKIE: &str = "raindrop_csrf";

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

/// The API key this browser logged in with.
pub(super) fn key(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, KEY_COOKIE)
}

/// The token the forms of a page carry.
#[derive(Debug, Clone)]
pub(super) struct FormToken(String);

impl FormToken {
    /// The browser's token, or a fresh one (`true`) when it has none yet.
    pub(super) fn of(headers: &HeaderMap) -> (Self, bool) {
        match cookie(headers, CSRF_COOKIE) {
            Some(token) if token.len() == 32 => (Self(token.to_owned()), false),
            _ => (Self(format!("{:032x}", fastrand::u128(..))), true),
        }
    }

    /// The cookie that gives the browser this token.
    pub(super) fn cookie(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={}; Path=/dashboard; HttpOnly; SameSite=Strict",
            self.0
        ))
        .ok()
    }

    /// The token, as a form's hidden field holds it.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    /// Refuses a form whose token is not this one (the one in the browser's cookie).
    pub(super) fn check(&self, form: &ActionForm) -> Result<(), PageError> {
        let same = form.csrf.len() == self.0.len()
            && bool::from(form.csrf.as_bytes().ct_eq(self.0.as_bytes()));
        if same {
            Ok(())
        } else {
            Err(PageError::new(
                ErrorCode::Csrf,
                "the form's token does not match this browser's: reload the page and try again",
            ))
        }
    }
}

/// A form's fields: its token, and a confirmation where one is asked for.
#[derive(Debug, Deserialize)]
pub(super) struct ActionForm {
    csrf: String,
    #[serde(default)]
    pub(super) confirm: Option<String>,
}

pub(super) async fn login_form() -> Markup {
    page(
        "Log in",
        None,
        html! {
            form method="post" action="/dashboard/login" {
                label { "API key " input type="password" name="key" autocomplete="current-password" required; }
                " "
                button type="submit" { "Log in" }
            }
            p.muted { "The key is kept in a cookie only this dashboard reads." }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    key: String,
}

pub(super) async fn login(Extract(state): Extract<State>, Form(form): Form<LoginForm>) -> Response {
    let key = form.key.trim();
    let valid = state
        .guard
        .keys
        .as_ref()
        .is_none_or(|keys| keys.find_tenant(key).is_some());
    if !valid || key.contains([';', ',', ' ']) {
        let body = page(
            "Log in",
            None,
            html! { p { "That key is not valid." } p { a href="/dashboard/login" { "Try again" } } },
        );
        return (StatusCode::UNAUTHORIZED, body).into_response();
    }
    let mut response = Redirect::to("/dashboard").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{KEY_COOKIE}={key}; Path=/dashboard; HttpOnly; SameSite=Strict"
    )) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

pub(super) async fn logout() -> Response {
    let mut response = Redirect::to("/dashboard/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "raindrop_key=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
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
