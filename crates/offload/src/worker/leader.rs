//! Leader election among the workers sharing a database.
//!
//! One row per leadership holds the leader's id and an expiry. Each worker
//! tries every `leader_ttl / 3` to take it with one guarded upsert that only
//! wins when the row has expired or is already its own, so at most one
//! worker leads at a time (give or take clock skew between hosts on SQLite,
//! which is one host). A leader that dies stops renewing and loses the row
//! when it expires; one that shuts down deletes it so another takes over at
//! its next attempt.

use std::time::Duration;

use sqlx::Pool;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::shared::sleep_or_stop;
use crate::storage::Backend;

/// The name of the leadership that runs maintenance and periodic jobs.
pub(crate) const LEADERSHIP: &str = "offload";

/// Campaigns for leadership until `stop`, publishing whether this worker
/// leads on `leading`, then resigns.
pub(crate) async fn campaign<DB: Backend>(
    pool: Pool<DB>,
    candidate: String,
    ttl: Duration,
    leading: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let renew_every = ttl / 3;
    // Until when the last successful renewal keeps us leader, by our clock.
    let mut held_until: Option<Instant> = None;
    loop {
        let attempted_at = Instant::now();
        // Never dropped mid-flight on shutdown: the upsert could still take
        // the row on the server while this worker, not knowing it leads,
        // would not resign. Bounded by the TTL it would hold the row for.
        let result = tokio::time::timeout(
            ttl,
            DB::leader_attempt_elect(&pool, LEADERSHIP, &candidate, ttl),
        )
        .await
        .unwrap_or(Err(crate::Error::Database(sqlx::Error::PoolTimedOut)));
        let leads = match result {
            Ok(true) => {
                held_until = Some(attempted_at + ttl);
                true
            }
            Ok(false) => {
                held_until = None;
                false
            }
            Err(error) => {
                // The row may still be ours: keep leading until it would
                // have expired, not longer.
                let still = held_until.is_some_and(|until| Instant::now() < until);
                tracing::warn!(%error, still_leading = still, "leader election failed; will retry");
                still
            }
        };
        leading.send_if_modified(|current| {
            if *current == leads {
                return false;
            }
            *current = leads;
            if leads {
                tracing::info!(worker = %candidate, "became the leader: running maintenance and periodic jobs");
            } else {
                tracing::warn!(worker = %candidate, "lost leadership");
            }
            true
        });
        if stop.is_cancelled() || sleep_or_stop(renew_every, &stop).await {
            break;
        }
    }
    let was_leading = leading.send_replace(false);
    // Resigns even when it did not know it led: an attempt that timed out
    // may have taken the row. The delete is guarded by this worker's id;
    // past the TTL the row has expired anyway.
    let resigned = tokio::time::timeout(ttl, DB::leader_resign(&pool, LEADERSHIP, &candidate))
        .await
        .unwrap_or(Err(crate::Error::Database(sqlx::Error::PoolTimedOut)));
    match resigned {
        Ok(()) if was_leading => tracing::info!(worker = %candidate, "resigned leadership"),
        Ok(()) => {}
        Err(error) => {
            tracing::warn!(%error, "could not resign leadership; it expires with its TTL")
        }
    }
}
