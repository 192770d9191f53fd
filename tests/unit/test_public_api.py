"""What `import jobtracker` offers a worker, and what a SQLite-only install never needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import jobtracker
from jobtracker.domain import errors
from jobtracker.sdk.transport import ERROR_FOR_STATUS
from jobtracker.server.errors import HTTP_STATUS

#: The errors a worker catches, by the names the README uses.
PUBLIC_ERRORS = ("JobtrackerError", "Conflict", "InvalidInput", "JobNotFound", "AccessDenied",
                 "NotAuthenticated", "Cancelled", "StoreUnavailable")


@pytest.mark.parametrize("name", PUBLIC_ERRORS)
def test_errors_are_importable_from_the_package(name: str) -> None:
    """`from jobtracker import Conflict` (and the others) is the domain's class itself, under
    the one error root."""
    cls = getattr(jobtracker, name)
    assert cls is getattr(errors, name)
    assert issubclass(cls, errors.JobtrackerError)
    assert name in jobtracker.__all__
    assert name in dir(jobtracker)


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A typo is the usual AttributeError, naming what was asked for."""
    with pytest.raises(AttributeError, match="Conflcit"):
        _ = jobtracker.Conflcit  # type: ignore[attr-defined]


def _status(exc: errors.JobtrackerError) -> int:
    return next(status for cls, status in HTTP_STATUS if isinstance(exc, cls))


@pytest.mark.parametrize(("status", "cls"), sorted(ERROR_FOR_STATUS.items()))
def test_the_sdk_raises_the_class_the_server_answered_for(
    status: int, cls: type[errors.JobtrackerError]
) -> None:
    """Each refusal the SDK turns back into a class is the status the server gives that class:
    a `Conflict` raised on the server is a `jobtracker.Conflict` in the worker."""
    assert _status(cls("x")) == status


def test_every_refusal_a_server_raises_has_a_status() -> None:
    """Every error class but the worker-side `Cancelled` and the log's `UnreadableLog` maps to a
    4xx or 503 (ConfigError is the server's own fault: 500)."""
    unmapped = [
        cls.__name__ for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.JobtrackerError)
        and not any(issubclass(cls, mapped) for mapped, _ in HTTP_STATUS)
    ]
    assert sorted(unmapped) == ["Cancelled", "JobtrackerError", "UnreadableLog"]


def test_the_package_server_and_cli_import_without_the_postgresql_driver() -> None:
    """A SQLite user's install has no asyncpg: nothing imports it until a postgresql:// store
    is opened."""
    code = ("import sys; sys.modules['asyncpg'] = None\n"  # any `import asyncpg` now fails
            "import jobtracker, jobtracker.server.app, jobtracker.cli.main, jobtracker.celery\n"
            "jobtracker.connect, jobtracker.connect_async\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_a_postgresql_store_without_the_driver_says_what_to_install() -> None:
    """Without asyncpg, `--store postgresql://…` is one line naming the extra, exit 2."""
    code = ("import sys; sys.modules['asyncpg'] = None\n"
            "from jobtracker.cli.main import main\n"
            "raise SystemExit(main(['keys', 'list', '--store', 'postgresql://u@127.0.0.1/db']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "jobtracker: error: a postgresql:// store needs the asyncpg driver: "
        "pip install 'jobtracker[postgres]'"
    ]
