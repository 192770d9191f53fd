-- The row type the append statement (store/pg_sql.py, WRITE_GROUP) receives job rows as: an array
-- of these arrives in binary and is read field by field, where a JSON document of the same rows
-- had to be parsed for every job of every group. Its fields are store/rows.py's JOB_COLUMNS, in
-- that order; the store passes each job as `state_to_row`'s tuple.
CREATE TYPE job_write AS (
    job_id           TEXT,
    owner            TEXT,
    status           TEXT,
    version          BIGINT,
    label            TEXT,
    expected_total   BIGINT,
    progress_current BIGINT,
    progress_total   BIGINT,
    progress_status  TEXT,
    successful       BIGINT,
    failed           BIGINT,
    internal_count   BIGINT,
    external_count   BIGINT,
    emails_sent      BIGINT,
    emails_failed    BIGINT,
    error            TEXT
);
