//! The listener: forwards other processes' notifications (new jobs,
//! cancelled running jobs) to this process, reconnecting with back-off.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::storage::{Backend, Signals};
use crate::worker::shared::{next_delay, sleep_or_stop, Shared};
use crate::worker::{running, wake};

pub(super) async fn run<DB: Backend>(shared: Arc<Shared<DB>>, stop: CancellationToken) {
    let signals = Signals {
        wake: wake::wake,
        cancel: running::cancel,
        // Producers claimed before this listened (at start, or before a
        // reconnect): jobs announced in between would wait for the poll.
        listening: wake::wake_every,
    };
    let mut delay = Duration::from_millis(100);
    loop {
        let result = tokio::select! {
            result = DB::notification_listen(&shared.pool, signals) => result,
            () = stop.cancelled() => return,
        };
        match result {
            // The backend has no notifications.
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "listening for new jobs failed; polling meanwhile");
                for queue in &shared.config.queues {
                    wake::wake(&queue.name);
                }
                if sleep_or_stop(delay, &stop).await {
                    return;
                }
                delay = next_delay(delay);
            }
        }
    }
}
