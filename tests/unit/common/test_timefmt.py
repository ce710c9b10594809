"""Durations and instants, parsed and written the one way (common/timefmt.py)."""

from __future__ import annotations

import calendar
import time

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.timefmt import (
    MAX_SECONDS, duration_setting, format_duration, format_elapsed, format_rate, format_size, parse_duration,
    parse_seconds, utc_iso)


# ------------------------------------------------------------- parse_seconds
@pytest.mark.parametrize("value, seconds", [
    (0, 0), (60, 60), ("0", 0), ("60", 60), ("60s", 60), ("1min", 60), (" 1 min ", 60), ("5MIN", 300),
    ("1h", 3600), ("1d", 86400), ("90000ms", 90), ("1.5min", 90), ("2000000us", 2), ("0.5min", 30),
    (MAX_SECONDS, MAX_SECONDS), (str(MAX_SECONDS), MAX_SECONDS),
])
def test_parse_seconds_reads_postgresql_durations(value, seconds):
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize("value, message", [
    (True, "is not a duration"),
    ("", "is not a duration"),
    ("abc", "is not a duration"),
    ("1e3", "is not a duration"),
    ("60 s s", "is not a duration"),
    ("5weeks", "unknown time unit"),
    ("1500ms", "not a whole number of seconds"),
    ("0.5s", "not a whole number of seconds"),
    ("-1", "is not a duration"),
    (-1, "out of range"),
    (MAX_SECONDS + 1, "out of range"),
    ("1073741824", "out of range"),
])
def test_parse_seconds_refuses_with_the_reason(value, message):
    with pytest.raises(ValueError, match=message):
        parse_seconds(value)


# ------------------------------------------------------------ parse_duration
@pytest.mark.parametrize("value, seconds", [
    ("500ms", 0.5), ("500 ms", 0.5), ("0.5s", 0.5), (0.25, 0.25), ("250000us", 0.25), ("1500ms", 1.5),
    ("5min", 300), (300, 300), ("1h", 3600), ("0", 0),
])
def test_parse_duration_takes_sub_second_targets(value, seconds):
    parsed = parse_duration(value)
    assert parsed == seconds
    # Whole seconds stay ints, so 5min is 300 in JSON, not 300.0.
    assert isinstance(parsed, int) == (seconds == int(seconds))


@pytest.mark.parametrize("value, message", [
    ("soon", "is not a duration"), ("5weeks", "unknown time unit"), ("0.5us", "finer than a microsecond"),
    (-1, "out of range"), (True, "is not a duration"),
])
def test_parse_duration_refuses_with_the_reason(value, message):
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


@pytest.mark.parametrize("seconds, text", [(300, "300s"), (0.5, "500ms"), (1.5, "1500ms"), (0, "0s")])
def test_duration_setting_reads_back_exactly(seconds, text):
    assert duration_setting(seconds) == text
    assert parse_duration(text) == seconds


# ----------------------------------------------------------- format_duration
@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.5, "500ms"), (0.0004, "1ms"), (0.9996, "1s"), (45, "45s"), (59.4, "59s"), (59.6, "1min"), (60, "1min"), (120, "2min"), (1024, "17min04s"),
    (3600, "1h"), (7500, "2h05min"), (43200, "12h"), (86400, "1d"), (90000, "25h"), (259200, "3d"),
])
def test_format_duration_writes_the_short_form(seconds, text):
    assert format_duration(seconds) == text


# ------------------------------------------------------------------- utc_iso
INSTANT = calendar.timegm((2023, 11, 14, 22, 13, 20)) + 0.123456


@pytest.mark.parametrize("digits, text", [
    (0, "2023-11-14T22:13:20Z"),
    (3, "2023-11-14T22:13:20.123Z"),
    (6, "2023-11-14T22:13:20.123456Z"),
])
def test_utc_iso_writes_the_asked_digits(digits, text):
    assert utc_iso(INSTANT, digits=digits) == text


def test_utc_iso_defaults_to_microseconds():
    assert utc_iso(INSTANT) == "2023-11-14T22:13:20.123456Z"


def test_utc_iso_truncates_rather_than_rounds_up_into_the_next_second():
    assert utc_iso(calendar.timegm((1999, 12, 31, 23, 59, 59)) + 0.9996, digits=3) == "1999-12-31T23:59:59.999Z"
    assert utc_iso(0, digits=0) == "1970-01-01T00:00:00Z"


def test_utc_iso_without_a_timestamp_is_now():
    before = int(time.time())
    text = utc_iso(digits=0)
    after = int(time.time())
    assert text.endswith("Z")
    parsed = calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    assert before <= parsed <= after


# The cases the PostgreSQL settings and the schedule tests held before the functions moved here.
@pytest.mark.parametrize(
    "value, seconds",
    [
        (60, 60),
        ("60", 60),
        ("60s", 60),
        ("1min", 60),
        (" 1 min ", 60),
        ("5min", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("90000ms", 90),
        ("1.5min", 90),
        ("2000000us", 2),
        ("0", 0),
        (0, 0),
        ("1073741823", 1073741823),
    ],
)
def test_parse_seconds_accepts_postgresql_units(value, seconds):
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "abc", "10 parsecs", "1500ms", "0.5s", "-1", -1, "1073741824", True, "60 s s", "1e3"]
)
def test_parse_seconds_refuses_what_postgresql_would_round_or_reject(value):
    with pytest.raises(ValueError):
        parse_seconds(value)


@pytest.mark.parametrize("seconds, text", [(45, "45s"), (60, "1min"), (1024, "17min04s"), (43200, "12h"),
                                           (7500, "2h05min"), (259200, "3d")])
def test_format_duration_of_schedules(seconds, text):
    assert format_duration(seconds) == text


# ------------------------------------------------------- sizes and elapsed
@pytest.mark.parametrize("size, text", [
    (0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (int(1.4 * 1024 ** 3), "1.4 GiB"), (int(99.96 * 1024 ** 3), "100 GiB"), (512 * 1024 ** 3, "512 GiB"),
    (int(1023.99 * 1024 ** 3), "1.0 TiB"), (3 * 1024 ** 4, "3.0 TiB"),
])
def test_format_size_in_binary_units(size, text):
    assert format_size(size) == text


def test_format_rate_and_elapsed():
    assert format_rate(85.3 * 1024 ** 2) == "85.3 MiB/s"
    assert [format_elapsed(s) for s in (0.04, 0.44, 9.94, 9.96, 125)] == ["0.0s", "0.4s", "9.9s", "10s", "2min05s"]


def test_parse_utc_iso_reads_what_utc_iso_writes():
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.timefmt import parse_utc_iso

    assert parse_utc_iso(utc_iso(1780000000.25)) == pytest.approx(1780000000.25)
    assert parse_utc_iso("2026-06-14T14:31:59+02:00") == parse_utc_iso("2026-06-14T12:31:59Z")
    with pytest.raises(ValueError):
        parse_utc_iso("2026-06-14T14:31:59")  # no zone: which moment is unknown
    with pytest.raises(ValueError):
        parse_utc_iso("yesterday")
