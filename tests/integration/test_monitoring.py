"""`restorekeeper metrics` and `restorekeeper check` against a real archiving cluster.

One cluster goes through the states monitoring must tell apart: healthy after
a backup, with a drill record and a lagging copy, with archiving broken
(archive_command 'false': failures and a .ready backlog, CRITICAL), and with
the server down (up 0, UNKNOWN for that source, still one line).
"""

from __future__ import annotations

import json
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore import drillrecord
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.timefmt import utc_iso
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage
from harness import make_user_dir, wait_until

from harness.archived import Archived
from harness.exposition import parse_exposition, value

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def metrics(arch: Archived, textfile: Path):
    result = arch.rk("metrics", "--textfile", str(textfile))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    return parse_exposition(textfile.read_text())


def check(arch: Archived, *args: str):
    result = arch.rk("check", *args, check=False)
    assert len(result.stdout.splitlines()) == 1 and not result.stderr, result.stdout + result.stderr
    return result.returncode, result.stdout.strip()


def test_metrics_and_check_follow_the_cluster_through_failures(archived, rk_session_dir):
    arch = archived(15)
    base = make_user_dir(rk_session_dir / ("monitoring-%d" % arch.cluster.port), arch.cluster.os_user, 0o755)
    textfile = base / "restorekeeper_main.prom"
    second = make_user_dir(base / "second", arch.cluster.os_user, 0o700)
    config = arch.setup.config_path
    config.write_text(config.read_text() + "\n[copy second]\ntype = posix\npath = %s\nfailure_domain = disk2\n"
                      % second)
    record = arch.backup()

    # Healthy: a fresh backup, the archiver succeeding, nothing waiting.
    families = metrics(arch, textfile)
    for source in ("repository", "server", "copies", "drill", "policy", "stream"):
        assert value(families, "restorekeeper_up", source=source) == 1, source
    assert 0 <= value(families, "restorekeeper_last_backup_age_seconds", type="full") < 300
    assert value(families, "restorekeeper_backups", type="full") == 1
    assert value(families, "restorekeeper_archive_failures_total") == 0
    assert value(families, "restorekeeper_archive_failing") == 0
    assert value(families, "restorekeeper_archived_total") >= 2
    assert value(families, "restorekeeper_archive_ready_files") == 0
    assert value(families, "restorekeeper_drill_records") == 0
    assert value(families, "restorekeeper_policy_compliant") == 0  # two copies on one host: not 3-2-1
    assert value(families, "restorekeeper_stream_present") == 0
    assert value(families, "restorekeeper_copy_missing_backups", copy="second") == 1  # never shipped

    # Shipped, then new WAL that the copy does not hold yet: it lags.
    assert arch.rk("ship", "--once").returncode == 0
    arch.cluster.execute("CREATE TABLE t AS SELECT generate_series(1, 10000) AS id")
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    # A drill record as `restorekeeper drill` stores it (the drill itself is tested elsewhere).
    finished = utc_iso(time.time() - 60)
    drillrecord.store_record(PosixStorage(str(arch.setup.repo_path)), drillrecord.summarise(
        {"cluster": "main", "finished_at": finished, "started_at": finished, "mode": "restore-point",
         "result": "pass", "backup": record["label"], "rto_seconds": 14.2, "rto_target_seconds": 600.0,
         "rpo_seconds": 0.8, "phases": {"fetch": 1.0, "extract": 2.0, "start": 1.0, "replay": 3.0, "verify": 7.2}},
        4 * 1024 * 1024, 30 * 1024 * 1024))
    subprocess.run(["chown", "-R", arch.cluster.os_user, str(arch.setup.repo_path / "main" / "drills")], check=True)
    families = metrics(arch, textfile)
    assert value(families, "restorekeeper_copy_up", copy="second") == 1
    assert value(families, "restorekeeper_copy_missing_wal_files", copy="second") >= 1
    assert value(families, "restorekeeper_copy_lag_seconds", copy="second") >= 0
    assert value(families, "restorekeeper_copy_missing_backups", copy="second") == 0
    assert value(families, "restorekeeper_drill_last_rto_seconds") == 14.2
    assert value(families, "restorekeeper_drill_last_success") == 1
    assert 50 <= value(families, "restorekeeper_drill_last_age_seconds") < 600
    code, line = check(arch)
    assert code == 0, line
    assert line.startswith("RESTOREKEEPER OK - last backup ") and "drill passed" in line
    assert "archive_failed=0c" in line.split(" | ")[1].split()
    # Policy required: the single-host layout is CRITICAL, with the reason.
    code, line = check(arch, "--require-policy")
    assert code == 2 and "3-2-1 not met: 2 independent copies" in line, line

    # Archiving breaks: failures, a .ready backlog, CRITICAL.
    arch.cluster.execute("ALTER SYSTEM SET archive_command = 'false'")
    arch.cluster.reload()

    def failing() -> bool:
        arch.cluster.execute("INSERT INTO t SELECT generate_series(1, 100)")
        arch.cluster.switch_wal()
        return int(arch.cluster.scalar("select failed_count from pg_stat_archiver")) > 0

    wait_until(failing, timeout=60, interval=0.5, message="archive_command 'false' in effect")
    arch.cluster.execute("INSERT INTO t SELECT generate_series(1, 100)")
    arch.cluster.switch_wal()
    families = metrics(arch, textfile)
    assert value(families, "restorekeeper_archive_failures_total") > 0
    assert value(families, "restorekeeper_archive_failing") == 1
    assert value(families, "restorekeeper_archive_ready_files") > 0
    assert value(families, "restorekeeper_archive_lag_segments") > 0
    code, line = check(arch)
    assert code == 2, line
    assert line.startswith("RESTOREKEEPER CRITICAL - archiving is failing: ")

    # The server goes down: that source is up 0, the others still report; UNKNOWN in the check
    # (nothing measured is CRITICAL any more: the failing archiver cannot be seen).
    arch.cluster.stop()
    families = metrics(arch, textfile)
    assert value(families, "restorekeeper_up", source="server") == 0
    assert value(families, "restorekeeper_up", source="repository") == 1
    assert "restorekeeper_archive_failures_total" not in families
    assert value(families, "restorekeeper_last_backup_age_seconds", type="full") >= 0
    code, line = check(arch)
    assert code == 3, line
    assert line.startswith("RESTOREKEEPER UNKNOWN - server unreachable: psql: the server is not reachable")
    json_status = json.loads(arch.rk("metrics", "--json").stdout)
    assert json_status["server"]["up"] is False and json_status["repository"]["up"] is True


def test_archiving_alert_survives_an_unreadable_backup_volume(archived):
    """The backup volume re-permissioned (chmod 000, as an unmounted volume's
    mount point can be) while the server keeps trying to archive: the check is
    CRITICAL for the failing archiver and names the repository unreadable; the
    metrics keep the archive series, with restorekeeper_repository_readable 0."""
    arch = archived(15)
    arch.backup()
    repo = arch.setup.repo_path
    mode = stat.S_IMODE(repo.stat().st_mode)
    repo.chmod(0)
    try:
        def failing() -> bool:
            arch.cluster.switch_wal()
            return int(arch.cluster.scalar("select failed_count from pg_stat_archiver")) > 0

        arch.cluster.execute("CREATE TABLE t AS SELECT 1 AS id")
        wait_until(failing, timeout=60, interval=0.5, message="archiving into an unreadable repository fails")

        code, line = check(arch)
        text = line.split(" | ")[0]
        assert code == 2, line
        assert text.startswith("RESTOREKEEPER CRITICAL - archiving is failing: "), line
        assert "; UNKNOWN: repository unreadable: repository path %s " % repo in text, line
        assert "server" not in text, line  # the server answered: it is not what failed

        result = arch.rk("metrics")
        families = parse_exposition(result.stdout)
        assert value(families, "restorekeeper_archive_failing") == 1
        assert value(families, "restorekeeper_archive_failures_total") > 0
        assert value(families, "restorekeeper_archive_ready_files") >= 1
        assert value(families, "restorekeeper_up", source="server") == 1
        assert value(families, "restorekeeper_up", source="repository") == 0
        assert value(families, "restorekeeper_repository_readable") == 0
    finally:
        repo.chmod(mode)
    families = parse_exposition(arch.rk("metrics").stdout)
    assert value(families, "restorekeeper_repository_readable") == 1
