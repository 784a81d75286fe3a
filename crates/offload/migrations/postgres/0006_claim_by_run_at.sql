-- The claim takes available jobs by (priority, run_at, id): among jobs of
-- one priority, the one due longest runs first. Ids follow enqueue time,
-- not due time: a job enqueued with a delay, or retried, can have a lower id
-- than jobs that came due before it. The index keeps the claim's order, so
-- the claim reads only the first rows of its queue and priority. Building
-- it reads the whole table once and holds off writes to it meanwhile (the
-- migration runs in a transaction, so it cannot be built CONCURRENTLY).
DROP INDEX offload_jobs_claim;
CREATE INDEX offload_jobs_claim ON offload_jobs (queue, priority, run_at, id) WHERE state = 'available';
