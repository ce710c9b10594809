"""An archiving cluster and the command-line steps the integration tests share.

`Archived` (made by the `archived` fixture of tests/integration/conftest.py) is
a running cluster archiving into a fresh repository with the installed tool;
the functions here drive `restorekeeper` on it (backup, restore, drill) and
give it data and moments to recover to. They live in the harness so that no
test file imports another.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Dict

from .cluster import PgCluster
from .repo import RepoSetup
from .tool import InstalledTool


class Archived:
    """A running cluster archiving into a fresh repository."""

    def __init__(self, cluster: PgCluster, setup: RepoSetup, tool: InstalledTool) -> None:
        self.cluster = cluster
        self.setup = setup
        self.tool = tool

    def rk(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = self.cluster.run_as_owner([self.tool.bin, args[0], "--config", self.setup.config_path, *args[1:]])
        if check and result.returncode != 0:
            raise AssertionError("restorekeeper %s failed (%d): %s" % (args[0], result.returncode, result.stderr))
        return result

    def backup(self, *args: str) -> Dict[str, Any]:
        return json.loads(self.rk("backup", "--json", *args).stdout)

    def info(self) -> Dict[str, Any]:
        return json.loads(self.rk("info", "--json").stdout)

    def backup_dir(self, label: str) -> Path:
        return self.setup.repo_path / self.setup.cluster_name / "backup" / label


# ------------------------------------------------------------------- data
def pgbench_init(cluster: PgCluster, scale: int = 1) -> None:
    result = cluster.run_as_owner([cluster.bin("pgbench"), "-i", "-q", "-s", str(scale)])
    assert result.returncode == 0, result.stderr


def commit_time(cluster: PgCluster) -> str:
    """A moment strictly between the last commit and the next one."""
    time.sleep(0.05)
    moment = cluster.scalar("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    time.sleep(0.05)
    return str(moment)


def archive_everything(cluster: PgCluster) -> None:
    cluster.wait_archived(cluster.switch_wal())


def corrupt_wal_segment(arch: Archived, name: str) -> None:
    """Flip one byte in the middle of an archived WAL segment of cluster "main"."""
    path = arch.setup.repo_path / "main" / "wal" / name[:16] / name
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def seeded(archived: Any, version: int) -> Archived:
    """An archived cluster with pgbench tables and `accounts`, a backup, then a change after it."""
    arch = archived(version)
    pgbench_init(arch.cluster)
    arch.cluster.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
    arch.cluster.execute("INSERT INTO accounts SELECT g, g * 10 FROM generate_series(1, 500) g")
    arch.backup()
    arch.cluster.execute("UPDATE accounts SET balance = balance + 1 WHERE id <= 100")
    return arch


def accident(arch: Archived) -> str:
    """1200 rows, a backup in between, then DELETE without WHERE; returns a moment just before it."""
    db = arch.cluster
    db.execute("CREATE TABLE accounts (id int PRIMARY KEY, note text)")
    db.execute("INSERT INTO accounts SELECT g, 'early' FROM generate_series(1, 1000) g")
    arch.backup()
    db.execute("INSERT INTO accounts SELECT g, 'later' FROM generate_series(1001, 1200) g")
    before = commit_time(db)
    db.execute("DELETE FROM accounts")
    db.execute("CREATE TABLE after_accident AS SELECT 1 AS x")
    archive_everything(db)
    return before


# ---------------------------------------------------------------- commands
def restore(arch: Archived, slot: PgCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    argv = [arch.tool.bin, "restore", "--config", arch.setup.config_path, "--pgdata", slot.datadir,
            "--port", str(slot.port), "--socket-dir", str(slot.socket_dir), "--json", *args]
    result = arch.cluster.run_as_owner(argv)
    if check and result.returncode != 0:
        raise AssertionError("restore failed (%d): %s" % (result.returncode, result.stderr))
    return result


def restored(arch: Archived, slot: PgCluster, *args: str) -> Dict[str, Any]:
    return json.loads(restore(arch, slot, *args).stdout)


def drill(arch: Archived, scratch: Path, *args: str) -> subprocess.CompletedProcess:
    return arch.cluster.run_as_owner([arch.tool.bin, "drill", "--config", arch.setup.config_path,
                                      "--scratch-dir", scratch, "--json", *args])


def report_of(result: subprocess.CompletedProcess) -> Dict[str, Any]:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def check(report: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    """The drill report's check whose name starts with `prefix`."""
    return next(c for c in report["checks"] if c["name"].startswith(prefix))
