"""The dashboard's job page in real Chromium: sign-in, live progress, errors, cancel, XSS,
refusals, offline."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import Console, Site, screenshot
from tests.browser.pages import (
    find,
    job_loaded,
    no_alert,
    open_page,
    sign_in,
    text_of,
    until_js,
    until_text,
    wait,
)
from tests.conditions import wait_until

XSS_EMAIL = "<img src=x onerror=alert(1)>"
XSS_ERROR = "<script>alert(2)</script>"
XSS_FAILURE = '"><img src=x onerror="window.pwned=1">'


def rows(first: int, count: int, kind: str = "row_failed") -> list[dict[str, Any]]:
    """`count` row events from row `first` on: failures with an error, or successes."""
    if kind == "row_failed":
        return [{"type": kind, "row": r, "email": f"r{r}@test", "error": f"Bad row {r}"}
                for r in range(first, first + count)]
    return [{"type": kind, "row": r, "email": f"r{r}@uni.edu", "internal": r % 2 == 0}
            for r in range(first, first + count)]


def test_sign_in_keeps_the_key_in_the_tab_only(driver: Any, site: Site, console: Console) -> None:
    """The key goes to sessionStorage and the X-API-Key header, never a URL or a cookie;
    Sign out forgets it."""
    key = site.key("sign-in")
    site.create(key, "signin-job")
    sign_in(driver, site.base, key, "#/jobs/signin-job")
    until_text(driver, "#job-status", "Pending")
    assert driver.execute_script("return sessionStorage.getItem('jobtracker.apiKey')") == key
    assert driver.execute_script("return document.cookie") == ""
    urls = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls
    assert not [url for url in urls if key in url]
    assert key not in driver.current_url
    driver.find_element(By.ID, "sign-out").click()
    find(driver, "#api-key")
    assert driver.execute_script("return sessionStorage.length") == 0


def test_the_page_runs_under_its_policy(driver: Any, site: Site, console: Console) -> None:
    """The page arrives with its Content-Security-Policy, which stops inline script."""
    console.expect("Content Security Policy")
    open_page(driver, site.base)
    find(driver, "#api-key")
    policy = driver.execute_script(
        "return fetch(location.href).then(r => r.headers.get('content-security-policy'))")
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    driver.execute_script(
        "const s = document.createElement('script');"
        "s.textContent = 'window.inlineRan = true'; document.head.append(s)")
    assert driver.execute_script("return window.inlineRan") is None
    assert driver.execute_script("return document.cookie") == ""


def test_progress_and_counters_move_live(driver: Any, site: Site, console: Console) -> None:
    """A running job's bar, text and counters follow the worker's appends over the stream,
    without reloading the page or polling the job."""
    key = site.key("live")
    site.create(key, "live-job", total=50)
    sign_in(driver, site.base, key, "#/jobs/live-job")
    until_text(driver, "#job-status", "Pending")
    until_js(driver, "document.querySelector('.live')", "the stream to be live")
    site.append(key, "live-job", [{"type": "started"}, *rows(1, 8, "row_succeeded"),
                                  *rows(9, 2), {"type": "progress", "current": 10, "total": 50}])
    until_js(driver, "document.getElementById('job-progress').value === 10", "bar at 10")
    until_text(driver, "#job-progress-label", "10 of 50")
    until_text(driver, "#job-status", "In progress")
    until_text(driver, ".counter.failed dd", "2")
    site.append(key, "live-job", [*rows(11, 20, "row_succeeded"),
                                  {"type": "progress", "current": 30, "total": 50}])
    until_js(driver, "document.getElementById('job-progress').value === 30", "bar at 30")
    site.append(key, "live-job", [{"type": "email_sent", "row": 1, "email": "r1@uni.edu"},
                                  {"type": "succeeded"}])
    until_text(driver, "#job-status", "Succeeded")
    until_text(driver, ".counter.successful dd", "28")
    assert text_of(driver, ".counter.failed dd") == "2"
    assert text_of(driver, ".counter.emails-sent dd") == "1"
    assert text_of(driver, ".counter.internal dd") == "14"
    assert text_of(driver, ".counter.total dd") == "30"
    until_js(driver, "document.querySelectorAll('#history-table tbody tr').length >= 35",
             "the history to grow with the appends")
    gets = driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => new URL(e.name).pathname === '/api/v1/jobs/live-job').length")
    assert gets == 1, "the body was read once; the stream brought the rest"
    assert "announcer" in driver.page_source


def test_row_errors_are_paged(driver: Any, site: Site, console: Console) -> None:
    """The errors table shows 20 rows a page from /errors; Next and Previous move through it."""
    key = site.key("errors")
    site.create(key, "errors-job", total=60)
    site.append(key, "errors-job", [{"type": "started"}, *rows(1, 30, "row_succeeded"),
                                    *rows(31, 25), {"type": "succeeded"}])
    sign_in(driver, site.base, key, "#/jobs/errors-job")
    until_text(driver, "#errors-table caption", "25 in total")
    cells = driver.find_elements(By.CSS_SELECTOR, "#errors-table tbody td:first-child")
    assert [c.text for c in cells] == [str(r) for r in range(31, 51)]
    for width, height in ((1280, 800), (390, 844), (360, 740)):
        screenshot(driver, "job-errors", width, height, ready="#errors-table")
    screenshot(driver, "job-errors", 390, 844, ready="#errors-table", dark=True)
    driver.find_element(By.ID, "errors-next").click()
    until_text(driver, "#errors-table caption", "21\N{EN DASH}25")
    cells = driver.find_elements(By.CSS_SELECTOR, "#errors-table tbody td:first-child")
    assert [c.text for c in cells] == [str(r) for r in range(51, 56)]
    assert not driver.find_element(By.ID, "errors-next").is_enabled()
    driver.find_element(By.ID, "errors-previous").click()
    until_text(driver, "#errors-table caption", "1\N{EN DASH}20")


def test_cancel_asks_first_in_a_dialog(driver: Any, site: Site, console: Console) -> None:
    """Cancel opens a <dialog>; "Keep it running" changes nothing, confirming ends a PENDING job."""
    key = site.key("cancel")
    site.create(key, "cancel-job")
    sign_in(driver, site.base, key, "#/jobs/cancel-job")
    job_loaded(driver)
    find(driver, "#cancel").click()
    until_js(driver, "document.getElementById('confirm-cancel').open", "the dialog to open")
    assert driver.switch_to.active_element.get_attribute("id") == "confirm-keep"
    driver.find_element(By.ID, "confirm-keep").click()
    until_js(driver, "!document.getElementById('confirm-cancel').open", "the dialog to close")
    assert text_of(driver, "#job-status") == "Pending"
    driver.find_element(By.ID, "cancel").send_keys(Keys.ENTER)
    until_js(driver, "document.getElementById('confirm-cancel').open", "the dialog to open")
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    until_js(driver, "!document.getElementById('confirm-cancel').open", "Escape to close it")
    assert text_of(driver, "#job-status") == "Pending"
    driver.find_element(By.ID, "cancel").click()
    find(driver, "#confirm-yes").click()
    until_text(driver, "#job-status", "Failed")
    until_text(driver, "#job-error", "Cancelled")
    assert driver.find_elements(By.ID, "cancel") == []


def test_cancel_of_a_running_job_is_shown_as_requested(
    driver: Any, site: Site, console: Console
) -> None:
    """A running job asked to cancel says it waits for its worker."""
    key = site.key("cancel-running")
    site.create(key, "cancel-running-job", total=10)
    site.append(key, "cancel-running-job", [{"type": "started"}])
    sign_in(driver, site.base, key, "#/jobs/cancel-running-job")
    job_loaded(driver)
    find(driver, "#cancel").click()
    find(driver, "#confirm-yes").click()
    until_text(driver, ".cancel-note", "Cancel requested")
    assert text_of(driver, "#job-status") == "Started"


def test_values_from_the_api_are_text_not_html(driver: Any, site: Site, console: Console) -> None:
    """E-mails, row errors and a failure's error that look like HTML show as those characters."""
    key = site.key("xss")
    site.create(key, "xss-job", total=3)
    site.append(key, "xss-job", [
        {"type": "row_failed", "row": 1, "email": XSS_EMAIL, "error": XSS_ERROR},
        {"type": "failed", "error": XSS_FAILURE},
    ])
    sign_in(driver, site.base, key, "#/jobs/xss-job")
    until_text(driver, "#job-error", XSS_FAILURE)
    find(driver, "#errors-table")
    assert text_of(driver, "#errors-table td.email") == XSS_EMAIL
    assert XSS_ERROR in text_of(driver, "#errors-table tbody")
    assert XSS_EMAIL in text_of(driver, "#history-table")
    assert driver.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    assert driver.execute_script("return window.pwned") is None
    assert no_alert(driver)


def test_a_wrong_key_is_told_plainly(driver: Any, site: Site, console: Console) -> None:
    """A key the server does not know gets the 401 explanation and a way to sign in again."""
    console.expect_refused(401)
    sign_in(driver, site.base, "uc_live_" + "x" * 40, "#/jobs/some-job")
    until_text(driver, ".state.status-401", "not accepted")
    find(driver, ".state.status-401 button").click()
    find(driver, "#api-key")


def test_refusals_say_what_happened(driver: Any, site: Site, console: Console) -> None:
    """Another key's job is 403, an unknown id 404, each explained in words."""
    console.expect_refused(403, 404)
    mine, theirs = site.key("mine"), site.key("theirs")
    site.create(theirs, "their-job")
    sign_in(driver, site.base, mine, "#/jobs/their-job")
    until_text(driver, ".state.status-403", "belongs to another key")
    open_page(driver, site.base, "#/jobs/no-such-job")
    until_text(driver, ".state.status-404", "No job has this id")


def test_an_expired_job_says_so(driver: Any, site: Site, console: Console) -> None:
    """A job removed by retention is the owner's 410, explained as expired."""
    console.expect_refused(410)
    key = site.key("expired")
    site.create(key, "expired-job")
    site.append(key, "expired-job", [{"type": "succeeded"}])
    assert site.prune_finished() >= 1
    with site.api(key) as api:  # the server forgets the body it kept within a second
        wait_until(lambda: api.get("/api/v1/jobs/expired-job").status_code == 410,
                   "the server to answer 410")
    sign_in(driver, site.base, key, "#/jobs/expired-job")
    until_text(driver, ".state.status-410", "expired")


def test_offline_is_shown(driver: Any, site: Site, console: Console) -> None:
    """Losing the network shows the offline banner and an unreachable server in words."""
    console.expect("net::ERR_INTERNET_DISCONNECTED")
    console.expect_refused(404)  # back online, the page reads the unknown job again
    key = site.key("offline")
    site.create(key, "offline-job")
    sign_in(driver, site.base, key, "#/jobs/offline-job")
    until_text(driver, "#job-status", "Pending")
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    try:
        until_text(driver, "#offline", "offline")
        driver.execute_script("location.hash = '#/jobs/another-job'")
        until_text(driver, ".state.status-0", "cannot be reached")
    finally:
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    wait(driver).until(lambda d: d.execute_script("return navigator.onLine"))
