use std::time::Duration;

use offload_test_fixture::FreshDatabase;

use super::WriteGroup;
use crate::Backend;

/// A worker retrying a failing write (a full disk) between turns must not
/// keep a one-connection pool from the application.
#[tokio::test]
async fn a_failed_lone_statement_hands_its_connection_back() {
    let db = FreshDatabase::sqlite();
    let pool = sqlx::Sqlite::connect(db.url(), 1).await.expect("connect");
    let group = WriteGroup::new(pool.clone(), false);
    for _ in 0..3 {
        let mut member = group.join_statement().await.expect("turn");
        let failed = sqlx::query("INSERT INTO no_such_table VALUES (1)")
            .execute(&mut *member)
            .await;
        assert!(failed.is_err());
        member.rollback().await.expect("rollback");
        let conn = tokio::time::timeout(Duration::from_secs(2), pool.acquire()).await;
        assert!(
            conn.is_ok(),
            "the pool's one connection stayed with the write group"
        );
    }
    drop(group);
    db.cleanup().await;
}
