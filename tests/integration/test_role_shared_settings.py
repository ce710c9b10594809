"""The settings every role shares (role restorekeeper) and check mode with --diff (issue 17, item 5).

The shared variables (restorekeeper_cluster, restorekeeper_config_path,
restorekeeper_prefix, restorekeeper_bindir, ...) are set once and every
role's own variables derive from them; a role's own variable still wins.
Check mode with --diff on a fresh host shows the host's settings (the
restorekeeper configuration) and a summary of the engine install, never the
engine's source.
"""

from __future__ import annotations

import grp
import json
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import pytest
import yaml

from harness.ansible import host_python
from harness.paths import ensure_public_dir
from harness.tool import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ROLES = ["archiving", "backups", "drill", "monitoring", "pitr", "storage", "walstream"]
# The engine's source made ~15,000 lines. Now: a line per engine file copied (the
# loop's), a summary, and diffs of the configuration and the launcher only.
MAX_CHECK_DIFF_LINES = 300
MAX_DIFF_BODY_LINES = 80


def run_playbook(ansible_env: Mapping[str, str], work: Path, plays: list[dict[str, Any]],
                 host: Mapping[str, Any], *args: str) -> subprocess.CompletedProcess:
    """The plays on localhost with `host` as its inventory variables; JSON is YAML."""
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps({"all": {"children": {"databases": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": host_python(),
        "ansible_become_method": "ansible.builtin.su", **host}}}}}}))
    playbook = work / "playbook.yml"
    playbook.write_text(json.dumps(plays))
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), *args],
                          env=dict(ansible_env), capture_output=True, text=True, timeout=900, check=False)


def output(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def role_defaults(ansible_env: Mapping[str, str], work: Path, host: Mapping[str, Any]) -> dict[str, Any]:
    """Every role's variables as its defaults derive them for `host`, each role's
    argument_specs validated against them; no role task runs (when: false)."""
    names = sorted({name for role in ROLES for name in
                    yaml.safe_load((REPO_ROOT / "roles" / role / "defaults" / "main.yml").read_text())})
    result = work / "defaults.json"
    validations = [{"name": "argument_specs of role %s" % role,
                    "ansible.builtin.validate_argument_spec": {
                        "argument_spec": "{{ (lookup('ansible.builtin.file', '%s') | from_yaml)"
                                         ".argument_specs.main.options }}"
                                         % (REPO_ROOT / "roles" / role / "meta" / "argument_specs.yml")}}
                   for role in ROLES]
    plays = [{"hosts": "databases", "gather_facts": False,
              # In `roles:`, the roles' defaults (and their dependency restorekeeper's) are the play's.
              "roles": [{"role": "restorekeeper.postgresql." + role, "when": False} for role in ROLES],
              "post_tasks": validations + [{
                  # `vars` templates each default with the host's variables.
                  "name": "the derived values",
                  "ansible.builtin.copy": {"dest": str(result),
                                           "content": "{{ dict(%s | zip(%s | map('extract', vars))) | to_json }}"
                                           % (json.dumps(names), json.dumps(names))},
              }]}]
    # A skipped task still templates its delegate_to (role walstream's synchronous setting).
    run = run_playbook(ansible_env, work, plays, {"walstream_database_host": "localhost", **host})
    assert run.returncode == 0, output(run)
    return json.loads(result.read_text())


def test_role_variables_derive_from_the_shared_ones(ansible_env, tmp_path):
    plain = role_defaults(ansible_env, ensure_public_dir(tmp_path / "plain"), {})
    for role in ["archiving", "backups", "drill", "monitoring", "storage", "walstream"]:
        assert plain[role + "_cluster_name"] == "main"
        assert plain[role + "_config_path"] == "/etc/restorekeeper/main.conf"
        assert plain[role + "_os_user"] == "postgres"
    assert plain["pitr_config_path"] == "/etc/restorekeeper/main.conf"
    assert plain["archiving_login_port"] == 5432 and plain["archiving_prefix"] == "/opt/restorekeeper"

    shared = {"restorekeeper_cluster": "db1", "restorekeeper_prefix": "/srv/rk", "restorekeeper_bindir": "/usr/lib/pg/bin",
              "restorekeeper_port": 5433, "restorekeeper_os_user": "pgsql", "restorekeeper_os_group": "pgsql",
              "restorekeeper_repository_path": "/backup/repo", "restorekeeper_scheduler": "cron",
              "restorekeeper_scheduler_check": False, "restorekeeper_cron_dir": "/srv/cron.d",
              "restorekeeper_pgdata": "/srv/pg/data"}
    derived = role_defaults(ansible_env, ensure_public_dir(tmp_path / "shared"), shared)
    for role in ["archiving", "backups", "drill", "monitoring", "storage", "walstream"]:
        assert derived[role + "_cluster_name"] == "db1", role
        assert derived[role + "_config_path"] == "/etc/restorekeeper/db1.conf", role
        assert derived[role + "_os_user"] == "pgsql" and derived[role + "_os_group"] == "pgsql", role
    for role in ["archiving", "backups", "drill", "monitoring", "storage", "walstream"]:
        assert derived[role + "_prefix"] == "/srv/rk", role
    # pitr follows the cluster name now (it had /etc/restorekeeper/main.conf fixed).
    assert derived["pitr_config_path"] == "/etc/restorekeeper/db1.conf"
    assert derived["pitr_tool_path"] == "/srv/rk/bin/restorekeeper"
    assert derived["pitr_bindir"] == derived["archiving_pg_bindir"] == derived["walstream_pg_bindir"] == "/usr/lib/pg/bin"
    assert derived["pitr_live_pgdata"] == derived["archiving_pusher_pgdata"] == "/srv/pg/data"
    assert derived["archiving_login_port"] == derived["walstream_primary_port"] == 5433
    assert derived["archiving_repository_path"] == derived["walstream_repository_path"] == "/backup/repo"
    assert derived["archiving_psql"] == "/usr/lib/pg/bin/psql"
    assert derived["backups_runner_path"] == "/srv/rk/bin/restorekeeper-scheduled"
    assert derived["backups_log_dir"] == "/var/log/restorekeeper/db1"
    for name in ["backups_scheduler", "drill_scheduler", "monitoring_scheduler", "storage_ship_scheduler"]:
        assert derived[name] == "cron", name
    for name in ["backups_scheduler_check", "drill_scheduler_check", "monitoring_scheduler_check",
                 "storage_scheduler_check"]:
        assert derived[name] is False, name
    assert derived["backups_cron_file"] == "/srv/cron.d/restorekeeper-backup-db1"
    assert derived["storage_cron_file"] == "/srv/cron.d/restorekeeper-ship-db1"

    # A role's own variable wins for that role only; pointed at another cluster,
    # its configuration file is that cluster's (as before the shared settings).
    own = role_defaults(ansible_env, ensure_public_dir(tmp_path / "own"),
                        {**shared, "archiving_cluster_name": "other", "backups_prefix": "/opt/elsewhere"})
    assert own["archiving_cluster_name"] == "other"
    assert own["archiving_config_path"] == "/etc/restorekeeper/other.conf"
    assert own["backups_cluster_name"] == "db1" and own["backups_config_path"] == "/etc/restorekeeper/db1.conf"
    assert own["backups_prefix"] == "/opt/elsewhere" and own["drill_prefix"] == "/srv/rk"

    # The shared settings' own argument_specs (role restorekeeper) refuse a bad value before anything runs.
    bad = run_playbook(ansible_env, ensure_public_dir(tmp_path / "bad"),
                       [{"hosts": "databases", "gather_facts": False,
                         "roles": [{"role": "restorekeeper.postgresql.pitr"}]}],
                       {"restorekeeper_port": "not-a-port"})
    assert bad.returncode != 0
    assert "restorekeeper_port" in bad.stdout and "Validating arguments against arg spec" in bad.stdout


def test_check_diff_on_a_fresh_host_shows_settings_not_the_engine(
        cluster_factory, ansible_env, rk_session_dir, tmp_path):
    cluster = cluster_factory(18)
    base = ensure_public_dir(rk_session_dir / ("shared-%s" % tmp_path.name))
    group = grp.getgrgid(pwd.getpwnam(cluster.os_user).pw_gid).gr_name
    # Only shared settings, plus what this throwaway host needs (its socket, pg_ctl, no package install).
    host = {"restorekeeper_prefix": str(base / "opt"),
            "restorekeeper_config_path": str(base / "etc" / "main.conf"),
            "restorekeeper_repository_path": str(base / "repository"),
            "restorekeeper_bindir": str(cluster.bindir),
            "restorekeeper_port": cluster.port,
            "restorekeeper_os_user": cluster.os_user,
            "restorekeeper_os_group": group,
            "archiving_login_unix_socket": str(cluster.socket_dir),
            "archiving_service_manager": "pg_ctl",
            "archiving_pg_ctl_log": str(cluster.logfile),
            "archiving_install_host_packages": False}
    plays = [{"hosts": "databases", "gather_facts": False, "roles": [{"role": "restorekeeper.postgresql.archiving"}]}]

    planned = run_playbook(ansible_env, tmp_path, plays, host, "--check", "--diff")
    text = output(planned)
    assert planned.returncode == 0, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) < MAX_CHECK_DIFF_LINES, "%d lines:\n%s" % (len(lines), text)
    diff_body = [line for line in lines if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert len(diff_body) < MAX_DIFF_BODY_LINES, "\n".join(diff_body)
    # The install as a summary: the version and how many engine files change.
    engine_files = len(list((REPO_ROOT / "plugins" / "module_utils").glob("*/*.py"))) + 1  # and __init__.py
    assert "bin/restorekeeper-archive: new or changed" in text  # the pusher's script, summarised too
    assert "restorekeeper engine 0." in text and "%d of %d files new or changed, 0 removed" % (
        engine_files, engine_files) in text, text
    # The host's setting: the restorekeeper configuration file, as a diff.
    assert "+++ after: %s" % host["restorekeeper_config_path"] in text, text
    assert any(line.startswith("+") and host["restorekeeper_repository_path"] in line for line in lines), text
    # None of the engine's Python source.
    for marker in ["from __future__ import annotations", "def ", "import os"]:
        assert not any(line.startswith("+" + marker) for line in lines), marker
    assert not (base / "opt").exists() and not (base / "etc").exists()  # check mode wrote nothing

    applied = run_playbook(ansible_env, tmp_path, plays, host)
    assert applied.returncode == 0, output(applied)
    # Everything went where the shared settings say.
    assert (base / "opt" / "bin" / "restorekeeper").exists()
    assert "repository" in (base / "etc" / "main.conf").read_text()
    assert str(base / "etc" / "main.conf") in cluster.scalar("SHOW archive_command")

    again = run_playbook(ansible_env, tmp_path, plays, host, "--check", "--diff")
    assert again.returncode == 0, output(again)
    assert "0 of %d files new or changed, 0 removed" % engine_files in again.stdout, output(again)
    assert "changed=0" in again.stdout, output(again)
