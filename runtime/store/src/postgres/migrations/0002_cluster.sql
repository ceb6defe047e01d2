-- Sluice store schema, version 2: several nodes on one store.

-- A run's current attempt and its holder's lease, kept with its summary, so that every
-- append checks its fencing token (the attempt) against the row it locks, and the
-- runs a node drives are one indexed read.
ALTER TABLE runs
    ADD COLUMN attempt        int4 NOT NULL DEFAULT 0,
    ADD COLUMN worker         text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN lease_until_ms int8 NOT NULL DEFAULT 0;

-- Runs holding their workflow (no other run of it may start), for the start check.
CREATE INDEX runs_holding ON runs (workflow) WHERE status IN ('running', 'retry_waiting');
-- Runs a node drives.
CREATE INDEX runs_by_worker ON runs (worker, run_id) WHERE status = 'running';

-- The latest schedule fire of each workflow that created a run. Every node handles a
-- schedule's fires in order, so a run for a fire at or before the latest is a second
-- decision about a fire already decided: refused in the transaction that would create
-- it. One row per workflow, however long the schedule runs.
CREATE TABLE fires (
    workflow   text COLLATE "C" PRIMARY KEY,
    fire_at_ms int8 NOT NULL,
    run_id     uuid NOT NULL
);
