"""The SDK over a server's HTTP API, synchronous and asyncio: one kept-alive pool each."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import httpx
import orjson

from jobtracker.domain.codec import encode_event
from jobtracker.domain.errors import (
    StoreUnavailable,
)
from jobtracker.domain.events import NewEvent
from jobtracker.sdk.follow import Snapshot
from jobtracker.sdk.transport import NewJob, error_from_response
from jobtracker.store.base import AppendResult

API_PREFIX = "/api/v1"


def _quiet_request_log() -> None:
    """httpx logs every request at INFO, and a worker (Celery's sets INFO) would print a line per
    batch; left at WARNING unless the application chose a level for httpx itself."""
    log = logging.getLogger("httpx")
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)


_quiet_request_log()


def api_root(base_url: str) -> str:
    """`http://host:8080` or `http://host:8080/api/v1` both mean the API at `…/api/v1`."""
    root = base_url.rstrip("/")
    return root if root.endswith(API_PREFIX) else root + API_PREFIX


def _answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.content)
    return orjson.loads(response.content)


def _create_body(job: NewJob) -> bytes:
    body = attrs.asdict(job)
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


def _pairs(
    params: Mapping[str, Sequence[str]],
) -> list[tuple[str, str | int | float | bool | None]]:
    """Query parameters, a repeated one once per value."""
    return [(name, value) for name, values in params.items() for value in values]


def _heard(response: httpx.Response) -> bool:
    """A heartbeat's answer: whether the job's owner asked it to stop."""
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.content)
    return bool(response.headers.get("X-Cancel-Requested") == "true")


def _events_body(items: Sequence[NewEvent]) -> bytes:
    return orjson.dumps([encode_event(item) for item in items])


def _append_result(data: Any) -> AppendResult:
    return AppendResult(
        data["appended"], data["duplicates"], data["version"], data.get("cancel_requested", False)
    )


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

    def create_job(self, job: NewJob) -> str:
        """`POST /api/v1/jobs`."""
        created: str = self._post("/jobs", _create_body(job))["job_id"]
        return created

    def heartbeat(self, job_id: str) -> bool:
        """`POST /api/v1/jobs/{job_id}/heartbeat`."""
        try:
            return _heard(self._client.post(f"/jobs/{job_id}/heartbeat"))
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"could not reach the server: {exc!r}") from exc

    def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """`POST /api/v1/jobs/{job_id}/events`."""
        return _append_result(self._post(f"/jobs/{job_id}/events", _events_body(items)))

    def list_page(self, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """`GET /api/v1/jobs`."""
        try:
            response = self._client.get("/jobs", params=_pairs(params))
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"could not reach the server: {exc!r}") from exc
        page: dict[str, Any] = _answer(response)
        return page

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

    async def create_job(self, job: NewJob) -> str:
        """`POST /api/v1/jobs`."""
        created: str = (await self._post("/jobs", _create_body(job)))["job_id"]
        return created

    async def heartbeat(self, job_id: str) -> bool:
        """`POST /api/v1/jobs/{job_id}/heartbeat`."""
        try:
            return _heard(await self._client.post(f"/jobs/{job_id}/heartbeat"))
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"could not reach the server: {exc!r}") from exc

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """`POST /api/v1/jobs/{job_id}/events`."""
        return _append_result(await self._post(f"/jobs/{job_id}/events", _events_body(items)))

    async def list_page(self, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """`GET /api/v1/jobs`."""
        try:
            response = await self._client.get("/jobs", params=_pairs(params))
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"could not reach the server: {exc!r}") from exc
        page: dict[str, Any] = _answer(response)
        return page

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


