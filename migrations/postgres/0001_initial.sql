-- The append-only log, the projection it folds into, and the API keys (PostgreSQL).

CREATE TABLE events (
    -- Drawn from the identity only while the store holds its position lock, which it keeps until
    -- COMMIT: positions therefore become visible in increasing order (see store/postgres.py).
    position       BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id         TEXT        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version >= 1),
    event_id       TEXT        NOT NULL UNIQUE,
    type           TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL DEFAULT 1,
    data           JSONB       NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (job_id, version)
);

CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % is refused', TG_OP;
END
$$;

CREATE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

CREATE TABLE jobs (
    job_id           TEXT    PRIMARY KEY,
    owner            TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    version          BIGINT  NOT NULL,
    label            TEXT,
    expected_total   BIGINT,
    progress_current BIGINT,
    progress_total   BIGINT,
    progress_status  TEXT,
    successful       BIGINT  NOT NULL DEFAULT 0,
    failed           BIGINT  NOT NULL DEFAULT 0,
    internal_count   BIGINT  NOT NULL DEFAULT 0,
    external_count   BIGINT  NOT NULL DEFAULT 0,
    emails_sent      BIGINT  NOT NULL DEFAULT 0,
    emails_failed    BIGINT  NOT NULL DEFAULT 0,
    error            TEXT,
    updated_position BIGINT  NOT NULL
);

-- One outcome per row, one e-mail outcome per row: the fold reads these marks to refuse a second.
CREATE TABLE job_rows (
    job_id TEXT   NOT NULL,
    row    BIGINT NOT NULL,
    kind   TEXT   NOT NULL CHECK (kind IN ('outcome', 'email')),
    PRIMARY KEY (job_id, row, kind)
);

CREATE TABLE job_errors (
    job_id TEXT   NOT NULL,
    row    BIGINT NOT NULL,
    email  TEXT   NOT NULL,
    error  TEXT   NOT NULL,
    PRIMARY KEY (job_id, row)
);

CREATE TABLE api_keys (
    key_id     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
