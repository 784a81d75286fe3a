//! The enqueue family, one named scenario per behaviour, each on real
//! PostgreSQL and real SQLite: unique options and duplicates through every
//! member, options on every row of a batch, order in mixed batches, and
//! queue names refused before anything is inserted.

#[macro_use]
mod support;

use std::time::Duration;

use offload::{
    EnqueueOptions, Enqueued, Job, JobContext, JobError, JobState, NewJob, UniqueOptions,
};
use serde::{Deserialize, Serialize};
use support::{TestDatabase, TestDb};

on_both_backends!(
    plain_enqueues_are_never_duplicates,
    unique_options_report_duplicates_through_every_single_enqueue,
    unique_options_report_duplicates_through_every_many_enqueue,
    enqueue_many_with_applies_the_options_to_every_row,
    a_rolled_back_enqueue_many_tx_with_leaves_nothing,
    insert_keeps_input_order_in_a_mixed_batch,
    enqueue_many_of_nothing_inserts_nothing,
    invalid_queue_names_are_refused_by_every_enqueue_and_insert_nothing,
    a_128_character_queue_name_is_accepted,
    partition_keys_come_from_the_kind_or_the_enqueue_and_are_checked,
);

#[derive(Serialize, Deserialize)]
struct Reindex {
    shop_id: i64,
}

impl<DB: TestDb> Job<DB> for Reindex {
    const KIND: &'static str = "reindex";

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        Ok(())
    }
}

/// Partitioned by shop, from its args.
#[derive(Serialize, Deserialize)]
struct ShopExport {
    shop_id: i64,
}

impl<DB: TestDb> Job<DB> for ShopExport {
    const KIND: &'static str = "shop_export";

    fn partition_key(&self) -> Option<String> {
        Some(format!("shop-{}", self.shop_id))
    }

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        Ok(())
    }
}

async fn partition_keys_come_from_the_kind_or_the_enqueue_and_are_checked<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let key_of =
        |id: i64| async move { db.client.job(id).await.unwrap().expect("job").partition_key };
    let from_args = db.client.enqueue(ShopExport { shop_id: 7 }).await.unwrap();
    assert_eq!(key_of(from_args.id).await, "shop-7");
    let overridden = db
        .client
        .enqueue_with(
            ShopExport { shop_id: 7 },
            EnqueueOptions::new().partition_key("tenant-1"),
        )
        .await
        .unwrap();
    assert_eq!(key_of(overridden.id).await, "tenant-1");
    let many = db
        .client
        .enqueue_many(vec![ShopExport { shop_id: 1 }, ShopExport { shop_id: 2 }])
        .await
        .unwrap();
    assert_eq!(key_of(many[1].id).await, "shop-2");
    let keyless = db.client.enqueue(Reindex { shop_id: 1 }).await.unwrap();
    assert_eq!(key_of(keyless.id).await, "");

    let too_long =
        EnqueueOptions::new().partition_key("k".repeat(offload::MAX_PARTITION_KEY_LEN + 1));
    let refused = db
        .client
        .enqueue_with(Reindex { shop_id: 1 }, too_long)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("partition key"), "{refused}");
    let nul = EnqueueOptions::new().partition_key("a\0b");
    let refused = db
        .client
        .enqueue_with(Reindex { shop_id: 1 }, nul)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("NUL"), "{refused}");
    let longest = EnqueueOptions::new().partition_key("k".repeat(offload::MAX_PARTITION_KEY_LEN));
    assert!(db
        .client
        .enqueue_with(Reindex { shop_id: 1 }, longest)
        .await
        .is_ok());
}

fn unique() -> EnqueueOptions {
    EnqueueOptions::new().unique(UniqueOptions::by_args())
}

fn shops(ids: &[i64]) -> Vec<Reindex> {
    ids.iter().map(|&shop_id| Reindex { shop_id }).collect()
}

/// Jobs in the table, whatever their state.
async fn jobs<DB: TestDb>(db: &TestDatabase<DB>) -> i64 {
    let counts = db.client.count_by_state(None).await.expect("counts");
    counts.into_iter().map(|(_, n)| n).sum()
}

fn duplicate_of(first: Enqueued) -> Enqueued {
    Enqueued {
        id: first.id,
        duplicate: true,
        replaced: false,
    }
}

async fn plain_enqueues_are_never_duplicates<DB: TestDb>(db: &TestDatabase<DB>) {
    let first = db.client.enqueue(Reindex { shop_id: 1 }).await.unwrap();
    let second = db.client.enqueue(Reindex { shop_id: 1 }).await.unwrap();
    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    let third = db
        .client
        .enqueue_tx(&mut tx, Reindex { shop_id: 1 })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!first.duplicate && !second.duplicate && !third.duplicate);
    assert!(first.id < second.id && second.id < third.id);
    assert_eq!(jobs(db).await, 3);
}

async fn unique_options_report_duplicates_through_every_single_enqueue<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let first = db
        .client
        .enqueue_with(Reindex { shop_id: 7 }, unique())
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = db
        .client
        .enqueue_with(Reindex { shop_id: 7 }, unique())
        .await
        .unwrap();
    assert_eq!(again, duplicate_of(first));

    // In a transaction: a committed holder, then one of its own.
    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    let in_tx = db
        .client
        .enqueue_tx_with(&mut tx, Reindex { shop_id: 7 }, unique())
        .await
        .unwrap();
    assert_eq!(in_tx, duplicate_of(first));
    let own = db
        .client
        .enqueue_tx_with(&mut tx, Reindex { shop_id: 8 }, unique())
        .await
        .unwrap();
    let own_again = db
        .client
        .enqueue_tx_with(&mut tx, Reindex { shop_id: 8 }, unique())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!own.duplicate);
    assert_eq!(own_again, duplicate_of(own));
    assert_eq!(jobs(db).await, 2);
}

async fn unique_options_report_duplicates_through_every_many_enqueue<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let first = db
        .client
        .enqueue_many_with(shops(&[7, 8, 7]), unique())
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    assert!(!first[0].duplicate && !first[1].duplicate);
    assert!(first[0].id < first[1].id);
    assert_eq!(first[2], duplicate_of(first[0]));

    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    let in_tx = db
        .client
        .enqueue_many_tx_with(&mut tx, shops(&[8, 9, 9]), unique())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(in_tx[0], duplicate_of(first[1]));
    assert!(!in_tx[1].duplicate);
    assert_eq!(in_tx[2], duplicate_of(in_tx[1]));

    // Prepared rows report theirs too.
    let row = db
        .client
        .new_job(&Reindex { shop_id: 9 }, unique())
        .unwrap();
    let inserted = db.client.insert(std::slice::from_ref(&row)).await.unwrap();
    assert_eq!(inserted, vec![duplicate_of(in_tx[1])]);
    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    let inserted = db.client.insert_tx(&mut tx, &[row]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(inserted, vec![duplicate_of(in_tx[1])]);
    assert_eq!(jobs(db).await, 3);
}

async fn enqueue_many_with_applies_the_options_to_every_row<DB: TestDb>(db: &TestDatabase<DB>) {
    let options = EnqueueOptions::new()
        .queue("reports")
        .priority(-3)
        .max_attempts(4)
        .delay(Duration::from_secs(3600))
        .tag("nightly")
        .tag("eu");
    let on_pool = db
        .client
        .enqueue_many_with(shops(&[1, 2, 3]), options.clone())
        .await
        .unwrap();
    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    let in_tx = db
        .client
        .enqueue_many_tx_with(&mut tx, shops(&[4, 5]), options)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let soon = chrono::Utc::now() + chrono::Duration::minutes(59);
    for (enqueued, shop_id) in on_pool.iter().chain(&in_tx).zip(1..) {
        assert!(!enqueued.duplicate);
        let job = db.client.job(enqueued.id).await.unwrap().unwrap();
        assert_eq!(job.args, serde_json::json!({ "shop_id": shop_id }));
        assert_eq!(job.queue, "reports");
        assert_eq!(job.priority, -3);
        assert_eq!(job.max_attempts, 4);
        assert_eq!(job.tags, ["nightly", "eu"]);
        assert_eq!(job.state, JobState::Scheduled);
        assert!(job.run_at > soon, "delayed: {}", job.run_at);
    }
}

async fn a_rolled_back_enqueue_many_tx_with_leaves_nothing<DB: TestDb>(db: &TestDatabase<DB>) {
    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    let enqueued = db
        .client
        .enqueue_many_tx_with(&mut tx, shops(&[1, 2, 1]), unique())
        .await
        .unwrap();
    assert_eq!(enqueued[2], duplicate_of(enqueued[0]));
    tx.rollback().await.unwrap();
    assert_eq!(jobs(db).await, 0);
    // The keys went with the rollback.
    let again = db
        .client
        .enqueue_many_with(shops(&[1, 2]), unique())
        .await
        .unwrap();
    assert!(again.iter().all(|job| !job.duplicate));
}

async fn insert_keeps_input_order_in_a_mixed_batch<DB: TestDb>(db: &TestDatabase<DB>) {
    let plain = |n| {
        db.client
            .new_job(&Reindex { shop_id: n }, EnqueueOptions::new())
    };
    let keyed = |n| db.client.new_job(&Reindex { shop_id: n }, unique());
    let rows = [
        plain(1).unwrap(),
        keyed(2).unwrap(),
        plain(3).unwrap(),
        plain(4).unwrap(),
        keyed(2).unwrap(),
        NewJob::new("some_other_kind", "{}"),
    ];
    let enqueued = db.client.insert(&rows).await.unwrap();
    assert_eq!(enqueued.len(), rows.len());
    assert_eq!(enqueued[4], duplicate_of(enqueued[1]));
    let inserted: Vec<i64> = [0, 1, 2, 3, 5].iter().map(|&i| enqueued[i].id).collect();
    assert!(
        inserted.windows(2).all(|w| w[0] < w[1]),
        "inserted in input order: {enqueued:?}"
    );
    for (i, row) in rows.iter().enumerate().filter(|(i, _)| *i != 4) {
        let job = db.client.job(enqueued[i].id).await.unwrap().unwrap();
        assert_eq!(job.kind, row.kind);
        assert_eq!(job.args.to_string(), row.args);
    }
    assert_eq!(jobs(db).await, 5);
}

async fn enqueue_many_of_nothing_inserts_nothing<DB: TestDb>(db: &TestDatabase<DB>) {
    let none = db.client.enqueue_many(shops(&[])).await.unwrap();
    assert!(none.is_empty());
    let none = db.client.insert(&[]).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(jobs(db).await, 0);
}

/// Each bad name, and what its error says.
fn bad_queue_names() -> Vec<(String, String)> {
    let rule = "a queue name is 1 to 128 characters of a-z, 0-9, `_` and `-`, \
                starting with a letter or digit";
    let long = "q".repeat(300);
    vec![
        (
            String::new(),
            format!("invalid queue name \"\": it is empty; {rule}"),
        ),
        (
            "has space".to_owned(),
            format!("invalid queue name \"has space\": it contains ' '; {rule}"),
        ),
        (
            long.clone(),
            format!(
                "invalid queue name \"{}…\": it is 300 characters long; {rule}",
                &long[..40]
            ),
        ),
        (
            "Mail".to_owned(),
            format!("invalid queue name \"Mail\": it contains 'M'; {rule}"),
        ),
        (
            "-mail".to_owned(),
            format!("invalid queue name \"-mail\": it starts with '-'; {rule}"),
        ),
    ]
}

fn assert_refused<T: std::fmt::Debug>(result: offload::Result<T>, expected: &str) {
    match result {
        Err(error @ offload::Error::InvalidQueueName(_)) => {
            assert_eq!(error.to_string(), expected);
        }
        other => panic!("expected an invalid queue name error, got {other:?}"),
    }
}

async fn invalid_queue_names_are_refused_by_every_enqueue_and_insert_nothing<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    for (name, expected) in bad_queue_names() {
        let options = || EnqueueOptions::new().queue(name.clone());
        let job = || Reindex { shop_id: 1 };
        assert_refused(db.client.enqueue_with(job(), options()).await, &expected);
        assert_refused(
            db.client
                .enqueue_with(job(), options().unique(UniqueOptions::by_args()))
                .await,
            &expected,
        );
        assert_refused(
            db.client.enqueue_many_with(shops(&[1, 2]), options()).await,
            &expected,
        );
        assert_refused(db.client.new_job(&job(), options()), &expected);

        let mut tx = DB::begin_write(&db.pool).await.unwrap();
        assert_refused(
            db.client.enqueue_tx_with(&mut tx, job(), options()).await,
            &expected,
        );
        assert_refused(
            db.client
                .enqueue_many_tx_with(&mut tx, shops(&[1]), options())
                .await,
            &expected,
        );
        // A good row before a bad one: the batch fails as a whole.
        let good = db.client.new_job(&job(), EnqueueOptions::new()).unwrap();
        let mut bad = NewJob::new("reindex", "{}");
        bad.queue = name.clone();
        assert_refused(
            db.client
                .insert_tx(&mut tx, &[good.clone(), bad.clone()])
                .await,
            &expected,
        );
        tx.commit().await.unwrap();
        assert_refused(db.client.insert(&[good, bad]).await, &expected);

        assert_refused(db.client.set_global_limit(&name, Some(2)).await, &expected);
    }
    assert_eq!(jobs(db).await, 0, "nothing was inserted");
}

async fn a_128_character_queue_name_is_accepted<DB: TestDb>(db: &TestDatabase<DB>) {
    let longest = format!("a-{}_9", "z".repeat(124));
    assert_eq!(longest.len(), offload::MAX_QUEUE_NAME_LEN);
    let options = EnqueueOptions::new().queue(longest.clone());
    let enqueued = db
        .client
        .enqueue_with(Reindex { shop_id: 1 }, options)
        .await
        .unwrap();
    let job = db.client.job(enqueued.id).await.unwrap().unwrap();
    assert_eq!(job.queue, longest);
    let too_long = EnqueueOptions::new().queue(format!("{longest}x"));
    let refused = db
        .client
        .enqueue_with(Reindex { shop_id: 1 }, too_long)
        .await;
    assert!(refused.is_err());
    assert_eq!(jobs(db).await, 1);
}
