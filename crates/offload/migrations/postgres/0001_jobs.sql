CREATE TABLE offload_jobs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text        NOT NULL,
    queue        text        NOT NULL,
    args         jsonb       NOT NULL,
    state        text        NOT NULL CHECK (state IN ('scheduled', 'available', 'running', 'retryable', 'completed', 'discarded', 'cancelled')),
    priority     smallint    NOT NULL DEFAULT 0,
    attempt      integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL CHECK (max_attempts > 0),
    errors       jsonb       NOT NULL DEFAULT '[]',
    tags         jsonb       NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempted_at timestamptz,
    finalized_at timestamptz,
    worker_id    text
);

-- The claim query reads only this index: available jobs of a queue in run order.
CREATE INDEX offload_jobs_claim ON offload_jobs (queue, priority, id) WHERE state = 'available';
CREATE INDEX offload_jobs_due ON offload_jobs (run_at) WHERE state IN ('scheduled', 'retryable');
CREATE INDEX offload_jobs_running ON offload_jobs (worker_id) WHERE state = 'running';
CREATE INDEX offload_jobs_finalized ON offload_jobs (state, finalized_at) WHERE state IN ('completed', 'discarded', 'cancelled');
-- Lists of finished jobs, newest first. Partial, like every index here but
-- the primary key, so that a state change writes only the indexes of the
-- state it enters.
CREATE INDEX offload_jobs_final_id ON offload_jobs (state, id) WHERE state IN ('completed', 'discarded', 'cancelled');

CREATE TABLE offload_workers (
    id           text        PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    queues       text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
