"""Stored events in older shapes, brought up to date on read by a chain of small pure functions.

Every stored event records the schema version of its fields. When the stored shape of a type
changes, its current version goes up by one and a function turning the old version's fields into
the new one's is added here, keyed by (type, old version); reading walks the chain. The log itself
is never rewritten, and the wire form never changes with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobtracker.domain.errors import UnreadableLog

Fields = dict[str, Any]
Upcaster = Callable[[Fields], Fields]

#: The schema version each event type is written with today; a type not listed is at 1.
CURRENT_VERSIONS: dict[str, int] = {"row_failed": 2}


def _row_failed_v1_to_v2(fields: Fields) -> Fields:
    """v1 stored a row error's text as `message`; v2 calls it `error`, as the wire does."""
    if "message" not in fields:
        return fields  # written before versioning began: already in today's shape
    upgraded = dict(fields)
    upgraded["error"] = upgraded.pop("message")
    return upgraded


#: (type, version) -> the function that turns that version's fields into the next version's.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("row_failed", 1): _row_failed_v1_to_v2,
}


def current_version(kind: str) -> int:
    """The schema version events of `kind` are written with now."""
    return CURRENT_VERSIONS.get(kind, 1)


def upcast(kind: str, version: int, fields: Fields) -> Fields:
    """Fields stored at `version`, brought to the current version one step at a time."""
    target = current_version(kind)
    if version > target:
        raise UnreadableLog(
            f"a {kind!r} event is stored at schema version {version}; "
            f"this jobtracker reads up to {target}: upgrade it before reading this log"
        )
    while version < target:
        step = UPCASTERS.get((kind, version))
        if step is None:
            raise UnreadableLog(f"no upcaster from schema version {version} of {kind!r} events")
        fields = step(fields)
        version += 1
    return fields
