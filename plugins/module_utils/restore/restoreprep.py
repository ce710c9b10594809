"""What a restore checks before it changes anything, and how it stops,
starts and, after a failure, brings back the cluster it restores over.

A destructive restore (in place, or with force) first proves it will not
stop half-way for a reason it could have known: the server binaries and
their major version, the Python packages this interpreter needs for the
backup's format and the repository, the free space, where the restored
copy's configuration comes from, and that it can stop and start the
cluster itself (and that no HA manager owns it). Only then is the server
stopped. Whatever fails after that, the caller puts the old data directory
back and starts the old server again (roll_back).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from typing import Any, Dict, List, NamedTuple, Optional

from ..pg import serverconfig
from ..pg.discovery import ClusterLayout, DiscoveryError, bindir_for_version, discover, postmaster_pid, refuse_ha_managed
from ..common.errors import RestorekeeperError
from ..common.waiting import wait_until
from ..pg.services import ServiceError, cluster_service, run_service_command
from ..pg.manifest import CRC32C

# Room kept free beyond the restored files, for WAL replayed and staged and
# for the server's own start-up files.
SPACE_MARGIN_BYTES = 256 << 20
STOP_TIMEOUT_SECONDS = 120
START_TIMEOUT_SECONDS = 120


class PreflightFailed(RestorekeeperError):
    """A restore would fail part-way: refused before anything changed."""


class ConfigurationPlan(NamedTuple):
    """Where the restored server's postgresql.conf, pg_hba.conf and pg_ident.conf come from."""

    source: str          # "backup" (inside the data directory), "derived" (from the record), "live" (stays in place)
    detail: str


def configuration_plan(record: Dict[str, Any], manifest_files: Any, live: Optional[ClusterLayout]) -> ConfigurationPlan:
    """Decide, before anything is written, how the copy gets a configuration;
    refuse when it would not get one."""
    if "postgresql.conf" in manifest_files:
        return ConfigurationPlan("backup", "postgresql.conf, pg_hba.conf and pg_ident.conf are in the backup")
    if live is not None and live.split_config:
        return ConfigurationPlan("live", "the cluster's own configuration stays in %s" % live.config_directory)
    captured = record.get("configuration")
    reason = serverconfig.describe_unusable(captured)
    if reason is None and captured and captured.get("split"):
        return ConfigurationPlan("derived", "derived from %s of the backed-up server (paths, port, socket and "
                                            "archiving rewritten)" % captured["config_file"])
    raise PreflightFailed(
        "backup %s holds no postgresql.conf (its server keeps its configuration outside the data directory) and "
        "%s" % (record.get("label", "?"), reason or "its record has none"),
        "restore in place over the cluster whose configuration directory still exists, or take a new backup "
        "(backups record the server's configuration since this version)",
    )


def _python_needs(record: Dict[str, Any], manifest_algorithm: str) -> List[str]:
    needs = []
    if record.get("compression") == "zstd":
        needs.append("zstandard")
    if manifest_algorithm == CRC32C:
        needs.append("crc32c")
    return needs


def check_python_packages(record: Dict[str, Any], manifest_algorithm: str, config: Any) -> None:
    """Every Python module the restore will import, present in this interpreter."""
    from ..common import hostdeps  # the table of packages lives there

    needs = set(_python_needs(record, manifest_algorithm)) | set(hostdeps.needs_for_config(config))
    hostdeps.require(sorted(needs), "restoring backup %s" % record.get("label", "?"))


def _major_of_binary(path: str) -> Optional[int]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.split()
    try:
        return int(words[-1].split(".")[0]) if words else None
    except ValueError:
        return None


def server_bindir(configured: str, client: Any, major: int) -> str:
    """The bin directory of PostgreSQL `major` that restores and starts the
    copy: the configured one; else the one the source's settings lead to
    (its discovered cluster, or PATH) when it is of that major version; else
    the distribution's place for that version (a restore on a host where the
    source never ran, or where several versions are installed)."""
    if configured:
        return configured
    try:
        candidate = os.path.dirname(client.program("postgres"))
    except RestorekeeperError:
        candidate = ""
    if candidate and _major_of_binary(os.path.join(candidate, "postgres")) == major:
        return candidate
    try:
        return bindir_for_version(major)
    except DiscoveryError as exc:
        raise PreflightFailed("the backup is of PostgreSQL %d: %s" % (major, exc.message), exc.hint) from None


def check_binaries(client: Any, major: int, chain_length: int) -> Dict[str, str]:
    """The programs the restore runs, all of the backup's major version."""
    programs = ["postgres", "pg_ctl", "pg_waldump"] + (["pg_combinebackup"] if chain_length > 1 else [])
    found: Dict[str, str] = {}
    for name in programs:
        try:
            found[name] = client.program(name)
        except RestorekeeperError as exc:
            raise PreflightFailed("the restore needs %s: %s" % (name, exc.message), exc.hint) from None
    server_major = _major_of_binary(found["postgres"])
    if server_major != major:
        raise PreflightFailed(
            "the backup is of PostgreSQL %d but %s is %s" % (major, found["postgres"], server_major or "unknown"),
            "point [postgres] bindir (or the bindir option) at PostgreSQL %d's bin directory" % major,
        )
    return found


def free_bytes(path: str) -> int:
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "/"
    stats = os.statvfs(probe)
    return stats.f_bavail * stats.f_frsize


def check_free_space(pgdata: str, needed: int, aside: Optional[str]) -> Dict[str, int]:
    """Room for the restored files next to the moved-aside directory. The move
    itself is a rename inside one directory, so it needs none; a moved-aside
    directory that would land on another filesystem is refused."""
    available = free_bytes(pgdata)
    if aside and os.path.exists(pgdata):
        parent = os.path.dirname(aside.rstrip("/")) or "/"
        if os.stat(parent).st_dev != os.stat(pgdata).st_dev:
            raise PreflightFailed("the moved-aside directory %s would be on another filesystem than %s" % (aside, pgdata),
                                  "choose a moved-aside path next to the data directory")
    if available < needed + SPACE_MARGIN_BYTES:
        raise PreflightFailed(
            "not enough free space for the restore in %s: %d MiB free, %d MiB needed (the backup's %d MiB and %d MiB "
            "to spare)" % (os.path.dirname(pgdata.rstrip("/")), available >> 20, (needed + SPACE_MARGIN_BYTES) >> 20,
                           needed >> 20, SPACE_MARGIN_BYTES >> 20),
            "free space there, or restore into a directory on a larger filesystem",
        )
    return {"available_bytes": available, "needed_bytes": needed}


# --------------------------------------------------------------- the cluster
class ClusterControl:
    """Stops and starts the cluster a restore replaces, as its owner and the
    way it normally starts (services.py): pg_ctlcluster for a postgresql-common
    cluster, pg_ctl on its configuration directory otherwise. Under systemd the
    role stops and starts the unit itself (root), around this."""

    def __init__(self, layout: ClusterLayout, client: Any, log_file: str = "") -> None:
        self.layout = layout
        self.client = client
        manager = "pg_ctlcluster" if layout.debian_cluster and shutil.which("pg_ctlcluster") else "pg_ctl"
        own_log = log_file or layout.data_directory.rstrip("/") + ".restorekeeper.log"
        self.service = cluster_service(layout._replace(bindir=os.path.dirname(client.program("pg_ctl"))),
                                       manager=manager, log_file=own_log if manager == "pg_ctl" else "",
                                       timeout=STOP_TIMEOUT_SECONDS)

    @property
    def method(self) -> str:
        return self.service.manager

    @property
    def log_file(self) -> str:
        """Where the server started by start() logs."""
        return self.layout.log_file if self.method == "pg_ctlcluster" and self.layout.log_file else \
            self.layout.data_directory.rstrip("/") + ".restorekeeper.log"

    def check_control(self) -> None:
        """This user can stop and start the cluster."""
        owner = self.layout.owner
        me = pwd.getpwuid(os.geteuid()).pw_name
        if me != owner:
            raise PreflightFailed("the cluster is owned by %s, but the restore runs as %s" % (owner, me),
                                  "run the restore as %s (become_user: %s)" % (owner, owner))

    def start(self) -> None:
        """Start without waiting: a recovery may take hours; the caller watches."""
        run_service_command(self.service.start_argv, self.service.run_as, START_TIMEOUT_SECONDS)

    def stop(self) -> None:
        try:
            run_service_command(self.service.stop_argv, self.service.run_as, STOP_TIMEOUT_SECONDS)
        except ServiceError as exc:
            raise RestorekeeperError("the server of %s did not stop: %s" % (self.layout.data_directory, exc.message),
                                     "stop it by hand; nothing was moved") from None
        if not wait_until(lambda: postmaster_pid(self.layout.data_directory) is None, STOP_TIMEOUT_SECONDS):
            raise RestorekeeperError("the server of %s still runs after `%s`" % (
                self.layout.data_directory, " ".join(self.service.stop_argv)), "stop it by hand; nothing was moved")

    def start_and_wait(self) -> Optional[int]:
        """Start the cluster and wait until it accepts connections; its pid, or None."""
        try:
            self.start()
        except ServiceError:
            return None
        wait_until(lambda: _postmaster_ready(self.layout.data_directory), START_TIMEOUT_SECONDS)
        return postmaster_pid(self.layout.data_directory) if _postmaster_ready(self.layout.data_directory) else None


def _postmaster_ready(pgdata: str) -> bool:
    """postmaster.pid's status line says "ready" (what pg_ctl -w waits for)."""
    try:
        with open(os.path.join(pgdata, "postmaster.pid"), encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready" and postmaster_pid(pgdata) is not None


def live_cluster(pgdata: str, action: str) -> Optional[ClusterLayout]:
    """The cluster whose data directory a restore replaces (None when the
    directory is gone: a lost disk is rebuilt in place). Refuses a cluster an
    HA manager owns."""
    if not os.path.exists(os.path.join(pgdata, "PG_VERSION")):
        if os.path.isdir(pgdata) and os.listdir(pgdata):
            raise PreflightFailed("%s is not a PostgreSQL data directory (no PG_VERSION)" % pgdata,
                                  "name the live cluster's data directory; nothing was stopped or moved")
        return None
    try:
        layout = discover(pgdata=pgdata)
    except DiscoveryError as exc:
        raise PreflightFailed("cannot restore %s in place: %s" % (pgdata, exc.message), exc.hint) from None
    refuse_ha_managed(layout, action)
    return layout
