//! Acting on jobs already enqueued: cancel, retry and delete, on their own
//! or inside the caller's transaction. The operator API
//! ([`Admin::act`](crate::admin::Admin::act)) runs its actions through the
//! functions at the bottom of this file, so both behave alike.

use sqlx::Pool;

use super::Client;
use crate::storage::Backend;
use crate::worker::{running, wake};
use crate::{Error, Result};

impl<DB: Backend> Client<DB> {
    /// Cancels job `id` if it is scheduled, available, retryable or
    /// running. A running job is told to stop (its
    /// [`JobContext::cancelled`](crate::JobContext::cancelled) fires, in
    /// this process at once, in others through PostgreSQL's `NOTIFY`), and
    /// its transaction rolls back whatever it returns. Returns `false` when
    /// the job has already finished; fails with [`Error::JobNotFound`] when
    /// there is no such job.
    ///
    /// ```no_run
    /// # async fn example(client: offload::Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// if !client.cancel(42).await? {
    ///     println!("job 42 had already finished");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self, id: i64) -> Result<bool> {
        let changed = cancel_now(self.pool(), &[id]).await?;
        let mut conn = self.pool().acquire().await?;
        changed_or_found::<DB>(&mut conn, id, !changed.is_empty()).await
    }

    /// [`cancel`](Self::cancel) on `conn`, normally the caller's
    /// transaction: the job is cancelled if and only if it commits. On
    /// SQLite, begin it with [`Backend::begin_write`].
    ///
    /// Nothing is signalled before the commit. On PostgreSQL the worker
    /// running the job, in this process or another, hears of it when the
    /// transaction commits. On SQLite nothing is sent: a job running in this
    /// process is not interrupted, and runs to its end, when its completion
    /// (guarded by state) finds the row cancelled and rolls the job's
    /// transaction back. Use [`cancel`](Self::cancel) to stop it at once.
    ///
    /// ```no_run
    /// # async fn example(client: offload::Client<sqlx::Postgres>, pool: sqlx::PgPool) -> offload::Result<()> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("UPDATE orders SET status = 'void' WHERE id = $1").bind(7).execute(&mut *tx).await?;
    /// client.cancel_tx(&mut tx, 42).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn cancel_tx(&self, conn: &mut DB::Connection, id: i64) -> Result<bool> {
        let changed = cancel_in::<DB>(conn, &[id]).await?;
        changed_or_found::<DB>(conn, id, !changed.is_empty()).await
    }

    /// Makes job `id` available now, whatever its state but `running`
    /// (scheduled, available, retryable, completed, discarded or
    /// cancelled). Its attempt count and errors stay; a job with no attempts
    /// left gets one more. Returns `false` when the job is running, or
    /// when it is finished and another job holds its unique key now; fails
    /// with [`Error::JobNotFound`] when there is no such job.
    ///
    /// ```no_run
    /// # async fn example(client: offload::Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// if !client.retry(42).await? {
    ///     println!("job 42 is running, or another job took its unique key");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn retry(&self, id: i64) -> Result<bool> {
        let mut conn = self.pool().acquire().await?;
        self.retry_tx(&mut conn, id).await
    }

    /// [`retry`](Self::retry) on `conn`, normally the caller's transaction:
    /// the job runs again if and only if it commits (on PostgreSQL other
    /// processes are woken at the commit).
    pub async fn retry_tx(&self, conn: &mut DB::Connection, id: i64) -> Result<bool> {
        let changed = retry_in::<DB>(conn, &[id]).await?;
        changed_or_found::<DB>(conn, id, !changed.is_empty()).await
    }

    /// Deletes job `id` unless it is running (cancel it first). Returns
    /// `false` when it is running; fails with [`Error::JobNotFound`] when
    /// there is no such job.
    ///
    /// ```no_run
    /// # async fn example(client: offload::Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// client.delete(42).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, id: i64) -> Result<bool> {
        let mut conn = self.pool().acquire().await?;
        self.delete_tx(&mut conn, id).await
    }

    /// [`delete`](Self::delete) on `conn`, normally the caller's
    /// transaction.
    pub async fn delete_tx(&self, conn: &mut DB::Connection, id: i64) -> Result<bool> {
        let deleted = delete_in::<DB>(conn, &[id]).await?;
        changed_or_found::<DB>(conn, id, !deleted.is_empty()).await
    }
}

/// `Ok(changed)` when job `id` exists (as `conn` sees it), else
/// [`Error::JobNotFound`].
async fn changed_or_found<DB: Backend>(
    conn: &mut DB::Connection,
    id: i64,
    changed: bool,
) -> Result<bool> {
    if changed || DB::job_state(conn, id).await?.is_some() {
        Ok(changed)
    } else {
        Err(Error::JobNotFound(id))
    }
}

/// Cancels the jobs of `ids` that have not finished, in a statement of
/// their own, and stops those running in this process at once (others hear
/// `offload_cancel` on PostgreSQL). Returns the ids cancelled.
pub(crate) async fn cancel_now<DB: Backend>(pool: &Pool<DB>, ids: &[i64]) -> Result<Vec<i64>> {
    let mut conn = pool.acquire().await?;
    let cancelled = DB::job_cancel_many(&mut conn, ids).await?;
    let was_running: Vec<i64> = cancelled
        .iter()
        .filter(|(_, was_running)| *was_running)
        .map(|(id, _)| *id)
        .collect();
    // The rows are cancelled (committed), so the jobs' transactions roll back.
    running::cancel(&DB::pool_identity(pool), &was_running);
    Ok(cancelled.into_iter().map(|(id, _)| id).collect())
}

/// Cancels on `conn`, inside the caller's transaction: no signal in this
/// process, which cannot know whether the transaction will commit (see
/// [`Client::cancel_tx`]). Returns the ids cancelled.
pub(crate) async fn cancel_in<DB: Backend>(
    conn: &mut DB::Connection,
    ids: &[i64],
) -> Result<Vec<i64>> {
    let cancelled = DB::job_cancel_many(conn, ids).await?;
    Ok(cancelled.into_iter().map(|(id, _)| id).collect())
}

/// Retries on `conn` and wakes this process's producers of the jobs'
/// queues. Woken before a caller's transaction commits, a producer finds
/// nothing on PostgreSQL (the commit's `NOTIFY` wakes it again) and waits
/// for the write lock on SQLite. Returns the ids made available.
pub(crate) async fn retry_in<DB: Backend>(
    conn: &mut DB::Connection,
    ids: &[i64],
) -> Result<Vec<i64>> {
    let retried = DB::job_retry_many(conn, ids).await?;
    wake::wake_all(retried.iter().map(|(_, queue)| queue.as_str()));
    Ok(retried.into_iter().map(|(id, _)| id).collect())
}

/// Deletes the jobs of `ids` that are not running, on `conn`. Returns
/// their ids.
pub(crate) async fn delete_in<DB: Backend>(
    conn: &mut DB::Connection,
    ids: &[i64],
) -> Result<Vec<i64>> {
    DB::job_delete_many(conn, ids).await
}
