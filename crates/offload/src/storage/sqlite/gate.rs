//! One writer at a time per database file, in this process: the worker's
//! own writes (claims, completions, outcomes) and write transactions queue
//! here and hand SQLite's write lock to each other, instead of meeting it
//! taken and sleeping in SQLite's busy handler (a millisecond at least, for
//! writes of tens of microseconds). SQLite's lock stays the authority: a
//! write that skips the gate (another process, an ungated statement) waits
//! in the busy handler as before.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The gates, by database file.
static GATES: LazyLock<Mutex<HashMap<PathBuf, Arc<Semaphore>>>> = LazyLock::new(Default::default);

/// How long a writer waits at the gate before it goes on without it (then
/// the busy handler waits, up to its own timeout): a write transaction
/// open for longer, or a job that opens a second one while it holds its
/// first, must not hang the others for good.
const PATIENCE: Duration = Duration::from_secs(30);

fn gate(pool: &SqlitePool) -> Arc<Semaphore> {
    let options = pool.connect_options();
    let file = options.get_filename();
    let mut gates = GATES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(gate) = gates.get(file) {
        return gate.clone();
    }
    gates
        .entry(file.to_path_buf())
        .or_insert_with(|| Arc::new(Semaphore::new(1)))
        .clone()
}

/// Waits for this file's turn to write; `None` after [`PATIENCE`].
async fn enter(pool: &SqlitePool) -> Option<OwnedSemaphorePermit> {
    let gate = gate(pool);
    match tokio::time::timeout(PATIENCE, gate.acquire_owned()).await {
        Ok(permit) => permit.ok(),
        Err(_) => {
            tracing::warn!(
                "waited {PATIENCE:?} for this process's other writer to SQLite; writing anyway"
            );
            None
        }
    }
}

/// Runs one autocommit write statement in this file's turn.
pub(super) async fn write<T>(pool: &SqlitePool, statement: impl Future<Output = T>) -> T {
    let _turn = enter(pool).await;
    statement.await
}

/// `BEGIN IMMEDIATE` in this file's turn, held until the transaction
/// commits or rolls back: the connection's commit and rollback hooks give
/// it up, and closing the connection drops them, so a lost transaction
/// cannot keep it.
pub(super) async fn begin_write(
    pool: &SqlitePool,
) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    let turn = enter(pool).await;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    if let Some(turn) = turn {
        let turn = Arc::new(Mutex::new(Some(turn)));
        let on_rollback = turn.clone();
        let mut handle = tx.lock_handle().await?;
        handle.set_commit_hook(move || {
            give_up(&turn);
            true
        });
        handle.set_rollback_hook(move || give_up(&on_rollback));
    }
    Ok(tx)
}

fn give_up(turn: &Mutex<Option<OwnedSemaphorePermit>>) {
    turn.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
}
