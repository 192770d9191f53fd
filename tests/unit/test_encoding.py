"""The log's stored form of an event: canonical JSON, the same as the converter would write."""

from __future__ import annotations

import orjson
import pytest

from jobtracker.domain.codec import converter, decode_fields, encode_fields
from jobtracker.domain.events import (
    EVENT_CLASSES,
    CancelRequested,
    Created,
    EmailFailed,
    EmailSent,
    Event,
    Failed,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
)

SAMPLES: list[Event] = [
    Created(owner="key_a", total=50, label="Diplomas"),
    Created(owner="key_a"),
    Started(),
    ProgressReported(current=25, total=50, status="Procesando fila 25 de 50"),
    ProgressReported(current=1, total=2),
    RowSucceeded(row=1, email="ana@uni.edu", internal=True),
    RowFailed(row=12, email="invalido@test", error="Invalid email: invalido@test"),
    EmailSent(row=1, email="ana@uni.edu"),
    EmailFailed(row=2, email="b@gmail.com", error="bounce"),
    Succeeded(),
    Failed(error="Achievement not found"),
    Failed(error="Worker lost: no report for 600 s", reason="worker_lost"),
    Created(owner="key_a", total=5, heartbeat_timeout=30, timeout=3600),
    Created(owner="key_a", timeout=60),
    Created(owner="key_a", labels={"achievement": "42", "batch": "b-7"}),
    CancelRequested(),
]
#: Fields added after the first release: stored only when set, so older events keep their form.
LATER_OPTIONAL = {Created: ("heartbeat_timeout", "labels", "timeout"), Failed: ("reason",)}


def test_every_event_class_has_a_sample_here() -> None:
    """The stored form is spelled out per class (`FIELDS_OF`): a new class must be checked too."""
    assert {type(event) for event in SAMPLES} == set(EVENT_CLASSES.values())


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_stored_form_is_sorted_json_of_every_field_and_reads_back(event: Event) -> None:
    """Every field, None included (but later optional ones), under sorted keys; decoding gives
    the same event back."""
    fields = converter().unstructure(event)
    for name in LATER_OPTIONAL.get(type(event), ()):
        if fields[name] is None:
            del fields[name]
    expected = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()
    assert encode_fields(event) == expected
    assert decode_fields(event.TYPE, encode_fields(event)) == event
