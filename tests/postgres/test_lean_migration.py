"""Migration 0010 (PostgreSQL's lean log): a database of the previous release keeps every answer,
resumes when cut short, replays clean, and its event ids still deduplicate."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from jobtracker.cli.main import main
from jobtracker.domain.codec import decode_stored
from jobtracker.domain.events import NewEvent, ProgressReported, Started
from jobtracker.store.migrate import migration_names
from jobtracker.store.postgres import PostgresStore, lean
from jobtracker.store.postgres.driver import migrate_postgres
from tests.old_release import B_EVENTS, PG_LEAN_MIGRATION, answers, release_tree
from tests.pg_database import (
    _admin,
    create_database,
    drop_database,
    run_database,
    run_sync,
    unique_name,
    with_path,
)

ROOT = Path(__file__).resolve().parents[2]
#: What a migrated database must hold the same, whichever way it was migrated: the log event by
#: event (how events are grouped into rows depends on where the copy's batches ended), its ids,
#: and everything its trigger and the projection keep.
_DUMPS = {
    "events": "SELECT * FROM events ORDER BY position",
    "log_jobs": "SELECT * FROM log_jobs ORDER BY job_key",
    "log_ids": "SELECT * FROM log_ids ORDER BY position",
    "log_text_ids": "SELECT * FROM log_text_ids ORDER BY position",
    "next_position": "SELECT last_value FROM log_position",
    "job_index": "SELECT * FROM job_index ORDER BY job_id",
    "job_labels": "SELECT * FROM job_labels ORDER BY job_id, key",
    "jobs": "SELECT * FROM jobs ORDER BY job_id",
}
_OLD_EVENTS = (
    "SELECT job_id, version, position, event_id, recorded_at, type, schema_version, data::text "
    "FROM events ORDER BY position"
)


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """A database written by the previous release through its API (its name; copy it with
    `copy_of`), and what that API answered."""
    run_database()  # skips (or fails under CI) without a server
    folder = tmp_path_factory.mktemp("old-release-pg")
    tree = release_tree(ROOT, folder / "tree", PG_LEAN_MIGRATION)
    if tree is None:
        pytest.skip("needs git and the history the previous release is built from")
    name, url = run_sync(create_database("jobtracker_old"))
    out = folder / "answers.json"
    try:
        subprocess.run([sys.executable, str(ROOT / "tests" / "old_release.py"), str(tree), url,
                        str(out)], check=True, cwd=folder)
        yield name, json.loads(out.read_text())
    finally:
        run_sync(drop_database(name))


@pytest.fixture
async def copy_of() -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Copies of a database (CREATE DATABASE ... TEMPLATE), dropped after the test."""
    made: list[str] = []

    async def copy(template: str) -> str:
        name = unique_name("jobtracker_copy")
        await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        made.append(name)
        return with_path(run_database(), f"/{name}")

    yield copy
    for name in made:
        await drop_database(name)


async def _fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: await _fetch(url, sql) for name, sql in _DUMPS.items()}


async def test_a_database_of_the_previous_release_answers_byte_for_byte_after_migrating(
    old_release: tuple[str, dict[str, Any]], copy_of: Callable[[str], Awaitable[str]]
) -> None:
    """Opening the old database migrates it; every job, history page, error list and listing
    body is the old release's, byte for byte; every event reads back with its position, id, time
    and fields; the next position is above every old one."""
    name, written = old_release
    url = await copy_of(name)
    rows = await _fetch(url, _OLD_EVENTS)
    [(old_next,)] = await _fetch(url, "SELECT last_value FROM events_position_seq")
    assert len(rows) > 50

    assert await answers(url, written["secret"]) == written["answers"]

    store = PostgresStore(url)
    await store.open()
    try:
        recorded = await store.read_log(0, 10_000)
        assert await store.missing_migrations() == []
        assert await store.last_position() == rows[-1][2]
    finally:
        await store.close()
    assert [(e.job_id, e.version, e.position, e.event_id, e.recorded_at, e.event)
            for e in recorded] == [
        (job_id, version, position, event_id, lean.recorded_at(at),
         decode_stored(kind, schema, data))
        for job_id, version, position, event_id, at, kind, schema, data in rows]
    tables = {row[0] for row in await _fetch(
        url, "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = "
        "'public'::regnamespace")}
    assert "events" not in tables
    assert await _fetch(url, "SELECT last_value FROM log_position") == [(old_next,)]


async def test_replay_verify_is_clean_after_migrating(
    old_release: tuple[str, dict[str, Any]], copy_of: Callable[[str], Awaitable[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`jobtracker replay --verify` finds the migrated projection equal to the migrated log."""
    url = await copy_of(old_release[0])
    assert await asyncio.to_thread(main, ["migrate", "--store", url]) == 0
    assert await asyncio.to_thread(main, ["replay", "--verify", "--store", url]) == 0
    assert "differ" not in capsys.readouterr().out.replace("0 differ", "")


async def test_an_interrupted_migration_resumes_and_ends_identical(
    old_release: tuple[str, dict[str, Any]], copy_of: Callable[[str], Awaitable[str]]
) -> None:
    """A migration stopped after its first batch goes on from there at the next open and leaves
    the database exactly as one run through does."""
    whole = await copy_of(old_release[0])
    conn = await asyncpg.connect(whole)
    try:
        await migrate_postgres(conn)
    finally:
        await conn.close()
    cut = await copy_of(old_release[0])
    calls = 0

    async def one_batch_then_crash(conn: Any, last: bool) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt  # as a kill would stop it: the open batch is lost
        return await lean.copy_batch(conn, last, batch=7)

    conn = await asyncpg.connect(cut)
    try:
        with pytest.raises(KeyboardInterrupt):
            await migrate_postgres(conn, {lean.LEAN_LOG: one_batch_then_crash})
    finally:
        conn.terminate()
    assert await _fetch(cut, "SELECT sum(length(types)) FROM log") == [(7,)]
    assert (await _fetch(cut, "SELECT count(*) FROM events"))[0][0] > 7
    conn = await asyncpg.connect(cut)
    try:
        # the lean log's migration resumes; those after it run as on any database
        assert await migrate_postgres(conn) == [
            name for name in migration_names("postgres") if name >= lean.LEAN_LOG
        ]
    finally:
        await conn.close()
    assert await _dump(cut) == await _dump(whole)


async def test_ids_of_a_migrated_database_still_deduplicate(
    old_release: tuple[str, dict[str, Any]], copy_of: Callable[[str], Awaitable[str]]
) -> None:
    """Re-sent events of the old database (a UUID id, now 16 bytes; a client's own id, still
    text) are recognised; the same UUID in capitals is another id, as before."""
    store = PostgresStore(await copy_of(old_release[0]))
    await store.open()
    try:
        started, progress = B_EVENTS
        resent = [NewEvent(started["event_id"], Started()),
                  NewEvent(progress["event_id"], ProgressReported(1, 9))]
        again = await store.append("b", resent)
        assert (again.appended, again.duplicates, again.version) == (0, 2, 3)
        other = await store.append("b", [NewEvent(started["event_id"].upper(), Started())])
        assert (other.appended, other.version) == (1, 4)
        [(kind,)] = await _fetch(store.url, "SELECT count(*) FROM log_text_ids WHERE event_id = "
                                 f"'{started['event_id'].upper()}'")
        assert kind == 1
    finally:
        await store.close()
