"""Where tracked tasks report: the app's settings, one tracker per process (made after a fork),
and the deterministic event ids that make retries and redelivery count each row once."""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

from jobtracker.domain.errors import ConfigError
from jobtracker.domain.events import MAX_EVENT_ID, Event
from jobtracker.sdk.worker import EventIds, Tracker, connect

#: Celery configuration keys (`app.conf`) the integration reads; `setup` sets them.
URL_SETTING = "jobtracker_url"
API_KEY_SETTING = "jobtracker_api_key"
#: The environment's fallback for each, for workers configured from outside the code.
URL_ENV = "JOBTRACKER_URL"
API_KEY_ENV = "JOBTRACKER_API_KEY"

_trackers: dict[tuple[int, str, str | None], Tracker] = {}
_trackers_lock = threading.Lock()


def setup(app: Any, *, url: str | None = None, api_key: str | None = None) -> None:
    """Point `app`'s tracked tasks at a jobtracker server (`http://…`) or a store URL, with the
    key that creates and reports on their jobs, and end the job of every revoked task."""
    from jobtracker.celery.task import listen_for_revokes

    if url is not None:
        app.conf[URL_SETTING] = url
    if api_key is not None:
        app.conf[API_KEY_SETTING] = api_key
    listen_for_revokes()


def tracker_for(app: Any) -> Tracker:
    """This process's tracker for `app`: made on first use, and again in a forked child (an HTTP
    pool or a SQLite connection must never be shared across a fork)."""
    url = app.conf.get(URL_SETTING) or os.environ.get(URL_ENV)
    if not url:
        raise ConfigError(
            f"tracked tasks need jobtracker.celery.setup(app, url=...) or ${URL_ENV}"
        )
    api_key = app.conf.get(API_KEY_SETTING) or os.environ.get(API_KEY_ENV)
    ident = (os.getpid(), url, api_key)
    with _trackers_lock:
        tracker = _trackers.get(ident)
        if tracker is None:
            tracker = _trackers[ident] = connect(url, api_key=api_key)
    return tracker


def event_ids_for(task_id: str) -> EventIds:
    """Event ids that a retried or redelivered task chooses again: a row event's from the task,
    its type and its row (a changed outcome is then a 409), any other's from its content."""

    def event_id(event: Event) -> str:
        row = getattr(event, "row", None)
        if row is not None:
            return _bounded(f"{task_id}:{event.TYPE}:{row}")
        return _bounded(f"{task_id}:{event.TYPE}:{uuid.uuid5(uuid.NAMESPACE_OID, repr(event))}")

    return event_id


def _bounded(event_id: str) -> str:
    """`event_id`, or a UUID derived from it when a long task id makes it too long."""
    if len(event_id) <= MAX_EVENT_ID:
        return event_id
    return str(uuid.uuid5(uuid.NAMESPACE_OID, event_id))


def close_trackers() -> None:
    """Close this process's trackers (a producer shutting down, a test's teardown)."""
    with _trackers_lock:
        mine = [key for key in _trackers if key[0] == os.getpid()]
        for key in mine:
            _trackers.pop(key).close()
