"""Command-line front end to the harness, for playbooks (molecule, demos).

    python -m tests.harness.cli create  --version 18 --base DIR [--conf KEY=VALUE ...] [--json]
    python -m tests.harness.cli start|stop|destroy|info --base DIR [--json]
    python -m tests.harness.cli switch-wal --base DIR
    python -m tests.harness.cli query --base DIR --sql "SELECT ..."
    python -m tests.harness.cli fleet-create --base DIR --host db1 --host backup1 [--moto-host backup1]
    python -m tests.harness.cli fleet-destroy --base DIR

Run from the repository root. Each cluster lives in its own DIR (data
directory, socket directory, server log, all owned by the server OS user); a
root-owned DIR/cluster.json remembers what the other subcommands need (port,
version, binaries), so one playbook task can create a cluster and later ones
stop, query or destroy it. Permission handling (server binaries copied to a
world-readable cache, running as `postgres` under root) stays in PgCluster.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from . import fleet
from .cluster import PgCluster

STATE_FILE = "cluster.json"


def _state_path(base: Path) -> Path:
    return base / STATE_FILE


def describe(cluster: PgCluster) -> dict[str, Any]:
    """What a playbook needs to reach and control the cluster."""
    return {
        "version": cluster.version,
        "port": cluster.port,
        "socket_dir": str(cluster.socket_dir),
        "datadir": str(cluster.datadir),
        "bindir": str(cluster.bindir),
        "logfile": str(cluster.logfile),
        "base_dir": str(cluster.base_dir),
        "os_user": cluster.os_user,
        "superuser": cluster.superuser,
    }


def _save(cluster: PgCluster) -> None:
    path = _state_path(cluster.base_dir)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(describe(cluster), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temp.replace(path)


def load(base: Path) -> PgCluster:
    """Rebuild the PgCluster recorded in base/cluster.json (no side effects on the server)."""
    try:
        state = json.loads(_state_path(base).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit("no cluster recorded in %s (missing %s); create it first" % (base, STATE_FILE)) from None
    cluster = PgCluster(int(state["version"]), base, state["os_user"])
    # __init__ picked a fresh port and looked the binaries up again; the
    # recorded ones are what the running server uses.
    cluster.port = int(state["port"])
    cluster.bindir = Path(state["bindir"])
    return cluster


def _parse_conf(items: Sequence[str]) -> dict[str, Any]:
    conf: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit("--conf expects KEY=VALUE, got %r" % item)
        conf[key.strip()] = int(value) if value.strip().isdigit() else value.strip()
    return conf


def cmd_create(args: argparse.Namespace) -> dict[str, Any]:
    """Create and start a cluster; an already recorded, running one is reused."""
    base = Path(args.base)
    if _state_path(base).exists():
        cluster = load(base)
        if not cluster.is_running():
            cluster.start()
        result = describe(cluster)
        result["changed"] = False
        return result
    if base.exists() and any(base.iterdir()):
        raise SystemExit("%s exists and is not empty; refusing to create a cluster there" % base)
    cluster = PgCluster.create(args.version, base, conf=_parse_conf(args.conf))
    try:
        cluster.start()
    except Exception:
        cluster.destroy()
        raise
    _save(cluster)  # after start: start() may have moved to another port on a clash
    result = describe(cluster)
    result["changed"] = True
    return result


def cmd_start(args: argparse.Namespace) -> dict[str, Any]:
    cluster = load(Path(args.base))
    changed = not cluster.is_running()
    if changed:
        cluster.start()
        _save(cluster)
    return {**describe(cluster), "changed": changed}


def cmd_stop(args: argparse.Namespace) -> dict[str, Any]:
    cluster = load(Path(args.base))
    changed = cluster.is_running()
    cluster.stop(args.mode)
    return {**describe(cluster), "changed": changed}


def cmd_destroy(args: argparse.Namespace) -> dict[str, Any]:
    """Stop the server and remove DIR. Idempotent: a missing DIR is fine."""
    base = Path(args.base)
    if _state_path(base).exists():
        load(base).destroy()  # stops whatever it takes, then removes base
        return {"base_dir": str(base), "changed": True}
    if base.exists():
        # Only ever remove a directory that looks like one of ours.
        if (base / "data" / "PG_VERSION").exists() and not (base / "data" / "postmaster.pid").exists():
            shutil.rmtree(base)
            return {"base_dir": str(base), "changed": True}
        raise SystemExit("%s has no %s; not removing it" % (base, STATE_FILE))
    return {"base_dir": str(base), "changed": False}


def cmd_info(args: argparse.Namespace) -> dict[str, Any]:
    cluster = load(Path(args.base))
    return {**describe(cluster), "running": cluster.is_running(), "changed": False}


def cmd_switch_wal(args: argparse.Namespace) -> dict[str, Any]:
    """Close the current WAL segment (after writing a little WAL) and name it."""
    return {"segment": load(Path(args.base)).switch_wal(), "changed": True}


def cmd_query(args: argparse.Namespace) -> dict[str, Any]:
    rows = load(Path(args.base)).query(args.sql, dbname=args.dbname)
    return {"rows": [[_plain(value) for value in row] for row in rows], "changed": False}


def cmd_fleet_create(args: argparse.Namespace) -> dict[str, Any]:
    """Namespaces with sshd (and moto) for molecule scenario fleet (tests/harness/fleet.py)."""
    return fleet.create(Path(args.base), args.host, args.moto_host, pg_version=args.pg_version)


def cmd_fleet_destroy(args: argparse.Namespace) -> dict[str, Any]:
    return fleet.destroy(Path(args.base))


def _plain(value: Any) -> Any:
    """JSON-friendly cell (timestamps, LSNs, decimals become text)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.cli", description=__doc__.split("\n\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--base", required=True, help="directory of this cluster (created by `create`)")
        sub.add_argument("--json", action="store_true", help="print the result as JSON (default: key=value lines)")
        sub.set_defaults(handler=handler)
        return sub

    create = command("create", cmd_create, "create and start a throwaway cluster")
    create.add_argument("--version", type=int, default=18, help="PostgreSQL major version (default 18)")
    create.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra postgresql.conf setting")
    command("start", cmd_start, "start the recorded cluster")
    stop = command("stop", cmd_stop, "stop the recorded cluster")
    stop.add_argument("--mode", choices=("smart", "fast", "immediate"), default="fast")
    command("destroy", cmd_destroy, "stop the cluster and remove its directory")
    command("info", cmd_info, "describe the recorded cluster")
    command("switch-wal", cmd_switch_wal, "force a WAL segment switch and print the closed segment")
    query = command("query", cmd_query, "run one SQL statement as the superuser and print the rows")
    query.add_argument("--sql", required=True)
    query.add_argument("--dbname", default="postgres")
    fleet_create = command("fleet-create", cmd_fleet_create, "network namespace hosts with sshd (and moto)")
    fleet_create.add_argument("--host", action="append", required=True, help="a host name (repeat)")
    fleet_create.add_argument("--moto-host", help="run moto's S3 server in this host's namespace")
    fleet_create.add_argument("--pg-version", type=int, help="record the server binaries of this major version")
    command("fleet-destroy", cmd_fleet_destroy, "stop everything of the fleet and remove its namespaces and DIR")
    return parser


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
        return
    for key in sorted(result):
        sys.stdout.write("%s=%s\n" % (key, result[key]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _print(args.handler(args), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
