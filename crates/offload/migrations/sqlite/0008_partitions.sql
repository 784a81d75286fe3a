-- A job's partition key (empty: none). A partitioned queue runs at most
-- partition_limit jobs of one key at once over all workers, and serves its
-- keys in turn from partition_cursor, the last key a claim served.
ALTER TABLE offload_jobs ADD COLUMN partition_key TEXT NOT NULL DEFAULT '';
ALTER TABLE offload_queues ADD COLUMN partitioned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE offload_queues ADD COLUMN partition_limit INTEGER CHECK (partition_limit > 0);
ALTER TABLE offload_queues ADD COLUMN partition_cursor TEXT NOT NULL DEFAULT '';

-- The claim of a partitioned queue walks its keys in order and takes each
-- key's first jobs in the queue's claim order.
CREATE INDEX offload_jobs_partition_claim ON offload_jobs (queue, partition_key, priority, run_at, id)
    WHERE state = 'available';

-- A claim records its starts in one row (their count in `starts`), not a
-- row per start: a window's starts are the sum over its rows.
ALTER TABLE offload_rate_starts ADD COLUMN starts INTEGER NOT NULL DEFAULT 1;

-- A partitioned claim counts each key's running jobs: the key second in
-- the running index makes that a probe (same entries; no statement looks
-- running jobs up by queue and worker together).
DROP INDEX offload_jobs_running;
CREATE INDEX offload_jobs_running ON offload_jobs (queue, partition_key, worker_id) WHERE state = 'running';
