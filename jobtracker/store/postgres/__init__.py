"""The PostgreSQL store, for users who outgrow one machine (needs asyncpg)."""

from jobtracker.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
