"""What one PostgreSQL append costs the server, in instructions: deterministic, unlike wall clock.

On a shared machine one-event appends swing 2-3x in events/s from one run to the next, so wall
clock cannot tell a 10% change. This counts what the server executes instead:

1. a private cluster (initdb in a temporary directory, run as the `postgres` user) logs every
   statement with its parameters;
2. a checkout's `PostgresStore` (group commit off, the path a lone writer takes) creates jobs and
   appends one event at a time to them: a `started`, then `row_succeeded` events; the data
   directory is copied before the timed appends;
3. each write statement the appends sent is replayed, with its logged parameters, in a
   single-user backend (`postgres --single`) on a copy of that data directory, under callgrind,
   once with the first `few` appends and once with `few + count`: the difference divided by
   `count` is the server's instructions per append, set-up and start-up cancelled out.

The benchmark `pg-append-instructions` measures this tree against the release before the lean
log (#28), taken from git; by hand, any checkout, e.g. a `git worktree` of an older commit:

    .venv/bin/python scripts/benchmarks/append_cost.py [--checkout DIR] [--count 100] [--ids text]

Not covered: the client's side (asyncpg, the fold), the network, WAL flushes (fsync is off),
contention between writers, group commit (a group of many jobs takes the general statement), and
the reads an append does before it writes (the same in both trees: one per job on first use).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

if __package__:  # run by scripts/bench.py
    from benchmarks.base import BenchConfig, Benchmark, Round

ROOT = Path(__file__).resolve().parents[2]
PORT = 54329
JOBS = 8
#: The last commit with one `events` row per event on PostgreSQL, before its lean log (#28).
BEFORE_LEAN_LOG = "73351e3"
#: The same on SQLite, before its lean log (migration 0007).
BEFORE_SQLITE_LEAN_LOG = "4adccfe"
ID_FORMS = {
    "uuid": "{row:08x}-0000-7000-8000-{index:012x}",  # canonical UUIDs, as the SDK's ids
    "text": "{job}-row-{row}",  # a client's own ids
}


def _bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian's layout)."""
    root = Path("/usr/lib/postgresql")
    return root / sorted(os.listdir(root))[-1] / "bin"

# Runs in the checkout under test: its own store, group commit off.
DRIVER = textwrap.dedent("""
    import asyncio, sys
    import jobtracker
    from jobtracker.domain.events import Created, NewEvent, RowSucceeded, Started
    from jobtracker.store.postgres.store import PostgresStore

    async def main(url, phase, count):
        store = PostgresStore(url, pool_size=1, group_commit=False)
        await store.open()
        try:
            jobs = [f"job-{n:04d}-0000-0000" for n in range(JOBS)]
            if phase == "setup":
                for job in jobs:
                    await store.create_job(job, Created(owner="bench"))
                    await store.append(job, [NewEvent(f"{job}-start", Started())])
                for row in range(3):  # warm: the statements prepared, the jobs' pages hot
                    for job in jobs:
                        event = RowSucceeded(row, f"r{row}@uni.edu", internal=True)
                        await store.append(job, [NewEvent(f"{job}-warm-{row}", event)])
                return
            for n in range(count):
                job, row = jobs[n % len(jobs)], 10 + n // len(jobs)
                await store.append(job, [NewEvent(
                    EVENT_ID.format(job=job, index=n % len(jobs), row=row),
                    RowSucceeded(row, f"r{row}@uni.edu", internal=True))])
        finally:
            await store.close()

    EVENT_ID, JOBS = sys.argv[4], int(sys.argv[6])
    assert jobtracker.__file__.startswith(sys.argv[5]), jobtracker.__file__
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")

# The SDK reporting rows straight into a SQLite file, batch 1000, as `sdk_sqlite_batch1000` does;
# run whole under callgrind (client and SQLite are one process).
SQLITE_DRIVER = textwrap.dedent("""
    import os, sys, tempfile
    import jobtracker
    from jobtracker.domain.events import Created
    from jobtracker.sdk.worker import connect
    from jobtracker.store.sqlite.log import SqliteLog

    assert jobtracker.__file__.startswith(sys.argv[2]), jobtracker.__file__
    path = os.path.join(tempfile.mkdtemp(), "jobs.db")
    log = SqliteLog(path)
    log.migrate()
    log.create_job("job", Created(owner="bench"))
    log.close()
    with connect(f"sqlite:///{path}", batch_size=1000, max_delay=3600) as tracker:
        with tracker.job("job") as job:
            for row in range(int(sys.argv[1])):
                job.row_succeeded(row, f"persona{row}@uni.edu", internal=row % 3 != 0)
""")

_PARAM = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')")


def as_postgres(*command: str | Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL binary as the `postgres` user (it refuses root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *map(str, command)], check=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def record(checkout: Path, work: Path, count: int, event_id: str) -> list[tuple[str, list[str]]]:
    """Set up a cluster, snapshot it, then run `count` appends; the statements they executed."""
    data, logs = work / "data", work / "log"
    as_postgres(_bin() / "initdb", "-D", data, "-A", "trust", "-U", "postgres",
                stdout=subprocess.DEVNULL)
    options = (f"-p {PORT} -k {work} -c listen_addresses= -c fsync=off "
               f"-c logging_collector=on -c log_destination=csvlog -c log_directory={logs} "
               "-c log_min_duration_statement=0 -c log_parameter_max_length=-1")
    url = f"postgresql://postgres@/postgres?host={work}&port={PORT}"
    env = {**os.environ, "PYTHONPATH": str(checkout)}

    def drive(phase: str) -> None:
        subprocess.run([sys.executable, "-c", DRIVER, url, phase, str(count), event_id,
                        str(checkout), str(JOBS)],
                       check=True, env=env, cwd=checkout)

    def server(action: str) -> None:
        as_postgres(_bin() / "pg_ctl", "-D", data, "-o", options, "-w", "-l", work / "pg.out",
                    action, stdout=subprocess.DEVNULL)

    for phase in ("setup", "append"):
        if phase == "append":  # the appends replay on this copy of the set-up cluster
            as_postgres("cp", "-a", data, work / "snapshot")
            shutil.rmtree(logs)
        server("start")
        try:
            drive(phase)
        finally:
            server("stop")
    return _writes(logs)


def _writes(logs: Path) -> list[tuple[str, list[str]]]:
    """Each logged statement that took the position lock (an append's write), with parameters."""
    statements = []
    for path in sorted(logs.glob("*.csv")):
        with open(path, newline="") as handle:
            for row in csv.reader(handle):
                message, detail = row[13], row[14]
                # "duration: 0.1 ms  execute <statement name>: SQL" (parse and bind are logged too)
                if "pg_advisory_xact_lock" not in message or "INSERT" not in message \
                        or "  execute " not in message:
                    continue
                sql = message.split(": ", 2)[2]
                params = [value for _, value in _PARAM.findall(detail)]
                statements.append((sql, params))
    return statements


def instructions(
    work: Path, statements: list[tuple[str, list[str]]], out: Path, prelude: str = ""
) -> int:
    """Callgrind's instruction count of a single-user backend replaying `statements` (its
    profile in `out`)."""
    data = work / "replay"
    if data.exists():
        shutil.rmtree(data)
    as_postgres("cp", "-a", work / "snapshot", data)
    script = [f"{prelude};\n\n"] if prelude else []
    prepared: dict[str, str] = {}
    for sql, params in statements:
        if sql not in prepared:
            prepared[sql] = f"w{len(prepared)}"
            script.append(f"PREPARE {prepared[sql]} AS {sql.strip().rstrip(';')};\n\n")
        script.append(f"EXECUTE {prepared[sql]}({', '.join(params)});\n\n")
    as_postgres("valgrind", "--tool=callgrind", f"--callgrind-out-file={work / 'callgrind.out'}",
                _bin() / "postgres", "--single", "-j", "-D", data, "-c", "fsync=off", "postgres",
                input="".join(script).encode(), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
    shutil.move(work / "callgrind.out", out)
    return _summary(out)


def per_append(checkout: Path, count: int = 100, few: int = 20, ids: str = "uuid",
               keep: Path | None = None) -> float:
    """The server's instructions per one-event append of the store in `checkout`."""
    work = Path(tempfile.mkdtemp(prefix="append_cost_"))
    shutil.chown(work, "postgres")
    try:
        writes = record(checkout.resolve(), work, few + count, ID_FORMS[ids])
        if len(writes) != few + count:
            raise RuntimeError(f"expected {few + count} writes in the log, found {len(writes)}")
        keep = keep or work
        keep.mkdir(parents=True, exist_ok=True)
        start = instructions(work, writes[:few], keep / "few.callgrind")
        end = instructions(work, writes, keep / "many.callgrind")
        return (end - start) / count
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sqlite_per_row(checkout: Path, rows: int = 10_000, few: int = 2_000) -> float:
    """Instructions per row event the SDK spends reporting rows into SQLite from `checkout`
    (the whole process: fold, encoding, the sqlite3 module, SQLite). `few` 0: no run to
    subtract, so start-up is counted in (only to check that it runs: a Python start under
    callgrind takes ten seconds)."""
    counts = [0]
    with tempfile.TemporaryDirectory(prefix="append_cost_sqlite_") as work:
        for total in (few, few + rows) if few else (rows,):
            out = Path(work) / f"{total}.callgrind"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            sys.executable, "-c", SQLITE_DRIVER, str(total), str(checkout)],
                           check=True, env={**os.environ, "PYTHONPATH": str(checkout)},
                           cwd=checkout,  # `-c` puts the working directory first on the path
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            counts.append(_summary(out))
    return (counts[-1] - counts[-2]) / rows


def _summary(profile: Path) -> int:
    line = next(line for line in profile.read_text().splitlines() if line.startswith("summary:"))
    return int(line.split()[1])


@contextmanager
def tree_at(revision: str) -> Iterator[Path]:
    """This repository's package and migrations as of `revision`, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="append_cost_tree_") as into:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "jobtracker",
                                  "migrations"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
        yield Path(into)


def _unavailable(revision: str, postgres: bool) -> str | None:
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (apt-get install -y valgrind)"
    if postgres and not Path("/usr/lib/postgresql").is_dir():
        return "PostgreSQL's server binaries are not installed"
    if postgres and os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is missing (PostgreSQL refuses to run as root)"
    found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", revision],
                           capture_output=True)
    if found.returncode != 0:
        return f"commit {revision} (before the lean log) is not in this checkout's history"
    return None


def _round(config: BenchConfig) -> Round:
    count, few = (4, 1) if config.quick else (100, 20)
    extras = {}
    with tree_at(BEFORE_LEAN_LOG) as before:
        for ids in ("uuid",) if config.quick else ID_FORMS:
            extras[f"{ids}_ids"] = per_append(ROOT, count, few, ids)
            extras[f"{ids}_ids_before"] = per_append(before, count, few, ids)
    extras = {name: round(value) for name, value in extras.items()}
    return Round(subject=extras["uuid_ids"], reference=extras["uuid_ids_before"], extras=extras)


def _sqlite_round(config: BenchConfig) -> Round:
    rows, few = (200, 0) if config.quick else (10_000, 2_000)
    with tree_at(BEFORE_SQLITE_LEAN_LOG) as before:
        return Round(subject=round(sqlite_per_row(ROOT, rows, few)),
                     reference=round(sqlite_per_row(before, rows, few)))


if __package__:
    BENCHMARKS: list[Benchmark] = [
        Benchmark(
            name="pg-append-instructions",
            subject="server instructions per one-event PostgreSQL append (row_succeeded, SDK "
            "UUID ids, group commit off), callgrind on the write statements replayed",
            reference=f"the same appends on the release before the lean log ({BEFORE_LEAN_LOG}, "
            "one `events` row per event), same run",
            unit="instructions/append",
            target="<= 1.0x the reference (issue #28: appends no slower)",
            run=_round,
            meets=lambda ratio, extras: ratio <= 1.0,
            higher_is_better=False,
            unavailable=lambda: _unavailable(BEFORE_LEAN_LOG, postgres=True),
        ),
        Benchmark(
            name="sqlite-append-instructions",
            subject="instructions per row event of the SDK reporting rows into a SQLite file "
            "(batch 1000, one process: fold, encoding, sqlite3, SQLite), callgrind",
            reference=f"the same on the release before SQLite's lean log "
            f"({BEFORE_SQLITE_LEAN_LOG}), same run",
            unit="instructions/row event",
            target="<= 1.0x the reference (issue #28: appends no slower)",
            run=_sqlite_round,
            meets=lambda ratio, extras: ratio <= 1.0,
            higher_is_better=False,
            unavailable=lambda: _unavailable(BEFORE_SQLITE_LEAN_LOG, postgres=False),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", type=Path, default=ROOT)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--few", type=int, default=20)
    parser.add_argument("--ids", choices=tuple(ID_FORMS), default="uuid",
                        help="the appended events' ids: canonical UUIDs (the SDK's) or other text")
    parser.add_argument("--keep", type=Path,
                        help="keep the two profiles here (few.callgrind, many.callgrind), e.g. "
                             "for callgrind_annotate")
    args = parser.parse_args()
    cost = per_append(args.checkout, args.count, args.few, args.ids, args.keep)
    print(f"{args.checkout}: {cost:,.0f} server instructions per one-event append ({args.ids} ids)")


if __name__ == "__main__":
    main()
