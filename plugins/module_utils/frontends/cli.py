"""``restorekeeper``: the on-host command, a thin front end to the engine.

Exit codes matter to PostgreSQL:

* archive_command (wal-push): 0 means "durably archived, you may recycle the
  segment"; anything else makes PostgreSQL keep it and retry.
* restore_command (wal-fetch): 1 means "not in the archive", which ends
  recovery normally. Every other failure exits 255: PostgreSQL aborts
  recovery on exit codes above 125, which is right for a corrupt file or an
  unreachable repository. Returning 1 there would silently end recovery early
  and start the server on a shorter history.

Every other command exits 0 on success, 1 on failure and 2 on a usage error;
``verify --all`` exits 3 when something it checked is damaged or missing, and
``check`` follows the Nagios plugin codes (0 to 3).
"""

from __future__ import annotations

import sys

from ..common.errors import Refusal, RestorekeeperError

# Importing typing, argparse or the configuration parser costs milliseconds
# that every archive_command pays (see main): they are imported where used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable, Dict, List, Optional

    from ..config.config import Config

PROG = "restorekeeper"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNSOUND = 3  # verify --all: a backup or WAL file checked is damaged or missing
EXIT_ABORT_RECOVERY = 255


class UsageError(Exception):
    pass


def _parser_class():
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> "None":  # type: ignore[override]
            raise UsageError("%s\n%s" % (message, self.format_usage().strip()))

    return _Parser


class _WalArgs:
    """The parsed arguments of wal-push/wal-fetch, built without argparse."""

    def __init__(self, command: str, handler, config: Optional[str], verbose: bool, source: str, first: str,
                 second: str) -> None:
        self.command = command
        self.handler = handler
        self.config = config
        self.verbose = verbose
        self.source = source
        self.log_file, self.log_level = "", None
        if command == "wal-push":
            self.path, self.name = first, second
        else:
            self.name, self.path = first, second


def _fast_wal_args(argv: List[str]) -> Optional[_WalArgs]:
    """PostgreSQL starts wal-push (and wal-fetch) once per WAL file, so their
    plain forms are parsed by hand: importing argparse is a measurable share of
    the per-file start-up. Anything unusual (help, an unknown option, a wrong
    count) returns None and goes through argparse, which reports it."""
    if not argv or argv[0] not in ("wal-push", "wal-fetch"):
        return None
    command = argv[0]
    config: Optional[str] = None  # main() resolves the default
    verbose, source = False, ""
    positional: List[str] = []
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg in ("--config", "-c", "--source") and index + 1 < len(argv):
            if arg == "--source":
                if command != "wal-fetch":
                    return None
                source = argv[index + 1]
            else:
                config = argv[index + 1]
            index += 2
            continue
        if arg.startswith("--config="):
            config = arg[len("--config="):]
        elif arg in ("--verbose", "-v"):
            verbose = True
        elif arg.startswith("-") or len(positional) == 2:
            return None
        else:
            positional.append(arg)
        index += 1
    if len(positional) != 2 or config == "":
        return None
    handler = cmd_wal_push if command == "wal-push" else cmd_wal_fetch
    return _WalArgs(command, handler, config, verbose, source, positional[0], positional[1])


def _load(args: argparse.Namespace) -> Config:
    """The configuration, reading from the copy --source names when given."""
    from ..config.config import Config

    return Config.load(args.config).for_source(getattr(args, "source", "") or "")


# The logger of --log-file/--log-level (logsetup.py) once main() configured it, else None.
_logger = None
# True in the stream daemon, whose stderr is its log file: report() then writes there once, timestamped.
_stderr_is_log_file = False
_LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}  # logging's numbers, without importing it


def report(command: str, level: str, message: object) -> None:
    """One line on stderr, which PostgreSQL copies into its server log (and into the log file, if any)."""
    if not _stderr_is_log_file:
        sys.stderr.write("%s %s: %s: %s\n" % (PROG, command, level, message))
        sys.stderr.flush()
    if _logger is not None:
        from .logsetup import ON_STDERR

        _logger.log(_LOG_LEVELS.get(level, 20), "%s: %s", command, message, extra={ON_STDERR: True})


def cmd_wal_push(args: argparse.Namespace) -> int:
    from ..common import deadline
    from ..config.configfiles import sources_identity
    from ..archive.walarchive import WalArchive

    try:  # before reading it: a change made meanwhile must show as a difference
        config_identity = sources_identity(args.config)
    except OSError:
        config_identity = None  # loading reports why
    config = _load(args)
    # The archiver waits for this call: all repository and copy I/O has one deadline.
    if config.archive.queue_max:
        from ..archive.walpusher import drop_if_over_limit

        if drop_if_over_limit(config, args.path, args.name):  # journalled and reported loudly
            return EXIT_OK
    with deadline.limit(config.archive.remote_timeout, "wal-push of %s" % args.name, EXIT_FAILED):
        archive = WalArchive(config)
        if archive.config.archive.asynchronous:
            from ..archive.walasync import push_async

            outcome = push_async(archive, args.path, args.name, config_identity)
        else:
            outcome = archive.push(args.path, args.name)
    if args.verbose:
        from ..common.timefmt import format_size

        report("wal-push", "INFO", "%s %s (%s stored)" % (outcome.name, outcome.status, format_size(outcome.stored_size)))
    return EXIT_OK


def cmd_wal_pusher(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from ..archive.walarchive import WalArchive
    from ..archive.walpusher import Pusher
    from ..common.errors import ConfigError
    from ..config.configfiles import sources_identity

    config_identity = sources_identity(args.config)  # before reading: a later change shows as a difference
    config = _load(args)
    if args.cluster and args.cluster != config.cluster:
        raise ConfigError("--cluster %s does not match [cluster] name %s in %s" % (args.cluster, config.cluster, args.config),
                          "pass the configuration file of that cluster with --config")
    if not config.archive.spool_path:
        raise ConfigError("%s: wal-pusher needs [archive] spool_path" % args.config,
                          "set spool_path (and async = true) so wal-push finds the pusher's markers")
    pgdata = args.pgdata or config.postgres.pgdata
    if not pgdata:
        raise ConfigError("wal-pusher needs the data directory", "set [postgres] pgdata or pass --pgdata")
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda _signum, _frame: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:  # SIGTERM ends the pusher after the pass under way
        pusher = Pusher(WalArchive(config), os.path.join(pgdata, "pg_wal"), config_identity,
                        log=lambda line: report("wal-pusher", "INFO", line) if args.verbose else None)
        result = pusher.run(once=args.once, stop=stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if args.json:
        _print_json({"pushed": result["pushed"], "stopped": result["stopped"]})
    elif args.verbose or args.once:
        report("wal-pusher", "INFO", "%d WAL files pushed; %s" % (result["pushed"], result["stopped"]))
    return EXIT_OK


def cmd_wal_fetch(args: argparse.Namespace) -> int:
    from ..common import deadline

    config = _load(args)
    # A timeout is an error (255), never "not archived": that would end recovery early.
    with deadline.limit(config.archive.remote_timeout, "wal-fetch of %s" % args.name, EXIT_ABORT_RECOVERY):
        return _wal_fetch(args, config)


def _wal_fetch(args: argparse.Namespace, config: Config) -> int:
    from ..archive.walarchive import WalArchive
    from ..common.errors import WalNotFound

    archive = WalArchive(config)
    try:
        if archive.config.archive.prefetch:
            from ..archive.walasync import fetch_prefetching

            fetch_prefetching(archive, args.name, args.path)
        else:
            archive.fetch(args.name, args.path)
    except WalNotFound:
        from ..archive.walstream import fetch_streamed_partial

        if fetch_streamed_partial(archive, args.name, args.path):  # RPO zero: the streamed tail
            return EXIT_OK
        if args.verbose:
            report("wal-fetch", "INFO", "%s is not in the archive" % args.name)
        return EXIT_NOT_FOUND
    return EXIT_OK


def cmd_wal_list(args: argparse.Namespace) -> int:
    from ..archive.walarchive import WalArchive

    archive = WalArchive(_load(args))
    names = archive.names()
    if args.json:
        _print_json({"cluster": archive.config.cluster, "repository": archive.storage.location, "files": names})
        return EXIT_OK
    for name in names:
        sys.stdout.write(name + "\n")
    return EXIT_OK


def cmd_repo_create(args: argparse.Namespace) -> int:
    from ..repo.repository import Repository

    config = _load(args)
    created = Repository.from_config(config).create()
    if args.json:
        _print_json({"created": created, "repository": config.repository.path})
    else:
        sys.stdout.write("%s repository %s\n" % ("created" if created else "already initialised:",
                                                 config.repository.path))
    return EXIT_OK


def _progress(args: argparse.Namespace, operation: str):
    """The Progress of a command (common/progress.py), on stderr so that stdout keeps only the result."""
    from ..common.progress import Progress, choose_mode

    return Progress(operation, sys.stderr, choose_mode(args.progress, getattr(args, "json", False), sys.stderr))


def _add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", choices=("auto", "live", "lines", "json", "none"), default="auto",
                        help="progress on stderr: a live line on a terminal, a line every 10 s otherwise, JSON events "
                             "(one per line) with --json; auto (default) chooses among these; none turns it off")


def cmd_backup(args: argparse.Namespace) -> int:
    from ..backup.backup import BackupOptions, BaseBackup
    from ..common.timefmt import format_elapsed, format_size
    from ..pg.pgclient import PgClient

    config = _load(args)
    from ..repo.marks import annotations_from_arguments

    options = BackupOptions(type=args.type, checkpoint=args.checkpoint, max_rate=args.max_rate or "",
                            from_standby=args.from_standby, parent_label=args.parent or "",
                            annotations=annotations_from_arguments(args.annotate or []))
    with PgClient(config.postgres) as client, _progress(args, "backup") as progress:
        record = BaseBackup(config, client).run(options, progress)
    if args.json:
        _print_json(record)
    else:
        sys.stdout.write(
            "backup %s (%s%s) complete: %s to %s, %s of data stored in %s, %s\n"
            % (record["label"], record["type"], ", parent %s" % record["parent"] if record["parent"] else "",
               record["start_lsn"], record["stop_lsn"], format_size(record["database_size"]),
               format_size(record["stored_size"]), format_elapsed(record["duration_seconds"]))
        )
        resumed = record.get("resumed")
        if resumed and resumed["from"]:
            sys.stdout.write("resumed from the interrupted backup %s: %d of %d chunks (%s of data) reused as stored, "
                             "%d partly\n" % (", ".join(resumed["from"]), resumed["chunks_reused"], resumed["chunks"],
                                              format_size(resumed["tar_bytes_reused"]),
                                              resumed["chunks_partly_reused"]))
        for label, reason in sorted((resumed or {}).get("not_resumed_from", {}).items()):
            sys.stdout.write("not resumed from the interrupted backup %s: %s\n" % (label, reason))
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from ..repo.catalog import Catalog
    from ..repo.repository import Repository
    from ..retention.expire import pitr_from, policy_of

    config = _load(args)
    repository = Repository.from_config(config)
    repository.require_initialised()
    catalog = Catalog(repository, config.cluster)
    description = catalog.describe(pitr_from=pitr_from(policy_of(config), {b.label: b.record for b in catalog.backups()}))
    if config.copies and not config.source:
        from ..copies.ship import copy_status

        description["copies"] = copy_status(config)
    description["cluster_layout"] = _discovered_layout(args, config)
    if args.json:
        _print_json(description)
        return EXIT_OK
    from ..common.timefmt import format_duration, format_elapsed, format_size

    for backup in description["backups"]:
        sys.stdout.write("%-18s %-11s %-18s stop %s  %s in %s, %s  %s\n" % (
            backup["label"], backup["type"], backup["parent"] or "-", backup["stop_time"],
            format_size(backup["database_size"]), format_size(backup["stored_size"]),
            format_elapsed(backup["duration_seconds"]),
            ("restorable" + (" (to its consistency point only)" if backup["recovery"] == "consistency point" else ""))
            if backup["restorable"] else "NOT restorable: " + backup["reason"]))
        for line in _marks_lines(backup):
            sys.stdout.write("%-18s %s\n" % ("", line))
    for label in description["incomplete_backups"]:
        sys.stdout.write("%-18s incomplete (interrupted or running; never restorable)\n" % label)
    for dump in description["dumps"]:
        sys.stdout.write("%-18s logical    %-18s stop %s  databases: %s\n" % (
            dump["label"], dump["format"], dump["stop_time"], ", ".join(dump["databases"])))
    for timeline in description["wal"]["timelines"]:
        sys.stdout.write("WAL timeline %d: %s to %s, %d segments (%s)\n" % (
            timeline["timeline"], timeline["first"], timeline["last"], timeline["segments"],
            format_size(timeline["segments"] * description["wal"]["segment_size"])))
    for gap in description["wal"]["gaps"]:
        sys.stdout.write("WAL gap on timeline %d: %d segment(s) missing, %s to %s\n" % (
            gap["timeline"], gap["missing"], gap["first_missing"], gap["last_missing"]))
    for gap in description["wal"]["retention_gaps"]:
        sys.stdout.write("WAL removed by archive retention on timeline %d (expected): %d segment(s), %s to %s\n" % (
            gap["timeline"], gap["missing"], gap["first_missing"], gap["last_missing"]))
    for error in description["wal"]["unreadable_history_files"]:
        sys.stdout.write("UNREADABLE timeline history: %s\n" % error)
    for window in description["recoverable_windows"]:
        if window["kind"] == "consistency point":
            sys.stdout.write("recoverable: %s (%s) only, the consistency point of backup %s (archive retention keeps "
                             "no WAL after it)\n" % (window["earliest_time"], window["earliest_lsn"],
                                                     window["from_backup"]))
            continue
        sys.stdout.write("recoverable: %s (%s) to %s (archived %s), %s, from backup %s along %s\n" % (
            window["earliest_time"], window["earliest_lsn"], window["latest_lsn"], window["latest_time"],
            window_span(window), window["from_backup"], window["timeline_path"]))
    for copy in description.get("copies", []):
        if copy.get("reachable"):
            sys.stdout.write("copy %-12s %-12s %s%s: %d WAL files behind (lag %s), backups missing: %s\n" % (
                copy["name"], copy["medium"], "offsite " if copy["offsite"] else "", "immutable" if copy["immutable"] else "",
                copy["wal_files_missing"], format_duration(copy["lag_seconds"]), ", ".join(copy["backups_missing"]) or "none"))
        else:
            sys.stdout.write("copy %-12s UNREACHABLE: %s\n" % (copy["name"], copy["error"]))
    if not description["recoverable_windows"]:
        sys.stdout.write("nothing is recoverable yet: no backup with all of its WAL archived\n")
    layout = description["cluster_layout"]
    if layout and "error" in layout:
        hint = " HINT: %s" % layout["hint"] if layout["hint"] else ""
        sys.stdout.write("cluster: not discovered: %s%s\n" % (layout["error"], hint))
    elif layout:
        from ..pg.discovery import ClusterLayout, describe_layout

        sys.stdout.write("cluster: %s\n" % describe_layout(ClusterLayout(**{
            key: tuple(value) if key == "includes" else value
            for key, value in layout.items() if key in ClusterLayout._fields})))
    return EXIT_OK


def _marks_lines(backup) -> List[str]:
    """info's lines for a backup's keep and annotations (none when it has neither)."""
    lines = []
    keep = backup.get("keep") or {}
    if keep.get("forever"):
        lines.append("kept forever (set %s)" % keep["set_at"])
    elif keep.get("kept") and keep.get("until"):
        lines.append("kept until %s" % keep["until"])
    elif keep.get("kept"):
        lines.append("KEPT: %s" % keep.get("reason"))
    elif keep.get("expired"):
        lines.append("was kept until %s (passed: retention decides)" % keep["until"])
    notes = backup.get("annotations") or {}
    if notes:
        lines.append("annotations: %s" % ", ".join("%s=%s" % item for item in sorted(notes.items())))
    return lines


def window_span(window) -> str:
    """How long a recoverable window lasts, from its backup's end to its last archived WAL, in words."""
    from ..common.timefmt import format_duration, parse_utc_iso

    if not window["latest_time"]:  # the store kept no time for its last segment
        return "spanning an unknown time"
    return "spanning " + format_duration(max(parse_utc_iso(window["latest_time"]) -
                                             parse_utc_iso(window["earliest_time"]), 0.0))


def _discovered_layout(args: argparse.Namespace, config: Config):
    """The local cluster's layout (discovery.py) as a dict, or {"error", "hint"}
    when the one [postgres] names was not found; None when nothing names one."""
    from ..pg.discovery import layout_named

    layout, problem = layout_named(config.postgres, args.pgdata or "", args.debian_cluster or "")
    if problem:
        return {"error": problem.message, "hint": problem.hint or ""}
    return layout


def cmd_restore(args: argparse.Namespace) -> int:
    import os

    from ..pg.pgclient import PgClient
    from ..pg.recovery import build_target
    from ..restore.restore import RestoreRequest, plan_restore, restore

    config = _load(args)
    target = build_target(
        time=args.target_time or "", xid=args.target_xid or "", lsn=args.target_lsn or "",
        name=args.target_name or "", immediate=args.target_immediate,
        latest=args.target_latest or not any((args.target_time, args.target_xid, args.target_lsn,
                                              args.target_name, args.target_immediate)),
        inclusive=not args.exclusive, timeline=args.target_timeline, action=args.target_action,
    )
    malformed = [item for item in args.tablespace_map or [] if "=" not in item]
    if malformed:
        raise RestorekeeperError("--tablespace-map %s is not OID_OR_NAME=DIR" % malformed[0],
                                 "write it as --tablespace-map hot=/srv/pg/hot-restored (one per tablespace)")
    mapping = dict(item.split("=", 1) for item in args.tablespace_map or [])
    with PgClient(config.postgres) as client:
        if args.dry_run:
            plan = plan_restore(config, client, target, args.backup or "")
            result = {"backup": plan.backup.label, "chain": [b.label for b in plan.chain], "reason": plan.reason,
                      "target": plan.target._asdict(), "latest_transaction_in_archive": plan.latest_transaction}
        else:
            request = RestoreRequest(
                pgdata=os.path.abspath(args.pgdata), target=target, tool_path=os.path.abspath(sys.argv[0]),
                backup_label=args.backup or "", force=args.force, start=args.start or args.in_place,
                port=args.port or 0,
                socket_dir=args.socket_dir or "", standby=args.standby, primary_conninfo=args.primary_conninfo or "",
                tablespace_map=mapping, keep_archiving=args.keep_archiving, wait_timeout=args.wait_timeout,
                stage_wal=not args.no_stage_wal, in_place=args.in_place, aside_path=args.aside or "",
                delta=args.delta,
            )
            with _progress(args, "restore") as progress:
                result = restore(config, client, request, progress)
    if args.json:
        _print_json(result)
    else:
        from ..common.timefmt import format_elapsed

        sys.stdout.write("restore of backup %s (%s) for %s: %s\n" % (
            result["backup"], " + ".join(result["chain"]), target.describe(),
            result.get("state", "planned" if args.dry_run else "laid down, not started")))
        for phase, seconds in sorted(result.get("phases", {}).items()):
            sys.stdout.write("  %-8s %8s\n" % (phase, format_elapsed(seconds)))
        if result.get("delta"):
            from ..common.timefmt import format_size

            delta = result["delta"]
            sys.stdout.write("  delta: %d files kept, %d rewritten, %d removed; %s read, %s written\n" % (
                delta["kept"], delta["rewritten"], delta["removed"], format_size(delta["bytes_read"]),
                format_size(delta["bytes_written"])))
        if result.get("locked_while_paused"):
            sys.stdout.write("  note: recovery keeps %s locked while paused (the target lies inside the transaction "
                             "that locked them); promote to read them\n" % ", ".join(result["locked_while_paused"]))
    return EXIT_OK


def cmd_drill(args: argparse.Namespace) -> int:
    import os

    from ..restore.drill import run_drill, verification_line
    from ..restore.drillrequest import build_drill_options, read_queries_file
    from ..objectives.drillreport import write_reports
    from ..pg.pgclient import PgClient

    config = _load(args)
    targets = {"target_time": args.target_time, "target_xid": args.target_xid, "target_lsn": args.target_lsn,
               "target_name": args.target_name}
    # The same request, and the same refusals, as module restore_drill; a target given means mode "target".
    options = build_drill_options(
        tool_path=os.path.abspath(sys.argv[0]), mode="target" if any(targets.values()) else args.mode,
        targets=targets, backup_label=args.backup or "", scratch_dir=args.scratch_dir or "", keep=args.keep,
        rto_target=args.rto_target, rpo_target=args.rpo_target, checksum_table_names=args.checksum_table or (),
        queries=read_queries_file(args.queries) if args.queries else None, amcheck=not args.no_amcheck,
        row_counts=not args.no_row_counts, verify=args.verify, sample_percent_value=args.sample_percent,
        count_table_names=args.count_table or (), exact_verify_max_size=args.exact_verify_max_size,
        exact_count_max_size=args.exact_count_max_size,
        labels={"rto_target": "--rto-target", "rpo_target": "--rpo-target", "checksum_tables": "--checksum-table",
                "queries": "--queries %s" % args.queries, "sample_percent": "--sample-percent",
                "count_tables": "--count-table", "exact_verify_max_size": "--exact-verify-max-size",
                "exact_count_max_size": "--exact-count-max-size"})
    with PgClient(config.postgres) as client, _progress(args, "drill restore") as progress:
        report_data = run_drill(config, client, options, progress)
    if args.report_dir:
        report_data["report_files"] = write_reports(report_data, args.report_dir)
    if args.json:
        _print_json(report_data)
    else:
        from ..objectives.drillrun import summary_line

        sys.stdout.write(summary_line(report_data) + "\n")
        for check in report_data["checks"]:
            sys.stdout.write("  %-5s %s: %s\n" % (check["status"], check["name"], check["detail"]))
        sys.stdout.write("%s\n" % report_data["rto_breakdown"]["summary"])
        sys.stdout.write("%s\n" % verification_line(report_data.get("verification")))
        if report_data.get("report_files"):
            sys.stdout.write("report: %s\n" % report_data["report_files"]["html"])
    return EXIT_OK if report_data["result"] == "pass" else EXIT_FAILED


def _seconds_argument(text: str) -> int:
    """A duration argument (60, 5min, 12h, 1d) in seconds; argparse names the option on error."""
    import argparse as argparse_module  # argparse is loaded only when arguments are parsed

    from ..common.timefmt import parse_seconds

    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse_module.ArgumentTypeError(str(exc)) from None


def cmd_ship(args: argparse.Namespace) -> int:
    from ..copies.ship import Shipper

    config = _load(args)
    shipper = Shipper(config, log=lambda line: report("ship", "WARNING", line), full_interval=args.full_interval)
    if not args.once:
        shipper.run(interval=args.interval, full=args.full)
        return EXIT_OK
    with _progress(args, "ship") as progress:
        results = shipper.ship_once(args.copy or "", full=args.full, progress=progress)
    if args.json:
        _print_json([r._asdict() for r in results])
    else:
        for result in results:
            sys.stdout.write("copy %s: %d shipped, %d failed, %d still pending (%s pass, %d objects examined)\n"
                             % (result.copy, len(result.shipped), len(result.failed), max(result.pending, 0),
                                "full" if result.full else "incremental", result.examined))
    return EXIT_OK if all(not r.failed for r in results) else EXIT_FAILED


def cmd_policy(args: argparse.Namespace) -> int:
    import socket

    from ..copies.policy import evaluate, probe

    config = _load(args)
    report_data = evaluate(config, args.count_live_cluster, socket.gethostname(), probe(config))
    if args.json:
        _print_json(report_data)
    else:
        sys.stdout.write(report_data["explanation"] + "\n")
        for warning in report_data["warnings"]:
            sys.stdout.write("warning: %s\n" % warning)
    return EXIT_OK if report_data["compliant"] else EXIT_FAILED


def cmd_plan(args: argparse.Namespace) -> int:
    from ..pg.pgclient import PgClient
    from ..objectives.plan import check_targets, evaluate, finding_lines, gather
    from ..objectives.targets import ObjectiveError, parse_target

    try:
        targets = check_targets(args.tier, args.rpo_target, args.rto_target)
        interval = parse_target("backup_interval", args.backup_interval)
    except ObjectiveError as exc:
        # Bad input is not a verdict: exit 2, like any usage error.
        report("plan", "ERROR", exc)
        return EXIT_USAGE
    config = _load(args)
    with PgClient(config.postgres) as client:
        facts = gather(config, None if args.no_server else client)
    result = evaluate(targets, facts, backup_interval=interval, require_offsite=args.require_offsite)
    if args.json:
        _print_json(result)
    else:
        sys.stdout.write(result["summary"] + "\n")
        for line in finding_lines(result):
            sys.stdout.write(line + "\n")
    return EXIT_OK if result["met"] else EXIT_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    if args.all == bool(args.label):
        raise UsageError("verify needs either a backup label or --all")
    if args.all:
        return _verify_all(args)
    from ..backup.backup import verify_backup

    with _progress(args, "verify") as progress:
        result = verify_backup(_load(args), args.label, progress)
    if args.json:
        _print_json({"label": result.label, "files": result.files, "problems": result.problems,
                     "verified": not result.problems})
    for problem in result.problems:
        report("verify", "ERROR", "backup %s: %s" % (result.label, problem))
    if result.problems:
        return EXIT_FAILED
    if not args.json:
        sys.stdout.write("backup %s verified: %d files match the manifest\n" % (result.label, result.files))
    return EXIT_OK


def _verify_all(args: argparse.Namespace) -> int:
    from ..backup.repoverify import verify_repository
    from ..repo.catalog import Catalog
    from ..repo.repository import Repository
    from ..retention.expire import pitr_from, policy_of

    config = _load(args)
    repository = Repository.from_config(config)
    repository.require_initialised()
    records = {b.label: b.record for b in Catalog(repository, config.cluster).backups()}
    with _progress(args, "verify") as progress:
        result = verify_repository(config, progress, pitr_from(policy_of(config), records))
    if args.json:
        _print_json(result)
    else:
        sys.stdout.write("\n".join(verify_all_lines(result)) + "\n")
    return EXIT_OK if result["summary"]["sound"] else EXIT_UNSOUND


def verify_all_lines(result) -> "List[str]":
    """verify --all in words: a line per backup, per damaged WAL file and gap, and the summary."""
    lines = []
    for backup in result["backups"]:
        wal_range = "WAL %s..%s (%d segments)" % (backup["wal"]["first"], backup["wal"]["last"], backup["wal"]["segments"])
        if backup["problems"]:
            lines.append("backup %s: %s, %s: %s" % (backup["label"], backup["status"].upper(), wal_range,
                                                    "; ".join(backup["problems"])))
        else:
            lines.append("backup %s: ok, %d files match the manifest, %s archived and sound" % (
                backup["label"], backup["files"], wal_range))
    for label in result["incomplete_backups"]:
        lines.append("backup %s: incomplete (interrupted or running; never restorable), not verified" % label)
    for item in result["wal"]["damaged"]:
        lines.append("WAL %s: DAMAGED: %s" % (item["name"], item["error"]))
    for gap in result["wal"]["gaps"]:
        lines.append("WAL gap on timeline %d: %d segment(s) missing, %s to %s" % (
            gap["timeline"], gap["missing"], gap["first_missing"], gap["last_missing"]))
    for gap in result["wal"].get("retention_gaps", []):
        lines.append("WAL removed by archive retention on timeline %d (expected): %d segment(s), %s to %s" % (
            gap["timeline"], gap["missing"], gap["first_missing"], gap["last_missing"]))
    summary = result["summary"]
    lines.append("verify --all %s: %d backups (%d ok, %d damaged, %d missing WAL); %d WAL files checked, %d damaged; "
                 "%d needed segments missing; %d gaps" % (
                     "SOUND" if summary["sound"] else "FAILED", summary["backups"], summary["backups_ok"],
                     summary["backups_damaged"], summary["backups_missing_wal"], summary["wal_checked"],
                     summary["wal_damaged"], summary["wal_missing"], summary["gaps"]))
    return lines


def cmd_dump(args: argparse.Namespace) -> int:
    from ..backup.dump import DumpOptions, LogicalDump
    from ..pg.pgclient import PgClient

    config = _load(args)
    options = DumpOptions(databases=tuple(args.database or ()), format=args.format, jobs=args.jobs,
                          globals=not args.no_globals)
    with PgClient(config.postgres) as client:
        with _progress(args, "dump") as progress:
            record = LogicalDump(config, client).run(options, progress)
    if args.json:
        _print_json(record)
    else:
        from ..common.timefmt import format_elapsed, format_size

        for item in record["databases"]:
            sys.stdout.write("dump %s: database %s, %d tables, %d rows, %s stored\n" % (
                record["label"], item["name"], len(item["tables"]), item["rows"], format_size(item["stored_size"])))
        sys.stdout.write("dump %s complete (%s format%s), %s stored, %s\n" % (
            record["label"], record["dump_format"], ", with globals" if record["globals"] else "",
            format_size(record["stored_size"]), format_elapsed(record["duration_seconds"])))
    return EXIT_OK


def cmd_dump_restore(args: argparse.Namespace) -> int:
    from ..restore.logical import DumpRestore, RestoreOptions
    from ..pg.pgclient import PgClient

    config = _load(args)
    options = RestoreOptions(database=args.database, target=args.target_database, label=args.label or "",
                             table=args.table or "", schema=args.schema or "", create=args.create, jobs=args.jobs,
                             no_owner=args.no_owner, no_privileges=args.no_privileges)
    with PgClient(config.postgres) as client:
        result = DumpRestore(config, client).run(options)
    if args.json:
        _print_json(result)
    else:
        from ..common.timefmt import format_elapsed

        sys.stdout.write("restored %s%s of database %s from dump %s into database %s: %d tables, %d rows, "
                         "row counts equal to the dump, %s\n" % (
                             result["scope"], " " + (result["table"] and "%s.%s" % (result["schema"], result["table"])
                                                     or result["schema"] or ""),
                             result["database"], result["label"], result["target_database"], len(result["tables"]),
                             result["rows"], format_elapsed(result["duration_seconds"])))
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> int:
    from ..monitoring.monitoring import collect, config_failure_textfile, render_textfile, samples, source_failure, write_textfile

    try:
        config = _load(args)
    except RestorekeeperError:
        if args.textfile:  # the collector sees the failure instead of a stale file
            write_textfile(args.textfile, config_failure_textfile(""))
        raise
    status = collect(config)
    if args.json:
        _print_json(status)
        return EXIT_OK
    text = render_textfile(samples(status))
    if args.textfile:
        write_textfile(args.textfile, text)
    else:
        sys.stdout.write(text)
    for source in ("repository", "server", "copies", "drill", "policy", "stream"):
        if not status[source]["up"] and args.verbose:
            report("metrics", "WARNING", source_failure(source, status[source]))
    return EXIT_OK


CHECK_LIMITS = ("backup-age", "archive-lag", "ready", "copy-lag", "drill-age", "drill-rto", "stream-lag")


def cmd_check(args: argparse.Namespace) -> int:
    """Nagios plugin conventions: one line on stdout, exit 0/1/2/3; whatever
    goes wrong (even an unreadable configuration) is UNKNOWN, never a traceback."""
    from ..monitoring.monitoring import UNKNOWN, build_thresholds, check_line, collect, evaluate_check

    try:
        limits = build_thresholds({name: getattr(args, "max_" + name.replace("-", "_")) for name in CHECK_LIMITS},
                                  args.tier or "", args.require_drill_pass, args.require_policy)
        state, findings, perf, summary = evaluate_check(collect(_load(args)), limits)
        line = check_line(state, findings, perf, summary)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        state, line = UNKNOWN, "RESTOREKEEPER UNKNOWN - %s" % " ".join(str(exc).replace("|", "/").split())
        findings, perf, summary = [], [], ""
    if args.json:
        from ..monitoring.monitoring import STATE_NAMES

        _print_json({"state": state, "status": STATE_NAMES[state], "line": line, "summary": summary,
                     "findings": [{"status": STATE_NAMES[item.state], "reason": item.reason} for item in findings],
                     "perfdata": perf})
    else:
        sys.stdout.write(line + "\n")
    return state


def cmd_expire(args: argparse.Namespace) -> int:
    from ..config.config import Config
    from ..retention.expire import expire, summary_lines

    config = Config.load(args.config)
    overrides = {"full": args.full, "window": args.window, "min_restorable": args.min_restorable, "dumps": args.dumps,
                 "archive": args.archive, "archive_type": args.archive_type, "archive_window": args.archive_window}
    if args.label:
        return _expire_label(args, config, overrides)
    if args.force:
        raise Refusal("--force goes with --label only", "pass --label LABEL, or leave out --force")
    result = expire(config, copy=args.copy or "", every=args.all, dry_run=args.dry_run, overrides=overrides)
    return _expire_outcome(args, result, summary_lines)


def _expire_outcome(args: argparse.Namespace, result: Dict[str, Any], lines: Callable[[Dict[str, Any]], List[str]]) -> int:
    """Print an expire result (JSON or its summary lines), report each target that failed, exit accordingly."""
    if args.json:
        _print_json(result)
    else:
        sys.stdout.write("\n".join(lines(result)) + "\n")
    for target in result["targets"]:
        if target.get("error"):
            report("expire", "ERROR", "%s: %s" % (target["target"], target["error"]))
    return EXIT_FAILED if result["failed"] else EXIT_OK


def _expire_label(args: argparse.Namespace, config: Config, overrides) -> int:
    """expire --label LABEL: exactly that backup, whatever the policy says."""
    from ..retention.expire import expire_label, label_summary_lines

    given = sorted("--" + name.replace("_", "-") for name, value in overrides.items() if value is not None)
    if given:
        raise Refusal("--label removes one backup and takes no policy (%s)" % ", ".join(given),
                      "leave out the policy options, or --label")
    result = expire_label(config, args.label, copy=args.copy or "", every=args.all, dry_run=args.dry_run,
                          force=args.force)
    return _expire_outcome(args, result, label_summary_lines)


# ------------------------------------------------------------ keep, annotate
def cmd_keep(args: argparse.Namespace) -> int:
    from ..retention.keep import keep, parse_keep_until

    until = parse_keep_until(args.until) if args.until else None
    result = keep(_load(args), args.label, until=until, forever=args.forever, release=args.release,
                  check_mode=args.dry_run)
    return _keep_result(args, result, "released" if args.release else "kept")


def cmd_annotate(args: argparse.Namespace) -> int:
    from ..repo.marks import annotations_from_arguments
    from ..retention.keep import annotate

    if not args.pairs and not args.remove:
        raise Refusal("annotate needs KEY=VALUE pairs and/or --remove KEY",
                      "e.g. `restorekeeper annotate %s ticket=CHG-1234`" % args.label)
    result = annotate(_load(args), args.label, annotations_from_arguments(args.pairs), args.remove or [],
                      check_mode=args.dry_run)
    return _keep_result(args, result, "annotated")


def _keep_result(args: argparse.Namespace, result, verb: str) -> int:
    from ..retention.keep import summary_line

    if args.json:
        _print_json(result)
    else:
        sys.stdout.write(summary_line(("would be " if args.dry_run else "") + verb, result) + "\n")
    for warning in result["warnings"]:
        report(args.command, "WARNING", warning)
    return EXIT_OK


def _add_keep_commands(command) -> None:
    """restorekeeper keep LABEL --until DATE|--forever|--release, annotate LABEL K=V... (retention/keep.py)."""
    keep_cmd = command("keep", cmd_keep, "keep (pin) a backup beyond the retention policy, on the repository and "
                       "every copy, or release it")
    keep_cmd.add_argument("label", help="backup label (see restorekeeper info)")
    how = keep_cmd.add_mutually_exclusive_group(required=True)
    how.add_argument("--until", metavar="DATE", help="keep until this ISO 8601 date or date and time with a zone, "
                     "e.g. 2027-01-31 (00:00 UTC) or 2027-01-31T12:00:00+02:00")
    how.add_argument("--forever", action="store_true", help="keep until released")
    how.add_argument("--release", "--none", action="store_true", dest="release",
                     help="release the pin: retention decides again")
    keep_cmd.add_argument("--dry-run", action="store_true", help="only tell what would change")
    keep_cmd.add_argument("--json", action="store_true", help="print the result as JSON")
    note = command("annotate", cmd_annotate, "set or remove a backup's annotations (KEY=VALUE), on the repository "
                   "and every copy")
    note.add_argument("label", help="backup label (see restorekeeper info)")
    note.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="annotations to set")
    note.add_argument("--remove", action="append", metavar="KEY", help="remove this annotation (repeatable)")
    note.add_argument("--dry-run", action="store_true", help="only tell what would change")
    note.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_storage_agent(args: argparse.Namespace) -> int:
    from ..storage.ssh import serve_agent

    return serve_agent(args.root)


def cmd_stream(args: argparse.Namespace) -> int:
    from ..pg.pgclient import PgClient
    from ..archive import walstream

    config = _load(args)
    action = args.stream_command
    if action == "stop":
        pid = walstream.stop_daemon(args.pid_file, args.timeout)
        if args.json:
            _print_json({"stopped": bool(pid), "pid": pid})
        else:
            sys.stdout.write("stopped pid %d\n" % pid if pid else "not running\n")
        return EXIT_OK
    with PgClient(config.postgres) as client:
        if action == "run":
            return _stream_run(args, config, client)
        if action == "ensure-slot":
            created = walstream.ensure_slot(client, config.stream.slot, check=args.check)
            if args.json:
                _print_json({"changed": created, "slot": config.stream.slot})
            else:
                sys.stdout.write("replication slot %s %s\n" % (
                    config.stream.slot, ("would be created" if args.check else "created") if created else "exists"))
            return EXIT_OK
        if action == "synchronous":
            result = walstream.configure_synchronous(client, args.application_name or config.stream.application_name,
                                                     args.state == "enabled", args.standby_names or "", args.check)
            if args.json:
                _print_json(result)
            else:
                sys.stdout.write("synchronous_standby_names: %r -> %r%s\n" % (
                    result["before"], result["after"], " (check only)" if args.check and result["changed"] else ""))
            return EXIT_OK
    # status: read from the repository (any host that has it), not from the primary.
    from ..repo.repository import Repository

    status = walstream.load_stream_status(Repository.from_config(config).storage, config.cluster)
    daemon_pid = walstream.running_pid(args.pid_file) if args.pid_file else None
    if args.json:
        _print_json({"status": status, "age_seconds": walstream.status_age_seconds(status) if status else None,
                     "daemon_running": bool(daemon_pid), "daemon_pid": daemon_pid})
    else:
        sys.stdout.write(walstream.describe_status(status) + "\n")
        if args.pid_file:
            sys.stdout.write("daemon: %s\n" % ("running, pid %d" % daemon_pid if daemon_pid else "not running"))
    return EXIT_OK


def _stream_run(args: argparse.Namespace, config: Config, client) -> int:
    import os

    from ..archive.walstream import StreamSupervisor, start_daemon

    supervisor = StreamSupervisor(config, client, log=lambda line: report("stream", "INFO", line))
    if not args.daemon:
        supervisor.run()
        return EXIT_OK
    if not args.pid_file:
        from ..common.errors import ConfigError

        raise ConfigError("stream run --daemon needs --pid-file", "name the pid file the daemon writes")
    supervisor.archive.repository.require_initialised()  # refuse before detaching
    # One log file: the daemon's stdout and stderr go there (pg_receivewal's messages too), and so
    # do its timestamped log lines, written once (report() stops writing them to stderr).
    log_file = os.path.abspath(args.log_file or config.stream.spool_path + ".log")
    level = args.log_level

    def run_logged(ready) -> None:  # in the detached process, whose stderr is log_file
        global _logger, _stderr_is_log_file  # pylint: disable=global-statement
        from ..common.version import version_line
        from . import logsetup

        _logger, _stderr_is_log_file = logsetup.configure(log_file, level or "", sys.stderr), True
        _logger.info("stream daemon started (%s)", version_line(PROG))
        supervisor.run(ready)

    outcome = start_daemon(run_logged, os.path.abspath(args.pid_file), log_file)
    if args.json:
        _print_json({"started": outcome["started"], "pid": outcome["pid"], "log_file": log_file})
    else:
        sys.stdout.write("%s pid %d (log %s)\n" % ("started" if outcome["started"] else "already running",
                                                   outcome["pid"], log_file))
    return EXIT_OK


def _print_json(value) -> None:
    import json

    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _add_common_options(sub: argparse.ArgumentParser) -> None:
    """--config, --verbose, --log-file and --log-level: every command has them."""
    from ..config.config import CONFIG_ENVIRONMENT_VARIABLE, DEFAULT_PATH, LEGACY_DEFAULT_PATH
    from .logsetup import LEVELS

    sub.add_argument("--config", "-c", help="configuration file (default: $%s, else %s, else the deprecated %s)"
                     % (CONFIG_ENVIRONMENT_VARIABLE, DEFAULT_PATH, LEGACY_DEFAULT_PATH))
    sub.add_argument("--verbose", "-v", action="store_true", help="report success too, not only failures")
    sub.add_argument("--log-file", metavar="PATH", default="",
                     help="append timestamped lines to this file (created mode 0640): start, end and exit code, "
                          "errors, and every message also written to stderr")
    sub.add_argument("--log-level", choices=LEVELS,
                     help="the lowest level logged (default info); without --log-file, records not already "
                          "on stderr (start, end, debug details) go to stderr")


def _add_json_option(sub: argparse.ArgumentParser, what: str) -> None:
    sub.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout, %s (sizes "
                     "in bytes, durations in seconds; keys are stable, new ones may be added)" % what)


def build_parser() -> "argparse.ArgumentParser":
    from ..common.version import version_line

    parser = _parser_class()(prog=PROG, description="PostgreSQL backups proven by restores.",
                             epilog="Exit codes: 0 success, 1 failure, 2 usage error; verify --all 3 when anything "
                                    "checked is damaged or missing; check 0-3 (Nagios); wal-fetch 1 not archived, "
                                    "255 any other failure.")
    parser.add_argument("--version", action="version", version=version_line(PROG))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(name: str, handler, help_text: str, reads_copies: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _add_common_options(sub)
        if reads_copies:
            sub.add_argument("--source", metavar="COPY", help="read from this copy instead of the repository")
        sub.set_defaults(handler=handler)
        return sub

    push = command("wal-push", cmd_wal_push, "archive one WAL file durably (archive_command)")
    push.add_argument("path", help="path of the WAL file, %%p")
    push.add_argument("name", help="file name of the WAL file, %%f")
    pusher = command("wal-pusher", cmd_wal_pusher, "resident WAL pusher of one cluster (a service): pushes the "
                     "segments PostgreSQL marks .ready ahead of archive_command, which then only finds the marker")
    pusher.add_argument("--cluster", metavar="NAME", help="refuse to start unless [cluster] name is NAME")
    pusher.add_argument("--pgdata", help="the cluster's data directory (default: [postgres] pgdata)")
    pusher.add_argument("--once", action="store_true", help="one pass over the ready segments, then exit")
    _add_json_option(pusher, 'with --once: {"pushed": N, "stopped": why}')
    fetch = command("wal-fetch", cmd_wal_fetch, "restore one WAL file from the archive (restore_command)", reads_copies=True)
    fetch.add_argument("name", help="file name wanted, %%f")
    fetch.add_argument("path", help="where to write it, %%p")
    wal_list = command("wal-list", cmd_wal_list, "list the archived WAL files", reads_copies=True)
    _add_json_option(wal_list, '{"cluster", "repository", "files": [names, sorted]}')
    repo_create = command("repo-create", cmd_repo_create, "initialise the repository (idempotent)")
    _add_json_option(repo_create, '{"created": true|false, "repository": path}')
    backup = command("backup", cmd_backup, "take a verified physical base backup with pg_basebackup")
    backup.add_argument("--type", choices=("full", "incremental", "auto"), default="full",
                        help="incremental needs PostgreSQL 17+ and summarize_wal; auto picks (default full)")
    backup.add_argument("--checkpoint", choices=("fast", "spread"), default="fast")
    backup.add_argument("--max-rate", help="pg_basebackup transfer rate limit, e.g. 100M")
    backup.add_argument("--from-standby", action="store_true", help="allow backing up a server in recovery")
    backup.add_argument("--parent", help="with --type incremental: build on this backup instead of the newest")
    backup.add_argument("--json", action="store_true", help="print the backup record as JSON")
    backup.add_argument("--annotate", action="append", metavar="KEY=VALUE",
                        help="annotate the backup (repeatable); shown by info, changed later with annotate")
    _add_progress_option(backup)
    verify = command("verify", cmd_verify, "re-read a stored backup and check every file against its manifest; with "
                     "--all every backup, the WAL each needs to reach consistency and every archived WAL file "
                     "(exit 0 all sound, 3 anything damaged or missing)", reads_copies=True)
    verify.add_argument("label", nargs="?", help="backup label (see restorekeeper info)")
    verify.add_argument("--all", action="store_true",
                        help="verify the whole repository: each backup ok, damaged or missing-wal, WAL files checked, "
                             "damaged or missing where a backup needs them, gaps in the archive, a summary")
    _add_json_option(verify, 'LABEL: {"label", "files", "problems", "verified"}; --all: {"backups": [{"label", '
                     '"status": ok|damaged|missing-wal, "restorable", "files", "problems", "wal": {"first", "last", '
                     '"segments", "missing", "damaged"}}], "incomplete_backups", "wal": {"checked", "damaged": [{"name", '
                     '"error"}], "missing", "gaps"}, "summary": {..., "sound"}}')
    _add_progress_option(verify)
    restore_cmd = command("restore", cmd_restore, "restore a backup into a data directory, to a recovery target", reads_copies=True)
    restore_cmd.add_argument("--pgdata", required=True, help="data directory to restore into (empty or new)")
    for option, help_text in (("--target-time", "timestamp WITH time zone, e.g. '2026-06-14 14:31:59+00'"),
                              ("--target-xid", "transaction id"), ("--target-lsn", "LSN, e.g. 0/3000060"),
                              ("--target-name", "restore point name")):
        restore_cmd.add_argument(option, help=help_text)
    restore_cmd.add_argument("--target-immediate", action="store_true", help="stop at the first consistent point")
    restore_cmd.add_argument("--target-latest", action="store_true", help="replay all archived WAL (default)")
    restore_cmd.add_argument("--exclusive", action="store_true", help="stop just before the target, not after it")
    restore_cmd.add_argument("--target-timeline", default="latest", help="latest (default), current or a number")
    restore_cmd.add_argument("--target-action", choices=("pause", "promote", "shutdown"), default="pause")
    restore_cmd.add_argument("--backup", help="restore this backup label instead of the one chosen for the target")
    restore_cmd.add_argument("--force", action="store_true",
                             help="move a non-empty data directory aside (never deleted); a running one is refused")
    restore_cmd.add_argument("--start", action="store_true", help="start the server and wait until the target")
    restore_cmd.add_argument("--in-place", action="store_true",
                             help="replace the live cluster of --pgdata: check everything first, stop it, move its "
                                  "directory aside, restore, start it as it normally starts; on failure put it back "
                                  "and start it again (implies --start)")
    restore_cmd.add_argument("--aside", help="with --in-place: where the live data directory is moved (kept)")
    restore_cmd.add_argument("--delta", action="store_true",
                             help="restore over --pgdata, an existing stopped data directory of the same cluster (or "
                                  "an empty one), writing only the pages that differ from the backup and removing "
                                  "those it does not have (tablespaces included, in their locations); refused on a "
                                  "running server, another cluster's directory, an incremental chain or a tablespace "
                                  "link pointing elsewhere than the backup's (or --tablespace-map) location")
    restore_cmd.add_argument("--port", type=int, help="port of the restored server")
    restore_cmd.add_argument("--socket-dir", help="unix_socket_directories of the restored server")
    restore_cmd.add_argument("--standby", action="store_true", help="restore as a warm standby (standby.signal)")
    restore_cmd.add_argument("--primary-conninfo", help="with --standby: stream from this primary")
    restore_cmd.add_argument("--tablespace-map", action="append", metavar="OID_OR_NAME=DIR",
                             help="restore a tablespace elsewhere (repeatable)")
    restore_cmd.add_argument("--keep-archiving", action="store_true",
                             help="keep archive_mode of the backup (default: off, so a copy never archives)")
    restore_cmd.add_argument("--wait-timeout", type=int, default=3600, help="seconds to wait for the target")
    restore_cmd.add_argument("--no-stage-wal", action="store_true",
                             help="with --start: let PostgreSQL fetch every WAL file through wal-fetch instead of "
                                  "staging the WAL it needs ahead, in parallel ([restore] stage_wal)")
    restore_cmd.add_argument("--dry-run", action="store_true", help="only choose the backup and check the target")
    restore_cmd.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_progress_option(restore_cmd)
    drill = command("drill", cmd_drill, "restore into a scratch cluster, verify it, measure RTO and RPO", reads_copies=True)
    drill.add_argument("--mode", choices=("restore-point", "latest"), default="restore-point",
                       help="restore to a restore point the drill creates (default) or to the end of the archive")
    drill.add_argument("--backup", help="backup label to restore (default: chosen for the target)")
    for option, help_text in (("--target-time", "drill a recovery to this moment (with time zone) instead"),
                              ("--target-xid", "... to this transaction"), ("--target-lsn", "... to this LSN"),
                              ("--target-name", "... to this existing restore point")):
        drill.add_argument(option, help=help_text)
    drill.add_argument("--scratch-dir", help="where the scratch cluster is made (default: the temp directory)")
    drill.add_argument("--keep", action="store_true", help="leave the scratch cluster running for inspection")
    drill.add_argument("--rto-target", help="fail when the restore takes longer, e.g. 15min")
    drill.add_argument("--rpo-target", help="fail when more would have been lost, e.g. 5min")
    drill.add_argument("--checksum-table", action="append", metavar="DB:SCHEMA.TABLE",
                       help="compare the full content of this table (repeatable)")
    drill.add_argument("--queries", metavar="FILE", help="JSON list of spot checks {name, database, sql, expected}")
    drill.add_argument("--no-amcheck", action="store_true", help="skip pg_amcheck")
    drill.add_argument("--no-row-counts", action="store_true", help="skip per-table row counts")
    drill.add_argument("--verify", choices=("auto", "exact", "sample", "catalog"), default="auto",
                       help="how the data is compared with the source: exact counts every table in one transaction "
                            "per database (a full scan of the source); sample compares the catalog and table sizes, "
                            "counts small and --count-table tables exactly and samples the rest; catalog compares "
                            "catalog and sizes only; auto (default) is exact below --exact-verify-max-size, else sample")
    drill.add_argument("--sample-percent", default="1", metavar="PERCENT",
                       help="with --verify sample: TABLESAMPLE SYSTEM percent of each large table (default 1)")
    drill.add_argument("--count-table", action="append", metavar="DB:SCHEMA.TABLE",
                       help="with --verify sample: count this table exactly (repeatable)")
    drill.add_argument("--exact-verify-max-size", metavar="SIZE",
                       help="with --verify auto: sources smaller than this are verified exactly (default 10GiB)")
    drill.add_argument("--exact-count-max-size", metavar="SIZE",
                       help="with --verify sample: tables up to this size are counted exactly (default 16MiB)")
    drill.add_argument("--report-dir", help="write JSON, JUnit XML and HTML reports and the history here")
    drill.add_argument("--json", action="store_true", help="print the report data as JSON")
    _add_progress_option(drill)
    ship = command("ship", cmd_ship, "copy new WAL and backups to every declared copy, verified (a service)")
    ship.add_argument("--once", action="store_true", help="one pass, then exit (non-zero if anything failed)")
    ship.add_argument("--copy", help="with --once: only this copy")
    ship.add_argument("--interval", type=float, default=10.0, help="seconds between passes (default 10)")
    ship.add_argument("--json", action="store_true", help="with --once: print the results as JSON")
    _add_progress_option(ship)
    ship.add_argument("--full", action="store_true",
                      help="list the whole repository and every copy (a full reconciliation; with the service: its "
                           "first pass); otherwise a pass lists only what can be new since the copy's last pass")
    ship.add_argument("--full-interval", type=_seconds_argument, default=86400, metavar="DURATION",
                      help="a full reconciliation at least this often, e.g. 12h (default 1d)")
    policy = command("policy", cmd_policy, "judge the copies against the 3-2-1 rule and explain what is missing")
    policy.add_argument("--count-live-cluster", action="store_true",
                        help="count the running cluster as one copy (off: a bad DELETE reaches it at once)")
    policy.add_argument("--json", action="store_true", help="print the verdict as JSON")
    plan = command("plan", cmd_plan, "does the current layout provably meet the RPO/RTO targets? "
                   "exit 0 when it does, 1 when not (one line per finding, with the fix), 2 for unusable targets")
    plan.add_argument("--tier", choices=("critical", "important", "standard"),
                      help="critical (RPO 0, RTO 15min), important (5min, 1h), standard (24h, 4h)")
    plan.add_argument("--rpo-target", help="RPO, e.g. 5min (wins over the tier's)")
    plan.add_argument("--rto-target", help="RTO, e.g. 1h (wins over the tier's)")
    plan.add_argument("--backup-interval", help="the backup schedule's interval, e.g. 12h (default: observed)")
    plan.add_argument("--require-offsite", action="store_true", help="the plan needs an offsite copy within the RPO")
    plan.add_argument("--no-server", action="store_true", help="do not ask the server (its checks are unproven)")
    plan.add_argument("--json", action="store_true", help="print the verdict and findings as JSON")
    info = command("info", cmd_info, "backups, WAL ranges, gaps and the recoverable window", reads_copies=True)
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.add_argument("--pgdata", help="show the layout of the cluster of this data directory "
                      "(default: [postgres] pgdata, debian_cluster or port)")
    info.add_argument("--debian-cluster", metavar="VERSION/NAME", help="... of this postgresql-common cluster, "
                      "e.g. 15/main")
    dump = command("dump", cmd_dump, "take a verified logical backup (pg_dump per database, plus globals)")
    dump.add_argument("--database", "-d", action="append", help="database to dump (repeatable; default all)")
    dump.add_argument("--format", choices=("custom", "directory"), default="custom")
    dump.add_argument("--jobs", "-j", type=int, default=1, help="parallel pg_dump jobs (directory format)")
    dump.add_argument("--no-globals", action="store_true", help="skip pg_dumpall --globals-only")
    dump.add_argument("--json", action="store_true", help="print the dump record as JSON")
    _add_progress_option(dump)
    restore = command("dump-restore", cmd_dump_restore,
                      "restore a database, schema or table of a dump into a fresh database, verified by row counts")
    restore.add_argument("--label", help="dump label (default: the newest dump holding the database)")
    restore.add_argument("--database", "-d", required=True, help="database of the dump to restore")
    only = restore.add_mutually_exclusive_group()
    only.add_argument("--table", "-t", help='only this table: SCHEMA.TABLE (quote dotted names: "a.b"."c")')
    only.add_argument("--schema", "-n", help="only this schema")
    restore.add_argument("--target-database", required=True, help="database to restore into")
    restore.add_argument("--create", action="store_true",
                         help="create the target (it must not exist); without it, it must exist and be empty")
    restore.add_argument("--jobs", "-j", type=int, default=1, help="parallel pg_restore jobs (directory format)")
    restore.add_argument("--no-owner", action="store_true", help="do not restore object ownership")
    restore.add_argument("--no-privileges", action="store_true", help="do not restore grants")
    restore.add_argument("--json", action="store_true", help="print the result as JSON")
    metrics = command("metrics", cmd_metrics, "backup, archiving, copy, drill and 3-2-1 metrics in the Prometheus "
                      "text format (node_exporter textfile collector)")
    metrics.add_argument("--textfile", metavar="FILE.prom",
                         help="write atomically to this file (mode 0644) instead of stdout")
    metrics.add_argument("--json", action="store_true", help="print the collected status as JSON instead")
    check = command("check", cmd_check, "Nagios/Icinga plugin: one line, exit 0 OK, 1 WARNING, 2 CRITICAL, "
                    "3 UNKNOWN. Limits are CRITICAL or WARNING,CRITICAL; an empty value turns one off")
    check.add_argument("--tier", choices=("critical", "important", "standard"),
                       help="take the limits not given here from this tier (see docs/monitoring.md)")
    for name, example in (("backup-age", "26h,48h"), ("archive-lag", "5min,15min"), ("ready", "5,10"),
                          ("copy-lag", "15min,1h"), ("drill-age", "8d,15d"), ("drill-rto", "45min,1h"),
                          ("stream-lag", "10s,1min")):
        check.add_argument("--max-" + name, metavar="LIMIT", help="e.g. %s" % example)
    check.add_argument("--require-drill-pass", action="store_true",
                       help="a failed or missing drill is CRITICAL (default WARNING)")
    check.add_argument("--require-policy", action="store_true", help="a layout breaking 3-2-1 is CRITICAL")
    _add_json_option(check, '{"state": 0-3, "status", "line", "summary", "findings": [{"status", "reason"}], '
                     '"perfdata": [...]} (the exit code is the same)')
    expire_cmd = command("expire", cmd_expire,
                         "delete backups, WAL and dumps the retention policy no longer needs ([retention])")
    where = expire_cmd.add_mutually_exclusive_group()
    where.add_argument("--copy", metavar="NAME", help="expire this copy (its retention_* keys) instead of the repository")
    where.add_argument("--all", action="store_true", help="the repository and every copy, each by its own policy")
    expire_cmd.add_argument("--full", type=int, help="override: keep the newest N full backups and their incrementals")
    expire_cmd.add_argument("--window", help="override: keep what recovery to any moment of this window needs, e.g. 14d")
    expire_cmd.add_argument("--min-restorable", type=int, help="override: refuse to leave fewer restorable backups")
    expire_cmd.add_argument("--dumps", type=int, help="override: keep the newest N dumps of each database")
    expire_cmd.add_argument("--archive", type=int, metavar="N",
                            help="override: keep WAL for point-in-time recovery only from the newest N backups "
                            "(of --archive-type) on; older kept backups keep the WAL of their consistency")
    expire_cmd.add_argument("--archive-type", choices=("full", "any"),
                            help="override: which backups --archive counts (default full)")
    expire_cmd.add_argument("--archive-window", metavar="DURATION",
                            help="override: keep WAL for point-in-time recovery over this window, e.g. 14d")
    expire_cmd.add_argument("--dry-run", action="store_true", help="only list what would go and why the rest stays")
    expire_cmd.add_argument("--json", action="store_true", help="print the result as JSON")
    expire_cmd.add_argument("--label", help="remove exactly this backup (refused when it is kept, when an "
                            "incremental depends on it, or when it is the only backup)")
    expire_cmd.add_argument("--force", action="store_true", help="with --label: remove it even if it is the only backup")
    _add_keep_commands(command)
    _add_stream_commands(commands)
    agent = commands.add_parser("storage-agent", help="serve a repository directory on stdin/stdout to a remote "
                                "restorekeeper (started by ssh for ssh repositories and copies)")
    agent.add_argument("--root", required=True, help="the repository directory on this host")
    agent.set_defaults(handler=cmd_storage_agent)
    return parser


def _add_stream_commands(commands) -> None:
    """restorekeeper stream run|stop|status|ensure-slot|synchronous (walstream.py)."""
    stream = commands.add_parser("stream", help="stream WAL continuously with pg_receivewal into the repository "
                                 "(RPO zero)", description="stream WAL with pg_receivewal into the repository")
    actions = stream.add_subparsers(dest="stream_command", metavar="ACTION")
    actions.required = True

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        _add_common_options(sub)
        sub.set_defaults(handler=cmd_stream)
        return sub

    run = action("run", "run the stream in the foreground (a service), or detached with --daemon (its stdout, "
                 "stderr and log lines then go to --log-file, default <spool_path>.log)")
    run.add_argument("--daemon", action="store_true", help="detach (hosts without systemd); needs --pid-file")
    run.add_argument("--pid-file", help="with --daemon: pid file; a running stream named there is left alone")
    _add_json_option(run, 'with --daemon: {"started", "pid", "log_file"}')
    stop = action("stop", "stop the stream daemon named by --pid-file")
    stop.add_argument("--pid-file", required=True)
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    _add_json_option(stop, '{"stopped": true|false, "pid"}')
    status = action("status", "the stream's last reported status (lag, synchronous state) from the repository")
    status.add_argument("--json", action="store_true", help="print as JSON")
    status.add_argument("--pid-file", help="also tell whether the daemon of this pid file runs here")
    slot = action("ensure-slot", "create the stream's replication slot on the primary when missing")
    slot.add_argument("--check", action="store_true", help="only tell whether it would be created")
    slot.add_argument("--json", action="store_true", help="print as JSON")
    sync = action("synchronous", "make the stream the primary's synchronous standby, or stop it being one "
                  "(run against the primary as a superuser)")
    sync.add_argument("--state", choices=("enabled", "disabled"), default="enabled")
    sync.add_argument("--standby-names", help='synchronous_standby_names to set (default: "<application_name>")')
    sync.add_argument("--application-name", help="the stream's application name (default: [stream] application_name)")
    sync.add_argument("--check", action="store_true", help="only tell what would change")
    sync.add_argument("--json", action="store_true", help="print as JSON")


def _failure_code(command: Optional[str]) -> int:
    return EXIT_ABORT_RECOVERY if command == "wal-fetch" else EXIT_FAILED


def _usage_failure(command: Optional[str], exc: Exception) -> int:
    if command == "check":  # a Nagios plugin: one line on stdout, 3 UNKNOWN
        sys.stdout.write("RESTOREKEEPER UNKNOWN - %s\n" % " ".join(str(exc).split()))
        return 3
    report(command or "", "ERROR", exc)
    return EXIT_ABORT_RECOVERY if command == "wal-fetch" else EXIT_USAGE


def _command_name(args: argparse.Namespace) -> str:
    action = getattr(args, "stream_command", None)
    return "%s %s" % (args.command, action) if action else args.command


def _start_logging(args: argparse.Namespace) -> None:
    """Python logging for --log-file/--log-level (logsetup.py), once per run; nothing without them."""
    global _logger  # pylint: disable=global-statement
    _logger = None
    log_file, level = getattr(args, "log_file", ""), getattr(args, "log_level", None)  # storage-agent has neither
    if not (log_file or level) or (args.command == "stream" and getattr(args, "daemon", False)):
        return  # the stream daemon opens its log itself, once detached (_stream_run)
    from . import logsetup

    _logger = logsetup.configure(log_file, level or "", sys.stderr)


def _resolve_config(args: argparse.Namespace) -> None:
    """--config, else $RESTOREKEEPER_CONFIG, else the default path (config.default_config_path)."""
    if getattr(args, "config", "") is None:
        import os

        from ..config.config import default_config_path

        args.config, notice = default_config_path(os.environ, os.path.exists)
        if notice:
            report(args.command, "WARNING", notice)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["wal-push"]:
        from ..archive.pushmarker import quick_push

        if quick_push(argv):  # a marker proves the segment archived: nothing else to import or do
            return EXIT_OK
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    try:
        args = _fast_wal_args(argv) or build_parser().parse_args(argv)
    except UsageError as exc:
        return _usage_failure(command, exc)
    try:
        _start_logging(args)
    except RestorekeeperError as exc:  # the log file cannot be opened: nothing was done yet
        return _usage_failure(command, exc) if command == "check" else _failed(args, exc)
    if _logger is None:
        return _run(args)
    import time

    from ..common.version import version_line

    started = time.monotonic()
    name = _command_name(args)
    _logger.info("%s: started (%s)", name, version_line(PROG))
    code = _run(args)
    from ..common.timefmt import format_elapsed

    _logger.info("%s: ended with exit code %d after %s", name, code, format_elapsed(time.monotonic() - started))
    from . import logsetup

    logsetup.close()
    return code


def _failed(args: argparse.Namespace, exc: Exception) -> int:
    report(args.command, "ERROR", exc)
    return _failure_code(args.command)


def _run(args: argparse.Namespace) -> int:
    """The command's handler, every failure reported as one line with the command's exit code."""
    try:
        _resolve_config(args)
        if _logger is not None:
            _logger.debug("%s: configuration %s", _command_name(args), getattr(args, "config", "-"))
        return args.handler(args)
    except UsageError as exc:
        return _usage_failure(args.command, exc)
    except RestorekeeperError as exc:
        return _failed(args, exc)
    except KeyboardInterrupt:
        return _failed(args, "interrupted")
    except Exception as exc:  # a bug must still fail safely, with a readable line first
        report(args.command, "ERROR", "unexpected %s: %s" % (type(exc).__name__, exc))
        import traceback

        traceback.print_exc()
        if _logger is not None:
            from .logsetup import ON_STDERR

            _logger.error("%s", traceback.format_exc().rstrip(), extra={ON_STDERR: True})
        return _failure_code(args.command)
