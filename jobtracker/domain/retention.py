"""Retention (CONTRACT.md, "Inventory"): which finished jobs a prune may remove.

Only a job finished before a cutoff goes; the cutoff is a duration back from now (`30d`, `12h`,
`1h30m`) or a moment. Both must leave at least a minute: a prune that could take a job that is
finishing right now, or one set in the future, is a typo, not a policy.
"""

from __future__ import annotations

import datetime as dt
import re

from jobtracker.domain.errors import InvalidInput
from jobtracker.domain.listing import parse_time

#: The shortest retention accepted, in seconds.
MIN_RETENTION = 60
_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+)([wdhms]))+")
_PART = re.compile(r"(\d+)([wdhms])")


def parse_duration(field: str, text: str) -> int:
    """Seconds in a duration like `30d`, `12h` or `1h30m`; at least `MIN_RETENTION`."""
    if not _DURATION.fullmatch(text.strip().lower()):
        raise InvalidInput(f"{field}: {text!r} is not a duration like 30d, 12h or 1h30m")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(text.lower()))
    if seconds < MIN_RETENTION:
        raise InvalidInput(f"{field}: must be at least 1 minute, got {seconds} s")
    return seconds


def cutoff(field: str, text: str, now: dt.datetime) -> dt.datetime:
    """The moment before which finished jobs may go: `now` less a duration, or a time given.

    A time less than a minute before `now` (or after it) is refused.
    """
    if text[:1].isdigit() and ("-" in text or "T" in text.upper()):
        moment = parse_time(field, text)
        if moment > now - dt.timedelta(seconds=MIN_RETENTION):
            raise InvalidInput(f"{field}: {text} is in the future or less than a minute ago")
        return moment
    return now - dt.timedelta(seconds=parse_duration(field, text))
