"""The permission walk of common/useraccess.py: can another OS user reach, read or run a path."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.useraccess import (
    EXECUTE,
    READ,
    access_problem,
    permits,
)

NOBODY = 65534  # owns nothing here and is in none of its groups


def fake_stat(mode: int, uid: int = 1000, gid: int = 1000) -> os.stat_result:
    return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize("uid, gids, mode, want, expected", [
    (1000, [], 0o700, READ | EXECUTE, True),      # owner bits
    (1000, [], 0o077, READ, False),               # the owner's bits count, not the group's or others'
    (2000, [1000], 0o040, READ, True),            # group bits
    (2000, [1000], 0o010, READ, False),
    (2000, [], 0o005, READ | EXECUTE, True),      # others' bits
    (2000, [], 0o004, EXECUTE, False),
    (0, [], 0o000, READ | EXECUTE, True),         # root passes mode bits
])
def test_permits_reads_the_bits_of_owner_group_or_others(uid, gids, mode, want, expected):
    assert permits(fake_stat(mode), uid, gids, want) is expected


@pytest.fixture
def open_dir():
    """A directory everyone can traverse, under /tmp (pytest's tmp_path sits below a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="useraccess-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_an_untraversable_parent_is_named(open_dir):
    locked = open_dir / "locked"
    locked.mkdir(mode=0o700)
    locked.chmod(0o700)
    tool = locked / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert access_problem(str(tool), NOBODY, EXECUTE) == "directory %s is not searchable by uid %d" % (locked, NOBODY)
    locked.chmod(0o755)
    assert access_problem(str(tool), NOBODY, EXECUTE) is None


def test_an_unreadable_or_unexecutable_file_is_named(open_dir):
    conf = open_dir / "conf"
    conf.write_text("x")
    conf.chmod(0o600)
    assert access_problem(str(conf), NOBODY, READ) == "%s is not readable by uid %d" % (conf, NOBODY)
    assert access_problem(str(conf), NOBODY, EXECUTE) == "%s is not executable by uid %d" % (conf, NOBODY)
    conf.chmod(0o644)
    assert access_problem(str(conf), NOBODY, READ) is None


def test_a_symbolic_link_is_judged_by_its_target(open_dir):
    hidden = open_dir / "hidden"
    hidden.mkdir(mode=0o700)
    hidden.chmod(0o700)
    (hidden / "conf").write_text("x")
    (hidden / "conf").chmod(0o644)
    link = open_dir / "link"
    link.symlink_to(hidden / "conf")
    assert "directory %s is not searchable" % hidden in access_problem(str(link), NOBODY, READ)
    assert access_problem("/", 0, READ) is None
