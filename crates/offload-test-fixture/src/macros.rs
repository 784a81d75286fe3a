//! One test per backend for each backend-generic scenario.

/// Generates a PostgreSQL and an SQLite test, `postgres::<scenario>` and
/// `sqlite::<scenario>`, for each scenario generic over the sqlx database
/// type: each test awaits `run::<sqlx::Postgres, _>(scenario::<sqlx::Postgres>)`
/// or the same with `sqlx::Sqlite`.
///
/// `run` is a function of the calling module, generic over the backend
/// and then the scenario's future (`async fn run<DB, F>(scenario: fn(…) -> F)`),
/// that gives the scenario its database: typically it makes a
/// [`FreshDatabase`] and connects to it, say through
/// [`FreshDatabase::with_pool`].
///
/// The PostgreSQL tests run on Tokio's current-thread runtime, the SQLite
/// ones on a multi-thread runtime with two workers. The calling crate
/// needs `tokio` (with its `macros` and `rt-multi-thread` features) and
/// `sqlx`.
///
/// [`FreshDatabase`]: crate::FreshDatabase
/// [`FreshDatabase::with_pool`]: crate::FreshDatabase::with_pool
///
/// ```
/// use std::future::Future;
///
/// use offload_test_fixture::{FreshBackend, FreshDatabase};
///
/// async fn on_fresh<DB: FreshBackend, F: Future<Output = ()>>(scenario: fn(String) -> F) {
///     let db = FreshDatabase::create::<DB>().await;
///     scenario(db.url().to_owned()).await;
///     db.cleanup().await;
/// }
///
/// async fn has_a_url<DB: sqlx::Database>(url: String) {
///     assert!(!url.is_empty(), "{}", DB::NAME);
/// }
///
/// // Makes the tests `postgres::has_a_url` and `sqlite::has_a_url`.
/// offload_test_fixture::on_both_backends!(on_fresh => has_a_url);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! on_both_backends {
    ($run:ident => $($scenario:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$run::<sqlx::Postgres, _>(super::$scenario::<sqlx::Postgres>).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$run::<sqlx::Sqlite, _>(super::$scenario::<sqlx::Sqlite>).await;
                }
            )*
        }
    };
}
