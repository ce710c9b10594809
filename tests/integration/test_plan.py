"""The recovery-plan check against a real cluster: archiving, a backup, a drill
(which records its figures in the repository), then `restorekeeper plan` and
backup_info with targets; and role archiving deriving archive_timeout from a tier."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Dict

import pytest

from harness import make_user_dir
from harness.ansible import host_python, run_module as run_any_module

from harness.archived import Archived

pytestmark = [pytest.mark.slow, pytest.mark.integration]

run_info = partial(run_any_module, module="restorekeeper.postgresql.backup_info")


def plan(arch: Archived, *args: str) -> subprocess.CompletedProcess:
    return arch.rk("plan", *args, check=False)


def findings(result: subprocess.CompletedProcess) -> Dict[str, Dict[str, Any]]:
    assert result.stdout, result.stderr
    return {f["check"]: f for f in json.loads(result.stdout)["findings"]}


def write_stream_status(arch: Archived, **fields: Any) -> None:
    """What role walstream's streamer writes, as the repository's owner would."""
    status = {"updated_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()), "synchronous": True,
              "lag_bytes": 0, "lag_seconds": 0.0, "slot": "restorekeeper_main", "state": "streaming"}
    status.update(fields)
    directory = arch.setup.repo_path / arch.setup.cluster_name / "stream"
    script = ("import json, os, sys; d = sys.argv[1]; os.makedirs(d, exist_ok=True); "
              "open(os.path.join(d, 'status.json.tmp'), 'w').write(sys.argv[2]); "
              "os.replace(os.path.join(d, 'status.json.tmp'), os.path.join(d, 'status.json'))")
    done = arch.cluster.run_as_owner([sys.executable, "-c", script, str(directory), json.dumps(status)])
    assert done.returncode == 0, done.stderr


@pytest.fixture
def drilled(archived, rk_session_dir):
    """PG 18 archiving with archive_timeout 60s, two full backups and a passed drill."""
    arch = archived(18, conf={"archive_timeout": "60s"})
    arch.cluster.execute("CREATE TABLE t AS SELECT generate_series(1, 20000) AS id")
    arch.backup()
    arch.cluster.execute("INSERT INTO t SELECT generate_series(1, 5000)")
    arch.backup()
    scratch = make_user_dir(rk_session_dir / ("plan-scratch-%d" % arch.cluster.port), arch.cluster.os_user, 0o700)
    drill = arch.rk("drill", "--scratch-dir", str(scratch), "--json", check=False)
    assert drill.returncode == 0, drill.stdout[-2000:] + drill.stderr
    assert json.loads(drill.stdout)["record"]["stored"]
    return arch


def test_plan_command_and_backup_info_judge_the_layout(drilled, ansible_env):
    arch = drilled

    # Generous targets: met, from measured rates and a fresh drill.
    generous = plan(arch, "--rpo-target", "10min", "--rto-target", "4h", "--json")
    assert generous.returncode == 0, generous.stdout + generous.stderr
    report = json.loads(generous.stdout)
    assert report["met"] and report["status"] == "met"
    assert report["rates"]["replay_measured"] and report["rates"]["unpack_measured"]
    assert set(findings(generous)) == {"archive_timeout", "archiving", "drill", "worst_case", "backup_age"}

    # Tight RPO, and an RPO of 0: not met, with the reason and the fix, one line each.
    tight = plan(arch, "--rpo-target", "1min", "--rto-target", "4h")
    assert tight.returncode == 0, tight.stdout  # archive_timeout 60s meets an RPO of 1min
    zero = plan(arch, "--tier", "critical", "--json")
    assert zero.returncode == 1
    streaming = findings(zero)["streaming"]
    assert streaming["status"] == "not_met" and streaming["fix"] == "enable role walstream with synchronous: true"
    lines = plan(arch, "--tier", "critical").stdout.splitlines()
    assert lines[0].startswith("tier critical, RPO 0s, RTO 15min: NOT met")
    assert any(line.startswith("NOT_MET  RPO streaming:") and "-> fix: enable role walstream" in line
               for line in lines)

    # A fresh status of synchronous streaming meets RPO 0; an asynchronous one is about its lag.
    write_stream_status(arch)
    assert findings(plan(arch, "--tier", "critical", "--json"))["streaming"]["status"] == "met"
    write_stream_status(arch, synchronous=False, lag_seconds=1.5, lag_bytes=8192)
    asynchronous = findings(plan(arch, "--tier", "critical", "--json"))["streaming"]
    assert asynchronous["status"] == "not_met" and "asynchronous" in asynchronous["reason"]

    # The server's archive_timeout above the RPO: the fix names the value to set.
    arch.cluster.execute("ALTER SYSTEM SET archive_timeout = '1h'")
    arch.cluster.reload()
    slow = plan(arch, "--tier", "important", "--json")
    assert slow.returncode == 1
    timeout = findings(slow)["archive_timeout"]
    assert timeout["status"] == "not_met" and timeout["measured"] == 3600 and timeout["limit"] == 300
    assert timeout["fix"].startswith("set archive_timeout to 150s")

    # Unusable targets: exit 2 before anything is read, with the reason.
    bad = plan(arch, "--rto-target", "30s")
    assert bad.returncode == 2 and "rto_target 30s is below 1min" in bad.stderr and bad.stdout == ""
    unknown = plan(arch, "--tier", "gold")
    assert unknown.returncode == 2 and "invalid choice: 'gold'" in unknown.stderr

    # The module: the same verdict, and the measured rates role backups derives from.
    args = {"config_path": str(arch.setup.config_path), "targets": {"tier": "important"}}
    info = run_info(ansible_env, args, become_user=arch.cluster.os_user)
    assert not info.failed, info.result
    assert info["changed"] is False
    recovery = info["recovery_plan"]
    assert recovery["status"] == "not_met" and not recovery["met"]
    by_check = {f["check"]: f for f in recovery["findings"]}
    assert by_check["archive_timeout"]["status"] == "not_met" and by_check["drill"]["status"] == "met"
    assert info["measured"]["drills"] == 1 and info["measured"]["replay_rate_mb_s"] > 0
    assert info["measured"]["wal_rate_mb_per_hour"] > 0
    plain = run_info(ansible_env, {"config_path": str(arch.setup.config_path)}, become_user=arch.cluster.os_user)
    assert plain["recovery_plan"] is None
    refused = run_info(ansible_env, {**args, "targets": {"rto_target": "5s"}}, become_user=arch.cluster.os_user)
    assert refused.failed and "rto_target 5s is below 1min" in refused["msg"]


ARCHIVING_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: restorekeeper.postgresql.archiving
"""


def test_role_archiving_derives_archive_timeout_from_the_tier(archived, ansible_env, tool, tmp_path):
    arch = archived(16)
    playbook = tmp_path / "archiving.yml"
    playbook.write_text(ARCHIVING_PLAYBOOK)
    base = {
        "ansible_connection": "local", "ansible_python_interpreter": host_python(),
        "ansible_become_method": "ansible.builtin.su",
        "archiving_prefix": str(tool.prefix), "archiving_python": str(tool.python),
        "archiving_config_path": str(arch.setup.config_path), "archiving_repository_path": str(arch.setup.repo_path),
        "archiving_os_user": arch.cluster.os_user, "archiving_os_group": arch.cluster.os_user,
        "archiving_login_user": arch.cluster.os_user, "archiving_login_port": arch.cluster.port,
        "archiving_login_unix_socket": str(arch.cluster.socket_dir), "archiving_pg_bindir": str(arch.cluster.bindir),
        "archiving_service_manager": "none", "archiving_prove": False,
    }
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"

    def converge(**variables: Any) -> subprocess.CompletedProcess:
        extra = tmp_path / "vars.json"
        extra.write_text(json.dumps({**base, **variables}))
        # The tool is installed already (the session's): only the checks and the configuration run.
        return subprocess.run([str(ansible_playbook), "-i", "localhost,", str(playbook), "-e", "@%s" % extra,
                               "--tags", "archiving_config"],
                              env=dict(ansible_env), capture_output=True, text=True, timeout=600, check=False)

    # Wrong input fails at the first task, before anything changes.
    before = arch.cluster.scalar("SHOW archive_timeout")
    refused = converge(archiving_tier="important", archiving_archive_timeout="10min")
    assert refused.returncode != 0 and "archive_timeout 10min cannot meet the RPO target 5min" in refused.stdout, \
        refused.stdout[-3000:]
    assert arch.cluster.scalar("SHOW archive_timeout") == before
    gold = converge(archiving_tier="gold")
    assert gold.returncode != 0 and "critical, important, standard" in gold.stdout + gold.stderr

    run = converge(archiving_tier="important")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "archive_timeout 150s (derived)" in run.stdout
    assert arch.cluster.scalar("SHOW archive_timeout") == "150s"
    again = converge(archiving_tier="important")
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]

    critical = converge(archiving_tier="critical")
    assert critical.returncode == 0, critical.stdout[-3000:]
    assert arch.cluster.scalar("SHOW archive_timeout") == "1min"
    assert "WAL streaming that is synchronous" in critical.stdout
