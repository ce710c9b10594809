"""Run the collection's modules through ansible-playbook, as a user would.

How a module is run (the simplest route that gives the full JSON result with
no extra collection): a generated one-play playbook runs the module with
``register`` and ``ignore_errors``, then ``ansible.builtin.copy`` writes the
registered result as JSON to a file the test reads. ansible-core has no json
stdout callback of its own (it lives in ansible.posix) and its tree callback
is deprecated and drops ``failed``; a registered result keeps everything
(``failed``, ``msg``, ``diff``, ``warnings``). The inventory sets
ansible_connection=local and ansible_python_interpreter=HOST_PYTHON: the
managed host's interpreter is the system /usr/bin/python3 with only the
distribution packages the README lists for hosts, as in the field, never the
developers' virtualenv (which stays the controller: ansible-playbook). The
server's OS user can execute it, so ``become_user`` works. Secrets never go on
the command line: a 0600 extra-vars file holds them and the module args refer
to them by template.

Also here: the archived-server setup the module tests share.
"""

from __future__ import annotations

import functools
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import pytest

from .cluster import PgCluster
from .prerequisites import missing
from .repo import RepoSetup

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

# The managed host's interpreter in every test that runs a module or a role.
HOST_PYTHON = "/usr/bin/python3"
# What the README lists for hosts (Debian/Ubuntu): import name -> package.
HOST_PACKAGES = {"psycopg2": "python3-psycopg2", "zstandard": "python3-zstandard", "crc32c": "python3-crc32c",
                 "cryptography": "python3-cryptography", "boto3": "python3-boto3"}


@functools.lru_cache(maxsize=None)
def _host_python_lacks() -> tuple[str, ...]:
    """The README's host packages HOST_PYTHON cannot import (-I: no user site, no PYTHONPATH)."""
    lacking = []
    for module, package in HOST_PACKAGES.items():
        probe = subprocess.run([HOST_PYTHON, "-I", "-c", "import " + module], capture_output=True, check=False)
        if probe.returncode != 0:
            lacking.append(package)
    return tuple(lacking)


def host_python() -> str:
    """HOST_PYTHON, after checking it has the README's host packages (a missing
    prerequisite skip otherwise, a failure under make test)."""
    if not Path(HOST_PYTHON).exists():
        pytest.skip(missing("%s, the managed host's interpreter in tests: install python3" % HOST_PYTHON))
    lacking = _host_python_lacks()
    if lacking:
        pytest.skip(missing("%s cannot import the host packages the README lists: apt-get install -y %s"
                            % (HOST_PYTHON, " ".join(lacking))))
    return HOST_PYTHON


class ModuleRun:
    """One module invocation: its registered result and everything ansible printed."""

    def __init__(self, result: dict[str, Any], output: str) -> None:
        self.result = result
        self.output = output

    def __getitem__(self, key: str) -> Any:
        return self.result[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.result.get(key, default)

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed"))


def _playbook(module: str, args: dict[str, Any], result_file: Path, check: bool, diff: bool,
              become_user: Optional[str], module_defaults: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    task: dict[str, Any] = {
        "name": "run the module under test",
        module: args,
        "register": "rk_result",
        "ignore_errors": True,
        "check_mode": check,
        "diff": diff,
    }
    if become_user:
        # su: root needs no password for it, and sudo is not installed here.
        task.update(become=True, become_user=become_user, become_method="su")
    # JSON is YAML, so the playbook is written with json.dumps: no quoting questions.
    return [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "module_defaults": module_defaults or {},
            "tasks": [
                task,
                {
                    "name": "save the registered result",
                    "ansible.builtin.copy": {"content": "{{ rk_result | to_json }}", "dest": str(result_file)},
                    "check_mode": False,
                    "diff": False,
                },
            ],
        }
    ]


def run_module(
    ansible_env: Mapping[str, str],
    args: dict[str, Any],
    check: bool = False,
    diff: bool = False,
    secrets: Optional[dict[str, str]] = None,
    *,
    module: str,
    become_user: Optional[str] = None,
    module_defaults: Optional[dict[str, Any]] = None,
) -> ModuleRun:
    """Run `module` once on localhost; `secrets` become extra vars from a 0600 file,
    `become_user` runs it as that OS user (for example the cluster's owner),
    `module_defaults` is the play's (for example {"group/restorekeeper.postgresql.postgresql": {...}})."""
    with tempfile.TemporaryDirectory(prefix="rk-module-") as scratch:
        work = Path(scratch)
        inventory = work / "inventory"
        inventory.write_text(
            "localhost ansible_connection=local ansible_python_interpreter=%s\n" % host_python()
        )
        result_file = work / "result.json"
        playbook = work / "playbook.yml"
        plays = _playbook(module, args, result_file, check, diff, become_user, module_defaults)
        playbook.write_text(json.dumps(plays, indent=1))
        # -vvv: the secret checks of the tests see everything ansible can print.
        argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), "-vvv"]
        if secrets:
            varfile = work / "secrets.json"
            varfile.touch(mode=0o600)
            varfile.write_text(json.dumps(secrets))
            argv += ["-e", "@%s" % varfile]
        proc = subprocess.run(argv, env=dict(ansible_env), capture_output=True, text=True, timeout=600,
                              check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and result_file.exists(), "ansible-playbook failed (exit %d):\n%s" % (
            proc.returncode, output)
        result = json.loads(result_file.read_text())
    # A result must never be a Python traceback: the modules turn errors into messages.
    assert "Traceback" not in output, output
    assert "module_stderr" not in result, result
    return ModuleRun(result, output)


def start_archiving(cluster: PgCluster, setup: RepoSetup, tool_bin: Path,
                    conf: Optional[Mapping[str, Any]] = None) -> None:
    """Make a running cluster archive into setup's repository through the
    installed tool, restart it, and wait until a first segment has arrived."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import archive_command

    settings: dict[str, Any] = {"wal_level": "replica", "archive_mode": "on",
                                "archive_command": archive_command(str(tool_bin), str(setup.config_path))}
    settings.update(conf or {})
    for name, value in settings.items():
        cluster.execute("ALTER SYSTEM SET %s = %%s" % name, (value,))
    cluster.restart()
    cluster.wait_archived(cluster.switch_wal())


# ------------------------------------------------------- roles and playbooks
def write_inventory(path: Path, hosts: Mapping[str, Mapping[str, Any]],
                    others: Mapping[str, Mapping[str, Any]] = None) -> None:
    """Group `databases` (the playbook's default hosts), plus hosts outside it; JSON is YAML."""
    path.write_text(json.dumps({"all": {"hosts": dict(others or {}),
                                        "children": {"databases": {"hosts": dict(hosts)}}}}, indent=1))


def play(ansible_env: Mapping[str, str], inventory: Path, playbook: Path, *args: str,
         cwd: Path = None) -> subprocess.CompletedProcess:
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), *args]
    return subprocess.run(argv, env=dict(ansible_env), capture_output=True, text=True, timeout=900, check=False,
                          cwd=cwd)


def output(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def recap(run: subprocess.CompletedProcess, host: str) -> dict[str, int]:
    """The PLAY RECAP counters of one host: {"ok": 3, "changed": 1, ...}."""
    line = next(line for line in run.stdout.splitlines() if line.startswith(host + " ") and "ok=" in line)
    return {key: int(value) for key, value in (item.split("=") for item in line.split(":", 1)[1].split())}


def exec_start(service: Path) -> list[str]:
    """The argument list systemd would run: its quoting is shell-like for our
    double-quoted arguments, with % and $ doubled."""
    line = next(line for line in service.read_text().splitlines() if line.startswith("ExecStart="))
    return [arg.replace("%%", "%").replace("$$", "$") for arg in shlex.split(line[len("ExecStart="):])]
