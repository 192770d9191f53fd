"""`jobtracker stats`: what a store holds and what it costs on disk, per event.

The figure to watch is bytes per event: the log grows by it with every row a worker reports, and
it is what a leaner layout (issue #28) is judged by.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from jobtracker.cli.table import aligned
from jobtracker.store import make_store
from jobtracker.store.base import StorageStats
from jobtracker.store.url import masked


def add_stats_command(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    formatter: type[argparse.HelpFormatter],
) -> None:
    """`stats [--json]`."""
    stats = commands.add_parser(
        "stats", parents=[common], formatter_class=formatter,
        help="events, jobs, bytes per event, and the size of each table and index",
    )
    stats.add_argument("--json", action="store_true",
                       help="one JSON object instead of text (default: %(default)s)")
    stats.set_defaults(run=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the store's storage figures."""
    found = asyncio.run(read_stats(args.store))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(as_json(found)) + b"\n")
    else:
        print("\n".join(as_text(masked(args.store), found)))
    return 0


async def read_stats(url: str) -> StorageStats:
    """The store's storage figures, opening and closing it."""
    store = make_store(url)
    await store.open()
    try:
        return await store.storage_stats()
    finally:
        await store.close()


def as_json(found: StorageStats) -> dict[str, object]:
    """The figures as plain values: counts, bytes, bytes per event (null for an empty log)."""
    return {
        "events": found.events,
        "jobs": found.jobs,
        "total_bytes": found.total_bytes,
        "log_bytes": found.log_bytes,
        "total_bytes_per_event": _rounded(found.per_event(found.total_bytes)),
        "log_bytes_per_event": _rounded(found.per_event(found.log_bytes)),
        "relations": [
            {"name": each.name, "table": each.table, "index": each.is_index, "bytes": each.bytes}
            for each in found.relations
        ],
    }


def as_text(where: str, found: StorageStats) -> list[str]:
    """A summary, then one line per table or index, biggest first."""
    lines = [
        f"store   {where}",
        f"events  {found.events:,}",
        f"jobs    {found.jobs:,}",
        f"total   {_size(found.total_bytes)}{_each(found, found.total_bytes)}",
        f"log     {_size(found.log_bytes)}{_each(found, found.log_bytes)}"
        " (events and their indexes)",
    ]
    if not found.relations:
        return [*lines, "nothing on disk: this store lives in memory"]
    rows = [("table or index", "of table", "bytes", "per event")]
    rows += [
        (each.name, each.table if each.is_index else "", f"{each.bytes:,}", _per(found, each.bytes))
        for each in found.relations
    ]
    return [*lines, "", *aligned(rows)]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _per(found: StorageStats, size: int) -> str:
    value = found.per_event(size)
    return "" if value is None else f"{value:,.1f}"


def _each(found: StorageStats, size: int) -> str:
    value = found.per_event(size)
    return "" if value is None else f", {value:,.1f} bytes per event"


def _size(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit} ({size:,} bytes)"
    return f"{size:,} bytes"
