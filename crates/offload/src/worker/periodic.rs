//! Periodic jobs at run time: the leader enqueues each schedule's ticks.
//!
//! Each tick is enqueued exactly once however many workers run: only the
//! leader enqueues, and the enqueue of tick `t` of job `name` first advances
//! that job's last tick in `offload_periodic` (a guarded upsert, which fails
//! when `t` or a later tick is already there) and inserts the job with the
//! unique key `periodic:{name}:{t}` in the same transaction. Two leaders
//! during a hand-over therefore cannot both enqueue a tick.
//!
//! Ticks missed while no worker led (all stopped, or the leader died and its
//! leadership had not yet expired) are not all made up: a new leader
//! enqueues only the latest missed tick, once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::wake;
use crate::schedule::Periodic;
use crate::storage::{ops, Backend};
use crate::Result;

/// Enqueues the ticks of `jobs` while this worker leads, until `stop`.
pub(crate) async fn run<DB: Backend>(
    pool: sqlx::Pool<DB>,
    jobs: Vec<Periodic>,
    mut leading: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    loop {
        // Wait to lead.
        tokio::select! {
            result = leading.wait_for(|leads| *leads) => if result.is_err() { return },
            () = stop.cancelled() => return,
        }
        let mut next = Vec::with_capacity(jobs.len());
        for job in &jobs {
            next.push(catch_up(&pool, job).await);
        }
        // Enqueue ticks as they fall due while leading.
        loop {
            if !*leading.borrow() {
                break;
            }
            let now = Utc::now();
            let mut failed = false;
            for (job, next) in jobs.iter().zip(next.iter_mut()) {
                let Some(due) = *next else { continue };
                if due > now {
                    continue;
                }
                // Late (a stall): enqueue the latest due tick, not each one.
                let tick = job.schedule().latest_until(now).unwrap_or(due).max(due);
                match enqueue(&pool, job, tick).await {
                    Ok(()) => *next = job.schedule().next_after(tick),
                    Err(error) => {
                        failed = true;
                        tracing::warn!(%error, periodic = %job.name(), "could not enqueue periodic job; will retry");
                    }
                }
            }
            let wait = if failed {
                Duration::from_millis(500)
            } else {
                next.iter()
                    .flatten()
                    .min()
                    .map_or(Duration::from_secs(60), |at| {
                        (*at - Utc::now()).to_std().unwrap_or_default()
                    })
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                result = leading.changed() => if result.is_err() { return },
                () = stop.cancelled() => return,
            }
        }
    }
}

/// On becoming leader: enqueues the latest tick missed since the last one
/// enqueued (if any), and returns the next tick to wait for.
async fn catch_up<DB: Backend>(pool: &sqlx::Pool<DB>, job: &Periodic) -> Option<DateTime<Utc>> {
    let now = Utc::now();
    let latest = job.schedule().latest_until(now);
    let mut from = now;
    match DB::periodic_last_tick(pool, job.name()).await {
        Ok(Some(last)) => {
            if let Some(missed) = latest.filter(|latest| *latest > last) {
                match enqueue(pool, job, missed).await {
                    Ok(()) => {
                        tracing::info!(periodic = %job.name(), tick = %missed, "enqueued the latest missed tick")
                    }
                    // Retried as a due tick by the loop.
                    Err(_) => from = missed - chrono::Duration::microseconds(1),
                }
            }
        }
        // A new schedule starts with its next tick.
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, periodic = %job.name(), "could not read the last tick");
        }
    }
    job.schedule().next_after(from)
}

async fn enqueue<DB: Backend>(
    pool: &sqlx::Pool<DB>,
    job: &Periodic,
    tick: DateTime<Utc>,
) -> Result<()> {
    let row = job.row(tick)?;
    match ops::enqueue_tick(pool, job.name(), tick, &row).await? {
        Some(id) => {
            tracing::debug!(periodic = %job.name(), %tick, id, "enqueued periodic job");
            wake::wake(&row.queue);
        }
        None => tracing::debug!(periodic = %job.name(), %tick, "tick already enqueued"),
    }
    Ok(())
}
