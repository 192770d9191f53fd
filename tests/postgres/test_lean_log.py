"""PostgreSQL's lean log (migration 0010): batches cut into pages exactly, ids unique across the
whole log in both of their tables, and the SQL's copy of the type codes the same as Python's."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from jobtracker.domain.errors import EventIdReused
from jobtracker.domain.events import (
    Created,
    EmailSent,
    NewEvent,
    RowSucceeded,
    Started,
    Succeeded,
)
from jobtracker.domain.stored import TYPE_CODES
from jobtracker.store.base import utc_now
from jobtracker.store.postgres.commit import commit_group, no_pause
from jobtracker.store.postgres.plan import prepare
from jobtracker.store.rows import Remembered
from tests.postgres.conftest import OpenStore


async def _fetch(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


def _rows(job: str, first: int, count: int) -> list[NewEvent]:
    return [NewEvent(f"{job}-{row}" if row % 2 else str(uuid.uuid4()),
                     RowSucceeded(row, f"r{row}@uni.edu", internal=row % 3 == 0))
            for row in range(first, first + count)]


async def test_every_page_is_cut_out_of_the_batches_exactly(
    open_store: OpenStore, pg_url: str
) -> None:
    """Two jobs written in batches of 1 to 7 events (a `log` row each), interleaved: every page of
    the log, of each history and of the change feed, starting and ending anywhere inside a batch,
    is exactly that slice of the events one by one."""
    store = await open_store()
    for job in ("a", "b"):
        await store.create_job(job, Created(owner="key_a"))
    rows = {"a": 0, "b": 0}
    for size in (1, 7, 3, 5, 2, 6, 1, 4):
        for job in ("a", "b"):
            await store.append(job, _rows(job, rows[job], size))
            rows[job] += size
    [(batches,)] = await _fetch(pg_url, "SELECT count(*) FROM log")
    everything = await store.read_log(0, 10_000)
    assert batches == 2 + 16 < len(everything)
    assert [e.position for e in everything] == sorted({e.position for e in everything})
    for after in range(0, everything[-1].position + 1):
        for limit in (1, 2, 3, 8, 100):
            expected = [e for e in everything if e.position > after][:limit]
            assert await store.read_log(after, limit) == expected, (after, limit)
            scanned = await store.scan_log(after, limit)
            assert [row[:3] for row in scanned] == [
                (e.job_id, e.version, e.position) for e in expected]
            heads: dict[str, tuple[int, int]] = {}
            for e in expected:
                heads.pop(e.job_id, None)
                heads[e.job_id] = (e.version, e.position)
            changes = await store.changes_since(after, limit)
            assert [(c.job_id, c.version, c.position) for c in changes] == [
                (job, *head) for job, head in heads.items()]
    for job in ("a", "b"):
        history = [e for e in everything if e.job_id == job]
        assert [e.version for e in history] == list(range(1, len(history) + 1))
        for after in range(0, len(history) + 1):
            for limit in (1, 4, 100):
                assert await store.read_job_events(job, after, limit) == [
                    e for e in history if e.version > after][:limit]
    cut = everything[len(everything) // 2].position
    assert [row[2] for row in await store.scan_log(0, 10_000, upto=cut)] == [
        e.position for e in everything if e.position <= cut]


async def test_an_event_id_names_one_event_across_jobs_in_either_table(
    open_store: OpenStore, pg_url: str
) -> None:
    """A UUID id and a client's own id, each recorded on one job, are refused on another; each
    sits in its own table, once; the same UUID in capitals is a text id of its own."""
    store = await open_store()
    for job in ("one", "two"):
        await store.create_job(job, Created(owner="key_a"))
    lower = str(uuid.uuid4())
    await store.append("one", [NewEvent(lower, Started()), NewEvent("mine-1", EmailSent(1, "x@y"))])
    for event_id in (lower, "mine-1"):
        with pytest.raises(EventIdReused):
            await store.append("two", [NewEvent(event_id, Started())])
    again = await store.append("two", [NewEvent(lower.upper(), Started())])
    assert again.appended == 1
    assert await _fetch(pg_url, f"SELECT count(*) FROM log_ids WHERE event_id = '{lower}'") == [
        (1,)]
    assert await _fetch(pg_url, "SELECT event_id FROM log_text_ids ORDER BY position") == [
        ("mine-1",), (lower.upper(),)]
    assert [e.event_id for e in await store.read_job_events("two")][1:] == [lower.upper()]


async def test_one_group_files_each_batch_s_ids_by_their_form(
    open_store: OpenStore, pg_url: str
) -> None:
    """Groups of one commit mixing batches of packed UUIDs, of text ids and of both (a lowercase
    UUID among text ids, a capital one kept as text) put every id, at its event's position, in
    the table of its form; a re-sent group is answered as duplicates and writes nothing."""
    store = await open_store()
    jobs = ("packed", "text", "mixed", "capitals")
    for job in jobs:
        await store.create_job(job, Created(owner="key_a"))
    def row(event_id: str, n: int) -> NewEvent:
        return NewEvent(event_id, RowSucceeded(n, f"r{n}@uni.edu", internal=False))

    first = {
        "packed": [row(str(uuid.uuid4()), 0), row(str(uuid.uuid4()), 1)],
        "text": [row("text-1", 0), row("text-2", 1)],
    }
    lower = str(uuid.uuid4())
    second = {
        "mixed": [row("mixed-1", 0), row(lower, 1)],
        "capitals": [row(str(uuid.uuid4()).upper(), 0)],
        "packed": [row(str(uuid.uuid4()), 2)],
    }
    conn = await asyncpg.connect(pg_url)
    try:
        for group, again in ((first, False), (second, False), (second, True)):
            requests = [prepare(job, items) for job, items in group.items()]
            outcomes, _ = await commit_group(conn, requests, no_pause, Remembered())
            assert [(o.appended, o.duplicates) for o in outcomes] == [  # type: ignore[union-attr]
                (0, len(items)) if again else (len(items), 0) for items in group.values()]
    finally:
        await conn.close()
    recorded = [e for e in await store.read_log(0, 100) if e.version > 1]
    assert sorted((e.job_id, e.event_id) for e in recorded) == sorted(
        (job, item.event_id) for group in (first, second) for job, items in group.items()
        for item in items)
    filed = await _fetch(pg_url, "SELECT event_id::text, position, true FROM log_ids UNION ALL "
                                 "SELECT event_id, position, false FROM log_text_ids")
    assert {(e.event_id, e.position, e.event_id in {lower} or e.job_id == "packed")
            for e in recorded} <= set(filed)
    assert len(filed) == len(jobs) + len(recorded)


async def test_a_prune_takes_the_ids_of_the_jobs_it_removes(
    open_store: OpenStore, pg_url: str
) -> None:
    """The ids of a pruned job's events leave both id tables with its batches and its key; the
    other job's stay."""
    store = await open_store()
    for job in ("gone", "kept"):
        await store.create_job(job, Created(owner="key_a"))
        await store.append(job, [NewEvent(f"{job}-start", Started()), *_rows(job, 0, 4)])
    await store.append("gone", [NewEvent(str(uuid.uuid4()), Succeeded())])
    count = ("SELECT (SELECT count(*) FROM log_ids), (SELECT count(*) FROM log_text_ids), "
             "(SELECT count(*) FROM log_jobs), (SELECT count(*) FROM log)")
    [before] = await _fetch(pg_url, count)
    done = await store.prune(utc_now(), 10)
    assert (done.jobs, done.events) == (1, 7)
    [after] = await _fetch(pg_url, count)
    # gone: created + 2 UUID rows + succeeded in log_ids, start + 2 rows as text; 3 batches
    assert [b - a for a, b in zip(after, before, strict=True)] == [4, 3, 1, 3]
    assert len(await store.read_job_events("kept")) == 6


async def test_the_sql_type_codes_are_the_domain_s(pg_url: str, open_store: OpenStore) -> None:
    """Migration 0010's copy of `stored.TYPE_CODES` (for events written by hand, and for the
    `events` view) agrees with it in both directions."""
    await open_store()
    found = await _fetch(pg_url, "SELECT k, log_type_code(k) FROM unnest(ARRAY["
                         + ", ".join(f"'{kind}'" for kind in TYPE_CODES) + "]) AS k")
    assert dict(found) == TYPE_CODES  # type: ignore[arg-type]
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("INSERT INTO log_jobs (job_id) VALUES ('j')")
        for code in TYPE_CODES.values():
            await conn.execute(
                "INSERT INTO log (job_key, last_version, last_position, types, texts, data) "
                "SELECT job_key, $1, $1, $2, ARRAY['id-' || $1::bigint], '{}' FROM log_jobs",
                code, bytes([code]))
        shown = await conn.fetch("SELECT type, schema_version FROM events ORDER BY version")
    finally:
        await conn.close()
    assert [tuple(row) for row in shown] == [(kind, 1) for kind in TYPE_CODES]
