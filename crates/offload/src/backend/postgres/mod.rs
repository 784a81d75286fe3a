//! PostgreSQL: many worker processes on many hosts share one database.
//! Claims use `FOR UPDATE SKIP LOCKED`; inserts wake workers with `NOTIFY`.

mod admin;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{Executor, PgConnection, PgPool, Postgres, Row, Transaction};

use super::{
    decode_errors, decode_tags, migrate, Attempt, Backend, ClaimedJob, JobRecord, Leader, NewJob,
    Outcome, Signals, WorkerInfo,
};
use crate::state::JobState;
use crate::{Error, Result};

/// The channel enqueues notify, with the queue name as payload.
const CHANNEL: &str = "offload_jobs";
/// The channel operators' cancels notify, with the job id as payload.
pub(crate) const CANCEL_CHANNEL: &str = "offload_cancel";

const INSERT: &str = r#"
WITH ins AS (
    INSERT INTO offload_jobs (kind, queue, args, priority, max_attempts, state, run_at, tags)
    SELECT k, q, a::jsonb, p, m,
           CASE WHEN r IS NULL OR r <= now() THEN 'available' ELSE 'scheduled' END,
           COALESCE(r, now()), t::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::int4[], $6::timestamptz[], $7::text[])
         AS u(k, q, a, p, m, r, t)
    RETURNING id, queue, state
), woke AS (
    SELECT count(pg_notify('offload_jobs', q)) AS n
    FROM (SELECT DISTINCT queue AS q FROM ins WHERE state = 'available') s
    WHERE $8
)
SELECT ins.id FROM ins, woke ORDER BY ins.id
"#;

const CLAIM: &str = r#"
WITH picked AS (
    SELECT id FROM offload_jobs
    WHERE state = 'available' AND queue = $1
      AND NOT EXISTS (SELECT 1 FROM offload_queues q WHERE q.name = $1 AND q.paused)
    ORDER BY priority, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE offload_jobs j
SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), worker_id = $3
-- An id array probes the primary key; a join to the CTE plans as a hash
-- join over a scan of the whole table.
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.kind, j.queue, j.args::text, j.attempt, j.max_attempts, j.run_at
"#;

const COMPLETE_MANY: &str = r#"
UPDATE offload_jobs j
SET state = 'completed', finalized_at = now(), worker_id = NULL
FROM unnest($1::int8[], $2::int4[]) AS d(id, attempt)
-- `IS TRUE` keeps the planner from picking a plan by the (often stale)
-- estimate of running rows: one primary-key probe per completion.
WHERE j.id = d.id AND j.attempt = d.attempt AND (j.state = 'running') IS TRUE
"#;

const DELETE_MANY: &str = r#"
DELETE FROM offload_jobs j
USING unnest($1::int8[], $2::int4[]) AS d(id, attempt)
WHERE j.id = d.id AND j.attempt = d.attempt AND (j.state = 'running') IS TRUE
"#;

const COMPLETE_ONE: &str = "UPDATE offload_jobs SET state = 'completed', finalized_at = now(), \
     worker_id = NULL WHERE id = $1 AND attempt = $2 AND state = 'running'";

const DELETE_ONE: &str =
    "DELETE FROM offload_jobs WHERE id = $1 AND attempt = $2 AND state = 'running'";

const RECORD_OUTCOME: &str = r#"
UPDATE offload_jobs
SET state = $3,
    run_at = COALESCE($4, run_at),
    max_attempts = max_attempts + $5,
    finalized_at = CASE WHEN $6 THEN now() END,
    worker_id = NULL,
    errors = CASE WHEN $7::text IS NULL THEN errors
             ELSE errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', now(), 'error', $7::text))
             END
WHERE id = $1 AND attempt = $2 AND state = 'running'
"#;

const RESCUE: &str = r#"
WITH lost AS (
    SELECT j.id FROM offload_jobs j
    WHERE j.state = 'running'
      AND NOT EXISTS (
          SELECT 1 FROM offload_workers w
          WHERE w.id = j.worker_id AND w.heartbeat_at > now() - make_interval(secs => $1)
      )
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE offload_jobs j
SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'discarded' ELSE 'available' END,
    finalized_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
    errors = j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempt, 'at', now(),
        'error', 'rescued: worker ' || COALESCE(j.worker_id, '?') || ' stopped heartbeating')),
    worker_id = NULL
WHERE j.id = ANY(ARRAY(SELECT id FROM lost))
RETURNING j.queue
"#;

const PROMOTE: &str = r#"
WITH due AS (
    SELECT id FROM offload_jobs
    WHERE state IN ('scheduled', 'retryable') AND run_at <= now()
    ORDER BY run_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE offload_jobs j SET state = 'available'
WHERE j.id = ANY(ARRAY(SELECT id FROM due))
RETURNING j.queue
"#;

const INSERT_UNIQUE: &str = r#"
WITH ins AS (
    INSERT INTO offload_jobs (kind, queue, args, priority, max_attempts, state, run_at, tags,
                              unique_key, unique_states)
    VALUES ($1, $2, $3::jsonb, $4, $5,
            CASE WHEN $6::timestamptz IS NULL OR $6 <= now() THEN 'available' ELSE 'scheduled' END,
            COALESCE($6, now()), $7::jsonb, $8, $9)
    ON CONFLICT DO NOTHING
    RETURNING id, queue, state
), woke AS (
    SELECT count(pg_notify('offload_jobs', queue)) AS n FROM ins WHERE state = 'available'
)
SELECT ins.id FROM ins, woke
"#;

const FIND_UNIQUE: &str = "SELECT id FROM offload_jobs WHERE unique_key = $1 \
     AND strpos(unique_states, ',' || state || ',') > 0";

const TRY_LEAD: &str = r#"
INSERT INTO offload_leader (name, leader_id, elected_at, expires_at)
VALUES ($1, $2, now(), now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
SET leader_id = excluded.leader_id,
    elected_at = CASE WHEN offload_leader.leader_id = excluded.leader_id
                      THEN offload_leader.elected_at ELSE now() END,
    expires_at = excluded.expires_at
WHERE offload_leader.expires_at < now() OR offload_leader.leader_id = excluded.leader_id
RETURNING leader_id
"#;

const ADVANCE_TICK: &str = r#"
INSERT INTO offload_periodic (name, last_tick) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick
WHERE offload_periodic.last_tick < excluded.last_tick
RETURNING name
"#;

const JOB_COLUMNS: &str = "id, kind, queue, state, args::text, priority, attempt, max_attempts, \
     errors::text, tags::text, created_at, run_at, attempted_at, finalized_at, worker_id";

/// id, kind, queue, args, attempt, max_attempts, run_at.
type ClaimRow = (i64, String, String, String, i32, i32, DateTime<Utc>);

impl Backend for Postgres {
    const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

    async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
        let options = PgConnectOptions::from_str(url)?;
        Ok(PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?)
    }

    async fn migrate(pool: &PgPool) -> Result<()> {
        let mut tx = pool.begin().await?;
        // Serializes concurrent migrators on the same database.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('offload_migrations'))")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS offload_migrations (version bigint PRIMARY KEY, \
             name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .execute(&mut *tx)
        .await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM offload_migrations")
            .fetch_all(&mut *tx)
            .await?;
        for migration in migrate::POSTGRES
            .iter()
            .filter(|m| !applied.contains(&m.version))
        {
            (&mut *tx)
                .execute(migration.sql)
                .await
                .map_err(|source| Error::Migration {
                    version: migration.version,
                    name: migration.name,
                    source,
                })?;
            sqlx::query("INSERT INTO offload_migrations (version, name) VALUES ($1, $2)")
                .bind(migration.version)
                .bind(migration.name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn identity(pool: &PgPool) -> String {
        let options = pool.connect_options();
        let database = options.get_database().unwrap_or_default();
        format!(
            "postgres://{}:{}/{database}",
            options.get_host(),
            options.get_port()
        )
    }

    async fn begin_job_tx(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        pool.begin().await
    }

    const CROSS_PROCESS_WAKE: bool = true;

    // Measured with offload-bench: 2 beats 1 by a third; 4 is slower again.
    const COMPLETION_WRITERS: usize = 2;

    async fn notify(pool: &PgPool, queues: &[String]) -> Result<()> {
        notify(pool, queues).await
    }

    async fn insert_jobs(conn: &mut PgConnection, jobs: &[NewJob], wake: bool) -> Result<Vec<i64>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut kinds = Vec::with_capacity(jobs.len());
        let mut queues = Vec::with_capacity(jobs.len());
        let mut args = Vec::with_capacity(jobs.len());
        let mut priorities = Vec::with_capacity(jobs.len());
        let mut max_attempts = Vec::with_capacity(jobs.len());
        let mut run_ats = Vec::with_capacity(jobs.len());
        let mut tags = Vec::with_capacity(jobs.len());
        for job in jobs {
            kinds.push(job.kind.as_str());
            queues.push(job.queue.as_str());
            args.push(job.args.as_str());
            priorities.push(job.priority);
            max_attempts.push(job.max_attempts);
            run_ats.push(job.run_at);
            tags.push(super::encode_tags(&job.tags));
        }
        Ok(sqlx::query_scalar(INSERT)
            .bind(&kinds)
            .bind(&queues)
            .bind(&args)
            .bind(&priorities)
            .bind(&max_attempts)
            .bind(&run_ats)
            .bind(&tags)
            .bind(wake)
            .fetch_all(conn)
            .await?)
    }

    async fn claim(
        pool: &PgPool,
        queue: &str,
        limit: usize,
        worker_id: &str,
    ) -> Result<Vec<ClaimedJob>> {
        let mut conn = pool.acquire().await?;
        claim_on(&mut conn, queue, limit, worker_id).await
    }

    async fn complete_many(pool: &PgPool, done: &[Attempt], delete: bool) -> Result<u64> {
        let ids: Vec<i64> = done.iter().map(|d| d.id).collect();
        let attempts: Vec<i32> = done.iter().map(|d| d.attempt).collect();
        let sql = if delete { DELETE_MANY } else { COMPLETE_MANY };
        let result = sqlx::query(sql)
            .bind(&ids)
            .bind(&attempts)
            .execute(pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn complete_in_tx(conn: &mut PgConnection, done: Attempt, delete: bool) -> Result<bool> {
        let sql = if delete { DELETE_ONE } else { COMPLETE_ONE };
        let result = sqlx::query(sql)
            .bind(done.id)
            .bind(done.attempt)
            .execute(conn)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn record_outcome(pool: &PgPool, attempt: Attempt, outcome: &Outcome) -> Result<bool> {
        let change = outcome.change();
        let result = sqlx::query(RECORD_OUTCOME)
            .bind(attempt.id)
            .bind(attempt.attempt)
            .bind(change.state.as_str())
            .bind(change.run_at)
            .bind(change.extra_attempts)
            .bind(change.state.is_final())
            .bind(change.error)
            .execute(pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn heartbeat(pool: &PgPool, worker: &WorkerInfo) -> Result<()> {
        sqlx::query(
            "INSERT INTO offload_workers (id, host, pid, queues) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(&worker.id)
        .bind(&worker.host)
        .bind(worker.pid)
        .bind(&worker.queues)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn deregister(pool: &PgPool, worker_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM offload_workers WHERE id = $1")
            .bind(worker_id)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn rescue(pool: &PgPool, lease: Duration) -> Result<Vec<String>> {
        let lease = lease.as_secs_f64();
        let queues: Vec<String> = sqlx::query_scalar(RESCUE)
            .bind(lease)
            .fetch_all(pool)
            .await?;
        sqlx::query(
            "DELETE FROM offload_workers WHERE heartbeat_at < now() - make_interval(secs => $1)",
        )
        .bind(lease)
        .execute(pool)
        .await?;
        notify(pool, &queues).await?;
        Ok(queues)
    }

    async fn promote(pool: &PgPool, limit: usize) -> Result<Vec<String>> {
        let queues: Vec<String> = sqlx::query_scalar(PROMOTE)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await?;
        notify(pool, &queues).await?;
        Ok(queues)
    }

    async fn prune(
        pool: &PgPool,
        state: JobState,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64> {
        let result = sqlx::query(
            "DELETE FROM offload_jobs WHERE id IN (SELECT id FROM offload_jobs \
             WHERE state = $1 AND finalized_at < now() - make_interval(secs => $2) LIMIT $3)",
        )
        .bind(state.as_str())
        .bind(older_than.as_secs_f64())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn listen(pool: &PgPool, signals: Signals) -> Result<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen_all([CHANNEL, CANCEL_CHANNEL]).await?;
        loop {
            let notification = listener.recv().await?;
            if notification.channel() == CANCEL_CHANNEL {
                if let Ok(id) = notification.payload().parse::<i64>() {
                    (signals.cancel)(&Self::identity(pool), &[id]);
                }
            } else {
                (signals.wake)(notification.payload());
            }
        }
    }

    async fn fetch_job(pool: &PgPool, id: i64) -> Result<Option<JobRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM offload_jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?;
        row.map(|row| job_record(&row)).transpose()
    }

    async fn count_by_state(pool: &PgPool, queue: Option<&str>) -> Result<Vec<(JobState, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM offload_jobs WHERE ($1::text IS NULL OR queue = $1) \
             GROUP BY state",
        )
        .bind(queue)
        .fetch_all(pool)
        .await?;
        Ok(super::parse_counts(rows))
    }

    async fn insert_unique(conn: &mut PgConnection, job: &NewJob) -> Result<Option<i64>> {
        let (key, states) = job
            .unique
            .as_ref()
            .map(|u| (u.key.as_str(), u.states.as_str()))
            .unzip();
        Ok(sqlx::query_scalar(INSERT_UNIQUE)
            .bind(&job.kind)
            .bind(&job.queue)
            .bind(&job.args)
            .bind(job.priority)
            .bind(job.max_attempts)
            .bind(job.run_at)
            .bind(super::encode_tags(&job.tags))
            .bind(key)
            .bind(states)
            .fetch_optional(conn)
            .await?)
    }

    async fn find_unique(conn: &mut PgConnection, key: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(FIND_UNIQUE)
            .bind(key)
            .fetch_optional(conn)
            .await?)
    }

    async fn claim_limited(
        pool: &PgPool,
        queue: &str,
        limit: usize,
        worker_id: &str,
    ) -> Result<Vec<ClaimedJob>> {
        // One statement cannot see claims committed while it waited for a
        // lock (its snapshot is older), so claimers of a limited queue take
        // turns on the queue's row and count in a later statement.
        let mut tx = pool.begin().await?;
        let settings: Option<(bool, Option<i32>)> = sqlx::query_as(
            "SELECT paused, global_limit FROM offload_queues WHERE name = $1 FOR UPDATE",
        )
        .bind(queue)
        .fetch_optional(&mut *tx)
        .await?;
        let mut want = limit;
        match settings {
            Some((true, _)) => return Ok(Vec::new()),
            Some((false, Some(global))) => {
                let running: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM offload_jobs WHERE queue = $1 AND state = 'running'",
                )
                .bind(queue)
                .fetch_one(&mut *tx)
                .await?;
                let free = i64::from(global) - running;
                want = want.min(usize::try_from(free).unwrap_or(0));
            }
            _ => {}
        }
        if want == 0 {
            return Ok(Vec::new());
        }
        let jobs = claim_on(&mut tx, queue, want, worker_id).await?;
        tx.commit().await?;
        Ok(jobs)
    }

    async fn global_limit(pool: &PgPool, queue: &str) -> Result<Option<usize>> {
        let limit: Option<Option<i32>> =
            sqlx::query_scalar("SELECT global_limit FROM offload_queues WHERE name = $1")
                .bind(queue)
                .fetch_optional(pool)
                .await?;
        Ok(limit.flatten().and_then(|n| usize::try_from(n).ok()))
    }

    async fn set_global_limit(pool: &PgPool, queue: &str, limit: Option<usize>) -> Result<()> {
        let limit = limit.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        sqlx::query(
            "INSERT INTO offload_queues (name, global_limit) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET global_limit = excluded.global_limit, updated_at = now()",
        )
        .bind(queue)
        .bind(limit)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn try_lead(pool: &PgPool, name: &str, candidate: &str, ttl: Duration) -> Result<bool> {
        let leader: Option<String> = sqlx::query_scalar(TRY_LEAD)
            .bind(name)
            .bind(candidate)
            .bind(ttl.as_secs_f64())
            .fetch_optional(pool)
            .await?;
        Ok(leader.is_some())
    }

    async fn resign(pool: &PgPool, name: &str, leader: &str) -> Result<()> {
        sqlx::query("DELETE FROM offload_leader WHERE name = $1 AND leader_id = $2")
            .bind(name)
            .bind(leader)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn leader(pool: &PgPool, name: &str) -> Result<Option<Leader>> {
        let row: Option<(String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT leader_id, elected_at, expires_at FROM offload_leader \
             WHERE name = $1 AND expires_at >= now()",
        )
        .bind(name)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|(leader_id, elected_at, expires_at)| Leader {
            leader_id,
            elected_at,
            expires_at,
        }))
    }

    async fn last_tick(pool: &PgPool, name: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(
            sqlx::query_scalar("SELECT last_tick FROM offload_periodic WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?,
        )
    }

    async fn enqueue_tick(
        pool: &PgPool,
        name: &str,
        tick: DateTime<Utc>,
        job: &NewJob,
    ) -> Result<Option<i64>> {
        let mut tx = pool.begin().await?;
        // The periodic row's lock serializes leaders during a hand-over.
        let advanced: Option<String> = sqlx::query_scalar(ADVANCE_TICK)
            .bind(name)
            .bind(tick)
            .fetch_optional(&mut *tx)
            .await?;
        if advanced.is_none() {
            return Ok(None);
        }
        let id = Self::insert_unique(&mut tx, job).await?;
        tx.commit().await?;
        Ok(id)
    }
}

/// Claims on `conn` (the caller's transaction, or a pooled connection).
async fn claim_on(
    conn: &mut PgConnection,
    queue: &str,
    limit: usize,
    worker_id: &str,
) -> Result<Vec<ClaimedJob>> {
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM)
        .bind(queue)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(worker_id)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, kind, queue, args, attempt, max_attempts, run_at)| ClaimedJob {
                id,
                kind,
                queue,
                args,
                attempt,
                max_attempts,
                run_at,
            },
        )
        .collect())
}

/// Wakes listeners of `queues` on every host.
async fn notify(pool: &PgPool, queues: &[String]) -> Result<()> {
    if !queues.is_empty() {
        sqlx::query("SELECT pg_notify($1, q) FROM (SELECT DISTINCT unnest($2::text[]) AS q) s")
            .bind(CHANNEL)
            .bind(queues)
            .execute(pool)
            .await?;
    }
    Ok(())
}

fn job_record(row: &PgRow) -> Result<JobRecord> {
    let state: String = row.try_get(3)?;
    let args: String = row.try_get(4)?;
    let errors: String = row.try_get(8)?;
    let tags: String = row.try_get(9)?;
    Ok(JobRecord {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        queue: row.try_get(2)?,
        state: super::parse_state(&state)?,
        args: serde_json::from_str(&args).unwrap_or(serde_json::Value::String(args)),
        priority: row.try_get(5)?,
        attempt: row.try_get(6)?,
        max_attempts: row.try_get(7)?,
        errors: decode_errors(&errors),
        tags: decode_tags(&tags),
        created_at: row.try_get(10)?,
        run_at: row.try_get(11)?,
        attempted_at: row.try_get(12)?,
        finalized_at: row.try_get(13)?,
        worker_id: row.try_get(14)?,
    })
}
