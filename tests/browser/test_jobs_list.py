"""The dashboard's job list in real Chromium: own jobs only, filters, pages, live rows, speed."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By

from tests.browser.conftest import Console, Site, record_timing, screenshot
from tests.browser.pages import find, no_alert, open_page, sign_in, until_js, until_text, wait
from tests.browser.test_job_view import rows

XSS_LABEL = "<img src=x onerror=alert(1)>"


def listed_ids(driver: Any) -> list[str]:
    """The job ids the list shows, top to bottom."""
    ids = driver.execute_script(
        "return [...document.querySelectorAll('#job-list > li')].map(li => li.dataset.jobId)")
    return [str(each) for each in ids]


def row_css(job_id: str) -> str:
    """The CSS selector of a job's row."""
    return f'#job-list > li[data-job-id="{job_id}"]'


def test_the_list_shows_the_keys_own_jobs_newest_first(
    driver: Any, site: Site, console: Console
) -> None:
    """Signed in, the list shows this key's jobs, newest first, and none of another key's;
    it is painted soon after the page's HTML arrives."""
    key, other = site.key("lister"), site.key("other")
    site.create(other, "not-mine")
    site.create(key, "export-may", total=40, labels={"team": "billing", "month": "may"})
    site.append(key, "export-may", [{"type": "started"}, *rows(1, 36, "row_succeeded"),
                                    *rows(37, 4), {"type": "succeeded"}])
    site.create(key, "import-june", total=120, labels={"team": "billing"})
    site.append(key, "import-june", [{"type": "started"}, *rows(1, 45, "row_succeeded"),
                                     *rows(46, 3), {"type": "progress", "current": 48,
                                                    "total": 120}])
    site.create(key, "broken-upload", labels={"team": "ops"})
    site.append(key, "broken-upload", [{"type": "failed", "error": "Achievement not found"}])
    site.create(key, "queued-" + "x" * 90, total=500)
    sign_in(driver, site.base, key, "#/jobs")
    find(driver, "#job-list")
    assert listed_ids(driver) == ["queued-" + "x" * 90, "broken-upload", "import-june",
                                  "export-may"]
    assert "not-mine" not in driver.page_source
    until_text(driver, row_css("import-june") + " .progress-label", "48 of 120")
    assert driver.find_element(By.CSS_SELECTOR, row_css("export-may") + " .failed").text == "4"
    for width, height in ((1280, 800), (390, 844), (360, 740)):
        screenshot(driver, "jobs-list", width, height, ready="#job-list")
    screenshot(driver, "jobs-list", 1920, 1080, ready="#job-list", dark=True)
    open_page(driver, site.base, "#/jobs")  # a fresh load, the key still in the tab
    painted = until_js(
        driver,
        "performance.getEntriesByName('jobs-list-rendered')[0]?.startTime"
        " - performance.getEntriesByType('navigation')[0].responseEnd",
        "the list to be rendered",
    )
    record_timing("jobs_list_rendered_after_html_ms", painted)
    assert painted < 3000


def test_filters_by_status_and_label(driver: Any, site: Site, console: Console) -> None:
    """The status boxes and the label field narrow the list; Clear shows everything again."""
    key = site.key("filters")
    site.create(key, "f-done", labels={"team": "billing"})
    site.append(key, "f-done", [{"type": "succeeded"}])
    site.create(key, "f-running", labels={"team": "ops"})
    site.append(key, "f-running", [{"type": "started"}])
    site.create(key, "f-waiting", labels={"team": "billing"})
    sign_in(driver, site.base, key, "#/jobs")
    wait(driver).until(lambda d: len(listed_ids(d)) == 3)
    find(driver, "input[name=status][value=SUCCESS]").click()
    find(driver, "input[name=status][value=PENDING]").click()
    find(driver, "#filters button[type=submit]").click()
    wait(driver).until(lambda d: listed_ids(d) == ["f-waiting", "f-done"])
    label = find(driver, "#label-filter")
    label.send_keys("team:billing")
    find(driver, "input[name=status][value=SUCCESS]").click()
    find(driver, "#filters button[type=submit]").click()
    wait(driver).until(lambda d: listed_ids(d) == ["f-waiting"])
    assert "label=team%3Abilling" in driver.current_url
    find(driver, "#filters a.button").click()
    wait(driver).until(lambda d: len(listed_ids(d)) == 3)
    find(driver, "input[name=status][value=FAILURE]").click()
    find(driver, "#filters button[type=submit]").click()
    until_text(driver, ".state.empty", "No jobs match")


def test_pages_move_older_and_newer(driver: Any, site: Site, console: Console) -> None:
    """Fifty jobs a page: Older shows the rest, Newer comes back; an empty key says so."""
    key = site.key("pages")
    sign_in(driver, site.base, key, "#/jobs")
    until_text(driver, ".state.empty", "no jobs yet")
    for n in range(55):
        site.create(key, f"page-{n:02d}")
    find(driver, "#refresh").click()
    wait(driver).until(lambda d: len(listed_ids(d)) == 50)
    assert listed_ids(driver)[0] == "page-54"
    find(driver, "#older").click()
    wait(driver).until(lambda d: listed_ids(d) == [f"page-{n:02d}" for n in range(4, -1, -1)])
    assert not driver.find_element(By.ID, "older").is_enabled()
    find(driver, "#newer").click()
    wait(driver).until(lambda d: len(listed_ids(d)) == 50 and listed_ids(d)[0] == "page-54")


def test_running_rows_move_live(driver: Any, site: Site, console: Console) -> None:
    """A running job's row follows its stream: bar, status and counters, no reload."""
    key = site.key("live-list")
    site.create(key, "moving", total=20)
    site.create(key, "still", total=5)
    sign_in(driver, site.base, key, "#/jobs")
    until_js(driver, f"document.querySelector('{row_css('moving')} .live')", "the row to be live")
    site.append(key, "moving", [{"type": "started"}, *rows(1, 5, "row_succeeded"),
                                {"type": "progress", "current": 5, "total": 20}])
    until_js(driver, f"document.querySelector('{row_css('moving')} progress').value === 5",
             "the bar at 5")
    until_text(driver, row_css("moving") + " .badge", "In progress")
    until_text(driver, row_css("moving") + " .successful", "5")
    site.append(key, "moving", [*rows(6, 2), {"type": "progress", "current": 7, "total": 20}])
    until_text(driver, row_css("moving") + " .failed", "2")
    site.append(key, "moving", [{"type": "succeeded"}])
    until_text(driver, row_css("moving") + " .badge", "Succeeded")
    assert driver.find_element(By.CSS_SELECTOR, row_css("still") + " .badge").text == "Pending"
    navigations = driver.execute_script("return performance.getEntriesByType('navigation').length")
    assert navigations == 1


def test_labels_are_text_not_html(driver: Any, site: Site, console: Console) -> None:
    """A label value that looks like HTML shows as those characters."""
    key = site.key("xss-labels")
    site.create(key, "xss-labelled", labels={"note": XSS_LABEL})
    sign_in(driver, site.base, key, "#/jobs")
    until_text(driver, row_css("xss-labelled") + " .labels", f"note: {XSS_LABEL}")
    assert driver.find_elements(By.CSS_SELECTOR, "main img") == []
    assert no_alert(driver)


def test_a_wrong_key_on_the_list(driver: Any, site: Site, console: Console) -> None:
    """The list answers a wrong key with the 401 explanation."""
    console.expect_refused(401)
    sign_in(driver, site.base, "uc_live_" + "y" * 40, "#/jobs")
    until_text(driver, ".state.status-401", "not accepted")


def test_spanish_browsers_get_spanish(driver: Any, site: Site, console: Console) -> None:
    """With a Spanish browser language the page speaks Spanish."""
    key = site.key("es")
    site.create(key, "es-job")
    agent = driver.execute_script("return navigator.userAgent")
    driver.execute_cdp_cmd("Emulation.setUserAgentOverride",
                           {"userAgent": agent, "acceptLanguage": "es-ES"})
    try:
        sign_in(driver, site.base, key, "#/jobs")
        until_text(driver, "#jobs-title", "Tus jobs")
        until_text(driver, row_css("es-job") + " .badge", "Pendiente")
        assert driver.execute_script("return document.documentElement.lang") == "es"
    finally:
        driver.execute_cdp_cmd("Emulation.setUserAgentOverride",
                               {"userAgent": agent, "acceptLanguage": "en-US"})
