"""Role backups through playbooks/backups.yml, against throwaway archived clusters.

ansible-playbook runs the collection's playbook as a user would, against
localhost (connection local, become with su to the server's OS user). There
is no systemd as PID 1 and no cron daemon here, so the role runs with
backups_scheduler_check=false and writes units / the cron file into temporary
directories; the tests then run the exact command lines written there, as
the server's OS user, the way the scheduler would.
"""

from __future__ import annotations

import grp
import itertools
import json
import pwd
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping

import pytest

from harness import run_as
from harness.ansible import host_python
from harness.paths import ensure_public_dir
from harness.archived import Archived

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "backups.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<name>\S+)\[\d+\]: (?P<text>.*)$")
_numbers = itertools.count(1)


def write_inventory(path: Path, variables: Mapping[str, Any]) -> None:
    """Group `databases` (the playbook's default hosts) with localhost; JSON is YAML."""
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": host_python(),
        "ansible_become_method": "ansible.builtin.su",
        **variables,
    }
    path.write_text(json.dumps({"all": {"children": {"databases": {"hosts": {"localhost": host}}}}}, indent=1))


def converge(ansible_env: Mapping[str, str], inventory: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), *args]
    return subprocess.run(argv, env=dict(ansible_env), capture_output=True, text=True, timeout=900, check=False)


def output(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def changed_count(run: subprocess.CompletedProcess) -> int:
    match = re.search(r"^localhost\s+:.*\bchanged=(\d+)", run.stdout, re.MULTILINE)
    assert match, output(run)
    return int(match.group(1))


def role_vars(arch: Archived, base: Path) -> Dict[str, Any]:
    """Everything outside the cluster's files goes under `base` (world-traversable: the OS user runs the wrapper)."""
    user = arch.cluster.os_user
    return {
        "backups_cluster_name": arch.setup.cluster_name,
        "backups_config_path": str(arch.setup.config_path),
        "backups_prefix": str(arch.tool.prefix),
        "backups_os_user": user,
        "backups_os_group": grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name,
        "backups_scheduler_check": False,
        "backups_log_dir": str(base / "log"),
        "backups_runner_path": str(ensure_public_dir(base / "bin") / "restorekeeper-scheduled"),
        "backups_systemd_dir": str(ensure_public_dir(base / "systemd")),
        "backups_cron_file": str(base / "restorekeeper-backup-main"),
    }


def scratch(rk_session_dir: Path) -> Path:
    return ensure_public_dir(rk_session_dir / ("b%d" % next(_numbers)))


def unit_values(path: Path, key: str) -> List[str]:
    return [line.split("=", 1)[1] for line in path.read_text().splitlines() if line.startswith(key + "=")]


def log_lines(path: Path) -> List[Dict[str, str]]:
    lines = []
    for line in path.read_text().splitlines():
        match = LOG_LINE.match(line)
        assert match, "log line without a UTC timestamp: %r" % line
        lines.append(match.groupdict())
    return lines


def run_like_the_scheduler(arch: Archived, argv: List[str]) -> subprocess.CompletedProcess:
    # The minimal environment run_as gives, as systemd or cron would.
    return run_as(arch.cluster.os_user, argv, timeout=600)


def test_derived_systemd_schedule_first_backup_once_and_check_mode(archived, ansible_env, rk_session_dir, tmp_path):
    arch = archived(18, conf={"summarize_wal": "on"})
    base = scratch(rk_session_dir)
    inventory = tmp_path / "inventory.yml"
    # The README's example: RPO 5min, RTO 1h, 100 GB, 2048 MB/h of WAL, default rates.
    write_inventory(inventory, {**role_vars(arch, base), "backups_scheduler": "systemd",
                                "backups_rpo_target": "5min", "backups_rto_target": "1h",
                                "backups_wal_rate_mb_per_hour": 2048, "backups_database_size_gb": 100,
                                "backups_logical_schedule": "Sat *-*-* 03:00:00"})
    units = base / "systemd"

    # Check mode first: it says what it would do and changes nothing.
    planned = converge(ansible_env, inventory, "--check")
    assert planned.returncode == 0, output(planned)
    assert "Would take the first full backup" in planned.stdout
    assert arch.info()["backups"] == [] and list(units.iterdir()) == [] and not (base / "log").exists()
    assert not (base / "bin" / "restorekeeper-scheduled").exists()

    run = converge(ansible_env, inventory)
    assert run.returncode == 0, output(run)
    backups = arch.info()["backups"]
    assert [b["type"] for b in backups] == ["full"]
    assert "archive_timeout = 150s" in run.stdout and "every 12h" in run.stdout
    assert "systemd does not run this host" in run.stdout

    names = sorted(p.name for p in units.iterdir())
    assert names == sorted("restorekeeper-backup-main-%s.%s" % (kind, suffix)
                           for kind in ("full", "incremental", "logical") for suffix in ("service", "timer"))
    incremental_timer = units / "restorekeeper-backup-main-incremental.timer"
    assert unit_values(incremental_timer, "OnCalendar") == ["*-*-* 00/12:30:00"]
    assert "every 12h, derived from RTO 1h" in unit_values(incremental_timer, "Description")[0]
    assert unit_values(incremental_timer, "Persistent") == ["true"]
    assert unit_values(incremental_timer, "RandomizedDelaySec") == ["900"]
    assert unit_values(units / "restorekeeper-backup-main-full.timer", "OnCalendar") == ["Sun *-*-* 01:00:00"]
    assert unit_values(units / "restorekeeper-backup-main-logical.timer", "OnCalendar") == ["Sat *-*-* 03:00:00"]
    service = units / "restorekeeper-backup-main-incremental.service"
    assert unit_values(service, "User") == [arch.cluster.os_user]
    assert unit_values(service, "Type") == ["oneshot"]
    exec_start = unit_values(service, "ExecStart")
    assert len(exec_start) == 1
    assert "-- %s backup --config %s --type auto --checkpoint spread" % (arch.tool.bin, arch.setup.config_path) \
        in exec_start[0]
    # The reasoning is in the unit, with the README example's worst case.
    assert "25min16s" in service.read_text() and "archive_timeout = 150s" in service.read_text()

    # Idempotent: the backup is not taken again, nothing is rewritten.
    again = converge(ansible_env, inventory)
    assert again.returncode == 0, output(again)
    assert changed_count(again) == 0, output(again)
    assert len(arch.info()["backups"]) == 1

    # What the timer would start: an incremental backup on top of the first, logged with timestamps.
    ran = run_like_the_scheduler(arch, shlex.split(exec_start[0]))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "complete" in ran.stdout  # --echo: the journal gets the output too
    backups = arch.info()["backups"]
    assert [b["type"] for b in backups] == ["full", "incremental"]
    assert backups[1]["parent"] == backups[0]["label"]
    lines = log_lines(base / "log" / "incremental.log")
    assert {line["name"] for line in lines} == {"main-incremental"}
    assert lines[0]["text"].startswith("start: %s backup" % arch.tool.bin)
    assert any(line["text"].startswith("backup %s (incremental" % backups[1]["label"]) for line in lines)
    assert lines[-1]["text"].startswith("finished: exit 0 after")

    # A schedule change in check mode is reported, not written.
    text_before = incremental_timer.read_text()
    write_inventory(inventory, {**role_vars(arch, base), "backups_scheduler": "systemd",
                                "backups_rpo_target": "5min", "backups_rto_target": "4h",
                                "backups_wal_rate_mb_per_hour": 2048, "backups_database_size_gb": 100,
                                "backups_logical_schedule": "Sat *-*-* 03:00:00"})
    preview = converge(ansible_env, inventory, "--check", "--diff")
    assert preview.returncode == 0, output(preview)
    assert changed_count(preview) > 0 and "+OnCalendar=*-*-* 01:30:00" in preview.stdout, output(preview)
    assert incremental_timer.read_text() == text_before
    assert len(arch.info()["backups"]) == 2


def test_cron_on_postgresql_15_full_backups_only_and_logical_dumps(archived, ansible_env, rk_session_dir, tmp_path):
    arch = archived(15)
    base = scratch(rk_session_dir)
    inventory = tmp_path / "inventory.yml"
    settings = {**role_vars(arch, base), "backups_scheduler": "cron", "backups_randomized_delay": 0,
                "backups_logical_schedule": "Sat *-*-* 03:00:00", "backups_logical_databases": ["postgres"]}
    # A retention policy the engine refuses fails before any drop-in exists.
    write_inventory(inventory, {**settings, "backups_retention": {"full": 2, "window": "forever"}})
    refused = converge(ansible_env, inventory)
    assert refused.returncode != 0 and "window" in output(refused), output(refused)
    drop_in = Path(str(arch.setup.config_path) + ".d") / "retention.conf"
    assert not drop_in.exists()
    write_inventory(inventory, {**settings, "backups_retention": {"full": 2, "min_restorable": 1}})
    run = converge(ansible_env, inventory)
    assert run.returncode == 0, output(run)
    assert "PostgreSQL 15 has no incremental base backups" in run.stdout
    assert [b["type"] for b in arch.info()["backups"]] == ["full"]

    cron_file = base / "restorekeeper-backup-main"
    jobs = [line for line in cron_file.read_text().splitlines() if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(jobs) == 3, cron_file.read_text()
    full, logical, expire = (line.split(None, 6) for line in jobs)
    assert expire[:6] == ["30", "5", "*", "*", "*", arch.cluster.os_user]
    assert "-- %s expire --config %s --all" % (arch.tool.bin, arch.setup.config_path) in expire[6]
    assert drop_in.read_text().splitlines()[1:] == ["[retention]", "full = 2", "min_restorable = 1"]
    assert (drop_in.stat().st_mode & 0o777) == 0o600
    assert full[:6] == ["0", "1", "*", "*", "0", arch.cluster.os_user]
    assert "-- %s backup --config %s --type full" % (arch.tool.bin, arch.setup.config_path) in full[6]
    assert logical[:6] == ["0", "3", "*", "*", "6", arch.cluster.os_user]
    assert "-- %s dump --config %s" % (arch.tool.bin, arch.setup.config_path) in logical[6]
    assert "--type auto" not in cron_file.read_text()
    assert not list((base / "systemd").iterdir())

    again = converge(ansible_env, inventory)
    assert again.returncode == 0, output(again)
    assert changed_count(again) == 0, output(again)
    checked = converge(ansible_env, inventory, "--check")
    assert checked.returncode == 0 and changed_count(checked) == 0, output(checked)

    # What cron would run (through /bin/sh, which only splits words here).
    ran = run_like_the_scheduler(arch, shlex.split(logical[6]))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout == "" and ran.stderr == ""  # success is quiet under cron: nothing to mail
    lines = log_lines(base / "log" / "logical.log")
    assert lines[0]["text"].startswith("start: ") and lines[-1]["text"].startswith("finished: exit 0")
    assert any(re.match(r"dump \S+ complete \(custom format, with globals\)", line["text"]) for line in lines)
    assert len(arch.info()["backups"]) == 1
    # And the retention run: one full backup is within the policy, so nothing goes.
    expired = run_like_the_scheduler(arch, shlex.split(expire[6]))
    assert expired.returncode == 0, expired.stdout + expired.stderr
    assert log_lines(base / "log" / "expire.log")[-1]["text"].startswith("finished: exit 0")
    assert len(arch.info()["backups"]) == 1


def test_bad_targets_are_refused_before_anything_runs(ansible_env, tmp_path):
    inventory = tmp_path / "inventory.yml"
    common = {"backups_config_path": str(tmp_path / "none.conf"), "backups_scheduler": "cron",
              "backups_scheduler_check": False, "backups_cron_file": str(tmp_path / "cron")}
    write_inventory(inventory, {**common, "backups_rto_target": "soon", "backups_wal_rate_mb_per_hour": 100})
    bad = converge(ansible_env, inventory)
    assert bad.returncode != 0 and "rto_target: 'soon' is not a duration" in output(bad), output(bad)
    write_inventory(inventory, {**common, "backups_tier": "important", "backups_rto_target": "30s"})
    too_short = converge(ansible_env, inventory)
    assert too_short.returncode != 0 and "rto_target 30s is below 1min" in output(too_short), output(too_short)
    write_inventory(inventory, {**common, "backups_tier": "gold"})
    gold = converge(ansible_env, inventory)
    assert gold.returncode != 0 and "critical, important, standard" in output(gold), output(gold)
    write_inventory(inventory, {**common, "backups_full_schedule": "2026-*-* 01:00:00"})
    year = converge(ansible_env, inventory)
    assert year.returncode != 0 and "cron cannot run in a given year only" in output(year), output(year)
    assert not (tmp_path / "cron").exists()
