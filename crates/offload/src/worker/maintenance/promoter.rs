//! The promoter: makes due scheduled and retryable jobs available, so the
//! claim reads only available rows.

use std::sync::Arc;

use crate::storage::Backend;
use crate::worker::config::MAINTENANCE_BATCH as BATCH;
use crate::worker::shared::{answered, Shared};
use crate::worker::wake;

pub(super) async fn step<DB: Backend>(shared: Arc<Shared<DB>>) -> crate::Result<()> {
    loop {
        // A statement on a silent connection would stop promotion for good.
        let promote = DB::job_promote(&shared.maintenance_pool, BATCH);
        let queues = answered(shared.database_timeout(), promote).await?;
        wake::wake_all(queues.iter().map(String::as_str));
        if queues.len() < BATCH {
            return Ok(());
        }
    }
}
