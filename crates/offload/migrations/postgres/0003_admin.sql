-- Job lists filtered by queue, newest first, page by id (keyset).
CREATE INDEX offload_jobs_queue_id ON offload_jobs (queue, id);
