//! The login form: a token in, a session cookie out, wrong tokens throttled.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Extension, Form, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use minijinja::context;
use offload::Backend;
use serde::Deserialize;

use super::{check_form, see_other, HasCsrf, Page};
use crate::security::{safe_next, session_cookie, BasePath, CsrfToken};
use crate::state::AppState;
use crate::throttle::{client_key, retry_after_secs};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

pub(crate) async fn login_form<DB: Backend>(
    State(state): State<AppState<DB>>,
    Extension(BasePath(base)): Extension<BasePath>,
    Extension(CsrfToken(csrf)): Extension<CsrfToken>,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let page = Page {
        state: &state,
        base: &base,
        csrf: &csrf,
    };
    let next = safe_next(query.ok().and_then(|Query(q)| q.next).as_deref(), &base);
    page.render(
        StatusCode::OK,
        "login.html",
        context! { nav => "login", next },
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    csrf: String,
    token: String,
    #[serde(default)]
    next: Option<String>,
}

impl HasCsrf for LoginForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub(crate) async fn login<DB: Backend>(
    State(state): State<AppState<DB>>,
    Extension(BasePath(base)): Extension<BasePath>,
    Extension(csrf): Extension<CsrfToken>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let page = Page {
        state: &state,
        base: &base,
        csrf: &csrf.0,
    };
    let form = match check_form(form, &csrf) {
        Ok(form) => form,
        Err(error) => return page.error(error),
    };
    let next = safe_next(form.next.as_deref(), &base);
    let Some(session) = state.session.as_deref() else {
        return see_other(&next);
    };
    let client = client_key(client.map(|Extension(ConnectInfo(addr))| addr));
    if let Err(wait) = state.throttle.check(client, Instant::now()) {
        let secs = retry_after_secs(wait);
        let mut response = page.render(
            StatusCode::TOO_MANY_REQUESTS,
            "login.html",
            context! {
                nav => "login",
                next,
                login_error => format!("Too many wrong tokens: try again in {secs} s."),
            },
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return response;
    }
    // Compares digests, so the comparison's timing says nothing about the token.
    let given = crate::state::session_value(form.token.trim());
    if given.as_bytes() != session.as_bytes() {
        state.throttle.failed(client, Instant::now());
        return page.render(
            StatusCode::UNAUTHORIZED,
            "login.html",
            context! { nav => "login", next, login_error => "That token is not right." },
        );
    }
    let mut response = see_other(&next);
    if let Ok(cookie) = HeaderValue::from_str(&session_cookie(session, &base)) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}
