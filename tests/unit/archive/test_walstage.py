"""Staged WAL (walstage.py): the restore_command it renders, run by a real
/bin/sh the way PostgreSQL runs it, and the stager on a real posix repository."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import ConfigError, parse_size
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walstage import (
    WalStager,
    stage_directory,
    staged_restore_command,
    wal_to_stage,
)

from walfiles import SEGMENT_SIZE, segment_name, write_segment


def expand(command: str, name: str, path: str) -> str:
    """PostgreSQL's substitution of %f, %p and %% in restore_command."""
    out, index = [], 0
    while index < len(command):
        if command[index] == "%" and index + 1 < len(command):
            out.append({"f": name, "p": path, "%": "%"}.get(command[index + 1], command[index:index + 2]))
            index += 2
        else:
            out.append(command[index])
            index += 1
    return "".join(out)


@pytest.fixture
def fake_tool(tmp_path):
    """A stand-in for the restorekeeper command: records its arguments, exits 1 (not found)."""
    directory = tmp_path / "bin dir's 100%"
    directory.mkdir()
    tool = directory / "restorekeeper"
    tool.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/called\"\nexit 1\n")
    tool.chmod(0o755)
    return tool


def run_restore_command(command: str, name: str, cwd) -> int:
    return subprocess.run(["/bin/sh", "-c", expand(command, name, "pg_wal/RECOVERYXLOG")], cwd=cwd,
                          check=False).returncode


def test_staged_file_is_moved_into_place_and_consumed(tmp_path, fake_tool):
    pgdata = tmp_path / "data 'x' 50%"
    (pgdata / "pg_wal").mkdir(parents=True)
    stage = stage_directory(str(pgdata))
    os.makedirs(stage)
    name = segment_name(1, 3)
    with open(os.path.join(stage, name), "wb") as handle:
        handle.write(b"staged")
    command = staged_restore_command(stage, str(fake_tool), "/etc/rk conf's.conf", source="offsite 1")
    assert run_restore_command(command, name, pgdata) == 0
    assert (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == b"staged"
    assert not os.path.exists(os.path.join(stage, name))
    assert not (fake_tool.parent / "called").exists()
    # Asked again (a re-read): the file is consumed, so the tool answers, with every argument intact.
    assert run_restore_command(command, name, pgdata) == 1
    assert (fake_tool.parent / "called").read_text().splitlines() == [
        "wal-fetch", "--config", "/etc/rk conf's.conf", "--source", "offsite 1", name, "pg_wal/RECOVERYXLOG"]


def test_unstaged_names_and_a_missing_directory_go_to_the_tool(tmp_path, fake_tool):
    pgdata = tmp_path / "data"
    (pgdata / "pg_wal").mkdir(parents=True)
    command = staged_restore_command(stage_directory(str(pgdata)), str(fake_tool), "/etc/rk.conf")
    assert run_restore_command(command, "00000002.history", pgdata) == 1
    assert (fake_tool.parent / "called").read_text().splitlines()[-2:] == ["00000002.history", "pg_wal/RECOVERYXLOG"]
    assert "--source" not in (fake_tool.parent / "called").read_text()


def test_history_files_come_first():
    segments = [segment_name(2, n) for n in (4, 5)]
    assert wal_to_stage(segments, ["00000003.history", "00000002.history"]) == [
        "00000002.history", "00000003.history"] + segments


def test_sizes_parse_in_powers_of_1024():
    assert parse_size("4GiB") == 4 << 30
    assert parse_size("512 MiB") == 512 << 20
    assert parse_size("1048576") == 1048576
    assert parse_size("2g") == 2 << 30
    with pytest.raises(ValueError):
        parse_size("lots")


def test_bad_stage_max_bytes_is_a_config_error(tmp_path, make_config):
    config = make_config()
    text = open(config.path, encoding="utf-8").read() + "\n[restore]\nstage_max_bytes = plenty\n"
    with open(config.path, "w", encoding="utf-8") as handle:
        handle.write(text)
    with pytest.raises(ConfigError, match="stage_max_bytes"):
        type(config).load(config.path)


def pushed(tmp_path, archive, count: int):
    names = [segment_name(1, n) for n in range(1, count + 1)]
    for name in names:
        archive.push(write_segment(tmp_path, name), name)
    return names


def wait_for(predicate, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_stager_stages_verified_files_within_its_bound_and_removes_the_directory(tmp_path, archive):
    names = pushed(tmp_path, archive, 6)
    stage = str(tmp_path / "data") + ".restorekeeper-wal"
    stager = WalStager(archive, names, stage, limit=3 * SEGMENT_SIZE, workers=2, segment_size=SEGMENT_SIZE)
    stager.start()
    assert os.stat(stage).st_mode & 0o777 == 0o700
    wait_for(lambda: os.path.exists(os.path.join(stage, names[0])))
    time.sleep(0.3)
    assert stager.staged_segments <= 3  # nothing consumed yet: the bound holds
    for name in names:  # play PostgreSQL: consume in order
        wait_for(lambda name=name: os.path.exists(os.path.join(stage, name)))
        with open(os.path.join(stage, name), "rb") as handle:
            assert handle.read() == (tmp_path / name).read_bytes()  # what was pushed
        os.rename(os.path.join(stage, name), str(tmp_path / "RECOVERYXLOG"))
    stager.stop()
    assert not os.path.exists(stage)
    summary = stager.summary()
    assert (summary["segments"], summary["bytes"], summary["error"]) == (6, 6 * SEGMENT_SIZE, None)
    assert summary["consumed"] == 6


def test_corrupt_segment_is_never_staged_and_staging_stops_there(tmp_path, archive):
    names = pushed(tmp_path, archive, 4)
    path = archive.storage.path_of(archive.key_for(names[1]))
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(bytes(blob))
    stage = str(tmp_path / "data.restorekeeper-wal")
    stager = WalStager(archive, names, stage, limit=64 * SEGMENT_SIZE, workers=1, segment_size=SEGMENT_SIZE)
    stager.start()
    wait_for(lambda: stager.error is not None)
    assert not os.path.exists(os.path.join(stage, names[1]))
    assert names[1] in stager.error and "is corrupt" in stager.error
    assert os.path.exists(os.path.join(stage, names[0]))
    stager.stop()
    assert not os.path.exists(stage)


def test_files_recovery_fetched_before_they_were_staged_do_not_hold_the_room(tmp_path, archive):
    names = pushed(tmp_path, archive, 5)
    stage = str(tmp_path / "data.restorekeeper-wal")
    stager = WalStager(archive, names, stage, limit=2 * SEGMENT_SIZE, workers=1, segment_size=SEGMENT_SIZE)
    stager.start()
    wait_for(lambda: os.path.exists(os.path.join(stage, names[1])))
    # Recovery fetched names[0] through wal-fetch and now consumes names[1]: names[0] is stale.
    os.rename(os.path.join(stage, names[1]), str(tmp_path / "RECOVERYXLOG"))
    for name in names[2:]:
        wait_for(lambda name=name: os.path.exists(os.path.join(stage, name)))
        os.rename(os.path.join(stage, name), str(tmp_path / "RECOVERYXLOG"))
    assert not os.path.exists(os.path.join(stage, names[0]))
    stager.stop()
    assert stager.summary()["segments"] == 5


def test_the_plan_stages_the_timeline_path_to_the_target_or_to_its_end():
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.restore import _wal_needed

    size = 16 << 20
    # The planner's path from the backup (timelines.reach): timeline 1 up to
    # the switch, then timeline 2 from the switch segment on.
    path = [segment_name(1, n, size) for n in range(3, 9)] + [segment_name(2, n, size) for n in range(9, 13)]
    assert _wal_needed(path, None, size) == path          # time or latest: to the end of the path
    # An LSN, name or xid target: its segment and the next (its record may end there).
    assert _wal_needed(path, 0x5000010, size) == [segment_name(1, n, size) for n in range(3, 7)]
    assert _wal_needed(path, 0x9000010, size) == path[:6] + [segment_name(2, 9, size), segment_name(2, 10, size)]
