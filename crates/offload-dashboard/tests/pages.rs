//! The HTML dashboard: escaping, CSRF, tokens and mounting.

mod support;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use offload::{Client, JobState, NewJob};
use offload_dashboard::DashboardConfig;
use offload_test_fixture::{get, send, Reply};
use support::*;

/// The HTML with the slash entity decoded (the templates escape `/`).
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
}

fn set_cookies(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect()
}

/// The hidden CSRF field's value on a page.
fn csrf_field(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("page has a form") + marker.len();
    html[start..start + 64].to_owned()
}

fn form_post(uri: &str, cookie: &str, body: String) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookie)
        .body(Body::from(body))
        .expect("request")
}

#[tokio::test]
async fn pages_show_hostile_job_fields_as_text() {
    let (_db, pool) = sqlite_pool().await;
    let mut job = NewJob::new(
        "<img src=x onerror=alert(1)>",
        r#"{"html":"<script>alert('args')</script>"}"#,
    );
    job.tags = vec!["<script>alert('tag')</script>".to_owned()];
    let id = Client::new(pool.clone()).insert(&[job]).await.unwrap()[0].id;
    // Enqueues refuse such a queue name; a row written by other means can
    // still hold one.
    sqlx::query("UPDATE offload_jobs SET queue = '<b>queue</b>' WHERE id = ?1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let app = offload_dashboard::router(pool, DashboardConfig::new());
    for uri in ["/".to_owned(), "/jobs".to_owned(), format!("/jobs/{id}")] {
        let reply = send(&app, get(&uri)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
        assert!(reply.content_type().starts_with("text/html"));
        assert!(
            !reply.text().contains("<script>alert"),
            "{uri} runs a script"
        );
        assert!(!reply.text().contains("<img src=x"), "{uri} injects markup");
        assert!(!reply.text().contains("<b>queue"), "{uri} injects markup");
        assert!(
            reply.text().contains("&lt;b&gt;queue&lt;&#x2f;b&gt;")
                || reply.text().contains("&lt;b&gt;queue"),
            "{uri} shows the queue"
        );
        let csp = reply.headers.get(header::CONTENT_SECURITY_POLICY).unwrap();
        assert!(csp.to_str().unwrap().contains("script-src 'self'"));
    }
    let detail = send(&app, get(&format!("/jobs/{id}"))).await;
    assert!(
        detail.text().contains("&lt;script&gt;alert("),
        "args shown as text"
    );
}

#[tokio::test]
async fn form_actions_need_this_browsers_csrf_token() {
    let (_db, pool) = sqlite_pool().await;
    let id = insert(&pool, &[("default", false, &[])]).await[0];
    let app = offload_dashboard::router(pool.clone(), DashboardConfig::new());
    let page = send(&app, get(&format!("/jobs/{id}"))).await;
    let cookie = set_cookies(&page).join("; ");
    let token = csrf_field(&page.text());
    assert!(cookie.contains(&token), "the form echoes the cookie");

    let forged = send(
        &app,
        form_post(
            &format!("/jobs/{id}/cancel"),
            &cookie,
            format!("csrf={}", "0".repeat(64)),
        ),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let missing = send(
        &app,
        form_post(&format!("/jobs/{id}/cancel"), &cookie, String::new()),
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let client = Client::new(pool.clone());
    assert_eq!(
        client.job(id).await.unwrap().unwrap().state,
        JobState::Available
    );

    let mut cross_site = form_post(
        &format!("/jobs/{id}/cancel"),
        &cookie,
        format!("csrf={token}"),
    );
    cross_site
        .headers_mut()
        .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    cross_site
        .headers_mut()
        .insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(send(&app, cross_site).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        client.job(id).await.unwrap().unwrap().state,
        JobState::Available
    );

    let done = send(
        &app,
        form_post(
            &format!("/jobs/{id}/cancel"),
            &cookie,
            format!("csrf={token}"),
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(
        done.headers.get(header::LOCATION).unwrap(),
        &format!("/jobs/{id}?notice=cancel")
    );
    assert_eq!(
        client.job(id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );

    // The API refuses actions that a cross-site form could send.
    let plain = send(
        &app,
        Request::post(format!("/api/jobs/{id}/delete"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(plain.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(client.job(id).await.unwrap().is_some());
}

#[tokio::test]
async fn bulk_form_acts_on_the_filtered_jobs() {
    let (_db, pool) = sqlite_pool().await;
    let ids = insert(
        &pool,
        &[("a", false, &[]), ("a", false, &[]), ("b", false, &[])],
    )
    .await;
    let app = offload_dashboard::router(pool.clone(), DashboardConfig::new());
    let page = send(&app, get("/jobs?queue=a")).await;
    let cookie = set_cookies(&page).join("; ");
    let token = csrf_field(&page.text());
    let reply = send(
        &app,
        form_post(
            "/jobs/bulk",
            &cookie,
            format!("csrf={token}&action=cancel&queue=a"),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    let location = reply
        .headers
        .get(header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(location.contains("notice=bulk_cancel&n=2"), "{location}");
    let client = Client::new(pool.clone());
    assert_eq!(
        client.job(ids[0]).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(
        client.job(ids[2]).await.unwrap().unwrap().state,
        JobState::Available
    );
    let notice = send(&app, get(location)).await;
    assert!(
        notice.text().contains("2 jobs cancelled."),
        "{}",
        notice.text()
    );
}

#[tokio::test]
async fn token_protects_pages_and_api() {
    let (_db, pool) = sqlite_pool().await;
    let token = "correct-horse-battery";
    let app = offload_dashboard::router(pool, DashboardConfig::new().token(token));

    let api = send(&app, get("/api/jobs")).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    let bearer = send(
        &app,
        Request::get("/api/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(bearer.status, StatusCode::OK);
    let wrong = send(
        &app,
        Request::get("/api/jobs")
            .header(header::AUTHORIZATION, "Bearer nope")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let page = send(&app, get("/jobs?state=discarded")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers.get(header::LOCATION).unwrap(),
        "/login?next=%2Fjobs%3Fstate%3Ddiscarded"
    );
    let login = send(&app, get("/login?next=%2Fjobs")).await;
    let cookie = set_cookies(&login).join("; ");
    let csrf = csrf_field(&login.text());
    let bad = send(
        &app,
        form_post(
            "/login",
            &cookie,
            format!("csrf={csrf}&token=guess&next=%2Fjobs"),
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let good = send(
        &app,
        form_post(
            "/login",
            &cookie,
            format!("csrf={csrf}&token={token}&next=%2Fjobs"),
        ),
    )
    .await;
    assert_eq!(good.status, StatusCode::SEE_OTHER);
    assert_eq!(good.headers.get(header::LOCATION).unwrap(), "/jobs");
    let session = set_cookies(&good).join("; ");
    assert!(
        !session.contains(token),
        "the cookie holds a digest, not the token"
    );
    let in_page = send(
        &app,
        Request::get("/jobs")
            .header(header::COOKIE, format!("{cookie}; {session}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(in_page.status, StatusCode::OK);
}

/// A request from `peer`, as `into_make_service_with_connect_info` passes it.
fn from_peer(mut request: Request<Body>, peer: &str) -> Request<Body> {
    let addr: std::net::SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

fn bearer(token: &str) -> Request<Body> {
    Request::get("/api/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn wrong_tokens_are_throttled_per_client() {
    let (_db, pool) = sqlite_pool().await;
    let token = "correct-horse-battery";
    let app = offload_dashboard::router(pool, DashboardConfig::new().token(token));
    let guesser = "192.0.2.7:50000";

    // A burst of wrong bearer tokens, then wrong logins, are refused...
    for n in 0..8 {
        let reply = send(&app, from_peer(bearer(&format!("guess-{n}")), guesser)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let login = send(&app, from_peer(get("/login"), guesser)).await;
    let cookie = set_cookies(&login).join("; ");
    let csrf = csrf_field(&login.text());
    let login_guess = |guess: &str| {
        from_peer(
            form_post("/login", &cookie, format!("csrf={csrf}&token={guess}")),
            guesser,
        )
    };
    for guess in ["guess-a", "guess-b"] {
        assert_eq!(
            send(&app, login_guess(guess)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // ...until the client is out of guesses: 429, even with the right token.
    for request in [
        from_peer(bearer("guess-c"), guesser),
        from_peer(bearer(token), guesser),
        login_guess(token),
    ] {
        let reply = send(&app, request).await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            reply.text()
        );
        let wait: u64 = reply.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3).contains(&wait), "Retry-After: {wait}");
    }
    // Other clients are not slowed.
    let other = send(&app, from_peer(bearer(token), "198.51.100.3:40000")).await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn exposed_dashboard_without_token_refuses_everything() {
    let (_db, pool) = sqlite_pool().await;
    let app = offload_dashboard::router(pool, DashboardConfig::new().require_token(true));
    assert_eq!(send(&app, get("/")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        send(&app, get("/api/jobs")).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn database_password_never_reaches_the_page() {
    let (_db, pool) = sqlite_pool().await;
    let config = DashboardConfig::new().database("postgres://app:hunter2@db.internal:5432/app");
    let app = offload_dashboard::router(pool, config);
    let page = send(&app, get("/")).await;
    assert!(unescape(&page.text()).contains("postgres://app:***@db.internal:5432/app"));
    assert!(!page.text().contains("hunter2"));
}

#[tokio::test]
async fn nested_router_links_under_its_mount_path() {
    let (_db, pool) = sqlite_pool().await;
    let id = insert(&pool, &[("default", false, &[])]).await[0];
    let app = axum::Router::new().nest(
        "/admin/jobs-ui",
        offload_dashboard::router(pool, DashboardConfig::new()),
    );
    let page = send(&app, get("/admin/jobs-ui/jobs")).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = unescape(&page.text());
    assert!(html.contains(&format!(r#"href="/admin/jobs-ui/jobs/{id}""#)));
    assert!(html.contains(r#"href="/admin/jobs-ui/assets/app.css""#));
    let overview = send(&app, get("/admin/jobs-ui")).await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(unescape(&overview.text()).contains(r#"href="/admin/jobs-ui/jobs""#));
}

#[tokio::test]
async fn pages_render_on_postgres() {
    let (db, pool) = fresh_pool::<sqlx::Postgres>(5).await;
    let id = insert(&pool, &[("default", true, &["t"])]).await[0];
    let worker = start_worker(&pool, &["default"]).await;
    wait_idle(&pool).await;
    worker.shutdown().await;
    let app = offload_dashboard::router(pool, DashboardConfig::new());
    for uri in [
        "/".to_owned(),
        "/jobs?state=discarded".to_owned(),
        format!("/jobs/{id}"),
    ] {
        let reply = send(&app, get(&uri)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
    }
    let detail = send(&app, get(&format!("/jobs/{id}"))).await;
    assert!(detail.text().contains("boom: in default"));
    assert!(detail.text().contains(r#"id="action-retry""#));
    let bad = send(&app, get("/jobs?since=whenever")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("Invalid filter"));
    db.cleanup().await;
}
