//! The records API over HTTP, on PostgreSQL and SQLite: every endpoint,
//! every error, the record/job transaction and the job running to `done`.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use offload::{Client, Registry, Worker, WorkerConfig};
use offload_dashboard::DashboardConfig;
use offload_records::api::{self, AppState, JobSettings};
use offload_records::job::{iterated_sha256, ProcessRecord, RECORDS_QUEUE};
use offload_records::store::RecordStore;
use offload_test_fixture::{get, post, post_json, send, FreshBackend, FreshDatabase, Reply};
use serde_json::{json, Value};
use sqlx::{PgPool, Pool, Postgres, Sqlite, SqlitePool};

const ROUNDS: u32 = 7;

/// Test-only access to the databases, beside the API under test.
trait TestDb: RecordStore + FreshBackend {
    /// Breaks enqueueing, so a write fails after its record was inserted.
    fn drop_jobs_table(pool: &Pool<Self>) -> impl Future<Output = ()> + Send;
    fn count_records(pool: &Pool<Self>) -> impl Future<Output = i64> + Send;
}

impl TestDb for Postgres {
    async fn drop_jobs_table(pool: &PgPool) {
        sqlx::query("DROP TABLE offload_jobs CASCADE")
            .execute(pool)
            .await
            .expect("drop jobs");
    }
    async fn count_records(pool: &PgPool) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM records")
            .fetch_one(pool)
            .await
            .expect("count")
    }
}

impl TestDb for Sqlite {
    async fn drop_jobs_table(pool: &SqlitePool) {
        sqlx::query("DROP TABLE offload_jobs")
            .execute(pool)
            .await
            .expect("drop jobs");
    }
    async fn count_records(pool: &SqlitePool) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM records")
            .fetch_one(pool)
            .await
            .expect("count")
    }
}

/// Both ways of writing a record: group commit (1 writer) and the
/// request's own transaction (0 writers).
const WRITE_MODES: [usize; 2] = [1, 0];

async fn app<DB: TestDb>(pool: &Pool<DB>, writers: usize, body_limit: usize) -> Router {
    let client = Client::new(pool.clone());
    client.migrate().await.expect("offload migrations");
    DB::migrate_records(pool).await.expect("records migrations");
    let jobs = JobSettings {
        hash_rounds: ROUNDS,
        delay_ms: 1,
    };
    api::router(AppState::new(client, jobs, writers), body_limit)
}

async fn create(app: &Router, name: &str, payload: &str) -> Value {
    let reply = send(
        app,
        post_json("/records", json!({ "name": name, "payload": payload })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()
}

fn assert_problem(reply: &Reply, status: StatusCode, field: Option<&str>) {
    assert_eq!(reply.status, status, "body: {}", reply.text());
    assert_eq!(reply.content_type(), "application/problem+json");
    assert_eq!(reply.json()["status"], status.as_u16());
    assert_eq!(
        reply.json()["field"].as_str(),
        field,
        "body: {}",
        reply.text()
    );
    let lower = reply.text().to_lowercase();
    for internal in [
        "select ",
        "insert ",
        "update ",
        "sqlx",
        "offload_jobs",
        "relation",
        "no such table",
    ] {
        assert!(
            !lower.contains(internal),
            "leaks `{internal}`: {}",
            reply.text()
        );
    }
}

async fn start_worker<DB: TestDb>(pool: &Pool<DB>) -> offload::WorkerHandle {
    let config = WorkerConfig::default()
        .poll_interval(Some(Duration::from_millis(50)))
        .shutdown_timeout(Duration::from_secs(1))
        .queue(RECORDS_QUEUE, 4);
    Worker::new(
        pool.clone(),
        Registry::new().register::<ProcessRecord>(),
        config,
    )
    .start()
    .await
    .expect("worker")
}

async fn stop_worker(worker: offload::WorkerHandle) {
    // Bounded: the test is about records, not about worker shutdown.
    let _ = tokio::time::timeout(Duration::from_secs(10), worker.shutdown()).await;
}

async fn wait_until_done(app: &Router, id: i64) -> Value {
    for _ in 0..300 {
        let reply = send(app, get(&format!("/records/{id}"))).await;
        if reply.json()["status"] == "done" {
            return reply.json();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("record {id} never reached done");
}

// --- scenarios -----------------------------------------------------------

async fn dashboard_is_mounted_and_guarded_by_its_token<DB: TestDb>(pool: Pool<DB>) {
    let open = app(&pool, 0, api::DEFAULT_BODY_LIMIT).await;
    create(&open, "shown", "on the dashboard").await;
    let page = send(&open, get("/dashboard")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(
        page.content_type().starts_with("text/html"),
        "{}",
        page.content_type()
    );
    // minijinja escapes `/` in attributes as `&#x2f;`.
    let html = page.text().replace("&#x2f;", "/");
    assert!(
        html.contains("href=\"/dashboard/jobs"),
        "links under the mount point: {html}"
    );
    let slash = send(&open, get("/dashboard/")).await;
    assert_eq!(slash.status, StatusCode::PERMANENT_REDIRECT);
    let overview = send(&open, get("/dashboard/api/overview")).await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.text());
    assert_eq!(
        overview.json()["totals"]["available"],
        1,
        "{}",
        overview.text()
    );

    let token = "a-long-enough-dashboard-token";
    let guarded = api::router_with_dashboard(
        AppState::new(Client::new(pool.clone()), JobSettings::default(), 0),
        api::DEFAULT_BODY_LIMIT,
        DashboardConfig::new()
            .token(token)
            .for_listener("0.0.0.0:3000".parse().expect("addr"))
            .expect("config with token"),
    );
    let refused = send(&guarded, get("/dashboard/api/overview")).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refused.text()
    );
    let allowed = send(
        &guarded,
        Request::get("/dashboard/api/overview")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text());
    // The records API itself is not behind the dashboard's token.
    assert_eq!(send(&guarded, get("/stats")).await.status, StatusCode::OK);
}

/// The value of the series `name{labels}` in a Prometheus text rendering.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn metrics_show_outcomes_queue_depth_and_requests<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    let id = create(&app, "counted", "in metrics").await["id"]
        .as_i64()
        .expect("id");
    let worker = start_worker(&pool).await;
    wait_until_done(&app, id).await;
    stop_worker(worker).await;
    // Parked on a queue of this backend's own: the recorder is shared by
    // every test in this process.
    let queue = format!("metrics-{}", <DB as sqlx::Database>::NAME.to_lowercase());
    let client = Client::new(pool.clone());
    for _ in 0..2 {
        let job = ProcessRecord {
            record_id: id,
            hash_rounds: 1,
            delay_ms: 0,
        };
        let options = offload::EnqueueOptions::new().queue(queue.clone());
        client.enqueue_with(job, options).await.expect("enqueue");
    }

    let reply = send(&app, get("/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        reply.content_type().starts_with("text/plain"),
        "{}",
        reply.content_type()
    );
    let text = &reply.text();
    let completed = [
        ("kind", "process_record"),
        ("queue", RECORDS_QUEUE),
        ("outcome", "completed"),
    ];
    assert!(
        sample(text, "offload_jobs_total", &completed).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let depth = |state| {
        sample(
            text,
            "offload_queue_jobs",
            &[("queue", &queue), ("state", state)],
        )
    };
    assert_eq!(depth("available"), Some(2.0), "{text}");
    assert_eq!(depth("running"), Some(0.0), "{text}");
    assert!(text.contains("offload_job_run_seconds_bucket"), "{text}");
    let created = [("method", "POST"), ("route", "/records"), ("status", "201")];
    assert!(
        sample(text, "offload_records_http_requests_total", &created).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            text,
            "offload_records_http_request_duration_seconds_count",
            &created
        )
        .is_some(),
        "{text}"
    );
}

async fn create_returns_201_with_location_and_queued_job<DB: TestDb>(pool: Pool<DB>) {
    for writers in WRITE_MODES {
        let app = app(&pool, writers, api::DEFAULT_BODY_LIMIT).await;
        let reply = send(
            &app,
            post_json("/records", json!({"name": "invoice", "payload": "hello"})),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        assert_eq!(reply.content_type(), "application/json");
        let id = reply.json()["id"].as_i64().expect("id");
        assert_eq!(
            reply.header(header::LOCATION),
            Some(format!("/records/{id}").as_str())
        );
        assert_eq!(reply.json()["status"], "pending");
        assert_eq!(reply.json()["name"], "invoice");
        assert!(
            reply.json()["job_id"].as_i64().is_some(),
            "{}",
            reply.text()
        );

        let fetched = send(&app, get(&format!("/records/{id}"))).await;
        assert_eq!(fetched.status, StatusCode::OK);
        assert_eq!(fetched.json()["payload"], "hello");
        assert_eq!(fetched.json()["job"]["state"], "available");
        assert_eq!(fetched.json()["job"]["attempt"], 0);
    }
    assert_eq!(DB::count_records(&pool).await, 2);
}

async fn job_runs_to_done_with_iterated_hash<DB: TestDb>(pool: Pool<DB>) {
    for writers in WRITE_MODES {
        let app = app(&pool, writers, api::DEFAULT_BODY_LIMIT).await;
        let payload = format!("payload for mode {writers}");
        let id = create(&app, "hash me", &payload).await["id"]
            .as_i64()
            .expect("id");
        let worker = start_worker(&pool).await;
        let done = wait_until_done(&app, id).await;
        stop_worker(worker).await;
        assert_eq!(done["result"], iterated_sha256(&payload, ROUNDS));
        assert!(done["processed_at"].is_string());
        assert_eq!(done["job"]["state"], "completed");
        assert_eq!(done["job"]["attempt"], 1);
    }
}

async fn failed_enqueue_leaves_no_record<DB: TestDb>(pool: Pool<DB>) {
    let group = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    let per_request = app(&pool, 0, api::DEFAULT_BODY_LIMIT).await;
    DB::drop_jobs_table(&pool).await;
    for app in [&group, &per_request] {
        let reply = send(
            app,
            post_json("/records", json!({"name": "doomed", "payload": "x"})),
        )
        .await;
        assert_problem(&reply, StatusCode::INTERNAL_SERVER_ERROR, None);
    }
    // The record insert ran before the enqueue failed; both rolled back.
    assert_eq!(DB::count_records(&pool).await, 0);
    let listed = send(&group, get("/records")).await;
    assert_eq!(listed.json()["records"], json!([]));
}

async fn malformed_json_is_400<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    for body in [
        r#"{"name": "a", "payload": "#,
        "not json",
        r#"{"name":"a","payload":"b"} extra"#,
        "",
    ] {
        let reply = send(&app, post("/records", "application/json", body)).await;
        assert_problem(&reply, StatusCode::BAD_REQUEST, None);
    }
    assert_eq!(DB::count_records(&pool).await, 0);
}

async fn wrong_content_type_is_415<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    let body = json!({"name": "a", "payload": "b"}).to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let reply = send(&app, post("/records", content_type, body.clone())).await;
        assert_problem(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);
    }
    let missing = Request::post("/records")
        .body(Body::from(body))
        .expect("request");
    assert_problem(
        &send(&app, missing).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        None,
    );
    assert_eq!(DB::count_records(&pool).await, 0);
}

async fn body_over_limit_is_413<DB: TestDb>(pool: Pool<DB>) {
    let limit = 256;
    let app = app(&pool, 1, limit).await;
    let fits = "p".repeat(limit - 40);
    create(&app, "small", &fits).await;
    let too_big = json!({"name": "big", "payload": "p".repeat(limit)});
    assert_problem(
        &send(&app, post_json("/records", too_big)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
    );
    assert_eq!(DB::count_records(&pool).await, 1);
}

async fn default_body_limit_is_one_mebibyte<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    let under = "u".repeat(1024 * 1024 - 100);
    create(&app, "almost a mebibyte", &under).await;
    let over = json!({"name": "over", "payload": "o".repeat(1024 * 1024)});
    assert_problem(
        &send(&app, post_json("/records", over)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
    );
}

async fn validation_failures_are_422_with_field<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    let cases = [
        (json!({"payload": "x"}), Some("name")),
        (json!({"name": "   ", "payload": "x"}), Some("name")),
        (
            json!({"name": "n".repeat(201), "payload": "x"}),
            Some("name"),
        ),
        (json!({"name": "tab\there", "payload": "x"}), Some("name")),
        (json!({"name": 42, "payload": "x"}), Some("name")),
        (json!({"name": "ok"}), Some("payload")),
        (
            json!({"name": "ok", "payload": "nul\u{0}byte"}),
            Some("payload"),
        ),
        (
            json!({"name": "ok", "payload": ["not", "a", "string"]}),
            Some("payload"),
        ),
        (
            json!({"name": "ok", "payload": "x", "extra": 1}),
            Some("extra"),
        ),
        (json!(["not", "an", "object"]), None),
    ];
    for (body, field) in cases {
        let reply = send(&app, post_json("/records", body.clone())).await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, field);
        assert!(
            reply.json()["detail"].is_string(),
            "{body}: {}",
            reply.text()
        );
    }
    assert_eq!(DB::count_records(&pool).await, 0);
}

async fn odd_unicode_is_stored_exactly_and_never_500<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    let payloads = [
        "emoji 👩‍👩‍👧‍👦 and 🏳️‍🌈",
        "right-to-left \u{202E}txet\u{202C} and Arabic مرحبا",
        "zero\u{200B}width\u{FEFF}joiner\u{200D}",
        "noncharacters \u{FFFF} \u{FFFE} \u{10FFFF}",
        "combining e\u{0301}\u{0301}\u{0301} and Zalgo z\u{0335}\u{0336}",
        "controls \u{0001}\u{001F}\u{007F}\u{0085} and a \\u0000 spelled out",
        "",
    ];
    for payload in payloads {
        let created = create(&app, "unicode ✓", payload).await;
        let id = created["id"].as_i64().expect("id");
        let fetched = send(&app, get(&format!("/records/{id}"))).await;
        assert_eq!(fetched.json()["payload"], payload);
        assert_eq!(fetched.json()["name"], "unicode ✓");
    }
    // A lone surrogate is not valid JSON text for a Rust string: 400, not 500.
    let reply = send(
        &app,
        post(
            "/records",
            "application/json",
            r#"{"name":"a","payload":"\ud800"}"#,
        ),
    )
    .await;
    assert_problem(&reply, StatusCode::BAD_REQUEST, None);
    // Invalid UTF-8 bytes: refused, not a 500.
    let reply = send(
        &app,
        post(
            "/records",
            "application/json",
            &b"{\"name\":\"a\",\"payload\":\"\xff\xfe\"}"[..],
        ),
    )
    .await;
    assert_problem(&reply, StatusCode::BAD_REQUEST, None);
}

async fn unknown_record_is_404_and_bad_id_is_400<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    assert_problem(
        &send(&app, get("/records/4242")).await,
        StatusCode::NOT_FOUND,
        None,
    );
    for bad in ["abc", "1.5", "99999999999999999999999"] {
        let reply = send(&app, get(&format!("/records/{bad}"))).await;
        assert_problem(&reply, StatusCode::BAD_REQUEST, None);
    }
    assert_problem(
        &send(&app, get("/nowhere")).await,
        StatusCode::NOT_FOUND,
        None,
    );
    let delete = Request::delete("/records/1")
        .body(Body::empty())
        .expect("request");
    assert_problem(
        &send(&app, delete).await,
        StatusCode::METHOD_NOT_ALLOWED,
        None,
    );
}

async fn list_paginates_newest_first_and_filters_by_status<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            create(&app, &format!("r{n}"), "p").await["id"]
                .as_i64()
                .expect("id"),
        );
    }
    for id in &ids[..2] {
        let mut conn = pool.acquire().await.expect("conn");
        assert!(DB::finish_record(&mut conn, *id, "r")
            .await
            .expect("finish"));
    }

    let mut seen = Vec::new();
    let mut path = "/records?limit=2".to_owned();
    loop {
        let page = send(&app, get(&path)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let records = page.json()["records"].as_array().expect("records").clone();
        assert!(records.len() <= 2);
        seen.extend(records.iter().map(|r| r["id"].as_i64().expect("id")));
        match page.json()["next_before"].as_i64() {
            Some(before) => path = format!("/records?limit=2&before={before}"),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let done = send(&app, get("/records?status=done")).await;
    let done_ids: Vec<i64> = done.json()["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(done_ids, vec![ids[1], ids[0]]);
    let pending = send(&app, get("/records?status=pending&limit=500")).await;
    assert_eq!(
        pending.json()["records"].as_array().expect("records").len(),
        3
    );

    assert_problem(
        &send(&app, get("/records?status=lost")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("status"),
    );
    assert_problem(
        &send(&app, get("/records?limit=0")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("limit"),
    );
    assert_problem(
        &send(&app, get("/records?limit=501")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("limit"),
    );
    assert_problem(
        &send(&app, get("/records?limit=ten")).await,
        StatusCode::BAD_REQUEST,
        None,
    );
    assert_problem(
        &send(&app, get("/records?before=x")).await,
        StatusCode::BAD_REQUEST,
        None,
    );
}

async fn stats_count_records_by_status_and_queue_depth<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    let empty = send(&app, get("/stats")).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(
        empty.json(),
        json!({"records": {"pending": 0, "done": 0}, "total_records": 0, "jobs": {}, "queue_depth": 0})
    );

    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(
                create(&app, &format!("s{n}"), "p").await["id"]
                    .as_i64()
                    .expect("id"),
            );
        }
        ids
    };
    let mut conn = pool.acquire().await.expect("conn");
    DB::finish_record(&mut conn, ids[0], "r")
        .await
        .expect("finish");
    drop(conn);
    let stats = send(&app, get("/stats")).await;
    assert_eq!(stats.json()["records"], json!({"pending": 2, "done": 1}));
    assert_eq!(stats.json()["total_records"], 3);
    assert_eq!(stats.json()["jobs"], json!({"available": 3}));
    assert_eq!(stats.json()["queue_depth"], 3);

    let worker = start_worker(&pool).await;
    for id in &ids[1..] {
        wait_until_done(&app, *id).await;
    }
    stop_worker(worker).await;
    let stats = send(&app, get("/stats")).await;
    assert_eq!(stats.json()["records"], json!({"pending": 0, "done": 3}));
    assert_eq!(stats.json()["queue_depth"], 0);
    assert_eq!(stats.json()["jobs"]["completed"], 3);
}

async fn openapi_document_and_offline_docs_are_served<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    let doc = send(&app, get("/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    for path in ["/records", "/records/{id}", "/stats"] {
        assert!(doc.json()["paths"][path].is_object(), "missing {path}");
    }
    assert!(doc.json()["paths"]["/records"]["post"]["responses"]["422"].is_object());
    for schema in ["Record", "CreateRecord", "Problem", "Stats", "RecordPage"] {
        assert!(
            doc.json()["components"]["schemas"][schema].is_object(),
            "missing {schema}"
        );
    }

    let page = send(&app, get("/docs/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type().starts_with("text/html"));
    let init = send(&app, get("/docs/swagger-initializer.js")).await;
    assert!(init.text().contains("/openapi.json"));
    for asset in [&page.text(), &init.text()] {
        assert!(
            !asset.contains("http://") && !asset.contains("https://"),
            "external URL in {asset}"
        );
    }
    let bundle = send(&app, get("/docs/swagger-ui-bundle.js")).await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(
        bundle.text().len() > 100_000,
        "the Swagger UI bundle is served locally"
    );
}

/// serde_json keeps the last of repeated keys; a proxy or validator that
/// reads the first would see another record. Refused, as the admin API
/// refuses them.
async fn repeated_keys_are_422_and_store_nothing<DB: TestDb>(pool: Pool<DB>) {
    let app = app(&pool, 1, api::DEFAULT_BODY_LIMIT).await;
    for body in [
        r#"{"name": "first", "name": "second", "payload": "x"}"#,
        r#"{"name": "n", "payload": "x", "payload": "y"}"#,
    ] {
        let reply = send(&app, post("/records", "application/json", body)).await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, None);
        let detail = reply.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(detail.contains("duplicate key"), "{body}: {detail}");
    }
    assert_eq!(DB::count_records(&pool).await, 0);
}

// --- backends ------------------------------------------------------------

/// Runs `scenario` on a fresh database of `DB`'s kind, with a pool of 5.
async fn on_fresh<DB: TestDb, F: Future<Output = ()>>(scenario: fn(Pool<DB>) -> F) {
    let connect = |url: String| async move { DB::connect(&url, 5).await.expect("connect") };
    FreshDatabase::with_pool(connect, scenario).await;
}

offload_test_fixture::on_both_backends!(on_fresh =>
    create_returns_201_with_location_and_queued_job,
    job_runs_to_done_with_iterated_hash,
    failed_enqueue_leaves_no_record,
    malformed_json_is_400,
    wrong_content_type_is_415,
    body_over_limit_is_413,
    default_body_limit_is_one_mebibyte,
    validation_failures_are_422_with_field,
    repeated_keys_are_422_and_store_nothing,
    odd_unicode_is_stored_exactly_and_never_500,
    unknown_record_is_404_and_bad_id_is_400,
    list_paginates_newest_first_and_filters_by_status,
    stats_count_records_by_status_and_queue_depth,
    openapi_document_and_offline_docs_are_served,
    dashboard_is_mounted_and_guarded_by_its_token,
    metrics_show_outcomes_queue_depth_and_requests,
);
