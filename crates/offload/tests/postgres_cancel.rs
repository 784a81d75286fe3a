//! A request cancelled part-way through `BEGIN` (an HTTP client that
//! disconnects, a timeout) must not leave its pooled PostgreSQL connection
//! inside a transaction for later work to inherit.
//!
//! sqlx 0.8's `PgTransactionManager::begin` sends `BEGIN` and counts the
//! transaction only once the reply arrives; its rollback guard does nothing
//! at depth 0, so a future dropped while waiting for that reply returns the
//! connection to the pool with the server inside a transaction. Autocommit
//! writes on it (a job's completion) then stay uncommitted until someone's
//! `ROLLBACK` discards them, and the job stays `running` on a live worker.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use offload::Backend;
use offload_test_fixture::FreshDatabase;
use sqlx::{PgPool, Postgres, Row};

/// Polls `future` `polls` times, letting the runtime run in between (so
/// `BEGIN` is sent and its reply arrives), then drops it.
async fn cancel_after<F: Future>(future: F, polls: usize) -> bool {
    let mut future = pin!(future);
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
        if polled.is_ready() {
            return false;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    true
}

/// Whether the connection the pool hands out next is inside a transaction
/// block: a simple query's `now()` equals its `statement_timestamp()` only
/// when the statement started its own transaction.
async fn handed_out_in_transaction(pool: &PgPool) -> bool {
    let mut conn = pool.acquire().await.unwrap();
    let row = sqlx::Executor::fetch_one(&mut *conn, "SELECT now() = statement_timestamp()")
        .await
        .unwrap();
    !row.get::<bool, _>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_begin_never_hands_out_a_connection_inside_a_transaction() {
    let db = FreshDatabase::postgres().await;
    // One connection: every cancelled BEGIN lands on the one handed out next.
    let pool = <Postgres as Backend>::connect(db.url(), 1).await.unwrap();
    let mut cancelled = 0;
    let mut inherited = Vec::new();
    for polls in (1..=200).map(|i| i % 5 + 1) {
        if cancel_after(<Postgres as Backend>::begin_write(&pool), polls).await {
            cancelled += 1;
        }
        if handed_out_in_transaction(&pool).await {
            inherited.push(polls);
            // Clean up so each case is tried on its own.
            sqlx::Executor::execute(&pool, "ROLLBACK").await.unwrap();
        }
    }
    assert!(
        cancelled > 0,
        "no begin was cancelled; the test proves nothing"
    );
    assert!(
        inherited.is_empty(),
        "a connection was handed out inside a transaction after a BEGIN cancelled at poll {inherited:?}"
    );
    pool.close().await;
    db.cleanup().await;
}

/// The symptom: an autocommit write after a cancelled `BEGIN` must be
/// committed, visible to another connection, and survive a later rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_write_after_a_cancelled_begin_is_committed() {
    let db = FreshDatabase::postgres().await;
    let pool = <Postgres as Backend>::connect(db.url(), 1).await.unwrap();
    let other = <Postgres as Backend>::connect(db.url(), 1).await.unwrap();
    sqlx::Executor::execute(&pool, "CREATE TABLE marks (n int PRIMARY KEY)")
        .await
        .unwrap();
    let mut lost = Vec::new();
    for n in 1..=100i32 {
        cancel_after(
            <Postgres as Backend>::begin_write(&pool),
            n as usize % 5 + 1,
        )
        .await;
        sqlx::query("INSERT INTO marks (n) VALUES ($1)")
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
        // Later work on the same connection that rolls back its own transaction.
        let tx = <Postgres as Backend>::begin_write(&pool).await.unwrap();
        tx.rollback().await.unwrap();
        let seen: Option<i32> = sqlx::query_scalar("SELECT n FROM marks WHERE n = $1")
            .bind(n)
            .fetch_optional(&other)
            .await
            .unwrap();
        if seen.is_none() {
            lost.push(n);
        }
    }
    assert!(lost.is_empty(), "autocommit writes {lost:?} were lost");
    pool.close().await;
    other.close().await;
    db.cleanup().await;
}
