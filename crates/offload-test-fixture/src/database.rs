//! A fresh, empty database per test, on PostgreSQL or SQLite.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::{Connection, PgConnection, Pool, Postgres, Sqlite};
use tempfile::TempDir;

/// The PostgreSQL server tests use when `DATABASE_URL` names none.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long a best-effort drop (on [`Drop`]) may take before giving up.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The PostgreSQL server URL that test databases are created on:
/// `DATABASE_URL` if it starts with `postgres`, else [`DEFAULT_ADMIN_URL`].
///
/// ```
/// let url = offload_test_fixture::admin_url();
/// assert!(url.starts_with("postgres"));
/// ```
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
        .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned())
}

/// A name no other test (in this or another process) is using.
fn unique_name() -> String {
    format!(
        "offload_test_{}_{}_{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// `url` with its database (the path) replaced by `name`; the query stays.
fn with_database(url: &str, name: &str) -> String {
    let (rest, query) = match url.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (url, None),
    };
    let authority = rest.find("://").map_or(0, |at| at + 3);
    let base = match rest[authority..].find('/') {
        Some(slash) => &rest[..authority + slash],
        None => rest,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

async fn admin_connection(admin: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(admin).await
}

async fn drop_postgres(admin: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = admin_connection(admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// Where a [`FreshDatabase`] lives, until it is cleaned up.
#[derive(Debug)]
enum Place {
    /// A database on the server at `admin`.
    Postgres { admin: String },
    /// A file in this temp dir.
    Sqlite { dir: TempDir },
}

/// A fresh, empty database for one test: a uniquely named PostgreSQL
/// database, or an SQLite file in a temp dir of its own.
///
/// It hands out a URL only: connect with the pool settings your test needs
/// (offload's `Backend::connect`, say) and run your migrations.
///
/// Call [`cleanup`](Self::cleanup) at the end of the test. A test that
/// panics first still loses its database when the `FreshDatabase` is
/// dropped (best effort, on a thread of its own, so it works inside or
/// outside a Tokio runtime).
///
/// ```no_run
/// use offload_test_fixture::FreshDatabase;
///
/// # async fn example() {
/// let db = FreshDatabase::postgres().await;
/// let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
/// sqlx::query("CREATE TABLE notes (text TEXT)").execute(&pool).await.unwrap();
/// // ... the test ...
/// pool.close().await;
/// db.cleanup().await;
/// # }
/// ```
#[derive(Debug)]
pub struct FreshDatabase {
    url: String,
    name: String,
    /// `None` once cleaned up.
    place: Option<Place>,
}

impl FreshDatabase {
    /// Creates an empty database with a unique name (from the process id,
    /// a counter and a random number) on the server at [`admin_url`].
    ///
    /// # Panics
    ///
    /// If the server does not answer or refuses `CREATE DATABASE`.
    pub async fn postgres() -> Self {
        let admin = admin_url();
        let name = unique_name();
        let mut conn = admin_connection(&admin).await.unwrap_or_else(|e| {
            panic!("connect to PostgreSQL (DATABASE_URL, else {DEFAULT_ADMIN_URL}): {e}")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = conn.close().await;
        Self {
            url: with_database(&admin, &name),
            name,
            place: Some(Place::Postgres { admin }),
        }
    }

    /// Makes a temp dir of its own and names an SQLite file `test.db` in
    /// it; the file itself is left to whoever connects (offload's pools
    /// create it).
    ///
    /// ```
    /// let db = offload_test_fixture::FreshDatabase::sqlite();
    /// let dir = db.dir().expect("SQLite has a dir").to_owned();
    /// assert_eq!(db.url(), format!("sqlite://{}", dir.join("test.db").display()));
    /// drop(db);
    /// assert!(!dir.exists());
    /// ```
    ///
    /// # Panics
    ///
    /// If the temp dir cannot be made.
    pub fn sqlite() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("offload-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("make a temp dir for SQLite: {e}"));
        let name = "test.db".to_owned();
        Self {
            url: format!("sqlite://{}", dir.path().join(&name).display()),
            name,
            place: Some(Place::Sqlite { dir }),
        }
    }

    /// [`postgres`](Self::postgres) or [`sqlite`](Self::sqlite), picked by
    /// the sqlx database type: for tests generic over the backend.
    ///
    /// ```no_run
    /// use offload_test_fixture::{FreshBackend, FreshDatabase};
    ///
    /// async fn scenario<DB: FreshBackend>() {
    ///     let db = FreshDatabase::create::<DB>().await;
    ///     // ... connect to db.url() and test ...
    ///     db.cleanup().await;
    /// }
    /// ```
    pub async fn create<DB: FreshBackend>() -> Self {
        DB::fresh_database().await
    }

    /// Runs `test` on a pool that `connect` opens (from the URL) on a fresh
    /// database of `DB`'s kind; then closes the pool and removes the
    /// database. For tests whose scenarios take just a pool.
    ///
    /// `connect` is where the test's own pool settings and migrations go
    /// (this crate knows neither).
    ///
    /// ```
    /// use offload_test_fixture::FreshDatabase;
    /// use sqlx::{Pool, Sqlite};
    ///
    /// async fn scenario(pool: Pool<Sqlite>) -> i64 {
    ///     sqlx::query_scalar("SELECT 40 + 2").fetch_one(&pool).await.unwrap()
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let connect = |url: String| async move {
    ///     Pool::<Sqlite>::connect(&format!("{url}?mode=rwc")).await.unwrap()
    /// };
    /// assert_eq!(FreshDatabase::with_pool(connect, scenario).await, 42);
    /// # }
    /// ```
    pub async fn with_pool<DB, C, CF, T, TF>(connect: C, test: T) -> TF::Output
    where
        DB: FreshBackend,
        C: FnOnce(String) -> CF,
        CF: Future<Output = Pool<DB>>,
        T: FnOnce(Pool<DB>) -> TF,
        TF: Future,
    {
        let db = Self::create::<DB>().await;
        let pool = connect(db.url().to_owned()).await;
        let outcome = test(pool.clone()).await;
        pool.close().await;
        db.cleanup().await;
        outcome
    }

    /// The URL to connect to: `postgres://…/<name>` or
    /// `sqlite:///<temp dir>/test.db`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PostgreSQL database's name, or the SQLite file's (`test.db`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The temp dir holding the SQLite file; `None` on PostgreSQL.
    pub fn dir(&self) -> Option<&Path> {
        match &self.place {
            Some(Place::Sqlite { dir }) => Some(dir.path()),
            _ => None,
        }
    }

    /// Removes the database: `DROP DATABASE … WITH (FORCE)` (which ends
    /// any connection still open to it) or removing the temp dir.
    ///
    /// # Panics
    ///
    /// If the drop or the removal fails.
    pub async fn cleanup(mut self) {
        match self.place.take() {
            Some(Place::Postgres { admin }) => drop_postgres(&admin, &self.name)
                .await
                .unwrap_or_else(|e| panic!("drop database {}: {e}", self.name)),
            Some(Place::Sqlite { dir }) => {
                let path = dir.path().to_owned();
                dir.close()
                    .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
            }
            None => {}
        }
    }
}

impl Drop for FreshDatabase {
    /// Best effort, errors ignored: a test that did not reach
    /// [`cleanup`](Self::cleanup) (it panicked, say) leaves nothing behind.
    fn drop(&mut self) {
        // An SQLite temp dir removes itself when `place` is dropped.
        let Some(Place::Postgres { admin }) = self.place.take() else {
            return;
        };
        let name = std::mem::take(&mut self.name);
        // Its own thread and runtime: this may run inside a runtime (which
        // cannot block on a future) or outside any.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            // The timer must be made inside the runtime.
            let _ = runtime.block_on(async {
                tokio::time::timeout(DROP_TIMEOUT, drop_postgres(&admin, &name)).await
            });
        });
        let _ = dropper.join();
    }
}

/// The sqlx database types a [`FreshDatabase`] can be made for:
/// [`Postgres`] and [`Sqlite`]. Lets a test generic over the backend ask
/// for a fresh database of its own kind.
///
/// ```no_run
/// use offload_test_fixture::FreshBackend;
///
/// # async fn example() {
/// let db = <sqlx::Sqlite as FreshBackend>::fresh_database().await;
/// assert!(db.url().starts_with("sqlite://"));
/// # }
/// ```
pub trait FreshBackend: sqlx::Database {
    /// A fresh database of this kind.
    fn fresh_database() -> impl Future<Output = FreshDatabase> + Send;
}

impl FreshBackend for Postgres {
    async fn fresh_database() -> FreshDatabase {
        FreshDatabase::postgres().await
    }
}

impl FreshBackend for Sqlite {
    async fn fresh_database() -> FreshDatabase {
        FreshDatabase::sqlite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@db:5432/app?sslmode=disable", "x"),
            "postgres://u:p@db:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://db", "x"), "postgres://db/x");
        assert_eq!(with_database("postgres://db/", "x"), "postgres://db/x");
    }

    #[test]
    fn names_are_unique_and_valid_identifiers() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        for name in [a, b] {
            assert!(name.len() < 64, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
    }
}
