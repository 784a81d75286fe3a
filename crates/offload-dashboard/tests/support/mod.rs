//! Shared test helpers: real databases, a real worker, and requests sent
//! straight into the router.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use offload::{
    Backend, Client, Job, JobContext, JobError, JobState, NewJob, Registry, Worker, WorkerConfig,
    WorkerHandle,
};
use serde::{Deserialize, Serialize};
use sqlx::{Pool, Sqlite};
use tower::ServiceExt;

/// Runs one generic scenario on PostgreSQL (a fresh database per test) and
/// on an SQLite temp file.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[sqlx::test(migrations = false)]
                async fn postgres(pool: sqlx::PgPool) {
                    offload::Client::new(pool.clone()).migrate().await.expect("migrate");
                    super::$scenario(pool).await;
                }

                #[tokio::test]
                async fn sqlite() {
                    let (_dir, pool) = $crate::support::sqlite_pool().await;
                    super::$scenario(pool).await;
                }
            }
        )*
    };
}

/// A migrated SQLite database in a temp directory (kept while the guard lives).
pub async fn sqlite_pool() -> (tempfile::TempDir, Pool<Sqlite>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let pool = <Sqlite as Backend>::connect(&url, 8)
        .await
        .expect("connect");
    Client::new(pool.clone()).migrate().await.expect("migrate");
    (dir, pool)
}

/// Fails when `fail` is set; one attempt only, so it ends discarded.
#[derive(Debug, Serialize, Deserialize)]
pub struct Flaky {
    pub fail: bool,
    #[serde(default)]
    pub note: String,
}

impl<DB: Backend> Job<DB> for Flaky {
    const KIND: &'static str = "flaky";
    const MAX_ATTEMPTS: i32 = 1;

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        if self.fail {
            Err(JobError::failed(format!("boom: {}", self.note)))
        } else {
            Ok(())
        }
    }
}

/// Runs until cancelled.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sleeper;

impl<DB: Backend> Job<DB> for Sleeper {
    const KIND: &'static str = "sleeper";

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        ctx.cancelled().await;
        Err(JobError::cancel("stopped by signal"))
    }
}

pub async fn start_worker<DB: Backend>(pool: &Pool<DB>, queues: &[&str]) -> WorkerHandle {
    let registry = Registry::new().register::<Flaky>().register::<Sleeper>();
    let mut config = WorkerConfig::default().poll_interval(Some(Duration::from_millis(50)));
    for queue in queues {
        config = config.queue(*queue, 4);
    }
    Worker::new(pool.clone(), registry, config)
        .start()
        .await
        .expect("worker starts")
}

/// Waits until no job is available, scheduled-due, retryable or running.
pub async fn wait_idle<DB: Backend>(pool: &Pool<DB>) {
    let client = Client::new(pool.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counts = client.count_by_state(None).await.expect("counts");
        let busy: i64 = counts
            .iter()
            .filter(|(state, _)| {
                matches!(
                    state,
                    JobState::Available | JobState::Running | JobState::Retryable
                )
            })
            .map(|(_, n)| n)
            .sum();
        if busy == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "jobs still busy: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until job `id` is in `state`.
pub async fn wait_for_state<DB: Backend>(pool: &Pool<DB>, id: i64, state: JobState) {
    let client = Client::new(pool.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = client.job(id).await.expect("fetch").expect("job exists");
        if job.state == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} stayed {} (wanted {state})",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Inserts jobs of kind `flaky` with the given queue, failure flag and tags.
pub async fn insert<DB: Backend>(pool: &Pool<DB>, jobs: &[(&str, bool, &[&str])]) -> Vec<i64> {
    let rows: Vec<NewJob> = jobs
        .iter()
        .map(|(queue, fail, tags)| {
            let mut job = NewJob::new(
                "flaky",
                serde_json::json!({ "fail": fail, "note": format!("in {queue}") }).to_string(),
            );
            job.queue = (*queue).to_owned();
            job.max_attempts = 1;
            job.tags = tags.iter().map(|t| (*t).to_owned()).collect();
            job
        })
        .collect();
    Client::new(pool.clone())
        .insert(&rows)
        .await
        .expect("insert")
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: axum::http::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

pub async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        content_type,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(router: &Router, uri: &str) -> Reply {
    send(
        router,
        Request::get(uri).body(Body::empty()).expect("request"),
    )
    .await
}

pub async fn post_json(router: &Router, uri: &str, body: serde_json::Value) -> Reply {
    send(
        router,
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request"),
    )
    .await
}
