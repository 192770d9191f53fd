"""What one PostgreSQL append costs the server, in instructions: deterministic, unlike wall clock.

On a shared machine one-event appends swing 2-3x in events/s from one run to the next, so wall
clock cannot tell a 10% change. This counts what the server executes instead:

1. a private cluster (initdb in a temporary directory, run as the `postgres` user) logs every
   statement with its parameters;
2. a checkout's `PostgresStore` (group commit off, the path a lone writer takes) creates jobs and
   appends one event at a time to them: a `started`, then `row_succeeded` events; the data
   directory is copied before the timed appends;
3. each statement the appends sent is replayed, with its logged parameters, in a single-user
   backend (`postgres --single`) on a copy of that data directory, under callgrind, once with the
   first `--few` appends and once with `--few + --count`: the difference divided by `--count` is
   the server's instructions per append, set-up and start-up cancelled out.

    .venv/bin/python scripts/pg_append_cost.py [--checkout DIR] [--count 100]

`--checkout` measures another tree (e.g. a `git worktree` of an older commit) with this venv.
Not covered: the client's side (asyncpg, the fold), the network, WAL flushes (fsync is off in
single-user replay as in the recording), contention between writers, and group commit.
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
from pathlib import Path

BIN = Path("/usr/lib/postgresql") / sorted(os.listdir("/usr/lib/postgresql"))[-1] / "bin"
PORT = 54329
JOBS = 8

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

_PARAM = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')")


def as_postgres(*command: str | Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL binary as the `postgres` user (it refuses root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *map(str, command)], check=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def record(checkout: Path, work: Path, count: int, event_id: str) -> list[tuple[str, list[str]]]:
    """Set up a cluster, snapshot it, then run `count` appends; the statements they executed."""
    data, logs = work / "data", work / "log"
    as_postgres(BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres",
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
        as_postgres(BIN / "pg_ctl", "-D", data, "-o", options, "-w", "-l", work / "pg.out",
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
                BIN / "postgres", "--single", "-j", "-D", data, "-c", "fsync=off", "postgres",
                input="".join(script).encode(), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
    shutil.move(work / "callgrind.out", out)
    summary = next(line for line in out.read_text().splitlines() if line.startswith("summary:"))
    return int(summary.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--few", type=int, default=20)
    parser.add_argument("--ids", choices=("uuid", "text"), default="uuid",
                        help="the appended events' ids: canonical UUIDs (the SDK's) or other text")
    parser.add_argument("--keep", type=Path,
                        help="keep the two profiles here (few.callgrind, many.callgrind), e.g. "
                             "for callgrind_annotate")
    args = parser.parse_args()
    event_id = ("{row:08x}-0000-7000-8000-{index:012x}" if args.ids == "uuid"
                else "{job}-row-{row}")
    work = Path(tempfile.mkdtemp(prefix="pg_append_cost_"))
    shutil.chown(work, "postgres")
    try:
        writes = record(args.checkout.resolve(), work, args.few + args.count, event_id)
        if len(writes) != args.few + args.count:
            sys.exit(f"expected {args.few + args.count} writes in the log, found {len(writes)}")
        keep = args.keep or work
        keep.mkdir(parents=True, exist_ok=True)
        few = instructions(work, writes[: args.few], keep / "few.callgrind")
        many = instructions(work, writes, keep / "many.callgrind")
        print(f"{args.checkout}: {(many - few) / args.count:,.0f} instructions per one-event "
              f"append ({args.ids} ids; {few:,} for {args.few}, {many:,} for {len(writes)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
