"""Bounded polling: tests wait for conditions, never for fixed durations."""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not become true in time (an AssertionError so pytest shows it as a failure)."""


def wait_until(
    predicate: Callable[[], Optional[T]],
    timeout: float = 60.0,
    interval: float = 0.2,
    message: str = "condition",
    describe: Optional[Callable[[], str]] = None,
) -> T:
    """Poll `predicate` until it returns a truthy value and return that value.

    `describe`, when given, is called on timeout to explain the last state seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = ""
            if describe is not None:
                try:
                    detail = ": " + describe()
                except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the timeout
                    detail = ": (could not describe state: %s)" % exc
            raise WaitTimeout("timed out after %.0fs waiting for %s%s" % (timeout, message, detail))
        time.sleep(interval)
