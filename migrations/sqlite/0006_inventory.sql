-- Inventory (CONTRACT.md, "Inventory"): finding a key's jobs by creation time and label, and
-- retention, which removes finished jobs and leaves a tombstone.
--
-- `job_index` and `job_labels` follow the log: a trigger fills them from each job's `created`
-- event (its version 1), whoever writes it. They only change when a prune removes a job.

CREATE TABLE job_index (
    job_id     TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    -- the `created` event's labels object as JSON text, NULL when it has none
    labels     TEXT
) WITHOUT ROWID;

-- A key's jobs newest first, and a page below a cursor, are one range of this index.
CREATE INDEX job_index_by_owner ON job_index (owner, created_at, job_id);
-- A prune looks at the oldest jobs first: a job finished before a cutoff was created before it.
CREATE INDEX job_index_by_age ON job_index (created_at);

-- One row per label of a job, in the order a `label=key:value` listing reads them.
CREATE TABLE job_labels (
    owner      TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    PRIMARY KEY (owner, key, value, created_at, job_id)
) WITHOUT ROWID;

-- What stays of a pruned job: its id is never given out again; its owner hears 410, others 403.
-- `seq` lets every server forget, in memory, what it held of a job pruned by anyone.
CREATE TABLE job_tombstones (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT    NOT NULL UNIQUE,
    owner       TEXT    NOT NULL,
    finished_at TEXT    NOT NULL,
    pruned_at   TEXT    NOT NULL
);

INSERT INTO job_index (job_id, owner, created_at, labels)
SELECT job_id, json_extract(data, '$.owner'), recorded_at, json_extract(data, '$.labels')
FROM events
WHERE version = 1;

CREATE TRIGGER job_index_on_create AFTER INSERT ON events
WHEN NEW.version = 1
BEGIN
    INSERT INTO job_index (job_id, owner, created_at, labels)
    VALUES (NEW.job_id, json_extract(NEW.data, '$.owner'), NEW.recorded_at,
            json_extract(NEW.data, '$.labels'));
    INSERT INTO job_labels (owner, key, value, created_at, job_id)
    SELECT json_extract(NEW.data, '$.owner'), key, value, NEW.recorded_at, NEW.job_id
    FROM json_each(NEW.data, '$.labels');
END;

-- The log stays append-only: the one exception is a prune, which deletes the events of a job
-- only after leaving its tombstone. Every other DELETE is refused as before; UPDATE always is.
DROP TRIGGER events_refuse_delete;

CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
WHEN NOT EXISTS (SELECT 1 FROM job_tombstones WHERE job_id = OLD.job_id)
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: DELETE is refused (only a prune deletes)');
END;
