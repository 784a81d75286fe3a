-- Times are microseconds since the Unix epoch.
CREATE TABLE offload_jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    args         TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('scheduled', 'available', 'running', 'retryable', 'completed', 'discarded', 'cancelled')),
    priority     INTEGER NOT NULL DEFAULT 0,
    attempt      INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL CHECK (max_attempts > 0),
    errors       TEXT    NOT NULL DEFAULT '[]',
    tags         TEXT    NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    run_at       INTEGER NOT NULL,
    attempted_at INTEGER,
    finalized_at INTEGER,
    worker_id    TEXT
);

CREATE INDEX offload_jobs_claim ON offload_jobs (queue, priority, id) WHERE state = 'available';
CREATE INDEX offload_jobs_due ON offload_jobs (run_at) WHERE state IN ('scheduled', 'retryable');
CREATE INDEX offload_jobs_running ON offload_jobs (worker_id) WHERE state = 'running';
CREATE INDEX offload_jobs_finalized ON offload_jobs (state, finalized_at) WHERE state IN ('completed', 'discarded', 'cancelled');
-- Lists of finished jobs, newest first. Partial, like every index here but
-- the primary key, so that a state change writes only the indexes of the
-- state it enters.
CREATE INDEX offload_jobs_final_id ON offload_jobs (state, id) WHERE state IN ('completed', 'discarded', 'cancelled');

CREATE TABLE offload_workers (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    queues       TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
