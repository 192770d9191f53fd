-- Row marks as bits (jobtracker/store/row_bits.py): 64 rows of a job to a database row, so a
-- batch of 1,000 rows writes about 16 marks rows instead of 1,000.

CREATE TABLE job_row_bits (
    job_id TEXT    NOT NULL,
    kind   TEXT    NOT NULL CHECK (kind IN ('outcome', 'email')),
    -- row >> 6; bit (row & 63) of `bits` is set once that row has this kind of outcome.
    chunk  INTEGER NOT NULL,
    bits   INTEGER NOT NULL CHECK (bits <> 0),
    PRIMARY KEY (job_id, kind, chunk)
) WITHOUT ROWID;

-- A row has at most one mark of each kind, so the sum of their distinct bits is their OR.
INSERT INTO job_row_bits (job_id, kind, chunk, bits)
SELECT job_id, kind, row >> 6, sum(1 << (row & 63))
FROM job_rows
GROUP BY job_id, kind, row >> 6;

DROP TABLE job_rows;
