"""What a SQLite file holds and what each table and index costs (`jobtracker stats`).

Sizes come from the `dbstat` virtual table (pages in use by each b-tree), the file's size from
`page_count` x `page_size`: the difference is free pages a VACUUM would return. The write-ahead log
and the webhooks' sidecar file are not counted: both are working space, not the log.
"""

from __future__ import annotations

import sqlite3

from jobtracker.store.base import Relation, StorageStats

#: The log: its events and its job keys, with the indexes `dbstat` names after them.
LOG_TABLES = frozenset({"log", "log_jobs"})

_SIZES = """
SELECT s.name, COALESCE(m.tbl_name, s.name), COALESCE(m.type, 'table') = 'index', s.pgsize
FROM dbstat AS s LEFT JOIN sqlite_schema AS m ON m.name = s.name
WHERE s.aggregate = TRUE
ORDER BY s.pgsize DESC, s.name
"""


def storage_stats(conn: sqlite3.Connection) -> StorageStats:
    """Counts and sizes, read in one transaction so they describe the same moment."""
    conn.execute("BEGIN")
    try:
        relations = tuple(
            Relation(name, table, bool(is_index), size)
            for name, table, is_index, size in conn.execute(_SIZES)
        )
        (events,) = conn.execute("SELECT count(*) FROM log").fetchone()
        (jobs,) = conn.execute("SELECT count(*) FROM jobs").fetchone()
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.execute("COMMIT")
    log_bytes = sum(each.bytes for each in relations if each.table in LOG_TABLES)
    return StorageStats(events, jobs, pages * page_size, log_bytes, relations)
