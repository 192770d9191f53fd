"""Two PostgreSQL clusters of our own on this machine: a primary and its streaming standby.

For the replica benchmark (`scripts/benchmarks/scaling.py`) and the replica tests; never the shared
server. The primary is made by `initdb` on a free port, the standby by `pg_basebackup -R` from it
(which writes `standby.signal` and `primary_conninfo`), both in a folder of their own under the
system's temporary folder, stopped and removed at the end. PostgreSQL refuses to run as root, so
as root both run as the `postgres` OS user.

    python scripts/pg_replica.py    # start a pair, print both URLs, stop and remove it on Ctrl-C
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

#: Where the server binaries are; JOBTRACKER_PG_BIN points elsewhere.
PG_BIN = Path(os.environ.get("JOBTRACKER_PG_BIN", "/usr/lib/postgresql/15/bin"))
NEEDED = ("initdb", "pg_ctl", "pg_basebackup", "psql")
#: The OS user the clusters run as when we are root.
OS_USER = "postgres"


def missing_binaries() -> str | None:
    """Why a pair cannot be made here, or None when it can."""
    missing = [name for name in NEEDED if not (PG_BIN / name).exists()]
    if missing:
        return f"{', '.join(missing)} not found in {PG_BIN} (set JOBTRACKER_PG_BIN)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ReplicaPair:
    """A primary and its hot standby, each on a free port; `with` starts, then removes them."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="jobtracker-replica-"))
        self.primary_port = _free_port()
        self.standby_port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, OS_USER, OS_USER)

    def primary_url(self, database: str = "postgres") -> str:
        """Where writers connect."""
        return f"postgresql://postgres@127.0.0.1:{self.primary_port}/{database}"

    def standby_url(self, database: str = "postgres") -> str:
        """Where readers of the replica connect."""
        return f"postgresql://postgres@127.0.0.1:{self.standby_port}/{database}"

    def start(self) -> None:
        """initdb and start the primary, clone it with `pg_basebackup -R`, start the standby, and
        return once it streams."""
        primary, standby = self.root / "primary", self.root / "standby"
        self._run("initdb", "-D", str(primary), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8")
        self._pg_ctl_start(primary, self.primary_port)
        self._run("pg_basebackup", "-D", str(standby), "-h", "127.0.0.1",
                  "-p", str(self.primary_port), "-U", "postgres", "-R", "-X", "stream",
                  "--checkpoint=fast", "--no-sync")
        self._pg_ctl_start(standby, self.standby_port)
        self._wait_until_streaming()

    def stop(self) -> None:
        """Stop both clusters (standby first) and remove every file; safe to call twice."""
        for name in ("standby", "primary"):
            if (self.root / name / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.root / name), "-m", "immediate", "stop",
                          check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, url: str, statement: str) -> str:
        """One statement through psql; its unaligned output."""
        done = subprocess.run([str(PG_BIN / "psql"), url, "-v", "ON_ERROR_STOP=1", "-qAtc",
                               statement], check=True, capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    def wait_for_replay(self, timeout: float = 30.0) -> None:
        """Return once the standby has replayed everything the primary wrote before this call."""
        lsn = self.sql(self.primary_url(), "SELECT pg_current_wal_lsn()")
        query = f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
        self._poll(lambda: self.sql(self.standby_url(), query) == "t", timeout,
                   f"the standby did not replay up to {lsn}")

    def _wait_until_streaming(self, timeout: float = 30.0) -> None:
        query = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        self._poll(lambda: self.sql(self.primary_url(), query) == "1", timeout,
                   "the standby never started streaming")

    @staticmethod
    def _poll(done: Callable[[], bool], timeout: float, failure: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{failure} within {timeout:g} s")
            time.sleep(0.02)

    def _pg_ctl_start(self, data: Path, port: int) -> None:
        options = f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(data.with_suffix(".log")),
                  "-w", "start")

    def _run(self, binary: str, *args: str, check: bool = True) -> None:
        command = [str(PG_BIN / binary), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", OS_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{binary} failed ({done.returncode}): {done.stderr.strip()}")

    def __enter__(self) -> ReplicaPair:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main() -> None:
    """Start a pair and keep it until Ctrl-C."""
    reason = missing_binaries()
    if reason:
        raise SystemExit(f"pg_replica: {reason}")
    with ReplicaPair() as pair:
        print(f"primary: {pair.primary_url()}\nstandby: {pair.standby_url()}\nCtrl-C stops both",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
