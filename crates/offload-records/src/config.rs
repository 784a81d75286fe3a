//! Command-line flags, each with an environment-variable fallback.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::api::{JobSettings, DEFAULT_BODY_LIMIT};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The reference records service: HTTP API and job workers in one process.
#[derive(Debug, Clone, Parser)]
#[command(name = "offload-records", version, about)]
pub struct Config {
    /// Database URL: `sqlite://FILE` or `postgres://...` (default: an SQLite
    /// file in the working directory).
    // Hidden in `--help`: the environment's value (and the default read from
    // it) may hold a password.
    #[arg(long, env = "DATABASE_URL", default_value_t = offload::database_url_from_env(),
          hide_env_values = true, hide_default_value = true)]
    pub database_url: String,
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Jobs run at once by the in-process worker.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 16)]
    pub worker_concurrency: usize,
    /// Database connections in the pool. Default: 1 on SQLite, where
    /// writers take turns anyway and waiting in the pool's fair queue beats
    /// SQLite's sleeping busy handler; 32 on PostgreSQL.
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Milliseconds a request waits for a database connection before it is
    /// answered 503. Default: 3,000 on PostgreSQL, so requests fail fast
    /// while the server is down (sqlx keeps retrying a refused connection
    /// until this passes); 30,000 on SQLite, where a wait means a busy
    /// writer, never a server away.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT_MS")]
    pub db_acquire_timeout_ms: Option<u64>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// SHA-256 rounds each record's job computes.
    #[arg(long, env = "HASH_ROUNDS", default_value_t = JobSettings::default().hash_rounds,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub hash_rounds: u32,
    /// Milliseconds each job waits, standing in for a mail or webhook call.
    #[arg(long, env = "JOB_DELAY_MS", default_value_t = JobSettings::default().delay_ms)]
    pub job_delay_ms: u64,
    /// Tasks writing concurrent `POST /records` in shared transactions
    /// (group commit); 0 gives each request its own transaction. Default:
    /// 1 on SQLite (one writer at a time), 2 on PostgreSQL.
    #[arg(long, env = "GROUP_COMMIT_WRITERS")]
    pub group_commit_writers: Option<usize>,
    /// Seconds shutdown waits for running jobs before handing them back.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Token the dashboard at `/dashboard` asks for. Required when
    /// listening beyond loopback; at least 12 characters.
    #[arg(long, env = "OFFLOAD_DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<String>,
    /// OTLP endpoint (gRPC, e.g. `http://127.0.0.1:4317`) to export spans
    /// to. Needs the `otel` feature; without it, the flag is refused.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", hide_env_values = true)]
    pub otlp_endpoint: Option<String>,
    /// Timeouts for slow clients and the cap on open HTTP connections.
    #[command(flatten)]
    pub http_limits: offload_axum::serve::LimitsArgs,
}

impl Config {
    /// The pool size for `backend`.
    pub fn max_connections(&self, backend: offload::BackendKind) -> u32 {
        self.max_connections.unwrap_or(match backend {
            offload::BackendKind::Sqlite => 1,
            offload::BackendKind::Postgres => 32,
        })
    }

    /// The pool's size and acquire timeout for `backend`.
    pub fn pool_settings(&self, backend: offload::BackendKind) -> offload::PoolSettings {
        let acquire = match (self.db_acquire_timeout_ms, backend) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, offload::BackendKind::Sqlite) => offload::DEFAULT_ACQUIRE_TIMEOUT,
            (None, offload::BackendKind::Postgres) => offload::INTERACTIVE_ACQUIRE_TIMEOUT,
        };
        offload::PoolSettings::new(self.max_connections(backend)).acquire_timeout(acquire)
    }

    /// Group-commit writer tasks for `backend`.
    pub fn group_commit_writers(&self, backend: offload::BackendKind) -> usize {
        self.group_commit_writers.unwrap_or(match backend {
            offload::BackendKind::Sqlite => 1,
            offload::BackendKind::Postgres => 2,
        })
    }

    /// Job tuning for new records.
    pub fn job_settings(&self) -> JobSettings {
        JobSettings {
            hash_rounds: self.hash_rounds,
            delay_ms: self.job_delay_ms,
        }
    }

    /// The dashboard's settings for serving on `listen`: refused when the
    /// address is reachable from other hosts and no token is set.
    pub fn dashboard(
        &self,
        listen: std::net::SocketAddr,
    ) -> Result<offload_dashboard::DashboardConfig, offload_dashboard::ConfigError> {
        let mut dashboard = offload_dashboard::DashboardConfig::new()
            .title("offload-records")
            .database(&self.database_url);
        if let Some(token) = &self.dashboard_token {
            dashboard = dashboard.token(token.clone());
        }
        dashboard.for_listener(listen)
    }

    /// The limits the HTTP server holds clients to.
    pub fn server_limits(&self) -> offload_axum::serve::ServerLimits {
        self.http_limits.limits()
    }

    /// How long shutdown waits for running jobs.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}
