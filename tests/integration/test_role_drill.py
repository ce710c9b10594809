"""Role drill and playbooks/drill.yml through ansible-playbook, against real archived clusters.

The inventories are like a user's: connection local, the project venv's Python
(the server's OS user must be able to run it), become with su. This sandbox
has neither systemd as PID 1 nor cron, so the role only renders the files
(drill_scheduler_check=false); the tests then run the rendered commands
themselves, as the scheduler would, to prove they work: the ExecStart= of the
service unit (checked by `systemd-analyze verify` too) and the cron line.
"""

from __future__ import annotations

import grp
import html
import json
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

from harness import make_user_dir, run_as
from harness.ansible import exec_start, host_python, output, play, recap, write_inventory
from harness.archived import Archived, seeded

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DRILL_PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "drill.yml"
SUM_QUERY = {"name": "balance total", "sql": "SELECT sum(balance) FROM accounts", "expected": 1252600}
WRONG_QUERY = {"name": "row count", "sql": "SELECT count(*) FROM accounts", "expected": "499"}


def host_vars(arch: Archived, base: Path) -> Dict[str, Any]:
    """Role variables pointing everything of one cluster at its own directories."""
    owner = arch.cluster.os_user
    home = make_user_dir(base, owner, 0o750)
    for scheduler_dir in ("systemd", "cron.d"):  # they exist where systemd or cron is installed
        (base / scheduler_dir).mkdir(exist_ok=True)
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": host_python(),
        "ansible_become_method": "ansible.builtin.su",
        "drill_cluster_name": arch.setup.cluster_name,
        "drill_config_path": str(arch.setup.config_path),
        "drill_prefix": str(arch.tool.prefix),
        "drill_os_user": owner,
        "drill_os_group": grp.getgrgid(pwd.getpwnam(owner).pw_gid).gr_name,
        "drill_report_dir": str(home / "reports"),
        "drill_queries_file": str(home / "queries.json"),
        "drill_scratch_dir": str(make_user_dir(home / "scratch", owner, 0o700)),
        "drill_lock_file": str(home / "drill.lock"),
        "drill_systemd_dir": str(base / "systemd"),
        "drill_cron_file": str(base / "cron.d" / "restorekeeper-drill-main"),
        "drill_scheduler_check": False,
        "drill_rto_target": "10min",
        "drill_checksum_tables": ["postgres:public.accounts"],
        "drill_queries": [SUM_QUERY],
    }


def history(report_dir: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in (report_dir / "history.jsonl").read_text().splitlines()]


def test_role_schedules_with_systemd_or_cron_and_runs_a_drill_now(archived, ansible_env, rk_session_dir, tmp_path):
    arch = seeded(archived, 18)
    base = rk_session_dir / "role-drill"
    variables = host_vars(arch, base)
    variables["drill_scheduler"] = "systemd"
    variables["drill_cpu_quota"] = "50%"
    report_dir, systemd_dir = Path(variables["drill_report_dir"]), Path(variables["drill_systemd_dir"])
    inventory = tmp_path / "inventory.yml"
    write_inventory(inventory, {"db1": variables})
    playbook = tmp_path / "site.yml"
    playbook.write_text(json.dumps([{"name": "drills", "hosts": "databases", "gather_facts": False,
                                     "roles": [{"role": "restorekeeper.postgresql.drill"}]}]))

    # Check mode writes nothing.
    checked = play(ansible_env, inventory, playbook, "--check")
    assert checked.returncode == 0, output(checked)
    assert list(systemd_dir.iterdir()) == [] and not report_dir.exists()

    # systemd: service and timer rendered (not enabled: systemd does not run here).
    first = play(ansible_env, inventory, playbook)
    assert "RTO 10min: drills run daily" in first.stdout, output(first)
    assert first.returncode == 0, output(first)
    service = systemd_dir / "restorekeeper-drill-main.service"
    timer = systemd_dir / "restorekeeper-drill-main.timer"
    text = service.read_text()
    for line in ("User=%s" % arch.cluster.os_user, "Nice=10", "IOSchedulingClass=idle", "CPUQuota=50%",
                 "Type=oneshot"):
        assert line in text.splitlines(), text
    # drill_schedule is derived from drill_rto_target 10min: daily, said so in the play's output.
    assert "OnCalendar=*-*-* 03:30:00" in timer.read_text() and "Persistent=true" in timer.read_text()
    queries = Path(variables["drill_queries_file"])
    assert queries.stat().st_mode & 0o777 == 0o600
    assert json.loads(queries.read_text())[0]["expected"] == ["1252600"]
    if shutil.which("systemd-analyze"):
        verified = subprocess.run(["systemd-analyze", "verify", "--man=no", str(service), str(timer)],
                                  capture_output=True, text=True, check=False)
        assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr

    # The timer's command works: run it as the unit would (as the server's OS user).
    argv = exec_start(service)
    assert argv[:3] == ["/usr/bin/flock", "--wait", "3600"] and argv[6:8] == [str(arch.tool.bin), "drill"]
    scheduled = run_as(arch.cluster.os_user, argv)
    assert scheduled.returncode == 0, scheduled.stdout + scheduled.stderr
    assert [h["result"] for h in history(report_dir)] == ["pass"]

    # Idempotent.
    again = play(ansible_env, inventory, playbook)
    assert again.returncode == 0 and recap(again, "db1")["changed"] == 0, output(again)

    # cron instead: the cron file replaces the units; its line works under /bin/sh.
    variables.update(drill_scheduler="cron", drill_randomized_delay=0)
    write_inventory(inventory, {"db1": variables})
    to_cron = play(ansible_env, inventory, playbook)
    assert to_cron.returncode == 0, output(to_cron)
    assert not service.exists() and not timer.exists()
    cron_line = next(line for line in Path(variables["drill_cron_file"]).read_text().splitlines()
                     if line and not line.startswith("#") and "=" not in line.split()[0])
    fields = cron_line.split(None, 6)
    assert fields[:6] == ["30", "3", "*", "*", "*", arch.cluster.os_user], cron_line
    assert fields[6].startswith("/usr/bin/nice -n 10 /usr/bin/ionice -c 3 /usr/bin/flock")
    cron_run = run_as(arch.cluster.os_user, ["/bin/sh", "-c", fields[6].replace("\\%", "%")])
    assert cron_run.returncode == 0, cron_run.stderr
    assert [h["result"] for h in history(report_dir)] == ["pass", "pass"]
    assert "drill of main: PASS" in (report_dir / "scheduled.log").read_text()

    # A drill now, through the module: check mode plans only, then one for real.
    variables["drill_run_now"] = True
    write_inventory(inventory, {"db1": variables})
    planned = play(ansible_env, inventory, playbook, "--check")
    assert planned.returncode == 0 and "a drill would restore backup" in planned.stdout, output(planned)
    assert len(history(report_dir)) == 2
    now = play(ansible_env, inventory, playbook)
    assert now.returncode == 0, output(now)
    assert "restore drill of main: PASS" in now.stdout
    assert [h["result"] for h in history(report_dir)] == ["pass", "pass", "pass"]
    assert list(Path(variables["drill_scratch_dir"]).iterdir()) == []

    # Unscheduled: the role removes its files.
    variables.update(drill_run_now=False, drill_scheduled=False)
    write_inventory(inventory, {"db1": variables})
    removed = play(ansible_env, inventory, playbook)
    assert removed.returncode == 0, output(removed)
    assert not Path(variables["drill_cron_file"]).exists() and not service.exists()


def test_fleet_playbook_summarises_every_host_and_fails_at_the_end(archived, ansible_env, rk_session_dir,
                                                                   tmp_path):
    good, bad = seeded(archived, 18), seeded(archived, 18)
    hosts = {"db-good": host_vars(good, rk_session_dir / "fleet-good"),
             "db-bad": host_vars(bad, rk_session_dir / "fleet-bad")}
    hosts["db-bad"]["drill_queries"] = [SUM_QUERY, WRONG_QUERY]
    # db-good is drilled on a designated drill host: its drill tasks run through drillbox's
    # connection (an interpreter that leaves a trace), with a config reaching the server over TCP.
    trace = make_user_dir(rk_session_dir / "drillbox", good.cluster.os_user, 0o777) / "trace"
    wrapper = rk_session_dir / "drillbox" / "python"
    wrapper.write_text("#!/bin/sh\necho drillbox >> %s\nexec %s \"$@\"\n" % (trace, host_python()))
    wrapper.chmod(0o755)
    drill_config = good.setup.config_path.with_name("drill-host.conf")
    drill_config.write_text(good.setup.config_path.read_text().replace(
        "host = %s" % good.cluster.socket_dir, "host = 127.0.0.1"))
    drill_config.chmod(0o600)
    shutil.chown(drill_config, good.cluster.os_user)
    hosts["db-good"].update(drill_host="drillbox", drill_config_path=str(drill_config))
    inventory = tmp_path / "inventory.yml"
    write_inventory(inventory, hosts, {"drillbox": dict(hosts["db-good"], ansible_python_interpreter=str(wrapper))})

    # Check mode: every host plans, the summary is printed but not written, nothing fails.
    planned = play(ansible_env, inventory, DRILL_PLAYBOOK, "--check", "-e", "drill_summary_dir=fleet-reports",
                   cwd=tmp_path)
    assert planned.returncode == 0, output(planned)
    assert "| db-bad | PLANNED |" in planned.stdout and "| db-good | PLANNED |" in planned.stdout
    assert not (tmp_path / "fleet-reports").exists()

    run = play(ansible_env, inventory, DRILL_PLAYBOOK, "-e", "drill_summary_dir=fleet-reports", cwd=tmp_path)

    # Both drills ran (the failure did not stop the other host), the summary was
    # written, and then the play failed for db-bad only.
    assert run.returncode == 2, output(run)
    assert recap(run, "db-bad")["failed"] == 1 and recap(run, "db-good")["failed"] == 0, output(run)
    assert "restore drill of db-bad did not pass: query: row count: returned ['500'], expected ['499']" in run.stdout
    summary_dir = tmp_path / "fleet-reports"  # relative to where ansible-playbook ran
    summary = json.loads((summary_dir / "latest.json").read_text())
    rows = {row["host"]: row for row in summary["hosts"]}
    assert summary["failed_hosts"] == ["db-bad"] and summary["totals"] == {"hosts": 2, "pass": 1, "fail": 1}
    assert rows["db-good"]["status"] == "pass" and rows["db-good"]["reasons"] == []
    assert rows["db-good"]["rto_seconds"] > 0 and rows["db-good"]["rto_target_seconds"] == 600.0
    assert rows["db-good"]["rpo_seconds"] is not None
    assert "drillbox" in trace.read_text(), "db-good's drill must run on its designated drill host"
    assert rows["db-bad"]["status"] == "fail"
    # A drill that fails verification reports that failure only: its RTO is simply not measured.
    assert rows["db-bad"]["reasons"][0] == "query: row count: returned ['500'], expected ['499']"
    assert len(rows["db-bad"]["reasons"]) == 1
    markdown = (summary_dir / "latest.md").read_text()
    assert "| db-bad | FAIL |" in markdown and "| db-good | PASS |" in markdown
    assert html.escape("returned ['500'], expected ['499']") in (summary_dir / "latest.html").read_text()
    assert "| db-good | PASS |" in run.stdout  # printed too
    # Each host kept its own report, and the drills ran one after the other (serial).
    for name, result in (("db-good", "pass"), ("db-bad", "fail")):
        assert [h["result"] for h in history(Path(hosts[name]["drill_report_dir"]))] == [result]
    assert run.stdout.count("PLAY [Restore drill on every database host]") == 2
