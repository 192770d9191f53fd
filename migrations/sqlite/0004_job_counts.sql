-- Jobs by status, kept up to date by triggers on `jobs` (issue #20): /metrics reads these five
-- rows instead of counting the jobs table on every scrape. SQLite has one writer at a time, so
-- the triggers change the counts in place: one UPDATE by primary key per status change.
-- A full replay swaps in a rebuilt `jobs` table and counts again (store/sqlite/rebuild.py).

CREATE TABLE job_counts (
    status TEXT    PRIMARY KEY,
    count  INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO job_counts (status, count)
SELECT status, 0 FROM (
    SELECT 'PENDING' AS status UNION ALL SELECT 'STARTED' UNION ALL SELECT 'PROGRESS'
    UNION ALL SELECT 'SUCCESS' UNION ALL SELECT 'FAILURE'
);

-- `WHERE true`: SQLite's documented way to put an upsert after INSERT ... SELECT.
INSERT INTO job_counts (status, count)
SELECT status, count(*) FROM jobs WHERE true GROUP BY status
ON CONFLICT (status) DO UPDATE SET count = excluded.count;

-- Every status has its row (above), so each trigger is one UPDATE by primary key: a status
-- added one day gets its row in the migration that adds it.
CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs
BEGIN
    UPDATE job_counts SET count = count + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER job_counts_update AFTER UPDATE OF status ON jobs
WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE job_counts SET count = count + (status = NEW.status) - (status = OLD.status)
    WHERE status IN (OLD.status, NEW.status);
END;

CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs
BEGIN
    UPDATE job_counts SET count = count - 1 WHERE status = OLD.status;
END;
