-- At most partition_rate_limit starts of one key of a partitioned queue in
-- any partition_rate_period_ms, over all workers; NULL means no limit.
ALTER TABLE offload_queues ADD COLUMN partition_rate_limit INTEGER CHECK (partition_rate_limit > 0);
ALTER TABLE offload_queues ADD COLUMN partition_rate_period_ms INTEGER CHECK (partition_rate_period_ms > 0);

-- A claim's starts of one key (microseconds since the epoch), in one row
-- (their count in `starts`), kept a period and a minute: a key's window is
-- the sum over its rows.
CREATE TABLE offload_key_starts (
    queue         TEXT    NOT NULL,
    partition_key TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    starts        INTEGER NOT NULL
);
CREATE INDEX offload_key_starts_window ON offload_key_starts (queue, partition_key, started_at);
CREATE INDEX offload_key_starts_age ON offload_key_starts (queue, started_at);
