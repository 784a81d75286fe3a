-- At most rate_limit job starts of a queue in any rate_period_ms, over all
-- workers; NULL means no limit.
ALTER TABLE offload_queues
    ADD COLUMN rate_limit     integer CHECK (rate_limit > 0),
    ADD COLUMN rate_period_ms bigint  CHECK (rate_period_ms > 0);

-- One row per start a rate limit counted, kept a period and a minute: a
-- claimer counts the rows of the window and adds its own in the claim's
-- transaction.
CREATE TABLE offload_rate_starts (
    queue      text        NOT NULL,
    started_at timestamptz NOT NULL
);
CREATE INDEX offload_rate_starts_window ON offload_rate_starts (queue, started_at);
