//! Writes completions of jobs that never opened a transaction, in batches.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Pool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::running;
use super::shared::{next_delay, sleep_or_stop, within, Shared};
use crate::storage::group::{WriteGroup, Writer};
use crate::storage::{Attempt, Backend};

/// Drains `completions` until every sender is gone. Batches form by
/// themselves: whatever arrived while the last batch was being written goes
/// into the next one.
pub(crate) async fn run<DB: Backend>(
    shared: Arc<Shared<DB>>,
    mut completions: mpsc::Receiver<Attempt>,
    give_up: CancellationToken,
) {
    let batch = shared.config.completer_batch;
    let delete = shared.config.retention.completed.is_zero();
    let database_timeout = shared.database_timeout();
    let mut writing = JoinSet::new();
    loop {
        while writing.len() >= DB::COMPLETION_WRITERS {
            writing.join_next().await;
        }
        let mut pending = Vec::with_capacity(batch);
        if completions.recv_many(&mut pending, batch).await == 0 {
            break;
        }
        let (shared, give_up) = (shared.clone(), give_up.clone());
        writing.spawn(async move {
            let (pool, group) = (shared.pool.clone(), shared.group.clone());
            write::<DB>(pool, group, &pending, delete, database_timeout, give_up).await;
            running::completions_written(&shared.database, &pending);
        });
    }
    while writing.join_next().await.is_some() {}
}

/// Writes one batch, retrying until it is committed or shutdown gives up.
async fn write<DB: Backend>(
    pool: Pool<DB>,
    group: Option<Arc<WriteGroup<DB>>>,
    pending: &[Attempt],
    delete: bool,
    database_timeout: Option<Duration>,
    give_up: CancellationToken,
) {
    let mut delay = Duration::from_millis(50);
    loop {
        // Completions are guarded by the attempt: writing a batch again
        // after a lost answer completes nothing twice.
        let written = within(database_timeout, async {
            match Writer::begin(&pool, group.as_deref()).await {
                Ok(mut writer) => {
                    let result = DB::job_complete_many_on(writer.conn(), pending, delete).await;
                    writer.end_committed(result).await
                }
                Err(error) => Err(error),
            }
        })
        .await
        .unwrap_or_else(|no_answer| Err(no_answer.to_string()));
        let Err(error) = written else { return };
        tracing::warn!(%error, jobs = pending.len(), "could not record completions; retrying");
        // Past shutdown the jobs stay `running`, and the rescuer runs them
        // again once this worker's lease expires.
        if sleep_or_stop(delay, &give_up).await {
            tracing::error!(
                jobs = pending.len(),
                "gave up recording completions at shutdown"
            );
            return;
        }
        delay = next_delay(delay);
    }
}
