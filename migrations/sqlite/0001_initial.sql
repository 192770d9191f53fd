-- The append-only log, the projection it folds into, and the API keys.

CREATE TABLE events (
    -- AUTOINCREMENT: a position is never reused, even after the newest row is gone.
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id         TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    event_id       TEXT    NOT NULL UNIQUE,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL DEFAULT 1,
    data           TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    UNIQUE (job_id, version)
);

CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: UPDATE is refused');
END;

CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: DELETE is refused');
END;

CREATE TABLE jobs (
    job_id           TEXT    PRIMARY KEY,
    owner            TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    label            TEXT,
    expected_total   INTEGER,
    progress_current INTEGER,
    progress_total   INTEGER,
    progress_status  TEXT,
    successful       INTEGER NOT NULL DEFAULT 0,
    failed           INTEGER NOT NULL DEFAULT 0,
    internal_count   INTEGER NOT NULL DEFAULT 0,
    external_count   INTEGER NOT NULL DEFAULT 0,
    emails_sent      INTEGER NOT NULL DEFAULT 0,
    emails_failed    INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    updated_position INTEGER NOT NULL
) WITHOUT ROWID;

-- One outcome per row, one e-mail outcome per row: the fold reads these marks to refuse a second.
CREATE TABLE job_rows (
    job_id TEXT    NOT NULL,
    row    INTEGER NOT NULL,
    kind   TEXT    NOT NULL CHECK (kind IN ('outcome', 'email')),
    PRIMARY KEY (job_id, row, kind)
) WITHOUT ROWID;

CREATE TABLE job_errors (
    job_id TEXT    NOT NULL,
    row    INTEGER NOT NULL,
    email  TEXT    NOT NULL,
    error  TEXT    NOT NULL,
    PRIMARY KEY (job_id, row)
) WITHOUT ROWID;

CREATE TABLE api_keys (
    key_id     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
