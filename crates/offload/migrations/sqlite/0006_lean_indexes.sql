-- A state change rewrites the row and every index entry whose predicate
-- the old or new row meets. Every index here but the primary key is partial
-- on the states it serves, so claiming a job writes three index entries
-- (claim out, running in, queue_state out) and completing it four (running
-- out, finalized, final_id and queue_state in), instead of five and six.
DROP INDEX offload_jobs_queue_state_id;
DROP INDEX offload_jobs_running;
DROP INDEX offload_jobs_running_queue;
-- Running jobs: per-queue counts for the global limit and the dashboard,
-- lists of running jobs, and the rescuer.
CREATE INDEX offload_jobs_running ON offload_jobs (queue, worker_id) WHERE state = 'running';
-- Job lists filtered by queue and state, newest first, and the per-queue,
-- per-state counts. Running jobs are left out: they are few (read through
-- offload_jobs_running), and a claim should not write here.
CREATE INDEX offload_jobs_queue_state ON offload_jobs (queue, state, id) WHERE state <> 'running';
