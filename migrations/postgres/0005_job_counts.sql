-- Jobs by status without counting the jobs table on every /metrics scrape (issue #20).
--
-- Many transactions change jobs at once here (two commit lanes per server, many servers), so the
-- triggers never update a shared count row: that row's lock would make every writer wait for the
-- others' COMMIT, and two writers touching two statuses in opposite orders could deadlock. They
-- append a row per status change to `job_count_changes` instead (no index, no conflict), and
-- `current_job_counts()` folds those rows into `job_counts` when it is read: a scrape costs the
-- status changes since the last one, never the size of the jobs table.

CREATE TABLE job_counts (
    status TEXT   PRIMARY KEY,
    count  BIGINT NOT NULL
);

CREATE TABLE job_count_changes (
    status TEXT   NOT NULL,
    delta  BIGINT NOT NULL
);

CREATE FUNCTION note_job_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_count_changes (status, delta) VALUES (NEW.status, 1);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO job_count_changes (status, delta) VALUES (OLD.status, -1), (NEW.status, 1);
    ELSE
        INSERT INTO job_count_changes (status, delta) VALUES (OLD.status, -1);
    END IF;
    RETURN NULL;
END
$$;

-- Creating the triggers locks `jobs` against writers until this migration commits, so the
-- counts below and the changes the triggers note afterwards neither overlap nor leave a gap.
CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION note_job_count_change();

CREATE TRIGGER job_counts_update AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION note_job_count_change();

CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION note_job_count_change();

INSERT INTO job_counts (status, count)
SELECT s.status, count(jobs.job_id)
FROM unnest(ARRAY['PENDING', 'STARTED', 'PROGRESS', 'SUCCESS', 'FAILURE']) AS s(status)
LEFT JOIN jobs ON jobs.status = s.status
GROUP BY s.status;

-- The counts now: folds the noted changes into `job_counts` (one caller at a time; another that
-- finds the fold lock taken adds the changes still pending instead) and reads them back.
CREATE FUNCTION current_job_counts() RETURNS TABLE (job_status TEXT, jobs BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    -- 0x6A6F62740014: the advisory lock of the fold (see store/postgres/sql.py for the others).
    IF pg_try_advisory_xact_lock(117026625683476) THEN
        WITH moved AS (
            DELETE FROM job_count_changes RETURNING job_count_changes.status, delta
        )
        INSERT INTO job_counts AS c (status, count)
        SELECT moved.status, sum(moved.delta) FROM moved GROUP BY moved.status
        ORDER BY moved.status
        ON CONFLICT (status) DO UPDATE SET count = c.count + excluded.count;
    END IF;
    -- A new snapshot: our fold, plus every change committed since, counted once.
    RETURN QUERY
        SELECT c.status, c.count + coalesce(
            (SELECT sum(d.delta) FROM job_count_changes AS d WHERE d.status = c.status), 0
        )::bigint
        FROM job_counts AS c;
END
$$;
