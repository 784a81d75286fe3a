//! Writes completions of jobs that never opened a transaction, in batches.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Pool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::running;
use super::shared::{next_delay, sleep_or_stop, within};
use crate::storage::group::{WriteGroup, Writer};
use crate::storage::{Attempt, Backend};

/// Where and how the completer writes. It must not hold the worker's
/// `Shared`, whose completion sender would keep its channel open.
pub(crate) struct Completer<DB: Backend> {
    pub pool: Pool<DB>,
    /// The pool's identity, under which its jobs are listed as running.
    pub database: Arc<str>,
    pub group: Option<Arc<WriteGroup<DB>>>,
    pub batch: usize,
    pub delete: bool,
    pub database_timeout: Option<Duration>,
}

impl<DB: Backend> Completer<DB> {
    /// Drains `completions` until every sender is gone. Batches form by
    /// themselves: whatever arrived while the last batch was being written
    /// goes into the next one.
    pub async fn run(self, mut completions: mpsc::Receiver<Attempt>, give_up: CancellationToken) {
        let this = Arc::new(self);
        let mut writing = JoinSet::new();
        loop {
            while writing.len() >= DB::COMPLETION_WRITERS {
                writing.join_next().await;
            }
            let mut pending = Vec::with_capacity(this.batch);
            if completions.recv_many(&mut pending, this.batch).await == 0 {
                break;
            }
            let (this, give_up) = (this.clone(), give_up.clone());
            writing.spawn(async move {
                this.write(&pending, give_up).await;
                running::completions_written(&this.database, &pending);
            });
        }
        while writing.join_next().await.is_some() {}
    }

    /// Writes one batch, retrying until it is committed or shutdown gives up.
    async fn write(&self, pending: &[Attempt], give_up: CancellationToken) {
        let (pool, group, delete) = (&self.pool, self.group.as_deref(), self.delete);
        let mut delay = Duration::from_millis(50);
        loop {
            // Completions are guarded by the attempt: writing a batch again
            // after a lost answer completes nothing twice.
            let written = within(self.database_timeout, async {
                match Writer::begin(pool, group).await {
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
}
