"""One wall-clock deadline for the repository I/O of a command.

PostgreSQL waits for archive_command and restore_command; a repository that
accepts a connection and then goes silent (or answers one byte at a time)
must not stall the archiver while pg_wal fills. wal-push and wal-fetch
therefore run under limit(): the storage backends bound every remote
operation by the time left (remaining(), operation_timeout()), and a watchdog
(SIGALRM, main thread) raises DeadlineExceeded at the deadline, or ends the
process shortly after should that exception be swallowed somewhere. Without
a limit (backups, shipping, ...) nothing here changes any behaviour.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any, Iterator, Optional

from .errors import StorageError

#: After the deadline, how long the watchdog lets the DeadlineExceeded it
#: raised unwind before it ends the process itself.
HARD_EXIT_GRACE = 2.0

_deadline: Optional[float] = None   # time.monotonic() value; None: no limit
_seconds: float = 0.0
_what: str = ""
_exit_code: int = 1


class DeadlineExceeded(StorageError):
    """A remote operation did not finish within the configured time."""


class WatchdogFired(BaseException):
    """Raised by the watchdog wherever the main thread is. Not an Exception,
    so that libraries which catch and retry every Exception (botocore does)
    cannot swallow it; limit() turns it into DeadlineExceeded."""


#: What a caller catches to learn that the deadline cut its operation off.
TIMED_OUT = (DeadlineExceeded, WatchdogFired)


def active() -> bool:
    return _deadline is not None


def remaining() -> Optional[float]:
    """Seconds left until the deadline (never below zero), or None without one."""
    if _deadline is None:
        return None
    return max(0.0, _deadline - time.monotonic())


def operation_timeout() -> Optional[float]:
    """The configured limit in seconds while one is active, else None."""
    return _seconds if _deadline is not None else None


def exceeded(doing: str) -> DeadlineExceeded:
    """The error for an operation cut off by the deadline."""
    return DeadlineExceeded(
        "%s did not finish within %g s (%s)" % (_what or "the command", _seconds, doing),
        "the repository (or a synchronous copy) is unreachable or too slow, and this call did nothing; "
        "check the network path and the store, or raise [archive] remote_timeout",
    )


def _on_alarm(signum: int, frame: Any) -> None:
    if _deadline is not None and time.monotonic() < _deadline + HARD_EXIT_GRACE:
        signal.setitimer(signal.ITIMER_REAL, HARD_EXIT_GRACE)  # the backstop, should this be swallowed
        raise WatchdogFired()
    _hard_exit()


def _hard_exit() -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write("restorekeeper: ERROR: %s did not finish within %g s; stopped\n" % (_what or "the command", _seconds))
        sys.stderr.flush()
    os._exit(_exit_code)  # pylint: disable=protected-access


@contextlib.contextmanager
def limit(seconds: float, what: str, exit_code: int = 1) -> Iterator[None]:
    """Run the block under a deadline of seconds from now. exit_code is what
    the process exits with should the watchdog have to end it."""
    global _deadline, _seconds, _what, _exit_code  # pylint: disable=global-statement
    _deadline, _seconds, _what, _exit_code = time.monotonic() + seconds, float(seconds), what, exit_code
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except WatchdogFired:
        raise exceeded("no answer in time") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _deadline = None


def hard_limit_in_child(seconds: float) -> None:
    """In a forked worker (async push, prefetch), whose threads a raised
    exception cannot reach: end the process once seconds have passed. It
    only ever publishes complete objects, so being cut off loses nothing."""
    global _deadline, _exit_code  # pylint: disable=global-statement
    # Its remote reads are bounded by this limit, not by the parent's clock.
    _deadline, _exit_code = time.monotonic() + seconds, 1
    signal.signal(signal.SIGALRM, lambda signum, frame: _hard_exit())
    signal.setitimer(signal.ITIMER_REAL, seconds)
