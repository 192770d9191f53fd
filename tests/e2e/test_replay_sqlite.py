"""Replay on a real SQLite file: the command line, concurrent writers, and old event shapes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson

from jobtracker.domain.events import Created, NewEvent, RowFailed, RowSucceeded, Started, Succeeded
from jobtracker.domain.stored import form_code
from jobtracker.store import SqliteStore, replay
from jobtracker.store.sqlite.log import SqliteLog


def new(event: object) -> NewEvent:
    return NewEvent(str(uuid.uuid4()), event)  # type: ignore[arg-type]


def make_log(path: Path, jobs: int = 3, rows: int = 40) -> None:
    """A small log: a few finished jobs with successes, errors and e-mails."""
    log = SqliteLog(str(path))
    log.migrate()
    for n in range(jobs):
        job_id = f"job-{n}"
        log.create_job(job_id, Created(owner="key_owner", total=rows))
        batch = [new(Started())]
        batch += [new(RowFailed(r, "x@uni.edu", "bad") if r % 5 == 0
                      else RowSucceeded(r, "a@uni.edu", internal=r % 2 == 0)) for r in range(rows)]
        log.append(job_id, [*batch, new(Succeeded())])
    log.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobtracker", "replay", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_verify_exits_1_naming_the_job_whose_projection_was_corrupted(tmp_path: Path) -> None:
    """`jobtracker replay --verify` passes on a sound file and names the jobs tampered with."""
    db = tmp_path / "jobs.db"
    make_log(db)
    url = f"sqlite:///{db}"
    sound = run_cli("--store", url, "--verify")
    assert sound.returncode == 0, sound.stderr
    assert "identical" in sound.stdout
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET successful = successful + 1 WHERE job_id = 'job-1'")
        conn.execute("DELETE FROM job_errors WHERE job_id = 'job-2' AND row = 5")
    broken = run_cli("--store", url, "--verify")
    assert broken.returncode == 1
    assert "job job-1:" in broken.stdout
    assert "successful: live 33, log says 32" in broken.stdout
    assert "job job-2:" in broken.stdout
    assert "row errors only in the log: row 5" in broken.stdout
    assert "job job-0" not in broken.stdout
    repaired = run_cli("--store", url)
    assert repaired.returncode == 0, repaired.stderr
    assert run_cli("--store", url, "--verify").returncode == 0


def test_script_and_at_print_a_job_as_it_was(tmp_path: Path) -> None:
    """scripts/replay.py --job --at prints the job's GET body as of that position."""
    db = tmp_path / "jobs.db"
    make_log(db, jobs=1, rows=4)
    script = Path(__file__).resolve().parents[2] / "scripts" / "replay.py"
    done = subprocess.run(
        [sys.executable, str(script), "--store", f"sqlite:///{db}", "--job", "job-0", "--at", "4"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    body = orjson.loads(done.stdout)
    assert body == {"job_id": "job-0", "status": "PROGRESS",
                    "progress": {"current": 2, "total": 4, "status": "Procesando fila 2 de 4"}}


def test_appends_from_another_process_during_replay_are_kept(tmp_path: Path) -> None:
    """A writer on its own connection keeps appending, and reading, while replay swaps tables."""
    db = tmp_path / "jobs.db"
    make_log(db, jobs=4, rows=300)
    writer = SqliteLog(str(db))
    writer.create_job("busy", Created(owner="key_owner"))
    stop = threading.Event()
    acknowledged = 0

    def keep_appending() -> None:
        nonlocal acknowledged
        while not stop.is_set():
            writer.append("busy", [new(RowSucceeded(acknowledged, "a@uni.edu", True))])
            acknowledged += 1
            assert writer.get_job("job-0", 10) is not None  # GET keeps answering
            # SQLite's busy handler is not fair: a writer that never pauses starves the others.
            time.sleep(0.002)

    async def rebuild_and_verify() -> tuple[int, int]:
        store = SqliteStore(str(db))
        await store.open()
        try:
            await replay.rebuild(store, chunk=50)
            stop.set()
            thread.join()
            check = await replay.verify(store)
            assert check.comparison is not None
            view = await store.get_job("busy", 10)
            assert view is not None
            return check.comparison.differing, view.state.successful
        finally:
            await store.close()

    thread = threading.Thread(target=keep_appending)
    thread.start()
    try:
        differing, successful = asyncio.run(rebuild_and_verify())
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert acknowledged > 0
    assert (differing, successful) == (0, acknowledged)


def test_event_stored_in_an_older_shape_is_read_upcast(tmp_path: Path) -> None:
    """A v1 `row_failed` (text under `message`) reads back as today's event and replays."""
    db = tmp_path / "jobs.db"
    log = SqliteLog(str(db))
    log.migrate()
    log.create_job("legacy", Created(owner="key_owner"))
    log.conn.execute(
        "INSERT INTO log (job_key, version, event_id, type, data, at) "
        "VALUES ((SELECT job_key FROM log_jobs WHERE job_id = 'legacy'), 2, 'old-1', ?, ?, "
        "'2020-01-01T00:00:00.000000Z')",
        (form_code("row_failed", 1), orjson.dumps([3, "x@uni.edu", "Calificacion invalida"])),
    )
    (event,) = [e.event for e in log.read_job_events("legacy", after_version=1)]
    assert event == RowFailed(3, "x@uni.edu", "Calificacion invalida")
    log.close()

    async def rebuild() -> tuple[int, tuple[object, ...]]:
        store = SqliteStore(str(db))
        await store.open()
        try:
            await replay.rebuild(store)
            view = await store.get_job("legacy", 10)
            assert view is not None
            return view.state.failed, tuple(await store.read_job_errors("legacy"))
        finally:
            await store.close()

    failed, errors = asyncio.run(rebuild())
    assert failed == 1
    assert [e.error for e in errors] == ["Calificacion invalida"]  # type: ignore[attr-defined]


def test_indexes_and_triggers_of_the_projection_survive_a_rebuild(tmp_path: Path) -> None:
    """A migration's own index or trigger on a projection table is still there after a swap."""
    db = tmp_path / "jobs.db"
    make_log(db, jobs=2, rows=5)
    with sqlite3.connect(db) as conn:
        conn.executescript(
            "CREATE INDEX jobs_by_owner ON jobs (owner);"
            "CREATE TABLE created_jobs (job_id TEXT);"
            "CREATE TRIGGER jobs_created AFTER INSERT ON jobs "
            "BEGIN INSERT INTO created_jobs VALUES (new.job_id); END;"
        )
    assert run_cli("--store", f"sqlite:///{db}").returncode == 0
    log = SqliteLog(str(db))
    log.create_job("after", Created(owner="key_owner"))
    log.close()
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE name IN "
            "('jobs_by_owner', 'jobs_created') ORDER BY name"
        ).fetchall()
        created = conn.execute("SELECT job_id FROM created_jobs").fetchall()
        leftovers = conn.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE '%\\_\\_%' ESCAPE '\\'"
        ).fetchall()
    assert found == [("index", "jobs_by_owner", "jobs"), ("trigger", "jobs_created", "jobs")]
    assert ("after",) in created
    assert leftovers == []


def test_replay_of_a_log_with_a_gap_fails_loudly_and_changes_nothing(tmp_path: Path) -> None:
    """A missing version is named, the command exits 1, and the live projection stays as it was."""
    db = tmp_path / "jobs.db"
    make_log(db, jobs=1, rows=3)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO log (job_key, version, event_id, type, data, at) "
            "VALUES ((SELECT job_key FROM log_jobs WHERE job_id = 'job-0'), 9, 'stray', 2, '[]', 0)"
        )
        before = conn.execute("SELECT * FROM jobs").fetchall()
    done = run_cli("--store", f"sqlite:///{db}")
    assert done.returncode == 1
    assert "job job-0" in done.stderr
    assert "gap" in done.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM jobs").fetchall() == before
