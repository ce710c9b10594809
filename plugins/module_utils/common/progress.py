"""Progress of long operations: bytes done, total, rate and ETA.

The engine never prints: a long operation takes an optional ProgressCallback
and calls it with (phase, done, total) as bytes go by (total None when it is
not known). A front end decides where that goes; `Progress` is such a
callback that reports

* ``live``: one line on a terminal, rewritten in place (carriage return) at
  most four times a second;
* ``lines``: a plain line when a phase starts, at least every 10 seconds
  while it runs, and when it ends (logs, systemd's journal, pipes);
* ``json``: the same moments as JSON events, one object per line:
  ``{"event": "progress", "operation": ..., "phase": ..., "state": "start" |
  "running" | "end" | "stopped", "done_bytes": ..., "total_bytes": ..., "rate_bytes_per_second":
  ..., "eta_seconds": ..., "elapsed_seconds": ...}``;
* ``none``: nothing.

The restorekeeper command writes progress to stderr, so that the result it
prints on stdout (JSON with --json) stays parseable.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, Optional, TextIO

from .timefmt import format_duration, format_elapsed, format_rate, format_size

# (phase, done bytes, total bytes or None when unknown)
ProgressCallback = Callable[[str, int, Optional[int]], None]

LIVE = "live"
LINES = "lines"
JSON = "json"
NONE = "none"
AUTO = "auto"
MODES = (AUTO, LIVE, LINES, JSON, NONE)
LINE_INTERVAL = 10.0  # seconds between plain lines and JSON events at most
LIVE_INTERVAL = 0.25  # seconds between rewrites of the live line at least


def choose_mode(requested: str, json_output: bool, stream: TextIO) -> str:
    """The mode for --progress REQUESTED: auto is json with --json, live on a terminal, else lines."""
    if requested not in MODES:
        raise ValueError("unknown progress mode %r; use one of %s" % (requested, ", ".join(MODES)))
    if requested != AUTO:
        return requested
    if json_output:
        return JSON
    isatty = getattr(stream, "isatty", None)
    return LIVE if isatty is not None and isatty() else LINES


class Meter:
    """Counts the bytes of one phase and hands the running total to a callback (which may be None)."""

    def __init__(self, callback: Optional[ProgressCallback], phase: str, total: Optional[int] = None,
                 done: int = 0) -> None:
        self.callback = callback
        self.phase = phase
        self.total = total
        self.done = done

    def add(self, count: int) -> None:
        self.done += count
        if self.callback is not None:
            self.callback(self.phase, self.done, self.total)

    def set(self, done: int) -> None:
        self.done = done
        if self.callback is not None:
            self.callback(self.phase, self.done, self.total)


class Progress:
    """A ProgressCallback that reports to a stream in one of the MODES.

    Call it with (phase, done, total) as often as convenient; it decides when
    to write. A new phase ends the previous one; finish() ends the last."""

    def __init__(self, operation: str, stream: TextIO, mode: str = LINES,
                 clock: Callable[[], float] = time.monotonic, interval: float = LINE_INTERVAL,
                 live_interval: float = LIVE_INTERVAL) -> None:
        if mode not in MODES or mode == AUTO:
            raise ValueError("unknown progress mode %r; use one of live, lines, json, none" % (mode,))
        self.operation = operation
        self.stream = stream
        self.mode = mode
        self.clock = clock
        self.interval = live_interval if mode == LIVE else interval
        self._phase: Optional[str] = None
        self._started = 0.0
        self._first_done = 0
        self._done = 0
        self._total: Optional[int] = None
        self._last_written = 0.0
        self._live_width = 0

    def __call__(self, phase: str, done: int, total: Optional[int] = None) -> None:
        if self.mode == NONE:
            return
        now = self.clock()
        if phase != self._phase:
            self._end(now)
            self._phase, self._started, self._first_done = phase, now, done
            self._done, self._total = done, total
            self._write(now, "start")
            return
        self._done, self._total = done, total
        if now - self._last_written >= self.interval:
            self._write(now, "running")

    def finish(self, failed: bool = False) -> None:
        """End the current phase (its last line or event, "stopped" when the
        operation failed); nothing when none ran."""
        if self.mode != NONE:
            self._end(self.clock(), "stopped" if failed else "end")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type: Any, *_exc: Any) -> None:
        # The last phase ends whether the operation succeeded or failed: the
        # live line is closed before an error message is printed below it.
        self.finish(failed=exc_type is not None)

    def event(self, now: float, state: str = "running") -> Dict[str, Any]:
        """The state of the current phase at now, as a JSON event."""
        elapsed = max(now - self._started, 0.0)
        rate = (self._done - self._first_done) / elapsed if elapsed > 0 else None
        eta: Optional[float] = None
        if self._total is not None:
            remaining = max(self._total - self._done, 0)
            if remaining == 0 or state == "end":
                eta = 0.0
            elif rate:
                eta = remaining / rate
        return {"event": "progress", "operation": self.operation, "phase": self._phase, "state": state,
                "done_bytes": self._done, "total_bytes": self._total,
                "rate_bytes_per_second": round(rate, 1) if rate is not None else None,
                "eta_seconds": round(eta, 1) if eta is not None else None,
                "elapsed_seconds": round(elapsed, 3)}

    def _end(self, now: float, state: str = "end") -> None:
        if self._phase is None:
            return
        self._write(now, state)
        if self.mode == LIVE:
            self.stream.write("\n")
            self.stream.flush()
            self._live_width = 0
        self._phase = None

    def _write(self, now: float, state: str) -> None:
        self._last_written = now
        event = self.event(now, state)
        if self.mode == JSON:
            self.stream.write(json.dumps(event, sort_keys=True) + "\n")
        elif self.mode == LIVE:
            line = describe(event)
            self.stream.write("\r" + line + " " * max(self._live_width - len(line), 0))
            self._live_width = len(line)
        else:
            self.stream.write(describe(event) + "\n")
        self.stream.flush()


def describe(event: Dict[str, Any]) -> str:
    """One event in words: 'backup stream: 1.4 GiB of 10.0 GiB (14%), 85.3 MiB/s, ETA 1min48s'."""
    done, total, rate = event["done_bytes"], event["total_bytes"], event["rate_bytes_per_second"]
    head = "%s %s: " % (event["operation"], event["phase"])
    amount = format_size(done)
    if total:
        amount += " of %s (%d%%)" % (format_size(total), min(100, done * 100 // total))
    parts = [amount]
    if event["state"] in ("end", "stopped"):
        parts = [amount + " in " + format_elapsed(event["elapsed_seconds"])]
        if rate:
            parts.append(format_rate(rate))
        return head + ("done, " if event["state"] == "end" else "stopped after ") + ", ".join(parts)
    if rate:
        parts.append(format_rate(rate))
    if event["eta_seconds"] is not None and event["state"] != "start":
        parts.append("ETA " + format_duration(event["eta_seconds"]))
    return head + ", ".join(parts)
