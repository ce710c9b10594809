"""Progress reports (common/progress.py): when they are written, rate and ETA, the JSON event, the live line."""

from __future__ import annotations

import io
import json

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.progress import (
    JSON, LINES, LIVE, NONE, Meter, Progress, choose_mode, describe)

GIB = 1024 ** 3
MIB = 1024 ** 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def make(mode: str):
    clock, stream = FakeClock(), io.StringIO()
    return Progress("backup", stream, mode, clock=clock), clock, stream


def test_lines_start_every_ten_seconds_and_end():
    progress, clock, stream = make(LINES)
    progress("stream", 0, 10 * GIB)
    for second in range(1, 26):  # one update a second for 25 s
        clock.now += 1
        progress("stream", second * 100 * MIB, 10 * GIB)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, lines  # start, at 10 s, at 20 s, end
    assert lines[0] == "backup stream: 0 B of 10.0 GiB (0%)"
    assert lines[1] == "backup stream: 1000 MiB of 10.0 GiB (9%), 100 MiB/s, ETA 1min32s"
    assert lines[2].startswith("backup stream: 2.0 GiB of 10.0 GiB (19%), 100 MiB/s, ETA ")
    assert lines[3] == "backup stream: done, 2.4 GiB of 10.0 GiB (24%) in 25s, 100 MiB/s"


def test_a_with_block_ends_the_last_phase_on_success_and_on_failure():
    progress, clock, stream = make(LINES)
    with progress as same:
        assert same is progress
        progress("stream", 0, 10 * MIB)
        clock.now += 2
        progress("stream", 10 * MIB, 10 * MIB)
    assert stream.getvalue().splitlines()[-1].startswith("backup stream: done, 10.0 MiB")
    progress, clock, stream = make(LINES)
    with pytest.raises(RuntimeError):
        with progress:
            progress("store", 0, None)
            raise RuntimeError("the store went away")
    assert stream.getvalue().splitlines()[-1] == "backup store: stopped after 0 B in 0.0s"  # not "done"
    progress, clock, stream = make(JSON)
    with pytest.raises(RuntimeError):
        with progress:
            progress("store", 0, 5 * MIB)
            raise RuntimeError("the store went away")
    assert json.loads(stream.getvalue().splitlines()[-1])["state"] == "stopped"


def test_nothing_between_two_lines_when_updates_come_faster():
    progress, clock, stream = make(LINES)
    progress("stream", 0, None)
    for _step in range(99):
        clock.now += 0.1
        progress("stream", 1, None)
    assert len(stream.getvalue().splitlines()) == 1  # 9.9 s: only the start line
    clock.now += 0.1
    progress("stream", 2, None)
    assert len(stream.getvalue().splitlines()) == 2


def test_eta_from_the_rate_of_this_phase():
    progress, clock, _stream = make(LINES)
    progress("extract", 4 * GIB, 10 * GIB)  # the phase starts part way: the rate counts from here
    clock.now += 20
    progress("extract", 6 * GIB, 10 * GIB)
    event = progress.event(clock.now)
    assert event["rate_bytes_per_second"] == round(2 * GIB / 20, 1)
    assert event["eta_seconds"] == 40.0
    progress("extract", 12 * GIB, 10 * GIB)  # more than estimated: done, not negative
    assert progress.event(clock.now)["eta_seconds"] == 0.0


def test_unknown_total_has_no_eta():
    progress, clock, stream = make(LINES)
    progress("replay", 0, None)
    clock.now += 10
    progress("replay", 5 * MIB, None)
    assert progress.event(clock.now)["eta_seconds"] is None
    assert stream.getvalue().splitlines()[-1] == "backup replay: 5.0 MiB, 512 KiB/s"


def test_json_events_shape_and_a_new_phase_ends_the_last():
    progress, clock, stream = make(JSON)
    progress("extract", 0, 100)
    clock.now += 10
    progress("extract", 50, 100)
    clock.now += 1
    progress("replay", 0, None)
    progress.finish()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["phase"], e["state"]) for e in events] == [
        ("extract", "start"), ("extract", "running"), ("extract", "end"), ("replay", "start"), ("replay", "end")]
    assert events[1] == {"event": "progress", "operation": "backup", "phase": "extract", "state": "running",
                         "done_bytes": 50, "total_bytes": 100, "rate_bytes_per_second": 5.0, "eta_seconds": 10.0,
                         "elapsed_seconds": 10.0}
    assert events[2]["eta_seconds"] == 0.0 and events[4]["total_bytes"] is None


def test_live_line_rewritten_in_place_at_most_four_times_a_second():
    progress, clock, stream = make(LIVE)
    progress("stream", 0, 100 * MIB)
    for _step in range(100):  # 100 updates in one second
        clock.now += 0.01
        progress("stream", 50 * MIB, 100 * MIB)
    progress.finish()
    text = stream.getvalue()
    assert text.count("\r") <= 1 + 4 + 1 and text.count("\r") >= 4  # start, about 4 a second, end
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.split("\r")[-1].startswith("backup stream: done, 50.0 MiB of 100 MiB (50%)")


def test_live_line_blanks_what_a_longer_line_left():
    progress, clock, stream = make(LIVE)
    progress("stream", 0, 100 * GIB)
    clock.now += 1
    progress("stream", GIB, 100 * GIB)  # a long line: rate and ETA
    first = stream.getvalue().split("\r")[-1]
    progress.finish()
    last = stream.getvalue().rstrip("\n").split("\r")[-1]
    assert len(last) >= len(first)


def test_none_writes_nothing_and_meter_counts():
    progress, clock, stream = make(NONE)
    seen = []
    meter = Meter(lambda phase, done, total: seen.append((phase, done, total)) or progress(phase, done, total),
                  "stream", 10)
    meter.add(3)
    meter.add(4)
    meter.set(9)
    progress.finish()
    assert stream.getvalue() == "" and seen == [("stream", 3, 10), ("stream", 7, 10), ("stream", 9, 10)]
    Meter(None, "stream").add(5)  # no callback: counting only


def test_choose_mode():
    assert choose_mode("auto", True, Tty()) == JSON
    assert choose_mode("auto", False, Tty()) == LIVE
    assert choose_mode("auto", False, io.StringIO()) == LINES
    assert choose_mode("none", True, Tty()) == NONE
    with pytest.raises(ValueError, match="unknown progress mode"):
        choose_mode("loud", False, io.StringIO())
    with pytest.raises(ValueError, match="unknown progress mode"):
        Progress("backup", io.StringIO(), "auto")


def test_describe_caps_the_percentage():
    event = {"operation": "restore", "phase": "extract", "state": "running", "done_bytes": 120, "total_bytes": 100,
             "rate_bytes_per_second": None, "eta_seconds": 0.0}
    assert describe(event) == "restore extract: 120 B of 100 B (100%), ETA 0s"


def test_ship_once_reports_bytes_per_copy_on_stderr_and_keeps_stdout_json(tmp_path, capsys):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.cli import main
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.layout import wal_key
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository

    path = tmp_path / "rk.conf"
    path.write_text("[cluster]\nname = main\n[repository]\npath = %s\n[copy second]\npath = %s\n"
                    % (tmp_path / "repo", tmp_path / "copy"))
    repository = Repository.from_config(Config.load(str(path)))
    repository.create()
    repository.claim_identity("main", 7, 16 * MIB, "test")
    repository.storage.put_bytes(wal_key("main", "000000010000000000000001"), b"w" * 3000)
    assert main(["ship", "--config", str(path), "--once", "--json", "--progress", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["copy"] == "second"  # stdout: the result only
    events = [json.loads(line) for line in captured.err.splitlines()]
    assert [e["state"] for e in events] == ["start", "end"]
    assert events[0]["operation"] == "ship" and events[0]["phase"].startswith("copy second, ")
    assert events[0]["done_bytes"] == 0 and events[1]["done_bytes"] == events[1]["total_bytes"] >= 3000
    # Nothing left to ship: no progress at all.
    assert main(["ship", "--config", str(path), "--once", "--progress", "lines"]) == 0
    assert capsys.readouterr().err == ""
