"""jobtracker: event-sourced job status for bulk-processing workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Cancelled", "connect", "connect_async"]

if TYPE_CHECKING:
    from jobtracker.domain.errors import Cancelled
    from jobtracker.sdk.aio import connect_async
    from jobtracker.sdk.worker import connect

#: Where each public name lives, imported on first use.
_HOMES = {
    "Cancelled": "jobtracker.domain.errors",
    "connect": "jobtracker.sdk.worker",
    "connect_async": "jobtracker.sdk.aio",
}


def __getattr__(name: str) -> Any:
    """`jobtracker.connect`, `jobtracker.connect_async` and `jobtracker.Cancelled`, imported on
    first use.

    The server, the CLI and `import jobtracker` itself never pay for the SDK's HTTP client.
    """
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'jobtracker' has no attribute {name!r}")
