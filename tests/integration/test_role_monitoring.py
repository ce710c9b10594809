"""Role monitoring through ansible-playbook, against a real archived cluster.

No systemd and no cron daemon run here, so the role only renders the files
(monitoring_scheduler_check=false); the test then runs the rendered commands
itself, as the scheduler and NRPE would: the service's ExecStart=, the cron
line under /bin/sh, and the NRPE command line.
"""

from __future__ import annotations

import grp
import json
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from harness import make_user_dir, run_as
from harness.ansible import exec_start, host_python, output, play, recap, write_inventory
from harness.exposition import parse_exposition, value

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_role_installs_metrics_schedule_and_check_files(archived, ansible_env, rk_session_dir, tmp_path):
    arch = archived(15)
    arch.backup()
    owner = arch.cluster.os_user
    base = make_user_dir(rk_session_dir / ("role-monitoring-%d" % arch.cluster.port), owner, 0o755)
    for scheduler_dir in ("systemd", "cron.d", "nrpe.d", "nagios"):
        (base / scheduler_dir).mkdir()
    textfile_dir = base / "textfile"
    variables = {
        "ansible_connection": "local", "ansible_python_interpreter": host_python(),
        "ansible_become_method": "ansible.builtin.su",
        "monitoring_config_path": str(arch.setup.config_path), "monitoring_prefix": str(arch.tool.prefix),
        "monitoring_os_user": owner, "monitoring_os_group": grp.getgrgid(pwd.getpwnam(owner).pw_gid).gr_name,
        "monitoring_textfile_dir": str(textfile_dir), "monitoring_systemd_dir": str(base / "systemd"),
        "monitoring_cron_file": str(base / "cron.d" / "restorekeeper-metrics-main"),
        "monitoring_scheduler": "systemd", "monitoring_scheduler_check": False,
        "monitoring_check_sudo": False, "monitoring_check_limits": {"backup-age": "20h,26h", "ready": "3,5"},
        "monitoring_check_require_drill_pass": True,
        "monitoring_nrpe_file": str(base / "nrpe.d" / "restorekeeper_main.cfg"),
        "monitoring_nagios_command_file": str(base / "nagios" / "restorekeeper_main.cfg"),
    }
    inventory = tmp_path / "inventory.yml"
    write_inventory(inventory, {"db1": variables})
    playbook = tmp_path / "site.yml"
    playbook.write_text(json.dumps([{"name": "monitoring", "hosts": "databases", "gather_facts": False,
                                     "roles": [{"role": "restorekeeper.postgresql.monitoring"}]}]))

    checked = play(ansible_env, inventory, playbook, "--check")
    assert checked.returncode == 0, output(checked)
    assert not textfile_dir.exists() and list((base / "systemd").iterdir()) == []

    first = play(ansible_env, inventory, playbook)
    assert first.returncode == 0, output(first)
    assert stat.S_IMODE(textfile_dir.stat().st_mode) == 0o775
    service = base / "systemd" / "restorekeeper-metrics-main.service"
    timer = base / "systemd" / "restorekeeper-metrics-main.timer"
    assert "OnCalendar=*-*-* *:*:00" in timer.read_text()
    assert "User=%s" % owner in service.read_text().splitlines()
    if shutil.which("systemd-analyze"):
        verified = subprocess.run(["systemd-analyze", "verify", "--man=no", str(service), str(timer)],
                                  capture_output=True, text=True, check=False)
        assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr

    # The timer's command works: run as the unit would, it writes the textfile.
    argv = exec_start(service)
    assert argv[:2] == [str(arch.tool.bin), "metrics"]
    ran = run_as(owner, argv)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    textfile = textfile_dir / "restorekeeper_main.prom"
    families = parse_exposition(textfile.read_text())
    assert value(families, "restorekeeper_up", source="server") == 1
    assert value(families, "restorekeeper_backups", type="full") == 1

    # The NRPE line runs the check with the limits; no drill yet, and one is required: CRITICAL.
    nrpe = (base / "nrpe.d" / "restorekeeper_main.cfg").read_text()
    command = next(line for line in nrpe.splitlines() if line.startswith("command[restorekeeper_main]="))
    checked_now = run_as(owner, ["/bin/sh", "-c", command.split("=", 1)[1]])
    assert checked_now.returncode == 2, checked_now.stdout + checked_now.stderr
    assert checked_now.stdout.startswith("RESTOREKEEPER CRITICAL - no restore drill recorded")
    assert "backup_age=" in checked_now.stdout and ";72000;93600" in checked_now.stdout
    nagios = (base / "nagios" / "restorekeeper_main.cfg").read_text()
    assert "command_name    restorekeeper_main" in nagios and "--require-drill-pass" in nagios

    again = play(ansible_env, inventory, playbook)
    assert again.returncode == 0 and recap(again, "db1")["changed"] == 0, output(again)

    # cron instead: the cron file replaces the units; its line works under /bin/sh.
    variables["monitoring_scheduler"] = "cron"
    write_inventory(inventory, {"db1": variables})
    to_cron = play(ansible_env, inventory, playbook)
    assert to_cron.returncode == 0, output(to_cron)
    assert not service.exists() and not timer.exists()
    cron_line = next(line for line in Path(variables["monitoring_cron_file"]).read_text().splitlines()
                     if line and not line.startswith("#") and "=" not in line.split()[0])
    fields = cron_line.split(None, 6)
    assert fields[:6] == ["*", "*", "*", "*", "*", owner], cron_line
    textfile.unlink()
    cron_run = run_as(owner, ["/bin/sh", "-c", fields[6].replace("\\%", "%")])
    assert cron_run.returncode == 0, cron_run.stderr
    assert "restorekeeper_up" in textfile.read_text()
