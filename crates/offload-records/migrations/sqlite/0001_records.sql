-- Times are microseconds since the Unix epoch, as in offload's own tables.
CREATE TABLE records (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
    result       TEXT,
    job_id       INTEGER,
    created_at   INTEGER NOT NULL,
    processed_at INTEGER
);

CREATE INDEX records_status_id ON records (status, id);
