"""A real server on a SQLite file and one headless Chromium per module, for the dashboard's tests.

Chromium and its driver come from Debian's packages (`apt-get install chromium chromium-driver`;
`scripts/dev.sh test` installs them when it can). Without them these tests are skipped, or failed
under CI=true, as the PostgreSQL tests are without a server. Nothing is downloaded at test time:
the driver's path is given, so selenium-manager never runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobtracker.domain import listing
from jobtracker.store import make_store
from jobtracker.store.keys import issue_key
from tests.e2e.serving import serving

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Where the tests leave their screenshots and timings for people to look at.
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
#: What the tests measured in this run (milliseconds), for the summary.
TIMINGS: dict[str, float] = {}
#: Console messages a test may expect: the browser logs every refused fetch as SEVERE.
REFUSED_FETCH = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these Chromium reaches for Google's servers, which this closed network refuses.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--lang=en-US",
)


def _missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: apt-get install chromium chromium-driver"
    return None


def need_browser() -> None:
    """Skip the calling test without Chromium (fail it under CI=true)."""
    missing = _missing_browser()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing)


def new_key(store_url: str, name: str) -> str:
    """A fresh owner key on the store; its secret."""

    async def run() -> str:
        store = make_store(store_url)
        await store.open()
        try:
            return (await issue_key(store, name)).secret
        finally:
            await store.close()

    return asyncio.run(run())


class Site:
    """The server under test: its base URL, its store, and an HTTP client per key."""

    def __init__(self, base: str, store_url: str) -> None:
        self.base = base
        self.store_url = store_url

    def key(self, name: str) -> str:
        """A new owner key."""
        return new_key(self.store_url, name)

    def api(self, key: str) -> httpx.Client:
        """A client that calls the API with `key`."""
        return httpx.Client(base_url=self.base, headers={"X-API-Key": key}, timeout=10)

    def create(self, key: str, job_id: str, **fields: Any) -> None:
        """Create a job as `key`."""
        with self.api(key) as api:
            answer = api.post("/api/v1/jobs", json={"job_id": job_id, **fields})
            assert answer.status_code == 201, answer.text

    def append(self, key: str, job_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Append a batch of events as `key`; the answer."""
        with self.api(key) as api:
            answer = api.post(f"/api/v1/jobs/{job_id}/events", json=events)
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body

    def prune_finished(self) -> int:
        """Prune every finished job now, as retention would later; how many went."""

        async def run() -> int:
            store = make_store(self.store_url)
            await store.open()
            try:
                soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
                return (await store.prune(listing.log_time(soon), 1000)).jobs
            finally:
                await store.close()

        return asyncio.run(run())

    @functools.cached_property
    def listing_ready(self) -> bool:
        """Whether `GET /api/v1/jobs` (issue #19) answers on this server."""
        with self.api(self.key("probe")) as api:
            return api.get("/api/v1/jobs").status_code == 200


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """`jobtracker serve` on a fresh SQLite file, for the whole module."""
    need_browser()
    folder = tmp_path_factory.mktemp("dashboard")
    store_url = f"sqlite:///{folder / 'jobs.db'}"
    new_key(store_url, "migrate")  # opens the store once: migrated before the server starts
    with serving(store_url, folder / "server.log") as (_, base):
        yield Site(base, store_url)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """One headless Chromium for the module, with a fresh profile; its console is recorded."""
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never fetch anything
    profile = tempfile.mkdtemp(prefix="jobtracker-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_window_size(1280, 800)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Console:
    """The browser console of one test: SEVERE messages fail it unless the test expects them."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.expected: set[int] = set()
        # sign_in clears the tab's storage from /healthz, whose icon the browser looks for.
        self.patterns: list[re.Pattern[str]] = [re.compile(r"/favicon\.ico - Failed to load")]
        driver.get_log("browser")  # what earlier tests left

    def expect_refused(self, *statuses: int) -> None:
        """The test provokes fetches answered with these statuses; their messages are fine."""
        self.expected.update(statuses)

    def expect(self, pattern: str) -> None:
        """Messages matching `pattern` are part of what the test provokes."""
        self.patterns.append(re.compile(pattern))

    def severe(self) -> list[str]:
        """The SEVERE messages logged since the test began, expected refusals left out."""
        found = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            refused = REFUSED_FETCH.search(entry["message"])
            if refused and int(refused.group(1)) in self.expected:
                continue
            if any(p.search(entry["message"]) for p in self.patterns):
                continue
            found.append(entry["message"])
        return found


@pytest.fixture
def console(driver: Any, site: Site) -> Iterator[Console]:
    """Fails the test when the page logged an error it did not expect."""
    watched = Console(driver)
    if not site.listing_ready:  # the job page asks the listing for a running job's counters
        watched.expect(r"/api/v1/jobs\?\S* - Failed to load resource: .* status of 405")
    yield watched
    assert watched.severe() == []


def screenshot(
    driver: Any, name: str, width: int, height: int, *, ready: str = "", dark: bool = False
) -> Path:
    """Save the page at `width` x `height` under artifacts/screenshots/; the size is restored.

    With `ready` (a CSS selector) the page is loaded again at that size, as a visitor with such a
    screen would see it, and shot once `ready` is on it; `dark` asks for the dark colours.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    before = driver.get_window_size()
    driver.set_window_size(width, height)
    path = folder / f"{name}{'-dark' if dark else ''}-{width}x{height}.png"
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    if inner != [width, height]:  # the window's frame takes a few pixels: fit the viewport
        driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
    scheme = "dark" if dark else "light"
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": scheme}]})
    if ready:
        driver.refresh()
        WebDriverWait(driver, 20).until(
            shown.presence_of_element_located((By.CSS_SELECTOR, ready)))
    driver.execute_script("return new Promise(r => requestAnimationFrame(() => r()))")
    driver.save_screenshot(str(path))
    wider = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    driver.set_window_size(before["width"], before["height"])
    assert wider <= 0, f"{path.name}: the page is {wider} px wider than the screen"
    return path


def record_timing(name: str, value: float) -> None:
    """Keep a measurement for the run's summary and artifacts/browser-timings.json."""
    TIMINGS[name] = round(value, 1)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "browser-timings.json").write_text(json.dumps(TIMINGS) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say what the browser tests measured in this run."""
    if TIMINGS:
        terminalreporter.write_line(f"dashboard timings: {json.dumps(TIMINGS)}")
