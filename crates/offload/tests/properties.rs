//! Property tests: back-off bounds, and the job state machine as the SQL
//! implements it (run against a real SQLite database).

#[macro_use]
mod support;

use std::time::Duration;

use chrono::Utc;
use offload::storage::{Attempt, Driver, Outcome};
use offload::{JobState, NewJob};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sqlx::Sqlite;
use support::TestDatabase;

proptest! {
    #[test]
    fn backoff_grows_exponentially_within_jitter(attempt in 1i32..40, min_ms in 1u64..5_000) {
        let min = Duration::from_millis(min_ms);
        let max = Duration::from_secs(3600);
        let delay = offload::backoff::scaled(attempt, min, max);
        let base = min.saturating_mul(2u32.saturating_pow((attempt - 1) as u32)).min(max);
        prop_assert!(delay >= base, "attempt {attempt}: {delay:?} < {base:?}");
        prop_assert!(delay <= base * 2, "attempt {attempt}: {delay:?} > 2 × {base:?}");
    }

    #[test]
    fn backoff_never_panics_on_any_attempt(attempt in any::<i32>()) {
        let delay = offload::backoff::exponential(attempt);
        prop_assert!(delay <= offload::backoff::MAX_DELAY * 2);
    }
}

/// What happens to one attempt.
#[derive(Debug, Clone, Copy)]
enum Step {
    Complete,
    Retry,
    Discard,
    Cancel,
    Snooze,
    Requeue,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Complete),
        Just(Step::Retry),
        Just(Step::Discard),
        Just(Step::Cancel),
        Just(Step::Snooze),
        Just(Step::Requeue),
    ]
}

/// The model: the state, attempt, max_attempts and error count the job
/// must have.
#[derive(Debug)]
struct Model {
    state: JobState,
    attempt: i32,
    max_attempts: i32,
    errors: usize,
}

async fn run_steps(db: &TestDatabase<Sqlite>, case: u64, max_attempts: i32, steps: Vec<Step>) {
    let queue = format!("q{case}");
    let job = NewJob {
        queue: queue.clone(),
        max_attempts,
        ..NewJob::new("model", "{}")
    };
    let id = db.client.insert(&[job]).await.unwrap()[0].id;
    let mut model = Model {
        state: JobState::Available,
        attempt: 0,
        max_attempts,
        errors: 0,
    };
    let past = Utc::now() - chrono::Duration::seconds(1);

    for step in steps {
        if model.state.is_final() {
            let claimed = Sqlite::job_claim(&db.pool, &queue, 10, "w").await.unwrap();
            assert!(
                claimed.is_empty(),
                "a {} job was claimed again",
                model.state
            );
            continue;
        }
        if matches!(model.state, JobState::Scheduled | JobState::Retryable) {
            Sqlite::job_promote(&db.pool, 100).await.unwrap();
        }
        let claimed = Sqlite::job_claim(&db.pool, &queue, 10, "w").await.unwrap();
        assert_eq!(claimed.len(), 1, "a {} job must be claimable", model.state);
        model.attempt += 1;
        assert_eq!(
            claimed[0].attempt, model.attempt,
            "every claim counts one attempt"
        );
        let key = Attempt {
            id,
            attempt: model.attempt,
        };

        let error = || "e".to_owned();
        let outcome = match step {
            Step::Complete => None,
            Step::Retry => Some(Outcome::Retry {
                error: error(),
                at: past,
            }),
            Step::Discard => Some(Outcome::Discard { error: error() }),
            Step::Cancel => Some(Outcome::Cancel { reason: error() }),
            Step::Snooze => Some(Outcome::Snooze { at: past }),
            Step::Requeue => Some(Outcome::Requeue { reason: error() }),
        };
        match &outcome {
            None => {
                assert_eq!(
                    Sqlite::job_complete_many(&db.pool, &[key], false)
                        .await
                        .unwrap(),
                    1
                );
                model.state = JobState::Completed;
            }
            Some(outcome) => {
                assert!(Sqlite::job_record_outcome(&db.pool, key, outcome)
                    .await
                    .unwrap());
                let change = outcome.change();
                // Retries and snoozes here are already due: available at once.
                model.state = match change.state {
                    JobState::Retryable | JobState::Scheduled => JobState::Available,
                    state => state,
                };
                model.max_attempts += change.extra_attempts;
                model.errors += usize::from(change.error.is_some());
            }
        }
        // The attempt has ended: a second write for it must change nothing.
        let stale = Outcome::Discard {
            error: "stale".into(),
        };
        assert!(!Sqlite::job_record_outcome(&db.pool, key, &stale)
            .await
            .unwrap());
        assert_eq!(
            Sqlite::job_complete_many(&db.pool, &[key], false)
                .await
                .unwrap(),
            0
        );

        let row = db.client.job(id).await.unwrap().unwrap();
        assert_eq!(row.state, model.state, "{model:?}");
        assert_eq!(row.attempt, model.attempt, "{model:?}");
        assert_eq!(row.max_attempts, model.max_attempts, "{model:?}");
        assert_eq!(row.errors.len(), model.errors, "{model:?}");
        assert_eq!(
            row.finalized_at.is_some(),
            model.state.is_final(),
            "{model:?}"
        );
    }
}

#[test]
fn state_machine_holds_for_any_sequence_of_attempt_outcomes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::<Sqlite>::create());
    let mut runner = TestRunner::new(Config {
        cases: 96,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(
        &(1i32..6, proptest::collection::vec(step(), 1..10)),
        |(max_attempts, steps)| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime.block_on(run_steps(&db, case, max_attempts, steps));
            Ok(())
        },
    );
    runtime.block_on(db.drop_database());
    result.unwrap();
}
