"""What the commands that talk to a running server share: `--server`, `--key`, one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from jobtracker.domain.errors import JobtrackerError, StoreUnavailable

#: `jobtracker serve`'s own default address (`ServeOptions`).
DEFAULT_SERVER = "http://127.0.0.1:8080"
#: The variables the Celery integration reads too: one setting for every client of a server.
SERVER_ENV = "JOBTRACKER_URL"
KEY_ENV = "JOBTRACKER_API_KEY"
#: Exit status of a command that could not get its answer (refused, unreachable, bad usage).
FAILED = 2


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """`--server` and `--key`; the key's value never appears in `--help`."""
    parser.add_argument(
        "--server", metavar="URL",
        help=f"the server's base URL (default: ${SERVER_ENV}, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--key", metavar="KEY",
        help=f"an API key that may read the job (default: ${KEY_ENV})",
    )


def server_and_key(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """The server URL and key in force; without a key, an error saying how to give one."""
    env = os.environ if environ is None else environ
    server: str = args.server or env.get(SERVER_ENV) or DEFAULT_SERVER
    key: str | None = args.key or env.get(KEY_ENV)
    if not key:
        raise JobtrackerError(
            f"no API key: pass --key KEY or set ${KEY_ENV} (the owner key that created the job)"
        )
    return server.rstrip("/"), key


def failed(server: str, exc: JobtrackerError) -> int:
    """Say in one line on stderr why the server gave no answer; the exit status."""
    where = f"{server}: " if isinstance(exc, StoreUnavailable) else ""
    hint = " (is `jobtracker serve` running there?)" if "reach" in exc.detail else ""
    print(f"jobtracker: error: {where}{exc.detail}{hint}", file=sys.stderr)
    return FAILED
