"""jobtracker: event-sourced job status for bulk-processing workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "AccessDenied",
    "Cancelled",
    "Conflict",
    "InvalidInput",
    "JobNotFound",
    "JobtrackerError",
    "NotAuthenticated",
    "StoreUnavailable",
    "connect",
    "connect_async",
]

if TYPE_CHECKING:
    from jobtracker.domain.errors import (
        AccessDenied,
        Cancelled,
        Conflict,
        InvalidInput,
        JobNotFound,
        JobtrackerError,
        NotAuthenticated,
        StoreUnavailable,
    )
    from jobtracker.sdk.aio import connect_async
    from jobtracker.sdk.worker import connect

_ERRORS = "jobtracker.domain.errors"
#: Where each public name lives, imported on first use.
_HOMES = {
    "AccessDenied": _ERRORS,
    "Cancelled": _ERRORS,
    "Conflict": _ERRORS,
    "InvalidInput": _ERRORS,
    "JobNotFound": _ERRORS,
    "JobtrackerError": _ERRORS,
    "NotAuthenticated": _ERRORS,
    "StoreUnavailable": _ERRORS,
    "connect": "jobtracker.sdk.worker",
    "connect_async": "jobtracker.sdk.aio",
}


def __getattr__(name: str) -> Any:
    """`jobtracker.connect`, `jobtracker.connect_async` and the errors a worker catches
    (`jobtracker.Conflict`, `jobtracker.Cancelled`, …), imported on first use.

    The server, the CLI and `import jobtracker` itself never pay for the SDK's HTTP client.
    """
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'jobtracker' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, for `dir(jobtracker)` and completion."""
    return sorted({*globals(), *__all__})
