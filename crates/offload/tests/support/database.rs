//! A fresh real database per test, and the app tables jobs write to.

use std::future::Future;

use offload::{Backend, Client};
use offload_test_fixture::{FreshBackend, FreshDatabase};
use sqlx::{Pool, Postgres, Sqlite};

/// What tests need from a backend beyond offload's own: a fresh database
/// (from the fixture) and a few app tables. The SQL for them lives here,
/// per backend.
pub trait TestDb: Backend + FreshBackend {
    /// Creates the `counter` and `effects` tables.
    fn create_app_tables(pool: &Pool<Self>) -> impl Future<Output = ()> + Send;
    /// Adds one to the counter and records `job_id` as an effect.
    fn apply_effect(
        conn: &mut Self::Connection,
        job_id: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// Records `job_id` as an effect, without touching the shared counter
    /// row (no lock contention between jobs).
    fn record_effect(
        conn: &mut Self::Connection,
        job_id: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// Running jobs held by worker processes with this pid.
    fn running_of_pid(
        pool: &Pool<Self>,
        pid: u32,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
    /// The counter's value.
    fn counter(pool: &Pool<Self>) -> impl Future<Output = i64> + Send;
    /// (effects recorded, distinct jobs that recorded one).
    fn effects(pool: &Pool<Self>) -> impl Future<Output = (i64, i64)> + Send;
}

impl TestDb for Postgres {
    async fn create_app_tables(pool: &Pool<Self>) {
        sqlx::raw_sql(
            "CREATE TABLE counter (id int PRIMARY KEY, value bigint NOT NULL);
             INSERT INTO counter VALUES (1, 0);
             CREATE TABLE effects (job_id bigint NOT NULL);",
        )
        .execute(pool)
        .await
        .expect("app tables");
    }

    async fn apply_effect(conn: &mut sqlx::PgConnection, job_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE counter SET value = value + 1 WHERE id = 1")
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO effects (job_id) VALUES ($1)")
            .bind(job_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn running_of_pid(pool: &Pool<Self>, pid: u32) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT count(*) FROM offload_jobs WHERE state = 'running' AND worker_id LIKE $1",
        )
        .bind(format!("%-{pid}-%"))
        .fetch_one(pool)
        .await
    }

    async fn record_effect(conn: &mut sqlx::PgConnection, job_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO effects (job_id) VALUES ($1)")
            .bind(job_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn counter(pool: &Pool<Self>) -> i64 {
        sqlx::query_scalar("SELECT value FROM counter WHERE id = 1")
            .fetch_one(pool)
            .await
            .expect("counter")
    }

    async fn effects(pool: &Pool<Self>) -> (i64, i64) {
        sqlx::query_as("SELECT count(*), count(DISTINCT job_id) FROM effects")
            .fetch_one(pool)
            .await
            .expect("effects")
    }
}

impl TestDb for Sqlite {
    async fn create_app_tables(pool: &Pool<Self>) {
        sqlx::raw_sql(
            "CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO counter VALUES (1, 0);
             CREATE TABLE effects (job_id INTEGER NOT NULL);",
        )
        .execute(pool)
        .await
        .expect("app tables");
    }

    async fn apply_effect(
        conn: &mut sqlx::SqliteConnection,
        job_id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE counter SET value = value + 1 WHERE id = 1")
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO effects (job_id) VALUES (?1)")
            .bind(job_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn running_of_pid(pool: &Pool<Self>, pid: u32) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT count(*) FROM offload_jobs WHERE state = 'running' AND worker_id LIKE ?1",
        )
        .bind(format!("%-{pid}-%"))
        .fetch_one(pool)
        .await
    }

    async fn record_effect(
        conn: &mut sqlx::SqliteConnection,
        job_id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO effects (job_id) VALUES (?1)")
            .bind(job_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn counter(pool: &Pool<Self>) -> i64 {
        sqlx::query_scalar("SELECT value FROM counter WHERE id = 1")
            .fetch_one(pool)
            .await
            .expect("counter")
    }

    async fn effects(pool: &Pool<Self>) -> (i64, i64) {
        sqlx::query_as("SELECT count(*), count(DISTINCT job_id) FROM effects")
            .fetch_one(pool)
            .await
            .expect("effects")
    }
}

/// A fresh database with offload's schema and the app tables.
pub struct TestDatabase<DB: TestDb> {
    pub url: String,
    pub pool: Pool<DB>,
    pub client: Client<DB>,
    /// Drops the database when the test ends, also when it panics.
    fresh: FreshDatabase,
}

impl<DB: TestDb> TestDatabase<DB> {
    pub async fn create() -> Self {
        let fresh = FreshDatabase::create::<DB>().await;
        let url = fresh.url().to_owned();
        let pool = DB::connect(&url, 16).await.expect("connect");
        let client = Client::new(pool.clone());
        client.migrate().await.expect("migrate");
        DB::create_app_tables(&pool).await;
        Self {
            url,
            pool,
            client,
            fresh,
        }
    }

    /// Another pool on the same database, as another worker would have.
    pub async fn another_pool(&self) -> Pool<DB> {
        DB::connect(&self.url, 16).await.expect("connect")
    }

    pub async fn drop_database(self) {
        self.pool.close().await;
        self.fresh.cleanup().await;
    }
}
