"""jobtracker: event-sourced job status for bulk-processing workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["connect", "connect_async"]

if TYPE_CHECKING:
    from jobtracker.sdk.worker import connect, connect_async


def __getattr__(name: str) -> Any:
    """`jobtracker.connect` and `jobtracker.connect_async`, imported on first use.

    The server, the CLI and `import jobtracker` itself never pay for the SDK's HTTP client.
    """
    if name in __all__:
        from jobtracker.sdk import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'jobtracker' has no attribute {name!r}")
