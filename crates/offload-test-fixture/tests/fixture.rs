//! The fixture against the real servers: databases appear, are isolated
//! and disappear, on cleanup and on drop; replies read whole.

use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use offload_test_fixture::{
    self as fixture, admin_url, eventually, send, FreshBackend, FreshDatabase,
};
use sqlx::{Connection, PgConnection, Postgres, Sqlite, SqliteConnection};
use std::time::Duration;

async fn exists_on_server(name: &str) -> bool {
    let mut admin = PgConnection::connect(&admin_url()).await.expect("admin");
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("query pg_database");
    found == 1
}

#[tokio::test]
async fn postgres_databases_are_separate_and_dropped_by_cleanup() {
    let (a, b) = (
        FreshDatabase::postgres().await,
        FreshDatabase::postgres().await,
    );
    assert_ne!(a.name(), b.name());
    assert!(a.url().ends_with(&format!("/{}", a.name())), "{}", a.url());
    assert!(a.dir().is_none());

    let mut conn = PgConnection::connect(a.url()).await.expect("connect");
    sqlx::query("CREATE TABLE only_in_a (n int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut other = PgConnection::connect(b.url()).await.expect("connect");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'only_in_a'",
    )
    .fetch_one(&mut other)
    .await
    .unwrap();
    assert_eq!(tables, 0, "b is a database of its own");
    other.close().await.unwrap();

    // Cleanup ends the connection still open to it.
    let name = a.name().to_owned();
    assert!(exists_on_server(&name).await);
    a.cleanup().await;
    assert!(!exists_on_server(&name).await);
    b.cleanup().await;
}

#[tokio::test]
async fn a_dropped_postgres_database_is_dropped_on_the_server() {
    let db = <Postgres as FreshBackend>::fresh_database().await;
    let name = db.name().to_owned();
    let _conn = PgConnection::connect(db.url()).await.expect("connect");
    drop(db);
    assert!(!exists_on_server(&name).await);
}

#[tokio::test]
async fn a_panicking_test_leaves_no_database() {
    let db = FreshDatabase::create::<Postgres>().await;
    let name = db.name().to_owned();
    let failed = tokio::spawn(async move {
        let _db = db;
        panic!("the test fails");
    })
    .await;
    assert!(failed.unwrap_err().is_panic());
    assert!(!exists_on_server(&name).await);
}

#[test]
fn drop_works_outside_a_runtime() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(FreshDatabase::postgres());
    let name = db.name().to_owned();
    drop(db);
    assert!(!runtime.block_on(exists_on_server(&name)));
}

#[tokio::test]
async fn sqlite_files_live_in_a_dir_removed_by_cleanup_or_drop() {
    let db = FreshDatabase::create::<Sqlite>().await;
    let dir = db.dir().expect("a dir").to_owned();
    let url = format!("{}?mode=rwc", db.url());
    let mut conn = SqliteConnection::connect(&url).await.expect("open");
    sqlx::query("CREATE TABLE t (n INTEGER)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert!(dir.join(db.name()).exists());
    let other = FreshDatabase::sqlite();
    assert_ne!(other.dir(), Some(dir.as_path()));
    db.cleanup().await;
    assert!(!dir.exists());

    let other_dir = other.dir().unwrap().to_owned();
    drop(other);
    assert!(!other_dir.exists());
}

#[tokio::test]
async fn replies_carry_status_headers_and_body() {
    let app = Router::new()
        .route("/text", get(|| async { (StatusCode::ACCEPTED, "plain") }))
        .route(
            "/echo",
            post(|body: String| async move { ([(header::CONTENT_TYPE, "text/x-echo")], body) }),
        );
    let text = send(&app, fixture::get("/text")).await;
    assert_eq!(text.status, StatusCode::ACCEPTED);
    assert!(text.content_type().starts_with("text/plain"));
    assert_eq!(text.text(), "plain");
    let echoed = send(&app, fixture::post("/echo", "text/plain", "ping")).await;
    assert_eq!(echoed.content_type(), "text/x-echo");
    assert_eq!(&echoed.body[..], b"ping");
    let missing = send(&app, fixture::get("/nowhere")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.content_type(), "");
    assert_eq!(missing.header(header::LOCATION), None);
}

#[tokio::test]
#[should_panic(expected = "not JSON")]
async fn json_of_a_non_json_body_panics_showing_it() {
    let app = Router::new().route("/", get(|| async { "plain" }));
    send(&app, fixture::get("/")).await.json();
}

#[tokio::test]
#[should_panic(expected = "timed out after 100ms waiting for: never")]
async fn eventually_gives_up_after_its_limit() {
    eventually(Duration::from_millis(100), "never", || async { false }).await;
}

async fn on_fresh<DB: FreshBackend, F: std::future::Future<Output = ()>>(
    scenario: fn(String) -> F,
) {
    let db = FreshDatabase::create::<DB>().await;
    scenario(db.url().to_owned()).await;
    db.cleanup().await;
}

async fn each_backend_gets_a_database_of_its_kind<DB: FreshBackend>(url: String) {
    let scheme = match DB::NAME {
        "PostgreSQL" => "postgres://",
        _ => "sqlite://",
    };
    assert!(url.starts_with(scheme), "{}: {url}", DB::NAME);
}

offload_test_fixture::on_both_backends!(on_fresh => each_backend_gets_a_database_of_its_kind);
