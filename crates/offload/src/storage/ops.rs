//! Orchestration that is the same on every backend, written once over the
//! driver's primitives.

use chrono::{DateTime, Utc};
use sqlx::Pool;

use super::{Driver, Enqueued, NewJob};
use crate::{Error, Result};

/// How often a unique insert looks again when the key's holder finished
/// between the insert and the lookup.
const UNIQUE_TRIES: usize = 5;

/// Inserts a unique row, or finds the job holding its key (and, with
/// [`UniqueKey::replace_pending`](crate::UniqueKey::replace_pending),
/// updates it if it has not started). Wakes other processes as
/// [`Driver::job_insert_unique`] and [`Driver::job_unique_replace`] do;
/// waking this process is the caller's job.
pub async fn insert_unique<DB: Driver>(
    conn: &mut DB::Connection,
    job: &NewJob,
) -> Result<Enqueued> {
    let Some(unique) = &job.unique else {
        let id = first_id(DB::job_insert_many(conn, std::slice::from_ref(job), true).await?)?;
        return Ok(Enqueued::inserted(id));
    };
    // Each statement is decided by the database; between two of them the
    // holder may start or finish, so each miss moves on to the next.
    for _ in 0..UNIQUE_TRIES {
        if let Some(id) = DB::job_insert_unique(conn, job).await? {
            return Ok(Enqueued::inserted(id));
        }
        if unique.replace_pending {
            if let Some(id) = DB::job_unique_replace(conn, job).await? {
                return Ok(Enqueued {
                    id,
                    duplicate: true,
                    replaced: true,
                });
            }
        }
        if let Some(id) = DB::job_unique_holder(conn, &unique.key).await? {
            return Ok(Enqueued {
                id,
                duplicate: true,
                replaced: false,
            });
        }
    }
    Err(Error::UniqueKeyContended {
        key: unique.key.clone(),
    })
}

/// Enqueues `job` for tick `tick` of periodic job `name`, in one
/// transaction that also advances the job's last tick. Returns `None` when
/// this tick (or a later one) was already enqueued: the periodic row's lock
/// serializes two leaders during a hand-over.
pub async fn enqueue_tick<DB: Driver>(
    pool: &Pool<DB>,
    name: &str,
    tick: DateTime<Utc>,
    job: &NewJob,
) -> Result<Option<i64>> {
    let mut tx = DB::tx_begin_write(pool).await?;
    if !DB::periodic_advance_tick(&mut tx, name, tick).await? {
        return Ok(None);
    }
    let id = DB::job_insert_unique(&mut tx, job).await?;
    tx.commit().await?;
    Ok(id)
}

/// The one id an insert of one row returns.
pub fn first_id(ids: Vec<i64>) -> Result<i64> {
    ids.into_iter().next().ok_or(Error::MissingInsertId)
}
