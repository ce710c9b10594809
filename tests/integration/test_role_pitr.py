"""Role pitr through playbooks/pitr.yml, against a throwaway archived cluster.

ansible-playbook runs the collection's playbook exactly as documented
(`ansible-playbook playbooks/pitr.yml -e target_time=...`) against localhost,
with an inventory like a user's: connection local, the project venv's Python
(set explicitly: the server's OS user must be able to run it), and become
with su to that user. The live cluster is stopped with pg_ctl.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping

import pytest

from harness import PgCluster, wait_until
from harness.ansible import host_python
from harness.archived import accident, Archived

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "pitr.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def write_inventory(path: Path, variables: Mapping[str, Any]) -> None:
    """Group `databases` (the playbook's default hosts) with localhost; JSON is YAML."""
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": host_python(),
        "ansible_become_method": "ansible.builtin.su",
        **variables,
    }
    path.write_text(json.dumps({"all": {"children": {"databases": {"hosts": {"localhost": host}}}}}, indent=1))


def role_vars(arch: Archived) -> Dict[str, Any]:
    db = arch.cluster
    return {
        "pitr_config_path": str(arch.setup.config_path),
        "pitr_tool_path": str(arch.tool.bin),
        "pitr_os_user": db.os_user,
        "pitr_bindir": str(db.bindir),
        "pitr_service_manager": "pg_ctl",
        "pitr_live_pgdata": str(db.datadir),
    }


def converge(ansible_env: Mapping[str, str], inventory: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), *args]
    return subprocess.run(argv, env=dict(ansible_env), capture_output=True, text=True, timeout=900, check=False)


def output(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def moved_aside(cluster: PgCluster) -> List[Path]:
    return sorted(cluster.datadir.parent.glob(cluster.datadir.name + ".before-pitr-*"))


def test_new_directory_leaves_the_live_cluster_alone(archived, cluster_factory, ansible_env, tmp_path):
    arch = archived(18)
    before = accident(arch)
    slot = cluster_factory(version=18, initdb=False)
    inventory = tmp_path / "inventory.yml"
    write_inventory(inventory, {**role_vars(arch), "pitr_mode": "new_directory", "pitr_pgdata": str(slot.datadir),
                                "pitr_port": slot.port, "pitr_socket_dir": str(slot.socket_dir)})

    planned = converge(ansible_env, inventory, "--check", "-e", "target_time='%s'" % before)
    assert planned.returncode == 0, output(planned)
    assert "Would restore backup" in planned.stdout and not slot.datadir.exists()

    run = converge(ansible_env, inventory, "-e", "target_time='%s'" % before)
    assert run.returncode == 0, output(run)
    # The copy answers on its own port, paused at the target (the default outside in_place), rewound:
    assert slot.scalar("SELECT count(*) FROM accounts") == 1200
    assert slot.scalar("SELECT pg_is_in_recovery()") is True
    assert slot.scalar("SELECT count(*) FROM pg_class WHERE relname = 'after_accident'") == 0
    # ...and the live cluster was never touched.
    assert arch.cluster.is_running() and arch.cluster.scalar("SELECT count(*) FROM accounts") == 0
    assert not moved_aside(arch.cluster)


def test_in_place_moves_the_live_directory_aside_and_rewinds(archived, ansible_env, tmp_path):
    arch = archived(18)
    db = arch.cluster
    before = accident(arch)
    inventory = tmp_path / "inventory.yml"
    write_inventory(inventory, role_vars(arch))

    # Mistakes are refused before anything is stopped or moved.
    refused = converge(ansible_env, inventory, "-e", "target_time='2026-06-14 14:31:59'")
    assert refused.returncode != 0 and "has no time zone" in output(refused), output(refused)
    two = converge(ansible_env, inventory, "-e", "target_time='%s'" % before, "-e", "target_latest=true")
    assert two.returncode != 0 and "exactly one target" in output(two), output(two)
    planned = converge(ansible_env, inventory, "--check", "-e", "target_time='%s'" % before)
    assert planned.returncode == 0 and "Would restore backup" in planned.stdout, output(planned)
    assert db.is_running() and not moved_aside(db)
    assert db.scalar("SELECT count(*) FROM accounts") == 0

    run = converge(ansible_env, inventory, "-e", "target_time='%s'" % before)
    assert run.returncode == 0, output(run)
    aside = moved_aside(db)
    assert len(aside) == 1 and (aside[0] / "PG_VERSION").exists()  # the old directory is kept
    # The cluster is back on its port with the rewound data, on a new timeline, promoted.
    assert db.is_running()
    assert db.scalar("SELECT count(*) FROM accounts") == 1200
    assert db.scalar("SELECT pg_is_in_recovery()") is False
    assert db.scalar("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000002"
    # Archiving stays on in place: the new timeline reaches the repository.
    assert db.scalar("SHOW archive_mode") == "on"
    wait_until(lambda: "00000002.history" in arch.rk("wal-list").stdout.split(), timeout=120,
               message="timeline 2 history archived")
    db.execute("INSERT INTO accounts VALUES (0, 'after the rewind')")
