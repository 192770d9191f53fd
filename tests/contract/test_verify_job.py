"""`replay --verify --job ID` on every store: one job checked against its own log, and only it."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import attrs
import pytest

from jobtracker.cli.main import main as jobtracker
from jobtracker.domain.events import (
    Created,
    EmailSent,
    Event,
    Failed,
    NewEvent,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
)
from jobtracker.store import MemoryStore, SqliteStore, Store, make_store, replay
from jobtracker.store.rebuild import Rebuildable
from tests.pg_database import drop_schema, new_schema_url

JOBS = [f"job-{n:02}" for n in range(24)]
#: Jobs whose projection the tests tamper with, and one they never touch.
COUNTER_FAULT, MARKS_FAULT, ERRORS_FAULT, UNTOUCHED = "job-05", "job-12", "job-17", "job-00"


def _batch(rng: random.Random, job: int, first_row: int) -> list[NewEvent]:
    events: list[Event] = []
    for row in range(first_row, first_row + rng.randint(1, 3)):
        if row % 4 == 1:
            events.append(RowFailed(row, f"r{row}@test", f"bad row {row} of job {job}"))
        else:
            events.append(RowSucceeded(row, f"r{row}@uni.edu", internal=row % 2 == 0))
            if row % 3 == 0:
                events.append(EmailSent(row, f"r{row}@uni.edu"))
    return [NewEvent(f"{job}-{first_row}-{n}", event) for n, event in enumerate(events)]


async def interleaved_jobs(store: Store) -> None:
    """24 jobs whose events alternate in the log, round after round; a third of them end in
    SUCCESS, a sixth in FAILURE, the rest stay open. Every job has row errors and e-mails."""
    rng = random.Random(27)
    for job_id in JOBS:
        await store.create_job(job_id, Created(owner="key_owner"))
    rows = dict.fromkeys(JOBS, 0)
    for round_ in range(6):
        for n, job_id in enumerate(JOBS):
            batch = _batch(rng, n, rows[job_id])
            if round_ == 0:
                batch.insert(0, NewEvent(f"{job_id}-started", Started()))
            rows[job_id] += len({e.event.row for e in batch if hasattr(e.event, "row")})
            await store.append(job_id, batch)
    for n, job_id in enumerate(JOBS):
        if n % 3 == 2:
            await store.append(job_id, [NewEvent(f"{job_id}-done", Succeeded())])
        elif n % 6 == 1:
            await store.append(job_id, [NewEvent(f"{job_id}-gave-up", Failed("gave up"))])


async def plant_faults(store: Store, postgres_url: str | None) -> None:
    """Tamper with three jobs' projections behind the store's back (their logs stay sound): a
    counter one too high, the row marks gone, the row errors gone."""
    if isinstance(store, MemoryStore):
        state = store._jobs[COUNTER_FAULT]
        store._jobs[COUNTER_FAULT] = attrs.evolve(state, successful=state.successful + 1)
        store._marks[MARKS_FAULT].clear()
        store._errors[ERRORS_FAULT].clear()
        return
    statements = [
        ("UPDATE jobs SET successful = successful + 1 WHERE job_id = $1", COUNTER_FAULT),
        ("DELETE FROM {marks} WHERE job_id = $1", MARKS_FAULT),
        ("DELETE FROM job_errors WHERE job_id = $1", ERRORS_FAULT),
    ]
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            for sql, job_id in statements:
                conn.execute(sql.format(marks="job_row_bits").replace("$1", "?"), (job_id,))
        conn.close()
        return
    assert postgres_url is not None
    conn = await asyncpg.connect(postgres_url)
    try:
        for sql, job_id in statements:
            await conn.execute(sql.format(marks="job_row_bits"), job_id)
    finally:
        await conn.close()


async def test_one_job_verifies_clean_among_many_interleaved_jobs(store: Store) -> None:
    """On a sound store, `--verify --job` finds every one of 24 interleaved jobs identical to
    its log, folding only that job's events."""
    assert isinstance(store, Rebuildable)
    await interleaved_jobs(store)
    for job_id in JOBS:
        report = await replay.verify(store, job_id=job_id, chunk=5)
        assert report.comparison is not None
        assert (report.comparison.differing, report.comparison.diffs) == (0, ()), job_id
        history = await store.read_job_events(job_id, 0, 10_000)
        assert (report.jobs, report.events) == (1, len(history))


async def test_one_job_verify_names_a_fault_in_that_job_and_ignores_the_others(
    store: Store, postgres_url: str | None
) -> None:
    """With three jobs' projections tampered with, `--verify --job` of each names it and the
    difference; of an untouched job it is clean; a whole verify names the three and no other."""
    assert isinstance(store, Rebuildable)
    await interleaved_jobs(store)
    await plant_faults(store, postgres_url)

    async def diffs_of(job_id: str | None) -> list[str]:
        comparison = (await replay.verify(store, job_id=job_id, chunk=5)).comparison
        assert comparison is not None
        assert comparison.differing == len(comparison.diffs)
        return ["\n".join(replay.describe(diff)) for diff in comparison.diffs]

    [counter] = await diffs_of(COUNTER_FAULT)
    assert counter.startswith(f"job {COUNTER_FAULT}:")
    assert "successful: live" in counter
    [marks] = await diffs_of(MARKS_FAULT)
    assert marks.startswith(f"job {MARKS_FAULT}:")
    assert "row marks only in the log: row " in marks
    [errors] = await diffs_of(ERRORS_FAULT)
    assert errors.startswith(f"job {ERRORS_FAULT}:")
    assert "row errors only in the log: row 1 (r1@test: bad row 1 of job 17)" in errors
    assert await diffs_of(UNTOUCHED) == []
    named = [text.split(":")[0] for text in await diffs_of(None)]
    assert named == [f"job {job_id}" for job_id in (COUNTER_FAULT, MARKS_FAULT, ERRORS_FAULT)]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store that outlives one process: a SQLite file or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    url = new_schema_url(request.getfixturevalue("postgres_database"))
    yield url
    drop_schema(url)


def _on_store(url: str, *, tamper: bool) -> None:
    async def fill() -> None:
        store = make_store(url)
        await store.open()
        try:
            await interleaved_jobs(store)
            if tamper:
                await plant_faults(store, url)
        finally:
            await store.close()

    asyncio.run(fill())


def test_verify_job_command_checks_that_job_alone(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`jobtracker replay --verify --job ID`: exit 0 and 'identical' for a sound job, though
    other jobs of the store are broken; exit 1 naming the job and only it when it is broken."""
    _on_store(store_url, tamper=True)

    def verify_job(job_id: str) -> tuple[int, str]:
        code = jobtracker(["replay", "--store", store_url, "--verify", "--job", job_id])
        return code, capsys.readouterr().out

    code, out = verify_job(UNTOUCHED)
    assert (code, out.count("\njob ")) == (0, 0), out
    assert " of 1 jobs " in out
    assert out.rstrip().endswith(": identical")
    code, out = verify_job(MARKS_FAULT)
    assert code == 1
    assert out.startswith(f"job {MARKS_FAULT}:\n")
    assert out.count("job job-") == 1
    assert out.rstrip().endswith(": 1 jobs differ")


def test_verify_job_command_is_clean_on_a_sound_store(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a sound store with many interleaved jobs, `--verify --job` of each job exits 0."""
    _on_store(store_url, tamper=False)
    for job_id in JOBS:
        code = jobtracker(["replay", "--store", store_url, "--verify", "--job", job_id])
        out = capsys.readouterr().out
        assert code == 0, out
        assert " of 1 jobs " in out
