"""WAL archiving against real PostgreSQL servers: nothing lost, nothing torn, nothing overwritten.

Each test builds its own throwaway cluster and repository. The archive command
is the installed on-host `restorekeeper` launcher, run by the server (or by the
test) as the cluster's OS user, exactly as in production.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.fsutil import is_temp_name
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import WalArchive, archive_command
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import WalNotFound
from harness import InstalledTool, PgCluster, RepoSetup, make_user_dir, render_test_config, wait_until

pytestmark = pytest.mark.slow

SEGMENT_NAME_LENGTH = 24
ARCHIVING_CONF = {
    "wal_level": "replica",
    "archive_mode": "on",
    # Keep every segment in pg_wal so archived copies can be compared with the originals.
    "wal_keep_size": "4GB",
    "max_wal_size": "4GB",
}


# ------------------------------------------------------------------- helpers
def next_segment(name: str, segment_size: int) -> str:
    """The segment after `name` on the same timeline (log/segment wrap-around included)."""
    segments_per_log = 0x100000000 // segment_size
    timeline, log, seg = name[:8], int(name[8:16], 16), int(name[16:24], 16)
    seg += 1
    if seg == segments_per_log:
        log, seg = log + 1, 0
    return "%s%08X%08X" % (timeline, log, seg)


def segment_range(first: str, last: str, segment_size: int) -> list[str]:
    names = [first]
    while names[-1] < last:
        names.append(next_segment(names[-1], segment_size))
    return names


def segment_size_of(cluster: PgCluster) -> int:
    return int(cluster.scalar("select setting from pg_settings where name = 'wal_segment_size'"))


def object_path(setup: RepoSetup, name: str) -> Path:
    """Where the repository layout of notes/COMMON.md stores a segment."""
    return setup.repo_path / setup.cluster_name / "wal" / name[:16] / name


def repo_files(root: Path) -> set[Path]:
    return {Path(dirpath) / f for dirpath, _dirs, files in os.walk(root) for f in files}


def archive_of(setup: RepoSetup) -> WalArchive:
    return WalArchive(Config.load(str(setup.config_path)))


def wal_push(cluster: PgCluster, tool: InstalledTool, setup: RepoSetup, path: Path, name: str) -> subprocess.CompletedProcess:
    return cluster.run_as_owner([tool.bin, "wal-push", "--config", setup.config_path, path, name])


def wal_fetch(cluster: PgCluster, tool: InstalledTool, setup: RepoSetup, name: str, dest: Path) -> subprocess.CompletedProcess:
    return cluster.run_as_owner([tool.bin, "wal-fetch", "--config", setup.config_path, name, dest])


def archiving_cluster(
    cluster_factory: Callable[..., PgCluster],
    repo_config: Callable[..., RepoSetup],
    tool: InstalledTool,
    version: int,
    compression: str = "zstd",
) -> tuple[PgCluster, RepoSetup]:
    """A started cluster whose archive_command pushes to a fresh repository."""
    cluster = cluster_factory(version=version, start=False, conf=ARCHIVING_CONF)
    setup = repo_config(cluster, compression=compression)
    cluster.append_conf({"archive_command": archive_command(str(tool.bin), str(setup.config_path))})
    cluster.start()
    return cluster, setup


def stage_segments(cluster: PgCluster, count: int) -> list[tuple[str, Path]]:
    """Close `count` real segments and copy them (server-user owned) out of pg_wal."""
    staging = make_user_dir(cluster.base_dir / "staging", cluster.os_user, 0o700)
    staged = []
    for _index in range(count):
        cluster.execute("insert into filler select g, repeat(md5(g::text), 20) from generate_series(1, 2000) g")
        name = cluster.switch_wal()
        copy = staging / name
        shutil.copyfile(cluster.pg_wal_dir / name, copy)
        shutil.chown(copy, cluster.os_user)
        staged.append((name, copy))
    return staged


def assert_fetches_identical(
    cluster: PgCluster, tool: InstalledTool, setup: RepoSetup, name: str, original: Path
) -> None:
    dest_dir = make_user_dir(cluster.base_dir / "fetched", cluster.os_user, 0o700)
    dest = dest_dir / "RECOVERYXLOG"
    result = wal_fetch(cluster, tool, setup, name, dest)
    assert result.returncode == 0, "wal-fetch %s exited %d: %s" % (name, result.returncode, result.stderr)
    assert dest.read_bytes() == original.read_bytes(), "%s differs after a round trip" % name
    dest.unlink()


def assert_complete(archive: WalArchive, name: str, original: Path, scratch: Path, context: str = "") -> None:
    """A visible object must decode (in-process, no tool start-up) to exactly the original."""
    dest = scratch / ("check-" + name)
    try:
        archive.fetch(name, str(dest))
    except Exception as exc:  # noqa: BLE001 - any failure here means a torn object was published
        raise AssertionError("%s%s is visible but not complete: %s" % (context, name, exc)) from None
    try:
        assert dest.read_bytes() == original.read_bytes(), "%s%s visible with wrong content" % (context, name)
    finally:
        dest.unlink()


# ------------------------------------------------------------- a. under load
def test_archiving_under_pgbench_load_loses_nothing(
    pg_version: int, cluster_factory, repo_config, tool: InstalledTool
) -> None:
    cluster, setup = archiving_cluster(cluster_factory, repo_config, tool, pg_version)
    pgbench = cluster.bin("pgbench")
    init = cluster.run_as_owner([pgbench, "-i", "-s", "10", "-q"])
    assert init.returncode == 0, init.stderr
    load = cluster.run_as_owner([pgbench, "-n", "-T", "10", "-c", "4", "-j", "2"])
    assert load.returncode == 0, load.stderr
    switched = cluster.switch_wal()
    cluster.wait_archived(switched, timeout=120)

    failed_count, last_archived = cluster.query("select failed_count, last_archived_wal from pg_stat_archiver")[0]
    assert failed_count == 0, cluster.log_text()[-3000:]
    names = archive_of(setup).names()
    # Timeline 1, nothing promoted: only segments, no .history/.partial/.backup files.
    assert all(len(n) == SEGMENT_NAME_LENGTH for n in names), names
    assert not (setup.repo_path / setup.cluster_name / "wal" / "history").exists()
    size = segment_size_of(cluster)
    assert names[0] == "000000010000000000000001", "first segment missing: %s" % names[:3]
    assert names == segment_range(names[0], names[-1], size), "gap in archived segments"
    assert names[-1] >= switched and names[-1] >= last_archived
    assert len(names) >= 5, "pgbench produced suspiciously little WAL: %s" % names

    listed = cluster.run_as_owner([tool.bin, "wal-list", "--config", setup.config_path])
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == names

    for name in names:
        original = cluster.pg_wal_dir / name
        assert original.exists(), "%s was archived but is no longer in pg_wal (wal_keep_size)" % name
        assert_fetches_identical(cluster, tool, setup, name, original)


# ------------------------------------------------------------- b. crash safety
def _start_push(cluster: PgCluster, tool: InstalledTool, setup: RepoSetup, path: Path, name: str) -> subprocess.Popen:
    return cluster.popen_as_owner(
        [tool.bin, "wal-push", "--config", setup.config_path, path, name],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _stop_when_file_appears(proc: subprocess.Popen, root: Path, before: set[Path], timeout: float = 60.0) -> Optional[set[Path]]:
    """SIGSTOP `proc` the moment a new file shows up under `root`; None if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = repo_files(root) - before
        if new:
            proc.send_signal(signal.SIGSTOP)
            return new
        if proc.poll() is not None:
            return None
    proc.kill()
    raise AssertionError("wal-push created no file within %.0fs" % timeout)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stderr:
        proc.stderr.close()


def test_killed_push_never_publishes_a_partial_object(
    pg_version: int, cluster_factory, repo_config, tool: InstalledTool
) -> None:
    cluster = cluster_factory(version=pg_version, conf={"wal_keep_size": "1GB"})
    cluster.execute("create table filler (i int, t text)")
    # Uncompressed objects: writing and fsyncing 16 MiB keeps the temp file
    # around long enough for the watcher to catch it every time.
    setup = repo_config(cluster, compression="none")
    archive = archive_of(setup)
    segments = stage_segments(cluster, 4)
    # The first push also records the cluster identity; do it before watching files.
    prime = wal_push(cluster, tool, setup, segments[0][1], segments[0][0])
    assert prime.returncode == 0, prime.stderr

    caught = None
    fetch_dir = make_user_dir(cluster.base_dir / "fetched", cluster.os_user, 0o700)
    for name, path in segments[1:]:
        before = repo_files(setup.repo_path)
        proc = _start_push(cluster, tool, setup, path, name)
        new_files = _stop_when_file_appears(proc, setup.repo_path, before)
        if new_files is None or not all(is_temp_name(f.name) for f in new_files):
            # Published before the watcher looked: legal only if already complete.
            try:
                if archive.exists(name):
                    assert_complete(archive, name, path, fetch_dir)
            finally:
                proc.send_signal(signal.SIGCONT)
                returncode = proc.wait(timeout=60)
                proc.stderr.close()
            assert returncode == 0
            continue
        try:
            # Frozen mid-write: the final name must not exist yet.
            assert not archive.exists(name), "%s visible before its write finished" % name
            stopped_fetch = wal_fetch(cluster, tool, setup, name, fetch_dir / "RECOVERYXLOG")
            assert stopped_fetch.returncode == 1, stopped_fetch.stderr
            assert list(fetch_dir.iterdir()) == []
        finally:
            _kill(proc)
        caught = (name, path)
        leftovers = repo_files(setup.repo_path) - before
        assert len(leftovers) == 1 and is_temp_name(leftovers.pop().name), leftovers
        assert not archive.exists(name) and name not in archive.names()
        break
    assert caught is not None, "no push was caught mid-write (all finished before the watcher saw a file)"

    name, path = caught
    retry = wal_push(cluster, tool, setup, path, name)
    assert retry.returncode == 0, retry.stderr
    assert_fetches_identical(cluster, tool, setup, name, path)


def test_random_kills_leave_object_absent_or_complete(
    pg_version: int, cluster_factory, repo_config, tool: InstalledTool
) -> None:
    cluster = cluster_factory(version=pg_version, conf={"wal_keep_size": "1GB"})
    cluster.execute("create table filler (i int, t text)")
    setup = repo_config(cluster, compression="zstd")
    archive = archive_of(setup)
    segments = stage_segments(cluster, 11)
    started = time.monotonic()
    prime = wal_push(cluster, tool, setup, segments[0][1], segments[0][0])
    assert prime.returncode == 0, prime.stderr
    full_push = time.monotonic() - started

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    outcomes = []
    fetch_dir = Path(make_user_dir(cluster.base_dir / "fetched", cluster.os_user, 0o700))
    for name, path in segments[1:]:
        proc = _start_push(cluster, tool, setup, path, name)
        time.sleep(rng.uniform(0, full_push * 1.3))
        _kill(proc)
        # The invariant after any crash: absent, or present and complete.
        if archive.exists(name):
            assert_complete(archive, name, path, fetch_dir, "seed %d: " % seed)
            outcomes.append("present")
        else:
            with pytest.raises(WalNotFound):
                archive.fetch(name, str(fetch_dir / name))
            assert not (fetch_dir / name).exists()
            outcomes.append("absent")
    # Whatever the crashes left behind, archiving resumes: every retry succeeds.
    for name, path in segments[1:]:
        retry = wal_push(cluster, tool, setup, path, name)
        assert retry.returncode == 0, "seed %d, %s: %s" % (seed, name, retry.stderr)
    assert archive.names() == sorted(name for name, _path in segments)
    for name, path in segments[1:3]:
        assert_fetches_identical(cluster, tool, setup, name, path)
    print("seed %d, outcomes %s" % (seed, outcomes))


# ------------------------------------------------------ c. duplicate rules
def test_duplicate_push_rules_through_server_archive(
    pg_version: int, cluster_factory, repo_config, tool: InstalledTool
) -> None:
    cluster, setup = archiving_cluster(cluster_factory, repo_config, tool, pg_version)
    cluster.execute("create table filler (i int, t text)")
    cluster.execute("insert into filler select g, md5(g::text) from generate_series(1, 5000) g")
    name = cluster.switch_wal()
    cluster.wait_archived(name)
    stored = object_path(setup, name)
    stored_bytes = stored.read_bytes()

    staging = make_user_dir(cluster.base_dir / "staging", cluster.os_user, 0o700)
    same = staging / name
    shutil.copyfile(cluster.pg_wal_dir / name, same)
    for attempt in (1, 2):
        again = wal_push(cluster, tool, setup, same, name)
        assert again.returncode == 0, "identical re-push #%d: %s" % (attempt, again.stderr)

    # Same name, valid header, one byte different further in: a different segment.
    altered = staging / ("altered-" + name)
    data = bytearray(same.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered.write_bytes(bytes(data))
    conflict = wal_push(cluster, tool, setup, altered, name)
    assert conflict.returncode == 1, conflict.stderr
    assert conflict.stderr.startswith("restorekeeper wal-push: ERROR: "), conflict.stderr
    assert name in conflict.stderr and "different content" in conflict.stderr, conflict.stderr
    assert stored.read_bytes() == stored_bytes, "existing object was modified"
    assert_fetches_identical(cluster, tool, setup, name, same)
    assert cluster.scalar("select failed_count from pg_stat_archiver") == 0


# -------------------------------------------------- d. wal-fetch exit codes
def test_wal_fetch_exit_codes_and_no_partial_destination(
    pg_version: int, cluster_factory, repo_config, tool: InstalledTool
) -> None:
    cluster, setup = archiving_cluster(cluster_factory, repo_config, tool, pg_version)
    cluster.execute("create table filler (i int, t text)")
    cluster.execute("insert into filler select g, md5(g::text) from generate_series(1, 5000) g")
    name = cluster.switch_wal()
    cluster.wait_archived(name)
    dest_dir = make_user_dir(cluster.base_dir / "restore", cluster.os_user, 0o700)
    dest = dest_dir / "RECOVERYXLOG"

    missing = next_segment(next_segment(name, segment_size_of(cluster)), segment_size_of(cluster))
    result = wal_fetch(cluster, tool, setup, missing, dest)
    assert result.returncode == 1, result.stderr
    assert list(dest_dir.iterdir()) == []

    stored = object_path(setup, name)
    pristine = stored.read_bytes()
    corruptions: dict[str, Callable[[bytes], bytes]] = {
        "payload byte flipped": lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0x01]) + b[len(b) // 2 + 1:],
        "last byte flipped": lambda b: b[:-1] + bytes([b[-1] ^ 0x80]),
        "truncated": lambda b: b[: len(b) // 3],
        "magic damaged": lambda b: b"X" + b[1:],
    }
    for label, corrupt in corruptions.items():
        stored.write_bytes(corrupt(pristine))
        result = wal_fetch(cluster, tool, setup, name, dest)
        assert result.returncode == 255, "%s: exit %d %s" % (label, result.returncode, result.stderr)
        assert result.stderr.startswith("restorekeeper wal-fetch: ERROR: "), "%s: %s" % (label, result.stderr)
        assert name in result.stderr, "%s: %s" % (label, result.stderr)
        assert list(dest_dir.iterdir()) == [], "%s left %s" % (label, list(dest_dir.iterdir()))

    stored.write_bytes(pristine)
    assert_fetches_identical(cluster, tool, setup, name, cluster.pg_wal_dir / name)


# ------------------------------------- e. failures surface in the server
def test_archive_failure_surfaces_in_server(
    pg_version: int, cluster_factory, rk_session_dir: Path, tool: InstalledTool
) -> None:
    cluster = cluster_factory(version=pg_version, start=False, conf=ARCHIVING_CONF)
    # A root-owned, read-only parent: the server user can create nothing in it.
    forbidden = cluster.base_dir / "forbidden"
    forbidden.mkdir(mode=0o555)
    os.chmod(forbidden, 0o555)
    config_dir = make_user_dir(cluster.base_dir / "conf", cluster.os_user, 0o700)
    config_path = config_dir / "restorekeeper.conf"
    config_path.write_text(render_test_config("main", forbidden / "repository"), encoding="utf-8")
    os.chmod(config_path, 0o600)
    shutil.chown(config_path, cluster.os_user)
    cluster.append_conf({"archive_command": archive_command(str(tool.bin), str(config_path))})
    cluster.start()

    name = cluster.switch_wal()
    wait_until(
        lambda: (cluster.scalar("select failed_count from pg_stat_archiver") or 0) >= 1,
        timeout=120, message="a failed archive attempt",
        describe=lambda: repr(cluster.query("select * from pg_stat_archiver")),
    )
    row: Any = cluster.query("select archived_count, last_failed_wal from pg_stat_archiver")[0]
    assert row == (0, name)
    wait_until(lambda: "restorekeeper wal-push: ERROR:" in cluster.log_text(), timeout=30, message="our ERROR in the log")
    log = cluster.log_text()
    assert str(forbidden / "repository") in log, log[-2000:]
    assert list(forbidden.iterdir()) == []
    # The server keeps the segment for a later retry.
    assert (cluster.pg_wal_dir / "archive_status" / (name + ".ready")).exists()
    assert (cluster.pg_wal_dir / name).exists()


# ------------------------------------------------------------- f. asynchronous push
def test_async_archiving_under_pgbench_load_loses_nothing(
    pg_version: int, cluster_factory, repo_config, tool: InstalledTool
) -> None:
    """[archive] async: one call pushes the ready backlog in parallel; the later
    calls only prove their marker. The server sees no failure and the archive
    holds every segment, each identical to pg_wal's."""
    cluster = cluster_factory(version=pg_version, start=False, conf=ARCHIVING_CONF)
    setup = repo_config(cluster)
    spool = make_user_dir(cluster.base_dir / "spool", cluster.os_user, 0o700)
    text = setup.config_path.read_text()
    setup.config_path.write_text(text.replace(
        "[archive]\n", "[archive]\nasync = true\nspool_path = %s\nprocess_max = 2\nbatch_max = 8\n" % spool))
    cluster.append_conf({"archive_command": archive_command(str(tool.bin), str(setup.config_path))})
    cluster.start()
    pgbench = cluster.bin("pgbench")
    init = cluster.run_as_owner([pgbench, "-i", "-s", "10", "-q"])
    assert init.returncode == 0, init.stderr
    load = cluster.run_as_owner([pgbench, "-n", "-T", "8", "-c", "4", "-j", "2"])
    assert load.returncode == 0, load.stderr
    switched = cluster.switch_wal()
    cluster.wait_archived(switched, timeout=120)

    failed_count = cluster.query("select failed_count from pg_stat_archiver")[0][0]
    assert failed_count == 0, cluster.log_text()[-3000:]
    names = archive_of(setup).names()
    assert names == segment_range(names[0], names[-1], segment_size_of(cluster)), "gap in archived segments"
    assert names[-1] >= switched and len(names) >= 5
    for name in names:
        assert_fetches_identical(cluster, tool, setup, name, cluster.pg_wal_dir / name)
    assert (spool / setup.cluster_name / "push" / "push.lock").exists(), "the asynchronous path never ran"
    # Every marker left is for a segment still waiting for its own call, and proven by it.
    leftover = [n[:-3] for n in os.listdir(spool / setup.cluster_name / "push") if n.endswith(".ok")]
    assert all((cluster.pg_wal_dir / "archive_status" / (n + ".ready")).exists() for n in leftover), leftover
