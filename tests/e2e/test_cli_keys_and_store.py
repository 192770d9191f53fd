"""The first commands a user types: `keys create` says where the key went, `keys list` is a table
with a header, and `replay --at` leaves nothing behind in the live database."""

from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.e2e.test_cli import jobtracker
from tests.e2e.test_replay_sqlite import make_log


def on_a_terminal(*args: str, cwd: Path) -> str:
    """What `jobtracker ARGS` shows on a terminal (stdout is a pseudo-terminal)."""
    leader, follower = pty.openpty()
    try:
        subprocess.run([sys.executable, "-m", "jobtracker", *args], cwd=cwd, stdout=follower,
                       stderr=subprocess.DEVNULL, timeout=60, check=True)
    finally:
        os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: everything written has been read
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return shown.decode().replace("\r\n", "\n")


def test_keys_create_says_which_store_it_wrote_to(tmp_path: Path) -> None:
    """The store URL and the file's absolute path come before the secret, which stays alone on
    the last line."""
    created = jobtracker("keys", "create", "--name", "ci", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    *lines, secret = created.stdout.splitlines()
    assert secret.startswith("uc_live_")
    where = f"sqlite:///jobtracker.db ({tmp_path / 'jobtracker.db'})"
    assert any(where in line for line in lines), created.stdout


def test_keys_list_says_plainly_when_there_are_none(tmp_path: Path) -> None:
    """An empty store: no table, one line naming the store and how to make a key."""
    listed = jobtracker("keys", "list", cwd=tmp_path)
    assert (listed.returncode, listed.stdout) == (0, "")
    assert listed.stderr.startswith("no keys in sqlite:///jobtracker.db")
    assert "jobtracker keys create --name NAME" in listed.stderr


def test_keys_list_is_an_aligned_table_with_a_header_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the columns line up under a header; piped, they are tab-separated under
    the same header."""
    owner = jobtracker("keys", "create", "--name", "billing team", cwd=tmp_path)
    owner_id = owner.stdout.split()[1]
    jobtracker("keys", "create", "--name", "celery", "--scope", "worker", "--owner", owner_id,
               cwd=tmp_path)
    header, first, second = on_a_terminal("keys", "list", cwd=tmp_path).splitlines()
    assert header.split() == ["ID", "SCOPE", "STATE", "CREATED", "BINDING", "NAME"]
    for column in ("SCOPE", "STATE", "CREATED", "BINDING", "NAME"):
        at = header.index(column)
        assert first[at - 2:at] == second[at - 2:at] == "  ", (column, first, second)
    assert first.endswith("billing team")
    assert owner_id in second
    piped = jobtracker("keys", "list", cwd=tmp_path).stdout.splitlines()
    assert piped[0] == "ID\tSCOPE\tSTATE\tCREATED\tBINDING\tNAME"
    assert piped[1].split("\t")[::5] == [owner_id, "billing team"]


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def test_replay_at_without_job_counts_statuses_and_leaves_no_scratch_tables(
    tmp_path: Path,
) -> None:
    """`replay --at N` over every job prints how many jobs had each status then, and the
    database holds the same tables afterwards as before."""
    db = tmp_path / "jobs.db"
    make_log(db, jobs=2, rows=4)
    before = tables(db)
    done = jobtracker("replay", "--store", f"sqlite:///{db}", "--at", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 PROGRESS" in done.stdout
    assert "the live projection is unchanged" in done.stdout
    assert tables(db) == before
    assert not any(name.endswith("__at") for name in tables(db))
