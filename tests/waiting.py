"""Waiting on a condition with a deadline (never sleep-and-hope)."""
from __future__ import annotations

import time

import pytest


def wait_until(predicate, timeout: float, what: str, *consumers, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy (returned); after ``timeout``
    seconds fail the test, with the tail of each given consumer's log."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            logs = ''.join(f'\n--- log of consumer {c.pid} ---\n{c.log()[-4000:]}' for c in consumers)
            pytest.fail(f'timed out after {timeout}s waiting for {what}{logs}')
        time.sleep(interval)
