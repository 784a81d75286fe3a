//! The pruner: deletes finished jobs older than their retention.

use std::sync::Arc;

use crate::state::JobState;
use crate::storage::Backend;
use crate::worker::config::MAINTENANCE_BATCH as BATCH;
use crate::worker::shared::{answered, Shared};

pub(super) async fn step<DB: Backend>(shared: Arc<Shared<DB>>) -> crate::Result<()> {
    let retention = &shared.config.retention;
    let mut first_error = None;
    for (state, keep) in [
        (JobState::Completed, retention.completed),
        (JobState::Discarded, retention.discarded),
        (JobState::Cancelled, retention.cancelled),
    ] {
        // Small batches keep each delete's locks short.
        loop {
            let prune = DB::job_prune(&shared.maintenance_pool, state, keep, BATCH);
            match answered(shared.database_timeout(), prune).await {
                Ok(deleted) if deleted == BATCH as u64 => tokio::task::yield_now().await,
                Ok(_) => break,
                // One state's failure must not stop the others' pruning.
                Err(error) => {
                    tracing::warn!(%error, %state, "could not prune finished jobs");
                    first_error.get_or_insert(error);
                    break;
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
