"""The resident WAL pusher against a real PostgreSQL server, to a posix and an S3 repository.

The server marks segments ready (archive_mode on, no archive_command yet, so
PostgreSQL keeps them); `wal-pusher --once` pushes them; `wal-push`, as
archive_command runs it, then succeeds for one of them with the repository
made unreachable: only the marker can have proven it.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import InstalledTool, PgCluster, make_user_dir, wait_until
from harness.ansible import host_python
from harness.s3 import CuttableProxy, point_repository_at_s3
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import archive_command

pytestmark = pytest.mark.slow

HOLDING_CONF = {"wal_level": "replica", "archive_mode": "on", "archive_command": "", "wal_keep_size": "1GB"}


def enable_async(cluster: PgCluster, config_path: Path, **extra: str) -> Path:
    spool = make_user_dir(cluster.base_dir / "spool", cluster.os_user, 0o700)
    settings = dict({"async": "true", "spool_path": str(spool), "process_max": "2"}, **extra)
    lines = "".join("%s = %s\n" % item for item in settings.items())
    text = config_path.read_text()
    text = text.replace("[archive]\n", "[archive]\n" + lines)
    config_path.write_text(text + "\n[postgres]\npgdata = %s\n" % cluster.datadir if "[postgres]" not in text
                           else text.replace("[postgres]\n", "[postgres]\npgdata = %s\n" % cluster.datadir))
    return spool


def ready_segments(cluster: PgCluster, count: int) -> list:
    names = [cluster.switch_wal() for _segment in range(count)]
    wait_until(lambda: all((cluster.pg_wal_dir / "archive_status" / (n + ".ready")).exists() for n in names),
               timeout=30, message="segments marked ready")
    return names


def run(cluster: PgCluster, tool: InstalledTool, *argv):
    return cluster.run_as_owner([tool.bin] + [str(arg) for arg in argv])


def holding_cluster(repository: str, cluster_factory, repo_config, tool: InstalledTool, request):
    """A PostgreSQL 18 cluster that keeps its .ready segments, archiving asynchronously into a posix
    repository or an S3 one reached through a CuttableProxy: (cluster, setup, spool, proxy or None)."""
    cluster = cluster_factory(version=18, conf=HOLDING_CONF)
    setup = repo_config(cluster, initialise=repository == "posix")
    proxy = None
    if repository == "s3":
        s3_endpoint = request.getfixturevalue("s3_endpoint")
        proxy = CuttableProxy(int(s3_endpoint.url.rsplit(":", 1)[1]))
        request.addfinalizer(proxy.close)
        point_repository_at_s3(setup.config_path, s3_endpoint, proxy.url)
    spool = enable_async(cluster, setup.config_path)
    if repository == "s3":
        created = run(cluster, tool, "repo-create", "--config", setup.config_path)
        assert created.returncode == 0, created.stderr
    return cluster, setup, spool, proxy


@pytest.mark.parametrize("repository", ["posix", "s3"])
def test_pusher_pushes_ahead_and_wal_push_needs_only_the_marker(repository, cluster_factory, repo_config,
                                                                tool: InstalledTool, request) -> None:
    cluster, setup, spool, proxy = holding_cluster(repository, cluster_factory, repo_config, tool, request)
    names = ready_segments(cluster, 3)

    pushed = run(cluster, tool, "wal-pusher", "--config", setup.config_path, "--cluster", setup.cluster_name, "--once")
    assert pushed.returncode == 0, pushed.stderr
    assert "3 WAL files pushed" in pushed.stderr
    listed = run(cluster, tool, "wal-list", "--config", setup.config_path)
    assert listed.stdout.split() == names
    markers = spool / setup.cluster_name / "push"
    marker_text = (markers / (names[0] + ".ok")).read_text()
    assert ("confirmed stored" in marker_text) == (repository == "s3")

    # The repository becomes unreachable (S3) or read-only (posix: the quick
    # path still stats the object; a push refuses a repository it cannot
    # write): wal-push can succeed only through the marker.
    stored = setup.repo_path / "wal" / setup.cluster_name
    before = {p.name: p.stat().st_mtime_ns for p in stored.rglob("*") if p.is_file()} if repository == "posix" else {}
    if proxy is not None:
        proxy.cut()
    else:
        os.chmod(setup.repo_path, 0o500)
    try:
        segment = cluster.pg_wal_dir / names[1]
        quick = run(cluster, tool, "wal-push", "--config", setup.config_path, segment, names[1])
        assert quick.returncode == 0, quick.stderr
        assert not (markers / (names[1] + ".ok")).exists()  # used once
        again = run(cluster, tool, "wal-push", "--config", setup.config_path, segment, names[1])
        assert again.returncode != 0  # no marker left, no repository: never a false success
    finally:
        if proxy is not None:
            proxy.restore()
        else:
            os.chmod(setup.repo_path, 0o700)
    if before:
        assert {p.name: p.stat().st_mtime_ns for p in stored.rglob("*") if p.is_file()} == before

    # No pusher pass for a newer segment: wal-push pushes it itself (the fallback).
    newer = ready_segments(cluster, 1)[0]
    fallback = run(cluster, tool, "wal-push", "--config", setup.config_path, cluster.pg_wal_dir / newer, newer)
    assert fallback.returncode == 0, fallback.stderr
    assert newer in run(cluster, tool, "wal-list", "--config", setup.config_path).stdout.split()


@pytest.mark.parametrize("repository", ["posix", "s3"])
def test_postgresql_archives_through_restorekeeper_archive(repository, cluster_factory, repo_config,
                                                           tool: InstalledTool, request) -> None:
    """archive_command = restorekeeper-archive (the role's with archiving_pusher): with the repository
    unreachable (S3) or read-only (posix), PostgreSQL archives the segments the pusher pushed ahead,
    so only the markers, proven by the script's one stat, can have answered; a later segment without
    a marker goes through the script's fallback, wal-push."""
    cluster, setup, spool, proxy = holding_cluster(repository, cluster_factory, repo_config, tool, request)
    names = ready_segments(cluster, 3)
    pushed = run(cluster, tool, "wal-pusher", "--config", setup.config_path, "--cluster", setup.cluster_name, "--once")
    assert pushed.returncode == 0, pushed.stderr
    markers = spool / setup.cluster_name / "push"
    assert all("end stat\n" in (markers / (name + ".ok")).read_text() for name in names)

    if proxy is not None:
        proxy.cut()
    else:
        os.chmod(setup.repo_path, 0o500)
    try:
        command = archive_command(str(tool.bin), str(setup.config_path), str(markers))
        assert "restorekeeper-archive" in command
        cluster.execute("ALTER SYSTEM SET archive_command = %s", [command])
        cluster.reload()
        wait_until(lambda: cluster.scalar("SELECT last_archived_wal FROM pg_stat_archiver") == names[-1], timeout=60,
                   message="PostgreSQL archived the pushed-ahead segments through the script")
        assert cluster.scalar("SELECT failed_count FROM pg_stat_archiver") == 0
        assert all((markers / (name + ".ok")).stat().st_size == 0 for name in names)  # used up by the script
    finally:
        if proxy is not None:
            proxy.restore()
        else:
            os.chmod(setup.repo_path, 0o700)

    newer = cluster.switch_wal()  # no pusher pass: the script hands it to wal-push
    wait_until(lambda: cluster.scalar("SELECT last_archived_wal FROM pg_stat_archiver") == newer, timeout=90,
               message="PostgreSQL archived a segment without a marker through wal-push")
    assert not (markers / (newer + ".ok")).exists()
    listed = run(cluster, tool, "wal-list", "--config", setup.config_path).stdout.split()
    assert set(names + [newer]) <= set(listed)


def test_queue_full_drop_journals_the_gap_and_check_reports_it(cluster_factory, repo_config, tool: InstalledTool) -> None:
    cluster = cluster_factory(version=18, conf=HOLDING_CONF)
    setup = repo_config(cluster)
    spool = enable_async(cluster, setup.config_path, queue_max="40MiB", queue_full="drop")
    names = ready_segments(cluster, 3)  # 48 MiB of 16 MiB segments
    dropped = run(cluster, tool, "wal-push", "--config", setup.config_path, cluster.pg_wal_dir / names[0], names[0])
    assert dropped.returncode == 0, dropped.stderr
    assert "DROPPED WAL %s WITHOUT ARCHIVING IT" % names[0] in dropped.stderr
    assert run(cluster, tool, "wal-list", "--config", setup.config_path).stdout.split() == []
    assert names[0] in (spool / setup.cluster_name / "dropped.json").read_text()
    # Below the limit again (the oldest is gone from the queue once PostgreSQL marks it done): pushed as usual.
    os.rename(cluster.pg_wal_dir / "archive_status" / (names[0] + ".ready"),
              cluster.pg_wal_dir / "archive_status" / (names[0] + ".done"))
    kept = run(cluster, tool, "wal-push", "--config", setup.config_path, cluster.pg_wal_dir / names[1], names[1])
    assert kept.returncode == 0 and "DROPPED" not in kept.stderr, kept.stderr
    assert run(cluster, tool, "wal-list", "--config", setup.config_path).stdout.split()[0] == names[1]  # the gap stays

    check = run(cluster, tool, "check", "--config", setup.config_path)
    assert check.returncode == 2, check.stdout
    assert "1 WAL segments were dropped unarchived over queue_max, the last %s" % names[0] in check.stdout
    metrics = run(cluster, tool, "metrics", "--config", setup.config_path)
    assert 'restorekeeper_archive_dropped_segments{cluster="main"} 1' in metrics.stdout
    assert 'restorekeeper_archive_dropped_gap_open{cluster="main"} 1' in metrics.stdout
    waiting = [n for n in os.listdir(cluster.pg_wal_dir / "archive_status") if n.endswith(".ready")]
    assert 'restorekeeper_archive_queue_segments{cluster="main"} %d' % len(waiting) in metrics.stdout
    assert 'restorekeeper_archive_queue_bytes{cluster="main"} %d' % (len(waiting) << 24) in metrics.stdout


def test_a_second_pusher_is_refused_and_sigterm_stops_the_first(cluster_factory, repo_config, tool: InstalledTool) -> None:
    cluster = cluster_factory(version=18, conf=HOLDING_CONF)
    setup = repo_config(cluster)
    spool = enable_async(cluster, setup.config_path)
    names = ready_segments(cluster, 2)
    first = cluster.popen_as_owner([tool.bin, "wal-pusher", "--config", setup.config_path])
    try:
        wait_until((spool / setup.cluster_name / "push" / (names[-1] + ".ok")).exists, timeout=60,
                   message="the resident pusher's markers")
        second = run(cluster, tool, "wal-pusher", "--config", setup.config_path, "--once")
        assert second.returncode == 1
        assert "another wal-pusher runs for cluster main" in second.stderr
        newer = ready_segments(cluster, 1)[0]  # the resident one keeps watching
        wait_until((spool / setup.cluster_name / "push" / (newer + ".ok")).exists, timeout=30,
                   message="a marker for a segment made ready later")
    finally:
        first.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = first.wait(timeout=30)
    assert code == 0 and time.monotonic() - started < 10


# ------------------------------------------------------------------ the role
ARCHIVING_PLAYBOOK = [{"hosts": "localhost", "gather_facts": False,
                       "roles": [{"role": "restorekeeper.postgresql.archiving"}]}]


def test_role_writes_the_drop_in_and_unit_and_the_unit_command_pushes(cluster_factory, repo_config, tool: InstalledTool,
                                                                      ansible_env, tmp_path) -> None:
    """No systemd here (as in the test containers): the unit is written, not
    started; its ExecStart, run by hand with --once, is a working pusher."""
    cluster = cluster_factory(version=18, conf=HOLDING_CONF)
    setup = repo_config(cluster)
    user = cluster.os_user
    spool = make_user_dir(cluster.base_dir / "pusher-spool", user, 0o700)
    units = make_user_dir(cluster.base_dir / "units", "root", 0o755)
    variables = {
        "ansible_connection": "local", "ansible_python_interpreter": host_python(),
        "ansible_become_method": "ansible.builtin.su",
        "archiving_prefix": str(tool.prefix), "archiving_python": str(tool.python),
        "archiving_config_path": str(setup.config_path), "archiving_repository_path": str(setup.repo_path),
        "archiving_login_port": cluster.port, "archiving_login_unix_socket": str(cluster.socket_dir),
        "archiving_pg_bindir": str(cluster.bindir), "archiving_os_user": user,
        "archiving_os_group": grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name,
        "archiving_pusher": True, "archiving_pusher_spool_path": str(spool), "archiving_pusher_pgdata": str(cluster.datadir),
        "archiving_queue_max": "4GiB", "archiving_systemd_dir": str(units), "archiving_pusher_upload_max": 5,
    }
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(variables))
    playbook = tmp_path / "archiving.yml"
    playbook.write_text(json.dumps(ARCHIVING_PLAYBOOK))

    def converge() -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(playbook),
                               "-e", "@%s" % extra, "--tags", "archiving_config,archiving_pusher,archiving_prove"],
                              env=dict(ansible_env), capture_output=True, text=True, timeout=600, check=False)

    first = converge()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "systemd does not run this host" in first.stdout
    drop_in = Path(str(setup.config_path) + ".d") / "pusher.conf"
    text = drop_in.read_text()
    assert "async = true" in text and "spool_path = %s" % spool in text and "queue_max = 4GiB" in text
    assert "\nupload_max = 5\n" in text
    unit = (units / "restorekeeper-wal-pusher-main.service").read_text()
    assert "Restart=always" in unit and "User=%s" % user in unit
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.MULTILINE).group(1)
    assert "--pgdata %s" % cluster.datadir in exec_start
    # With the pusher, archive_command is the shell script (and the proof above archived through it).
    assert cluster.scalar("SHOW archive_command") == archive_command(str(tool.bin), str(setup.config_path),
                                                                     "%s/main/push" % spool)
    again = converge()
    assert again.returncode == 0 and re.search(r"changed=0\b", again.stdout), again.stdout[-3000:]

    # The server archives by itself now; hold its archiver so the unit's command has segments to push.
    cluster.execute("ALTER SYSTEM SET archive_command = ''")
    cluster.execute("SELECT pg_reload_conf()")
    time.sleep(1)
    names = ready_segments(cluster, 2)
    pushed = cluster.run_as_owner(shlex.split(exec_start) + ["--once"])
    assert pushed.returncode == 0, pushed.stderr
    assert all((spool / "main" / "push" / (name + ".ok")).exists() for name in names)


# ------------------------------------------- S3: the PUT's answer confirms


def _requests_for(log: str, bucket: str, name: str) -> list:
    """The methods moto_server logged for one WAL object of bucket, in order."""
    return re.findall(r'"(?:\x1b\[[0-9;]*m)?(GET|PUT|HEAD|POST) /%s/[^ ?"]*/%s[ ?]' % (re.escape(bucket), name), log)


def test_s3_markers_are_confirmed_by_the_put_answer_without_a_read_back(cluster_factory, repo_config,
                                                                        tool: InstalledTool, request,
                                                                        rk_session_dir: Path) -> None:
    """Over HTTP to moto: per segment one GET (nothing archived under its name yet) and one PUT whose answer
    carries back our SHA-256; no request after the PUT, and the marker is confirmed."""
    cluster, setup, spool, _proxy = holding_cluster("s3", cluster_factory, repo_config, tool, request)
    bucket = re.search(r"^bucket = (\S+)$", setup.config_path.read_text(), re.M).group(1)
    names = ready_segments(cluster, 3)
    pushed = run(cluster, tool, "wal-pusher", "--config", setup.config_path, "--cluster", setup.cluster_name, "--once")
    assert pushed.returncode == 0, pushed.stderr
    log = (rk_session_dir / "moto.log").read_text(errors="replace")
    for name in names:
        assert _requests_for(log, bucket, name) == ["GET", "PUT"], name
        assert "confirmed stored" in (spool / setup.cluster_name / "push" / (name + ".ok")).read_text()
    # The asynchronous batch (no pusher) confirms its markers the same way, so the quick path needs no engine.
    newer = ready_segments(cluster, 2)
    first = run(cluster, tool, "wal-push", "--config", setup.config_path, cluster.pg_wal_dir / newer[0], newer[0])
    assert first.returncode == 0, first.stderr
    marker = spool / setup.cluster_name / "push" / (newer[1] + ".ok")
    wait_until(marker.exists, timeout=30, message="the batch's marker of %s" % newer[1])
    assert "confirmed stored" in marker.read_text()


def _s3_archive(s3_endpoint, tmp_path: Path):
    """A WalArchive in process on a new bucket of moto (plain HTTP), and its S3Storage."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import WalArchive
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config, render_config
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository

    config_path = tmp_path / "s3.conf"
    config_path.write_text(render_config("main", str(tmp_path / "unused")))
    config_path.chmod(0o600)
    point_repository_at_s3(config_path, s3_endpoint)
    config = Config.load(str(config_path))
    Repository.from_config(config).create()
    archive = WalArchive(config)
    return archive, archive.storage


def _synthetic_segment(tmp_path: Path, number: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from walfiles import segment_name, write_segment

    directory = tmp_path / "pg_wal"
    directory.mkdir(exist_ok=True)
    name = segment_name(1, number)
    return Path(write_segment(str(directory), name))


def test_s3_put_answer_with_our_checksum_confirms_the_push(s3_endpoint, tmp_path: Path) -> None:
    archive, _storage = _s3_archive(s3_endpoint, tmp_path)
    segment = _synthetic_segment(tmp_path, 1)
    outcome = archive.push(str(segment), segment.name)
    assert outcome.status == "archived" and outcome.confirmed
    again = archive.push(str(segment), segment.name)  # already archived: its header was read and matched
    assert again.status == "already-archived" and again.confirmed


def test_s3_put_answer_without_a_checksum_confirms_nothing(s3_endpoint, tmp_path: Path) -> None:
    archive, storage = _s3_archive(s3_endpoint, tmp_path)

    def forget_checksum(parsed, **_kwargs) -> None:  # a store that does not return x-amz-checksum-sha256
        parsed.pop("ChecksumSHA256", None)
    storage.client.meta.events.register("after-call.s3.PutObject", forget_checksum)
    segment = _synthetic_segment(tmp_path, 2)
    outcome = archive.push(str(segment), segment.name)
    assert outcome.status == "archived" and not outcome.confirmed
    assert archive.exists(segment.name)


def test_s3_put_answer_with_another_checksum_fails_the_push(s3_endpoint, tmp_path: Path) -> None:
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import StorageError

    archive, storage = _s3_archive(s3_endpoint, tmp_path)

    def damage_checksum(parsed, **_kwargs) -> None:  # the store stored other bytes than those we sent
        parsed["ChecksumSHA256"] = "A" * 43 + "="
    storage.client.meta.events.register("after-call.s3.PutObject", damage_checksum)
    segment = _synthetic_segment(tmp_path, 3)
    with pytest.raises(StorageError, match="the transfer was damaged"):
        archive.push(str(segment), segment.name)
