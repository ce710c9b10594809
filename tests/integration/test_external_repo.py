"""Another infrastructure repository uses the collection the way the README
says: `ansible-galaxy collection build` here, then that repository's
requirements.yml installs the tarball into its own collections directory,
and its playbook mixes its own role with ours against a throwaway cluster.

Only the installed copy is on ANSIBLE_COLLECTIONS_PATH (not this work tree's
link, not ~/.ansible/collections, not site-packages), so the run proves the
built artifact is complete: roles, modules, module_utils, filters.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping

import pytest

from harness.ansible import host_python


pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

THEIR_ROLE = """---
# Their application's schema (their role, their variable names).
- name: Their application table
  ansible.builtin.command:
    argv: ["{{ their_app_bindir }}/psql", -X, -q, -v, ON_ERROR_STOP=1, -h, "{{ their_app_socket }}",
           -p, "{{ their_app_port }}", -U, postgres, -d, postgres, -c, "{{ their_app_sql }}"]
  become: true
  become_user: postgres
  register: their_app_schema
  changed_when: "'NOTICE' not in their_app_schema.stderr"
  vars:
    their_app_sql: >-
      CREATE TABLE IF NOT EXISTS their_app (id int PRIMARY KEY);
      INSERT INTO their_app SELECT generate_series(1, 10) ON CONFLICT DO NOTHING
"""

THEIR_PLAYBOOK = """---
- name: Their database hosts
  hosts: databases
  gather_facts: false
  roles:
    - role: their_app
    - role: restorekeeper.postgresql.backups
      tags: [restorekeeper]
"""


def run(argv, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], env=dict(env), cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)


def recap(result: subprocess.CompletedProcess) -> dict:
    match = re.search(r"^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                      result.stdout, re.MULTILINE)
    assert match, result.stdout + result.stderr
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups())))


def test_their_repo_installs_the_built_tarball_and_mixes_their_role_with_ours(archived, ansible_env, tmp_path):
    # The artifact, built from this checkout as a release would be (while the cluster starts).
    build = subprocess.Popen(  # pylint: disable=consider-using-with
        [str(BIN / "ansible-galaxy"), "collection", "build", str(ROOT), "--output-path", str(tmp_path / "dist")],
        env=dict(ansible_env), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        arch = archived(18)
    finally:
        built_output = build.communicate(timeout=600)[0]
    assert build.returncode == 0, built_output
    db = arch.cluster
    (tarball,) = (tmp_path / "dist").glob("restorekeeper-postgresql-*.tar.gz")

    # Their repository: requirements.yml, ansible.cfg, their role, inventory, playbook.
    repo = tmp_path / "their-infra"
    (repo / "roles" / "their_app" / "tasks").mkdir(parents=True)
    (repo / "roles" / "their_app" / "tasks" / "main.yml").write_text(THEIR_ROLE)
    (repo / "site.yml").write_text(THEIR_PLAYBOOK)
    (repo / "requirements.yml").write_text("---\ncollections:\n  - name: %s\n    type: file\n" % tarball)
    (repo / "ansible.cfg").write_text("[defaults]\ncollections_path = ./collections\nroles_path = ./roles\n")
    host = {
        "ansible_connection": "local", "ansible_python_interpreter": host_python(),
        # sudo keeps pipelining on (su needs a terminal): one process per task, no module file copies.
        "ansible_become_method": "ansible.builtin.sudo" if shutil.which("sudo") else "ansible.builtin.su",
        "their_app_bindir": str(db.bindir), "their_app_socket": str(db.socket_dir), "their_app_port": db.port,
        "backups_config_path": str(arch.setup.config_path), "backups_prefix": str(arch.tool.prefix),
        "backups_os_user": db.os_user, "backups_os_group": db.os_user,
        "backups_scheduler": "cron", "backups_scheduler_check": False,
        "backups_cron_file": str(tmp_path / "cron.d" / "restorekeeper-backup-main"),
        "backups_systemd_dir": str(tmp_path / "systemd"), "backups_log_dir": str(tmp_path / "log"),
    }
    (tmp_path / "cron.d").mkdir()  # like /etc/cron.d, it exists before any role runs
    (repo / "inventory.json").write_text(json.dumps({"all": {"children": {"databases": {"hosts": {"localhost": host}}}}}))

    env = {key: value for key, value in ansible_env.items() if not key.startswith("ANSIBLE_COLLECTIONS")}
    env.update({"ANSIBLE_CONFIG": str(repo / "ansible.cfg"), "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
                "ANSIBLE_PIPELINING": "True"})
    installed = run([BIN / "ansible-galaxy", "collection", "install", "-r", "requirements.yml", "-p", "collections"],
                    env, repo)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    copy = repo / "collections" / "ansible_collections" / "restorekeeper" / "postgresql"
    assert json.loads((copy / "MANIFEST.json").read_text())["collection_info"]["name"] == "postgresql"
    assert not copy.is_symlink() and (copy / "roles" / "backups" / "tasks" / "main.yml").is_file()
    assert not (copy / ".venv").exists() and not (copy / ".git").exists()
    listed = run([BIN / "ansible-galaxy", "collection", "list", "restorekeeper.postgresql"], env, repo)
    assert str(repo / "collections" / "ansible_collections") in listed.stdout, listed.stdout + listed.stderr

    playbook = [BIN / "ansible-playbook", "-i", "inventory.json", "site.yml"]
    # A fresh host in check mode: nothing fails, nothing is made.
    checked = run(playbook + ["--check"], env, repo)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert arch.info()["backups"] == [] and list((tmp_path / "cron.d").iterdir()) == []

    first = run(playbook, env, repo)
    assert first.returncode == 0, first.stdout + first.stderr
    assert db.scalar("SELECT count(*) FROM their_app") == 10
    assert len(arch.info()["backups"]) == 1
    assert (tmp_path / "cron.d" / "restorekeeper-backup-main").is_file()

    again = run(playbook, env, repo)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout + again.stderr
