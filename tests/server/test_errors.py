"""Every answer is JSON with a `detail`, whatever went wrong."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient

from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import SqliteStore
from jobtracker.store.keys import IssuedKey, issue_key


async def test_unknown_route_is_json_404(client: TestClient) -> None:
    """A path we do not serve answers 404 in JSON, not an HTML page."""
    response = await client.get("/api/v1/nothing-here")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert "detail" in await response.json()


async def test_wrong_method_is_json_405_with_allow(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """A wrong method answers 405 in JSON and says which methods exist."""
    response = await client.delete("/api/v1/jobs/abc", headers={"X-API-Key": owner_key.secret})
    assert response.status == 405
    assert "GET" in response.headers["Allow"]
    assert (await response.json())["detail"] == "Method Not Allowed"


async def test_store_failure_is_503_without_a_traceback(
    aiohttp_client: Callable[..., Awaitable[TestClient]], tmp_path: Path
) -> None:
    """When the store is gone the client gets 503 and a one-line detail, never a traceback."""
    store = SqliteStore(str(tmp_path / "jobs.db"))
    client = await aiohttp_client(create_app(Settings(), store=store))
    key = await issue_key(store, "owner")
    await store.close()  # the database goes away underneath the running server
    response = await client.get("/api/v1/jobs/abc", headers={"X-API-Key": key.secret})
    body = await response.json()
    assert response.status == 503
    assert body == {"detail": "The SQLite store is not open"}
