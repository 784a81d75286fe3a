//! The per-request transaction over HTTP, on PostgreSQL and SQLite: commit
//! on success, rollback on error, panic and rejection, and jobs enqueued in
//! it following the request's fate.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use offload::{Backend, Client, EnqueueOptions, Job, JobContext, JobError, JobState};
use offload_axum::{BeginTx, Json, Problem, Tx, TxLayer};
use offload_test_fixture::{self as fixture, send, FreshBackend, FreshDatabase};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgPool, Pool, Postgres, Sqlite, SqlitePool};
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;

/// The test app's own table, on each backend.
trait NotesDb: Backend + FreshBackend {
    fn create_notes(pool: &Pool<Self>) -> impl Future<Output = ()> + Send;
    fn insert_note(
        conn: &mut Self::Connection,
        text: &str,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
    fn count_notes(pool: &Pool<Self>) -> impl Future<Output = i64> + Send;
    /// A real error that passes: PostgreSQL's statement timeout, SQLite's
    /// busy database.
    fn transient_error(pool: &Pool<Self>) -> impl Future<Output = sqlx::Error> + Send;
    /// A real error that does not: a duplicate primary key.
    fn duplicate_key_error(pool: &Pool<Self>) -> impl Future<Output = sqlx::Error> + Send;
}

impl NotesDb for Postgres {
    async fn create_notes(pool: &PgPool) {
        sqlx::query("CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, text TEXT NOT NULL)")
            .execute(pool)
            .await
            .expect("create notes");
    }
    async fn insert_note(conn: &mut sqlx::PgConnection, text: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("INSERT INTO notes (text) VALUES ($1) RETURNING id")
            .bind(text)
            .fetch_one(conn)
            .await
    }
    async fn count_notes(pool: &PgPool) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(pool)
            .await
            .expect("count notes")
    }
    async fn transient_error(pool: &PgPool) -> sqlx::Error {
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("SET LOCAL statement_timeout = '20ms'")
            .execute(&mut *tx)
            .await
            .expect("set timeout");
        sqlx::query("SELECT pg_sleep(5)")
            .execute(&mut *tx)
            .await
            .expect_err("the statement times out")
    }
    async fn duplicate_key_error(pool: &PgPool) -> sqlx::Error {
        let insert = "INSERT INTO notes (id, text) VALUES (1000, 'twice')";
        sqlx::query(insert).execute(pool).await.expect("first");
        sqlx::query(insert).execute(pool).await.expect_err("second")
    }
}

impl NotesDb for Sqlite {
    async fn create_notes(pool: &SqlitePool) {
        sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
            .execute(pool)
            .await
            .expect("create notes");
    }
    async fn insert_note(
        conn: &mut sqlx::SqliteConnection,
        text: &str,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("INSERT INTO notes (text) VALUES (?1) RETURNING id")
            .bind(text)
            .fetch_one(conn)
            .await
    }
    async fn count_notes(pool: &SqlitePool) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(pool)
            .await
            .expect("count notes")
    }
    async fn transient_error(pool: &SqlitePool) -> sqlx::Error {
        // One connection holds the write lock; another will not wait for it.
        let holder = Sqlite::begin_write(pool).await.expect("begin");
        let options = (*pool.connect_options())
            .clone()
            .busy_timeout(Duration::ZERO);
        let mut impatient = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("connect");
        let error = sqlx::query("INSERT INTO notes (text) VALUES ('blocked')")
            .execute(&mut impatient)
            .await
            .expect_err("the database is busy");
        holder.rollback().await.expect("rollback");
        error
    }
    async fn duplicate_key_error(pool: &SqlitePool) -> sqlx::Error {
        let insert = "INSERT INTO notes (id, text) VALUES (1000, 'twice')";
        sqlx::query(insert).execute(pool).await.expect("first");
        sqlx::query(insert).execute(pool).await.expect_err("second")
    }
}

/// Enqueued for every note; never run here.
#[derive(Serialize, Deserialize)]
struct IndexNote {
    note_id: i64,
}

impl<DB: Backend> Job<DB> for IndexNote {
    const KIND: &'static str = "index_note";
    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

/// Inserts a note and enqueues its job on the request's transaction.
async fn write_note<DB: NotesDb>(client: &Client<DB>, tx: &mut Tx<DB>, text: &str) -> i64 {
    let note_id = DB::insert_note(tx, text).await.expect("insert note");
    client
        .enqueue_tx(&mut **tx, IndexNote { note_id })
        .await
        .expect("enqueue");
    note_id
}

async fn created<DB: NotesDb>(State(client): State<Client<DB>>, mut tx: Tx<DB>) -> StatusCode {
    write_note(&client, &mut tx, "kept").await;
    StatusCode::CREATED
}

async fn redirected<DB: NotesDb>(State(client): State<Client<DB>>, mut tx: Tx<DB>) -> Redirect {
    write_note(&client, &mut tx, "kept").await;
    Redirect::to("/elsewhere")
}

async fn failed<DB: NotesDb>(
    State(client): State<Client<DB>>,
    mut tx: Tx<DB>,
) -> Result<StatusCode, Problem> {
    write_note(&client, &mut tx, "discarded").await;
    Err(Problem::invalid_field("text", "rejected after writing"))
}

async fn server_error<DB: NotesDb>(State(client): State<Client<DB>>, mut tx: Tx<DB>) -> Response {
    write_note(&client, &mut tx, "discarded").await;
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

async fn panicked<DB: NotesDb>(State(client): State<Client<DB>>, mut tx: Tx<DB>) -> StatusCode {
    write_note(&client, &mut tx, "discarded").await;
    panic!("handler bug after writing");
}

async fn body_first<DB: NotesDb>(
    State(client): State<Client<DB>>,
    begin: BeginTx<DB>,
    Json(note): Json<NewNote>,
) -> Result<StatusCode, Problem> {
    let mut tx = begin.begin().await?;
    write_note(&client, &mut tx, &note.text).await;
    Ok(StatusCode::CREATED)
}

/// `?` on the enqueue itself: offload's errors are problems.
async fn enqueued_with_question_mark<DB: NotesDb>(
    State(client): State<Client<DB>>,
    mut tx: Tx<DB>,
) -> Result<StatusCode, Problem> {
    let note_id = DB::insert_note(&mut tx, "kept")
        .await
        .map_err(|_| Problem::internal())?;
    let enqueued = client.enqueue_tx(&mut *tx, IndexNote { note_id }).await?;
    assert!(!enqueued.duplicate);
    Ok(StatusCode::CREATED)
}

async fn enqueued_on_a_bad_queue<DB: NotesDb>(
    State(client): State<Client<DB>>,
    mut tx: Tx<DB>,
) -> Result<StatusCode, Problem> {
    let note_id = DB::insert_note(&mut tx, "discarded")
        .await
        .map_err(|_| Problem::internal())?;
    let options = EnqueueOptions::new().queue("Secret Queue");
    client
        .enqueue_tx_with(&mut *tx, IndexNote { note_id }, options)
        .await?;
    Ok(StatusCode::CREATED)
}

async fn enqueued_on_the_pool<DB: NotesDb>(
    State(client): State<Client<DB>>,
) -> Result<StatusCode, Problem> {
    client.enqueue(IndexNote { note_id: 0 }).await?;
    Ok(StatusCode::CREATED)
}

async fn twice<DB: NotesDb>(_first: Tx<DB>, _second: Tx<DB>) -> StatusCode {
    StatusCode::OK
}

async fn read_only() -> StatusCode {
    StatusCode::OK
}

fn app<DB: NotesDb>(pool: Pool<DB>) -> Router {
    Router::new()
        .route("/created", post(created::<DB>))
        .route("/redirected", post(redirected::<DB>))
        .route("/failed", post(failed::<DB>))
        .route("/server-error", post(server_error::<DB>))
        .route("/panicked", post(panicked::<DB>))
        .route("/body-first", post(body_first::<DB>))
        .route("/twice", post(twice::<DB>))
        .route("/enqueue", post(enqueued_with_question_mark::<DB>))
        .route("/enqueue-bad-queue", post(enqueued_on_a_bad_queue::<DB>))
        .route("/enqueue-on-pool", post(enqueued_on_the_pool::<DB>))
        .route("/read-only", get(read_only))
        .with_state(Client::new(pool.clone()))
        .layer(DefaultBodyLimit::max(64))
        .layer(CatchPanicLayer::new())
        .layer(TxLayer::new(pool))
}

async fn setup<DB: NotesDb>(pool: &Pool<DB>) {
    Client::new(pool.clone()).migrate().await.expect("migrate");
    DB::create_notes(pool).await;
}

fn post_empty(path: &str) -> Request<Body> {
    Request::post(path).body(Body::empty()).expect("request")
}

async fn jobs<DB: NotesDb>(pool: &Pool<DB>) -> i64 {
    Client::new(pool.clone())
        .count_by_state(None)
        .await
        .expect("count jobs")
        .into_iter()
        .map(|(_, n)| n)
        .sum()
}

// --- scenarios, generic over the backend ---------------------------------

async fn success_commits_writes_and_job<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let app = app(pool.clone());
    let reply = send(&app, post_empty("/created")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(DB::count_notes(&pool).await, 1);
    let counts = Client::new(pool.clone())
        .count_by_state(None)
        .await
        .expect("counts");
    assert_eq!(counts, vec![(JobState::Available, 1)]);
}

async fn redirect_commits<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let reply = send(&app(pool.clone()), post_empty("/redirected")).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(DB::count_notes(&pool).await, 1);
    assert_eq!(jobs(&pool).await, 1);
}

async fn error_response_rolls_back_writes_and_job<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let app = app(pool.clone());
    let reply = send(&app, post_empty("/failed")).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.content_type(), "application/problem+json");
    assert_eq!(reply.json()["field"], "text");
    let reply = send(&app, post_empty("/server-error")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(DB::count_notes(&pool).await, 0);
    assert_eq!(jobs(&pool).await, 0);
}

async fn panic_rolls_back_writes_and_job<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let app = app(pool.clone());
    let reply = send(&app, post_empty("/panicked")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(DB::count_notes(&pool).await, 0);
    assert_eq!(jobs(&pool).await, 0);
    // The connection went back to the pool clean: the next request commits.
    let reply = send(&app, post_empty("/created")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(DB::count_notes(&pool).await, 1);
}

async fn panic_without_catch_layer_rolls_back<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let bare = Router::new()
        .route("/panicked", post(panicked::<DB>))
        .with_state(Client::new(pool.clone()))
        .layer(TxLayer::new(pool.clone()));
    let outcome = tokio::spawn(bare.oneshot(post_empty("/panicked"))).await;
    assert!(outcome.expect_err("the panic reaches the task").is_panic());
    assert_eq!(DB::count_notes(&pool).await, 0);
    assert_eq!(jobs(&pool).await, 0);
}

async fn body_rejections_are_problems<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let app = app(pool.clone());
    let cases = [
        (
            fixture::post("/body-first", "text/plain", r#"{"text":"a"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            fixture::post("/body-first", "application/json", r#"{"text":"#),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            fixture::post(
                "/body-first",
                "application/json",
                r#"{"text":"a"} trailing"#,
            ),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            fixture::post("/body-first", "application/json", r#"{"text":7}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("text"),
        ),
        (
            fixture::post("/body-first", "application/json", "x".repeat(65)),
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
    ];
    for (request, expected, field) in cases {
        let reply = send(&app, request).await;
        assert_eq!(reply.status, expected, "body: {}", reply.text());
        assert_eq!(reply.content_type(), "application/problem+json");
        let body = reply.json();
        assert_eq!(body["status"], expected.as_u16());
        assert_eq!(body["field"].as_str(), field);
    }
    assert_eq!(DB::count_notes(&pool).await, 0);
    let reply = send(
        &app,
        fixture::post(
            "/body-first",
            "application/json; charset=utf-8",
            r#"{"text":"ok"}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(DB::count_notes(&pool).await, 1);
    assert_eq!(jobs(&pool).await, 1);
}

async fn extracting_twice_is_a_server_error<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let reply = send(&app(pool.clone()), post_empty("/twice")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.content_type(), "application/problem+json");
}

async fn missing_layer_is_a_server_error<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let unlayered = Router::new()
        .route("/created", post(created::<DB>))
        .with_state(Client::new(pool.clone()));
    let reply = send(&unlayered, post_empty("/created")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.content_type(), "application/problem+json");
    let body = reply.json();
    assert!(
        !body.to_string().contains("TxLayer"),
        "no internals: {body}"
    );
}

async fn handler_without_tx_never_touches_the_database<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let app = app(pool.clone());
    // A closed pool fails any begin; a route that takes no Tx still answers.
    pool.close().await;
    let reply = send(&app, fixture::get("/read-only")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(&app, post_empty("/created")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.content_type(), "application/problem+json");
    let body = reply.json();
    assert!(
        !body.to_string().to_lowercase().contains("pool"),
        "no internals: {body}"
    );
}

async fn question_mark_on_enqueue_tx_commits_the_job<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let reply = send(&app(pool.clone()), post_empty("/enqueue")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(DB::count_notes(&pool).await, 1);
    assert_eq!(jobs(&pool).await, 1);
}

async fn a_bad_queue_name_is_a_500_that_rolls_back_and_hides_the_cause<DB: NotesDb>(
    pool: Pool<DB>,
) {
    setup(&pool).await;
    let reply = send(&app(pool.clone()), post_empty("/enqueue-bad-queue")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.content_type(), "application/problem+json");
    assert_eq!(reply.header("retry-after"), None);
    let body = reply.json();
    assert_eq!(body["status"], 500);
    assert!(!body.to_string().contains("Secret"), "no internals: {body}");
    assert_eq!(DB::count_notes(&pool).await, 0);
    assert_eq!(jobs(&pool).await, 0);
}

async fn an_unavailable_database_is_a_503_with_retry_after<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let app = app(pool.clone());
    pool.close().await;
    let reply = send(&app, post_empty("/enqueue-on-pool")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.content_type(), "application/problem+json");
    assert_eq!(reply.header("retry-after"), Some("5"));
    let body = reply.json();
    assert!(
        !body.to_string().to_lowercase().contains("pool"),
        "no internals: {body}"
    );
}

async fn database_errors_that_pass_are_503_and_others_500<DB: NotesDb>(pool: Pool<DB>) {
    setup(&pool).await;
    let transient = Problem::from(offload::Error::from(DB::transient_error(&pool).await));
    assert_eq!(transient.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(transient.retry_after, Some(5));
    let permanent = Problem::from(offload::Error::from(DB::duplicate_key_error(&pool).await));
    assert_eq!(permanent.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(permanent.retry_after, None);
    let contended = Problem::from(offload::Error::UniqueKeyContended {
        key: "reindex:7".into(),
    });
    assert_eq!(contended.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(contended.retry_after, Some(1));
    for problem in [transient, permanent, contended] {
        let text = serde_json::to_string(&problem).expect("serialize");
        assert!(
            !text.contains("notes") && !text.contains("reindex"),
            "{text}"
        );
    }
}

// --- backends ------------------------------------------------------------

/// Runs `scenario` on a fresh database of `DB`'s kind, with a pool of 5.
async fn on_fresh<DB: NotesDb, F: Future<Output = ()>>(scenario: fn(Pool<DB>) -> F) {
    let connect = |url: String| async move { DB::connect(&url, 5).await.expect("connect") };
    FreshDatabase::with_pool(connect, scenario).await;
}

offload_test_fixture::on_both_backends!(on_fresh =>
    success_commits_writes_and_job,
    redirect_commits,
    error_response_rolls_back_writes_and_job,
    panic_rolls_back_writes_and_job,
    panic_without_catch_layer_rolls_back,
    body_rejections_are_problems,
    extracting_twice_is_a_server_error,
    missing_layer_is_a_server_error,
    handler_without_tx_never_touches_the_database,
    question_mark_on_enqueue_tx_commits_the_job,
    a_bad_queue_name_is_a_500_that_rolls_back_and_hides_the_cause,
    an_unavailable_database_is_a_503_with_retry_after,
    database_errors_that_pass_are_503_and_others_500,
);
