-- Projects, keys and the multi-project ledger (bursora-server on Postgres).
-- Text columns that take part in lock ordering are COLLATE "C": byte order, the same order the
-- server sorts counters in before it inserts and locks them, so every transaction takes its
-- row locks in one global order.

CREATE TABLE projects (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE api_keys (
    hash          TEXT PRIMARY KEY,          -- hex SHA-256 of the key; the key itself is never stored
    id            TEXT NOT NULL UNIQUE,
    project_id    TEXT REFERENCES projects (id) ON DELETE CASCADE,  -- NULL: admin key
    name          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE budgets (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    match_json    TEXT NOT NULL,
    limit_nanos   BIGINT NOT NULL CHECK (limit_nanos >= 0),
    window_kind   TEXT NOT NULL,
    mode          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

-- One row per budget, template key and window. Rows of removed budgets stay, like in SQLite:
-- reservations taken from them still settle into them.
CREATE TABLE counters (
    budget_id       TEXT COLLATE "C" NOT NULL,
    key             TEXT COLLATE "C" NOT NULL,
    window_start_ms BIGINT NOT NULL,
    spent           BIGINT NOT NULL DEFAULT 0 CHECK (spent >= 0),
    reserved        BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    overrun         BIGINT NOT NULL DEFAULT 0 CHECK (overrun >= 0),
    PRIMARY KEY (budget_id, key, window_start_ms)
);

CREATE TABLE reservations (
    id            TEXT COLLATE "C" PRIMARY KEY,
    project_id    TEXT NOT NULL,
    amount        BIGINT NOT NULL CHECK (amount >= 0),
    state         TEXT NOT NULL,             -- active | settled | released | expired
    actual        BIGINT,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    ended_at_ms   BIGINT,
    counters      TEXT NOT NULL              -- JSON [[budget_id, key, window_start_ms], ...]
);

CREATE INDEX reservations_due ON reservations (expires_at_ms) WHERE state = 'active';
CREATE INDEX reservations_ended ON reservations (ended_at_ms) WHERE state <> 'active';
