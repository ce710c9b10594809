"""The archiving driver: the archiver's loop, a resident process around it (the pusher) and the pusher's count."""

from __future__ import annotations

import os
import pwd
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root: bench.lib

import pytest  # noqa: E402

from bench.lib import archiving  # noqa: E402

# Stays until SIGTERM, then reports like `restorekeeper wal-pusher --verbose` and exits 0 (or `code`).
RESIDENT = textwrap.dedent("""
    import signal, sys, time
    code = int(sys.argv[1])
    def stop(_signum, _frame):
        sys.stderr.write("restorekeeper wal-pusher: INFO: 3 WAL files pushed; stopped\\n")
        sys.exit(code)
    signal.signal(signal.SIGTERM, stop)
    open(sys.argv[2], "w").close()
    time.sleep(60)
""")
# An archive command: exits 0 when %p (relative) names a file from the working directory and the resident runs.
COMMAND = "import os, sys; sys.exit(0 if os.path.isfile(sys.argv[1]) and os.path.exists(sys.argv[2]) else 3)"


def _wal(tmp_path: Path, count: int):
    user = pwd.getpwuid(os.getuid()).pw_name
    wal = archiving.WalDir(tmp_path / "pgdata", user)
    sources = tmp_path / "src"
    sources.mkdir()
    names = ["00000001000000000000000%d" % n for n in range(1, count + 1)]
    for name in names:
        (sources / name).write_bytes(b"x" * 64)
    segments = wal.fill([sources / name for name in names])
    wal.mark_ready(segments)
    return wal, segments


def _resident(tmp_path: Path, code: int = 0) -> archiving.Resident:
    return archiving.Resident([sys.executable, "-c", RESIDENT, str(code), str(tmp_path / "started")], tmp_path / "log")


def _wait_started(tmp_path: Path) -> None:
    import time

    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline, "the resident process never started"
        time.sleep(0.05)


def test_drive_runs_commands_in_the_data_directory_while_the_resident_runs_and_stops_it(tmp_path):
    wal, segments = _wal(tmp_path, 3)
    resident = _resident(tmp_path)

    def commands(segment: Path):
        _wait_started(tmp_path)  # the resident started with the timer, before the first command
        return [[sys.executable, "-c", COMMAND, "pg_wal/" + segment.name, str(tmp_path / "started")]]

    seconds = archiving.drive(wal, segments, commands, resident=resident, in_data_dir=True)
    assert seconds > 0
    assert sorted(p.name for p in wal.status.iterdir()) == [s.name + ".done" for s in segments]
    assert resident.pushed == [3] and resident.quick == [-1]


def test_a_relative_path_fails_outside_the_data_directory(tmp_path):
    wal, segments = _wal(tmp_path, 1)
    (tmp_path / "started").touch()
    with pytest.raises(RuntimeError, match="exit 3"):
        archiving.drive(wal, segments, lambda s: [[sys.executable, "-c", COMMAND, "pg_wal/" + s.name,
                                                   str(tmp_path / "started")]])


def test_a_resident_failing_or_gone_before_sigterm_fails_the_pass(tmp_path):
    wal, segments = _wal(tmp_path, 1)

    def after_start(_segment: Path):
        _wait_started(tmp_path)  # its SIGTERM handler is set: the exit code is its own
        return [[sys.executable, "-c", "pass"]]
    with pytest.raises(RuntimeError, match="failed \\(exit 4\\).*3 WAL files pushed"):
        archiving.drive(wal, segments, after_start, resident=_resident(tmp_path, 4))
    wal.mark_ready(segments)
    gone = archiving.Resident([sys.executable, "-c", "pass"], tmp_path / "log2")

    def slow(_segment: Path):
        return [[sys.executable, "-c", "import time; time.sleep(1.5)"]]
    with pytest.raises(RuntimeError, match="ended before SIGTERM"):
        archiving.drive(wal, segments, slow, resident=gone)


def test_a_failing_command_kills_the_resident(tmp_path):
    wal, segments = _wal(tmp_path, 1)
    resident = _resident(tmp_path)
    with pytest.raises(RuntimeError, match="archive command for 000000010000000000000001 failed"):
        archiving.drive(wal, segments, lambda s: [[sys.executable, "-c", "import sys; sys.exit(1)"]], resident=resident)
    assert resident.pushed == []


def test_pushed_count_reads_the_pushers_last_report():
    log = ("restorekeeper wal-pusher: INFO: pushed 2 WAL files ahead (A .. B)\n"
           "restorekeeper wal-pusher: INFO: 7 WAL files pushed; stopped\n")
    assert archiving.pushed_count(log) == 7
    assert archiving.pushed_count("Traceback\n") == -1


def test_used_markers_counts_the_emptied_ones(tmp_path):
    assert archiving.used_markers(tmp_path / "absent") == 0
    (tmp_path / "A.ok").write_bytes(b"")
    (tmp_path / "B.ok").write_bytes(b"name B\n")
    (tmp_path / "C.ok").write_bytes(b"")
    (tmp_path / "push.lock").write_bytes(b"")
    assert archiving.used_markers(tmp_path) == 2
