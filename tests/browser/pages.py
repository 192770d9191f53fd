"""What the browser tests do on the page: sign in, open views, wait for what they show."""

from __future__ import annotations

from typing import Any

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as shown
from selenium.webdriver.support.ui import WebDriverWait

from tests.conditions import PATIENCE


def wait(driver: Any, within: float = PATIENCE) -> WebDriverWait[Any]:
    """A WebDriverWait with the suite's patience."""
    return WebDriverWait(driver, within)


def find(driver: Any, css: str) -> Any:
    """The element `css` names, once it is on the page."""
    return wait(driver).until(shown.presence_of_element_located((By.CSS_SELECTOR, css)))


def text_of(driver: Any, css: str) -> str:
    """The visible text of the element `css` names, once it is on the page."""
    return str(find(driver, css).text)


def until_text(driver: Any, css: str, text: str) -> None:
    """Wait until the element `css` names shows `text` (part of its text)."""
    wait(driver).until(
        shown.text_to_be_present_in_element((By.CSS_SELECTOR, css), text),
        f"{css!r} never showed {text!r}",
    )


def until_js(driver: Any, script: str, what: str) -> Any:
    """Wait until `script` (an expression) is truthy in the page; its value."""
    return wait(driver).until(lambda d: d.execute_script(f"return {script}"), what)


def open_page(driver: Any, base: str, hash_route: str = "") -> None:
    """Load the dashboard afresh at `hash_route` (same tab, so the signed-in key stays)."""
    driver.get(f"{base}/ui/{hash_route}")


def sign_in(driver: Any, base: str, key: str, hash_route: str = "") -> None:
    """Sign out whoever was signed in, then paste `key` into the sign-in form."""
    driver.get(f"{base}/healthz")  # the same origin, without the page reading the API
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{base}/ui/{hash_route}")
    field = find(driver, "#api-key")
    assert driver.switch_to.active_element == field, "the key field has the focus"
    field.send_keys(key, Keys.ENTER)  # the keyboard alone signs in
    wait(driver).until(shown.invisibility_of_element_located((By.CSS_SELECTOR, "#sign-in")))


def no_alert(driver: Any) -> bool:
    """Whether no JavaScript alert is open."""
    try:
        driver.switch_to.alert  # noqa: B018 - reading it is the check
    except NoAlertPresentException:
        return True
    return False


def job_loaded(driver: Any) -> None:
    """Wait until the job page has read the body, errors, history and counters once."""
    find(driver, "#summary[data-loaded]")
