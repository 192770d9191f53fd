"""Webhooks, the pure part: which log events a receiver hears of, what a subscription may ask
for, when a failed delivery is tried again, and which addresses are never called.

Everything here is pure; resolving names and sending requests is `server/webhooks/`'s.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from jobtracker.domain.errors import InvalidInput
from jobtracker.domain.events import (
    CancelRequested,
    EmailFailed,
    EmailSent,
    Event,
    Failed,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
    check_labels,
)

STARTED = "job.started"
PROGRESS = "job.progress"
CANCEL_REQUESTED = "job.cancel_requested"
SUCCEEDED = "job.succeeded"
FAILED = "job.failed"
#: Every event type a subscription may ask for, in the order a job goes through them.
EVENT_TYPES = (STARTED, PROGRESS, CANCEL_REQUESTED, SUCCEEDED, FAILED)
#: Types after which a job never changes again: they supersede a progress delivery still held.
TERMINAL_TYPES = frozenset({SUCCEEDED, FAILED})
#: Row and e-mail events move a job's counters, so its receivers hear of them as progress.
_TYPE_OF: dict[type, str] = {
    Started: STARTED,
    ProgressReported: PROGRESS,
    RowSucceeded: PROGRESS,
    RowFailed: PROGRESS,
    EmailSent: PROGRESS,
    EmailFailed: PROGRESS,
    CancelRequested: CANCEL_REQUESTED,
    Succeeded: SUCCEEDED,
    Failed: FAILED,
}
#: Most subscriptions one key may hold.
MAX_SUBSCRIPTIONS = 20
MAX_URL = 2048
#: Seconds between tries after the 1st, 2nd, ... failure; the last repeats until the give-up.
DEFAULT_RETRY_DELAYS = (5.0, 30.0, 120.0, 600.0, 3600.0)
#: Seconds after the first try that a delivery is given up.
DEFAULT_GIVE_UP = 24 * 3600.0
#: Each delay is stretched or shrunk by up to this fraction, so receivers that failed together
#: are not all tried again in the same instant.
JITTER = 0.2


def webhook_type(event: Event) -> str | None:
    """The webhook event type a log event is delivered as (None: `created`, never delivered)."""
    return _TYPE_OF.get(type(event))


@attrs.frozen
class Subscription:
    """What a client asked to be told: checked, but not yet stored."""

    url: str
    events: tuple[str, ...]
    labels: dict[str, str]


def parse_subscription(body: Any) -> Subscription:
    """A creation body as a `Subscription`; `InvalidInput` names the first bad field (the URL's
    scheme and host are the server's to check: `server/webhooks/guard.py`)."""
    if not isinstance(body, dict):
        raise InvalidInput("body: must be a JSON object")
    unknown = sorted(set(body) - {"url", "events", "labels"})
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field")
    return Subscription(
        _url(body.get("url")), _events(body.get("events")), _labels(body.get("labels"))
    )


def _url(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise InvalidInput("url: must be a non-empty string")
    if len(raw) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in raw):
        raise InvalidInput(f"url: must be at most {MAX_URL} characters, without spaces")
    return raw


def _events(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidInput(f"events: must be a non-empty list of {', '.join(EVENT_TYPES)}")
    for n, item in enumerate(raw):
        if item not in EVENT_TYPES:
            raise InvalidInput(
                f"events[{n}]: unknown event type {str(item)[:60]!r}; one of "
                f"{', '.join(EVENT_TYPES)}"
            )
    return tuple(t for t in EVENT_TYPES if t in raw)


def _labels(raw: Any) -> dict[str, str]:
    check_labels("labels", raw)
    return dict(raw or {})


def labels_match(wanted: Mapping[str, str], labels: Mapping[str, str] | None) -> bool:
    """Whether a job with `labels` carries every pair a subscription asked for."""
    have = labels or {}
    return all(have.get(key) == value for key, value in wanted.items())


def retry_delay(failures: int, delays: Sequence[float], spread: float) -> float:
    """Seconds before the next try after `failures` failed ones; `spread` in [-1, 1] is jitter."""
    base = delays[min(failures, len(delays)) - 1]
    return max(0.0, base * (1 + JITTER * spread))


def forbidden_address(address: str) -> str | None:
    """Why a server must not call `address` (loopback, private, ...), or None when it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return f"{ip} is a {kind} address"
    return None
