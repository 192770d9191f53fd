"""What a PostgreSQL store holds and what each table and index costs (`jobtracker stats`).

Sizes are the server's own (`pg_table_size`: heap, TOAST and maps; `pg_relation_size` for an
index), for the tables of the store's schema only, so a database shared with other schemas (each
test run has its own) reports just this store.
"""

from __future__ import annotations

from jobtracker.store.base import Relation, StorageStats
from jobtracker.store.postgres.plan import Conn

_SIZES = """
SELECT c.relname AS name,
       COALESCE(t.relname, c.relname) AS table_name,
       c.relkind = 'i' AS is_index,
       CASE WHEN c.relkind = 'i' THEN pg_relation_size(c.oid) ELSE pg_table_size(c.oid) END AS size
FROM pg_class c
LEFT JOIN pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_class t ON t.oid = i.indrelid
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'i')
ORDER BY size DESC, name
"""

#: The log's tables (migration 0010): their sizes with TOAST and indexes are its bytes.
LOG_TABLES = ("log", "log_ids", "log_text_ids", "log_jobs")

_COUNTS = f"""
SELECT (SELECT coalesce(sum(length(types)), 0) FROM log) AS events,
       (SELECT count(*) FROM jobs) AS jobs,
       {" + ".join(f"pg_total_relation_size('{table}')" for table in LOG_TABLES)} AS log_bytes
"""  # noqa: S608


async def storage_stats(conn: Conn) -> StorageStats:
    """Counts and sizes from one snapshot, so the bytes per event describe one moment."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_SIZES)
        [counts] = await conn.fetch(_COUNTS)
    relations = tuple(
        Relation(row["name"], row["table_name"], row["is_index"], row["size"]) for row in rows
    )
    total = sum(each.bytes for each in relations)
    return StorageStats(counts["events"], counts["jobs"], total, counts["log_bytes"], relations)
