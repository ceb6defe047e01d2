-- Sluice store schema, version 1: the run log, the catalog, the per-run logs and the hub.
-- Applied by the node at start (or by `sluice store migrate`), in one transaction.
-- Keys and names compare bytewise (COLLATE "C"): the same order on every server, the
-- embedded store's order, and a memcmp instead of a locale's collation in every index
-- probe (the hub's primary keys are probed once per record).

-- The run log. A run's summary, kept with its events in the same transaction.
CREATE TABLE runs (
    run_id        uuid PRIMARY KEY,
    workflow      text COLLATE "C"   NOT NULL,
    connection    text COLLATE "C"   NOT NULL,
    tenant        text COLLATE "C"   NOT NULL,
    priority      int4   NOT NULL,
    status        text COLLATE "C"   NOT NULL,
    created_at_ms int8   NOT NULL,
    updated_at_ms int8   NOT NULL,
    last_seq      int8   NOT NULL,
    in_flight     bool   NOT NULL
) WITH (fillfactor = 80);
-- Listing: newest first by creation time, or by one equality condition.
CREATE INDEX runs_by_created    ON runs (created_at_ms, run_id);
CREATE INDEX runs_by_workflow   ON runs (workflow, run_id);
CREATE INDEX runs_by_connection ON runs (connection, run_id);
CREATE INDEX runs_by_tenant     ON runs (tenant, run_id);
CREATE INDEX runs_by_status     ON runs (status, run_id);
CREATE INDEX runs_in_flight     ON runs (run_id) WHERE in_flight;

-- Every event of every run: a versioned protobuf message (sluice.log.v1.RunEvent).
CREATE TABLE run_events (
    run_id uuid  NOT NULL,
    seq    int8  NOT NULL,
    at_ms  int8  NOT NULL,
    event  bytea NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Groups of writes committed, so that a commit whose answer the network lost is
-- known to have landed or not. Old ones are swept.
CREATE TABLE commits (
    id uuid PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now()
);

-- Named definitions (connections, workflows, connectors, schedule progress, ...).
CREATE TABLE catalog (
    kind     text COLLATE "C"  NOT NULL,
    name     text COLLATE "C"  NOT NULL,
    document bytea NOT NULL,
    PRIMARY KEY (kind, name)
);

-- Connector log lines and HTTP requests per run (JSON), at most 2,000 per run.
CREATE TABLE run_logs (
    run_id uuid NOT NULL,
    n      int8 GENERATED ALWAYS AS IDENTITY,
    entry  text NOT NULL,
    PRIMARY KEY (run_id, n)
);

-- The hub. One row per (connection, stream): its next batch number (feed positions
-- are `batch << 24 | index + 1`), live records, incremental cursor, and the last
-- completed full refresh. Writers of a stream lock its row, so feed positions are
-- taken in commit order and a reader never skips a change a slower writer commits.
CREATE TABLE hub_streams (
    id                   int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection           text COLLATE "C" NOT NULL,
    stream               text COLLATE "C" NOT NULL,
    next_batch           int8 NOT NULL DEFAULT 1,
    live                 int8 NOT NULL DEFAULT 0,
    cursor               text,
    refreshed_generation int8 NOT NULL DEFAULT 0,
    refreshed_at_ms      int8 NOT NULL DEFAULT 0,
    UNIQUE (connection, stream)
) WITH (fillfactor = 50);

-- One row per committed batch: what applies to all its records, and for a full
-- refresh the primary key hashes it saw unchanged (16 bytes each), so an unchanged
-- record costs a comparison, not a write of its row.
CREATE TABLE hub_batches (
    stream_id     int8 NOT NULL,
    batch         int8 NOT NULL,
    generation    int8 NOT NULL,
    at_ms         int8 NOT NULL,
    source_cursor text,
    seen          bytea,
    PRIMARY KEY (stream_id, batch)
);
CREATE INDEX hub_batches_seen ON hub_batches (stream_id, generation) WHERE seen IS NOT NULL;

-- The change feed: every version of every record, append-only, in commit order.
CREATE TABLE hub_changes (
    stream_id int8 NOT NULL,
    position  int8 NOT NULL,
    kind      int2 NOT NULL,
    pk        text NOT NULL,
    version   int8 NOT NULL,
    data      text,
    PRIMARY KEY (stream_id, position)
);

-- The latest state of every record, without its data (which its latest change holds):
-- narrow rows, so classifying a batch reads little, and HOT updates (no indexed
-- column changes) keep room on their page.
CREATE TABLE hub_records (
    stream_id            int8 NOT NULL,
    pk                   text COLLATE "C" NOT NULL,
    version              int8 NOT NULL,
    content_hash         uuid NOT NULL,
    position             int8 NOT NULL,
    first_seen_ms        int8 NOT NULL,
    last_seen_ms         int8 NOT NULL,
    last_seen_generation int8 NOT NULL,
    deleted              bool NOT NULL,
    PRIMARY KEY (stream_id, pk)
) WITH (fillfactor = 85);
