//! The steps of a write group's transaction, which each backend spells.

/// One step of a write group's transaction (`storage/group.rs`). The group's
/// own `Begin`, `Commit` and `Rollback` go through sqlx's transaction
/// manager, so a `begin()` inside a member nests as a savepoint and the
/// pool's guards see the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStep {
    /// Begins the group's transaction, taking the write lock.
    Begin,
    /// Opens a member's savepoint.
    Savepoint,
    /// Keeps a member's work and closes its savepoint.
    Release,
    /// Undoes a member's work (its savepoint stays open until `Release`).
    RollbackToSavepoint,
    /// Commits the group.
    Commit,
    /// Rolls the whole group back.
    Rollback,
}
