"""Replay on a real PostgreSQL schema: the command line, other processes, and old event shapes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import orjson
import pytest

from jobtracker.domain.errors import JobFinished
from jobtracker.domain.events import (
    Created,
    Event,
    NewEvent,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
)
from jobtracker.domain.state import RowError
from jobtracker.store import replay
from jobtracker.store.base import utc_now
from jobtracker.store.postgres import PostgresStore
from tests.postgres.conftest import OpenStore

ROOT = Path(__file__).resolve().parents[2]


def new(event: Event) -> NewEvent:
    return NewEvent(str(uuid.uuid4()), event)


async def make_log(store: PostgresStore, jobs: int = 3, rows: int = 40) -> None:
    """A few finished jobs with successes and row errors, each appended in one batch."""
    for n in range(jobs):
        job_id = f"job-{n}"
        await store.create_job(job_id, Created(owner="key_owner", total=rows))
        batch = [new(Started())]
        batch += [new(RowFailed(r, "x@uni.edu", "bad") if r % 5 == 0
                      else RowSucceeded(r, "a@uni.edu", internal=r % 2 == 0)) for r in range(rows)]
        await store.append(job_id, [*batch, new(Succeeded())])


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobtracker", "replay", "--store", url, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


async def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, url, *args)


async def execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fetch(url: str, query: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


async def test_verify_exits_1_naming_the_job_whose_projection_was_corrupted(
    open_store: OpenStore, pg_url: str
) -> None:
    """`jobtracker replay --verify` passes on a sound schema and names the jobs tampered with."""
    await make_log(await open_store())
    sound = await cli(pg_url, "--verify")
    assert sound.returncode == 0, sound.stderr
    assert "identical" in sound.stdout
    await execute(
        pg_url,
        "UPDATE jobs SET successful = successful + 1 WHERE job_id = 'job-1'",
        "DELETE FROM job_errors WHERE job_id = 'job-2' AND row = 5",
    )
    broken = await cli(pg_url, "--verify")
    assert broken.returncode == 1
    assert "job job-1:" in broken.stdout
    assert "successful: live 33, log says 32" in broken.stdout
    assert "job job-2:" in broken.stdout
    assert "row errors only in the log: row 5" in broken.stdout
    assert "job job-0" not in broken.stdout
    repaired = await cli(pg_url)
    assert repaired.returncode == 0, repaired.stderr
    assert (await cli(pg_url, "--verify")).returncode == 0
    assert await fetch(pg_url, "SELECT successful FROM jobs WHERE job_id = 'job-1'") == [(32,)]


async def test_one_job_replay_repairs_only_that_job(open_store: OpenStore, pg_url: str) -> None:
    """`replay --job` repairs the job it names and leaves another corrupted job as it was."""
    await make_log(await open_store())
    await execute(pg_url, "UPDATE jobs SET failed = 0 WHERE job_id IN ('job-0', 'job-1')")
    done = await cli(pg_url, "--job", "job-0")
    assert done.returncode == 0, done.stderr
    failed = await fetch(pg_url, "SELECT job_id, failed FROM jobs ORDER BY job_id")
    assert failed == [("job-0", 8), ("job-1", 0), ("job-2", 8)]


async def test_at_prints_a_job_as_it_was_and_leaves_no_at_tables(
    open_store: OpenStore, pg_url: str
) -> None:
    """--job --at prints the GET body as of a position; --at alone counts the statuses then and
    drops its scratch tables, live untouched."""
    await make_log(await open_store(), jobs=1, rows=4)
    script = ROOT / "scripts" / "replay.py"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), "--store", pg_url, "--job", "job-0", "--at", "4"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert orjson.loads(done.stdout) == {
        "job_id": "job-0", "status": "PROGRESS",
        "progress": {"current": 2, "total": 4, "status": "Procesando fila 2 de 4"},
    }
    whole = await cli(pg_url, "--at", "4")
    assert whole.returncode == 0, whole.stderr
    assert "1 PROGRESS" in whole.stdout
    assert await fetch(pg_url, "SELECT to_regclass('jobs__at') IS NULL") == [(True,)]
    assert await fetch(pg_url, "SELECT status FROM jobs") == [("SUCCESS",)]


async def test_appends_and_reads_from_another_process_during_replay_are_kept(
    open_store: OpenStore, pg_url: str
) -> None:
    """While `jobtracker replay` runs in its own process, this one appends and GETs throughout."""
    store = await open_store()
    await make_log(store, jobs=4, rows=300)
    await store.create_job("busy", Created(owner="key_owner"))
    acknowledged = 0
    stop = asyncio.Event()

    async def keep_appending() -> None:
        nonlocal acknowledged
        while not stop.is_set():
            await store.append("busy", [new(RowSucceeded(acknowledged, "a@uni.edu", True))])
            acknowledged += 1
            assert await store.get_job("job-0", 10) is not None  # GET keeps answering

    writer = asyncio.create_task(keep_appending())
    try:
        done = await cli(pg_url)
    finally:
        stop.set()
        await writer
    assert done.returncode == 0, done.stderr
    check = await replay.verify(store)
    assert check.comparison is not None
    view = await store.get_job("busy", 10)
    assert view is not None
    assert acknowledged > 0
    assert (check.comparison.differing, view.state.successful) == (0, acknowledged)


async def test_event_stored_in_an_older_shape_is_read_upcast(
    open_store: OpenStore, pg_url: str
) -> None:
    """A v1 `row_failed` (text under `message`) reads back as today's event and replays."""
    store = await open_store()
    await store.create_job("legacy", Created(owner="key_owner"))
    await execute(
        pg_url,
        "INSERT INTO events (job_id, version, event_id, type, schema_version, data) "
        "VALUES ('legacy', 2, 'old-1', 'row_failed', 1, "
        """'{"row": 3, "email": "x@uni.edu", "message": "Calificacion invalida"}')""",
    )
    (event,) = [e.event for e in await store.read_job_events("legacy", after_version=1)]
    assert event == RowFailed(3, "x@uni.edu", "Calificacion invalida")
    await replay.rebuild(store)
    view = await store.get_job("legacy", 10)
    assert view is not None
    assert view.state.failed == 1
    assert await store.read_job_errors("legacy") == [
        RowError(3, "x@uni.edu", "Calificacion invalida")
    ]
    # A worker re-sending that event today is told it is a duplicate, not a conflict.
    resent = await store.append(
        "legacy", [NewEvent("old-1", RowFailed(3, "x@uni.edu", "Calificacion invalida"))]
    )
    assert (resent.appended, resent.duplicates) == (0, 1)


async def test_events_are_stored_with_their_schema_version(
    open_store: OpenStore, pg_url: str
) -> None:
    """A `row_failed` written today records schema version 2, so a later reader never upcasts it."""
    store = await open_store()
    await make_log(store, jobs=1, rows=6)
    versions = await fetch(
        pg_url, "SELECT DISTINCT type, schema_version FROM events ORDER BY type"
    )
    assert versions == [("created", 1), ("row_failed", 2), ("row_succeeded", 1),
                        ("started", 1), ("succeeded", 1)]


async def test_replay_of_a_log_with_a_gap_fails_loudly_and_changes_nothing(
    open_store: OpenStore, pg_url: str
) -> None:
    """A missing version is named, the command exits 1, and the live projection stays as it was."""
    await make_log(await open_store(), jobs=1, rows=3)
    await execute(
        pg_url,
        "INSERT INTO events (job_id, version, event_id, type, data) "
        "VALUES ('job-0', 9, 'stray', 'started', '{}')",
    )
    before = await fetch(pg_url, "SELECT * FROM jobs")
    done = await cli(pg_url)
    assert done.returncode == 1
    assert "job job-0" in done.stderr
    assert "gap" in done.stderr
    assert await fetch(pg_url, "SELECT * FROM jobs") == before


async def test_replays_under_many_writers_on_two_stores_lose_nothing(
    open_store: OpenStore,
) -> None:
    """Full and one-job rebuilds and a verify, while six writers on two pools keep appending."""
    first, second = await open_store(), await open_store()
    await make_log(first, jobs=2, rows=100)
    writers = [f"w{n}" for n in range(6)]
    for job_id in writers:
        await first.create_job(job_id, Created(owner="key_owner"))
    acknowledged = dict.fromkeys(writers, 0)
    stop = asyncio.Event()

    async def keep_appending(job_id: str, store: PostgresStore) -> None:
        while not stop.is_set():
            row = acknowledged[job_id]
            await store.append(job_id, [new(RowSucceeded(row, "a@uni.edu", True))])
            acknowledged[job_id] = row + 1

    tasks = [asyncio.create_task(keep_appending(job_id, (first, second)[n % 2]))
             for n, job_id in enumerate(writers)]
    try:
        await replay.rebuild(first, chunk=20)
        await replay.rebuild(second, job_id="w1", chunk=3)
        during = await replay.verify(second, chunk=20)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert during.comparison is not None
    assert during.comparison.differing == 0
    for job_id, count in acknowledged.items():
        view = await second.get_job(job_id, 10)
        assert view is not None
        assert count > 0
        assert (view.state.successful, view.state.version) == (count, count + 1)
    after = await replay.verify(first)
    assert after.comparison is not None
    assert after.comparison.differing == 0


async def test_rebuild_restores_a_deleted_job_and_drops_one_the_log_lacks(
    open_store: OpenStore, pg_url: str
) -> None:
    """A job row deleted by hand comes back; a row the log never had goes; verify names both."""
    store = await open_store()
    await make_log(store, jobs=2, rows=10)
    before = await fetch(pg_url, "SELECT * FROM jobs ORDER BY job_id")
    await execute(
        pg_url,
        "DELETE FROM jobs WHERE job_id = 'job-0'",
        "INSERT INTO jobs SELECT 'ghost', owner, status, version, label, expected_total, "
        "progress_current, progress_total, progress_status, successful, failed, internal_count, "
        "external_count, emails_sent, emails_failed, error, updated_position "
        "FROM jobs WHERE job_id = 'job-1'",
        # row 99 is bit 35 of chunk 1
        "INSERT INTO job_row_bits VALUES ('job-1', 'email', 1, 1::bigint << 35)",
    )
    check = await replay.verify(store)
    assert check.comparison is not None
    described = "\n".join(line for diff in check.comparison.diffs for line in replay.describe(diff))
    assert "job job-0:\n  missing from the live projection" in described
    assert "job ghost:\n  in the live projection, though the log has no such job" in described
    assert "row marks only in the live projection: row 99 (email)" in described
    await replay.rebuild(store)
    assert await fetch(pg_url, "SELECT * FROM jobs ORDER BY job_id") == before
    assert await fetch(pg_url, "SELECT * FROM job_row_bits WHERE kind = 'email'") == []
    with pytest.raises(JobFinished):  # the store knows the restored job, and that it finished
        await store.append("job-0", [new(Started())])


async def test_replay_in_chunks_cut_inside_batches_equals_the_live_projection(
    open_store: OpenStore, pg_url: str
) -> None:
    """Each append is one `log` row of many events; replay read in chunks that end inside those
    rows (whole log and one job) rebuilds exactly the projection the appends made, and a fold up
    to a position inside a row stops there."""
    store = await open_store()
    await make_log(store, jobs=3, rows=40)  # rows of 1 and 42 events
    tables = ("SELECT * FROM jobs ORDER BY job_id", "SELECT * FROM job_row_bits ORDER BY 1, 2, 3",
              "SELECT * FROM job_errors ORDER BY 1, 2")
    live = [await fetch(pg_url, query) for query in tables]
    assert await fetch(pg_url, "SELECT count(*), max(length(types)) FROM log") == [(6, 42)]
    await execute(pg_url, "DELETE FROM job_errors", "DELETE FROM job_row_bits",
                  "UPDATE jobs SET successful = 0, version = 1")
    report = await replay.rebuild(store, chunk=7)
    assert (report.events, report.jobs) == (3 * 43, 3)
    assert [await fetch(pg_url, query) for query in tables] == live
    await execute(pg_url, "UPDATE jobs SET failed = 0 WHERE job_id = 'job-1'")
    await replay.rebuild(store, job_id="job-1", chunk=5)
    assert [await fetch(pg_url, query) for query in tables] == live
    check = await replay.verify(store, chunk=11)
    assert check.comparison is not None
    assert check.comparison.differing == 0
    # job-0 holds positions 1-43, job-1 44-86: at 64, job-1 has taken 20 events of its batch
    at = await replay.job_at(store, "job-1", 43 + 1 + 20, errors_limit=10)
    assert (at.state.version, at.state.successful + at.state.failed) == (21, 19)


async def test_replay_in_small_chunks_goes_on_past_a_pruned_stretch_of_the_log(
    open_store: OpenStore, pg_url: str
) -> None:
    """Pruned jobs leave a stretch of positions with no events, longer than a chunk: replay
    reads on past it to the jobs after it, and rebuilds them as they are live."""
    store = await open_store()
    await make_log(store, jobs=3, rows=40)  # positions 1-129, 43 per job
    await store.create_job("late", Created(owner="key_owner", total=5))
    await store.append("late", [new(Started()), new(RowSucceeded(0, "a@uni.edu", internal=True))])
    pruned = await store.prune(utc_now(), 2)
    assert pruned.jobs == 2
    [(first,)] = await fetch(pg_url, "SELECT min(last_position - length(types) + 1) FROM log")
    assert isinstance(first, int)
    assert first > 7  # no event in the first chunk's stretch of positions
    # A fold up to the end of the log: no catch-up under a lock would hide a scan stopped short.
    at = await replay.rebuild_at(store, await store.last_position(), chunk=7)
    assert (at.events, at.jobs, at.statuses) == (43 + 3, 2, {"SUCCESS": 1, "PROGRESS": 1})
    live = await fetch(pg_url, "SELECT * FROM jobs ORDER BY job_id")
    await execute(pg_url, "UPDATE jobs SET version = 1")
    report = await replay.rebuild(store, chunk=7)
    assert (report.events, report.jobs) == (43 + 3, 2)
    assert await fetch(pg_url, "SELECT * FROM jobs ORDER BY job_id") == live
