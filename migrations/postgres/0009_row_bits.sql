-- Row marks as bits (jobtracker/store/postgres/row_bits.py), as the SQLite store keeps them: 64
-- rows of a job to a table row, so a batch of 1,000 rows writes about 16 marks rows, not 1,000.

CREATE TABLE job_row_bits (
    job_id TEXT   NOT NULL,
    kind   TEXT   NOT NULL CHECK (kind IN ('outcome', 'email')),
    -- row >> 6; bit (row & 63) of `bits` is set once that row has this kind of outcome.
    chunk  BIGINT NOT NULL,
    -- Signed: bit 63 makes it negative. An append that would set a bit already set writes 0
    -- instead (sql.WRITE_GROUP), which this refuses: a row's second mark fails the write.
    bits   BIGINT NOT NULL CONSTRAINT job_row_bits_marked_once CHECK (bits <> 0),
    PRIMARY KEY (job_id, kind, chunk)
);

-- (1::bigint) << 63 is the lowest bigint, whose only set bit is bit 63: bit_or keeps the sign.
INSERT INTO job_row_bits (job_id, kind, chunk, bits)
SELECT job_id, kind, row >> 6, bit_or((1::bigint) << (row & 63)::int)
FROM job_rows
GROUP BY job_id, kind, row >> 6;

DROP TABLE job_rows;
