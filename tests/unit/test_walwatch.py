"""The wal-index header moves on every commit from any connection, so cached keys never go stale."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from jobtracker.store.sqlite.log import connect
from jobtracker.store.sqlite.walwatch import WalWatch

steps = st.lists(st.sampled_from(["commit", "read", "checkpoint", "truncate"]), max_size=25)


def writer_step(conn: sqlite3.Connection, step: str) -> None:
    if step == "commit":
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES ('x')")
        conn.execute("COMMIT")
    elif step == "read":
        conn.execute("SELECT count(*) FROM t").fetchone()
    elif step == "checkpoint":
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    else:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


@settings(max_examples=40, deadline=None)
@given(plan=steps)
def test_every_commit_by_another_connection_moves_the_header(plan: list[str]) -> None:
    """Whatever mix of commits, reads and checkpoints happens, no commit leaves the header as is."""
    with tempfile.TemporaryDirectory() as folder:
        follow_plan(str(Path(folder) / "watched.db"), plan)


def follow_plan(path: str, plan: list[str]) -> None:
    reader, writer = connect(path), connect(path)
    writer.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
    reader.execute("SELECT count(*) FROM t").fetchone()
    watch = WalWatch.open(path)
    assert watch is not None
    try:
        for step in plan:
            before = watch.header()
            writer_step(writer, step)
            if step == "commit":
                assert watch.header() != before
    finally:
        watch.close()
        reader.close()
        writer.close()


def test_a_database_without_a_wal_index_has_nothing_to_watch(tmp_path: Path) -> None:
    """No -shm file (never opened in WAL mode): the store falls back to PRAGMA data_version."""
    conn = sqlite3.connect(tmp_path / "plain.db")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.close()
    assert WalWatch.open(str(tmp_path / "plain.db")) is None
