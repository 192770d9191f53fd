"""`jobtracker replay` and `scripts/replay.py`: the replay functions behind a command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from jobtracker.domain.codec import dumps
from jobtracker.domain.errors import ConfigError, JobNotFound, JobtrackerError
from jobtracker.domain.projection import job_body
from jobtracker.server.settings import Settings
from jobtracker.store import make_store, replay
from jobtracker.store.rebuild import Rebuildable
from jobtracker.store.url import store_url_from

#: Exit status of `--verify` when the projection differs from its log.
DIFFERS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The replay options, shared by the subcommand and the script."""
    parser.add_argument("--job", metavar="ID", help="only this job (default: every job)")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="rebuild into a scratch area and compare with the live projection; change nothing "
        f"(exit {DIFFERS} and a per-job diff when they differ)",
    )
    parser.add_argument(
        "--at",
        metavar="POSITION",
        type=int,
        help="the state as of this log position: with --job, that job's body; else how many jobs "
        "had each status (built in scratch tables dropped afterwards; the live projection is "
        "left alone) (default: the end of the log)",
    )


def _progress(total: int, out: TextIO) -> tuple[replay.Progress, Callable[[], None]]:
    """A tqdm bar with events/s on a terminal; nothing otherwise (the summary line suffices)."""
    if not out.isatty():
        return (lambda count: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="ev", unit_scale=True, desc="replay", file=out, smoothing=0.1)

    def advance(count: int) -> None:
        bar.update(count)

    return advance, bar.close


def _summary(verb: str, report: replay.ReplayReport) -> str:
    return (
        f"{verb} {report.events:,} events of {report.jobs:,} jobs up to position "
        f"{report.position:,} in {report.seconds:.2f} s ({report.rate:,.0f} events/s)"
    )


async def _run(store: Rebuildable, args: argparse.Namespace, bar: replay.Progress) -> int:
    if args.at is not None and args.job is not None:
        view = await replay.job_at(store, args.job, args.at, Settings().errors_cap)
        print(dumps(job_body(view.state, view.errors)).decode())
        print(f"job {args.job} at position {args.at:,}: version {view.state.version}",
              file=sys.stderr)
        return 0
    if args.at is not None:
        report = await replay.rebuild_at(store, args.at, progress=bar)
        statuses = ", ".join(f"{n:,} {s}" for s, n in sorted(report.statuses.items()))
        print(f"{_summary('rebuilt', report)}: {statuses or 'no jobs'}; "
              "the live projection is unchanged")
        return 0
    if args.verify:
        report = await replay.verify(store, job_id=args.job, progress=bar)
        comparison = report.comparison
        assert comparison is not None
        for diff in comparison.diffs:
            print("\n".join(replay.describe(diff)))
        differing = comparison.differing
        verdict = f"{differing:,} jobs differ" if differing else "identical"
        print(f"{_summary('verified', report)}: {verdict}")
        return DIFFERS if comparison.differing else 0
    report = await replay.rebuild(store, job_id=args.job, progress=bar)
    print(f"{_summary('replayed', report)}; the rebuilt projection is live")
    return 0


async def run_replay(args: argparse.Namespace) -> int:
    """Open the store named by `args.store`, run what the options ask for, close it."""
    store = make_store(args.store)
    if not isinstance(store, Rebuildable):
        raise ConfigError(f"the store at {args.store!r} cannot be replayed")
    await store.open()
    try:
        total = await store.last_position() if args.job is None else 0
        bar, close = _progress(args.at or total, sys.stderr)
        try:
            return await _run(store, args, bar)
        finally:
            close()
    finally:
        await store.close()


def cmd_replay(args: argparse.Namespace) -> int:
    """The `replay` subcommand."""
    if args.verify and args.at is not None:
        raise ConfigError("--verify and --at do not go together")
    if args.at is not None and args.at < 0:
        raise ConfigError(f"--at: a log position is >= 0, got {args.at}")
    try:
        return asyncio.run(run_replay(args))
    except JobNotFound as exc:
        print(f"jobtracker: {exc.detail}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """`scripts/replay.py`: the same command, on its own."""
    parser = argparse.ArgumentParser(prog="replay.py", description=__doc__)
    parser.add_argument("--store", help="store URL (default: $JOBTRACKER_STORE)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.store = store_url_from(args.store)
    try:
        return cmd_replay(args)
    except ConfigError as exc:
        parser.exit(2, f"replay.py: error: {exc.detail}\n")
    except JobtrackerError as exc:
        print(f"replay.py: {exc.detail}", file=sys.stderr)
        return 1
