"""What only the PostgreSQL store must show: its schema, errors, wake-ups and recovery."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from jobtracker.domain.errors import ConfigError, StoreUnavailable
from jobtracker.domain.events import Created, NewEvent, RowFailed, RowSucceeded, Started
from jobtracker.store import make_store
from jobtracker.store.migrate import migrations
from jobtracker.store.postgres import PostgresStore
from jobtracker.store.rows import JOB_COLUMNS
from tests.conditions import until_async
from tests.pg_database import listeners
from tests.postgres.conftest import OpenStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE log SET types = '\\x09'", "DELETE FROM log", "TRUNCATE log", "TRUNCATE log_jobs",
        "UPDATE log_jobs SET job_id = 'other'", "DELETE FROM log_jobs",
        "UPDATE log_ids SET position = 0", "UPDATE log_text_ids SET position = 0",
    ],
)
async def test_events_table_refuses_to_change_history(
    open_store: OpenStore, pg_url: str, statement: str
) -> None:
    """The log is append-only in the database itself, whoever connects to it."""
    store = await open_store()
    await store.create_job("job", Created(owner="key_a"))
    await store.append("job", [NewEvent("not-a-uuid", Started())])
    conn = await asyncpg.connect(pg_url)
    try:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute(statement)
    finally:
        await conn.close()
    assert [e.event.TYPE for e in await store.read_log()] == ["created", "started"]


async def test_processes_opening_a_fresh_database_at_once_migrate_it_once(pg_url: str) -> None:
    """Several stores opened at the same moment on an empty schema: each migration runs once."""
    stores = [PostgresStore(pg_url, pool_size=1) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        conn = await asyncpg.connect(pg_url)
        try:
            names = await conn.fetch("SELECT name FROM schema_migrations")
        finally:
            await conn.close()
        assert sorted(r["name"] for r in names) == [m.name for m in migrations("postgres")]
        await stores[0].create_job("job", Created(owner="key_a"))
        assert await stores[3].get_job("job", 10) is not None
    finally:
        for store in stores:
            await store.close()


async def test_unreachable_server_is_store_unavailable_without_the_password() -> None:
    """A server that is not there is a clear StoreUnavailable naming it, never a traceback."""
    store = make_store("postgresql://jobs:s3cret@127.0.0.1:1/jobs")
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1/jobs") as caught:
        await store.open()
    assert "s3cret" not in caught.value.detail
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.get_job("job", 10)


async def listening_since(pg_url: str, before: set[int]) -> bool:
    """Whether a session that was not listening before now listens for appends."""
    return bool(await listeners(pg_url) - before)


async def test_waiter_is_woken_by_an_append_from_another_process(
    open_store: OpenStore, pg_url: str
) -> None:
    """LISTEN/NOTIFY: a waiter hears another store's append long before its next poll."""
    waiter = await open_store(poll_interval=60)
    writer = await open_store()
    await writer.create_job("job", Created(owner="key_a"))
    head = await waiter.last_position()
    before = await listeners(pg_url)
    waiting = asyncio.create_task(waiter.wait_for_append(head, timeout=60))
    await until_async(lambda: listening_since(pg_url, before), "the waiter never listened")
    await writer.append("job", [NewEvent("go", Started())])
    assert await asyncio.wait_for(waiting, 10) is True
    assert [e.event_id for e in await waiter.read_log(head)] == ["go"]


async def test_waiter_polls_when_notifications_are_lost(
    open_store: OpenStore, pg_url: str
) -> None:
    """With its listening connection killed, a waiter still sees the append by polling."""
    waiter = await open_store(poll_interval=0.2)
    writer = await open_store()
    await writer.create_job("job", Created(owner="key_a"))
    head = await waiter.last_position()
    assert await waiter.wait_for_append(head, timeout=0.3) is False
    killer = await asyncpg.connect(pg_url)
    try:
        killed = await killer.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%jobtracker_appended%' AND datname = current_database()"
        )
    finally:
        await killer.close()
    assert killed == 1
    waiting = asyncio.create_task(waiter.wait_for_append(head, timeout=10))
    await writer.append("job", [NewEvent("go", Started())])
    assert await asyncio.wait_for(waiting, 15) is True


async def test_store_recovers_when_its_connections_are_cut(
    open_store: OpenStore, pg_url: str
) -> None:
    """After the server drops every connection (a restart), reads and appends work again."""
    store = await open_store()
    await store.create_job("job", Created(owner="key_a"))
    await store.append("job", [NewEvent("before", Started())])  # a commit lane connects
    killer = await asyncpg.connect(pg_url)
    try:
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await killer.close()
    assert await store.get_job("job", 10) is not None
    results = await asyncio.gather(
        *(store.append("job", [NewEvent(f"go-{n}", Started())]) for n in range(4))
    )
    assert [r.appended for r in results] == [1] * 4


@pytest.mark.parametrize("grouped", [True, False], ids=["group-commit", "commit-alone"])
async def test_commit_cut_inside_its_transaction_is_redone_once_on_a_new_connection(
    open_store: OpenStore, pg_url: str, grouped: bool
) -> None:
    """The server drops the committing connections just before COMMIT: each group (or lone
    append) is committed again on a fresh connection, and every event is in the log once."""
    cut: list[int] = []

    async def cut_once() -> None:
        if cut:
            return
        killer = await asyncpg.connect(pg_url)
        try:
            cut.append(await killer.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND state = 'idle in transaction'"
            ))
        finally:
            await killer.close()

    store = await open_store(before_commit=cut_once, group_commit=grouped)
    jobs = ["job-a", "job-b"]
    for job_id in jobs:
        await store.create_job(job_id, Created(owner="key_a"))
    results = await asyncio.gather(*(
        store.append(job_id, [NewEvent(f"{job_id}-{row}", RowSucceeded(row, "x@y.z", True))])
        for job_id in jobs for row in range(3)
    ))
    assert cut, "the hook never ran"
    assert cut[0] >= 1, "no committing connection was cut"
    assert [r.appended for r in results] == [1] * 6
    for job_id in jobs:
        view = await store.get_job(job_id, 10)
        assert view is not None
        assert (view.state.successful, view.state.version) == (3, 4)
        assert len(await store.read_job_events(job_id)) == 4


def test_migrate_and_keys_commands_work_on_postgresql(pg_url: str) -> None:
    """`jobtracker migrate` and `jobtracker keys` take a postgresql:// store URL."""
    run = [sys.executable, "-m", "jobtracker"]
    migrated = subprocess.run(
        [*run, "migrate", "--store", pg_url], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert migrated.returncode == 0, migrated.stderr
    subprocess.run(
        [*run, "keys", "create", "--name", "ops", "--store", pg_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    listed = subprocess.run(
        [*run, "keys", "list", "--store", pg_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    assert "\towner\tactive\t" in listed.stdout
    assert listed.stdout.rstrip().endswith("\tops")


async def test_database_holding_a_foreign_events_table_is_refused_clearly(pg_url: str) -> None:
    """A schema with an unrelated `events` table: a clear error, not a half-migration."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE events (id serial PRIMARY KEY)")
    finally:
        await conn.close()
    store = PostgresStore(pg_url, pool_size=1)
    with pytest.raises(StoreUnavailable, match='while migrating: relation "events" already exists'):
        await store.open()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.read_log()
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('jobs') IS NULL") is True
        assert await conn.fetchval("SELECT to_regclass('schema_migrations') IS NULL") is True
    finally:
        await conn.close()


async def test_row_errors_page_in_row_order(open_store: OpenStore) -> None:
    """Every row error of a job can be read in pages, in row order, whatever the arrival order."""
    store = await open_store()
    await store.create_job("job", Created(owner="key_a"))
    rows = [9, 2, 7, 4, 5]
    await store.append(
        "job", [NewEvent(f"f{row}", RowFailed(row, f"r{row}@uni.edu", "bad")) for row in rows]
    )
    first = await store.read_job_errors("job", limit=3)
    rest = await store.read_job_errors("job", after_row=first[-1].row)
    assert [e.row for e in first] == [2, 4, 5]
    assert [(e.row, e.email, e.error) for e in rest] == [
        (7, "r7@uni.edu", "bad"),
        (9, "r9@uni.edu", "bad"),
    ]
    assert await store.read_job_errors("no-such-job") == []


async def test_pool_size_in_the_url_bounds_the_connections(pg_url: str) -> None:
    """`?pool_size=N` caps the pool's connections (listeners aside); other parameters apply."""
    store = make_store(f"{pg_url}&pool_size=2")
    await store.open()
    try:
        await store.create_job("job", Created(owner="key_a"))
        # Reads through the pool (GETs have connections of their own, `batch_read`).
        await asyncio.gather(*(store.read_job_events("job") for _ in range(20)))
        conn = await asyncpg.connect(pg_url)
        try:
            opened = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND query NOT LIKE 'LISTEN%'"
            )
            in_schema = await conn.fetchval("SELECT count(*) FROM jobs")
        finally:
            await conn.close()
        assert (opened, in_schema) == (2, 1)
    finally:
        await store.close()
    with pytest.raises(ConfigError, match="pool_size"):
        make_store(f"{pg_url}&pool_size=many")


async def test_change_feed_hears_appends_from_every_process(
    open_store: OpenStore, pg_url: str
) -> None:
    """`on_append` fires for this store's own appends and, through NOTIFY, for another's."""
    feed = await open_store()
    other = await open_store()
    woken = asyncio.Event()
    before = await listeners(pg_url)
    assert feed.on_append(woken.set) is True
    await until_async(lambda: listening_since(pg_url, before), "the feed never listened")
    await feed.create_job("mine", Created(owner="key_a"))
    await asyncio.wait_for(woken.wait(), 5)
    await other.create_job("theirs", Created(owner="key_a"))
    head = await feed.last_position()
    await other.append("theirs", [NewEvent("go", Started())])
    changes = []
    while not changes:  # a late wake-up for the creation may come first: wait for the next
        await asyncio.wait_for(woken.wait(), 5)
        woken.clear()
        changes = await feed.changes_since(head)
    assert [(c.job_id, c.version) for c in changes] == [("theirs", 2)]
    assert changes[0].position == await feed.last_position()


async def test_job_rows_reach_the_append_statement_field_for_field(
    open_store: OpenStore, pg_url: str
) -> None:
    """The append statement receives job rows as the `job_write` type, field by position: its
    fields must be the job columns, in order, or a counter would land in its neighbour."""
    await open_store()
    conn = await asyncpg.connect(pg_url)
    try:
        fields = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'job_write'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
    finally:
        await conn.close()
    assert tuple(field["attname"] for field in fields) == JOB_COLUMNS
