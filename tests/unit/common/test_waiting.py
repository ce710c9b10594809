"""poll_until and wait_until: the engine's one polling loop, on a fake clock
(no test here really sleeps)."""

from __future__ import annotations

from typing import List, Optional

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import waiting
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.waiting import poll_until, wait_until


class FakeClock:
    """Stands in for the time module inside waiting.py: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: List[float] = []
        self.events: List[str] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.events.append("sleep")
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(waiting, "time", fake)
    return fake


def answers(clock: FakeClock, *values, cost: float = 0.0):
    """An attempt returning values in turn (then None), each call taking cost seconds."""
    pending = list(values)
    calls: List[float] = []

    def attempt() -> Optional[object]:
        calls.append(clock.now)
        clock.events.append("attempt")
        clock.now += cost
        return pending.pop(0) if pending else None

    return attempt, calls


def test_returns_what_the_attempt_returned_once_it_is_not_none(clock):
    attempt, calls = answers(clock, None, None, "ready")
    assert poll_until(attempt, timeout=10, interval=0.5) == "ready"
    assert len(calls) == 3 and clock.sleeps == [0.5, 0.5]


@pytest.mark.parametrize("falsy", [0, False, "", []])
def test_a_falsy_answer_other_than_none_ends_the_wait(clock, falsy):
    attempt, calls = answers(clock, falsy)
    assert poll_until(attempt, timeout=10) == falsy
    assert len(calls) == 1 and clock.sleeps == []


def test_times_out_with_none_and_tries_once_more_at_the_deadline(clock):
    attempt, calls = answers(clock)
    start = clock.now
    assert poll_until(attempt, timeout=1.0, interval=0.3) is None
    assert clock.sleeps == pytest.approx([0.3, 0.3, 0.3, 0.1])  # the last sleep is cut to the time left
    assert clock.now == pytest.approx(start + 1.0)
    assert calls[-1] == pytest.approx(start + 1.0)


def test_never_sleeps_past_the_deadline_when_attempts_take_time(clock):
    attempt, calls = answers(clock, cost=0.1)
    deadline = clock.now + 1.0
    ends: List[float] = []
    sleep = clock.sleep

    def recorded_sleep(seconds: float) -> None:
        sleep(seconds)
        ends.append(clock.now)

    clock.sleep = recorded_sleep
    assert poll_until(attempt, timeout=1.0, interval=0.5) is None
    # 0.1 + 0.5 + 0.1 leaves 0.3: the second sleep is cut to it, then one last attempt.
    assert clock.sleeps == pytest.approx([0.5, 0.3])
    assert all(end <= deadline + 1e-9 for end in ends)
    assert len(calls) == 3 and calls[-1] == pytest.approx(deadline)


def test_on_first_wait_runs_once_before_the_first_sleep(clock):
    attempt, _calls = answers(clock, None, None, None, "done")
    told: List[float] = []

    def say_waiting() -> None:
        clock.events.append("told")
        told.append(clock.now)

    assert poll_until(attempt, timeout=10, interval=1, on_first_wait=say_waiting) == "done"
    assert len(told) == 1
    assert clock.events[:3] == ["attempt", "told", "sleep"]


def test_on_first_wait_is_not_called_when_no_wait_was_needed(clock):
    attempt, _calls = answers(clock, "at once")
    told: List[str] = []
    assert poll_until(attempt, timeout=10, on_first_wait=lambda: told.append("waiting")) == "at once"
    assert told == []


@pytest.mark.parametrize("timeout", [0, -5])
def test_a_timeout_of_zero_or_less_still_makes_one_attempt(clock, timeout):
    attempt, calls = answers(clock)
    told: List[str] = []
    assert poll_until(attempt, timeout=timeout, on_first_wait=lambda: told.append("waiting")) is None
    assert len(calls) == 1 and clock.sleeps == [] and told == []


def test_a_timeout_of_zero_returns_an_immediate_answer(clock):
    attempt, _calls = answers(clock, 42)
    assert poll_until(attempt, timeout=0) == 42


def test_wait_until_is_true_as_soon_as_the_condition_holds(clock):
    results = iter([False, False, True])
    assert wait_until(lambda: next(results), timeout=10, interval=0.25) is True
    assert clock.sleeps == [0.25, 0.25]


def test_wait_until_is_false_when_the_condition_never_holds(clock):
    start = clock.now
    assert wait_until(lambda: False, timeout=3, interval=1) is False
    assert clock.now == pytest.approx(start + 3)


def test_really_waits_on_the_real_clock():
    """Without the fake: a short real wait ends at its deadline, not long after."""
    import time

    started = time.monotonic()
    assert poll_until(lambda: None, timeout=0.15, interval=0.05) is None
    assert 0.15 <= time.monotonic() - started < 1.0
