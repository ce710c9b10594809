"""The product on clusters laid out the way distributions do it, as a new
user would meet them, with no [postgres] bindir in restorekeeper's
configuration (the server binaries are off PATH in both):

- debian: postgresql-common (pg_createcluster): configuration under
  /etc/postgresql/15/<name> with a conf.d include, pg_ctlcluster to start and stop;
- pgdg: the PGDG RPM layout: /usr/pgsql-16/bin, configuration inside the data
  directory, pg_ctl.

Archive, back up, restore into a new directory, drill, rewind in place, roll
back an in-place restore that fails after the stop, and refuse one whose
preflight fails before anything is stopped. (The plain initdb layout is what
the rest of the integration suite uses.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness import InstalledTool, make_user_dir, run_as
from harness import debian, pgdg
from harness.prerequisites import missing
from harness.wait import wait_until

pytestmark = pytest.mark.slow

LAYOUTS = [
    pytest.param("debian", id="debian", marks=[pytest.mark.pg15] + (
        [pytest.mark.skip(reason=missing("Debian-layout clusters: %s" % debian.unavailable_reason()))]
        if debian.unavailable_reason() else [])),
    pytest.param("pgdg", id="pgdg", marks=[pytest.mark.pg16] + (
        [pytest.mark.skip(reason=missing("PGDG-layout clusters: %s" % pgdg.unavailable_reason()))]
        if pgdg.unavailable_reason() else [])),
]


class Field:
    """One Debian cluster archiving into a repository through restorekeeper."""

    def __init__(self, layout: str, cluster, tool: InstalledTool, base: Path) -> None:
        self.layout = layout
        self.cluster = cluster
        self.tool = tool
        self.base = base
        self.repo = base / "repository"
        self.config = base / "restorekeeper.conf"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = run_as(self.cluster.os_user, [str(self.tool.bin), *args, "--config", str(self.config)])
        if check and result.returncode != 0:
            raise AssertionError("restorekeeper %s failed (%d): %s%s" % (
                args[0], result.returncode, result.stdout, result.stderr))
        return result

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "--json").stdout)

    def switch_and_archive(self) -> str:
        segment = self.cluster.psql("SELECT pg_walfile_name(pg_switch_wal())")
        wait_until(lambda: self.cluster.psql(
            "SELECT coalesce(last_archived_wal >= '%s', false) FROM pg_stat_archiver" % segment) == "t",
            timeout=60, message="segment %s archived" % segment)
        return segment

    def now(self) -> str:
        time.sleep(0.05)
        moment = self.cluster.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                   "'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        time.sleep(0.05)
        return moment


@pytest.fixture(scope="module")
def pgdg_tree() -> Iterator[None]:
    """/usr/pgsql-16 exists only while these tests run."""
    yield
    root = Path("/usr/pgsql-%d" % pgdg.PGDG_VERSION)
    if (root / ".restorekeeper-test").exists():
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=LAYOUTS)
def field(request, tool: InstalledTool, rk_session_dir: Path, pgdg_tree) -> Iterator[Field]:
    layout = request.param
    name = "rkf%d" % os.getpid()
    cluster = debian.DebianCluster(name) if layout == "debian" else pgdg.PgdgCluster(name)
    base = make_user_dir(rk_session_dir / ("%s-%s" % (layout, name)), cluster.os_user, 0o755)
    setup = Field(layout, cluster, tool, base)
    make_user_dir(setup.repo, cluster.os_user, 0o700)
    # What a user writes by hand: the repository, and how to reach the server. No bindir.
    setup.config.write_text(
        "[repository]\npath = %s\n\n[cluster]\nname = %s\n\n[postgres]\nhost = /var/run/postgresql\nport = %d\n"
        "user = postgres\n" % (setup.repo, name, cluster.port), encoding="utf-8")
    os.chmod(setup.config, 0o600)
    shutil.chown(setup.config, cluster.os_user, cluster.os_user)
    try:
        cluster.create(conf={"archive_mode": "on", "wal_level": "replica",
                             "archive_command": "%s wal-push --config %s %%p %%f" % (tool.bin, setup.config)})
        setup.run("repo-create")
        cluster.start()
        yield setup
    finally:
        cluster.drop()
        shutil.rmtree(base, ignore_errors=True)


def test_backup_restore_drill_and_rewind(field: Field):
    db = field.cluster
    debian_layout = field.layout == "debian"
    info = field.json("info")
    assert info["cluster_layout"]["layout"] == field.layout
    assert info["cluster_layout"]["bindir"] == str(db.bindir)
    db.psql("CREATE TABLE accounts (id int PRIMARY KEY, note text)")
    db.psql("INSERT INTO accounts SELECT g, 'early' FROM generate_series(1, 500) g")
    field.switch_and_archive()
    backup = field.json("backup")
    assert backup["configuration"]["split"] is debian_layout
    if debian_layout:
        assert backup["configuration"]["captured"] is True, backup["configuration"].get("reason")

    db.psql("INSERT INTO accounts SELECT g, 'later' FROM generate_series(501, 700) g")
    before_accident = field.now()
    db.psql("DELETE FROM accounts WHERE id > 100")  # the accident
    field.switch_and_archive()

    # Into a new directory: the copy gets a configuration derived from the source's.
    copy = db.datadir.with_name(db.name + ".copy")
    socket_dir = make_user_dir(field.base / "sock", db.os_user, 0o700)
    port = db.port + 1 if db.port < 65000 else db.port - 1
    try:
        result = field.json("restore", "--pgdata", str(copy), "--target-time", before_accident,
                            "--target-action", "promote", "--start", "--port", str(port),
                            "--socket-dir", str(socket_dir))
        assert result["state"] == "promoted"
        if debian_layout:
            assert result["configuration"]["source"] == "derived"
            assert set(result["configuration"]["written"]) == {"postgresql.conf", "pg_hba.conf", "pg_ident.conf"}
            conf = (copy / "postgresql.conf").read_text()
            assert "data_directory" not in conf and "external_pid_file" not in conf and "hba_file" not in conf
        else:
            assert result["configuration"]["source"] == "backup" and result["configuration"]["written"] == []
        count = run_as(db.os_user, [str(db.bindir / "psql"), "-X", "-t", "-A", "-h", str(socket_dir), "-p", str(port),
                                    "-d", "postgres", "-c", "SELECT count(*), current_setting('archive_mode') "
                                                            "FROM accounts"])
        assert count.stdout.strip() == "700|off", count.stderr
        assert db.postmaster_pid() is not None  # the source never noticed
    finally:
        run_as(db.os_user, [str(db.bindir / "pg_ctl"), "-D", str(copy), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(copy, ignore_errors=True)

    # A drill proves the backup on a scratch cluster of its own.
    drill = field.json("drill", "--scratch-dir", str(field.base))
    assert drill["result"] == "pass", drill["failure_reasons"]

    # In place: the data directory is restored and the cluster started the way
    # it normally starts (Debian: /etc/postgresql stays, pg_ctlcluster starts it).
    old_pid = db.postmaster_pid()
    rewound = field.json("restore", "--pgdata", str(db.datadir), "--in-place", "--target-time", before_accident,
                         "--target-action", "promote", "--keep-archiving")
    assert rewound["state"] == "promoted" and rewound["stopped_live_cluster"] is True
    assert db.postmaster_pid() not in (None, old_pid)
    assert db.psql("SELECT count(*) FROM accounts") == "700"
    assert Path(rewound["moved_aside"]).is_dir()
    if debian_layout:
        assert rewound["started_with"] == "pg_ctlcluster" and rewound["configuration"]["source"] == "live"
        assert not (db.datadir / "postgresql.conf").exists()
        listed = subprocess.run(["pg_lsclusters", "15", db.name], capture_output=True, text=True, check=True)
        assert "online" in listed.stdout
    else:
        assert rewound["started_with"] == "pg_ctl" and rewound["configuration"]["source"] == "backup"
    # The new timeline is archived from the rewound cluster.
    field.switch_and_archive()


def test_in_place_failure_after_the_stop_rolls_back(field: Field):
    db = field.cluster
    db.psql("CREATE TABLE kept (id int)")
    db.psql("INSERT INTO kept SELECT generate_series(1, 321)")
    field.switch_and_archive()
    label = field.json("backup")["label"]
    db.psql("INSERT INTO kept SELECT generate_series(322, 400)")
    field.switch_and_archive()
    # The backup's data becomes unreadable after the plan and preflight read the catalog and manifest.
    base = next((field.repo / field.cluster.name / "backup" / label).glob("base.tar*"))
    os.chmod(base, 0)
    old_pid = db.postmaster_pid()
    result = field.run("restore", "--pgdata", str(db.datadir), "--in-place", "--target-latest",
                       "--target-action", "promote", check=False)
    assert result.returncode != 0
    print(result.stderr)
    assert "rolled back" in result.stderr and "runs again" in result.stderr, result.stderr
    assert str(base) in result.stderr or "base.tar" in result.stderr
    new_pid = db.postmaster_pid()
    assert new_pid is not None and new_pid != old_pid  # stopped, then started again
    assert db.psql("SELECT count(*) FROM kept") == "400"
    assert not list(db.datadir.parent.glob("%s.before-restore-*" % db.name))  # nothing left aside


def test_preflight_refuses_before_stopping(field: Field):
    db = field.cluster
    db.psql("CREATE TABLE t (id int)")
    field.switch_and_archive()
    field.run("backup")
    old_pid = db.postmaster_pid()
    taken = field.base / "taken"
    taken.mkdir()
    shutil.chown(taken, db.os_user, db.os_user)
    result = field.run("restore", "--pgdata", str(db.datadir), "--in-place", "--aside", str(taken), check=False)
    assert result.returncode != 0 and "already exists" in result.stderr, result.stderr
    assert db.postmaster_pid() == old_pid  # nothing was stopped


def test_in_place_restore_as_root_is_refused_before_stopping(field: Field):
    if os.geteuid() != 0:
        pytest.skip(missing("root, to run the restore as root (`make test` runs as root)"))
    db = field.cluster
    db.psql("CREATE TABLE t (id int)")
    field.switch_and_archive()
    field.run("backup")
    old_pid = db.postmaster_pid()
    data_before = sorted(path.name for path in db.datadir.iterdir())
    repo_before = sorted(str(path) for path in field.repo.rglob("*"))
    # As root, not as the cluster's owner: the mistake of a `sudo restorekeeper restore --in-place`.
    result = subprocess.run([str(field.tool.bin), "restore", "--config", str(field.config), "--pgdata", str(db.datadir),
                             "--in-place", "--target-latest"], capture_output=True, text=True, check=False, cwd="/")
    assert result.returncode != 0, result.stdout
    assert "the cluster is owned by postgres, but the restore runs as root" in result.stderr, result.stderr
    assert "run the restore as postgres" in result.stderr, result.stderr
    assert db.postmaster_pid() == old_pid  # nothing was stopped
    assert sorted(path.name for path in db.datadir.iterdir()) == data_before
    assert not list(db.datadir.parent.glob("%s.before-restore-*" % db.name))  # nothing moved aside
    assert sorted(str(path) for path in field.repo.rglob("*")) == repo_before  # nor written to the repository
