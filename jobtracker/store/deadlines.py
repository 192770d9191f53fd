"""The watch every store keeps over unfinished jobs: what a new job's row holds, time stamps.

The decisions are `domain/control.py`'s; this is the arithmetic the stores share.
"""

from __future__ import annotations

import datetime as dt

import attrs

from jobtracker.domain.control import first_check
from jobtracker.domain.events import DEFAULT_HEARTBEAT_TIMEOUT, Created


@attrs.define
class Watch:
    """One watched job's row: its limits, the newest heartbeat, the next check (epoch seconds)."""

    heartbeat_timeout: int
    timeout: int | None
    timeout_at: float | None
    heartbeat_at: float | None
    next_check: float


def new_watch(created: Created, now: float) -> Watch:
    """The watch a job starts with when it is created at `now`."""
    heartbeat = created.heartbeat_timeout or DEFAULT_HEARTBEAT_TIMEOUT
    timeout = created.timeout
    timeout_at = None if timeout is None else now + timeout
    return Watch(heartbeat, timeout, timeout_at, None, first_check(now, heartbeat, timeout))


def epoch_of(recorded_at: str | None) -> float | None:
    """A log time stamp (ISO 8601, UTC, `Z`) as epoch seconds."""
    if recorded_at is None:
        return None
    return dt.datetime.fromisoformat(recorded_at.replace("Z", "+00:00")).timestamp()
