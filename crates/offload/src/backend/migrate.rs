//! offload's schema versions, embedded in the crate.
//!
//! offload keeps its own `offload_migrations` table instead of sqlx's
//! `_sqlx_migrations`, so that the application's own sqlx migrator never sees
//! versions it does not know.

/// One schema change.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs",
        sql: include_str!("../../migrations/postgres/0001_jobs.sql"),
    },
    Migration {
        version: 2,
        name: "queues",
        sql: include_str!("../../migrations/postgres/0002_queues.sql"),
    },
    Migration {
        version: 3,
        name: "admin",
        sql: include_str!("../../migrations/postgres/0003_admin.sql"),
    },
    Migration {
        version: 4,
        name: "cluster",
        sql: include_str!("../../migrations/postgres/0004_cluster.sql"),
    },
    Migration {
        version: 5,
        name: "lean indexes",
        sql: include_str!("../../migrations/postgres/0005_lean_indexes.sql"),
    },
];

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs",
        sql: include_str!("../../migrations/sqlite/0001_jobs.sql"),
    },
    Migration {
        version: 2,
        name: "queues",
        sql: include_str!("../../migrations/sqlite/0002_queues.sql"),
    },
    Migration {
        version: 3,
        name: "admin",
        sql: include_str!("../../migrations/sqlite/0003_admin.sql"),
    },
    Migration {
        version: 4,
        name: "cluster",
        sql: include_str!("../../migrations/sqlite/0004_cluster.sql"),
    },
];
