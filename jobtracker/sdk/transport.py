"""How the worker SDK reaches the log: over HTTP, or straight into a store (internal to the SDK).

Every transport answers with our own errors: a refusal the server or store made (4xx) keeps its
class and its `detail`; anything worth retrying (a dropped connection, a timeout, a 5xx, a busy
database) is `StoreUnavailable`, the one class `worker.py` retries.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol, TypeVar

import httpx
import orjson

from jobtracker.domain.codec import encode_event
from jobtracker.domain.errors import (
    AccessDenied,
    Conflict,
    InvalidInput,
    JobNotFound,
    JobtrackerError,
    MalformedRequest,
    NotAuthenticated,
    PayloadTooLarge,
    StoreUnavailable,
)
from jobtracker.domain.events import Created, NewEvent
from jobtracker.domain.projection import DEFAULT_ERRORS_CAP, job_body
from jobtracker.sdk.follow import Snapshot, is_terminal
from jobtracker.store import Store, make_store
from jobtracker.store.base import AppendResult, JobView
from jobtracker.store.feed import ChangeFeed
from jobtracker.store.keys import hash_secret
from jobtracker.store.sqlite.log import SqliteLog, sqlite_path, translated

T = TypeVar("T")

#: The error class each refusal status maps back to (the inverse of `web.HTTP_STATUS`).
ERROR_FOR_STATUS: dict[int, type[JobtrackerError]] = {
    400: MalformedRequest,
    401: NotAuthenticated,
    403: AccessDenied,
    404: JobNotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
}
API_PREFIX = "/api/v1"


class Transport(Protocol):
    """What the synchronous SDK needs from a way of reaching the log."""

    def create_job(self, job_id: str, total: int | None, label: str | None) -> str:
        """Create the job (idempotent for its owner); return its id."""

    def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Append one batch atomically."""

    def fetch(self, job_id: str, etag: str | None, wait: int) -> Snapshot:
        """The job's body; held up to `wait` s while its ETag is still `etag`."""

    def close(self) -> None:
        """Release connections."""


class AsyncTransport(Protocol):
    """What the asyncio SDK needs from a way of reaching the log."""

    async def create_job(self, job_id: str, total: int | None, label: str | None) -> str:
        """Create the job (idempotent for its owner); return its id."""

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Append one batch atomically."""

    async def fetch(self, job_id: str, etag: str | None, wait: int) -> Snapshot:
        """The job's body; held up to `wait` s while its ETag is still `etag`."""

    async def close(self) -> None:
        """Release connections."""


# -- HTTP ----------------------------------------------------------------------------------------


def api_root(base_url: str) -> str:
    """`http://host:8080` or `http://host:8080/api/v1` both mean the API at `…/api/v1`."""
    root = base_url.rstrip("/")
    return root if root.endswith(API_PREFIX) else root + API_PREFIX


def error_from_response(status: int, body: bytes) -> JobtrackerError:
    """The error a refused request means, carrying the server's `detail`."""
    try:
        detail = str(orjson.loads(body)["detail"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        detail = body.decode(errors="replace")[:500] or f"HTTP {status}"
    if status >= 500 or status == 429:
        return StoreUnavailable(f"server answered {status}: {detail}")
    return ERROR_FOR_STATUS.get(status, JobtrackerError)(detail)


def _answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.content)
    return orjson.loads(response.content)


def _create_body(job_id: str, total: int | None, label: str | None) -> bytes:
    body = {"job_id": job_id, "total": total, "label": label}
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


def _events_body(items: Sequence[NewEvent]) -> bytes:
    return orjson.dumps([encode_event(item) for item in items])


def _append_result(data: Any) -> AppendResult:
    return AppendResult(data["appended"], data["duplicates"], data["version"])


def _snapshot(response: httpx.Response) -> Snapshot:
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.content)
    body = None if response.status_code == 304 else orjson.loads(response.content)
    retry_after = response.headers.get("Retry-After", "")
    hint = float(retry_after) if retry_after.isdigit() else None
    return Snapshot(body, response.headers.get("ETag"), hint)


def _fetch_options(etag: str | None, wait: int, timeout: float) -> dict[str, Any]:
    held = bool(etag and wait)
    return {
        "params": {"wait": wait} if held else None,
        "headers": {"If-None-Match": etag} if etag else None,
        "timeout": timeout + (wait if held else 0),
    }


def _store_snapshot(job_id: str, view: JobView | None) -> Snapshot:
    if view is None:
        raise JobNotFound()
    return Snapshot(job_body(view.state, view.errors), f'"{view.state.version}"')


def _http_options(base_url: str, api_key: str, timeout: float) -> dict[str, Any]:
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
    return {"base_url": api_root(base_url), "headers": headers, "timeout": timeout}


class HttpTransport:
    """The SDK over HTTP, synchronous; one kept-alive connection pool."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        self._client = httpx.Client(**_http_options(base_url, api_key, timeout))
        self._timeout = timeout

    def fetch(self, job_id: str, etag: str | None, wait: int) -> Snapshot:
        """`GET /api/v1/jobs/{job_id}`, long-polled with If-None-Match."""
        try:
            response = self._client.get(
                f"/jobs/{job_id}", **_fetch_options(etag, wait, self._timeout)
            )
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"could not reach the server: {exc!r}") from exc
        return _snapshot(response)

    def _post(self, path: str, body: bytes) -> Any:
        try:
            response = self._client.post(path, content=body)
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"could not reach the server: {exc!r}") from exc
        return _answer(response)

    def create_job(self, job_id: str, total: int | None, label: str | None) -> str:
        """`POST /api/v1/jobs`."""
        created: str = self._post("/jobs", _create_body(job_id, total, label))["job_id"]
        return created

    def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """`POST /api/v1/jobs/{job_id}/events`."""
        return _append_result(self._post(f"/jobs/{job_id}/events", _events_body(items)))

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


class AsyncHttpTransport:
    """The SDK over HTTP, for asyncio."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        self._client = httpx.AsyncClient(**_http_options(base_url, api_key, timeout))
        self._timeout = timeout

    async def fetch(self, job_id: str, etag: str | None, wait: int) -> Snapshot:
        """`GET /api/v1/jobs/{job_id}`, long-polled with If-None-Match."""
        try:
            response = await self._client.get(
                f"/jobs/{job_id}", **_fetch_options(etag, wait, self._timeout)
            )
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"could not reach the server: {exc!r}") from exc
        return _snapshot(response)

    async def _post(self, path: str, body: bytes) -> Any:
        try:
            response = await self._client.post(path, content=body)
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"could not reach the server: {exc!r}") from exc
        return _answer(response)

    async def create_job(self, job_id: str, total: int | None, label: str | None) -> str:
        """`POST /api/v1/jobs`."""
        created: str = (await self._post("/jobs", _create_body(job_id, total, label)))["job_id"]
        return created

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """`POST /api/v1/jobs/{job_id}/events`."""
        return _append_result(await self._post(f"/jobs/{job_id}/events", _events_body(items)))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


# -- straight into a store ---------------------------------------------------------------------


def _no_owner() -> NotAuthenticated:
    return NotAuthenticated("create_job needs api_key=…: the key that will own the job")


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

    def _owner(self) -> str:
        if self._api_key is None:
            raise _no_owner()
        key = translated(lambda: self._log.find_key(hash_secret(self._api_key or "")))
        if key is None or not key.active:
            raise NotAuthenticated("Invalid or revoked API key")
        return key.key_id

    def create_job(self, job_id: str, total: int | None, label: str | None) -> str:
        """Create the job owned by the tracker's key."""
        with self._lock:
            created = Created(owner=self._owner(), total=total, label=label)
            state, _ = translated(lambda: self._log.create_job(job_id, created))
        return state.job_id

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

    async def _owner(self) -> str:
        if self._api_key is None:
            raise _no_owner()
        key = await self._store.find_key(hash_secret(self._api_key))
        if key is None or not key.active:
            raise NotAuthenticated("Invalid or revoked API key")
        return key.key_id

    async def create_job(self, job_id: str, total: int | None, label: str | None) -> str:
        """Create the job owned by the tracker's key."""
        await self.open()
        created = Created(owner=await self._owner(), total=total, label=label)
        state, _ = await self._store.create_job(job_id, created)
        return state.job_id

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

    def create_job(self, job_id: str, total: int | None, label: str | None) -> str:
        """See `AsyncStoreTransport.create_job`."""
        return self._call(self._inner.create_job(job_id, total, label))

    def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """See `AsyncStoreTransport.append`."""
        return self._call(self._inner.append(job_id, items))

    def fetch(self, job_id: str, etag: str | None, wait: int) -> Snapshot:
        """See `AsyncStoreTransport.fetch`."""
        return self._call(self._inner.fetch(job_id, etag, wait))

    def close(self) -> None:
        """Close the store, then stop its loop and thread."""
        self._call(self._inner.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
