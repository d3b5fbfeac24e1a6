"""The console in a real browser (headless Debian Chromium): an operator and a read-only viewer log in
and load every view against conversions made by a running fleet (STAYLER_MODEL=null); the operator
retries, cancels, pauses and resumes through the pages, and the test checks what the database holds.

With STAYLER_WRITE_SCREENSHOTS=1 the run writes docs/img/console-overview.png and
docs/img/console-conversion.png (1280×800)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from modelkit.samples import make_garment, make_person, to_bytes
from tests.api.conftest import ApiEnv, Owner, scalar
from tests.console import browser
from tests.console.conftest import console_key
from tests.support.fleet import Env, kill_tree, stop
from tests.support.wait import wait_for

# Chromium and a worker fleet per test: `make test-slow`. The default suite keeps the browser layout
# test and the same pages' actions over HTTP (tests/console/test_console_http.py).
pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = os.environ.get("STAYLER_WRITE_SCREENSHOTS") == "1"
PHONE = (390, 844)


@pytest.fixture
def fleet(db_url: str, redis_url: str, queue_name: str, tmp_path: Path) -> Iterator[Env]:
    """Worker fleets on the API's storage folder, stopped at the end."""
    (tmp_path / "storage").mkdir(exist_ok=True)
    (tmp_path / "logs").mkdir()
    env = Env(db_url, redis_url, queue_name, tmp_path / "storage", tmp_path / "logs")
    yield env
    for proc in env.fleets:
        stop(proc, timeout=20)
        kill_tree(proc.pid)


def _upload(owner: Owner, kind: str, seed: int) -> str:
    data = to_bytes(make_person(288, 384, seed=seed).image) if kind == "user" else to_bytes(make_garment(seed=seed))
    response = owner.upload(data, kind)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _rows(api: ApiEnv, sql: Any, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def _statuses(api: ApiEnv, ids: list[str]) -> dict[str, str]:
    return {str(r[0]): r[1] for r in _rows(api, "SELECT id, status FROM conversions WHERE id = ANY(%s)",
                                           ([uuid.UUID(i) for i in ids],))}


def until(predicate: Any, timeout: float, what: str, fleet: Env) -> Any:
    """Poll until truthy; on a timeout the fleet's log is in the message."""
    return wait_for(predicate, timeout, what, fleet, interval=0.2)


def _workload(api: ApiEnv, fleet: Env) -> dict[str, Any]:
    """Six conversions that complete, two that fail (their person photo's file is gone), one held
    in processing by a slow failpoint; a fleet runs them."""
    owner = api.owner()
    garment = _upload(owner, "cloth", 3)
    person = _upload(owner, "user", 5)
    lost = _upload(owner, "user", 7)
    lost_key = _rows(api, "SELECT file_path FROM images WHERE id = %s", (uuid.UUID(lost),))[0][0]
    lost_bytes = api.storage.get(lost_key)
    api.storage.delete(lost_key)
    done = [owner.conversion(user_image_id=person, cloth_image_id=garment, style_name="casual")["id"]
            for _ in range(6)]
    failed = [owner.conversion(user_image_id=lost, cloth_image_id=garment, style_name="casual")["id"]
              for _ in range(2)]
    fleet.start_fleet(processes=1, threads=2, STAYLER_FAILPOINTS="sleep=slow:120")
    expected = {**dict.fromkeys(done, "completed"), **dict.fromkeys(failed, "failed")}
    until(lambda: _statuses(api, done + failed) == expected, 90, "the fleet to finish the workload", fleet)
    # Submitted afterwards: a slow job holds its whole batch.
    slow = owner.conversion(user_image_id=person, cloth_image_id=garment, style_name="slow", priority=5)["id"]
    until(lambda: _statuses(api, [slow]) == {slow: "processing"}, 30, "the slow conversion to start", fleet)
    return {"owner": owner, "done": done, "failed": failed, "slow": slow, "lost_key": lost_key,
            "lost_bytes": lost_bytes}


def _login(driver: Any, api: ApiEnv, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{api.base_url}/console/login")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "login").click()
    try:
        browser.until(lambda: driver.current_url.endswith("/console/"), 15, "the overview after login")
    except AssertionError:
        raise AssertionError(f"login failed at {driver.current_url}: {driver.page_source[:2000]}") from None


def _text(driver: Any, element_id: str) -> str:
    """The element's text; read again when the overview's refresh replaced it under our feet."""
    from selenium.common.exceptions import NoSuchElementException, WebDriverException
    from selenium.webdriver.common.by import By

    for _ in range(10):
        try:
            return str(driver.find_element(By.ID, element_id).text)
        except NoSuchElementException:
            raise
        except WebDriverException as exc:
            if not browser.replaced_under_us(exc):
                raise
            time.sleep(0.1)
    return str(driver.find_element(By.ID, element_id).text)


def _type_into_overview(driver: Any, reason: str) -> None:
    """Type the dispatch form's reason; once it holds text the overview stops replacing itself."""
    from selenium.webdriver.common.by import By

    def typed() -> bool:
        driver.find_element(By.CSS_SELECTOR, "form.action input[name=reason]").send_keys(reason)
        return True

    browser.until(typed, 10, "the dispatch form's reason field")


def _act(driver: Any, reason_id: str, button_id: str, reason: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, reason_id).send_keys(reason)
    driver.find_element(By.ID, button_id).click()
    browser.until(lambda: driver.find_elements(By.ID, "message"), 15, "the action's message")


def _fits(driver: Any) -> bool:
    return bool(driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1"))


def _image_loaded(driver: Any, element_id: str) -> bool:
    return bool(driver.execute_script(
        f"var i = document.getElementById('{element_id}'); return i && i.complete && i.naturalWidth > 0"))


def test_an_operator_sees_the_fleet_and_retries_cancels_and_pauses_through_the_pages(
        make_api: Any, fleet: Env) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    api: ApiEnv = make_api(thumbnail_size=256)
    work = _workload(api, fleet)
    _, key = console_key(api.db_url, "operator")
    with browser.chromium() as driver:
        browser.viewport(driver, 1280, 800)
        _login(driver, api, key)
        # The overview: queue, throughput, errors, workers, leader; it refreshes by itself.
        browser.until(lambda: driver.find_elements(By.CSS_SELECTOR, "#leader dd") and
                      _text(driver, "leader").split("\n")[0] != "none", 30, "a leader on the overview")
        assert _text(driver, "processing") == "1"
        assert _text(driver, "completed-hour") == "6" and _text(driver, "failed-hour") == "2"
        assert "input_missing" in _text(driver, "errors")
        workers = _text(driver, "workers")
        assert "null" in workers and len(driver.find_elements(By.CSS_SELECTOR, "#workers tr")) == 2
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.ok")) >= 1
        first = browser.until(lambda: driver.find_element(By.ID, "overview").get_attribute("data-refreshed"), 10,
                              "the overview's refresh stamp")
        browser.until(lambda: driver.find_element(By.ID, "overview").get_attribute("data-refreshed") != first,
                      15, "the overview to refresh itself")
        assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1
        if SCREENSHOTS:
            driver.save_screenshot(str(ROOT / "docs" / "img" / "console-overview.png"))

        # The list, filtered on status through the form.
        driver.get(f"{api.base_url}/console/conversions")
        Select(driver.find_element(By.ID, "f-status")).select_by_value("failed")
        driver.find_element(By.ID, "apply").click()
        browser.until(lambda: "status=failed" in driver.current_url, 10, "the filtered list")
        listed = {e.get_attribute("value") for e in driver.find_elements(By.CSS_SELECTOR, "input[name=ids]")}
        assert listed == set(work["failed"])

        # A completed conversion's detail: the three thumbnails, the attempt, the metrics and usage.
        driver.get(f"{api.base_url}/console/conversions/{work['done'][0]}")
        browser.until(lambda: all(_image_loaded(driver, i) for i in ("img-person", "img-garment", "img-result")),
                      15, "the thumbnails")
        worker_id = _rows(api, "SELECT worker_id FROM conversion_jobs WHERE conversion_id = %s",
                          (uuid.UUID(work["done"][0]),))[0][0]
        assert worker_id in _text(driver, "attempts") and "completed" in _text(driver, "attempts")
        assert "yes" in _text(driver, "metrics") and "use_in_conversion" in _text(driver, "usage")
        if SCREENSHOTS:
            driver.save_screenshot(str(ROOT / "docs" / "img" / "console-conversion.png"))

        # Retry one failure from its page, once its photo is back: a new conversion, and it completes.
        api.storage.put(work["lost_key"], work["lost_bytes"])
        driver.get(f"{api.base_url}/console/conversions/{work['failed'][0]}")
        assert "input_missing" in _text(driver, "attempts")
        driver.find_element(By.ID, "retry-confirm").click()  # input_missing is never retried: confirm it
        _act(driver, "retry-reason", "retry", "photo restored")
        retried = _rows(api, "SELECT id FROM conversions WHERE retry_of = %s", (work["failed"][0],))
        assert len(retried) == 1
        browser.until(lambda: _statuses(api, [str(retried[0][0])]) == {str(retried[0][0]): "completed"}, 60,
                      "the retry to complete")
        assert _statuses(api, work["failed"])[work["failed"][0]] == "failed"  # statuses only move forward

        # Retry every failure matching a filter (the first is found retried already: no second copy).
        driver.get(f"{api.base_url}/console/conversions?status=failed&error_type=input_missing")
        driver.find_element(By.ID, "matching-reason").send_keys("bulk after restore")
        driver.find_element(By.ID, "retry-matching").click()
        browser.until(lambda: driver.find_elements(By.ID, "retry-matching-confirm"), 15, "the confirmation")
        assert "2" in _text(driver, "confirm-count")
        driver.find_element(By.ID, "retry-matching-confirm").click()
        browser.until(lambda: driver.find_elements(By.ID, "message"), 15, "the action's message")
        counts = _rows(api, "SELECT retry_of::text, count(*) FROM conversions "
                            "WHERE retry_of IS NOT NULL GROUP BY 1")
        assert dict(counts) == {work["failed"][0]: 1, work["failed"][1]: 1}

        # Cancel the slow one (processing) from its page.
        driver.get(f"{api.base_url}/console/conversions/{work['slow']}")
        _act(driver, "cancel-reason", "cancel", "stuck, ticket 12")
        assert _statuses(api, [work["slow"]]) == {work["slow"]: "cancelled"}
        assert _text(driver, "status") == "cancelled"

        # Pause and resume dispatch from the overview.
        driver.get(f"{api.base_url}/console/")
        _type_into_overview(driver, "maintenance")
        driver.find_element(By.ID, "dispatch-toggle").click()
        browser.until(lambda: "PAUSED" in _text(driver, "dispatch-state"), 10, "dispatch paused")
        assert _rows(api, "SELECT dispatch_paused FROM fleet_controls") == [(True,)]
        _type_into_overview(driver, "done")
        driver.find_element(By.ID, "dispatch-toggle").click()
        browser.until(lambda: "running" in _text(driver, "dispatch-state"), 10, "dispatch resumed")
        assert _rows(api, "SELECT dispatch_paused FROM fleet_controls") == [(False,)]

        # The audit trail holds every action, with who and why.
        # Every call is audited with its outcome; the bulk retry also met the conversion retried before it.
        rows = _rows(api, "SELECT action, conversion_id::text, reason, outcome FROM operator_actions ORDER BY id")
        audit = [r[:3] for r in rows if r[3] in ("retried", "cancelled", "paused", "resumed")]
        assert {r[3] for r in rows} - {"retried", "cancelled", "paused", "resumed"} <= {"already_retried"}
        assert [a[0] for a in audit] == ["retry", "retry", "cancel", "pause_dispatch", "resume_dispatch"]
        assert audit[0][1:] == (work["failed"][0], "photo restored")
        assert audit[2][1:] == (work["slow"], "stuck, ticket 12")

        # A phone-sized viewport: every view fits its width (tables scroll inside their cards).
        browser.viewport(driver, *PHONE, mobile=True)
        for path in ("/console/", "/console/conversions", f"/console/conversions/{work['done'][0]}"):
            driver.get(api.base_url + path)
            assert _fits(driver), path


def test_a_read_only_viewer_sees_everything_and_changes_nothing(make_api: Any, fleet: Env) -> None:
    from selenium.webdriver.common.by import By

    api: ApiEnv = make_api(thumbnail_size=256)
    work = _workload(api, fleet)
    _, key = console_key(api.db_url, "viewer")
    before = _rows(api, "SELECT id, status FROM conversions ORDER BY id")
    with browser.chromium() as driver:
        browser.viewport(driver, 1280, 800)
        _login(driver, api, key)
        assert "read-only" in _text(driver, "role")
        assert _text(driver, "completed-hour") == "6"
        assert not driver.find_elements(By.ID, "dispatch-toggle")
        driver.get(f"{api.base_url}/console/conversions")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#conversions tr")) == 1 + 9
        assert not driver.find_elements(By.ID, "cancel-selected")
        for cid in (work["failed"][0], work["slow"]):
            driver.get(f"{api.base_url}/console/conversions/{cid}")
            assert not driver.find_elements(By.ID, "retry") and not driver.find_elements(By.ID, "cancel")
        # Forging the operator's forms from the viewer's own page (with its valid CSRF token) is refused.
        statuses = driver.execute_script("""
            var token = document.querySelector('input[name=csrf_token]').value;
            var posts = [['/console/actions/cancel', 'ids=' + arguments[0]],
                         ['/console/actions/retry', 'ids=' + arguments[1]],
                         ['/console/actions/dispatch', 'paused=true']];
            return Promise.all(posts.map(function (p) {
                return fetch(p[0], {method: 'POST', credentials: 'same-origin', redirect: 'manual',
                    headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                    body: p[1] + '&reason=forged&csrf_token=' + encodeURIComponent(token)})
                    .then(function (r) { return r.status; });
            }));""", work["slow"], work["failed"][0])
        assert statuses == [403, 403, 403]
    assert _rows(api, "SELECT id, status FROM conversions ORDER BY id") == before
    assert _rows(api, "SELECT count(*) FROM operator_actions") == [(0,)]
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        assert scalar(conn, "SELECT dispatch_paused FROM fleet_controls") is False
