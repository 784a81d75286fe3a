//! The records job's args as the worker decodes them (`serde_json::from_str`
//! into the job type, as `offload::Registry` does), then the row the core
//! builds for it (`Client::new_job`): never panics, and decoded args
//! re-encode to the same job.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use offload::{Client, EnqueueOptions};
use offload_records::job::ProcessRecord;

/// `new_job` needs a client; it never touches the database, so a lazy pool
/// that never connects is enough.
fn client() -> &'static Client<sqlx::Sqlite> {
    static CLIENT: OnceLock<(tokio::runtime::Runtime, Client<sqlx::Sqlite>)> = OnceLock::new();
    &CLIENT
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let pool = runtime.block_on(async {
                sqlx::sqlite::SqlitePoolOptions::new()
                    .connect_lazy("sqlite://never-opened.db")
                    .expect("lazy pool")
            });
            (runtime, Client::new(pool))
        })
        .1
}

fuzz_target!(|args: &[u8]| {
    // Stored args are text; bytes that are not UTF-8 never reach a worker.
    let Ok(args) = std::str::from_utf8(args) else {
        return;
    };
    let Ok(job) = serde_json::from_str::<ProcessRecord>(args) else {
        return;
    };
    let row = client()
        .new_job(&job, EnqueueOptions::default())
        .expect("a decoded job always builds a row");
    assert_eq!(row.kind, "process_record");
    assert_eq!(row.queue, offload_records::job::RECORDS_QUEUE);
    let again: ProcessRecord = serde_json::from_str(&row.args).expect("own args decode");
    assert_eq!(
        (again.record_id, again.hash_rounds, again.delay_ms),
        (job.record_id, job.hash_rounds, job.delay_ms)
    );
});
