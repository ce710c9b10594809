"""One set of packages where the work runs (issue 13, item 4).

The default install (tools/install_tool.py --packages distribution) runs the
host's own /usr/bin/python3 with the distribution's packages, the ones the
README's "Host prerequisites" lists, with no virtualenv: the on-host command
and the modules (ansible_python_interpreter=/usr/bin/python3) import the very
same packages. A module whose interpreter lacks one fails before it changes
anything, naming the distribution package.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import available_versions, install_tool
from harness import paths as harness_paths
from harness.ansible import start_archiving
from harness.tool import REPO_ROOT, InstalledTool

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SYSTEM_PYTHON = "/usr/bin/python3"
# Exactly what the README's Host prerequisites tells Debian/Ubuntu users to install.
README_PACKAGES = ["python3-psycopg2", "python3-zstandard", "python3-crc32c", "python3-cryptography", "python3-boto3"]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.fixture(scope="module")
def system_python() -> str:
    """The host's Python, which must carry the README's packages (make test installs them)."""
    probe = subprocess.run([SYSTEM_PYTHON, "-I", "-c", "import psycopg2, zstandard, crc32c, cryptography, boto3"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.fail("%s lacks the README's host prerequisites (%s). HINT: apt-get install -y %s"
                    % (SYSTEM_PYTHON, probe.stderr.strip().splitlines()[-1], " ".join(README_PACKAGES)))
    return SYSTEM_PYTHON


@pytest.fixture(scope="module")
def distribution_tool(system_python: str) -> InstalledTool:
    """tools/install_tool.py in its default mode, into a prefix of its own (the session's tool is pip mode)."""
    key = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:10]
    prefix = harness_paths.ensure_public_dir(harness_paths.test_root() / "tools") / ("tool-distribution-%s" % key)
    return install_tool(prefix, packages="distribution", python=system_python)


def test_the_default_install_runs_the_hosts_python_without_a_virtualenv(distribution_tool, system_python) -> None:
    lines = distribution_tool.bin.read_text().splitlines()
    assert lines[0] == "#!%s -IS" % system_python
    assert lines[2] == 'sys.path[0:0] = ["%s/lib"]' % distribution_tool.prefix
    assert "/usr/lib/python3/dist-packages" in json.loads(lines[3].split("+=", 1)[1])
    assert not (distribution_tool.prefix / "pyvenv.cfg").exists()
    assert not (distribution_tool.prefix / "bin" / "python").exists()
    # The default of the installer is this mode.
    rerun = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "install_tool.py"),
                            "--prefix", str(distribution_tool.prefix)], capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert distribution_tool.bin.read_text().splitlines()[0] == "#!%s -IS" % system_python


def test_wal_round_trip_through_the_distribution_install(
        distribution_tool, cluster_factory, repo_config, tmp_path) -> None:
    cluster = cluster_factory(version=min(available_versions()))
    helped = cluster.run_as_owner([distribution_tool.bin, "--help"])
    assert helped.returncode == 0 and "wal-push" in helped.stdout, helped.stderr
    setup = repo_config(cluster, initialise=False)  # zstd: the distribution's python3-zstandard compresses
    created = cluster.run_as_owner([distribution_tool.bin, "repo-create", "--config", setup.config_path])
    assert created.returncode == 0, created.stderr
    start_archiving(cluster, setup, distribution_tool.bin)
    segment = cluster.switch_wal()
    cluster.wait_archived(segment)
    assert cluster.scalar("select failed_count from pg_stat_archiver") == 0
    listed = cluster.run_as_owner([distribution_tool.bin, "wal-list", "--config", setup.config_path])
    assert listed.returncode == 0 and segment in listed.stdout, listed.stdout + listed.stderr
    fetched = Path(setup.repo_path.parent) / "fetched"
    result = cluster.run_as_owner([distribution_tool.bin, "wal-fetch", "--config", setup.config_path,
                                   segment, fetched])
    assert result.returncode == 0, result.stderr
    assert fetched.stat().st_size == 16 * 1024 * 1024
    original = cluster.pg_wal_dir / segment
    if original.exists():  # not yet recycled: byte for byte
        assert fetched.read_bytes() == original.read_bytes()


def run_tool_config(interpreter: str, path: Path, ansible_env, work: Path) -> dict[str, Any]:
    """The tool_config module once, with `interpreter` as the managed host's Python."""
    inventory = work / "inventory"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % interpreter)
    result_file = work / "result.json"
    playbook = work / "playbook.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"restorekeeper.postgresql.tool_config": {
                "path": str(path), "cluster_name": "main", "repository_path": str(work / "repository"),
                "archive_compression": "zstd", "owner": "root", "group": "root"},
             "register": "rk_result", "ignore_errors": True},
            {"ansible.builtin.copy": {"content": "{{ rk_result | to_json }}", "dest": str(result_file)}},
        ],
    }]))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)], env=dict(ansible_env),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and result_file.exists(), proc.stdout + proc.stderr
    return json.loads(result_file.read_text())


def test_a_module_lacking_a_package_fails_first_naming_the_distribution_package(
        ansible_env, system_python, tmp_path) -> None:
    # A Python without the packages (a bare venv), as on a host where nobody installed them.
    bare = tmp_path / "bare"
    subprocess.run([system_python, "-m", "venv", "--without-pip", str(bare)], check=True)
    config = tmp_path / "etc" / "main.conf"
    config.parent.mkdir()
    failed = run_tool_config(str(bare / "bin" / "python"), config, ansible_env, tmp_path)
    assert failed["failed"] and failed["changed"] is False
    assert "module tool_config needs the Python module zstandard" in failed["msg"]
    assert "apt-get install python3-zstandard" in failed["msg"] and "dnf install python3-zstandard" in failed["msg"]
    assert str(bare / "bin" / "python") in failed["msg"]
    assert "Traceback" not in json.dumps(failed)
    assert not config.exists()  # nothing written
    # The host's Python with the README's packages runs the same module.
    written = run_tool_config(system_python, config, ansible_env, tmp_path)
    assert not written.get("failed") and written["changed"], written
    assert "compression = zstd" in config.read_text()


ROLE_INSTALL_PLAYBOOK = [{"hosts": "localhost", "gather_facts": False,
                          "roles": [{"role": "restorekeeper.postgresql.archiving"}]}]


def run_role_install(variables: dict[str, Any], ansible_env, work: Path) -> subprocess.CompletedProcess:
    """Role archiving's install tasks only (tag archiving_install), on localhost as root."""
    playbook = work / "archiving.yml"
    playbook.write_text(json.dumps(ROLE_INSTALL_PLAYBOOK))
    extra = work / "vars.json"
    extra.write_text(json.dumps({"ansible_connection": "local", "ansible_become_method": "ansible.builtin.su",
                                 **variables}))
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(playbook), "-e", "@%s" % extra,
                           "--tags", "archiving_install"],
                          env=dict(ansible_env), capture_output=True, text=True, timeout=600, check=False)


def test_role_installs_what_the_installer_installs(ansible_env, system_python, tmp_path) -> None:
    prefix = tmp_path / "opt"
    # The host's Python runs the modules too; packages are only checked (make test installed them).
    variables = {"ansible_python_interpreter": system_python, "archiving_prefix": str(prefix),
                 "archiving_install_host_packages": False}
    first = run_role_install(variables, ansible_env, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    launcher = prefix / "bin" / "restorekeeper"
    by_role = launcher.read_text()
    assert by_role.startswith("#!%s -IS\n" % system_python) and not (prefix / "pyvenv.cfg").exists()
    assert subprocess.run([str(launcher), "--help"], capture_output=True, check=False).returncode == 0
    script = prefix / "bin" / "restorekeeper-archive"  # the shell archive_command, next to the launcher
    shipped = (REPO_ROOT / "roles" / "archiving" / "files" / "restorekeeper-archive").read_bytes()
    assert script.read_bytes() == shipped and os.access(script, os.X_OK)
    script.unlink()
    # tools/install_tool.py writes the very same launcher (and script) for that prefix.
    subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "install_tool.py"), "--prefix", str(prefix),
                    "--python", system_python], capture_output=True, check=True)
    assert launcher.read_text() == by_role  # so a second role run leaves it alone too
    assert script.read_bytes() == shipped and os.access(script, os.X_OK)


def test_role_names_the_missing_packages_before_writing_the_launcher(ansible_env, system_python, tmp_path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([system_python, "-m", "venv", "--without-pip", str(bare)], check=True)
    prefix = tmp_path / "opt"
    failed = run_role_install({"ansible_python_interpreter": system_python, "archiving_prefix": str(prefix),
                               "archiving_python": str(bare / "bin" / "python"),
                               "archiving_install_host_packages": False}, ansible_env, tmp_path)
    assert failed.returncode != 0
    assert "restorekeeper on this host needs the Python modules psycopg2" in failed.stdout, failed.stdout
    assert "apt-get install python3-psycopg2 python3-zstandard python3-crc32c python3-cryptography" in failed.stdout
    assert not (prefix / "bin" / "restorekeeper").exists()


def test_scheduled_run_wrapper_runs_with_the_default_install(ansible_env, system_python, tmp_path) -> None:
    """Role backups' restorekeeper-scheduled runs the host's Python when the tool has no virtualenv
    (archiving_tool_packages=distribution, the default), and the virtualenv's when it has one."""
    prefix = tmp_path / "opt"
    installed = run_role_install({"ansible_python_interpreter": system_python, "archiving_prefix": str(prefix),
                                  "archiving_install_host_packages": False}, ansible_env, tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    playbook = tmp_path / "backups-install.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Role backups' install tasks only", "ansible.builtin.include_role": {
            "name": "restorekeeper.postgresql.backups", "tasks_from": "install"}}]}]))
    extra = tmp_path / "backups-vars.json"
    extra.write_text(json.dumps({"ansible_connection": "local", "ansible_python_interpreter": system_python,
                                 "backups_prefix": str(prefix), "backups_python": system_python,
                                 "backups_log_dir": str(tmp_path / "log" / "restorekeeper"),
                                 "backups_os_user": "root", "backups_os_group": "root"}))
    ran = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(playbook), "-e", "@%s" % extra],
                         env=dict(ansible_env), capture_output=True, text=True, timeout=600, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    wrapper = prefix / "bin" / "restorekeeper-scheduled"
    assert wrapper.read_text().startswith("#!%s -I\n" % system_python) and not (prefix / "bin" / "python").exists()
    log = tmp_path / "log" / "restorekeeper" / "probe.log"
    probe = subprocess.run([str(wrapper), "--name", "probe", "--log", str(log), "--",
                            str(prefix / "bin" / "restorekeeper"), "--version"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "finished: exit 0" in log.read_text()
