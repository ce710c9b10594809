"""Restore a backup into a data directory and recover it to a target.

Every check that can fail is made before the data directory is touched:
the target's form, that it lies inside the recoverable window, which backup
reaches it, that the directory is not a running cluster's. Then the backup
(or its incremental chain, combined by pg_combinebackup) is laid down with
every file checked against the manifest on the way, the recovery target is
written, and, when asked, the server is started and watched until the target
is reached, reporting the time of each phase: the components of RTO.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import os
import shutil
import subprocess
import threading
import time
from typing import AbstractSet, Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Tuple, Union

from ..common import compression
from ..common.progress import Meter, ProgressCallback
from ..pg import serverconfig, wal
from ..common.timefmt import utc_iso
from ..common.waiting import poll_until
from ..repo.catalog import BackupInfo, Catalog
from ..repo.chunks import open_chunked
from ..repo.layout import backup_prefix
from ..config.config import Config
from ..pg.discovery import ClusterLayout, postmaster_pid
from ..common.errors import CorruptObject, PostgresError, RestorekeeperError
from ..pg.manifest import (
    MANIFEST_NAME,
    SHA256,
    FileDigest,
    Manifest,
    digest_of,
    manifest_algorithm,
    new_hasher,
    parse_manifest,
    verify_against_manifest,
)
from ..pg.pgclient import PgClient
from ..pg.recovery import RecoveryTarget, TargetError, recovery_settings, write_recovery_config
from ..repo.repository import Repository
from .delta import DeltaLayDown, check_delta_tablespaces, check_delta_target, lay_down_delta
from .restoreprep import (ClusterControl, ConfigurationPlan, check_binaries, check_free_space, check_python_packages,
                          configuration_plan, live_cluster, server_bindir)
from ..pg.services import ServiceError
from ..pg.safetree import (SafeTree, UnsafeBackup, canonical, manifest_problems, member_problem, record_problems,
                           tablespace_map_problems)
from ..pg.tarstream import DIRECTORY, FILE, TarMember, TarReader
from ..pg.timelines import (
    Leg,
    Switch,
    TimelineUnreachable,
    WalReach,
    archived_positions,
    describe_path,
    gap_note,
    reach,
    resolve_timeline,
    timeline_path,
)
from ..archive.walarchive import WalArchive, restore_command
from ..archive.walinspect import WalInspector
from ..archive.walstage import WalStager, stage_directory, stage_limit, staged_restore_command, wal_to_stage
from ..common.errors import RestoreFailed
from .parallel import WriterPool, check_workers


class RestoreRequest(NamedTuple):
    pgdata: str
    target: RecoveryTarget
    tool_path: str
    backup_label: str = ""
    force: bool = False
    start: bool = False
    port: int = 0
    socket_dir: str = ""
    standby: bool = False
    primary_conninfo: str = ""
    tablespace_map: Dict[str, str] = {}
    keep_archiving: bool = False
    wait_timeout: int = 3600
    # Fetch the WAL the recovery needs ahead, in parallel (walstage.py); only
    # with start and not standby, and when [restore] stage_wal allows it.
    stage_wal: bool = True
    # Replace the live cluster of pgdata (restoreprep.py): preflight, stop it,
    # move its directory aside to aside_path (default next to it), restore,
    # start it the way it normally starts; on any failure put it back and
    # start it again.
    in_place: bool = False
    aside_path: str = ""
    # Restore over an existing data directory of the same cluster, rewriting
    # only the files that differ from the backup (delta.py).
    delta: bool = False


class RestorePlan(NamedTuple):
    backup: BackupInfo
    chain: List[BackupInfo]
    target: RecoveryTarget
    reason: str
    timeline: int
    latest_transaction: Optional[str]
    target_timeline: int = 0  # the timeline recovery ends on (before a promotion starts a new one)
    target_lsn: Optional[int] = None
    # The archived WAL recovery will ask for, in order: history files, then
    # the segments from the backup's start along its timeline path to the
    # target's segment (or to the end of the archived path).
    wal: Tuple[str, ...] = ()
    segment_size: int = 16 << 20


class Timer:
    """Wall time of named phases, in seconds."""

    def __init__(self) -> None:
        self.phases: Dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = round(self.phases.get(name, 0.0) + seconds, 3)


# ------------------------------------------------------------------ planning
class Route(NamedTuple):
    """The WAL a recovery from one backup reads: along the timeline history
    from the backup's timeline to the target timeline, as far as archived."""

    timeline: int
    legs: List[Leg]
    reach: WalReach


# Each restorable backup with its Route, or with why the target timeline cannot be followed from it.
Routes = List[Tuple[BackupInfo, Union[Route, TimelineUnreachable]]]


def plan_restore(config: Config, client: PgClient, target: RecoveryTarget, label: str = "") -> RestorePlan:
    """Choose the backup for a target and prove the target reachable. Reads
    only the repository (and runs pg_waldump on fetched WAL)."""
    repository = Repository.from_config(config)
    repository.require_initialised()
    catalog = Catalog(repository, config.cluster)
    description = catalog.describe()
    restorable = [catalog.get(b["label"]) for b in description["backups"] if b["restorable"]]
    if label:
        restorable = [b for b in restorable if b.label == label]
        if not restorable:
            raise TargetError("backup %r is not a restorable backup of cluster %r" % (label, config.cluster),
                              "`restorekeeper info` lists the restorable backups")
    if not restorable:
        raise TargetError("cluster %r has no restorable backup in %s" % (config.cluster, repository.storage.location),
                          "take one with `restorekeeper backup`")
    segment_size = catalog.segment_size()
    names = catalog.wal_names()
    archive = WalArchive(config, repository)
    histories = catalog.histories(names)
    present = archived_positions(names, segment_size)
    routes = [(backup, _route(backup, target, histories, present, segment_size)) for backup in restorable]
    with WalInspector(archive, client) as inspector:
        plan = _choose(catalog, routes, target, inspector)
    history = [name for name in names if wal.classify(name) == wal.TIMELINE_HISTORY]
    return plan._replace(wal=tuple(wal_to_stage(_wal_needed(list(plan.wal), plan.target_lsn, segment_size), history)),
                         segment_size=segment_size)


def _wal_needed(path_segments: List[str], target_lsn: Optional[int], segment_size: int) -> List[str]:
    """The archived segments recovery replays along the backup's timeline
    path: up to the target's segment (and the next, where its record may
    end) when the plan knows the target's LSN, else to the end of the path (a
    time target is found only by replaying; the stager's bound keeps the
    overshoot small)."""
    if target_lsn is None:
        return path_segments
    last = target_lsn // segment_size + 1
    return [name for name in path_segments if wal.segment_number(name, segment_size) <= last]


def _route(backup: BackupInfo, target: RecoveryTarget, histories: Dict[int, List[Switch]],
           present: FrozenSet[Tuple[int, int]], segment_size: int) -> Union[Route, TimelineUnreachable]:
    """The backup's Route, or the TimelineUnreachable saying why PostgreSQL
    would refuse to follow the target timeline from it."""
    timeline = resolve_timeline(target.timeline, backup.timeline, histories)
    try:
        legs = timeline_path(histories, backup.timeline, wal.parse_lsn(backup.record["start_lsn"]), backup.stop_lsn,
                             timeline)
    except TimelineUnreachable as exc:
        return exc
    return Route(timeline, legs, reach(legs, present, segment_size))


def _followable(routes: Routes) -> List[Tuple[BackupInfo, Route]]:
    return [(backup, route) for backup, route in routes if isinstance(route, Route)]


def _no_route(routes: Routes, target: RecoveryTarget) -> TargetError:
    backup, why = routes[-1]
    return TargetError(
        "no restorable backup can recover along recovery target timeline %s: from the newest, %s, %s"
        % (target.timeline, backup.label, why.message),
        "choose a target timeline the backup's timeline leads to (`restorekeeper wal-list` shows the .history files),"
        " or take a backup on the target timeline",
    )


def _choose(catalog: Catalog, routes: Routes, target: RecoveryTarget, inspector: WalInspector) -> RestorePlan:
    followable = _followable(routes)
    if not followable:
        raise _no_route(routes, target)

    def plan(backup: BackupInfo, route: Route, reason: str, lsn: Optional[int] = None) -> RestorePlan:
        end = inspector.last_transaction_end(route.reach.segments[-64:])
        latest_text = utc_iso(end.time.timestamp()) if end else None
        if len(route.legs) > 1:
            reason += ", following %s" % describe_path(route.legs)
        return RestorePlan(backup, catalog.chain(backup.label), target, reason, backup.timeline, latest_text,
                           route.timeline, lsn, tuple(route.reach.segments))

    if target.kind in ("latest", "immediate"):
        backup, route = followable[-1]
        if backup is routes[-1][0]:
            return plan(backup, route, "the newest restorable backup")
        return plan(backup, route, "the newest restorable backup timeline %d descends from (newer ones were taken "
                    "on a branch it left)" % route.timeline)
    if target.kind == "time":
        return _choose_for_time(routes, target, inspector, plan)
    if target.kind == "lsn":
        lsn = wal.parse_lsn(target.value)
        earlier = [(b, r) for b, r in routes if b.stop_lsn <= lsn]
        if not earlier:
            first = routes[0][0]
            raise TargetError("LSN %s is before the end of the oldest restorable backup (%s)"
                              % (target.value, first.record["stop_lsn"]),
                              "the earliest reachable LSN is %s" % first.record["stop_lsn"])
        if not _followable(earlier):
            raise _no_route(earlier, target)
        backup, route = _followable(earlier)[-1]
        if lsn >= route.reach.end_lsn:
            last = route.reach.segments[-1] if route.reach.segments else "none"
            raise TargetError("LSN %s is beyond the archived WAL (it ends at %s, segment %s%s)"
                              % (target.value, wal.format_lsn(route.reach.end_lsn), last, gap_note(route.reach)),
                              "wait until that WAL is archived, or use target latest")
        return plan(backup, route, "the newest backup that ended before LSN %s" % target.value, lsn)
    # name and xid: find where they are in the WAL, then the newest backup before that.
    for backup, route in reversed(followable):
        if target.kind == "name":
            found = inspector.find_restore_point(target.value, route.reach.segments)
        else:
            end = inspector.find_transaction_end(int(target.value), route.reach.segments)
            found = end.lsn if end else None
        if found is not None and found >= backup.stop_lsn:
            return plan(backup, route, "the newest backup that ended before %s %s (at %s)"
                        % (target.kind, target.value, wal.format_lsn(found)), found)
    what = "restore point %r" % target.value if target.kind == "name" else "transaction %s" % target.value
    raise TargetError("%s is not in the archived WAL after any restorable backup%s"
                      % (what, gap_note(followable[-1][1].reach)),
                      "check the name or xid; restore points are created with pg_create_restore_point()")


def _choose_for_time(routes: Routes, target: RecoveryTarget, inspector: WalInspector,
                     plan: Callable[[BackupInfo, Route, str], RestorePlan]) -> RestorePlan:
    moment = target.moment
    earlier = [(b, r) for b, r in routes if _parse_iso(b.record["stop_time"]) < moment]
    if not earlier:
        first = routes[0][0]
        raise TargetError(
            "target %s is before the end of the oldest restorable backup %s (it ended %s)"
            % (target.value, first.label, first.record["stop_time"]),
            "the earliest reachable moment is %s; a backup cannot be rewound past its own end" % first.record["stop_time"],
        )
    if not _followable(earlier):
        raise _no_route(earlier, target)
    chosen, route = _followable(earlier)[-1]
    end = inspector.last_transaction_end(route.reach.segments[-64:])
    if end is None:
        raise TargetError(
            "no transaction committed in the archived WAL after backup %s%s; PostgreSQL stops at a time target "
            "only when it replays a later transaction, so recovery would end before reaching %s"
            % (chosen.label, gap_note(route.reach), target.value),
            "use target latest or immediate, or wait until later transactions are archived",
        )
    if moment >= end.time:
        raise TargetError(
            "target %s is not before the last transaction in the archive after backup %s, which ended at %s%s; "
            "PostgreSQL stops at a time target only when it replays a later transaction, so recovery would "
            "end before reaching it" % (target.value, chosen.label, utc_iso(end.time.timestamp()), gap_note(route.reach)),
            "use target latest to replay all archived WAL, or pick a time before %s" % utc_iso(end.time.timestamp()),
        )
    return plan(chosen, route, "the newest backup that ended before %s" % target.value)


def _parse_iso(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------- directories
def check_target_directory(pgdata: str, force: bool) -> Optional[str]:
    """Refuse a running cluster's directory always, a non-empty one unless
    force; with force, return where the old contents will be moved (they
    are never deleted)."""
    if not os.path.isabs(pgdata):
        raise RestoreFailed("data directory %r is not an absolute path" % pgdata)
    pid = postmaster_pid(pgdata)
    if pid is not None:
        raise RestoreFailed(
            "%s belongs to a running PostgreSQL server (postmaster.pid names process %d)" % (pgdata, pid),
            "stop that server first, or restore into another directory",
        )
    if os.path.isdir(pgdata) and os.listdir(pgdata):
        if not force:
            raise RestoreFailed("data directory %s is not empty" % pgdata,
                                "restore into an empty or new directory, or pass force to move its contents aside")
        return "%s.before-restore-%s" % (pgdata.rstrip("/"), time.strftime("%Y%m%d-%H%M%S"))
    return None


def check_creatable(path: str, what: str) -> None:
    """Refuse early when a directory could not be created or written."""
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RestoreFailed("cannot create the %s %s: %s is not writable by uid %d" % (what, path, probe, os.geteuid()),
                            "choose a location the server's OS user owns")


def _prepare_directory(pgdata: str, aside: Optional[str]) -> None:
    if aside:
        os.rename(pgdata, aside)
    os.makedirs(pgdata, mode=0o700, exist_ok=True)
    os.chmod(pgdata, 0o700)


# ---------------------------------------------------------------- extraction
class _TimedReader:
    """Counts the time spent waiting on the repository (the fetch phase).
    Returns immutable bytes: the writer threads of a parallel extraction
    hold slices of what was read while the reader reads on, so a storage
    stream that reuses its buffer must not reach them."""

    def __init__(self, stream, timer: Timer) -> None:
        self._stream = stream
        self._timer = timer

    def read(self, size: int = -1) -> bytes:
        started = time.monotonic()
        data = self._stream.read(size)
        self._timer.add("fetch", time.monotonic() - started)
        return data if isinstance(data, bytes) else bytes(data)


class _MeteredReader:
    """Hands the count of every byte read (the tar laid down) to a Meter."""

    def __init__(self, stream, meter: Meter) -> None:
        self._stream = stream
        self._meter = meter

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data:
            self._meter.add(len(data))
        return data


def extract_archive(storage, key: str, codec: str, destination: str, timer: Timer,
                    algorithm: str = SHA256, manifest: Optional[Manifest] = None, prefix: str = "",
                    tablespace_oids: Optional[AbstractSet[str]] = None,
                    meter: Optional[Meter] = None, workers: int = 1,
                    chunks: Optional[List[Dict[str, Any]]] = None) -> Dict[str, FileDigest]:
    """Unpack one stored tar (its chunks when the record lists them:
    repo/chunks.py) into destination, checksumming every file as it
    is written. Returns the digests for comparison with the manifest.

    Each member is judged (safetree.member_problem: plain path, listed in the
    manifest with a checksum, symlinks only at pg_tblspc/<oid>) before any of
    its bytes are written, and written through SafeTree, which never follows
    a symlink. Symlink members are never created (lay_down_backup links each
    tablespace to the location the restore decided), nor is the tar's copy
    of backup_manifest (the restore writes the repository's verified one).

    With workers > 1 this thread reads, judges and creates each file, and a
    WriterPool (parallel.py) of that many threads writes and checksums the
    bytes; any failure stops them all and is reported as on one thread."""
    digests: Dict[str, FileDigest] = {}
    with open_chunked(storage, key, chunks, "archive %s" % key) as raw, SafeTree(destination) as tree, \
            (WriterPool(workers, algorithm) if workers > 1 else contextlib.nullcontext()) as pool:
        stream = compression.open_decompressed(_TimedReader(raw, timer), codec)
        if meter is not None and meter.callback is not None:
            stream = _MeteredReader(stream, meter)
        try:
            reader = TarReader(stream)
            for member in map(canonical, reader.members()):
                problem = member_problem(member, manifest, prefix, tablespace_oids)
                if problem:
                    raise UnsafeBackup(problem)
                if member.kind == DIRECTORY:
                    tree.make_directory(member.name)
                elif member.kind == FILE and (prefix or member.name != MANIFEST_NAME):
                    if pool is None:
                        digests[member.name] = _write_member(reader, member, tree, algorithm)
                    else:
                        pool.write(member.name, tree.create_file(member.name), member.size,
                                   functools.partial(reader.payload, member))
            if pool is not None:
                digests.update(pool.finish())
        except Exception as exc:  # decompression and tar format errors surface here
            if isinstance(exc, UnsafeBackup):
                raise UnsafeBackup("stored backup %s is refused: %s" % (key, exc.message)) from None
            if isinstance(exc, RestorekeeperError) and not isinstance(exc, CorruptObject):
                raise  # e.g. a missing Python package: never blame the stored file for it
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES):
                raise RestoreFailed("cannot write the restored files to %s: %s" % (destination, exc)) from None
            reason = exc.message if isinstance(exc, CorruptObject) else str(exc)
            raise CorruptObject("stored backup %s cannot be read: %s" % (key, reason),
                                "the stored file is damaged; restore from another backup or another copy "
                                "of the repository") from None
    return digests


def _write_member(reader: TarReader, member: TarMember, tree: SafeTree, algorithm: str) -> FileDigest:
    hasher = new_hasher(algorithm)
    with open(tree.create_file(member.name), "wb", buffering=0) as handle:

        def consume(view: memoryview) -> None:
            hasher.update(view)
            while view:  # an unbuffered write may write less than asked
                view = view[handle.write(view):]

        reader.payload(member, consume)
    return digest_of(member.size, algorithm, hasher)


def _refuse_unsafe_record(backup: BackupInfo) -> None:
    problems = record_problems(backup.record)
    if backup.record.get("label") != backup.label:
        problems.append("it says it is backup %r" % backup.record.get("label"))
    if problems:
        raise UnsafeBackup("the record (backup.json) of backup %s is refused: %s" % (backup.label, "; ".join(problems)))


def lay_down_backup(storage, cluster: str, backup: BackupInfo, pgdata: str, locations: Dict[str, str],
                    timer: Timer, meter: Optional[Meter] = None, workers: int = 1) -> None:
    """Extract one backup set (base + tablespaces) into pgdata, verifying every
    file against its manifest; tablespaces go to locations[oid] and are linked
    from pg_tblspc. The record and the manifest are checked before anything
    is written, the backup's own tablespace_map before a tablespace is.

    The archives are extracted one after another, each with workers writer
    threads: no byte of a tablespace archive may be written before the base
    archive's tablespace_map has been compared with the record, and nothing
    fixes where that file lies in the base tar (pg_basebackup sends it
    early, a rewritten copy may put it last), so the tablespace archives
    wait for the whole base archive."""
    record = backup.record
    _refuse_unsafe_record(backup)
    prefix = backup_prefix(cluster, backup.label)
    started = time.monotonic()
    digests: Dict[str, FileDigest] = {}
    # The manifest first: it says which files may be written and which checksum each is verified with.
    manifest_raw = storage.get_bytes(prefix + MANIFEST_NAME)
    manifest = parse_manifest(manifest_raw)
    problems = manifest_problems(manifest)
    if problems:
        raise UnsafeBackup("the manifest of backup %s is refused: %s" % (backup.label, "; ".join(problems[:5])))
    algorithm = manifest_algorithm(manifest)
    oids = frozenset(str(item["tablespace_oid"]) for item in record["archives"] if item["tablespace_oid"] is not None)
    # The base archive first: its tablespace_map is checked before a tablespace archive is extracted.
    for item in sorted(record["archives"], key=lambda archive: archive["tablespace_oid"] is not None):
        oid = item["tablespace_oid"]
        destination = pgdata if oid is None else locations[oid]
        if oid is not None:
            os.makedirs(destination, mode=0o700, exist_ok=True)
        path_prefix = "pg_tblspc/%s/" % oid if oid else ""
        found = extract_archive(storage, prefix + item["key"], record["compression"], destination, timer, algorithm,
                                manifest, path_prefix, oids, meter, workers, item.get("chunks"))
        digests.update({path_prefix + name: digest for name, digest in found.items()})
        if oid is None:
            with SafeTree(pgdata) as tree:
                problems = tablespace_map_problems(tree.read_file("tablespace_map"), record)
            if problems:
                raise UnsafeBackup("backup %s is refused: %s" % (backup.label, "; ".join(problems)))
    problems = verify_against_manifest(manifest, digests)
    if problems:
        raise RestoreFailed("backup %s does not match its manifest: %s" % (backup.label, "; ".join(problems[:5])),
                            "restore from another backup or another copy of the repository")
    with SafeTree(pgdata) as tree:
        with open(tree.create_file(MANIFEST_NAME), "wb") as handle:
            handle.write(manifest_raw)
        links = tree.directory("pg_tblspc") if oids else -1
        try:
            for oid in sorted(oids):
                try:
                    os.unlink(oid, dir_fd=links)
                except FileNotFoundError:
                    pass
                os.symlink(locations[oid], oid, dir_fd=links)
        finally:
            if links >= 0:
                os.close(links)
        # The links exist now; a tablespace_map would make PostgreSQL recreate them
        # from the original locations.
        try:
            os.unlink("tablespace_map", dir_fd=tree.fd)
        except FileNotFoundError:
            pass
    timer.add("extract", time.monotonic() - started)


def tablespace_locations(backup: BackupInfo, mapping: Dict[str, str], trust_record: bool = False,
                         delta: bool = False) -> Dict[str, str]:
    """Where each tablespace goes: mapped by oid or name, else its original
    place. The original place (from the backup's record) is used only when
    trust_record: an in-place restore, which replaces the cluster on the host
    its tablespaces belong to. Any other restore (a new directory, another
    host) needs an explicit map entry per tablespace, since the record is only
    as trustworthy as whoever can write the repository: mapping a tablespace to
    its original location is how an operator accepts it. A delta restore
    (delta) writes into a location that is not empty: delta.plan_tablespaces
    then requires it to be where the directory's own link points."""
    _refuse_unsafe_record(backup)
    locations = {}
    for tablespace in backup.record.get("tablespaces", []):
        oid, name, original = str(tablespace["oid"]), tablespace["name"], tablespace["location"]
        mapped = mapping.get(oid) or mapping.get(name)
        location = os.path.normpath(mapped) if mapped else original
        if not os.path.isabs(location):
            raise RestoreFailed("tablespace %s location %r is not absolute" % (name, location))
        check_creatable(location, "tablespace directory for %s" % name)
        if not delta and os.path.isdir(location) and os.listdir(location):
            raise RestoreFailed(
                "tablespace %s would be restored into %s, which is not empty" % (name, location),
                "map it elsewhere (tablespace_map: {%s: /new/empty/dir})" % name,
            )
        if not mapped and not trust_record:
            raise RestoreFailed(
                "backup %s has tablespace %s (oid %s), which was at %s on the host it came from; a restore that is "
                "not in place takes no location from the backup's record" % (backup.label, name, oid, original),
                "say where it goes (tablespace_map: {%s: /new/empty/dir}, or --tablespace-map %s=DIR); map it to %s "
                "to restore it where it was" % (name, name, original),
            )
        locations[oid] = location
    unknown = set(mapping) - {str(t["oid"]) for t in backup.record.get("tablespaces", [])} \
        - {t["name"] for t in backup.record.get("tablespaces", [])}
    if unknown:
        raise RestoreFailed("tablespace_map names %s, which backup %s does not have" % (", ".join(sorted(unknown)), backup.label))
    return locations


def combine_chain(storage, cluster: str, chain: List[BackupInfo], pgdata: str, final: Dict[str, str],
                  client: PgClient, timer: Timer, meter: Optional[Meter] = None, workers: int = 1) -> Dict[str, Any]:
    """Extract every backup of an incremental chain next to pgdata, then let
    pg_combinebackup write the synthetic full backup into pgdata, with each
    tablespace at final[oid] (tablespace_locations).

    When pg_combinebackup has --link (PostgreSQL 18) and every output lies on
    the scratch directory's filesystem, the output hard-links the unchanged
    files of the inputs instead of copying them, so the combine needs hardly
    any space beyond the extracted chain (the scratch directory is removed
    afterwards, which leaves the links as the only names). While it runs,
    the bytes in its output directories are reported as phase "combine"
    every COMBINE_SAMPLE seconds. Returns how the combine went
    ({"mode": "link" | "copy", "why": ...})."""
    scratch = pgdata.rstrip("/") + ".restorekeeper-chain"
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch, mode=0o700)
    try:
        inputs = []
        for backup in chain:
            _refuse_unsafe_record(backup)  # its oids name directories below
            directory = os.path.join(scratch, backup.label)
            os.makedirs(directory, mode=0o700)
            locations = {t["oid"]: os.path.join(scratch, "%s-tablespace-%s" % (backup.label, t["oid"]))
                         for t in backup.record.get("tablespaces", [])}
            lay_down_backup(storage, cluster, backup, directory, locations, timer, meter, workers)
            inputs.append(directory)
        remaps = []
        for tablespace in chain[-1].record.get("tablespaces", []):
            remaps += ["-T", "%s=%s" % (os.path.join(scratch, "%s-tablespace-%s" % (chain[-1].label, tablespace["oid"])),
                                        final[tablespace["oid"]])]
        outputs = [pgdata] + [final[t["oid"]] for t in chain[-1].record.get("tablespaces", [])]
        mode, why = _combine_mode(client, scratch, outputs)
        argv = ["-o", pgdata] + (["--link"] if mode == "link" else []) + remaps + inputs
        started = time.monotonic()
        os.rmdir(pgdata)  # pg_combinebackup creates its output directory itself
        total = int(chain[-1].record.get("database_size") or 0) or None
        result = _run_sampling(lambda: client.run("pg_combinebackup", argv, capture_output=True, text=True),
                               outputs, Meter(meter.callback if meter else None, "combine", total))
        timer.add("combine", time.monotonic() - started)
        if result.returncode != 0:
            raise RestoreFailed("pg_combinebackup failed: %s" % " ".join(result.stderr.split())[:800])
        verify = client.run("pg_verifybackup", ["--no-parse-wal", pgdata], capture_output=True, text=True)
        if verify.returncode != 0:
            raise RestoreFailed("the combined backup fails pg_verifybackup: %s" % " ".join(verify.stderr.split())[:800])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"mode": mode, "why": why}


COMBINE_SAMPLE = 3.0  # seconds between reports of the combine's output size


def _combine_mode(client: PgClient, scratch: str, outputs: List[str]) -> Tuple[str, str]:
    """("link", why) when pg_combinebackup can hard-link its inputs into every
    output, else ("copy", why not)."""
    helped = client.run("pg_combinebackup", ["--help"], capture_output=True, text=True)
    if "--link" not in (helped.stdout or ""):
        return "copy", "this pg_combinebackup has no --link (PostgreSQL 18 added it)"
    device = os.stat(scratch).st_dev
    for output in outputs:
        probe = output
        while not os.path.exists(probe):
            probe = os.path.dirname(probe) or "/"
        if os.stat(probe).st_dev != device:
            return "copy", "%s is not on the filesystem of the scratch directory %s, so it cannot hold hard links " \
                "to the inputs" % (output, scratch)
    return "link", "the output hard-links the inputs' unchanged files (no second copy)"


def _run_sampling(run: Callable[[], Any], outputs: List[str], meter: Meter) -> Any:
    """run() on a thread while meter hears the bytes in outputs every COMBINE_SAMPLE seconds."""
    outcome: List[Any] = []
    failure: List[BaseException] = []

    def target() -> None:
        try:
            outcome.append(run())
        except BaseException as exc:  # pylint: disable=broad-except  # re-raised below
            failure.append(exc)

    worker = threading.Thread(target=target, name="restorekeeper-combine", daemon=True)
    meter.set(0)
    worker.start()
    while True:
        worker.join(COMBINE_SAMPLE)
        if not worker.is_alive():
            break
        meter.set(_bytes_below(outputs))
    if failure:
        raise failure[0]
    meter.set(_bytes_below(outputs))
    return outcome[0]


def _bytes_below(paths: List[str]) -> int:
    """The size of the regular files below paths (0 for what does not exist yet; files may vanish meanwhile)."""
    total = 0
    for path in paths:
        for directory, _dirs, files in os.walk(path):
            for name in files:
                try:
                    status = os.lstat(os.path.join(directory, name))
                except OSError:
                    continue
                total += status.st_size
    return total


# --------------------------------------------------------------- the restore
class Preflight(NamedTuple):
    """What restore() checked before changing anything."""

    bindir: str                         # PostgreSQL of the backup's major version
    live: Optional[ClusterLayout]       # the cluster an in-place restore replaces
    aside: Optional[str]                # where pgdata's old contents go
    configuration: ConfigurationPlan
    checks: Dict[str, Any]
    delta: bool = False                 # pgdata is delta-restored (delta.py) rather than laid down anew


def preflight(config: Config, client: PgClient, request: RestoreRequest, plan: RestorePlan,
              repository: Repository) -> Preflight:
    """Everything a restore will need, checked before the server is stopped or
    a file is written (restoreprep.py)."""
    if request.delta and (request.in_place or request.force):
        raise RestoreFailed("delta restores over the data directory itself; %s moves it aside"
                            % ("in_place" if request.in_place else "force"),
                            "choose delta or %s; nothing was changed" % ("in_place" if request.in_place else "force"))
    live = live_cluster(request.pgdata, "an in-place restore") if request.in_place else None
    record = plan.chain[-1].record
    manifest = parse_manifest(repository.storage.get_bytes(backup_prefix(config.cluster, plan.chain[-1].label)
                                                           + MANIFEST_NAME))
    delta = request.delta and check_delta_target(request.pgdata, record, manifest, len(plan.chain))
    if request.in_place:
        aside = _aside_path(request) if os.path.exists(request.pgdata) else None
    else:
        aside = None if delta else check_target_directory(request.pgdata, request.force)
    check_creatable(request.pgdata, "data directory")
    if aside and os.path.lexists(aside):
        raise RestoreFailed("%s already exists" % aside,
                            "remove it or choose another moved-aside path; nothing was stopped or moved")
    configuration = configuration_plan(record, manifest.files, live)
    checks: Dict[str, Any] = {"configuration": configuration._asdict()}
    check_python_packages(record, manifest_algorithm(manifest), config)
    major = int(record["server_version_num"]) // 10000
    bindir = server_bindir(config.postgres.bindir, client, major)
    server = client.using_bindir(bindir)
    if request.start or request.in_place or len(plan.chain) > 1:
        checks["binaries"] = check_binaries(server, major, len(plan.chain))
    # A delta restore replaces files in place: each rewritten file is removed before it is written again.
    needed = 0 if delta else int(record.get("database_size") or manifest.total_size)
    checks["space"] = check_free_space(request.pgdata, needed, aside)
    if live is not None:
        if live.major_version != major:
            raise RestoreFailed("the backup is of PostgreSQL %d but the cluster at %s is PostgreSQL %d"
                                % (major, request.pgdata, live.major_version),
                                "restore into a new directory (and upgrade it with pg_upgrade), or choose a backup "
                                "of this cluster; nothing was stopped")
        ClusterControl(live, server).check_control()
        checks["cluster"] = live.as_dict()
    return Preflight(bindir, live, aside, configuration, checks, delta)


def _aside_path(request: RestoreRequest) -> str:
    return request.aside_path or "%s.before-restore-%s" % (request.pgdata.rstrip("/"), time.strftime("%Y%m%d-%H%M%S"))


def restore(config: Config, client: PgClient, request: RestoreRequest,
            progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
    """Restore as request says; progress, when given, hears the bytes of tar laid down ("extract")
    against the chain's size, then ("replay") the WAL replayed since the backup's start against the
    target's LSN when it is known."""
    started = time.monotonic()
    timer = Timer()
    plan = plan_restore(config, client, request.target, request.backup_label)
    repository = Repository.from_config(config)
    checked = preflight(config, client, request, plan, repository)
    aside = checked.aside
    # A delta restore is over this cluster's own directory (check_delta_target): its tablespaces stay where its links point.
    locations = tablespace_locations(plan.chain[-1], request.tablespace_map, trust_record=request.in_place or checked.delta,
                                     delta=checked.delta)
    if checked.delta:
        check_delta_tablespaces(repository.storage, config.cluster, plan.backup, request.pgdata, locations)
    extra = _server_settings(request)
    stager, not_staged = _stager_for(config, repository, request, plan)
    command = (staged_restore_command(stager.directory, request.tool_path, config.path, config.source) if stager
               else restore_command(request.tool_path, config.path, config.source))
    settings = recovery_settings(plan.target, command, request.standby, request.primary_conninfo)
    created = [path for path in [request.pgdata] + list(locations.values()) if not os.path.exists(path)]
    # Every program from here on is of the backup's major version.
    client = client.using_bindir(checked.bindir)
    control = ClusterControl(checked.live, client) if checked.live else None
    was_running = bool(control and postmaster_pid(request.pgdata) is not None)
    moved = False
    try:
        if was_running:
            control.stop()
        _prepare_directory(request.pgdata, aside)
        moved = True
        result = _restore_staged(config, client, request, plan, timer, started, stager, not_staged,
                                 settings, extra, locations, aside, created, repository, checked, control, progress)
        result["preflight"] = checked.checks
        result["stopped_live_cluster"] = was_running
        result["bindir"] = checked.bindir
        return result
    except BaseException as exc:
        if not request.in_place:
            raise
        raise roll_back(exc, request, aside if moved else None, created if moved else [], control, was_running,
                        moved) from None
    finally:
        if stager:
            stager.stop()  # also when the restore failed: the directory never outlives it


def roll_back(exc: BaseException, request: RestoreRequest, aside: Optional[str], created: List[str],
              control: Optional[ClusterControl], was_running: bool, moved: bool) -> BaseException:
    """After a failed in-place restore: stop whatever runs on pgdata, remove
    the restored files, put the old directory back and start its server again
    if it ran. Returns the error to raise, which says what was done."""
    if isinstance(exc, RestorekeeperError):
        message, hint = exc.message, exc.hint
    elif isinstance(exc, OSError):
        message, hint = "restoring into %s failed: %s" % (request.pgdata, exc), ""
    else:
        message, hint = "the restore was interrupted (%s)" % type(exc).__name__, ""
    if postmaster_pid(request.pgdata) is not None:
        subprocess.run([control.client.program("pg_ctl") if control else "pg_ctl", "-D", request.pgdata,
                        "-m", "immediate", "-w", "stop"], capture_output=True, check=False)
    try:
        # Only what this restore did: nothing when it failed before moving
        # the directory, nothing twice when the lay-down already put it back.
        if moved and not (aside and not os.path.exists(aside)):
            _undo_lay_down(request.pgdata, created, aside)
    except OSError as undo_error:
        return RestoreFailed("%s; putting the old data directory back failed too: %s" % (message, undo_error),
                             "the old data directory is at %s: move it back to %s by hand" % (aside, request.pgdata))
    done = "rolled back: %s is as it was before the restore" % request.pgdata
    pid = None
    if was_running and control is not None:
        pid = control.start_and_wait()
        done += (", and its server runs again (pid %d)" % pid) if pid else \
            ", but its server did not start again: start it by hand (%s)" % " ".join(control.service.start_argv)
    error = RestoreFailed("%s; %s" % (message, done), hint)
    error.rolled_back = True
    error.original_running = pid is not None if was_running else None
    return error


def _stager_for(config: Config, repository: Repository, request: RestoreRequest,
                plan: RestorePlan) -> Tuple[Optional[WalStager], str]:
    """The stager of this restore, or None and why not. First of all, before
    anything changes, refuses a [restore] process_max (the WAL fetchers here,
    the extraction's writers later) above the host's CPUs."""
    check_workers(config.restore.process_max, config.path)
    if not request.stage_wal or not config.restore.stage_wal:
        return None, "turned off"
    if not request.start or request.standby:
        return None, "only when the restore starts the server and recovers to a target (not standby)"
    directory = stage_directory(request.pgdata)
    try:
        check_creatable(directory, "WAL staging directory")
    except RestoreFailed:
        return None, "%s cannot be created" % directory
    limit = stage_limit(directory, config.restore.stage_max_bytes)
    if limit < 2 * plan.segment_size:
        return None, "not enough free space next to %s" % request.pgdata
    stager = WalStager(WalArchive(config, repository), plan.wal, directory, limit, config.restore.process_max,
                       plan.segment_size)
    return stager, ""


def _restore_staged(config: Config, client: PgClient, request: RestoreRequest, plan: RestorePlan, timer: Timer,
                    started: float, stager: Optional[WalStager], not_staged: str, settings: Dict[str, str],
                    extra: Dict[str, str], locations: Dict[str, str], aside: Optional[str],
                    created: List[str], repository: Repository, checked: Preflight,
                    control: Optional[ClusterControl], progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
    if stager:
        stager.extracting.set()
        stager.start()  # fetches alongside the extraction, then alongside replay
    archive_bytes = sum(item.get("tar_size") or 0 for backup in plan.chain for item in backup.record.get("archives", []))
    meter = Meter(progress, "extract", archive_bytes or None)
    if progress is not None:
        meter.set(0)
    workers = config.restore.process_max
    combined: Optional[Dict[str, Any]] = None
    delta: Optional[DeltaLayDown] = None
    try:
        if checked.delta:
            delta = lay_down_delta(repository.storage, config.cluster, plan.backup, request.pgdata, timer.add, meter,
                                   locations, workers)
        elif len(plan.chain) == 1:
            lay_down_backup(repository.storage, config.cluster, plan.backup, request.pgdata, locations, timer, meter,
                            workers)
        else:
            combined = combine_chain(repository.storage, config.cluster, plan.chain, request.pgdata, locations, client,
                                     timer, meter, workers)
        os.makedirs(os.path.join(request.pgdata, "pg_wal", "archive_status"), mode=0o700, exist_ok=True)
        configured = (serverconfig.lay_down(request.pgdata, plan.chain[-1].record["configuration"])
                      if checked.configuration.source == "derived" else [])
        write_recovery_config(request.pgdata, settings, request.standby, extra)
        if delta:
            delta.complete()  # pg_control last: only now can the directory start
        if stager:
            stager.extracting.clear()
    except BaseException as exc:
        if checked.delta:  # never remove the cluster's files: a rerun completes the delta
            if isinstance(exc, OSError):
                raise RestoreFailed("delta restore into %s failed: %s" % (request.pgdata, exc),
                                    "%s has no global/pg_control and cannot start; rerun the delta restore to "
                                    "complete it" % request.pgdata) from None
            raise
        _undo_lay_down(request.pgdata, created, aside)
        if isinstance(exc, OSError):
            raise RestoreFailed("restoring into %s failed: %s; nothing was left behind" % (request.pgdata, exc)) from None
        raise
    result: Dict[str, Any] = {
        "backup": plan.backup.label,
        "chain": [b.label for b in plan.chain],
        "reason": plan.reason,
        "pgdata": request.pgdata,
        "moved_aside": aside,
        "target": plan.target._asdict(),
        "recovery_settings": settings,
        "server_settings": extra,
        "tablespaces": locations,
        "latest_transaction_in_archive": plan.latest_transaction,
        "started": False,
        "wal_staged": {"enabled": False, "reason": not_staged},
        "configuration": dict(checked.configuration._asdict(), written=configured),
        "process_max": workers,
    }
    if combined is not None:
        result["combine"] = combined
    if delta:
        result["delta"] = delta.report.as_dict()
    if request.start or request.in_place:
        try:
            result.update(_start_and_watch(config, client, request, plan, timer, control, progress))
        except RestoreFailed as exc:
            if stager and stager.error:  # say what staging saw too (wal-fetch refused the same file)
                raise RestoreFailed(exc.message, "; ".join(filter(None, [exc.hint, "WAL staging: " + stager.error]))) \
                    from None
            raise
    if stager:
        stager.stop()
        timer.add("stage", stager.seconds)
        result["wal_staged"] = stager.summary()
    timer.add("total", time.monotonic() - started)
    result["phases"] = timer.phases
    return result


def _undo_lay_down(pgdata: str, created: List[str], aside: Optional[str]) -> None:
    """Leave the host as it was before a failed restore: remove what the
    restore created and put a moved-aside data directory back."""
    for path in created:
        shutil.rmtree(path, ignore_errors=True)
    if aside:
        shutil.rmtree(pgdata, ignore_errors=True)
        os.rename(aside, pgdata)
    elif os.path.isdir(pgdata):
        for entry in os.listdir(pgdata):
            target = os.path.join(pgdata, entry)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target, ignore_errors=True)
            else:
                os.unlink(target)


def _server_settings(request: RestoreRequest) -> Dict[str, str]:
    extra: Dict[str, str] = {}
    if request.port:
        extra["port"] = str(request.port)
    if request.socket_dir:
        extra["unix_socket_directories"] = request.socket_dir
    if not request.standby:
        # A primary that had a synchronous standby (e.g. the WAL stream) would make every commit
        # of the restored copy wait for a standby that never connects to it.
        extra["synchronous_standby_names"] = ""
    if not request.keep_archiving:
        # A restored copy must not push its new timeline into the archive it came from.
        extra["archive_mode"] = "off"
    return extra


def _start_and_watch(config: Config, client: PgClient, request: RestoreRequest, plan: RestorePlan, timer: Timer,
                     control: Optional[ClusterControl], progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
    server = client.settings._replace(host=request.socket_dir or (control.layout.socket_directory if control else "")
                                      or config.postgres.host,
                                      port=request.port or (control.layout.port if control else 0) or config.postgres.port,
                                      database="postgres")
    client = PgClient(server)  # the restored server, through the same binaries
    own_log = request.pgdata.rstrip("/") + ".restorekeeper.log"
    log_path = control.log_file if control else own_log
    offset = _size_of(log_path)  # a cluster's own log holds its earlier runs too
    started = time.monotonic()
    if control:
        how = control.method
        try:
            control.start()
        except ServiceError as exc:
            raise RestoreFailed("%s could not start the restored server: %s" % (how, exc.message),
                                log_excerpt(log_path, offset=offset)) from None
    else:
        how = "pg_ctl"
        launch = client.run("pg_ctl", ["-D", request.pgdata, "-l", log_path, "-W", "start"], capture_output=True,
                            text=True)
        if launch.returncode != 0:
            raise RestoreFailed("pg_ctl could not start the restored server: %s" % launch.stderr.strip(),
                                log_excerpt(log_path, offset=offset))
    watcher = RecoveryWatcher(client, request, plan, log_path, offset, progress)
    outcome = watcher.wait(started, timer)
    outcome["log_file"] = log_path
    outcome["started_with"] = how
    if outcome.get("state", "").startswith("paused"):
        outcome["locked_while_paused"] = locked_by_recovery(client)
    return outcome


# Locks recovery holds for transactions it has not replayed to their end: a
# target just before a DROP or TRUNCATE commits leaves that table locked while
# the server is paused (reading it waits until promotion).
_RECOVERY_LOCKS_SQL = (
    "SELECT d.datname, CASE WHEN l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "THEN l.relation::regclass::text ELSE l.relation::text END "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid JOIN pg_database d ON d.oid = l.database "
    "WHERE a.backend_type = 'startup' AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' ORDER BY 1, 2"
)


def locked_by_recovery(client: PgClient) -> List[str]:
    """database/relation names recovery keeps locked while paused ([] if it cannot tell)."""
    try:
        return ["%s/%s" % (row[0], row[1]) for row in client.query(_RECOVERY_LOCKS_SQL)]
    except PostgresError:
        return []


def _size_of(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_from(path: str, offset: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            handle.seek(offset)
            return handle.read()
    except OSError:
        return ""


def log_excerpt(path: str, lines: int = 15, offset: int = 0) -> str:
    text = _read_from(path, offset).splitlines()
    if not text:
        return ""
    interesting = [line for line in text if any(word in line for word in (
        "FATAL", "PANIC", "ERROR", "recovery stopping", "last completed transaction", "redo done",
        "selected new timeline", "restorekeeper wal-fetch", "consistent recovery state", "pausing at the end",
        "recovery has paused", "shutdown at recovery target", "archive recovery complete"))]
    return "server log: " + " | ".join((interesting or text)[-lines:])


class RecoveryWatcher:
    """Polls the restored server until recovery reaches its target, then
    reports what happened; explains in plain words when it stops short."""

    def __init__(self, client: PgClient, request: RestoreRequest, plan: RestorePlan, log_path: str,
                 offset: int = 0, progress: Optional[ProgressCallback] = None) -> None:
        self.progress = progress
        self.client = client
        self.request = request
        self.plan = plan
        self.log_path = log_path
        self.offset = offset

    def _log(self) -> str:
        return _read_from(self.log_path, self.offset)

    def _alive(self) -> bool:
        return postmaster_pid(self.request.pgdata) is not None

    def wait(self, started: float, timer: Timer) -> Dict[str, Any]:
        consistent_at: Optional[float] = None
        target = self.plan.target

        def outcome() -> Optional[Dict[str, Any]]:
            """What recovery ended with, or None while it is still under way."""
            nonlocal consistent_at
            log = self._log()
            if not self._alive():
                if target.action == "shutdown" and "shutdown at recovery target" in log or \
                        target.action == "shutdown" and "recovery stopping" in log and "database system is shut down" in log:
                    timer.add("replay", time.monotonic() - started)
                    return {"started": True, "state": "shut down at target", "timeline": self._timeline_from_log(log)}
                if time.monotonic() - started > 2 or "FATAL" in log or "PANIC" in log:
                    raise RestoreFailed(explain_failure(log, target), log_excerpt(self.log_path, offset=self.offset))
                return None
            state = self._state()
            if state is not None:
                self._report(state)
            if state is not None and consistent_at is None:
                consistent_at = time.monotonic()
                timer.add("start", consistent_at - started)
            if state is not None and self._done(state, log):
                timer.add("replay", time.monotonic() - (consistent_at or started))
                return {"started": True, "state": self._describe(state), "timeline": state["timeline"],
                        "last_replayed_transaction": state["last_replay"] or None,
                        "port": self.request.port or None}
            return None

        # The time allowed counts from the start of the server, not from here.
        reached = poll_until(outcome, started + self.request.wait_timeout - time.monotonic(), 0.2)
        if reached is None:
            raise RestoreFailed("recovery did not reach %s within %d s" % (target.describe(), self.request.wait_timeout),
                                log_excerpt(self.log_path, offset=self.offset))
        return reached

    def _state(self) -> Optional[Dict[str, Any]]:
        try:
            row = self.client.query(
                "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END, "
                "(SELECT timeline_id FROM pg_control_checkpoint()), pg_last_xact_replay_timestamp(), "
                "pg_last_wal_replay_lsn()"
            )[0]
        except (PostgresError, IndexError):
            return None
        return {"in_recovery": row[0] == "t", "paused": row[1] == "t", "timeline": int(row[2]), "last_replay": row[3],
                "replay_lsn": row[4]}

    def _report(self, state: Dict[str, Any]) -> None:
        """Replay progress: WAL bytes from the backup's start to the replay position, against the target's LSN."""
        if self.progress is None or not state["in_recovery"] or not state.get("replay_lsn"):
            return
        start = wal.parse_lsn(self.plan.chain[-1].record["start_lsn"])
        total = self.plan.target_lsn - start if self.plan.target_lsn is not None and self.plan.target_lsn > start else None
        self.progress("replay", max(wal.parse_lsn(state["replay_lsn"]) - start, 0), total)

    def _done(self, state: Dict[str, Any], log: str) -> bool:
        if self.request.standby:
            return state["in_recovery"]
        if not state["in_recovery"]:
            return True
        return self.plan.target.action == "pause" and state["paused"] and (
            "recovery stopping" in log or "pausing at the end of recovery" in log or self.plan.target.kind == "immediate")

    def _describe(self, state: Dict[str, Any]) -> str:
        if self.request.standby:
            return "standby, ready to promote"
        if not state["in_recovery"]:
            return "promoted"
        return "paused at target (read-only; promote with pg_promote() or restart with another target)"

    @staticmethod
    def _timeline_from_log(log: str) -> Optional[int]:
        for line in reversed(log.splitlines()):
            if "selected new timeline ID:" in line:
                return int(line.rsplit(":", 1)[1].split()[0])
        return None


def explain_failure(log: str, target: RecoveryTarget) -> str:
    """Plain words for the ways recovery stops short."""
    if "recovery ended before configured recovery target was reached" in log:
        return ("recovery replayed all the WAL it could fetch but never reached %s: the WAL after that point "
                "is missing from the archive or was never archived" % target.describe())
    if "restorekeeper wal-fetch: ERROR" in log:
        line = next(l for l in reversed(log.splitlines()) if "restorekeeper wal-fetch: ERROR" in l)
        return "recovery stopped because a WAL file could not be fetched intact: %s" % line.split("ERROR:", 1)[1].strip()
    if "requested timeline" in log and "is not a child of this server's history" in log:
        return "the requested timeline does not descend from the backup's timeline"
    if "could not locate required checkpoint record" in log or "could not find redo location" in log:
        return "the WAL segment holding the backup's starting checkpoint is not in the archive"
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    fatal = [line for line in lines if "FATAL" in line or "PANIC" in line]
    if fatal:
        return "the restored server stopped during recovery: %s" % fatal[-1]
    # The postmaster reports some start-up failures (a missing configuration
    # file, a bad setting) without a FATAL prefix: its last words are the reason.
    if lines:
        return "the restored server stopped during start-up: %s" % lines[-1]
    return "the restored server stopped without writing to its log %s" % "(empty)"
