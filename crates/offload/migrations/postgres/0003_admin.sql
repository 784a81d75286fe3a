-- Job lists filtered by queue (and state), newest first, paged by id; and
-- the per-queue, per-state counts of the dashboard (an index-only scan).
CREATE INDEX offload_jobs_queue_state_id ON offload_jobs (queue, state, id);
