-- A job's partition key (empty: none). A partitioned queue runs at most
-- partition_limit jobs of one key at once over all workers, and serves its
-- keys in turn from partition_cursor, the last key a claim served.
ALTER TABLE offload_jobs ADD COLUMN partition_key text NOT NULL DEFAULT '';
ALTER TABLE offload_queues
    ADD COLUMN partitioned      boolean NOT NULL DEFAULT false,
    ADD COLUMN partition_limit  integer CHECK (partition_limit > 0),
    ADD COLUMN partition_cursor text    NOT NULL DEFAULT '';

-- The claim of a partitioned queue walks its keys in order and takes each
-- key's first jobs in the queue's claim order.
CREATE INDEX offload_jobs_partition_claim ON offload_jobs (queue, partition_key, priority, run_at, id)
    WHERE state = 'available';
