-- Budget alerts (issue #5, part 3): webhooks, per-budget thresholds, and one row per alert.

CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    url           TEXT NOT NULL,             -- may hold a secret (Slack): never logged
    format        TEXT NOT NULL,             -- json | slack
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX webhooks_project ON webhooks (project_id, created_at_ms);

CREATE TABLE alert_rules (
    project_id    TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    budget_id     TEXT NOT NULL,
    thresholds    TEXT NOT NULL,             -- JSON [50, 80, 100]: percent of the limit
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (project_id, budget_id)
);

-- The unique constraint is the claim: one row, so one delivery, per threshold per window.
-- `key` is '' for plain budgets (NULLs would never conflict).
CREATE TABLE alerts (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    budget_id       TEXT NOT NULL,
    budget_name     TEXT NOT NULL,
    key             TEXT NOT NULL,
    window_kind     TEXT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    resets_at_ms    BIGINT,
    threshold_pct   INTEGER NOT NULL,
    limit_nanos     BIGINT NOT NULL,
    spent_nanos     BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    status          TEXT NOT NULL,           -- pending | delivered | failed | no_webhooks
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    delivered_at_ms BIGINT,
    delivered_to    TEXT NOT NULL DEFAULT '[]',  -- JSON ids of webhooks that took it
    next_attempt_ms BIGINT NOT NULL,
    lease_until_ms  BIGINT NOT NULL,         -- a replica delivering holds it until then
    UNIQUE (project_id, budget_id, key, window_start_ms, threshold_pct)
);
CREATE INDEX alerts_recent ON alerts (project_id, created_at_ms DESC, id DESC);
CREATE INDEX alerts_due ON alerts (next_attempt_ms) WHERE status = 'pending';
