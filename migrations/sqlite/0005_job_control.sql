-- Job control (CONTRACT.md, "Job control"): cancel requests, heartbeats, timeouts.
--
-- `cancel_requested` is part of the projection (a `cancel_requested` event sets it; replay
-- rebuilds it). `job_deadlines` is not: it is the reaper's schedule, one row per job that may
-- still need ending, and the only table heartbeats write (a heartbeat is no event).
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;

CREATE TABLE job_deadlines (
    job_id            TEXT    PRIMARY KEY,
    -- seconds a running job may go without an event or a heartbeat
    heartbeat_timeout INTEGER NOT NULL,
    -- seconds from creation the job may take (NULL: no timeout), and the moment that ends
    timeout           INTEGER,
    timeout_at        REAL,
    -- the newest heartbeat heard (events count too, read from the log when it matters)
    heartbeat_at      REAL,
    -- the soonest this job could be due: a lower bound the sweep moves forward when it is early
    next_check        REAL    NOT NULL
) WITHOUT ROWID;

CREATE INDEX job_deadlines_by_next_check ON job_deadlines (next_check);

-- Jobs still running when this version arrives are watched with the default heartbeat timeout.
INSERT INTO job_deadlines (job_id, heartbeat_timeout, timeout, timeout_at, heartbeat_at, next_check)
SELECT job_id, 600, NULL, NULL, CAST(strftime('%s', 'now') AS REAL),
       CAST(strftime('%s', 'now') AS REAL) + 600
FROM jobs
WHERE status NOT IN ('SUCCESS', 'FAILURE');

-- A job leaving PENDING is looked at by its heartbeat timeout (or at once when it finished
-- straight away): the sweep then needs no periodic look at PENDING jobs, however many wait.
CREATE TRIGGER job_deadlines_on_start AFTER UPDATE OF status ON jobs
WHEN old.status = 'PENDING' AND new.status <> 'PENDING'
BEGIN
    UPDATE job_deadlines
    SET next_check = min(
        next_check,
        (julianday('now') - 2440587.5) * 86400.0
            + CASE WHEN new.status IN ('SUCCESS', 'FAILURE') THEN 0 ELSE heartbeat_timeout END
    )
    WHERE job_id = new.job_id;
END;
