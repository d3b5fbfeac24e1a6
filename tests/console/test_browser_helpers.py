"""The browser helpers read an element again when the overview's self-refresh replaced it."""

from __future__ import annotations

import pytest

from tests.console import browser

exceptions = pytest.importorskip("selenium.common.exceptions", reason="pip install -e '.[dev]'")

# What ChromeDriver 156 raised in CI when `.text` hit a node the refresh had just replaced.
DETACHED = ('unknown error: unhandled inspector error: {"code":-32000,"message":"Node with given id does not '
            'belong to the document"}')


def test_a_node_replaced_while_being_read_counts_as_replaced() -> None:
    assert browser.replaced_under_us(exceptions.WebDriverException(DETACHED))
    assert browser.replaced_under_us(exceptions.StaleElementReferenceException("stale element reference"))
    assert browser.replaced_under_us(exceptions.NoSuchElementException("no such element"))


def test_other_driver_errors_are_not_swallowed() -> None:
    assert not browser.replaced_under_us(exceptions.WebDriverException("chrome not reachable"))
    assert not browser.replaced_under_us(exceptions.TimeoutException("page load"))


def test_until_reads_again_after_a_detached_node_and_raises_anything_else() -> None:
    reads = iter([exceptions.WebDriverException(DETACHED), "fresh"])

    def read() -> str:
        value = next(reads)
        if isinstance(value, Exception):
            raise value
        return value

    assert browser.until(read, 5, "a fresh read") == "fresh"
    with pytest.raises(exceptions.WebDriverException, match="chrome not reachable"):
        browser.until(lambda: (_ for _ in ()).throw(exceptions.WebDriverException("chrome not reachable")), 5, "x")
