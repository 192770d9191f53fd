-- A replay that made a rebuilt projection live leaves a row here, in its swap's transaction:
-- every server watches this table, as it watches `job_tombstones`, and forgets the bodies it holds
-- of the jobs the swap may have changed (`job_id` NULL: every job). Without it a server went on
-- answering a repaired job's GET from memory with the body the repair corrected.
CREATE TABLE projection_swaps (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT,
    swapped_at TEXT NOT NULL
);
