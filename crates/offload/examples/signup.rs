//! A sign-up service: the request saves the user and enqueues the welcome
//! mail in **one** transaction, and the mail job writes in its **own**.
//! One binary for both backends: the job and the handler are written once.
//!
//! ```sh
//! cargo run -p offload --example signup                      # SQLite, ./signup.db
//! cargo run -p offload --example signup -- postgres://postgres@127.0.0.1:5432/test
//! curl -s -XPOST localhost:3000/signup -H 'content-type: application/json' -d '{"email":"ada@example.com"}'
//! curl -s localhost:3000/users/1                             # welcomed_at is set
//! ```
//!
//! Stop it with Ctrl-C: the worker finishes the jobs it is running first.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use offload::{
    Backend, BackendKind, Client, Job, JobContext, JobError, Registry, Sql, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};

/// What every job shares: here, the address mails come from. A real app
/// keeps its SMTP or HTTP client here.
struct Mailer {
    from: String,
}

/// Sends the welcome mail, then marks the user welcomed.
#[derive(Serialize, Deserialize)]
struct SendWelcome {
    user_id: i64,
}

impl<DB: Backend> Job<DB, Mailer> for SendWelcome {
    const KIND: &'static str = "send_welcome";
    const QUEUE: &'static str = "mail";
    const MAX_ATTEMPTS: i32 = 5;

    async fn run(self, ctx: &mut JobContext<DB, Mailer>) -> Result<(), JobError> {
        // Slow work (the mail) first, before the job's transaction opens.
        let email: String = Sql::new("SELECT email FROM users WHERE id = $1")
            .bind(self.user_id)
            .fetch_scalar(&mut ctx.pool().acquire().await?)
            .await?;
        tracing::info!(from = %ctx.state().from, to = %email, "welcome mail sent");
        // The job's own transaction: it commits with the job's completion,
        // or rolls back if anything after this fails.
        Sql::new("UPDATE users SET welcomed_at = $1 WHERE id = $2")
            .bind(chrono::Utc::now().to_rfc3339())
            .bind(self.user_id)
            .execute(ctx)
            .await?;
        Ok(())
    }
}

struct App<DB: Backend> {
    pool: sqlx::Pool<DB>,
    jobs: Client<DB>,
}

#[derive(Deserialize)]
struct SignUp {
    email: String,
}

#[derive(Serialize, sqlx::FromRow)]
struct User {
    id: i64,
    email: String,
    welcomed_at: Option<String>,
}

type Reply<T> = Result<T, (StatusCode, String)>;

fn internal(error: impl std::fmt::Display) -> (StatusCode, String) {
    tracing::error!(%error, "request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

async fn sign_up<DB: Backend>(
    State(app): State<Arc<App<DB>>>,
    Json(body): Json<SignUp>,
) -> Reply<(StatusCode, Json<User>)> {
    let mut tx = DB::begin_write(&app.pool).await.map_err(internal)?;
    let id: i64 = Sql::new("INSERT INTO users (email) VALUES ($1) RETURNING id")
        .bind(body.email.clone())
        .fetch_scalar(&mut tx)
        .await
        .map_err(internal)?;
    // In the request's transaction: the job exists if and only if the user
    // row commits. A crash before the commit leaves neither.
    app.jobs
        .enqueue_tx(&mut *tx, SendWelcome { user_id: id })
        .await
        .map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    let user = User {
        id,
        email: body.email,
        welcomed_at: None,
    };
    Ok((StatusCode::CREATED, Json(user)))
}

async fn user<DB: Backend>(
    State(app): State<Arc<App<DB>>>,
    Path(id): Path<i64>,
) -> Reply<Json<User>> {
    let mut conn = app.pool.acquire().await.map_err(internal)?;
    Sql::new("SELECT id, email, welcomed_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut conn)
        .await
        .map_err(internal)?
        .map(Json)
        .ok_or((StatusCode::NOT_FOUND, format!("no user {id}")))
}

async fn serve<DB: Backend>(url: &str, users_table: &str) -> anyhow::Result<()> {
    let pool = DB::connect(url, 8).await?;
    DB::migrate(&pool).await?;
    Sql::new(users_table.to_owned())
        .execute(&mut pool.acquire().await?)
        .await?;

    let registry = Registry::<DB, Mailer>::with_state(Mailer {
        from: "welcome@example.com".into(),
    })
    .register::<SendWelcome>();
    let worker = Worker::new(
        pool.clone(),
        registry,
        WorkerConfig::default().queue("mail", 4),
    )
    .start()
    .await?;

    let app = Arc::new(App {
        jobs: Client::new(pool.clone()),
        pool,
    });
    let router = Router::new()
        .route("/signup", post(sign_up::<DB>))
        .route("/users/{id}", get(user::<DB>))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "listening on http://127.0.0.1:3000 ({})",
        <DB as sqlx::Database>::NAME
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(offload::shutdown_signal())
        .await?;
    worker.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite://signup.db?mode=rwc".into());
    // Only the table's DDL differs between the backends.
    match BackendKind::from_url(&url)? {
        BackendKind::Postgres => {
            serve::<sqlx::Postgres>(
                &url,
                "CREATE TABLE IF NOT EXISTS users (id BIGSERIAL PRIMARY KEY, email TEXT NOT NULL, welcomed_at TEXT)",
            )
            .await
        }
        BackendKind::Sqlite => {
            serve::<sqlx::Sqlite>(
                &url,
                "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, welcomed_at TEXT)",
            )
            .await
        }
    }
}
