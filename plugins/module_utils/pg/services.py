"""Restart or reload one PostgreSQL cluster through its own service, never a host-wide one.

Which settings need a restart (postmaster context) and which a reload
(sighup), what to do about a needed restart (now, later through a handler,
never), which service manager runs the cluster (its own systemd unit,
Debian's ``pg_ctlcluster``, or ``pg_ctl``), and the command lines for it.
The decisions are pure functions so they can be tested without a server; the
one function that runs a command is ``run_service_command``.

Debian's ``postgresql.service`` is an umbrella unit: restarting it restarts
every cluster of the host. It is refused where the host has several clusters;
each cluster has its own unit ``postgresql@VERSION-NAME``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from ..common.errors import RestorekeeperError

MANAGERS = ("auto", "systemd", "pg_ctlcluster", "pg_ctl")
RESTART_POLICIES = ("now", "never")
SYSTEMD_RUN_DIR = "/run/systemd/system"
UMBRELLA_UNITS = ("postgresql", "postgresql.service")
DEFAULT_TIMEOUT = 120
# pg_settings contexts whose changes take effect only when the server restarts.
RESTART_CONTEXTS = ("postmaster",)


class ServiceError(RestorekeeperError):
    """The cluster's service cannot be chosen or controlled."""


class Service(NamedTuple):
    """How this one cluster is restarted, reloaded, started and stopped."""

    manager: str                  # systemd, pg_ctlcluster or pg_ctl
    unit: str                     # systemd unit (systemd only, else "")
    restart_argv: List[str]
    reload_argv: List[str]
    run_as: str                   # OS user the command must run as ("" = whoever runs it, e.g. root)
    # Start without waiting for the server to accept connections (a recovery
    # may take hours: the caller watches it), and stop waiting until it is down.
    start_argv: List[str] = []
    stop_argv: List[str] = []

    def as_dict(self) -> Dict[str, Any]:
        return {"manager": self.manager, "unit": self.unit, "restart_argv": list(self.restart_argv),
                "reload_argv": list(self.reload_argv), "run_as": self.run_as}


# ---------------------------------------------------------------------------
# Which settings need what
# ---------------------------------------------------------------------------


def needs_restart(context: str) -> bool:
    """Whether a change of a setting of this pg_settings context waits for a restart."""
    return context in RESTART_CONTEXTS


def split_by_effect(changed: Sequence[str], contexts: Mapping[str, str]) -> Dict[str, List[str]]:
    """{"restart": [...], "reload": [...]}: which changed settings a restart needs, which a reload applies."""
    split: Dict[str, List[str]] = {"restart": [], "reload": []}
    for name in changed:
        split["restart" if needs_restart(contexts.get(name, "")) else "reload"].append(name)
    return split


def restart_action(policy: str, restart_required: bool) -> str:
    """What to do about the server's restart: "restart", "report" (leave it to the caller) or "none"."""
    if policy not in RESTART_POLICIES:
        raise ServiceError("unknown restart policy %r" % policy, hint="use one of: %s" % ", ".join(RESTART_POLICIES))
    if not restart_required:
        return "none"
    return "restart" if policy == "now" else "report"


# ---------------------------------------------------------------------------
# Which service runs the cluster
# ---------------------------------------------------------------------------


def systemd_running() -> bool:
    """systemd is the host's init (the test systemd itself and sd_booted() use)."""
    return os.path.isdir(SYSTEMD_RUN_DIR)


def is_umbrella_unit(unit: str) -> bool:
    return unit.strip() in UMBRELLA_UNITS


def check_not_umbrella(unit: str, debian_clusters: Sequence[str], own_unit: str) -> None:
    """Refuse Debian's umbrella unit where it would restart several clusters."""
    if is_umbrella_unit(unit) and len(debian_clusters) > 1:
        raise ServiceError(
            "service %s is the umbrella unit of all PostgreSQL clusters on this host (%s): restarting it "
            "restarts every one of them" % (unit, ", ".join(debian_clusters)),
            hint="leave the service name empty so the cluster's own unit is used%s"
            % ((" (%s)" % own_unit) if own_unit else ""),
        )


def choose_manager(requested: str, unit: str, debian_cluster: str, systemd: bool) -> str:
    """The service manager for this cluster.

    auto: its systemd unit when systemd runs the host, else pg_ctlcluster for
    a Debian cluster, else pg_ctl. An explicit choice is checked for what it needs.
    """
    if requested not in MANAGERS:
        raise ServiceError("unknown service manager %r" % requested, hint="use one of: %s" % ", ".join(MANAGERS))
    if requested == "auto":
        if systemd and unit:
            return "systemd"
        return "pg_ctlcluster" if debian_cluster else "pg_ctl"
    if requested == "systemd":
        if not unit:
            raise ServiceError("service manager systemd, but no systemd unit of this cluster is known",
                               hint="name the unit (service_name), or use service_manager auto or pg_ctl")
        if not systemd:
            raise ServiceError("service manager systemd, but systemd does not run this host (no %s)" % SYSTEMD_RUN_DIR,
                               hint="use service_manager auto, pg_ctlcluster (Debian clusters) or pg_ctl")
    if requested == "pg_ctlcluster" and not debian_cluster:
        raise ServiceError("service manager pg_ctlcluster, but this is not a Debian postgresql-common cluster",
                           hint="use service_manager auto or pg_ctl")
    return requested


def build_service(manager: str, unit: str, debian_cluster: str, bindir: str, data_directory: str,
                  owner: str, log_file: str, timeout: int = DEFAULT_TIMEOUT, config_directory: str = "") -> Service:
    """Command lines that restart, reload, start and stop exactly this cluster."""
    if manager == "systemd":
        return Service("systemd", unit, ["systemctl", "restart", unit], ["systemctl", "reload", unit], "",
                       ["systemctl", "start", "--no-block", unit], ["systemctl", "stop", unit])
    if manager == "pg_ctlcluster":
        version, _slash, name = debian_cluster.partition("/")
        base = ["pg_ctlcluster", version, name]
        # pg_ctlcluster switches to the cluster's owner by itself when run as root;
        # what follows "--" goes to pg_ctl.
        return Service("pg_ctlcluster", "", base + ["restart"], base + ["reload"], "",
                       base + ["start", "--", "-W"], base + ["stop", "-m", "fast"])
    pg_ctl = os.path.join(bindir, "pg_ctl") if bindir else "pg_ctl"
    # --log: the restarted server must not keep the caller's output pipe open.
    log = log_file or os.path.join(data_directory, "pg_ctl.log")
    return Service(
        "pg_ctl", "",
        [pg_ctl, "restart", "--pgdata=%s" % data_directory, "--log=%s" % log, "--mode=fast", "--wait",
         "--timeout=%d" % timeout],
        [pg_ctl, "reload", "--pgdata=%s" % data_directory],
        owner,
        # A split configuration is started from its directory; pg_ctl finds the data directory there.
        [pg_ctl, "start", "--pgdata=%s" % (config_directory or data_directory), "--log=%s" % log, "--no-wait"],
        [pg_ctl, "stop", "--pgdata=%s" % data_directory, "--mode=fast", "--wait", "--timeout=%d" % timeout],
    )


def debian_clusters_on_host() -> List[str]:
    """VERSION/NAME of every postgresql-common cluster here ([] without postgresql-common)."""
    lsclusters = shutil.which("pg_lsclusters")
    if not lsclusters:
        return []
    try:
        proc = subprocess.run([lsclusters, "--no-header"], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    clusters = []
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            clusters.append("%s/%s" % (fields[0], fields[1]))
    return clusters


def cluster_service(layout: Any, manager: str = "auto", service_name: str = "", log_file: str = "",
                    timeout: int = DEFAULT_TIMEOUT, systemd: Optional[bool] = None,
                    debian_clusters: Optional[Sequence[str]] = None) -> Service:
    """The Service of a discovered cluster (discovery.ClusterLayout).

    service_name overrides the discovered unit; Debian's umbrella unit is
    refused on a host with several clusters.
    """
    systemd = systemd_running() if systemd is None else systemd
    unit = service_name or layout.service
    chosen = choose_manager(manager, unit, layout.debian_cluster, systemd)
    if chosen == "systemd" and is_umbrella_unit(unit):
        clusters = debian_clusters_on_host() if debian_clusters is None else debian_clusters
        check_not_umbrella(unit, clusters, layout.service)
    return build_service(chosen, unit, layout.debian_cluster, layout.bindir, layout.data_directory, layout.owner,
                         log_file or layout.log_file, timeout, layout.config_directory)


# ---------------------------------------------------------------------------
# Running the command
# ---------------------------------------------------------------------------


def command_for(service_argv: Sequence[str], run_as: str) -> List[str]:
    """The argv to execute: as run_as when we are root and it is another user (pg_ctl refuses root)."""
    argv = [str(arg) for arg in service_argv]
    if run_as and os.geteuid() == 0 and run_as != "root":
        return ["runuser", "-u", run_as, "--"] + argv
    return argv


def run_service_command(argv: Sequence[str], run_as: str = "", timeout: int = DEFAULT_TIMEOUT) -> None:
    """Run a restart/reload command; ServiceError with its output when it fails.

    Output goes to a temporary file, not a pipe: a server started by the
    command could otherwise hold the pipe open and hang us.
    """
    command = command_for(argv, run_as)
    with tempfile.TemporaryFile(mode="w+") as output:
        try:
            proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                  timeout=timeout + 30, check=False)
        except FileNotFoundError:
            raise ServiceError("%s is not installed on this host" % command[0],
                               hint="choose another service manager (service_manager)") from None
        except subprocess.TimeoutExpired:
            raise ServiceError("`%s` did not finish within %d seconds" % (" ".join(command), timeout + 30),
                               hint="look at the server's log, and at the service's state") from None
        output.seek(0)
        text = " ".join(output.read().split())
    if proc.returncode != 0:
        raise ServiceError(
            "`%s` failed (exit %d): %s" % (" ".join(command), proc.returncode, text[-800:] or "no output"),
            hint="run it as a user allowed to control the service (root for systemctl, or the server's OS "
                 "user for pg_ctl and pg_ctlcluster), or restart the server yourself",
        )
