-- One leader per name; a leader that stops renewing loses it at expires_at.
CREATE TABLE offload_leader (
    name       text        PRIMARY KEY,
    leader_id  text        NOT NULL,
    elected_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- The latest tick of each periodic job that was enqueued.
CREATE TABLE offload_periodic (
    name      text        PRIMARY KEY,
    last_tick timestamptz NOT NULL
);

-- Unique jobs: unique_states is like ',scheduled,available,running,retryable,';
-- a key is taken only while its job is in one of its states.
ALTER TABLE offload_jobs ADD COLUMN unique_key text, ADD COLUMN unique_states text;
CREATE UNIQUE INDEX offload_jobs_unique ON offload_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND strpos(unique_states, ',' || state || ',') > 0;

-- Most jobs of a queue running at once over all workers; NULL means no limit.
ALTER TABLE offload_queues ADD COLUMN global_limit integer CHECK (global_limit > 0);
CREATE INDEX offload_jobs_running_queue ON offload_jobs (queue) WHERE state = 'running';
