//! The rescuer: returns the running jobs of workers that stopped
//! heartbeating to their queues (or discards them on their last attempt).

use std::sync::Arc;

use crate::storage::Backend;
use crate::worker::shared::{answered, Shared};
use crate::worker::wake;

pub(super) async fn step<DB: Backend>(shared: Arc<Shared<DB>>) -> crate::Result<()> {
    let lease = shared.config.lease;
    let limit = shared.database_timeout();
    let queues = answered(limit, DB::job_rescue(&shared.maintenance_pool, lease)).await?;
    answered(
        limit,
        DB::worker_delete_expired(&shared.maintenance_pool, lease),
    )
    .await?;
    if !queues.is_empty() {
        tracing::warn!(
            jobs = queues.len(),
            "rescued jobs of workers that stopped heartbeating"
        );
        wake::wake_all(queues.iter().map(String::as_str));
    }
    Ok(())
}
