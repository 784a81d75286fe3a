-- One leader per name; a leader that stops renewing loses it at expires_at.
CREATE TABLE offload_leader (
    name       TEXT    PRIMARY KEY,
    leader_id  TEXT    NOT NULL,
    elected_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- The latest tick of each periodic job that was enqueued.
CREATE TABLE offload_periodic (
    name      TEXT    PRIMARY KEY,
    last_tick INTEGER NOT NULL
);

-- Unique jobs: unique_states is like ',scheduled,available,running,retryable,';
-- a key is taken only while its job is in one of its states.
ALTER TABLE offload_jobs ADD COLUMN unique_key TEXT;
ALTER TABLE offload_jobs ADD COLUMN unique_states TEXT;
CREATE UNIQUE INDEX offload_jobs_unique ON offload_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND instr(unique_states, ',' || state || ',') > 0;

-- Most jobs of a queue running at once over all workers; NULL means no limit.
ALTER TABLE offload_queues ADD COLUMN global_limit INTEGER CHECK (global_limit > 0);
CREATE INDEX offload_jobs_running_queue ON offload_jobs (queue) WHERE state = 'running';
