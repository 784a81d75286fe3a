-- Queue-wide switches, shared by every worker on the database.
CREATE TABLE offload_queues (
    name       text        PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
