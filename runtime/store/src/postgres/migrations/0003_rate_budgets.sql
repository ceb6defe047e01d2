-- Sluice store schema, version 3: rate-limit budgets shared by the nodes of a cluster.

-- One row per rate-limit key (connector, credential, endpoint): the instant (Unix ms,
-- by the database's clock) until which the API asked every node to pause. A change
-- of a key's holdings locks this row first, so the changes of one key are made one
-- after the other and each sees the holdings the ones before it left.
CREATE TABLE rate_keys (
    connector       text COLLATE "C" NOT NULL,
    credential      text COLLATE "C" NOT NULL,
    endpoint        text COLLATE "C" NOT NULL,
    paused_until_ms int8 NOT NULL DEFAULT 0,
    PRIMARY KEY (connector, credential, endpoint)
);

-- What each node (`holder`: one store client) holds of a key's declared window:
-- `slots` requests, until `until_ms` (Unix ms, by the database's clock) unless it
-- renews them; `wanting` when requests wait on it for want of slots. Rows past
-- their `until_ms` count for nothing and are deleted now and then.
CREATE TABLE rate_holds (
    connector  text COLLATE "C" NOT NULL,
    credential text COLLATE "C" NOT NULL,
    endpoint   text COLLATE "C" NOT NULL,
    holder     uuid NOT NULL,
    slots      int4 NOT NULL,
    wanting    bool NOT NULL,
    until_ms   int8 NOT NULL,
    PRIMARY KEY (connector, credential, endpoint, holder)
);
