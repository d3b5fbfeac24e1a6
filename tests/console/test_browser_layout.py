"""The console's layout in a real browser (headless Chromium), with a long operator reason (issue 23):
the detail page's audit table stays inside its card at 1280 px, no page is wider than a 390 px
phone, list and attempt rows are compact there, and the chart's labels stay readable."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import ApiEnv
from tests.console import browser
from tests.console.conftest import console_key, login
from tests.console.test_console_first_hour import failed_with

pytestmark = [pytest.mark.e2e, pytest.mark.browser,
              pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))]

PHONE = (390, 844)
LONG_REASON = ("customer escalation, see ticket " + "TKT-" + "0123456789" * 12
               + " — the photo was replaced by the customer after the first attempt, retrying as agreed")


def _login(driver: Any, api: ApiEnv, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{api.base_url}/console/login")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "login").click()
    browser.until(lambda: driver.current_url.endswith("/console/"), 15, "the overview after login")


def _page_width(driver: Any) -> int:
    return int(driver.execute_script("return document.documentElement.scrollWidth"))


def _overflow_of(driver: Any, selector: str) -> float:
    """How far the element's right edge passes its card's (negative: inside)."""
    return float(driver.execute_script(
        "var e = document.querySelector(arguments[0]); var c = e.closest('.card');"
        "return e.getBoundingClientRect().right - (c.getBoundingClientRect().right"
        " - parseFloat(getComputedStyle(c).paddingRight));", selector))


def test_long_reasons_stay_in_their_card_and_phones_get_no_sideways_scroll(api: ApiEnv) -> None:
    from selenium.webdriver.common.by import By

    operator = login(api, "operator")
    cid = failed_with(api, "no_person")
    for _ in range(2):  # two audit rows with the long reason: a retry, then a refused second retry
        operator.client.post("/console/actions/retry", data={
            "csrf_token": operator.csrf(), "ids": cid, "reason": LONG_REASON, "return_to": "/console/"})
    for n in range(3):
        failed_with(api, ("no_person", "storage", "input_missing")[n])
    _, key = console_key(api.db_url, "operator")
    detail = f"{api.base_url}/console/conversions/{cid}"
    with browser.chromium() as driver:
        browser.viewport(driver, 1280, 800)
        _login(driver, api, key)
        driver.get(detail)
        assert "TKT-0123456789" in driver.find_element(By.ID, "actions").text
        assert _overflow_of(driver, "#actions") <= 1, "the operator-actions table spills past its card"
        assert _page_width(driver) <= 1280

        browser.viewport(driver, *PHONE, mobile=True)
        for path in (detail, f"{api.base_url}/console/conversions", f"{api.base_url}/console/"):
            driver.get(path)
            assert _page_width(driver) <= PHONE[0], (path, _page_width(driver))

        # List rows: one short wrapped block each, not ten mostly empty columns scrolled sideways.
        driver.get(f"{api.base_url}/console/conversions")
        rows = driver.find_elements(By.CSS_SELECTOR, "#conversions tr.st-failed")
        assert len(rows) == 4
        for row in rows:
            box = row.rect
            assert box["width"] <= PHONE[0] and box["height"] <= 90, box
        table = driver.execute_script("var t = document.getElementById('conversions');"
                                      "return [t.scrollWidth, t.parentElement.clientWidth];")
        assert table[0] <= table[1] + 1, table
        driver.get(detail)
        for row in driver.find_elements(By.CSS_SELECTOR, "#attempts tr")[1:]:
            assert row.rect["height"] <= 90, row.rect

        # The chart's labels, as drawn on the phone's screen.
        driver.get(f"{api.base_url}/console/")
        heights = browser.until(lambda: driver.execute_script(
            "return Array.from(document.querySelectorAll('svg.chart text.tick'))"
            ".map(function (t) { return t.getBoundingClientRect().height; });"), 10, "the chart's labels")
        assert heights and min(heights) >= 9, heights
