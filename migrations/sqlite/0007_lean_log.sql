-- A leaner log (issue #28): about a third of the bytes per event. `store/sqlite/lean.py` copies
-- `events` into `log` in batches (the data step), converting each row to the stored form of
-- `domain/stored.py`; then the old table goes.

-- A job's text id once; the log refers to it by its integer key.
CREATE TABLE IF NOT EXISTS log_jobs (
    job_key INTEGER PRIMARY KEY,
    job_id  TEXT    NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS log (
    -- AUTOINCREMENT: a position is never reused, even after the newest row is gone.
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    job_key  INTEGER NOT NULL,
    version  INTEGER NOT NULL CHECK (version >= 1),
    -- 16 bytes for a canonical UUID, else the client's text
    event_id BLOB    NOT NULL,
    -- the type's code and the fields' schema version, `stored.form_code`: code + 16 * (schema - 1)
    type     INTEGER NOT NULL,
    -- recorded_at in microseconds since 2026-01-01 UTC (`stored.AT_EPOCH`: 6 bytes from mid-2021
    -- to mid-2030); the text when it would not read back exactly
    at       INTEGER NOT NULL,
    -- the fields as a JSON array in the order of `stored.LAYOUTS`
    data     TEXT    NOT NULL
);

-- jobtracker: data step

-- Built once after the copy rather than row by row during it.
CREATE UNIQUE INDEX log_by_event_id ON log (event_id);
CREATE UNIQUE INDEX log_by_job ON log (job_key, version);

-- The next position stays above every position `events` ever gave out.
DELETE FROM sqlite_sequence WHERE name = 'log';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'log', max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                  coalesce((SELECT max(position) FROM log), 0));

-- With its triggers (append-only, the inventory's) and its indexes.
DROP TABLE events;

CREATE TRIGGER log_refuse_update BEFORE UPDATE ON log
BEGIN
    SELECT RAISE(ABORT, 'the log is append-only: UPDATE is refused');
END;

-- The one exception to append-only is a prune, which deletes a job's events only after leaving
-- its tombstone.
CREATE TRIGGER log_refuse_delete BEFORE DELETE ON log
WHEN NOT EXISTS (SELECT 1 FROM log_jobs k JOIN job_tombstones t ON t.job_id = k.job_id
                 WHERE k.job_key = OLD.job_key)
BEGIN
    SELECT RAISE(ABORT, 'the log is append-only: DELETE is refused (only a prune deletes)');
END;

CREATE TRIGGER log_jobs_refuse_update BEFORE UPDATE ON log_jobs
BEGIN
    SELECT RAISE(ABORT, 'log_jobs is append-only: UPDATE is refused');
END;

CREATE TRIGGER log_jobs_refuse_delete BEFORE DELETE ON log_jobs
WHEN NOT EXISTS (SELECT 1 FROM job_tombstones WHERE job_id = OLD.job_id)
BEGIN
    SELECT RAISE(ABORT, 'log_jobs is append-only: DELETE is refused (only a prune deletes)');
END;

-- As 0006's trigger on `events`: the inventory from each job's `created` event. Its owner is
-- field 0 and its labels field 5 of the positional layout; a row copied as a JSON object (one
-- that did not fit the layout) is read by name. The time goes back to the log's text form:
-- whole seconds (floored, also before 2026) plus 1767225600 (2026-01-01 UTC), then microseconds.
CREATE TRIGGER log_job_index_on_create AFTER INSERT ON log
WHEN NEW.version = 1
BEGIN
    INSERT INTO job_index (job_id, owner, created_at, labels)
    SELECT k.job_id,
           coalesce(json_extract(NEW.data, '$[0]'), json_extract(NEW.data, '$.owner')),
           CASE typeof(NEW.at) WHEN 'integer' THEN
               printf('%s.%06dZ',
                      strftime('%Y-%m-%dT%H:%M:%S',
                               (NEW.at - (NEW.at % 1000000 + 1000000) % 1000000) / 1000000
                               + 1767225600, 'unixepoch'),
                      (NEW.at % 1000000 + 1000000) % 1000000)
           ELSE NEW.at END,
           coalesce(json_extract(NEW.data, '$[5]'), json_extract(NEW.data, '$.labels'))
    FROM log_jobs k WHERE k.job_key = NEW.job_key;
    INSERT INTO job_labels (owner, key, value, created_at, job_id)
    SELECT i.owner, l.key, l.value, i.created_at, i.job_id
    FROM log_jobs k JOIN job_index i ON i.job_id = k.job_id, json_each(i.labels) l
    WHERE k.job_key = NEW.job_key;
END;
