//! Group commit: one worker's writes share one connection and one
//! transaction, each inside its own savepoint, and commit together.
//!
//! On SQLite every write transaction takes the database's one write lock,
//! and a commit is most of a small transaction's cost. With a write group
//! a worker's claims, completions, outcomes and job transactions queue on
//! one async lock instead of SQLite's busy handler, and one `COMMIT`
//! covers every member that joined since the last: each member is still
//! atomic (a failed one rolls back to its savepoint), and a crash before
//! the commit loses the whole group, whose jobs then run again.
//!
//! Members are served in arrival order (the lock is fair); the committer
//! commits once the members already waiting have had their turn.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::Pool;
use tokio::sync::{oneshot, Mutex, Notify, OwnedMutexGuard};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::driver::Driver;
use super::group_step::GroupStep;
use super::rows::Attempt;

#[cfg(test)]
mod tests;

/// A worker's write group; see the module docs. Dropping it stops its
/// committer after a last commit.
pub(crate) struct WriteGroup<DB: Driver> {
    shared: Arc<Group<DB>>,
    _stop: DropGuard,
}

struct Group<DB: Driver> {
    pool: Pool<DB>,
    slot: Arc<Mutex<Slot<DB>>>,
    /// Members waiting for the lock: the last one in a row commits.
    queued: AtomicUsize,
    /// Completed jobs are deleted (retention 0) rather than marked.
    delete_completed: bool,
    /// The group is open with nobody queued to commit it.
    pending: Notify,
}

/// The group's connection and transaction, behind the lock.
struct Slot<DB: Driver> {
    conn: Option<PoolConnection<DB>>,
    /// The group's transaction is open.
    open: bool,
    /// A member was dropped inside its savepoint: undo it before anything else.
    abandoned: bool,
    /// A one-statement member was dropped mid-statement: roll the group back.
    abandoned_statement: bool,
    /// Members done since the last commit, told how it went.
    waiting: Vec<oneshot::Sender<Result<(), String>>>,
}

impl<DB: Driver> WriteGroup<DB> {
    /// A group on `pool`, with its committer task.
    pub fn new(pool: Pool<DB>, delete_completed: bool) -> Self {
        let shared = Arc::new(Group {
            pool,
            slot: Arc::new(Mutex::new(Slot {
                conn: None,
                open: false,
                abandoned: false,
                abandoned_statement: false,
                waiting: Vec::new(),
            })),
            queued: AtomicUsize::new(0),
            delete_completed,
            pending: Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(commit_loop(shared.clone(), stop.clone()));
        Self {
            shared,
            _stop: stop.drop_guard(),
        }
    }

    /// Waits for the group's lock and begins the group's transaction if
    /// needed, for one statement, which is atomic by itself: no savepoint.
    /// If it fails, the whole group rolls back (an I/O or disk-full error
    /// can end SQLite's transaction anyway). The member holds the lock
    /// until it is released or rolled back.
    pub async fn join_statement(&self) -> Result<Member<DB>, sqlx::Error> {
        self.take_turn(false).await
    }

    /// Takes the lock. A statement while no group is open runs in
    /// autocommit: only job transactions open groups, and a group's
    /// `BEGIN` and `COMMIT` around one statement would only hold the write
    /// lock longer against the application's writers. Statements that
    /// come while a group is open join it (it holds the write lock).
    async fn take_turn(&self, for_job: bool) -> Result<Member<DB>, sqlx::Error> {
        let mut slot = {
            let _queued = Queued::new(&self.shared.queued);
            self.shared.slot.clone().lock_owned().await
        };
        let alone = !for_job && !slot.open;
        let opened = async {
            slot.settle().await?;
            if slot.conn.is_none() {
                slot.conn = Some(self.shared.pool.acquire().await?);
            }
            if !slot.open && !alone {
                step(&mut slot, GroupStep::Begin).await?;
                slot.open = true;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        match opened {
            Ok(()) => Ok(Member {
                slot: Some(slot),
                group: self.shared.clone(),
                savepoint: false,
                autocommit: alone,
            }),
            Err(error) => {
                slot.abort(&error.to_string()).await;
                Err(error)
            }
        }
    }

    /// Joins for a job's transaction, marking its attempt completed first
    /// (see [`Driver::job_complete_in_savepoint`]): rolled back with the
    /// job's statements if it fails. Also returns whether the job is still
    /// this attempt's; if not, the member must roll back.
    pub async fn join_job(&self, done: Attempt) -> Result<(Member<DB>, bool), sqlx::Error> {
        let mut member = self.take_turn(true).await?;
        // From here on, a failure rolls back to the savepoint.
        member.savepoint = true;
        match DB::job_complete_in_savepoint(&mut member, done, self.shared.delete_completed).await {
            Ok(ours) => Ok((member, ours)),
            Err(error) => {
                let mut slot = member
                    .slot
                    .take()
                    .expect("a member holds the slot until it ends");
                slot.abort(&error.to_string()).await;
                Err(match error {
                    crate::Error::Database(error) => error,
                    other => sqlx::Error::Protocol(other.to_string()),
                })
            }
        }
    }
}

/// Counts a member waiting for the lock, also when its wait is cancelled.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(queued: &'a AtomicUsize) -> Self {
        queued.fetch_add(1, Ordering::SeqCst);
        Self(queued)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One member's turn on the group's connection, inside its savepoint. Dropped
/// without `release` or `rollback` (a cancelled job), its work is undone.
pub(crate) struct Member<DB: Driver> {
    slot: Option<OwnedMutexGuard<Slot<DB>>>,
    group: Arc<Group<DB>>,
    savepoint: bool,
    /// A lone statement, outside any group transaction.
    autocommit: bool,
}

/// Resolves when the group a released member belonged to has committed.
pub(crate) struct Committed(oneshot::Receiver<Result<(), String>>);

impl Committed {
    /// `Err` carries why the group did not commit; the member's work is lost.
    pub async fn wait(self) -> Result<(), String> {
        self.0
            .await
            .unwrap_or_else(|_| Err("the write group stopped before committing".to_owned()))
    }
}

impl<DB: Driver> Member<DB> {
    fn slot(&mut self) -> &mut Slot<DB> {
        self.slot
            .as_mut()
            .expect("a member holds the slot until it ends")
    }

    /// Keeps the member's work for the group's commit and lets the next
    /// member in; the last member in a row commits for all.
    pub async fn release(mut self) -> Result<Committed, sqlx::Error> {
        let mut slot = self
            .slot
            .take()
            .expect("a member holds the slot until it ends");
        let (tell, told) = oneshot::channel();
        if self.autocommit {
            let _ = tell.send(Ok(()));
            self.group.hand_back_if_idle(&mut slot);
            return Ok(Committed(told));
        }
        if self.savepoint {
            if let Err(error) = step(&mut slot, GroupStep::Release).await {
                slot.abort(&error.to_string()).await;
                return Err(error);
            }
        }
        slot.waiting.push(tell);
        self.group.end_turn(slot).await;
        Ok(Committed(told))
    }

    /// Undoes the member's work; the rest of the group stands (for a
    /// member without a savepoint, the whole group rolls back).
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let mut slot = self
            .slot
            .take()
            .expect("a member holds the slot until it ends");
        if self.autocommit {
            // It undid itself; its connection goes back too, or a worker
            // retrying on a full disk keeps a one-connection pool.
            self.group.hand_back_if_idle(&mut slot);
            return Ok(());
        }
        if !self.savepoint {
            slot.abort("a statement of the group failed").await;
            return Ok(());
        }
        let undone = slot.undo_savepoint().await;
        match &undone {
            Ok(()) => self.group.end_turn(slot).await,
            Err(error) => slot.abort(&error.to_string()).await,
        }
        undone
    }
}

impl<DB: Driver> Group<DB> {
    /// Returns an autocommit member's connection to the pool when nobody
    /// waits for a turn: between groups the application takes its turn.
    fn hand_back_if_idle(&self, slot: &mut Slot<DB>) {
        if self.queued.load(Ordering::SeqCst) == 0 {
            slot.conn = None;
        }
    }

    /// Ends a member's turn: commits when nobody else is waiting for the
    /// lock, else leaves the commit to the next in line.
    async fn end_turn(&self, mut slot: OwnedMutexGuard<Slot<DB>>) {
        if self.queued.load(Ordering::SeqCst) == 0 {
            slot.commit().await;
        } else {
            drop(slot);
            // A safety net: the waiters may yet give up their turns.
            self.pending.notify_one();
        }
    }
}

impl<DB: Driver> Deref for Member<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        self.slot
            .as_ref()
            .and_then(|slot| slot.conn.as_deref())
            .expect("a member's slot has a connection")
    }
}

impl<DB: Driver> DerefMut for Member<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.slot()
            .conn
            .as_deref_mut()
            .expect("a member's slot has a connection")
    }
}

impl<DB: Driver> Drop for Member<DB> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.as_mut() {
            if self.autocommit {
                return;
            }
            if self.savepoint {
                slot.abandoned = true;
            } else {
                slot.abandoned_statement = true;
            }
            // Undone and the rest committed now, not at the next member.
            self.group.pending.notify_one();
        }
    }
}

impl<DB: Driver> Slot<DB> {
    /// Undoes an abandoned member's work.
    async fn settle(&mut self) -> Result<(), sqlx::Error> {
        if self.abandoned_statement {
            self.abort("a write was cancelled mid-statement").await;
        }
        if self.abandoned {
            self.undo_savepoint().await?;
            self.abandoned = false;
        }
        Ok(())
    }

    async fn undo_savepoint(&mut self) -> Result<(), sqlx::Error> {
        step(self, GroupStep::RollbackToSavepoint).await?;
        step(self, GroupStep::Release).await
    }

    /// Commits the group's transaction and tells its members.
    async fn commit(&mut self) {
        if let Err(error) = self.settle().await {
            self.abort(&error.to_string()).await;
            return;
        }
        if !self.open {
            return;
        }
        match step(self, GroupStep::Commit).await {
            Ok(()) => {
                self.open = false;
                // Back to the pool between groups: with one connection
                // (a small SQLite pool) the application takes its turn.
                self.conn = None;
                for member in self.waiting.drain(..) {
                    let _ = member.send(Ok(()));
                }
            }
            Err(error) => self.abort(&format!("group commit failed: {error}")).await,
        }
    }

    /// Rolls the whole group back and tells its members why. A connection
    /// that cannot roll back is closed, so the next group starts clean.
    async fn abort(&mut self, reason: &str) {
        tracing::warn!(%reason, members = self.waiting.len(), "write group rolled back");
        if self.open && step(self, GroupStep::Rollback).await.is_err() {
            if let Some(mut conn) = self.conn.take() {
                conn.close_on_drop();
            }
        }
        self.open = false;
        self.abandoned = false;
        self.abandoned_statement = false;
        self.conn = None;
        for member in self.waiting.drain(..) {
            let _ = member.send(Err(reason.to_owned()));
        }
    }
}

impl<DB: Driver> Drop for Slot<DB> {
    fn drop(&mut self) {
        // Torn down mid-transaction (the runtime stopped): never hand the
        // pool a connection inside a transaction.
        if self.open {
            if let Some(conn) = self.conn.as_mut() {
                conn.close_on_drop();
            }
        }
    }
}

async fn step<DB: Driver>(slot: &mut Slot<DB>, step: GroupStep) -> Result<(), sqlx::Error> {
    let conn = slot.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)?;
    DB::tx_group_step(conn, step).await
}

/// Commits whenever a member is waiting for it; at stop, commits what is
/// left.
async fn commit_loop<DB: Driver>(group: Arc<Group<DB>>, stop: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            () = group.pending.notified() => false,
            () = stop.cancelled() => true,
        };
        group.slot.lock().await.commit().await;
        if stopping {
            return;
        }
    }
}

/// A job's own transaction: its own connection's, or a savepoint in its
/// worker's write group.
pub(crate) enum JobTx<DB: Driver> {
    Own(sqlx::Transaction<'static, DB>),
    /// The attempt was marked completed when the savepoint opened;
    /// `ours` says whether it still was this attempt's to complete.
    Grouped {
        member: Member<DB>,
        ours: bool,
    },
}

impl<DB: Driver> JobTx<DB> {
    /// Begins the transaction of attempt `job`: in `group` when there is one.
    pub async fn begin(
        pool: &Pool<DB>,
        group: Option<&WriteGroup<DB>>,
        job: Attempt,
    ) -> Result<Self, sqlx::Error> {
        match group {
            Some(group) => {
                let (member, ours) = group.join_job(job).await?;
                Ok(Self::Grouped { member, ours })
            }
            None => Ok(Self::Own(DB::tx_begin_write(pool).await?)),
        }
    }

    /// The connection the job's statements run on.
    pub fn conn(&mut self) -> &mut DB::Connection {
        match self {
            Self::Own(tx) => tx,
            Self::Grouped { member, .. } => member,
        }
    }

    /// Undoes everything the job wrote.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Own(tx) => tx.rollback().await,
            Self::Grouped { member, .. } => member.rollback().await,
        }
    }
}

/// One of a worker's writes: a member of its write group, or alone on a
/// pooled connection (autocommit) when it has none.
pub(crate) enum Writer<DB: Driver> {
    Alone(PoolConnection<DB>),
    Grouped(Member<DB>),
}

impl<DB: Driver> Writer<DB> {
    pub async fn begin(pool: &Pool<DB>, group: Option<&WriteGroup<DB>>) -> Result<Self, String> {
        match group {
            Some(group) => group.join_statement().await.map(Self::Grouped),
            None => pool.acquire().await.map(Self::Alone),
        }
        .map_err(|error| error.to_string())
    }

    pub fn conn(&mut self) -> &mut DB::Connection {
        match self {
            Self::Alone(conn) => conn,
            Self::Grouped(member) => member,
        }
    }

    /// Ends the write with its statements' `result`: kept when `Ok` (with
    /// the commit still to wait for, in a group), undone when `Err`.
    pub async fn end<T>(self, result: crate::Result<T>) -> Result<(T, Option<Committed>), String> {
        let member = match self {
            Self::Alone(_) => return result.map(|value| (value, None)).map_err(|e| e.to_string()),
            Self::Grouped(member) => member,
        };
        match result {
            Ok(value) => {
                let committed = member.release().await.map_err(|e| e.to_string())?;
                Ok((value, Some(committed)))
            }
            Err(error) => {
                if let Err(undo) = member.rollback().await {
                    tracing::warn!(error = %undo, "could not undo a failed write; its group was rolled back");
                }
                Err(error.to_string())
            }
        }
    }

    /// Like [`end`](Self::end), and waits until the write is committed.
    pub async fn end_committed<T>(self, result: crate::Result<T>) -> Result<T, String> {
        let (value, committed) = self.end(result).await?;
        if let Some(committed) = committed {
            committed.wait().await?;
        }
        Ok(value)
    }
}
