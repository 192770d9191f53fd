"""The wal-index header moves on every commit from any connection, so cached keys never go stale."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobtracker.store.sqlite.log import connect
from jobtracker.store.sqlite.walwatch import HEADER_BYTES, WalWatch, readable_at, sqlite_mapping

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


def _shm_locks(path: Path) -> list[str]:
    """This process's POSIX locks on the database's -shm file, from /proc/locks."""
    inode = os.stat(f"{path}-shm").st_ino
    return [
        line for line in Path("/proc/locks").read_text().splitlines()
        if f":{inode} " in line and f" {os.getpid()} " in line
    ]


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_watching_the_header_leaves_sqlites_shared_memory_lock_in_place(tmp_path: Path) -> None:
    """Opening and closing a watch releases none of SQLite's locks on -shm: without its lock,
    the next process to open the database rebuilds -shm under our mapping (SIGBUS)."""
    path = tmp_path / "locked.db"
    reader = connect(str(path))
    reader.execute("CREATE TABLE t (v TEXT)")
    reader.execute("SELECT count(*) FROM t").fetchone()
    held = _shm_locks(path)
    assert held, "SQLite holds a lock on -shm while a connection is open"
    watch = WalWatch.open(str(path))
    assert watch is not None
    watch.header()
    watch.close()
    assert _shm_locks(path) == held
    reader.close()


def test_the_header_is_found_only_at_the_start_of_the_right_file(tmp_path: Path) -> None:
    """The mapping of the -shm file at offset 0 is chosen; other regions and files are not."""
    maps = tmp_path / "maps"
    maps.write_text(
        "7f0000000000-7f0000008000 rw-s 00008000 fe:00 42    /data/my jobs.db-shm\n"
        "7f0000010000-7f0000018000 rw-s 00000000 fe:00 41    /data/other.db-shm\n"
        "7f0000020000-7f0000028000 rw-s 00000000 fe:00 42    /data/my jobs.db-shm\n"
    )
    found = sqlite_mapping("/data/my jobs.db-shm", 42, str(maps))
    assert found == 0x7F0000020000
    assert sqlite_mapping("/data/my jobs.db-shm", 43, str(maps)) is None


def open_watched(path: Path) -> tuple[sqlite3.Connection, WalWatch]:
    """A connection that has read the database (so SQLite mapped its wal-index), and a watch."""
    conn = connect(str(path))
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("SELECT count(*) FROM t").fetchone()
    watch = WalWatch.open(str(path))
    assert watch is not None
    return conn, watch


def test_a_closed_watch_counts_every_look_as_a_change(tmp_path: Path) -> None:
    """After the store stops the watch, a look reads nothing from SQLite's (soon unmapped) memory
    and answers None, which every caller takes as 'something moved'."""
    conn, watch = open_watched(tmp_path / "closing.db")
    assert watch.header() is not None
    watch.close()
    assert watch.header() is None
    conn.close()


def test_the_header_read_from_the_mapping_is_the_one_sqlite_wrote(tmp_path: Path) -> None:
    """The direct read and a read through /proc/self/mem see the same bytes, commit after commit."""
    path = tmp_path / "same.db"
    conn, watch = open_watched(path)
    shm = os.path.realpath(f"{path}-shm")
    address = sqlite_mapping(shm, os.stat(shm).st_ino)
    assert address is not None
    memory = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for _ in range(3):
            conn.execute("INSERT INTO t (v) VALUES ('x')")
            conn.commit()
            through_proc = os.pread(memory, HEADER_BYTES, address)
            assert watch.header() == through_proc
    finally:
        os.close(memory)
        watch.close()
        conn.close()


def test_an_address_nothing_maps_is_refused_not_read() -> None:
    """Where the mapping is not there, the watch is not made: reading it would crash the server."""
    assert not readable_at(0)
