"""Role storage through playbooks/storage.yml: a throwaway archived cluster,
a second disk and an encrypted Object Lock bucket on moto's S3 server.

ansible-playbook runs the collection's playbook against localhost (connection
local, become with su to the server's OS user). There is no systemd as PID 1
and no cron daemon here, so the role runs with storage_scheduler_check=false
and writes the unit / the cron file into temporary directories; the tests
run the exact command written there as the server's OS user.
"""

from __future__ import annotations

import base64
import grp
import itertools
import json
import os
import pwd
import re
import shlex
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Mapping

import pytest

from harness import make_user_dir, run_as
from harness.ansible import host_python, run_module
from harness.paths import ensure_public_dir
from harness.archived import Archived, pgbench_init
from harness.s3 import make_bucket

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "storage.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
KEY = base64.b64encode(b"storage-role-test-key".ljust(32, b"k")).decode()
_numbers = itertools.count(1)


def write_inventory(path: Path, variables: Mapping[str, Any]) -> None:
    """Group `databases` (the playbook's default hosts) with localhost; JSON is YAML.
    The file holds test credentials, so it is private like a vault would be."""
    host = {"ansible_connection": "local", "ansible_python_interpreter": host_python(),
            "ansible_become_method": "ansible.builtin.su", **variables}
    path.touch(mode=0o600)
    path.write_text(json.dumps({"all": {"children": {"databases": {"hosts": {"localhost": host}}}}}, indent=1))


def converge(ansible_env: Mapping[str, str], inventory: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), "-v", *args]
    return subprocess.run(argv, env=dict(ansible_env), capture_output=True, text=True, timeout=900, check=False)


def output(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def changed_count(run: subprocess.CompletedProcess) -> int:
    match = re.search(r"^localhost\s+:.*\bchanged=(\d+)", run.stdout, re.MULTILINE)
    assert match, output(run)
    return int(match.group(1))


class Layout:
    """Where one test's copies, keys and units live (under a world-traversable base)."""

    def __init__(self, arch: Archived, base: Path) -> None:
        user = arch.cluster.os_user
        self.arch = arch
        self.base = base
        self.second = make_user_dir(base / "second-disk", user, 0o700)
        self.units = ensure_public_dir(base / "systemd")
        self.cron = base / "restorekeeper-ship-main"
        self.key_file = ensure_public_dir(base / "keys") / "main.keys"
        self.drop_in = Path(str(arch.setup.config_path) + ".d") / "copies.conf"
        self.role_vars: Dict[str, Any] = {
            "storage_cluster_name": arch.setup.cluster_name,
            "storage_config_path": str(arch.setup.config_path),
            "storage_prefix": str(arch.tool.prefix),
            "storage_os_user": user,
            "storage_os_group": grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name,
            "storage_scheduler_check": False,
            "storage_systemd_dir": str(self.units),
            "storage_cron_file": str(self.cron),
            "storage_ship_lock_file": str(make_user_dir(base / "lock", user, 0o700) / "ship.lock"),
            "storage_encryption_key_file": str(self.key_file),
            "storage_encryption_keys": [{"id": "2026-11", "key": KEY}],
        }

    def second_disk(self, **extra: Any) -> Dict[str, Any]:
        copy = {"name": "second", "type": "posix", "path": str(self.second), "medium": "disk",
                "failure_domain": "second-disk"}
        copy.update(extra)
        return copy

    def offsite(self, endpoint, bucket: str, **extra: Any) -> Dict[str, Any]:
        copy = {"name": "offsite", "type": "s3", "bucket": bucket, "path": "db1", "endpoint_url": endpoint.url,
                "region": "us-east-1", "path_style": True, "access_key_id": endpoint.access_key_id,
                "secret_access_key": endpoint.secret_access_key, "max_attempts": 2, "medium": "object-store",
                "offsite": True, "immutable": True, "object_lock_mode": "GOVERNANCE", "object_lock_days": 2,
                "encryption_key_file": str(self.key_file)}
        copy.update(extra)
        return copy


@pytest.fixture
def layout(archived, rk_session_dir):
    def make(version: int = 18) -> Layout:
        arch = archived(version)
        return Layout(arch, ensure_public_dir(rk_session_dir / ("storage-%d" % next(_numbers))))

    return make


def unit_values(path: Path, key: str) -> List[str]:
    return [line.split("=", 1)[1] for line in path.read_text().splitlines() if line.startswith(key + "=")]


def test_compliant_layout_ships_reports_holdings_and_is_idempotent(layout, s3_endpoint, ansible_env, tmp_path):
    lay = layout()
    arch = lay.arch
    pgbench_init(arch.cluster)
    backup = arch.backup()
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    bucket = make_bucket(s3_endpoint, lock=True)
    inventory = tmp_path / "inventory.json"
    write_inventory(inventory, {**lay.role_vars, "storage_ship_scheduler": "systemd",
                                "storage_copies": [lay.second_disk(), lay.offsite(s3_endpoint, bucket)]})
    secrets = (s3_endpoint.secret_access_key, KEY)

    # Check mode first: it judges the layout and changes nothing.
    planned = converge(ansible_env, inventory, "--check", "--diff")
    assert planned.returncode == 0, output(planned)
    assert "meets the rule" in planned.stdout
    assert not lay.drop_in.exists() and not lay.key_file.exists() and list(lay.units.iterdir()) == []
    assert list(lay.second.iterdir()) == []

    run = converge(ansible_env, inventory, "--diff")
    assert run.returncode == 0, output(run)
    assert "meets the rule (3 copies, 2 media, 1 offsite): 3 independent copies (repository, offsite, second" in run.stdout
    assert "GOVERNANCE" in run.stdout  # the weaker retention mode is pointed out
    for text in (planned.stdout, planned.stderr, run.stdout, run.stderr):
        for secret in secrets:
            assert secret not in text

    # The key file and the drop-in: private to the server's OS user.
    for path in (lay.key_file, lay.drop_in):
        st = os.stat(path)
        assert (pwd.getpwuid(st.st_uid).pw_name, st.st_mode & 0o777) == (arch.cluster.os_user, 0o600), path
    assert lay.key_file.read_text().splitlines()[1:] == ["2026-11 %s" % KEY]
    assert "[copy offsite]" in lay.drop_in.read_text() and "[copy second]" in lay.drop_in.read_text()

    # The service unit, rendered where systemd would read it.
    unit = lay.units / "restorekeeper-ship@main.service"
    assert sorted(p.name for p in lay.units.iterdir()) == [unit.name]
    exec_start = shlex.split(unit_values(unit, "ExecStart")[0])
    assert exec_start == [str(arch.tool.bin), "ship", "--config", str(arch.setup.config_path), "--interval", "10"]
    assert unit_values(unit, "User") == [arch.cluster.os_user] and unit_values(unit, "Restart") == ["always"]
    assert not lay.cron.exists()
    assert "systemd does not run this host" in run.stdout

    # The one-shot ship filled both copies; backup_info says who holds what.
    assert (lay.second / "restorekeeper.repo").exists()
    info = run_module(ansible_env, {"config_path": str(arch.setup.config_path), "server_status": False},
                      module="restorekeeper.postgresql.backup_info", become_user=arch.cluster.os_user)
    assert not info.failed, info.result
    copies = {c["name"]: c for c in info["copies"]}
    assert set(copies) == {"second", "offsite"}
    for copy in copies.values():
        assert copy["reachable"] and copy["lag_seconds"] == 0 and copy["wal_files_missing"] == 0
        assert copy["backups_held"] == [backup["label"]]
    assert copies["offsite"]["encrypted"] and copies["offsite"]["immutable"]
    held = {b["label"]: b for b in info["backups"]}[backup["label"]]
    assert sorted(held["held_by"]) == ["offsite", "second"] and sorted(held["restorable_from"]) == ["offsite", "second"]
    assert all(sorted(t["held_by"]) == ["offsite", "second"] and t["missing_by_copy"] == {}
               for t in info["wal"]["timelines"])

    # New WAL that was not shipped yet shows as a lag of the copies.
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    info = run_module(ansible_env, {"config_path": str(arch.setup.config_path), "server_status": False},
                      module="restorekeeper.postgresql.backup_info", become_user=arch.cluster.os_user)
    lagging = {c["name"]: c for c in info["copies"]}
    assert all(c["wal_files_missing"] >= 1 and c["lag_seconds"] >= 0 for c in lagging.values())
    assert all(t["held_by"] == [] or t["missing_by_copy"] == {} for t in info["wal"]["timelines"])
    assert any(t["missing_by_copy"] for t in info["wal"]["timelines"])

    # Running the unit's command once (as systemd would, without --interval) catches up.
    shipped = run_as(arch.cluster.os_user, exec_start[:4] + ["--once"], timeout=300)
    assert shipped.returncode == 0, shipped.stderr

    # Restore planning and a drill from the offsite copy alone, with the repository gone.
    pgdata = str(make_user_dir(lay.base / "restore-slot", arch.cluster.os_user, 0o700) / "pgdata")
    aside = arch.setup.repo_path.with_name(arch.setup.repo_path.name + ".gone")
    arch.setup.repo_path.rename(aside)
    try:
        plan = run_module(ansible_env, {"config_path": str(arch.setup.config_path), "source": "offsite",
                                        "pgdata": pgdata},
                          module="restorekeeper.postgresql.restore", check=True, become_user=arch.cluster.os_user)
        assert not plan.failed, plan.result
        assert plan["backup"] == backup["label"]
        without = run_module(ansible_env, {"config_path": str(arch.setup.config_path),
                                           "pgdata": pgdata},
                             module="restorekeeper.postgresql.restore", check=True, become_user=arch.cluster.os_user)
        assert without.failed
        # And a whole drill from the offsite copy alone: restored, started, checked, removed.
        # A short path: the scratch cluster's Unix socket lives under it (at most 107 bytes).
        home = make_user_dir(lay.base.parent / ("d%d" % next(_numbers)), arch.cluster.os_user, 0o750)
        drill = run_module(ansible_env, {"config_path": str(arch.setup.config_path), "source": "offsite",
                                         "tool_path": str(arch.tool.bin), "mode": "latest", "row_counts": False,
                                         "scratch_dir": str(make_user_dir(home / "scratch", arch.cluster.os_user)),
                                         "report_dir": str(home / "reports"), "fail_on_drill_failure": False},
                           module="restorekeeper.postgresql.restore_drill", become_user=arch.cluster.os_user)
        assert not drill.failed, drill.result
        assert drill["result"] == "pass", json.dumps(drill["checks"], indent=1)
        assert drill["backup"] == backup["label"]
        # Its record is not written into the missing repository's place.
        assert not drill["record"]["stored"] and str(arch.setup.repo_path) in drill["record"]["error"]
        assert not arch.setup.repo_path.exists()
    finally:
        aside.rename(arch.setup.repo_path)

    # A second run changes nothing.
    again = converge(ansible_env, inventory)
    assert again.returncode == 0, output(again)
    assert changed_count(again) == 0, output(again)


def test_weak_layout_fails_the_play_naming_what_is_missing(layout, ansible_env, tmp_path):
    lay = layout()
    arch = lay.arch
    # A "second" copy in the repository's own directory, and nothing offsite.
    inventory = tmp_path / "inventory.json"
    same_path = lay.second_disk(name="mirror", path=str(arch.setup.repo_path) + "/", failure_domain="other-disk")
    write_inventory(inventory, {**lay.role_vars, "storage_copies": [lay.second_disk(), same_path]})
    run = converge(ansible_env, inventory)
    assert run.returncode != 0
    text = output(run)
    assert "breaks the rule (3 copies, 2 media, 1 offsite" in text
    assert "2 independent copies (repository, second), 3 needed" in text
    assert "mirror shares a failure domain with repository: the same directory (%s)" % arch.setup.repo_path in text
    assert "1 medium (disk)" in text and "0 offsite copies, 1 needed" in text
    # Judged before writing: nothing reached the host but the keys.
    assert not lay.drop_in.exists() and list(lay.units.iterdir()) == [] and not lay.cron.exists()
    assert list(lay.second.iterdir()) == []

    # Report only: the play goes on, and says the same.
    write_inventory(inventory, {**lay.role_vars, "storage_policy_enforce": False, "storage_ship": False,
                                "storage_copies": [lay.second_disk(), same_path]})
    reported = converge(ansible_env, inventory)
    assert reported.returncode == 0, output(reported)
    assert "0 offsite copies, 1 needed" in reported.stdout


def test_cron_ships_once_a_minute_where_systemd_is_absent(layout, ansible_env, tmp_path):
    lay = layout()
    arch = lay.arch
    # Tape at another site is as good a second medium and offsite copy as a bucket.
    vault = make_user_dir(lay.base / "dr-site-tape", arch.cluster.os_user, 0o700)
    tape = {"name": "tape", "type": "posix", "path": str(vault), "medium": "tape", "offsite": True,
            "failure_domain": "dr-site", "encryption_key_file": str(lay.key_file)}
    inventory = tmp_path / "inventory.json"
    write_inventory(inventory, {**lay.role_vars, "storage_ship_scheduler": "auto", "storage_ship_now": False,
                                "storage_copies": [lay.second_disk(), tape]})
    run = converge(ansible_env, inventory)
    assert run.returncode == 0, output(run)
    assert "no copy is immutable" in run.stdout
    assert list(lay.units.iterdir()) == []
    lines = [line for line in lay.cron.read_text().splitlines() if line and not line.startswith(("#", "SHELL", "PATH"))]
    assert len(lines) == 1
    fields = lines[0].split()
    assert fields[:6] == ["*", "*", "*", "*", "*", arch.cluster.os_user]
    command = lines[0].split(None, 6)[6]
    assert command.endswith(" >/dev/null") and command.startswith("flock -n %s " % (lay.base / "lock" / "ship.lock"))
    # The cron line, as cron would run it: through /bin/sh as the OS user.
    result = run_as(arch.cluster.os_user, ["/bin/sh", "-c", command], timeout=300)
    assert result.returncode == 0, result.stderr
    assert (vault / "restorekeeper.repo").exists() and (lay.second / "restorekeeper.repo").exists()

    # Dropping every copy removes the drop-in and the cron job; nothing is deleted from the copies.
    write_inventory(inventory, {**lay.role_vars, "storage_policy_enforce": False, "storage_copies": []})
    emptied = converge(ansible_env, inventory)
    assert emptied.returncode == 0, output(emptied)
    assert not lay.drop_in.exists() and not lay.cron.exists()
    assert (vault / "restorekeeper.repo").exists()


def test_modules_probe_object_lock_and_mask_secrets(s3_endpoint, ansible_env, tmp_path):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import render_config

    config = tmp_path / "main.conf"
    config.write_text(render_config("main", str(tmp_path / "repo")))
    config.chmod(0o600)
    me = pwd.getpwuid(os.getuid()).pw_name
    owner = {"owner": me, "group": grp.getgrgid(os.getgid()).gr_name}
    second = {"name": "second", "path": str(tmp_path / "second"), "failure_domain": "second-disk"}
    unlocked = make_bucket(s3_endpoint, lock=False)
    offsite = {"name": "offsite", "type": "s3", "bucket": unlocked, "endpoint_url": s3_endpoint.url,
               "region": "us-east-1", "path_style": True, "access_key_id": s3_endpoint.access_key_id,
               "secret_access_key": s3_endpoint.secret_access_key, "offsite": True, "allow_plaintext": True,
               "immutable": True, "object_lock_mode": "COMPLIANCE", "object_lock_days": 1}
    policy = partial(run_module, ansible_env, module="restorekeeper.postgresql.storage_policy")

    refused = policy({"config_path": str(config), "copies": [second, offsite]})
    assert refused.failed and refused["compliant"] is False and refused["changed"] is False
    assert "offsite is declared immutable but its bucket does not have Object Lock enabled" in refused["msg"]
    locked = dict(offsite, bucket=make_bucket(s3_endpoint, lock=True))
    accepted = policy({"config_path": str(config), "copies": [second, locked]})
    assert not accepted.failed and accepted["compliant"] and accepted["immutable"] == ["offsite"]
    assert any("offsite is offsite but not encrypted" in w for w in accepted.get("warnings", []))

    # The drop-in: check mode writes nothing; the diff and the result never show the secret.
    copies = partial(run_module, ansible_env, module="restorekeeper.postgresql.storage_copies")
    args = {"config_path": str(config), "copies": [second, locked], **owner}
    planned = copies(args, check=True, diff=True)
    drop_in = tmp_path / "main.conf.d" / "copies.conf"
    assert planned["changed"] and not drop_in.exists()
    written = copies(args, diff=True)
    assert written["changed"] and (drop_in.stat().st_mode & 0o777) == 0o600
    assert "secret_access_key = %s" % s3_endpoint.secret_access_key in drop_in.read_text()
    assert "secret_access_key = ********" in written["diff"]["after"]
    rotated = copies(dict(args, copies=[second, dict(locked, secret_access_key="another-secret-value")]), diff=True)
    assert "secret_access_key = ******** (changed)" in rotated["diff"]["after"]
    for run in (refused, accepted, planned, written, rotated):
        assert s3_endpoint.secret_access_key not in run.output + json.dumps(run.result)
        assert "another-secret-value" not in run.output + json.dumps(run.result)
    assert policy({"config_path": str(config)})["compliant"]  # the written drop-in, judged as it is
    assert not copies(dict(args, copies=[second, dict(locked, secret_access_key="another-secret-value")]))["changed"]
