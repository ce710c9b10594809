"""A pgbench database on a throwaway PostgreSQL 18 that archives its WAL into
a fresh repository through the installed tool, as production does: the
configuration file, the repository and every `restorekeeper` run belong to
the server's OS user. Shared by the backup and restore parts of the bench.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from harness import PgCluster, make_user_dir, wait_until
from harness.runas import chown_to

from .measure import Tool

PG_VERSION = 18
CLUSTER_NAME = "bench"
SERVER_SETTINGS = {
    "wal_level": "replica",
    "archive_mode": True,
    # Incremental backups need WAL summaries (PostgreSQL 17+).
    "summarize_wal": True,
    "shared_buffers": "256MB",
    # Checkpoints only where the bench asks for them (before each timed run).
    "max_wal_size": "8GB",
    "checkpoint_timeout": "1h",
}


class BenchFailed(RuntimeError):
    """A step the bench needs did not work: it cannot measure."""


class ArchivedCluster:
    """The server, its repository and the installed `restorekeeper`."""

    def __init__(self, cluster: PgCluster, tool: Tool, config: Path, repository: Path) -> None:
        self.cluster = cluster
        self.tool = tool
        self.config = config
        self.repository = repository
        self.extra_env: Dict[str, str] = {}  # e.g. a private TMPDIR for the next timed run (large profile)

    @classmethod
    def create(cls, tool: Tool, work: Path, version: int = PG_VERSION, name: str = "pg-primary",
               also_archive: Optional[Callable[[PgCluster], str]] = None) -> "ArchivedCluster":
        """initdb, a 0600 config with a [postgres] section, repo-create, archiving on, started.

        also_archive(cluster) gives a second archive command (pgBackRest's) run after ours
        succeeded, so both repositories receive every segment; archiving is not what the
        backup and restore parts time."""
        from restorekeeper_engine.config.config import PostgresConfig, render_config
        from restorekeeper_engine.archive.walarchive import archive_command

        cluster = PgCluster.create(version, work / name)
        base = make_user_dir(work / (name + "-repo"), cluster.os_user, 0o755)
        repository = make_user_dir(base / "repository", cluster.os_user, 0o700)
        config = base / "restorekeeper.conf"
        postgres = PostgresConfig(bindir=str(cluster.bindir), host=str(cluster.socket_dir), port=cluster.port,
                                  user=cluster.superuser, database="postgres")
        config.write_text(render_config(CLUSTER_NAME, str(repository), postgres=postgres), encoding="utf-8")
        os.chmod(config, 0o600)
        chown_to(config, cluster.os_user)
        made = cls(cluster, tool, config, repository)
        made.rk("repo-create")
        command = archive_command(str(tool.launcher), str(config))
        if also_archive is not None:
            command += " && " + also_archive(cluster)
        settings = {**SERVER_SETTINGS, "archive_command": command}
        if version < 17:
            del settings["summarize_wal"]
        cluster.append_conf(settings, "bench: archiving through restorekeeper")
        cluster.start()
        return made

    # ------------------------------------------------------------ the tool
    def rk(self, *args: str) -> subprocess.CompletedProcess:
        """`restorekeeper COMMAND --config C ARGS...` as the server's OS user; fails loudly."""
        result = self.cluster.run_as_owner([self.tool.launcher, args[0], "--config", self.config, *args[1:]],
                                           extra_env=self.extra_env)
        if result.returncode != 0:
            raise BenchFailed("restorekeeper %s failed (exit %d): %s"
                              % (" ".join(args), result.returncode, result.stderr.strip()[-800:]))
        return result

    def rk_json(self, *args: str) -> Dict[str, Any]:
        return json.loads(self.rk(*args, "--json").stdout)

    def timed_backup(self, backup_type: str) -> Dict[str, Any]:
        """A backup record plus `wall_seconds`: the whole command, as a scheduler sees it."""
        started = time.perf_counter()
        record = self.rk_json("backup", "--type", backup_type)
        record["wall_seconds"] = time.perf_counter() - started
        return record

    # ------------------------------------------------------------- the data
    def pgbench(self, *args: str, options: str = "") -> str:
        """pgbench as the server's OS user; `options` are session settings (PGOPTIONS)."""
        extra_env = {"PGOPTIONS": options} if options else {}
        result = self.cluster.run_as_owner([self.cluster.bin("pgbench"), *args], extra_env=extra_env)
        if result.returncode != 0:
            raise BenchFailed("pgbench %s failed: %s" % (" ".join(args), result.stderr.strip()[-800:]))
        return result.stdout

    def database_bytes(self) -> int:
        return int(self.cluster.scalar("select sum(pg_database_size(oid)) from pg_database"))

    def archive_all(self) -> None:
        """Close the current segment and wait until it (and all before it) is archived."""
        self.cluster.wait_archived(self.cluster.switch_wal(), timeout=600)

    def quiesce(self) -> None:
        """Before a timed run: nothing dirty in shared buffers or the page cache,
        and the WAL summarizer caught up (an incremental backup waits for it)."""
        self.cluster.execute("checkpoint")
        if self.cluster.version < 17:
            os.sync()
            return
        lsn = self.cluster.scalar("select pg_current_wal_insert_lsn()")
        wait_until(lambda: bool(self.cluster.scalar(
            "select pending_lsn >= %s::pg_lsn from pg_get_wal_summarizer_state()", (lsn,))),
            timeout=300, interval=0.2, message="the WAL summarizer to reach %s" % lsn)
        os.sync()

    # -------------------------------------------------------- the repository
    def backup_dir(self, label: str) -> Path:
        return self.repository / CLUSTER_NAME / "backup" / label

    def archived_wal(self) -> List[str]:
        return self.rk("wal-list").stdout.split()

    def fetch_wal(self, names: Sequence[str], target: Path) -> None:
        """Plain decompressed copies of archived WAL files (for the floor's restore_command)."""
        make_user_dir(target, self.cluster.os_user, 0o755)
        for name in names:
            self.rk("wal-fetch", name, str(target / name))

    def destroy(self) -> None:
        self.cluster.destroy()
