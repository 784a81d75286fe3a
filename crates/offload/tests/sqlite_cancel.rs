//! A transaction whose `BEGIN` is cancelled part-way (an HTTP client that
//! disconnects, a timeout) must not stay open on the pooled connection.
//!
//! sqlx 0.8's SQLite `begin_with` increments its transaction depth, then
//! awaits the connection handle; a future dropped at that await leaves the
//! transaction open and no `Transaction` to roll it back. The pool offload
//! builds rolls such a transaction back when the connection is released.

use std::time::Duration;

use offload::Backend;
use offload_test_fixture::FreshDatabase;
use sqlx::Sqlite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_begin_leaves_no_transaction_open() {
    let db = FreshDatabase::sqlite();
    let pool = <Sqlite as Backend>::connect(db.url(), 1).await.unwrap();
    let mut cancelled = 0;
    for i in 0..2_000u64 {
        let begin = <Sqlite as Backend>::begin_write(&pool);
        match tokio::time::timeout(Duration::from_micros(i % 150), begin).await {
            Ok(tx) => tx.unwrap().commit().await.unwrap(),
            Err(_) => cancelled += 1,
        }
    }
    assert!(
        cancelled > 0,
        "no begin was cancelled; the test proves nothing"
    );
    let mut tx = tokio::time::timeout(
        Duration::from_secs(10),
        <Sqlite as Backend>::begin_write(&pool),
    )
    .await
    .expect("begin timed out")
    .expect("the pooled connection was left inside a transaction");
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}
