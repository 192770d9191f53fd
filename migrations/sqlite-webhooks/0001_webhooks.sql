-- Webhooks (CONTRACT.md, "Webhooks"): subscriptions, the queue of deliveries not yet made, and
-- the record of every attempt. None of it is part of the projection: replay never touches it.
--
-- These tables live in a SQLite file of their own beside the log's (`jobs.db` -> `jobs.db-webhooks`,
-- store/sqlite/webhooks.py): the dispatcher writes them many times a second, and in the log's
-- file every such write would hold the one write lock that appends need.
--
-- `webhooks.cursor` is the durable cursor: the last log position whose events this subscription
-- has taken into its queue. It moves in the same transaction that queues the deliveries, so an
-- event is queued exactly once; a queued delivery leaves the queue only once a send of it was
-- answered (or it was given up), so a crash between a send and that write repeats the send with
-- the same `msg_id` and never loses it.
CREATE TABLE webhooks (
    webhook_id  TEXT    PRIMARY KEY,
    key_id      TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    events      TEXT    NOT NULL,  -- JSON array of event types
    labels      TEXT    NOT NULL,  -- JSON object; {} matches every job
    secret      TEXT    NOT NULL,  -- kept to sign with; see RELIABILITY.md, "Webhook secrets"
    created_at  TEXT    NOT NULL,
    cursor      INTEGER NOT NULL,
    disabled_at TEXT
);

CREATE INDEX webhooks_by_key ON webhooks (key_id, created_at);

CREATE TABLE webhook_deliveries (
    delivery_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id    TEXT    NOT NULL,
    msg_id        TEXT    NOT NULL UNIQUE,
    job_id        TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    type          TEXT    NOT NULL,
    recorded_at   TEXT    NOT NULL,
    due           REAL    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    first_attempt REAL,
    lease_owner   TEXT,
    lease_until   REAL
);

-- Per job in log order: a delivery waits for every earlier one of its job and subscription.
CREATE INDEX webhook_deliveries_by_job ON webhook_deliveries (webhook_id, job_id, delivery_id);
CREATE INDEX webhook_deliveries_by_due ON webhook_deliveries (webhook_id, due);

CREATE TABLE webhook_attempts (
    attempt_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id   TEXT    NOT NULL,
    msg_id       TEXT    NOT NULL,
    job_id       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    type         TEXT    NOT NULL,
    attempted_at REAL    NOT NULL,
    status       INTEGER,
    error        TEXT,
    duration_ms  REAL    NOT NULL,
    next_attempt REAL
);

CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts (webhook_id, attempt_id);
CREATE INDEX webhook_attempts_by_job ON webhook_attempts (webhook_id, job_id, type, attempted_at);
