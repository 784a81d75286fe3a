//! Group commit for new records: concurrent `POST /records` requests are
//! written together, each record with its job, in one transaction.
//!
//! Every record and its processing job still commit together or not at
//! all, and a request is answered 201 only after that commit. What changes
//! is that one transaction carries the records of all requests that arrived
//! while the previous one was committing, so the database does a few
//! statements per batch instead of five per request. On SQLite, which
//! admits one writer at a time, this also stops requests queueing on the
//! write lock.

use offload::{Client, EnqueueOptions};
use offload_axum::Problem;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::api::{DatabaseError, JobSettings};
use crate::job::ProcessRecord;
use crate::store::{NewRecord, Record, RecordStore};

/// Most records written in one transaction.
pub const MAX_BATCH: usize = 256;
/// Most payload bytes written in one transaction (a batch always takes at
/// least one record).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Requests waiting for the writer before new ones wait to be queued.
const QUEUE: usize = 4 * MAX_BATCH;

struct Pending {
    record: NewRecord,
    reply: oneshot::Sender<Result<Record, Problem>>,
}

/// Hands new records to the writer task. Cheap to clone; the writer stops
/// once every clone is dropped and the last batch is written.
pub struct Intake {
    queue: mpsc::Sender<Pending>,
}

impl Clone for Intake {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl Intake {
    /// Starts `writers` writer tasks (at least one) for `client`'s
    /// database. SQLite admits one writer at a time, so one is best there;
    /// PostgreSQL overlaps several transactions' commits.
    pub fn start<DB: RecordStore>(client: Client<DB>, jobs: JobSettings, writers: usize) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        let pending = Arc::new(Mutex::new(pending));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_batches(client.clone(), jobs, pending.clone()));
        }
        Self { queue }
    }

    /// Writes `record` and its job; returns it once committed.
    pub async fn submit(&self, record: NewRecord) -> Result<Record, Problem> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { record, reply })
            .await
            .map_err(|_| Problem::unavailable())?;
        answer.await.unwrap_or_else(|_| Err(Problem::unavailable()))
    }
}

async fn write_batches<DB: RecordStore>(
    client: Client<DB>,
    jobs: JobSettings,
    pending: Arc<Mutex<mpsc::Receiver<Pending>>>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            // One writer gathers at a time; the others are writing.
            let mut pending = pending.lock().await;
            let Some(first) = pending.recv().await else {
                return;
            };
            let mut bytes = first.record.payload.len();
            batch.push(first);
            // Whatever arrived while the last batch committed joins this one.
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match pending.try_recv() {
                    Ok(next) => {
                        bytes += next.record.payload.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
        }
        let records: Vec<NewRecord> = batch.iter().map(|p| p.record.clone()).collect();
        match write_batch(&client, jobs, &records).await {
            Ok(written) => {
                for (waiter, record) in batch.drain(..).zip(written) {
                    let _ = waiter.reply.send(Ok(record));
                }
            }
            Err(error) => {
                let problem = crate::api::database_problem(error);
                for waiter in batch.drain(..) {
                    let _ = waiter.reply.send(Err(problem.clone()));
                }
            }
        }
    }
}

/// One transaction: the records, their jobs, and the links between them.
async fn write_batch<DB: RecordStore>(
    client: &Client<DB>,
    jobs: JobSettings,
    records: &[NewRecord],
) -> Result<Vec<Record>, DatabaseError> {
    let mut tx = DB::begin_write(client.pool()).await?;
    let mut written = DB::insert_records(&mut tx, records).await?;
    if written.len() != records.len() {
        return Err(DatabaseError::RecordCountMismatch {
            inserted: written.len(),
            requested: records.len(),
        });
    }
    let job_rows = written
        .iter()
        .map(|record| {
            client.new_job(
                &ProcessRecord {
                    record_id: record.id,
                    hash_rounds: jobs.hash_rounds,
                    delay_ms: jobs.delay_ms,
                },
                EnqueueOptions::default(),
            )
        })
        .collect::<Result<Vec<_>, offload::Error>>()?;
    let enqueued = client.insert_tx(&mut tx, &job_rows).await?;
    let links: Vec<(i64, i64)> = written
        .iter()
        .zip(&enqueued)
        .map(|(record, job)| (record.id, job.id))
        .collect();
    DB::attach_jobs(&mut tx, &links).await?;
    tx.commit().await?;
    for (record, job) in written.iter_mut().zip(enqueued) {
        record.job_id = Some(job.id);
    }
    Ok(written)
}
