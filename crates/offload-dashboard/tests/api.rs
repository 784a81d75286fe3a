//! The admin JSON API on PostgreSQL and SQLite: one scenario per behaviour.

mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use offload::{Backend, Client, JobState};
use offload_dashboard::DashboardConfig;
use offload_test_fixture::{get, post_json, send, Reply};
use serde_json::json;
use sqlx::Pool;
use support::*;

fn app<DB: Backend>(pool: &Pool<DB>) -> axum::Router {
    offload_dashboard::router(pool.clone(), DashboardConfig::new())
}

fn ids(reply: &Reply) -> Vec<i64> {
    reply.json()["jobs"]
        .as_array()
        .expect("jobs array")
        .iter()
        .map(|j| j["id"].as_i64().expect("id"))
        .collect()
}

/// Runs the flaky jobs to the end: failing ones end discarded.
async fn run_all<DB: Backend>(pool: &Pool<DB>, queues: &[&str]) {
    let worker = start_worker(pool, queues).await;
    wait_idle(pool).await;
    worker.shutdown().await;
}

async fn pages_follow_the_keyset_cursor_newest_first<DB: Backend>(pool: Pool<DB>) {
    let mut inserted = insert(&pool, &[("default", false, &[][..]); 7]).await;
    inserted.extend(insert(&pool, &[("other", false, &[][..]); 2]).await);
    let app = app(&pool);
    // Cancel some, so pages span several states.
    for id in [inserted[1], inserted[4]] {
        send(
            &app,
            post_json(&format!("/api/jobs/{id}/cancel"), json!({})),
        )
        .await;
    }
    let pages = |filter: &'static str| {
        let app = app.clone();
        async move {
            let mut seen = Vec::new();
            let mut uri = format!("/api/jobs?limit=3{filter}");
            loop {
                let reply = send(&app, get(&uri)).await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                seen.extend(ids(&reply));
                match reply.json()["next_before"].as_i64() {
                    Some(before) => uri = format!("/api/jobs?limit=3{filter}&before={before}"),
                    None => break,
                }
            }
            seen
        }
    };
    let newest_first = |ids: &[i64]| ids.iter().rev().copied().collect::<Vec<_>>();
    assert_eq!(
        pages("").await,
        newest_first(&inserted),
        "every job once, newest first"
    );
    assert_eq!(pages("&queue=default").await, newest_first(&inserted[..7]));
    assert_eq!(
        pages("&queue=default&state=available,cancelled").await,
        newest_first(&inserted[..7])
    );
    assert_eq!(
        pages("&state=cancelled").await,
        vec![inserted[4], inserted[1]]
    );
}

async fn filters_select_by_state_queue_kind_tag_text_and_time<DB: Backend>(pool: Pool<DB>) {
    let mail = insert(&pool, &[("mail", true, &["signup"]), ("mail", false, &[])]).await;
    let default = insert(&pool, &[("default", false, &["signup", "vip"])]).await;
    run_all(&pool, &["mail", "default"]).await;
    let app = app(&pool);

    let discarded = send(&app, get("/api/jobs?state=discarded")).await;
    assert_eq!(ids(&discarded), vec![mail[0]]);
    assert_eq!(discarded.json()["jobs"][0]["last_error"], "boom: in mail");

    let both = send(&app, get("/api/jobs?state=discarded,completed&queue=mail")).await;
    assert_eq!(ids(&both), vec![mail[1], mail[0]]);

    let tagged = send(&app, get("/api/jobs?tag=signup")).await;
    assert_eq!(ids(&tagged), vec![default[0], mail[0]]);
    assert_eq!(
        ids(&send(&app, get("/api/jobs?tag=vip")).await),
        vec![default[0]]
    );

    assert_eq!(
        ids(&send(&app, get("/api/jobs?kind=flaky&queue=default")).await),
        default
    );
    assert!(ids(&send(&app, get("/api/jobs?kind=other")).await).is_empty());

    // Text matches args and errors, case-insensitively.
    assert_eq!(
        ids(&send(&app, get("/api/jobs?q=BOOM")).await),
        vec![mail[0]]
    );
    assert_eq!(
        ids(&send(&app, get("/api/jobs?q=in%20default")).await),
        default
    );
    // Wildcards are literal; quotes are just text.
    assert!(ids(&send(&app, get("/api/jobs?q=%25")).await).is_empty());
    assert!(ids(&send(&app, get("/api/jobs?q=%27%20OR%201%3D1%20--")).await).is_empty());

    assert_eq!(ids(&send(&app, get("/api/jobs?since=1h")).await).len(), 3);
    assert!(ids(&send(&app, get("/api/jobs?until=1h")).await).is_empty());
    assert!(ids(&send(&app, get("/api/jobs?since=2999-01-01")).await).is_empty());
}

async fn bad_filters_are_clear_400s_never_sql_errors<DB: Backend>(pool: Pool<DB>) {
    insert(&pool, &[("default", false, &[])]).await;
    let app = app(&pool);
    let cases = [
        ("/api/jobs?state=exploded", "unknown state"),
        ("/api/jobs?limit=0", "limit"),
        ("/api/jobs?limit=many", "limit"),
        ("/api/jobs?limit=100000", "limit"),
        ("/api/jobs?before=-4", "before"),
        (
            "/api/jobs?before=1%3B%20DROP%20TABLE%20offload_jobs",
            "before",
        ),
        ("/api/jobs?since=yesterday-ish", "since"),
        ("/api/jobs?since=1h&until=2h", "before `until`"),
        ("/api/jobs?q=a%00b", "control characters"),
        ("/api/jobs?queue=%00", "control characters"),
        ("/api/jobs?kind=a%00", "control characters"),
        ("/api/jobs?tag=%00b", "control characters"),
        ("/api/throughput?queue=%00", "control characters"),
        ("/api/throughput?queue=mail%00", "control characters"),
        ("/api/jobs/abc", "positive whole number"),
        ("/api/jobs/0", "positive whole number"),
        ("/api/throughput?minutes=0", "minutes"),
    ];
    for (uri, needle) in cases {
        let reply = send(&app, get(uri)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            reply.text()
        );
        assert_eq!(reply.content_type(), "application/problem+json", "{uri}");
        let detail = reply.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(detail.contains(needle), "{uri}: {detail}");
        for leak in ["SQL", "syntax", "sqlx", "database error"] {
            assert!(!detail.contains(leak), "{uri} leaks {leak}: {detail}");
        }
    }
    let long = "x".repeat(201);
    let reply = send(&app, get(&format!("/api/jobs?q={long}"))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let unknown_action = send(&app, post_json("/api/jobs/1/explode", json!({}))).await;
    assert_eq!(unknown_action.status, StatusCode::BAD_REQUEST);
    let bad_body = send(
        &app,
        Request::post("/api/jobs/bulk")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{not json"))
            .expect("request"),
    )
    .await;
    assert_eq!(
        bad_body.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_body.text()
    );
    let bad_state = send(
        &app,
        post_json(
            "/api/jobs/bulk",
            json!({"action": "retry", "filter": {"state": "nope"}}),
        ),
    )
    .await;
    assert_eq!(bad_state.status, StatusCode::BAD_REQUEST);
    let everything = send(
        &app,
        post_json("/api/jobs/bulk", json!({"action": "delete"})),
    )
    .await;
    assert_eq!(everything.status, StatusCode::BAD_REQUEST);
    assert!(everything.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("all"));
    assert_eq!(
        Client::new(pool.clone())
            .count_by_state(None)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn job_detail_has_args_errors_and_timestamps<DB: Backend>(pool: Pool<DB>) {
    let id = insert(&pool, &[("default", true, &["x"])]).await[0];
    run_all(&pool, &["default"]).await;
    let app = app(&pool);
    let job = send(&app, get(&format!("/api/jobs/{id}"))).await.json();
    assert_eq!(job["state"], "discarded");
    assert_eq!(job["args"], json!({"fail": true, "note": "in default"}));
    assert_eq!(job["errors"][0]["attempt"], 1);
    assert_eq!(job["errors"][0]["error"], "boom: in default");
    assert!(job["finalized_at"].is_string() && job["attempted_at"].is_string());
    let missing = send(&app, get("/api/jobs/999999")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.content_type(), "application/problem+json");
}

async fn retry_makes_a_discarded_job_run_again_with_one_more_attempt<DB: Backend>(pool: Pool<DB>) {
    let id = insert(&pool, &[("default", true, &[])]).await[0];
    run_all(&pool, &["default"]).await;
    let app = app(&pool);
    let reply = send(&app, post_json(&format!("/api/jobs/{id}/retry"), json!({}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let job = &reply.json()["job"];
    assert_eq!(job["state"], "available");
    assert_eq!(job["attempt"], 1, "attempt count is kept");
    assert_eq!(job["max_attempts"], 2, "one more attempt granted");
    assert!(job["finalized_at"].is_null());

    // It runs (and fails) again: now two errors.
    run_all(&pool, &["default"]).await;
    let job = Client::new(pool.clone()).job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Discarded);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.errors.len(), 2);

    // A completed job can be run again.
    let done = insert(&pool, &[("default", false, &[])]).await[0];
    run_all(&pool, &["default"]).await;
    let again = send(
        &app,
        post_json(&format!("/api/jobs/{done}/retry"), json!({})),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.json()["job"]["state"], "available");
    assert_eq!(again.json()["job"]["attempt"], 1);

    // A running job cannot be retried.
    let claimed = DB::job_claim(&pool, "default", 1, "api-test")
        .await
        .unwrap();
    assert_eq!(claimed[0].id, done);
    let conflict = send(
        &app,
        post_json(&format!("/api/jobs/{done}/retry"), json!({})),
    )
    .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    let detail = conflict.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("is running") && detail.contains("not running"),
        "{detail}"
    );
}

async fn cancel_and_delete_change_only_jobs_they_apply_to<DB: Backend>(pool: Pool<DB>) {
    let ids = insert(&pool, &[("default", false, &[]), ("default", false, &[])]).await;
    let app = app(&pool);
    let reply = send(
        &app,
        post_json(&format!("/api/jobs/{}/cancel", ids[0]), json!({})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["job"]["state"], "cancelled");
    assert!(reply.json()["job"]["finalized_at"].is_string());
    let again = send(
        &app,
        post_json(&format!("/api/jobs/{}/cancel", ids[0]), json!({})),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    let deleted = send(
        &app,
        post_json(&format!("/api/jobs/{}/delete", ids[1]), json!({})),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert!(deleted.json()["job"].is_null());
    assert_eq!(
        send(&app, get(&format!("/api/jobs/{}", ids[1])))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let gone = send(
        &app,
        post_json(&format!("/api/jobs/{}/delete", ids[1]), json!({})),
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

async fn cancelling_a_running_job_stops_it_and_rolls_it_back<DB: Backend>(pool: Pool<DB>) {
    let client = Client::new(pool.clone());
    // offload tracks this process's running jobs by id alone, so the
    // sleeper gets an id no concurrent test (on either backend) uses.
    let padding = if <DB as sqlx::Database>::NAME == "PostgreSQL" {
        1000
    } else {
        2000
    };
    let filler: Vec<offload::NewJob> = (0..padding)
        .map(|_| {
            let mut job = offload::NewJob::new("filler", "{}");
            job.queue = "filler".to_owned();
            job
        })
        .collect();
    client.insert(&filler).await.expect("insert filler");
    let id = client.enqueue(Sleeper).await.expect("enqueue").id;
    assert!(id > padding, "sleeper id {id} is past the filler");
    let worker = start_worker(&pool, &["default"]).await;
    wait_for_state(&pool, id, JobState::Running).await;
    let app = app(&pool);
    let reply = send(
        &app,
        post_json(&format!("/api/jobs/{id}/cancel"), json!({})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // The job hears the signal and ends; the row stays cancelled.
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), worker.shutdown()).await;
    assert!(stopped.is_ok(), "worker stopped");
    let job = client.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert!(job
        .errors
        .iter()
        .any(|e| e.error.contains("cancelled by an operator")));
}

async fn bulk_actions_apply_to_every_matching_job<DB: Backend>(pool: Pool<DB>) {
    let failing: Vec<(&str, bool, &[&str])> = (0..12).map(|_| ("bulk", true, &[][..])).collect();
    insert(&pool, &failing).await;
    let keep = insert(&pool, &[("bulk", false, &[])]).await[0];
    run_all(&pool, &["bulk"]).await;
    let app = app(&pool);
    let reply = send(
        &app,
        post_json(
            "/api/jobs/bulk",
            json!({"action": "retry", "filter": {"state": "discarded", "queue": "bulk"}}),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json(), json!({"matched": 12, "changed": 12}));
    let available = send(&app, get("/api/jobs?state=available&limit=100")).await;
    assert_eq!(ids(&available).len(), 12);
    assert!(!ids(&available).contains(&keep));

    let cancelled = send(
        &app,
        post_json(
            "/api/jobs/bulk",
            json!({"action": "cancel", "filter": {"queue": "bulk"}}),
        ),
    )
    .await;
    assert_eq!(
        cancelled.json(),
        json!({"matched": 13, "changed": 12}),
        "the completed job is left alone"
    );
    // A key repeated anywhere is refused, as the app's own routes refuse it.
    for body in [
        r#"{"action": "retry", "action": "delete", "all": true}"#,
        r#"{"action": "delete", "filter": {"queue": "bulk", "queue": "other"}}"#,
    ] {
        let request = Request::post("/api/jobs/bulk")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.text().contains("duplicate key"), "{}", reply.text());
    }
    let deleted = send(
        &app,
        post_json("/api/jobs/bulk", json!({"action": "delete", "all": true})),
    )
    .await;
    assert_eq!(deleted.json()["changed"], 13);
    assert!(ids(&send(&app, get("/api/jobs")).await).is_empty());
}

/// A page on a name rebound to 127.0.0.1 sends its own name as `Host` and
/// `Origin`: without a token, only loopback names are answered.
async fn a_rebound_name_cannot_drive_a_tokenless_dashboard<DB: Backend>(pool: Pool<DB>) {
    let ids_before = insert(&pool, &[("rebind", false, &[][..]); 3]).await;
    let as_host = |mut request: Request<Body>, host: &str| {
        let headers = request.headers_mut();
        headers.insert(header::HOST, host.parse().unwrap());
        headers.insert(header::ORIGIN, format!("http://{host}").parse().unwrap());
        request
    };
    let delete_all = || post_json("/api/jobs/bulk", json!({"action": "delete", "all": true}));
    let detail = format!("/api/jobs/{}", ids_before[0]);

    let app = app(&pool);
    for request in [
        get("/"),
        get("/api/overview"),
        get(&detail),
        post_json("/api/queues/rebind/pause", json!({})),
        delete_all(),
    ] {
        let reply = send(&app, as_host(request, "evil.example:3917")).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
        assert!(
            reply.text().contains("evil.example:3917"),
            "{}",
            reply.text()
        );
    }
    assert_eq!(ids(&send(&app, get("/api/jobs")).await).len(), 3);

    // Loopback names pass, with any port.
    for host in ["127.0.0.1:3917", "localhost:3917", "[::1]:3917"] {
        let reply = send(&app, as_host(get(&detail), host)).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text());
    }
    // A name the app allows, and any name once a token guards the dashboard.
    let allowed = offload_dashboard::router(
        pool.clone(),
        DashboardConfig::new().allow_host("jobs.internal"),
    );
    let reply = send(&allowed, as_host(get(&detail), "jobs.internal:80")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let token = "rebinding-test-token";
    let guarded = offload_dashboard::router(pool.clone(), DashboardConfig::new().token(token));
    let mut request = as_host(get(&detail), "jobs.example:443");
    request.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    assert_eq!(send(&guarded, request).await.status, StatusCode::OK);

    let reply = send(&app, as_host(delete_all(), "127.0.0.1:3917")).await;
    assert_eq!(reply.json()["changed"], 3, "{}", reply.text());
}

/// A body declared over the limit is refused before it is read: hyper
/// sends `100 Continue` on the first read, inviting the whole upload.
async fn a_declared_oversize_body_is_refused_unread<DB: Backend>(pool: Pool<DB>) {
    let app = app(&pool);
    for uri in ["/api/jobs/bulk", "/login", "/jobs/bulk"] {
        // A body that never arrives: reading it would hang the request.
        let never = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, 100 * 1024 * 1024)
            .header(header::EXPECT, "100-continue")
            .body(Body::from_stream(never))
            .unwrap();
        let reply = tokio::time::timeout(std::time::Duration::from_secs(5), send(&app, request))
            .await
            .unwrap_or_else(|_| panic!("{uri}: the body was read before the size check"));
        assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{uri}: {}",
            reply.text()
        );
    }
    assert_eq!(offload_dashboard::BODY_LIMIT, 64 * 1024);
}

async fn queues_show_counts_throughput_age_and_pause<DB: Backend>(pool: Pool<DB>) {
    insert(&pool, &[("mail", false, &[]), ("mail", true, &[])]).await;
    run_all(&pool, &["mail"]).await;
    insert(&pool, &[("reports", false, &[]), ("reports", false, &[])]).await;
    let app = app(&pool);

    let paused = send(&app, post_json("/api/queues/reports/pause", json!({}))).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text());
    assert_eq!(paused.json(), json!({"name": "reports", "paused": true}));

    // A worker on a paused queue leaves its jobs alone.
    let worker = start_worker(&pool, &["reports"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let queues = send(&app, get("/api/queues")).await.json();
    let reports = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "reports")
        .unwrap()
        .clone();
    assert_eq!(reports["paused"], true);
    assert_eq!(reports["counts"]["available"], 2);
    assert!(reports["oldest_available_secs"].as_f64().unwrap() >= 0.0);
    let mail = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "mail")
        .unwrap()
        .clone();
    assert_eq!(mail["paused"], false);
    assert_eq!(mail["counts"]["completed"], 1);
    assert_eq!(mail["counts"]["discarded"], 1);
    assert!(mail["completed_per_minute"].as_f64().unwrap() > 0.0);
    assert!(mail["oldest_available_secs"].is_null());

    let resumed = send(&app, post_json("/api/queues/reports/resume", json!({}))).await;
    assert_eq!(resumed.json()["paused"], false);
    wait_idle(&pool).await;
    worker.shutdown().await;

    let overview = send(&app, get("/api/overview")).await.json();
    assert_eq!(overview["totals"]["completed"], 3);
    assert_eq!(overview["totals"]["discarded"], 1);
    let points = send(&app, get("/api/throughput?minutes=5")).await.json();
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 5);
    let completed: i64 = points
        .iter()
        .map(|p| p["completed"].as_i64().unwrap())
        .sum();
    let discarded: i64 = points
        .iter()
        .map(|p| p["discarded"].as_i64().unwrap())
        .sum();
    assert_eq!((completed, discarded), (3, 1));
    let bad = send(&app, post_json("/api/queues/reports/explode", json!({}))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

/// `PUT /api/queues/{name}/limits` with a JSON body, as a browser's fetch
/// would send it.
fn put_limits(name: &str, body: serde_json::Value) -> Request<Body> {
    Request::put(format!("/api/queues/{name}/limits"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn queue_limits_are_set_shown_and_checked<DB: Backend>(pool: Pool<DB>) {
    insert(&pool, &[("hooks", false, &[]), ("hooks", false, &[])]).await;
    let app = app(&pool);
    let set = send(
        &app,
        put_limits(
            "hooks",
            json!({"global_limit": 3, "rate_limit": "100/s",
                   "partition": {"per_key_limit": 2, "per_key_rate": "10/s"}}),
        ),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text());
    assert_eq!(
        set.json(),
        json!({"global_limit": 3, "rate_limit": "100/1000ms",
               "partition": {"per_key_limit": 2, "per_key_rate": "10/1000ms"}})
    );
    let queues = send(&app, get("/api/queues")).await.json();
    let hooks = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "hooks")
        .unwrap()
        .clone();
    assert_eq!(hooks["global_limit"], 3);
    assert_eq!(
        hooks["rate_limit"],
        json!({"limit": 100, "period_ms": 1000, "started": 0})
    );
    assert_eq!(
        hooks["partition"],
        json!({"per_key_limit": 2, "per_key_rate": {"limit": 10, "period_ms": 1000},
               "keys_running": 0, "keys_at_limit": 0})
    );
    assert_eq!(hooks["waiting_on_limit"], 0);

    for (body, expected) in [
        (json!({"rate_limit": "100/day"}), "not ms, s, m or h"),
        (json!({"rate_limit": "0/s"}), "at least 1"),
        (json!({"global_limit": 0}), "at least 1"),
        (json!({"global_limit": 2, "burst": 1}), "unknown field"),
        (json!({"partition": {"per_key_limit": 0}}), "at least 1"),
        (json!({"partition": {"per_key_rate": "10"}}), "has no `/`"),
    ] {
        let refused = send(&app, put_limits("hooks", body.clone())).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            refused.text().contains(expected),
            "{body}: {}",
            refused.text()
        );
    }
    let bad_name = send(&app, put_limits("Bad%20Name", json!({}))).await;
    assert_eq!(bad_name.status, StatusCode::BAD_REQUEST);

    // A refused body changed nothing; an empty one removes both limits.
    let limits = Client::new(pool.clone()).limits("hooks").await.unwrap();
    assert_eq!(limits.global, Some(3));
    let cleared = send(&app, put_limits("hooks", json!({}))).await;
    assert_eq!(cleared.status, StatusCode::OK);
    let limits = Client::new(pool.clone()).limits("hooks").await.unwrap();
    assert_eq!(
        (limits.global, limits.rate, limits.partition),
        (None, None, None)
    );
}

on_both_backends!(
    queue_limits_are_set_shown_and_checked,
    pages_follow_the_keyset_cursor_newest_first,
    filters_select_by_state_queue_kind_tag_text_and_time,
    bad_filters_are_clear_400s_never_sql_errors,
    job_detail_has_args_errors_and_timestamps,
    retry_makes_a_discarded_job_run_again_with_one_more_attempt,
    cancel_and_delete_change_only_jobs_they_apply_to,
    cancelling_a_running_job_stops_it_and_rolls_it_back,
    bulk_actions_apply_to_every_matching_job,
    a_rebound_name_cannot_drive_a_tokenless_dashboard,
    a_declared_oversize_body_is_refused_unread,
    queues_show_counts_throughput_age_and_pause,
);

#[test]
fn openapi_document_describes_every_route() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(offload_dashboard::ApiDoc::openapi()).unwrap();
    for path in [
        "/api/jobs",
        "/api/jobs/{id}",
        "/api/jobs/{id}/{action}",
        "/api/jobs/bulk",
        "/api/overview",
        "/api/queues",
        "/api/queues/{name}/{action}",
        "/api/throughput",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    for schema in [
        "JobRecord",
        "JobPage",
        "Problem",
        "BulkRequest",
        "QueueSummary",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    // Every `$ref` names a schema the document defines.
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "$ref to undefined schema {name}"
        );
    }
}
