"""`/ui/`: the dashboard's own files, small, served with a strict policy; the API untouched."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.server.ui import SECURITY_HEADERS, UI_FILES
from jobtracker.store import MemoryStore

#: The page's own files may weigh this much in all, uncompressed (issue #23's budget).
ASSET_BUDGET = 150 * 1024


@pytest.fixture
async def ui(aiohttp_client: Callable[..., Awaitable[TestClient]]) -> TestClient:
    """A client of an app on a memory store."""
    return await aiohttp_client(create_app(Settings(), store=MemoryStore()))


def page_files() -> list[str]:
    """The names of the files in the package's ui folder."""
    return sorted(entry.name for entry in UI_FILES.iterdir() if entry.is_file())


async def test_ui_redirects_to_the_page(ui: TestClient) -> None:
    """`/ui` sends the browser to `/ui/`, where the page's relative links resolve."""
    answer = await ui.get("/ui", allow_redirects=False)
    assert answer.status == 308
    assert answer.headers["Location"] == "/ui/"


async def test_every_file_is_served_with_the_policy(ui: TestClient) -> None:
    """Each file answers with its type and every security header; the page links only them."""
    index = await ui.get("/ui/")
    assert index.status == 200
    assert index.content_type == "text/html"
    html = await index.text()
    linked = set(re.findall(r'(?:src|href)="([a-z-]+\.(?:js|css))"', html))
    assert linked <= set(page_files())
    assert "<script>" not in html  # nothing inline: the policy allows none
    assert "style=" not in html
    for name in page_files():
        answer = await ui.get(f"/ui/{name}")
        assert answer.status == 200, name
        assert answer.content_type in ("text/html", "text/javascript", "text/css"), name
        for header, value in SECURITY_HEADERS.items():
            assert answer.headers[header] == value, (name, header)
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy


async def test_the_policy_covers_refusals_under_ui_only(ui: TestClient) -> None:
    """A 404 under /ui/ carries the policy too; API answers do not."""
    missing = await ui.get("/ui/../../etc/passwd")
    assert missing.status == 404
    unknown = await ui.get("/ui/nothing.js")
    assert unknown.status == 404
    assert unknown.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    api = await ui.get("/api/v1/jobs/some-job")
    assert api.status == 401
    assert "Content-Security-Policy" not in api.headers
    assert "X-Frame-Options" not in api.headers


async def test_files_are_revalidated_by_etag(ui: TestClient) -> None:
    """A browser asking again with the ETag gets 304 and no body."""
    first = await ui.get("/ui/app.js")
    again = await ui.get("/ui/app.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304


def test_the_page_stays_within_its_budget() -> None:
    """HTML, CSS and scripts together stay under 150 KB uncompressed."""
    total = sum(len((UI_FILES / name).read_bytes()) for name in page_files())
    print(f"dashboard assets: {total} bytes in {len(page_files())} files")
    assert total <= ASSET_BUDGET


def test_no_value_goes_in_as_html() -> None:
    """The scripts never use innerHTML, outerHTML, insertAdjacentHTML, document.write or eval."""
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|"
                       r"new Function")
    for name in page_files():
        if name.endswith(".js"):
            assert not sinks.search((UI_FILES / name).read_text()), name
