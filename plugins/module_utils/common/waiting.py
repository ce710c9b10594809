"""Waiting for something, with a deadline: the one polling loop of the engine.

A server to accept connections, a postmaster to exit, a lock to be released,
a file to appear: each is an attempt repeated every interval seconds until it
succeeds or the time is up. (The deadline that bounds a whole wal-push or
wal-fetch, with a watchdog, is deadline.py.)
"""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


def poll_until(attempt: Callable[[], Optional[T]], timeout: float, interval: float = 0.2,
               on_first_wait: Optional[Callable[[], None]] = None) -> Optional[T]:
    """Call attempt until it returns something other than None, at most timeout seconds (at least once).

    Returns what attempt returned, or None when the time ran out. on_first_wait runs once, before the first
    sleep (to say what is being waited for). Never sleeps past the deadline.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    waited = False
    while True:
        result = attempt()
        if result is not None:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if not waited and on_first_wait is not None:
            on_first_wait()
        waited = True
        time.sleep(min(interval, left))


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.2,
               on_first_wait: Optional[Callable[[], None]] = None) -> bool:
    """poll_until for a yes/no condition: True as soon as it holds, False when the time ran out."""
    return poll_until(lambda: True if condition() else None, timeout, interval, on_first_wait) is not None
