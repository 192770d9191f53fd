"""The SDK straight into a store, with no server in between: SQLite synchronously, any store
for asyncio, and any store for a synchronous worker through a loop of its own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from jobtracker.domain.control import refuse_finished
from jobtracker.domain.errors import (
    AccessDenied,
    InvalidInput,
    JobNotFound,
    NotAuthenticated,
)
from jobtracker.domain.events import Created, NewEvent, check_fields
from jobtracker.domain.listing import parse_list_request
from jobtracker.domain.projection import DEFAULT_ERRORS_CAP, job_body
from jobtracker.domain.state import JobState
from jobtracker.sdk.follow import Snapshot, is_terminal
from jobtracker.sdk.transport import NewJob
from jobtracker.store import Store, make_store
from jobtracker.store.base import ApiKey, AppendResult, JobView
from jobtracker.store.feed import ChangeFeed
from jobtracker.store.keys import hash_secret
from jobtracker.store.listing import check_parameters, list_page, page_body
from jobtracker.store.sqlite import deadlines, inventory
from jobtracker.store.sqlite.log import SqliteLog, sqlite_path, translated

T = TypeVar("T")


def _store_snapshot(job_id: str, view: JobView | None) -> Snapshot:
    if view is None:
        raise JobNotFound()
    return Snapshot(job_body(view.state, view.errors), f'"{view.state.version}"')



def _created(job: NewJob, owner: str) -> Created:
    created = Created(owner=owner, total=job.total, label=job.label,
                      heartbeat_timeout=job.heartbeat_timeout, timeout=job.timeout,
                      labels=None if job.labels is None else dict(job.labels))
    check_fields(created)  # labels over the limits: refused here, as the server would
    return created


def _lister(key: ApiKey | None) -> str:
    """The key whose jobs a listing shows: the tracker's own."""
    if key is None:
        raise NotAuthenticated(
            "list_jobs needs the key whose jobs to list: connect(store_url, api_key=KEY)"
        )
    return key.key_id


def _running(view: JobView | None) -> JobState:
    """The job's state, if a heartbeat may be noted for it (404 and 409 as the server says)."""
    if view is None:
        raise JobNotFound()
    refuse_finished(view.state)
    return view.state


def _job_owner(key: ApiKey | None, named: str | None) -> str:
    """Who owns a job `key` creates: the key, or the owner a worker key bound to it names."""
    if key is None or not key.active:
        raise NotAuthenticated("Invalid or revoked API key")
    if named is None:
        return key.key_id
    if key.scope != "worker":
        raise InvalidInput("owner: only a worker key may name a job's owner")
    if not key.acts_for(named):
        raise AccessDenied("owner: this worker key is not bound to that owner")
    return named


def _no_owner() -> NotAuthenticated:
    return NotAuthenticated(
        "create_job needs the key that will own the job: connect(store_url, api_key=KEY), KEY "
        "being the last line `jobtracker keys create --name NAME --store STORE_URL` printed "
        "(reporting on and reading existing jobs needs no key)"
    )


class SqliteTransport:
    """The SDK straight into a SQLite file, synchronous: no server in between.

    Whoever can open the file may append to any job in it; an API key is needed only to create a
    job, because the key is the job's owner (the one that may GET it over HTTP).
    """

    def __init__(self, path: str, api_key: str | None = None) -> None:
        self._log = translated(lambda: SqliteLog(sqlite_path(path)))
        translated(self._log.migrate)
        self._api_key = api_key
        # One connection, one transaction at a time: jobs reported from several threads (and
        # each job's timer thread) take turns.
        self._lock = threading.Lock()

    def _owner(self, named: str | None) -> str:
        if self._api_key is None:
            raise _no_owner()
        key = translated(lambda: self._log.find_key(hash_secret(self._api_key or "")))
        return _job_owner(key, named)

    def create_job(self, job: NewJob) -> str:
        """Create the job owned by the tracker's key (or the owner a worker key names)."""
        with self._lock:
            created = _created(job, self._owner(job.owner))
            state, _ = translated(lambda: self._log.create_job(job.job_id, created))
        return state.job_id

    def heartbeat(self, job_id: str) -> bool:
        """Note the worker alive in the job's watch (no event); whether it was asked to stop."""
        with self._lock:
            view = translated(lambda: self._log.get_job(job_id, 0))
            state = _running(view)
            beats = {job_id: time.time()}
            translated(lambda: self._log.in_transaction(deadlines.record_heartbeats, beats))
        return state.cancel_requested

    def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """One transaction, one durable commit."""
        with self._lock:
            return translated(lambda: self._log.append(job_id, items))

    def fetch(self, job_id: str, etag: str | None, wait: int) -> Snapshot:
        """Read the job from the file, re-reading every 50 ms while it is unchanged."""
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                view = translated(lambda: self._log.get_job(job_id, DEFAULT_ERRORS_CAP))
            answer = _store_snapshot(job_id, view)
            if answer.etag != etag or time.monotonic() >= deadline or (
                answer.body is not None and is_terminal(answer.body)
            ):
                return answer
            time.sleep(0.05)

    def list_page(self, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """One page of the tracker's key's jobs, read from the file."""
        check_parameters(params)
        with self._lock:
            key = translated(lambda: self._log.find_key(hash_secret(self._api_key or "")))
            key_id = _lister(key if self._api_key else None)
            wanted = parse_list_request(params, key_id)
            found = translated(lambda: inventory.list_jobs(
                self._log.conn, key_id, wanted.query, wanted.after, wanted.limit + 1))
        return page_body(key_id, wanted, found)

    def close(self) -> None:
        """Close the connection."""
        self._log.close()


class AsyncStoreTransport:
    """The SDK straight into any store (`sqlite:///…`, `postgresql://…`), for asyncio."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self._store: Store = make_store(url)
        self._api_key = api_key
        self._opened = False
        self._feed: ChangeFeed | None = None

    async def open(self) -> None:
        """Connect (and migrate) the store."""
        if not self._opened:
            await self._store.open()
            self._opened = True

    async def _owner(self, named: str | None) -> str:
        if self._api_key is None:
            raise _no_owner()
        key = await self._store.find_key(hash_secret(self._api_key))
        return _job_owner(key, named)

    async def create_job(self, job: NewJob) -> str:
        """Create the job owned by the tracker's key (or the owner a worker key names)."""
        await self.open()
        owner = await self._owner(job.owner)
        state, _ = await self._store.create_job(job.job_id, _created(job, owner))
        return state.job_id

    async def heartbeat(self, job_id: str) -> bool:
        """Note the worker alive in the job's watch (no event); whether it was asked to stop."""
        await self.open()
        state = _running(await self._store.get_job(job_id, 0))
        await self._store.record_heartbeats({job_id: time.time()})
        return state.cancel_requested

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Append through the store (group-committed with the process's other appends)."""
        await self.open()
        return await self._store.append(job_id, items)

    async def fetch(self, job_id: str, etag: str | None, wait: int) -> Snapshot:
        """Read the job; while unchanged, wait on a change feed of the store (as a server does)."""
        await self.open()

        async def read() -> JobView | None:
            return await self._store.get_job(job_id, DEFAULT_ERRORS_CAP)

        view = await read()
        answer = _store_snapshot(job_id, view)
        if view is None or answer.etag != etag or not wait or view.state.status.is_terminal:
            return answer
        if self._feed is None:
            self._feed = ChangeFeed(self._store)
            await self._feed.start()
        changed = await self._feed.wait_for_change(job_id, read, view.state.version, wait)
        return answer if changed is None else _store_snapshot(job_id, changed)

    async def list_page(self, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """One page of the tracker's key's jobs."""
        await self.open()
        found = await self._store.find_key(hash_secret(self._api_key)) if self._api_key else None
        return await list_page(self._store, _lister(found), params)

    async def close(self) -> None:
        """Close the store."""
        if self._feed is not None:
            await self._feed.stop()
            self._feed = None
        if self._opened:
            await self._store.close()
            self._opened = False


class BlockingStoreTransport:
    """Any asyncio store for the synchronous SDK: the store runs on a loop in its own thread."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self._inner = AsyncStoreTransport(url, api_key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="jobtracker-sdk-store", daemon=True
        )
        self._thread.start()
        self._call(self._inner.open())

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def create_job(self, job: NewJob) -> str:
        """See `AsyncStoreTransport.create_job`."""
        return self._call(self._inner.create_job(job))

    def heartbeat(self, job_id: str) -> bool:
        """See `AsyncStoreTransport.heartbeat`."""
        return self._call(self._inner.heartbeat(job_id))

    def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """See `AsyncStoreTransport.append`."""
        return self._call(self._inner.append(job_id, items))

    def fetch(self, job_id: str, etag: str | None, wait: int) -> Snapshot:
        """See `AsyncStoreTransport.fetch`."""
        return self._call(self._inner.fetch(job_id, etag, wait))

    def list_page(self, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """See `AsyncStoreTransport.list_page`."""
        return self._call(self._inner.list_page(params))

    def close(self) -> None:
        """Close the store, then stop its loop and thread."""
        self._call(self._inner.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
