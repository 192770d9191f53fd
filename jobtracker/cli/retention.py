"""`jobtracker prune`: remove finished jobs older than a cutoff, leaving tombstones.

The same batches as `serve --retention`: one short transaction each, so a server and its workers
keep going while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys

from jobtracker.domain import listing, retention
from jobtracker.domain.errors import InvalidInput
from jobtracker.store import make_store
from jobtracker.store.retention import prune_all
from jobtracker.store.url import masked

#: Jobs removed per transaction by `jobtracker prune`.
DEFAULT_BATCH = 500
FAILED = 2


def add_prune_command(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    formatter: type[argparse.HelpFormatter],
) -> None:
    """`prune --finished-before CUTOFF [--dry-run] [--batch N]`."""
    prune = commands.add_parser(
        "prune", parents=[common], formatter_class=formatter,
        help="remove jobs that finished before a cutoff (their events, errors and marks); "
             "each leaves a tombstone: its owner then gets 410, its id is never reused",
    )
    prune.add_argument(
        "--finished-before", required=True, metavar="DURATION|TIME",
        help="a duration back from now (30d, 12h, 1h30m; at least 1m) or an RFC 3339 time "
             "at least a minute ago (required)",
    )
    prune.add_argument("--dry-run", action="store_true",
                       help="count what would go, remove nothing (default: %(default)s)")
    prune.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                       help="jobs removed per transaction (default: %(default)s)")
    prune.set_defaults(run=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune (or count) finished jobs; exit 2 with a message for a cutoff that is refused."""
    try:
        cutoff = retention.cutoff("--finished-before", args.finished_before,
                                  dt.datetime.now(dt.UTC))
    except InvalidInput as exc:
        print(f"jobtracker: error: {exc.detail}", file=sys.stderr)
        return FAILED
    if args.batch < 1:
        print("jobtracker: error: --batch: must be at least 1", file=sys.stderr)
        return FAILED
    jobs, events = asyncio.run(_prune(args.store, cutoff, args.batch, args.dry_run))
    when = listing.api_time(listing.log_time(cutoff))
    verb = "would prune" if args.dry_run else "pruned"
    print(f"{verb} {jobs} jobs ({events} events) finished before {when} "
          f"in {masked(args.store)}")
    return 0


async def _prune(url: str, cutoff: dt.datetime, batch: int, dry_run: bool) -> tuple[int, int]:
    store = make_store(url)
    await store.open()
    try:
        if dry_run:
            counted = await store.prune(listing.log_time(cutoff), batch, dry_run=True)
            return counted.jobs, counted.events
        return await prune_all(store, cutoff, batch)
    finally:
        await store.close()
