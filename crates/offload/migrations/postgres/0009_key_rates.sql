-- At most partition_rate_limit starts of one key of a partitioned queue in
-- any partition_rate_period_ms, over all workers; NULL means no limit.
ALTER TABLE offload_queues
    ADD COLUMN partition_rate_limit     integer CHECK (partition_rate_limit > 0),
    ADD COLUMN partition_rate_period_ms bigint  CHECK (partition_rate_period_ms > 0);

-- A claim's starts of one key, in one row (their count in `starts`), kept
-- a period and a minute: a key's window is the sum over its rows.
CREATE TABLE offload_key_starts (
    queue         text        NOT NULL,
    partition_key text        NOT NULL,
    started_at    timestamptz NOT NULL,
    starts        integer     NOT NULL
);
CREATE INDEX offload_key_starts_window ON offload_key_starts (queue, partition_key, started_at);
CREATE INDEX offload_key_starts_age ON offload_key_starts (queue, started_at);
