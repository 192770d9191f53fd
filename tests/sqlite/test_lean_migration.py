"""Migration 0007 (the lean log): a file of the previous release keeps every answer, resumes
when cut short, and replays clean."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobtracker.cli.main import main
from jobtracker.domain.codec import decode_stored
from jobtracker.domain.events import Created, NewEvent, ProgressReported, Started
from jobtracker.store import SqliteStore
from jobtracker.store.migrate import migrate_sqlite
from jobtracker.store.sqlite import lean
from jobtracker.store.sqlite.log import SqliteLog
from tests.old_release import B_EVENTS, answers, release_tree

ROOT = Path(__file__).resolve().parents[2]
#: What a copy of the log must hold the same, whichever way it was migrated.
_DUMPS = {
    "log": "SELECT * FROM log ORDER BY position",
    "log_jobs": "SELECT * FROM log_jobs ORDER BY job_key",
    "sequence": "SELECT name, seq FROM sqlite_sequence ORDER BY name",
    "job_index": "SELECT * FROM job_index ORDER BY job_id",
    "job_labels": "SELECT * FROM job_labels ORDER BY job_id, key",
    "jobs": "SELECT * FROM jobs ORDER BY job_id",
}


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A file written by the previous release through its API, and what that API answered."""
    folder = tmp_path_factory.mktemp("old-release")
    tree = release_tree(ROOT, folder / "tree")
    if tree is None:
        # A shallow clone has no previous release to build: say so rather than fail the run.
        pytest.skip("needs git and the history the previous release is built from")
    db, out = folder / "old.db", folder / "answers.json"
    subprocess.run([sys.executable, str(ROOT / "tests" / "old_release.py"), str(tree), str(db),
                    str(out)], check=True, cwd=folder)
    return db, json.loads(out.read_text())


def _copy(source: Path, target: Path) -> Path:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


def _dump(path: Path) -> dict[str, list[Any]]:
    with sqlite3.connect(path) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in _DUMPS.items()}


def _old_rows(path: Path) -> tuple[list[Any], int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT job_id, version, position, event_id, recorded_at, type, schema_version, data "
            "FROM events ORDER BY position").fetchall()
        (seq,) = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return rows, seq


def test_a_file_of_the_previous_release_answers_byte_for_byte_after_migrating(
    old_release: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Opening the old file migrates it; every job, history page, error list and listing body
    is the old release's, byte for byte; every event reads back with its position, id, time and
    fields; no position can be given out again."""
    old, written = old_release
    db = _copy(old, tmp_path / "jobs.db")
    rows, seq = _old_rows(db)
    now = asyncio.run(answers(f"sqlite:///{db}", written["secret"]))
    assert now == written["answers"]
    log = SqliteLog(str(db))
    recorded = log.read_log(0, 10_000)
    assert [(e.job_id, e.version, e.position, e.event_id, e.recorded_at, e.event)
            for e in recorded] == [
        (job_id, version, position, event_id, at, decode_stored(kind, schema, data))
        for job_id, version, position, event_id, at, kind, schema, data in rows]
    tables = {name for (name,) in log.conn.execute("SELECT name FROM sqlite_master")}
    assert "events" not in tables
    assert log.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'log'").fetchone() == (
        seq,)
    assert log.missing_migrations() == []
    log.close()


def test_replay_verify_is_clean_after_migrating(
    old_release: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`jobtracker replay --verify` finds the migrated projection equal to the migrated log."""
    db = _copy(old_release[0], tmp_path / "jobs.db")
    assert main(["migrate", "--store", f"sqlite:///{db}"]) == 0
    assert main(["replay", "--verify", "--store", f"sqlite:///{db}"]) == 0
    assert "differ" not in capsys.readouterr().out.replace("0 differ", "")


def test_an_interrupted_migration_resumes_and_ends_identical(
    old_release: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A migration stopped after its first batch goes on from there at the next open and leaves
    the file exactly as one run through does."""
    whole = _copy(old_release[0], tmp_path / "whole.db")
    with sqlite3.connect(whole, isolation_level=None) as conn:
        lean.migrate(conn)
    cut = _copy(old_release[0], tmp_path / "cut.db")
    calls = 0

    def one_batch_then_crash(conn: sqlite3.Connection) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt  # as a kill would stop it: the open batch is lost
        return lean.copy_batch(conn, batch=7)

    conn = sqlite3.connect(cut, isolation_level=None)
    with pytest.raises(KeyboardInterrupt):
        migrate_sqlite(conn, "sqlite", {lean.LEAN_LOG: one_batch_then_crash})
    conn.close()
    with sqlite3.connect(cut) as conn:
        assert conn.execute("SELECT count(*) FROM log").fetchone() == (7,)
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] > 7
    log = SqliteLog(str(cut))
    resumed = log.migrate()  # the lean log first, then any later migration
    log.close()
    assert resumed[0] == lean.LEAN_LOG
    assert all(name > lean.LEAN_LOG for name in resumed[1:])
    assert _dump(cut) == _dump(whole)


async def test_ids_of_a_migrated_file_still_deduplicate(
    old_release: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Re-sent events of the old file (a UUID id, now 16 bytes; a client's own id, still text)
    are recognised; the same UUID in capitals is another id, as before."""
    store = SqliteStore(str(_copy(old_release[0], tmp_path / "jobs.db")))
    await store.open()
    try:
        started, progress = B_EVENTS
        resent = [NewEvent(started["event_id"], Started()),
                  NewEvent(progress["event_id"], ProgressReported(1, 9))]
        again = await store.append("b", resent)
        assert (again.appended, again.duplicates, again.version) == (0, 2, 3)
        other = await store.append("b", [NewEvent(started["event_id"].upper(), Started())])
        assert (other.appended, other.version) == (1, 4)
    finally:
        await store.close()


@pytest.mark.parametrize("now", ["2026-12-05T10:11:12.000345Z", "2019-03-04T05:06:07.999999Z",
                                 "2025-12-31T23:59:59.000001Z", "2041-01-01T00:00:00.000000Z"])
def test_a_new_job_is_listed_at_its_creation_time_to_the_microsecond(
    tmp_path: Path, now: str
) -> None:
    """The log's trigger fills the inventory from the new layout: the owner and labels read by
    position, the packed time turned back into the log's text exactly (before 2026 too)."""
    log = SqliteLog(str(tmp_path / "jobs.db"), clock=lambda: now)
    log.migrate()
    log.create_job("new", Created(owner="key_x", labels={"team": "y"}))
    index = log.conn.execute(
        "SELECT owner, created_at, labels FROM job_index WHERE job_id = 'new'").fetchone()
    labels = log.conn.execute(
        "SELECT owner, key, value, created_at FROM job_labels WHERE job_id = 'new'").fetchall()
    (created,) = log.read_job_events("new")
    log.close()
    assert index == ("key_x", now, '{"team":"y"}')
    assert labels == [("key_x", "team", "y", now)]
    assert created.recorded_at == now
