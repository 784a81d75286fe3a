//! Shared test support: real databases, app tables for effects, test jobs.
#![allow(dead_code)]

pub mod blocking;
pub mod cluster;
pub mod database;
pub mod faults;
pub mod history;
pub mod jobs;
pub mod postgres;
pub mod processes;

use std::time::Duration;

use offload::{Backend, Client, JobState, WorkerConfig};

pub use database::{TestDatabase, TestDb};
pub use offload_test_fixture::eventually;

/// Worker settings fast enough for tests: short polls, leases and back-offs.
pub fn fast_config() -> WorkerConfig {
    WorkerConfig::default()
        .poll_interval(Some(Duration::from_millis(50)))
        .promote_interval(Duration::from_millis(50))
        .heartbeat_interval(Duration::from_millis(200))
        .lease(Duration::from_secs(1))
        .rescue_interval(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(5))
        .cancel_grace(Duration::from_millis(500))
        // A killed leader's maintenance (rescue) moves to another worker
        // within about this.
        .leader_ttl(Duration::from_secs(1))
}

/// The job's state, panicking if it does not exist.
pub async fn state_of<DB: Backend>(client: &Client<DB>, id: i64) -> JobState {
    client
        .job(id)
        .await
        .expect("job lookup")
        .expect("job exists")
        .state
}

/// Waits until job `id` is in `state`.
pub async fn wait_for_state<DB: Backend>(client: &Client<DB>, id: i64, state: JobState) {
    eventually(
        Duration::from_secs(20),
        &format!("job {id} to be {state}"),
        || async { state_of(client, id).await == state },
    )
    .await;
}

/// Count of jobs in `state`.
pub async fn count_in<DB: Backend>(client: &Client<DB>, state: JobState) -> i64 {
    client
        .count_by_state(None)
        .await
        .expect("counts")
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n)
}

/// Generates a PostgreSQL and a SQLite test for a generic scenario.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let db = $crate::support::TestDatabase::<sqlx::Postgres>::create().await;
                    super::$scenario(&db).await;
                    db.drop_database().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = $crate::support::TestDatabase::<sqlx::Sqlite>::create().await;
                    super::$scenario(&db).await;
                    db.drop_database().await;
                }
            }
        )+
    };
}
