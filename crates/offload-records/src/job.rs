//! The processing job: CPU work on the blocking pool, a stand-in for slow
//! I/O, then the record's update in the job's own transaction.

use std::time::Duration;

use offload::{Job, JobContext, JobError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::RecordStore;

/// The queue record jobs run on.
pub const RECORDS_QUEUE: &str = "records";

/// Processes one record. Its tuning travels in its args, so a job runs the
/// way it was enqueued even if the service restarts with other flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// The record to process.
    pub record_id: i64,
    /// SHA-256 rounds over the payload.
    pub hash_rounds: u32,
    /// Simulated mail or webhook call, in milliseconds.
    pub delay_ms: u64,
}

impl<DB: RecordStore> Job<DB> for ProcessRecord {
    const KIND: &'static str = "process_record";
    const QUEUE: &'static str = RECORDS_QUEUE;
    const MAX_ATTEMPTS: i32 = 10;
    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let Some(payload) = DB::record_payload(ctx.pool(), self.record_id).await? else {
            return Err(JobError::discard(format!(
                "record {} does not exist",
                self.record_id
            )));
        };
        let rounds = self.hash_rounds;
        let digest = ctx
            .blocking(move || iterated_sha256(&payload, rounds))
            .await?;
        // The slow call happens before the transaction opens, so no
        // connection is pinned while it waits.
        ctx.sleep(Duration::from_millis(self.delay_ms)).await?;
        let finished = DB::finish_record(ctx.tx().await?, self.record_id, &digest).await?;
        if !finished {
            // Already done: nothing to write, and nothing to retry.
            tracing::warn!(record_id = self.record_id, "record was not pending");
        }
        Ok(())
    }
}

/// Hex SHA-256 of `payload`, then of each digest in turn: `rounds` hashes
/// in all (at least one).
///
/// ```
/// let once = offload_records::job::iterated_sha256("abc", 1);
/// assert_eq!(once, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
/// assert_ne!(offload_records::job::iterated_sha256("abc", 2), once);
/// ```
pub fn iterated_sha256(payload: &str, rounds: u32) -> String {
    let mut digest = Sha256::digest(payload.as_bytes());
    for _ in 1..rounds {
        digest = Sha256::digest(digest);
    }
    format!("{digest:x}")
}
