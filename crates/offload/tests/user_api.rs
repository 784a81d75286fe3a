//! The API a job author writes against: application state, hooks, the
//! event stream, one job for both backends, and the safe handling of kinds
//! a worker does not know. Each scenario runs on real PostgreSQL and SQLite.

#[macro_use]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use offload::{
    AttemptOutcome, Backend, BackendTx, EnqueueOptions, Job, JobContext, JobError, JobEvent,
    JobHook, JobInfo, JobState, Registry, Sql, Worker,
};
use serde::{Deserialize, Serialize};
use support::{eventually, fast_config, wait_for_state, TestDatabase, TestDb};

on_both_backends!(
    every_job_reaches_the_registry_state,
    hooks_run_around_each_attempt_and_on_discard,
    a_panicking_hook_does_not_change_the_outcome,
    event_stream_reports_each_outcome,
    portable_sql_runs_the_same_job_on_either_backend,
    backend_tx_gives_the_backend_connection,
    unknown_kind_is_retried_until_a_worker_that_knows_it_runs_it,
    unknown_kind_is_discarded_after_its_last_attempt,
);

// --------------------------------------------------------------- state

/// What every job of an app shares: here, a mail outbox and a counter.
struct App {
    sender: String,
    outbox: Mutex<Vec<String>>,
}

#[derive(Serialize, Deserialize)]
struct SendWelcome {
    to: String,
}

impl<DB: TestDb> Job<DB, App> for SendWelcome {
    const KIND: &'static str = "send_welcome";

    async fn run(self, ctx: &mut JobContext<DB, App>) -> Result<(), JobError> {
        let line = format!("{} -> {}", ctx.state().sender, self.to);
        ctx.state().outbox.lock().unwrap().push(line);
        Ok(())
    }
}

async fn every_job_reaches_the_registry_state<DB: TestDb>(db: &TestDatabase<DB>) {
    let app = App {
        sender: "hello@example.com".into(),
        outbox: Mutex::default(),
    };
    let registry = Registry::<DB, App>::with_state(app);
    let registry = registry.register::<SendWelcome>();
    let worker = Worker::new(db.pool.clone(), registry, fast_config())
        .start()
        .await
        .unwrap();
    let mut events = worker.events();
    let id = db
        .client
        .enqueue_with(SendWelcome { to: "a@x".into() }, EnqueueOptions::new())
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, id, JobState::Completed).await;
    let event = events.recv().await.unwrap();
    assert_eq!(event.job.id, id);
    worker.shutdown().await;
}

// --------------------------------------------------------------- hooks

#[derive(Serialize, Deserialize)]
struct FailsOnce {
    always: bool,
}

impl<DB: TestDb> Job<DB> for FailsOnce {
    const KIND: &'static str = "fails_once";
    const MAX_ATTEMPTS: i32 = 2;

    fn backoff(_: i32) -> Duration {
        Duration::from_millis(10)
    }

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        if self.always || ctx.attempt() == 1 {
            return Err(JobError::failed(format!("attempt {} fails", ctx.attempt())));
        }
        Ok(())
    }
}

/// Writes down every call it gets, in order.
#[derive(Default, Clone)]
struct Journal {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Journal {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
    }

    fn of(&self, id: i64) -> Vec<String> {
        let prefix = format!("{id}:");
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

struct Recorder {
    name: &'static str,
    journal: Journal,
}

impl JobHook for Recorder {
    fn around<'a>(&'a self, job: &'a JobInfo, attempt: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.journal
                .push(format!("{}:{} enters #{}", job.id, self.name, job.attempt));
            attempt.await;
            self.journal
                .push(format!("{}:{} leaves #{}", job.id, self.name, job.attempt));
        })
    }

    fn before_attempt<'a>(&'a self, job: &'a JobInfo) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.journal
                .push(format!("{}:{} before #{}", job.id, self.name, job.attempt));
        })
    }

    fn after_attempt<'a>(&'a self, event: &'a JobEvent) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.journal.push(format!(
                "{}:{} after #{} {}",
                event.job.id,
                self.name,
                event.job.attempt,
                event.outcome.label()
            ));
        })
    }

    fn on_discard<'a>(&'a self, event: &'a JobEvent) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.journal
                .push(format!("{}:{} discarded", event.job.id, self.name));
        })
    }
}

async fn hooks_run_around_each_attempt_and_on_discard<DB: TestDb>(db: &TestDatabase<DB>) {
    let journal = Journal::default();
    let registry = Registry::<DB>::new()
        .register::<FailsOnce>()
        .hook(Recorder {
            name: "outer",
            journal: journal.clone(),
        })
        .hook(Recorder {
            name: "inner",
            journal: journal.clone(),
        });
    let worker = Worker::new(db.pool.clone(), registry, fast_config())
        .start()
        .await
        .unwrap();
    let recovers = db
        .client
        .enqueue(FailsOnce { always: false })
        .await
        .unwrap()
        .id;
    let dies = db
        .client
        .enqueue(FailsOnce { always: true })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, recovers, JobState::Completed).await;
    wait_for_state(&db.client, dies, JobState::Discarded).await;
    // `after` runs once the outcome is recorded: let the last one land.
    eventually(Duration::from_secs(5), "the last hook calls", || async {
        journal.of(recovers).len() == 16 && journal.of(dies).len() == 18
    })
    .await;
    worker.shutdown().await;

    let attempt = |n: i32, outcome: &str| {
        vec![
            format!("outer before #{n}"),
            format!("inner before #{n}"),
            format!("outer enters #{n}"),
            format!("inner enters #{n}"),
            format!("inner leaves #{n}"),
            format!("outer leaves #{n}"),
            format!("outer after #{n} {outcome}"),
            format!("inner after #{n} {outcome}"),
        ]
    };
    let mut expected = attempt(1, "retrying");
    expected.extend(attempt(2, "completed"));
    assert_eq!(journal.of(recovers), expected);
    let mut expected = attempt(1, "retrying");
    let mut last = attempt(2, "discarded");
    // `on_discard` follows each hook's `after`.
    last.insert(7, "outer discarded".into());
    last.push("inner discarded".into());
    expected.extend(last);
    assert_eq!(journal.of(dies), expected);
}

struct Panics;

impl JobHook for Panics {
    fn after_attempt<'a>(&'a self, _: &'a JobEvent) -> BoxFuture<'a, ()> {
        Box::pin(async { panic!("the audit database is down") })
    }
}

async fn a_panicking_hook_does_not_change_the_outcome<DB: TestDb>(db: &TestDatabase<DB>) {
    let registry = Registry::<DB>::new().register::<FailsOnce>().hook(Panics);
    let worker = Worker::new(db.pool.clone(), registry, fast_config())
        .start()
        .await
        .unwrap();
    let id = db
        .client
        .enqueue(FailsOnce { always: false })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, id, JobState::Completed).await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!(job.attempt, 2);
    worker.shutdown().await;
}

// ---------------------------------------------------------------- events

#[derive(Serialize, Deserialize)]
struct Ends {
    how: String,
}

impl<DB: TestDb> Job<DB> for Ends {
    const KIND: &'static str = "ends";
    const MAX_ATTEMPTS: i32 = 1;

    async fn run(self, _: &mut JobContext<DB>) -> Result<(), JobError> {
        match self.how.as_str() {
            "ok" => Ok(()),
            "snooze" => Err(JobError::snooze(Duration::from_secs(3600))),
            "cancel" => Err(JobError::cancel("not needed")),
            _ => Err(JobError::failed("broken")),
        }
    }
}

async fn event_stream_reports_each_outcome<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = Worker::new(
        db.pool.clone(),
        Registry::<DB>::new().register::<Ends>(),
        fast_config(),
    );
    let mut events = worker.events();
    let worker = worker.start().await.unwrap();
    let mut ids = Vec::new();
    for how in ["ok", "snooze", "cancel", "fail"] {
        let id = db
            .client
            .enqueue(Ends { how: how.into() })
            .await
            .unwrap()
            .id;
        ids.push(id);
    }
    let mut seen = Vec::new();
    while seen.len() < ids.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event within 10 s")
            .expect("no lag");
        seen.push(event);
    }
    worker.shutdown().await;
    seen.sort_by_key(|event| event.job.id);
    let outcome = |id: i64| {
        seen.iter()
            .find(|e| e.job.id == id)
            .unwrap()
            .outcome
            .clone()
    };
    assert_eq!(outcome(ids[0]), AttemptOutcome::Completed);
    assert!(matches!(outcome(ids[1]), AttemptOutcome::Snoozed { .. }));
    assert_eq!(
        outcome(ids[2]),
        AttemptOutcome::Cancelled {
            reason: "not needed".into()
        }
    );
    assert_eq!(
        outcome(ids[3]),
        AttemptOutcome::Discarded {
            error: "broken".into()
        }
    );
    assert!(seen
        .iter()
        .all(|e| e.job.kind == "ends" && e.job.attempt == 1));
}

// ------------------------------------------------------ one job, any backend

/// Written once, for every backend, with [`Sql`].
#[derive(Serialize, Deserialize)]
struct PortableEffect {
    note: Option<String>,
}

impl<DB: Backend> Job<DB> for PortableEffect {
    const KIND: &'static str = "portable_effect";

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let id = ctx.id();
        Sql::new("INSERT INTO effects (job_id) VALUES ($1)")
            .bind(id)
            .execute(ctx)
            .await?;
        let changed = Sql::new("UPDATE counter SET value = value + $1 WHERE id = $2")
            .bind(10_i32)
            .bind(1_i64)
            .execute(ctx)
            .await?;
        assert_eq!(changed, 1);
        // A typed NULL and a value read back in the job's transaction.
        let echoed: Option<String> = Sql::new("SELECT $1")
            .bind(self.note.clone())
            .fetch_scalar(ctx)
            .await?;
        if echoed != self.note {
            return Err(JobError::discard("NULL or text did not round-trip"));
        }
        Ok(())
    }
}

async fn portable_sql_runs_the_same_job_on_either_backend<DB: TestDb>(db: &TestDatabase<DB>) {
    let registry = Registry::<DB>::new().register::<PortableEffect>();
    let worker = Worker::new(db.pool.clone(), registry, fast_config())
        .start()
        .await
        .unwrap();
    let with = db
        .client
        .enqueue(PortableEffect {
            note: Some("hi".into()),
        })
        .await
        .unwrap()
        .id;
    let without = db
        .client
        .enqueue(PortableEffect { note: None })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, with, JobState::Completed).await;
    wait_for_state(&db.client, without, JobState::Completed).await;
    worker.shutdown().await;

    let mut conn = db.pool.acquire().await.unwrap();
    let counter: i64 = Sql::new("SELECT value FROM counter WHERE id = $1")
        .bind(1)
        .fetch_scalar(&mut conn)
        .await
        .unwrap();
    assert_eq!(counter, 20);
    let rows: Vec<(i64,)> = Sql::new("SELECT job_id FROM effects ORDER BY job_id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, [(with,), (without,)]);
    let none: Option<(i64,)> = Sql::new("SELECT job_id FROM effects WHERE job_id = $1")
        .bind(-1)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    assert_eq!(none, None);
}

/// Per-backend SQL in a job generic over the backend.
#[derive(Serialize, Deserialize)]
struct NamesItsBackend;

impl<DB: Backend> Job<DB> for NamesItsBackend {
    const KIND: &'static str = "names_its_backend";

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let id = ctx.id();
        match ctx.backend_tx().await? {
            BackendTx::Postgres(conn) => {
                // `-id`: PostgreSQL ran it.
                sqlx::query("INSERT INTO effects (job_id) VALUES (-$1::bigint)")
                    .bind(id)
                    .execute(conn)
                    .await?;
            }
            BackendTx::Sqlite(conn) => {
                sqlx::query("INSERT INTO effects (job_id) VALUES (?1)")
                    .bind(id)
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    }
}

async fn backend_tx_gives_the_backend_connection<DB: TestDb>(db: &TestDatabase<DB>) {
    let registry = Registry::<DB>::new().register::<NamesItsBackend>();
    let worker = Worker::new(db.pool.clone(), registry, fast_config())
        .start()
        .await
        .unwrap();
    let id = db.client.enqueue(NamesItsBackend).await.unwrap().id;
    wait_for_state(&db.client, id, JobState::Completed).await;
    worker.shutdown().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let stored: i64 = Sql::new("SELECT job_id FROM effects")
        .fetch_scalar(&mut conn)
        .await
        .unwrap();
    let expected = if <DB as sqlx::Database>::NAME == "PostgreSQL" {
        -id
    } else {
        id
    };
    assert_eq!(stored, expected);
}

// ------------------------------------------------------------ unknown kinds

#[derive(Serialize, Deserialize)]
struct NewInThisDeploy;

static NEW_KIND_RUNS: AtomicUsize = AtomicUsize::new(0);

impl<DB: TestDb> Job<DB> for NewInThisDeploy {
    const KIND: &'static str = "new_in_this_deploy";

    async fn run(self, _: &mut JobContext<DB>) -> Result<(), JobError> {
        NEW_KIND_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn unknown_kind_is_retried_until_a_worker_that_knows_it_runs_it<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    // An old worker, deployed before the kind existed, claims it first.
    let old = Worker::new(db.pool.clone(), Registry::<DB>::new(), fast_config())
        .start()
        .await
        .unwrap();
    let id = db.client.enqueue(NewInThisDeploy).await.unwrap().id;
    wait_for_state(&db.client, id, JobState::Retryable).await;
    old.shutdown().await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!(job.attempt, 1);
    assert!(
        job.errors[0]
            .error
            .contains("unknown job kind `new_in_this_deploy`"),
        "{:?}",
        job.errors
    );

    // The new deploy's worker runs it once its back-off (1–2 s) passes.
    let new = Worker::new(
        db.pool.clone(),
        Registry::<DB>::new().register::<NewInThisDeploy>(),
        fast_config(),
    )
    .start()
    .await
    .unwrap();
    wait_for_state(&db.client, id, JobState::Completed).await;
    new.shutdown().await;
    assert_eq!(db.client.job(id).await.unwrap().unwrap().attempt, 2);
}

async fn unknown_kind_is_discarded_after_its_last_attempt<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = Worker::new(db.pool.clone(), Registry::<DB>::new(), fast_config())
        .start()
        .await
        .unwrap();
    let id = db
        .client
        .insert(&[offload::NewJob {
            max_attempts: 1,
            ..offload::NewJob::new("no_such_kind", "{}")
        }])
        .await
        .unwrap()[0]
        .id;
    wait_for_state(&db.client, id, JobState::Discarded).await;
    worker.shutdown().await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert!(job.errors[0]
        .error
        .contains("unknown job kind `no_such_kind`"));
}

// ------------------------------------------------------- unserved queues

/// A job whose queue the worker below does not serve.
#[derive(Serialize, Deserialize)]
struct OnTheMailQueue;

impl Job<sqlx::Sqlite> for OnTheMailQueue {
    const KIND: &'static str = "on_the_mail_queue";
    const QUEUE: &'static str = "mail";

    async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> {
        Ok(())
    }
}

/// A log sink for one test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn start_warns_of_kinds_whose_queue_is_not_served() {
    let db = TestDatabase::<sqlx::Sqlite>::create().await;
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let registry = Registry::<sqlx::Sqlite>::new()
        .register::<OnTheMailQueue>()
        .register::<NamesItsBackend>();
    let worker = Worker::new(db.pool.clone(), registry, fast_config().queue("default", 2))
        .start()
        .await
        .unwrap();
    worker.shutdown().await;
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("its queue is not one this worker serves"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains("kind=\"on_the_mail_queue\"")
            && warnings[0].contains("queue=\"mail\""),
        "{}",
        warnings[0]
    );
    db.drop_database().await;
}

// ------------------------------------------------------ bad queue names

/// A kind whose default queue no worker could serve.
#[derive(Serialize, Deserialize)]
struct OnABadQueue;

impl Job<sqlx::Sqlite> for OnABadQueue {
    const KIND: &'static str = "on_a_bad_queue";
    const QUEUE: &'static str = "Has Space";

    async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test]
async fn start_refuses_bad_queue_names_in_config_kinds_and_periodic_jobs() {
    let db = TestDatabase::<sqlx::Sqlite>::create().await;
    let start = |registry: Registry<sqlx::Sqlite>, config: offload::WorkerConfig| {
        let pool = db.pool.clone();
        async move {
            match Worker::new(pool, registry, config).start().await {
                Ok(worker) => {
                    worker.shutdown().await;
                    "started".to_owned()
                }
                Err(error) => error.to_string(),
            }
        }
    };
    let config_error = start(Registry::new(), fast_config().queue("", 1)).await;
    assert!(
        config_error.contains("invalid queue name \"\""),
        "{config_error}"
    );
    let kind_error = start(Registry::new().register::<OnABadQueue>(), fast_config()).await;
    assert!(
        kind_error.contains("invalid queue name \"Has Space\""),
        "{kind_error}"
    );
    let periodic = offload::PeriodicJob::every("p", Duration::from_secs(60), || OnTheMailQueue)
        .unwrap()
        .options(EnqueueOptions::new().queue("mail queue"));
    let periodic_error = start(Registry::new().periodic(periodic), fast_config()).await;
    assert!(
        periodic_error.contains("invalid queue name \"mail queue\""),
        "{periodic_error}"
    );
    assert_eq!(start(Registry::new(), fast_config()).await, "started");
    db.drop_database().await;
}
