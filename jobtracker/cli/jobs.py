"""`jobtracker jobs …`: look at jobs on a running server (`jobs show JOB_ID`, `jobs list`).

Each subcommand is one `add_parser` in `add_jobs_commands` and one `cmd_*` function here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable
from typing import Any

from jobtracker.cli.remote import add_server_arguments, failed, server_and_key
from jobtracker.cli.table import print_table
from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.listing import DEFAULT_LIMIT, LIMIT_RANGE
from jobtracker.domain.state import Status
from jobtracker.sdk.worker import RetryPolicy, connect

#: One try: a person at a terminal wants the error now, not after a minute of retries.
ONCE = RetryPolicy(attempts=1)


def add_jobs_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    formatter: type[argparse.HelpFormatter],
) -> None:
    """The `jobs` group and its subcommands."""
    jobs = commands.add_parser("jobs", help="look at jobs on a running server",
                               formatter_class=formatter)
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    show = job_commands.add_parser(
        "show", help="print a job's body (what GET /api/v1/jobs/{job_id} answers) as JSON",
        formatter_class=formatter,
    )
    show.add_argument("job_id", metavar="JOB_ID", help="the job's id")
    add_server_arguments(show)
    show.set_defaults(run=cmd_jobs_show, store=None)
    _add_list_command(job_commands, formatter)


def _add_list_command(
    job_commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    formatter: type[argparse.HelpFormatter],
) -> None:
    listing = job_commands.add_parser(
        "list", help="the key's jobs, newest first (GET /api/v1/jobs)", formatter_class=formatter,
    )
    listing.add_argument("--status", action="append", choices=[s.value for s in Status],
                         help="only jobs in this status (repeatable) (default: any)")
    listing.add_argument("--label", action="append", metavar="KEY:VALUE",
                         help="only jobs with this label (repeatable: all must match) "
                              "(default: any)")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                         help="show at most this many jobs (default: %(default)s)")
    listing.add_argument("--json", action="store_true",
                         help="print the jobs as JSON, one list (default: a table)")
    add_server_arguments(listing)
    listing.set_defaults(run=cmd_jobs_list, store=None)


def cmd_jobs_list(args: argparse.Namespace) -> int:
    """Print the key's jobs: a table with a header (or JSON with --json)."""
    if args.limit < 1:
        print("jobtracker: error: --limit: must be at least 1", file=sys.stderr)
        return 2
    labels = dict(label.partition(":")[::2] for label in args.label or ())
    server = ""
    try:
        server, key = server_and_key(args)
        with connect(server, api_key=key, retry=ONCE) as tracker:
            found = tracker.list_jobs(status=args.status, labels=labels,
                                      page_size=min(args.limit, LIMIT_RANGE[1]))
            jobs = list(itertools.islice(found, args.limit))
    except JobtrackerError as exc:
        return failed(server, exc)
    if args.json:
        print(json.dumps(jobs, indent=2, ensure_ascii=False))
    elif not jobs:
        print("no jobs match", file=sys.stderr)
    else:
        print_table([JOB_COLUMNS, *map(_job_row, jobs)])
    return 0


JOB_COLUMNS = ("JOB_ID", "STATUS", "PROGRESS", "OK", "FAILED", "CREATED", "LABELS")


def _job_row(job: dict[str, Any]) -> tuple[str, ...]:
    progress = job["progress"]
    done = f"{progress['current']}/{progress['total']}" if progress else "-"
    labels = ",".join(f"{k}:{v}" for k, v in job["labels"].items()) or "-"
    return (job["job_id"], job["status"], done, str(job["counts"]["successful"]),
            str(job["counts"]["failed"]), job["created_at"], labels)


def cmd_jobs_show(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """Print the job's body, pretty JSON; one line on stderr and exit 2 if there is none."""
    server, key = "", ""
    try:
        server, key = server_and_key(args)
        with connect(server, api_key=key, retry=ONCE) as tracker:
            body = tracker.get(args.job_id)
    except JobtrackerError as exc:
        return failed(server, exc)
    out(json.dumps(body, indent=2, ensure_ascii=False))
    return 0
