//! Token authentication, cross-site request protection and response
//! headers, applied to every route.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use offload::Backend;
use rand::RngCore;

use crate::api::ApiError;
use crate::state::AppState;
use crate::throttle::{client_key, retry_after_secs};

const SESSION_COOKIE: &str = "offload_session";
const CSRF_COOKIE: &str = "offload_csrf";

/// Scripts, styles and images only from the dashboard itself; no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The anti-CSRF token of this browser, echoed in every form.
#[derive(Debug, Clone)]
pub(crate) struct CsrfToken(pub String);

/// The path the dashboard is mounted at, without a trailing slash (empty
/// at the root). Links are built on it, so the router can be nested.
#[derive(Debug, Clone)]
pub(crate) struct BasePath(pub String);

/// The overview's path: the mount point itself, since axum's `nest`
/// answers `/admin` but not `/admin/`.
pub(crate) fn home_path(base: &str) -> String {
    if base.is_empty() {
        "/".to_owned()
    } else {
        base.to_owned()
    }
}

pub(crate) async fn guard<DB: Backend>(
    State(state): State<AppState<DB>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let base = base_path(&request);
    let is_api = path == "/api" || path.starts_with("/api/");
    let is_public = path.starts_with("/assets/") || path == "/login";
    let safe_method = matches!(*request.method(), Method::GET | Method::HEAD);

    if state.session.is_none() {
        if let Some(host) = foreign_host(request.headers(), &state.config.allowed_hosts) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "Host not allowed",
                format!(
                    "this dashboard has no token, so it answers only to loopback names \
                     (localhost, 127.0.0.1, [::1]), not to `Host: {host}`; set a token \
                     or allow the name"
                ),
            )
            .into_response();
        }
    }
    if !safe_method {
        if let Some(reason) = cross_site(request.headers()) {
            return ApiError::new(StatusCode::FORBIDDEN, "Cross-site request refused", reason)
                .into_response();
        }
        if is_api && !is_json(request.headers()) {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "JSON required",
                "admin API actions need `Content-Type: application/json`",
            )
            .into_response();
        }
    }

    if state.config.require_token && state.session.is_none() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "Token required",
            "this dashboard is reachable from other hosts and has no token configured",
        )
        .into_response();
    }
    if let (Some(token), Some(session)) = (state.config.token.as_deref(), &state.session) {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>();
        let client = client_key(peer.map(|ConnectInfo(addr)| *addr));
        let sends_credentials = request.headers().contains_key(header::AUTHORIZATION)
            || cookie(request.headers(), SESSION_COOKIE).is_some();
        if !is_public && sends_credentials {
            // Checked before the token: otherwise the right guess would
            // still get through at full speed.
            if let Err(wait) = state.throttle.check(client, Instant::now()) {
                return too_many_guesses(wait);
            }
        }
        if !is_public && !authorized(request.headers(), token, session) {
            if sends_credentials {
                // A session cookie is a digest anyone can compute from a
                // guess, so a wrong one is a guess too.
                state.throttle.failed(client, Instant::now());
            }
            if is_api || !safe_method {
                let mut response = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "send `Authorization: Bearer <token>` or log in",
                )
                .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"offload\""),
                );
                return response;
            }
            let wanted = request
                .extensions()
                .get::<OriginalUri>()
                .map(|uri| uri.0.clone())
                .unwrap_or_else(|| request.uri().clone());
            let next_path = wanted
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".to_owned());
            let target = format!("{base}/login?next={}", urlencode(&next_path));
            return Redirect::to(&target).into_response();
        }
    }

    let (csrf, fresh) = match cookie(request.headers(), CSRF_COOKIE) {
        Some(value) if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (value.to_owned(), false)
        }
        _ => (random_hex(), true),
    };
    request.extensions_mut().insert(CsrfToken(csrf.clone()));
    request.extensions_mut().insert(BasePath(base.clone()));

    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if fresh && !is_api {
        if let Ok(value) = HeaderValue::from_str(&cookie_header(CSRF_COOKIE, &csrf, &base)) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    set_security_headers(headers);
    response
}

/// 429 with `Retry-After`, for a client out of token guesses.
pub(crate) fn too_many_guesses(wait: Duration) -> Response {
    let secs = retry_after_secs(wait);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many wrong tokens",
        format!("too many wrong tokens from this address; try again in {secs} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    set_security_headers(response.headers_mut());
    response
}

fn set_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Where the router is mounted: the original path minus the part the
/// router saw.
fn base_path(request: &Request) -> String {
    let inner = request.uri().path();
    let Some(original) = request.extensions().get::<OriginalUri>() else {
        return String::new();
    };
    let outer = original.0.path();
    let base = outer
        .strip_suffix(inner)
        .unwrap_or_else(|| if inner == "/" { outer } else { "" });
    base.trim_end_matches('/').to_owned()
}

/// Why a state-changing request looks cross-site, if it does. Browsers
/// send `Sec-Fetch-Site` and `Origin` on such requests; tools like curl
/// send neither and are let through (they cannot ride a victim's cookies).
fn cross_site(headers: &HeaderMap) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Some("the request came from another site");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.trim_end_matches('/'));
        if origin_host.is_none() || origin_host != host {
            return Some("the request's Origin does not match its Host");
        }
    }
    None
}

/// The request's `Host`, if it names neither a loopback address nor an
/// allowed name. Browsers always send `Host`, so a request without one
/// is no DNS-rebinding page and passes.
fn foreign_host<'a>(headers: &'a HeaderMap, allowed: &[String]) -> Option<&'a str> {
    let value = headers.get(header::HOST)?;
    let Ok(host) = value.to_str() else {
        return Some("<not ASCII>");
    };
    let name = host_name(host).to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    let loopback = name == "localhost"
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || allowed.iter().any(|a| a == name) {
        None
    } else {
        Some(host)
    }
}

/// `host` without its port: `[::1]:80` → `[::1]`, `localhost:80` → `localhost`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn authorized(headers: &HeaderMap, token: &str, session: &str) -> bool {
    if headers.contains_key(header::AUTHORIZATION) {
        return bearer_matches(headers, token);
    }
    cookie(headers, SESSION_COOKIE)
        .is_some_and(|value| constant_time_eq(value.as_bytes(), session.as_bytes()))
}

/// Whether the request sends `Authorization: Bearer <token>`.
pub(crate) fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

/// Whether the form's token is this browser's.
pub(crate) fn csrf_matches(expected: &CsrfToken, given: &str) -> bool {
    constant_time_eq(expected.0.as_bytes(), given.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Scoped to the mount point itself (`Path=/admin`, not `/admin/`), so the
/// browser also sends it to the overview at `/admin`.
fn cookie_header(name: &str, value: &str, base: &str) -> String {
    let path = home_path(base);
    format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict")
}

/// `Set-Cookie` for a logged-in browser.
pub(crate) fn session_cookie(session: &str, base: &str) -> String {
    cookie_header(SESSION_COOKIE, session, base)
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encodes everything but unreserved characters.
pub(crate) fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A local path to return to after login; anything else goes to the
/// overview, so the login page cannot redirect off-site.
pub(crate) fn safe_next(next: Option<&str>, base: &str) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control) =>
        {
            path.to_owned()
        }
        _ => home_path(base),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_redirect_stays_on_site() {
        assert_eq!(safe_next(Some("/jobs?state=x"), ""), "/jobs?state=x");
        assert_eq!(safe_next(Some("//evil.example/"), "/admin"), "/admin");
        assert_eq!(safe_next(Some("https://evil.example/"), ""), "/");
        assert_eq!(safe_next(Some("/\\evil.example"), ""), "/");
    }

    #[test]
    fn cookies_reach_the_mount_point_itself() {
        assert_eq!(
            session_cookie("abc", "/admin"),
            "offload_session=abc; Path=/admin; HttpOnly; SameSite=Strict"
        );
        assert!(session_cookie("abc", "").contains("; Path=/;"));
    }

    #[test]
    fn only_loopback_hosts_pass_without_a_token() {
        let check = |host: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static(host));
            foreign_host(&headers, &["jobs.internal".to_owned()]).is_none()
        };
        for host in [
            "127.0.0.1:3917",
            "127.0.0.1",
            "localhost:3917",
            "LOCALHOST",
            "localhost.:80",
            "[::1]:3917",
            "[::1]",
            "127.0.0.2:80",
            "jobs.internal:8080",
        ] {
            assert!(check(host), "{host} should pass");
        }
        for host in [
            "evil.example:3917",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example:80",
            "[::2]:80",
            "10.0.0.1:80",
            "jobs.internal.evil:80",
        ] {
            assert!(!check(host), "{host} should be refused");
        }
        assert!(foreign_host(&HeaderMap::new(), &[]).is_none());
    }

    #[test]
    fn foreign_origin_is_cross_site() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert_eq!(cross_site(&headers), None);
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_site(&headers).is_some());
    }
}
