-- A state change is never a HOT update (state is in index predicates), so
-- every index whose predicate the new row meets gets an entry. Claiming
-- now writes two index entries instead of four.
DROP INDEX offload_jobs_queue_state_id;
DROP INDEX offload_jobs_running;
DROP INDEX offload_jobs_running_queue;
-- Running jobs: per-queue counts for the global limit, and the rescuer.
CREATE INDEX offload_jobs_running ON offload_jobs (queue, worker_id) WHERE state = 'running';
-- Job lists filtered by queue and state, newest first. Running jobs are
-- left out: they are few, and a claim should not write here.
CREATE INDEX offload_jobs_queue_state ON offload_jobs (queue, state, id) WHERE state <> 'running';
