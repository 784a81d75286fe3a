//! The testing kit (`offload::testing`), as an application's tests use it:
//! each scenario runs on real PostgreSQL and real SQLite, through the real
//! executor, and checks what the job did to the database.

#[macro_use]
mod support;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use offload::testing::{DrainOptions, TestKit};
use offload::{
    AttemptOutcome, Client, EnqueueOptions, Job, JobContext, JobError, JobEvent, JobHook, JobInfo,
    JobState, Registry, Retention, UniqueOptions, WorkerConfig, DEFAULT_MAX_ATTEMPTS,
};
use serde::{Deserialize, Serialize};
use support::jobs::{registry, ApplyEffect, FailTimes, Panics, RecordEffect};
use support::{TestDatabase, TestDb};
use tower::ServiceExt;

on_both_backends!(
    work_commits_the_job_and_its_write,
    work_rolls_back_a_failed_attempt_and_schedules_its_retry,
    work_records_a_panic_as_a_failure_and_rolls_it_back,
    work_runs_a_job_scheduled_for_later_now,
    work_with_zero_retention_returns_no_row,
    work_gives_the_job_the_registry_state,
    work_runs_the_registry_hooks_before_it_returns,
    work_id_panics_for_a_job_that_is_not_waiting,
    enqueued_decodes_args_and_reads_options_and_unique_key,
    enqueued_tx_sees_the_callers_uncommitted_jobs,
    assert_enqueued_panics_listing_what_was_enqueued,
    drain_runs_jobs_in_claim_order_with_the_jobs_they_enqueue,
    drain_with_scheduled_runs_later_jobs_and_stops_a_snoozing_one,
    drain_panics_past_max_jobs,
    inline_runs_what_a_handler_enqueues_and_settle_waits_for_it,
);

/// A panic's message, or a failure if `future` does not panic.
async fn panic_message(future: impl Future<Output = ()>) -> String {
    let payload = AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .expect_err("it panics");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .expect("a text payload")
}

fn kit<DB: TestDb>(db: &TestDatabase<DB>) -> TestKit<DB> {
    TestKit::new(db.pool.clone(), registry::<DB>())
}

// ------------------------------------------------------------------ work

async fn work_commits_the_job_and_its_write<DB: TestDb>(db: &TestDatabase<DB>) {
    let kit = kit(db);
    let worked = kit.work(ApplyEffect).await.unwrap();
    assert_eq!(worked.outcome, AttemptOutcome::Completed);
    assert!(worked.is_completed());
    assert_eq!(worked.attempt, 1);
    let job = worked.job.expect("the row is kept");
    assert_eq!(job.id, worked.id);
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.attempt, 1);
    assert!(job.finalized_at.is_some());
    assert_eq!(job.worker_id, None);
    assert_eq!(DB::counter(&db.pool).await, 1, "the job's write committed");
    assert_eq!(DB::effects(&db.pool).await, (1, 1));
}

async fn work_rolls_back_a_failed_attempt_and_schedules_its_retry<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let kit = kit(db);
    let before = Utc::now();
    let worked = kit.work(FailTimes { failures: 1 }).await.unwrap();
    let AttemptOutcome::Retrying { error, at } = &worked.outcome else {
        panic!("expected a retry, got {:?}", worked.outcome);
    };
    assert_eq!(error, "planned failure 1");
    assert!(*at > before, "the retry is after the back-off");
    let job = worked.job.unwrap();
    assert_eq!(job.state, JobState::Retryable);
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].error, "planned failure 1");
    assert_eq!(job.run_at, micros(*at), "run_at is the retry's time");
    assert_eq!(
        DB::counter(&db.pool).await,
        0,
        "the failed write rolled back"
    );

    // A retryable job can be worked again at once.
    let again = kit.work_id(worked.id).await.unwrap();
    assert_eq!(again.attempt, 2);
    assert!(again.is_completed());
    assert_eq!(DB::counter(&db.pool).await, 1);
}

async fn work_records_a_panic_as_a_failure_and_rolls_it_back<DB: TestDb>(db: &TestDatabase<DB>) {
    let kit = kit(db);
    let worked = kit.work(Panics).await.unwrap();
    let AttemptOutcome::Retrying { error, .. } = &worked.outcome else {
        panic!("expected a retry, got {:?}", worked.outcome);
    };
    assert_eq!(error, &format!("panicked: boom in job {}", worked.id));
    assert_eq!(DB::counter(&db.pool).await, 0);

    // Its last attempt (of 2) is discarded.
    let last = kit.work_id(worked.id).await.unwrap();
    assert!(
        matches!(&last.outcome, AttemptOutcome::Discarded { error } if error.starts_with("panicked: boom")),
        "{:?}",
        last.outcome
    );
    assert_eq!(last.job.unwrap().state, JobState::Discarded);
    assert_eq!(DB::counter(&db.pool).await, 0);
}

async fn work_runs_a_job_scheduled_for_later_now<DB: TestDb>(db: &TestDatabase<DB>) {
    let kit = kit(db);
    let options = EnqueueOptions::new().delay(Duration::from_secs(3600));
    let worked = kit.work_with(RecordEffect, options).await.unwrap();
    assert!(worked.is_completed(), "{:?}", worked.outcome);
    assert_eq!(DB::effects(&db.pool).await, (1, 1));
}

async fn work_with_zero_retention_returns_no_row<DB: TestDb>(db: &TestDatabase<DB>) {
    let config = WorkerConfig::default().retention(Retention::default().completed(Duration::ZERO));
    let kit = TestKit::with_config(db.pool.clone(), registry::<DB>(), config);
    // Both ways a job completes: in its own transaction, and batched.
    for worked in [
        kit.work(ApplyEffect).await.unwrap(),
        kit.work(support::jobs::Noop { n: 1 }).await.unwrap(),
    ] {
        assert!(worked.is_completed());
        assert!(worked.job.is_none(), "completed jobs are deleted");
        assert!(db.client.job(worked.id).await.unwrap().is_none());
    }
    assert_eq!(DB::counter(&db.pool).await, 1);
}

/// Application state a test can look into after its jobs ran.
#[derive(Clone, Default)]
struct Outbox(Arc<Mutex<Vec<String>>>);

impl Outbox {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Delivers a message: a line in the outbox, an effect row in the database.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Deliver {
    to: String,
}

impl<DB: TestDb> Job<DB, Outbox> for Deliver {
    const KIND: &'static str = "deliver";
    const QUEUE: &'static str = "mail";

    async fn run(self, ctx: &mut JobContext<DB, Outbox>) -> Result<(), JobError> {
        let id = ctx.id();
        DB::record_effect(ctx.tx().await?, id).await?;
        ctx.state().0.lock().unwrap().push(self.to);
        Ok(())
    }
}

/// Writes its name down, and enqueues `child` (in its own transaction).
#[derive(Serialize, Deserialize, Debug)]
struct Step {
    name: String,
    child: Option<String>,
}

impl Step {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            child: None,
        }
    }
}

impl<DB: TestDb> Job<DB, Outbox> for Step {
    const KIND: &'static str = "step";
    const QUEUE: &'static str = "steps";

    async fn run(self, ctx: &mut JobContext<DB, Outbox>) -> Result<(), JobError> {
        if let Some(child) = &self.child {
            let client = Client::new(ctx.pool().clone());
            client
                .enqueue_tx(ctx.tx().await?, Step::new(child))
                .await
                .map_err(JobError::failed)?;
        }
        ctx.state().0.lock().unwrap().push(self.name);
        Ok(())
    }
}

/// Asks to run again later, every time.
#[derive(Serialize, Deserialize)]
struct AlwaysSnoozes;

impl<DB: TestDb> Job<DB, Outbox> for AlwaysSnoozes {
    const KIND: &'static str = "always_snoozes";
    const QUEUE: &'static str = "steps";

    async fn run(self, _: &mut JobContext<DB, Outbox>) -> Result<(), JobError> {
        Err(JobError::snooze(Duration::from_secs(3600)))
    }
}

/// Enqueues another of itself, forever.
#[derive(Serialize, Deserialize)]
struct Forever;

impl<DB: TestDb> Job<DB, Outbox> for Forever {
    const KIND: &'static str = "forever";
    const QUEUE: &'static str = "forever";

    async fn run(self, ctx: &mut JobContext<DB, Outbox>) -> Result<(), JobError> {
        let client = Client::new(ctx.pool().clone());
        client
            .enqueue_tx(ctx.tx().await?, Forever)
            .await
            .map_err(JobError::failed)?;
        Ok(())
    }
}

fn outbox_kit<DB: TestDb>(db: &TestDatabase<DB>) -> (TestKit<DB, Outbox>, Outbox) {
    let outbox = Outbox::default();
    let registry = Registry::<DB, Outbox>::with_state(outbox.clone())
        .register::<Deliver>()
        .register::<Step>()
        .register::<AlwaysSnoozes>()
        .register::<Forever>();
    (TestKit::new(db.pool.clone(), registry), outbox)
}

async fn work_gives_the_job_the_registry_state<DB: TestDb>(db: &TestDatabase<DB>) {
    let (kit, outbox) = outbox_kit(db);
    let worked = kit.work(Deliver { to: "a@x".into() }).await.unwrap();
    assert!(worked.is_completed(), "{:?}", worked.outcome);
    assert_eq!(outbox.lines(), ["a@x"]);
    assert_eq!(worked.job.unwrap().queue, "mail");
    assert_eq!(DB::effects(&db.pool).await, (1, 1));
}

/// Writes down every hook call, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

impl JobHook for Recorder {
    fn around<'a>(&'a self, job: &'a JobInfo, attempt: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.push(format!("enters #{}", job.attempt));
            attempt.await;
            self.push(format!("leaves #{}", job.attempt));
        })
    }

    fn before_attempt<'a>(&'a self, job: &'a JobInfo) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.push(format!("before #{}", job.attempt)) })
    }

    fn after_attempt<'a>(&'a self, event: &'a JobEvent) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.push(format!(
                "after #{} {}",
                event.job.attempt,
                event.outcome.label()
            ));
        })
    }

    fn on_discard<'a>(&'a self, _: &'a JobEvent) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.push("discarded".into()) })
    }
}

async fn work_runs_the_registry_hooks_before_it_returns<DB: TestDb>(db: &TestDatabase<DB>) {
    let recorder = Recorder::default();
    let registry = Registry::<DB>::new()
        .register::<FailTimes>()
        .hook(recorder.clone());
    let kit = TestKit::new(db.pool.clone(), registry);
    let mut events = kit.events();
    let worked = kit
        .work_with(
            FailTimes { failures: 5 },
            EnqueueOptions::new().max_attempts(2),
        )
        .await
        .unwrap();
    kit.work_id(worked.id).await.unwrap();
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [
            "before #1",
            "enters #1",
            "leaves #1",
            "after #1 retrying",
            "before #2",
            "enters #2",
            "leaves #2",
            "after #2 discarded",
            "discarded",
        ]
    );
    let first = events.try_recv().expect("an event per attempt");
    assert_eq!((first.job.id, first.job.attempt), (worked.id, 1));
    assert_eq!(events.try_recv().unwrap().outcome.label(), "discarded");
}

async fn work_id_panics_for_a_job_that_is_not_waiting<DB: TestDb>(db: &TestDatabase<DB>) {
    let kit = kit(db);
    let done = kit.work(RecordEffect).await.unwrap();
    let message = panic_message(async {
        kit.work_id(done.id).await.unwrap();
    })
    .await;
    assert!(
        message.contains(&format!("job {} is completed", done.id)),
        "{message}"
    );
    let message = panic_message(async {
        kit.work_id(done.id + 1000).await.unwrap();
    })
    .await;
    assert!(message.contains("there is no job"), "{message}");
}

// -------------------------------------------------------------- enqueued

/// `at`, at the microsecond precision both backends store.
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap()
}

async fn enqueued_decodes_args_and_reads_options_and_unique_key<DB: TestDb>(db: &TestDatabase<DB>) {
    let (kit, _) = outbox_kit(db);
    assert!(kit.enqueued::<Deliver>().await.unwrap().is_empty());
    let later = micros(Utc::now() + chrono::Duration::hours(2));
    let plain = kit
        .client()
        .enqueue(Deliver { to: "a@x".into() })
        .await
        .unwrap()
        .id;
    let options = EnqueueOptions::new()
        .queue("priority-mail")
        .priority(-3)
        .run_at(later)
        .tag("signup")
        .unique(UniqueOptions::by_key("welcome:b"));
    let unique = kit
        .client()
        .enqueue_with(Deliver { to: "b@x".into() }, options)
        .await
        .unwrap()
        .id;
    kit.client().enqueue(Step::new("other kind")).await.unwrap();

    let jobs = kit.enqueued::<Deliver>().await.unwrap();
    assert_eq!(jobs.len(), 2, "only jobs of the kind");
    assert_eq!(jobs[0].id, plain);
    assert_eq!(jobs[0].args, Deliver { to: "a@x".into() });
    assert_eq!(
        (jobs[0].queue.as_str(), jobs[0].priority, jobs[0].state),
        ("mail", 0, JobState::Available)
    );
    assert!(jobs[0].tags.is_empty());
    assert_eq!(jobs[0].unique_key, None);
    assert_eq!(
        (jobs[0].attempt, jobs[0].max_attempts),
        (0, DEFAULT_MAX_ATTEMPTS)
    );

    let job = &jobs[1];
    assert_eq!(job.id, unique);
    assert_eq!(job.args.to, "b@x");
    assert_eq!(
        (job.queue.as_str(), job.priority, job.state, job.run_at),
        ("priority-mail", -3, JobState::Scheduled, later)
    );
    assert_eq!(job.tags, ["signup"]);
    let expected = UniqueOptions::by_key("welcome:b")
        .key_for("deliver", "{}", Utc::now())
        .unwrap();
    assert_eq!(job.unique_key.as_deref(), Some(expected.key.as_str()));

    // Worked, a job stays listed, in its new state.
    kit.work_id(plain).await.unwrap();
    let jobs = kit.enqueued::<Deliver>().await.unwrap();
    assert_eq!(jobs[0].state, JobState::Completed);
    assert_eq!(jobs[0].attempt, 1);
}

async fn enqueued_tx_sees_the_callers_uncommitted_jobs<DB: TestDb>(db: &TestDatabase<DB>) {
    let (kit, _) = outbox_kit(db);
    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    let id = kit
        .client()
        .enqueue_tx(&mut tx, Deliver { to: "a@x".into() })
        .await
        .unwrap()
        .id;
    let seen = kit.enqueued_tx::<Deliver>(&mut tx).await.unwrap();
    assert_eq!(seen.iter().map(|job| job.id).collect::<Vec<_>>(), [id]);
    let found = kit
        .assert_enqueued_tx::<Deliver>(&mut tx, |job| job.args.to == "a@x")
        .await;
    assert_eq!(found.id, id);
    tx.rollback().await.unwrap();
    assert!(kit.enqueued::<Deliver>().await.unwrap().is_empty());
    kit.assert_not_enqueued::<Deliver>().await;

    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    kit.assert_not_enqueued_tx::<Deliver>(&mut tx).await;
    tx.commit().await.unwrap();
}

async fn assert_enqueued_panics_listing_what_was_enqueued<DB: TestDb>(db: &TestDatabase<DB>) {
    let (kit, _) = outbox_kit(db);
    let message = panic_message(async {
        kit.assert_enqueued::<Deliver>(|_| true).await;
    })
    .await;
    assert!(
        message.contains("no job of kind `deliver` matches: none is enqueued"),
        "{message}"
    );

    let first = kit
        .client()
        .enqueue(Deliver { to: "a@x".into() })
        .await
        .unwrap()
        .id;
    let options = EnqueueOptions::new()
        .tag("signup")
        .unique(UniqueOptions::by_key("b"));
    let second = kit
        .client()
        .enqueue_with(Deliver { to: "b@x".into() }, options)
        .await
        .unwrap()
        .id;
    let found = kit
        .assert_enqueued::<Deliver>(|job| job.args.to == "b@x")
        .await;
    assert_eq!(found.id, second);

    let message = panic_message(async {
        kit.assert_enqueued::<Deliver>(|job| job.args.to == "c@x")
            .await;
    })
    .await;
    assert!(
        message.contains("no job of kind `deliver` matches; 2 enqueued:"),
        "{message}"
    );
    for line in [
        format!(
            "job {first} (available, queue `mail`, priority 0, attempt 0/{DEFAULT_MAX_ATTEMPTS}"
        ),
        r#"args {"to":"a@x"}"#.to_owned(),
        format!("job {second} (available"),
        r#"args {"to":"b@x"} tags ["signup"] unique key `deliver:"#.to_owned(),
    ] {
        assert!(message.contains(&line), "{line:?} missing from:\n{message}");
    }

    let message = panic_message(kit.assert_not_enqueued::<Deliver>()).await;
    assert!(
        message.contains("expected no job of kind `deliver`; 2 enqueued:")
            && message.contains(r#"args {"to":"a@x"}"#),
        "{message}"
    );
    kit.assert_not_enqueued::<Step>().await;
}

// ----------------------------------------------------------------- drain

async fn drain_runs_jobs_in_claim_order_with_the_jobs_they_enqueue<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let (kit, outbox) = outbox_kit(db);
    let client = kit.client();
    let at = |priority: i16| EnqueueOptions::new().priority(priority);
    client.enqueue_with(Step::new("low"), at(1)).await.unwrap();
    let parent = Step {
        name: "first of 0".into(),
        child: Some("child of first".into()),
    };
    client.enqueue_with(parent, at(0)).await.unwrap();
    client
        .enqueue_with(Step::new("second of 0"), at(0))
        .await
        .unwrap();
    client
        .enqueue_with(Step::new("high"), at(-1))
        .await
        .unwrap();
    let overdue = at(0).run_at(Utc::now() - chrono::Duration::hours(1));
    client
        .enqueue_with(Step::new("overdue of 0"), overdue)
        .await
        .unwrap();
    let later = EnqueueOptions::new().delay(Duration::from_secs(3600));
    let scheduled = client
        .enqueue_with(Step::new("later"), later)
        .await
        .unwrap()
        .id;
    let elsewhere = client
        .enqueue(Deliver { to: "a@x".into() })
        .await
        .unwrap()
        .id;

    let drained = kit.drain("steps").await.unwrap();
    assert_eq!(
        outbox.lines(),
        [
            "high",
            "overdue of 0",
            "first of 0",
            "second of 0",
            "child of first",
            "low"
        ],
        "by priority, then the earliest due, then in enqueue order; the child is enqueued last"
    );
    assert_eq!(drained.len(), 6);
    assert!(drained.iter().all(|worked| worked.is_completed()));
    let names: Vec<String> = drained
        .iter()
        .map(|worked| worked.job.as_ref().unwrap().args["name"].to_string())
        .collect();
    assert_eq!(names[0], "\"high\"", "results in the order run");
    let state = |id| async move { db.client.job(id).await.unwrap().unwrap().state };
    assert_eq!(state(scheduled).await, JobState::Scheduled, "not due yet");
    assert_eq!(state(elsewhere).await, JobState::Available, "another queue");
    assert!(kit.drain("steps").await.unwrap().is_empty());
}

async fn drain_with_scheduled_runs_later_jobs_and_stops_a_snoozing_one<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let (kit, outbox) = outbox_kit(db);
    let later = |hours: u64| EnqueueOptions::new().delay(Duration::from_secs(3600 * hours));
    kit.client()
        .enqueue_with(Step::new("in two hours"), later(2))
        .await
        .unwrap();
    kit.client()
        .enqueue_with(Step::new("in one hour"), later(1))
        .await
        .unwrap();
    let snoozer = kit.client().enqueue(AlwaysSnoozes).await.unwrap().id;

    let drained = kit
        .drain_with("steps", DrainOptions::new().with_scheduled(3))
        .await
        .unwrap();
    assert_eq!(
        outbox.lines(),
        ["in one hour", "in two hours"],
        "the scheduled jobs ran, the earliest due first"
    );
    let snoozes: Vec<i32> = drained
        .iter()
        .filter(|worked| worked.id == snoozer)
        .map(|worked| {
            assert!(
                matches!(worked.outcome, AttemptOutcome::Snoozed { .. }),
                "{:?}",
                worked.outcome
            );
            worked.attempt
        })
        .collect();
    assert_eq!(snoozes, [1, 2, 3, 4], "once, then once per round");
    assert_eq!(drained.len(), 6);
    let job = db.client.job(snoozer).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Scheduled, "left snoozed");
}

async fn drain_panics_past_max_jobs<DB: TestDb>(db: &TestDatabase<DB>) {
    let (kit, _) = outbox_kit(db);
    kit.client().enqueue(Forever).await.unwrap();
    let message = panic_message(async {
        kit.drain_with("forever", DrainOptions::new().max_jobs(5))
            .await
            .unwrap();
    })
    .await;
    assert!(
        message.contains("drained 5 jobs of queue `forever` and 1 more are waiting"),
        "{message}"
    );
    // Exactly the cap ran: five completed, the sixth still waits.
    let jobs = kit.enqueued::<Forever>().await.unwrap();
    let states: Vec<JobState> = jobs.iter().map(|job| job.state).collect();
    assert_eq!(
        states,
        [
            JobState::Completed,
            JobState::Completed,
            JobState::Completed,
            JobState::Completed,
            JobState::Completed,
            JobState::Available
        ]
    );
}

// ---------------------------------------------------------------- inline

/// What the test app's handlers share.
struct AppState<DB: TestDb> {
    pool: sqlx::Pool<DB>,
    client: Client<DB>,
}

impl<DB: TestDb> Clone for AppState<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            client: self.client.clone(),
        }
    }
}

/// `POST /signup`: enqueues the welcome in the request's transaction.
async fn signup<DB: TestDb>(State(app): State<AppState<DB>>) -> StatusCode {
    let mut tx = DB::begin_write(&app.pool).await.unwrap();
    app.client
        .enqueue_tx(&mut tx, Deliver { to: "new@x".into() })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    StatusCode::CREATED
}

async fn inline_runs_what_a_handler_enqueues_and_settle_waits_for_it<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let (kit, outbox) = outbox_kit(db);
    assert_eq!(kit.queues(), ["forever", "mail", "steps"]);
    let app = Router::new()
        .route("/signup", post(signup::<DB>))
        .with_state(AppState {
            pool: db.pool.clone(),
            client: kit.client().clone(),
        });
    let inline = kit.inline();
    for _ in 0..3 {
        let request = Request::post("/signup")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    inline.settle().await;
    assert_eq!(outbox.lines(), ["new@x", "new@x", "new@x"]);
    assert_eq!(DB::effects(&db.pool).await, (3, 3));
    let worked = inline.worked();
    assert_eq!(worked.len(), 3);
    assert!(worked.iter().all(|worked| worked.is_completed()));

    // A job the inline runner cannot finish makes settle fail, saying why.
    kit.client().enqueue(Forever).await.unwrap();
    let message = panic_message(inline.settle_within(Duration::from_millis(300))).await;
    assert!(
        message.contains("jobs did not settle within 300ms") && message.contains("in `forever`"),
        "{message}"
    );
    inline.stop().await;
    let stopped = kit.enqueued::<Forever>().await.unwrap();
    assert!(stopped.len() > 1, "the runner ran the forever job");
    assert_eq!(stopped.last().unwrap().state, JobState::Available);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        kit.enqueued::<Forever>().await.unwrap().len(),
        stopped.len(),
        "a stopped runner runs nothing"
    );
}
