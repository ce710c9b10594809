"""Quick checks of the test harness itself (clusters, tool install, fixtures)."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness import PgCluster, available_versions, bindir, run_as

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_versions_found_and_reachable_by_server_user(pg_versions: list[int]) -> None:
    assert pg_versions == available_versions()
    assert pg_versions, "no PostgreSQL binaries found at all"
    for version in pg_versions:
        path = bindir(version)
        out = run_as(pwd.getpwuid(os.geteuid()).pw_name, [path / "postgres", "--version"]).stdout
        assert "(PostgreSQL) %d." % version in out


def test_cluster_basics(pg_cluster: PgCluster) -> None:
    assert pg_cluster.is_running()
    assert int(pg_cluster.scalar("show server_version_num")) // 10000 == pg_cluster.version
    assert pg_cluster.scalar("show port") == str(pg_cluster.port)
    assert pg_cluster.scalar("show unix_socket_directories") == str(pg_cluster.socket_dir)
    assert pg_cluster.scalar("show fsync") == "on"
    assert pg_cluster.scalar("show data_checksums") == "on"
    assert pg_cluster.scalar("select current_user") == "postgres"
    pg_cluster.execute("create table t (i int)")
    pg_cluster.execute("insert into t values (%s), (%s)", (1, 2))
    assert pg_cluster.query("select i from t order by i") == [(1,), (2,)]
    # The data directory belongs to the server user, never to root.
    assert pg_cluster.datadir.stat().st_uid == pwd.getpwnam(pg_cluster.os_user).pw_uid
    whoami = pg_cluster.run_as_owner(["id", "-un"])
    assert whoami.stdout.strip() == pg_cluster.os_user
    psql = pg_cluster.run_as_owner([pg_cluster.bin("psql"), "-XAtc", "select 42"])
    assert psql.returncode == 0 and psql.stdout.strip() == "42", psql.stderr
    assert pg_cluster.switch_wal().startswith("00000001")
    pg_cluster.restart()
    assert pg_cluster.scalar("select count(*) from t") == 2
    assert "database system is ready" in pg_cluster.log_text()


def test_conf_hba_and_destroy(cluster_factory) -> None:
    version = max(v for v in available_versions() if v in (15, 18))
    cluster = cluster_factory(
        version=version,
        conf={"work_mem": "7MB", "application_name": "it's quoted"},
        hba=["local all rk_blocked reject"],
    )
    other = cluster_factory(version=version, start=False)
    assert other.port != cluster.port and not other.is_running()
    assert cluster.scalar("show work_mem") == "7MB"
    assert cluster.scalar("show application_name") in ("it's quoted", "")  # libpq may override it
    cluster.execute("create role rk_blocked login")
    with pytest.raises(Exception, match="rk_blocked"):
        connect_as(cluster, "rk_blocked")
    base = cluster.base_dir
    cluster.destroy()
    assert not cluster.is_running()
    assert not base.exists()


def connect_as(cluster: PgCluster, user: str) -> None:
    import psycopg2

    psycopg2.connect(**{**cluster.conninfo(), "user": user}).close()


def test_tool_installed_and_runnable_by_server_user(tool, pg_cluster: PgCluster) -> None:
    launcher = tool.bin
    # -IS: isolated and without the site module (a cheaper start for a command run once per WAL segment).
    assert launcher.read_text().startswith("#!%s/bin/python -IS\n" % tool.prefix)
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    engine = tool.prefix / "lib" / "restorekeeper_engine"
    assert (engine / "__init__.py").read_bytes() == b""
    engine_source = REPO_ROOT / "plugins" / "module_utils"
    sources = {p.relative_to(engine_source) for p in engine_source.rglob("*.py") if "__pycache__" not in p.parts}
    assert len(sources) > 40 and Path("archive/walarchive.py") in sources
    assert sources <= {p.relative_to(engine) for p in engine.rglob("*.py")}
    result = pg_cluster.run_as_owner([launcher, "--help"])
    assert result.returncode == 0, result.stderr
    assert "wal-push" in result.stdout
    # Re-running the installer is idempotent and leaves the venv alone.
    python_inode = (tool.prefix / "pyvenv.cfg").stat().st_ino
    rerun = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "install_tool.py"), "--prefix", str(tool.prefix),
         "--packages", "pip"],
        capture_output=True, text=True, check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "pip" not in rerun.stdout.lower() and "Collecting" not in rerun.stdout
    assert (tool.prefix / "pyvenv.cfg").stat().st_ino == python_inode


def test_repo_config_is_private_to_server_user(pg_cluster: PgCluster, repo_config) -> None:
    setup = repo_config(pg_cluster)
    info = setup.config_path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == pwd.getpwnam(pg_cluster.os_user).pw_uid
    assert setup.repo_path.stat().st_uid == info.st_uid
    assert (setup.repo_path / "restorekeeper.repo").exists()


def test_engine_importable_as_collection(collection_root: Path, ansible_env: dict) -> None:
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive import walarchive

    assert Path(walarchive.__file__).resolve().is_relative_to(REPO_ROOT)
    assert (collection_root / "restorekeeper" / "postgresql" / "galaxy.yml").exists()
    assert str(collection_root.parent) in ansible_env["ANSIBLE_COLLECTIONS_PATH"]
