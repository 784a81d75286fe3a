-- A job's guarded completion, called in the same message as its COMMIT.
-- Raising when the row is no longer this attempt's makes the server skip
-- that COMMIT, so the job's transaction rolls back. A function, because
-- PL/pgSQL keeps the plans of its statements for the session: the same
-- statements sent as text are planned on every call, which cost more than
-- the round trip saved.
CREATE FUNCTION offload_complete(job_id bigint, job_attempt integer, remove boolean)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF remove THEN
        DELETE FROM offload_jobs
        WHERE id = job_id AND attempt = job_attempt AND state = 'running';
    ELSE
        UPDATE offload_jobs
        SET state = 'completed', finalized_at = now(), worker_id = NULL
        WHERE id = job_id AND attempt = job_attempt AND state = 'running';
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'offload: job % is no longer attempt %''s', job_id, job_attempt
            USING ERRCODE = 'OF001';
    END IF;
END
$$;
