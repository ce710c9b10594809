"""Physical base backups with pg_basebackup, stored as verified backup sets.

A backup set lives under <cluster>/backup/<label>/:

    base.tar.zst           the cluster's files (a tar, as pg_basebackup -Ft writes it)
    <oid>.tar.zst          one per user tablespace
    backup_manifest        PostgreSQL's manifest (parent of the next incremental)
    backup.json            written last: its presence is what makes the set restorable

pg_basebackup streams the tar to us; each byte passes once through a tar
reader that checksums every file, through the compressor and into the
repository. The set is published (backup.json) only after every file matched
the manifest and every WAL segment the backup needs is in the archive.

With user tablespaces pg_basebackup cannot write to stdout. On PostgreSQL 15+
with psycopg2 the backup talks the replication protocol instead
(pg/basebackupstream.py): every archive is stored the same way as it
arrives, nothing staged. Otherwise pg_basebackup writes the tars into a
staging directory first (_staged). The record's "transport" says which
(choose_transport).

Archives are written as resumable chunks (repo/resumable.py): while the
backup runs its set holds resume/ indexes, removed before backup.json. A
later backup of the same cluster, type, parent and compression reuses every
chunk of a killed one whose bytes are unchanged, records it under "resumed"
and removes the sets it resumed from once it is published.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from ..common import compression
from ..common.progress import Meter, ProgressCallback
from ..pg import basebackupstream, serverconfig, wal
from ..common.timefmt import utc_iso
from ..common.waiting import wait_until
from ..repo.marks import check_annotations
from ..repo.catalog import Catalog, BackupInfo
from ..repo.chunks import ChunkedInfo, open_archive
from ..repo.resumable import (RESUME_FOLDER, SET_INDEX, ResumableArchiveWriter, ResumeIdentity, ResumeSource,
                              ResumeStats, find_resumable)
from ..repo.layout import BACKUP_RECORD_NAME, backup_lock_key, backup_prefix, key_basename
from ..config.config import Config
from ..common.errors import CorruptObject, PostgresError, RestorekeeperError
from ..pg.manifest import (MANIFEST_NAME, Manifest, manifest_algorithm, parse_manifest, resolve_manifest_checksums,
                           verify_against_manifest)
from ..pg.pgclient import PgClient
from ..repo.repository import Repository
from ..pg.safetree import manifest_problems, member_problem, record_problems, tablespace_map_problems
from ..pg.tarstream import FILE, TarDigest, TarMember, TeeReader, digest_tar
from ..archive.walarchive import WalArchive

FULL = "full"
INCREMENTAL = "incremental"
AUTO = "auto"
BACKUP_TYPES = (FULL, INCREMENTAL, AUTO)
INCREMENTAL_MIN_VERSION = 170000
MANIFEST_MIN_VERSION = 130000
RECORD_FORMAT = 1
# How the archives reach the repository (the record's "transport"):
TRANSPORT_STDOUT = "pg_basebackup"  # no user tablespace: pg_basebackup -D - streams one tar
TRANSPORT_PROTOCOL = "replication protocol"  # PostgreSQL 15+ and psycopg2: every archive streamed, none staged
TRANSPORT_STAGED = "pg_basebackup, staged"  # else with tablespaces: every tar written to a staging directory first


class BackupFailed(RestorekeeperError):
    """The backup did not complete; nothing restorable was published."""


class BackupOptions(NamedTuple):
    type: str = FULL
    checkpoint: str = "fast"
    max_rate: str = ""
    from_standby: bool = False
    wal_wait_seconds: int = 120
    compression_threads: int = -1
    parent_label: str = ""
    annotations: Optional[Dict[str, str]] = None  # checked with repo/marks.py check_annotations; kept in the record


class ServerFacts(NamedTuple):
    version_num: int
    in_recovery: bool
    system_identifier: int
    archive_mode: str
    summarize_wal: bool
    wal_segment_size: int
    tablespaces: List[Tuple[str, str, str]]  # (oid, name, location)


def server_facts(client: PgClient) -> ServerFacts:
    row = client.query(
        "SELECT current_setting('server_version_num'), pg_is_in_recovery(), "
        "(SELECT system_identifier FROM pg_control_system()), current_setting('archive_mode'), "
        "coalesce(current_setting('summarize_wal', true), 'off'), "
        "current_setting('wal_segment_size')"
    )[0]
    tablespaces = client.query(
        "SELECT oid, spcname, pg_tablespace_location(oid) FROM pg_tablespace "
        "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid"
    )
    return ServerFacts(
        int(row[0]), row[1] == "t", int(row[2]), row[3], row[4] == "on", _size_setting(row[5]),
        [tuple(row) for row in tablespaces],
    )


def _size_setting(text: str) -> int:
    units = {"kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    return int(text)


class BaseBackup:
    """Takes one base backup of the cluster a configuration names."""

    def __init__(self, config: Config, client: PgClient) -> None:
        self.config = config
        self.client = client
        self.repository = Repository.from_config(config)
        self.storage = self.repository.storage
        self.catalog = Catalog(self.repository, config.cluster)
        self.progress: Optional[ProgressCallback] = None
        self.expected_size: Optional[int] = None

    def plan(self, options: BackupOptions) -> Tuple[str, Optional[BackupInfo], ServerFacts]:
        """Check everything that can be checked before the backup starts and
        decide its type and parent. Raises with a clear reason; changes nothing."""
        if options.type not in BACKUP_TYPES:
            raise BackupFailed("unknown backup type %r" % options.type, "use full, incremental or auto")
        if options.checkpoint not in ("fast", "spread"):
            raise BackupFailed("unknown checkpoint mode %r" % options.checkpoint, "use fast or spread")
        check_annotations(options.annotations or {})
        self.repository.require_initialised()
        self.manifest_checksums = resolve_manifest_checksums(self.config.backup.manifest_checksums)
        facts = server_facts(self.client)
        if facts.version_num < MANIFEST_MIN_VERSION:
            raise BackupFailed(
                "PostgreSQL %d is not supported for base backups" % (facts.version_num // 10000),
                "restorekeeper needs PostgreSQL 13 or later (backup manifests)",
            )
        if facts.in_recovery and not options.from_standby:
            raise BackupFailed(
                "the server is in recovery (a standby)",
                "back up the primary, or set from_standby when the standby's WAL reaches this repository",
            )
        if facts.archive_mode == "off":
            raise BackupFailed(
                "archive_mode is off: a base backup without its WAL cannot be restored to any point in time",
                "configure WAL archiving first (role restorekeeper.postgresql.archiving)",
            )
        identity = self.repository.identity(self.config.cluster)
        if identity is None:
            raise BackupFailed(
                "no WAL of cluster %r has reached %s yet, so a backup could not be recovered"
                % (self.config.cluster, self.storage.location),
                "check that archive_command pushes to this repository (pg_stat_archiver shows failures)",
            )
        if str(identity.get("system_identifier")) != str(facts.system_identifier):
            raise BackupFailed(
                "the server is database system %s, but cluster %r in %s archives system %s"
                % (facts.system_identifier, self.config.cluster, self.storage.location,
                   identity.get("system_identifier")),
                "point [cluster] name at this server's own archive",
            )
        backup_type, parent = self._choose_type(options.type, facts, options.parent_label)
        return backup_type, parent, facts

    def _choose_type(self, requested: str, facts: ServerFacts,
                     parent_label: str = "") -> Tuple[str, Optional[BackupInfo]]:
        if parent_label and requested != INCREMENTAL:
            raise BackupFailed("a parent backup only makes sense for type incremental", "pass --type incremental")
        if requested == FULL:
            return FULL, None
        reason = self._incremental_blocker(facts)
        if reason and requested == INCREMENTAL:
            raise BackupFailed(*reason)
        if reason:
            return FULL, None
        if parent_label:
            known = {b.label: b for b in self.catalog.backups()}
            if parent_label not in known:
                raise BackupFailed(
                    "unknown parent backup %r: no complete backup of cluster %r has that label"
                    % (parent_label, self.config.cluster),
                    "`restorekeeper info` lists the labels; leave the parent out to build on the newest backup",
                )
            parent = known[parent_label]
            if parent.record.get("system_identifier") != str(facts.system_identifier):
                raise BackupFailed("backup %s belongs to another database system" % parent_label)
        else:
            parent = self.catalog.latest_backup(system_identifier=str(facts.system_identifier))
        if parent is None:
            if requested == INCREMENTAL:
                raise BackupFailed("no complete backup to build an incremental backup on", "take a full backup first")
            return FULL, None
        chain = self.catalog.chain(parent.label)
        if len(chain) > self.config.backup.max_chain_length:
            if requested == INCREMENTAL:
                raise BackupFailed(
                    "the chain ending at %s already holds %d incremental backups (max_chain_length %d)"
                    % (parent.label, len(chain) - 1, self.config.backup.max_chain_length),
                    "take a full backup (type auto does this by itself)",
                )
            return FULL, None
        return INCREMENTAL, parent

    @staticmethod
    def _incremental_blocker(facts: ServerFacts) -> Optional[Tuple[str, str]]:
        if facts.version_num < INCREMENTAL_MIN_VERSION:
            return (
                "PostgreSQL %d has no incremental base backups (they arrived in PostgreSQL 17)"
                % (facts.version_num // 10000),
                "on this version WAL archiving is the incremental: take full backups and let the archive "
                "carry the changes between them",
            )
        if not facts.summarize_wal:
            return (
                "summarize_wal is off, and incremental backups need WAL summaries",
                "turn it on (role archiving: archiving_summarize_wal: true, or module wal_archiving "
                "summarize_wal: true), then take a full backup to start the chain",
            )
        return None

    def run(self, options: BackupOptions, progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
        """Take the backup; progress, when given, hears the bytes streamed ("stream", or "stage" then
        "store" with tablespaces) against the size of the databases (unknown for an incremental)."""
        self.progress = progress
        backup_type, parent, facts = self.plan(options)
        label = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + ("F" if backup_type == FULL else "I")
        holder = "backup %s, pid %d, started %s" % (label, os.getpid(), utc_iso(time.time()))
        with self.storage.lock(backup_lock_key(self.config.cluster), holder):
            return self._take(label, backup_type, parent, facts, options)

    def _take(self, label: str, backup_type: str, parent: Optional[BackupInfo], facts: ServerFacts,
              options: BackupOptions) -> Dict[str, Any]:
        started = time.time()
        prefix = backup_prefix(self.config.cluster, label)
        configuration = serverconfig.capture(self.client)
        self.expected_size = self._expected_size() if self.progress and backup_type == FULL else None
        identity = ResumeIdentity(str(facts.system_identifier), backup_type, parent.label if parent else None,
                                  self.config.backup.compression)
        self.resume_source = find_resumable(self.storage, backup_prefix(self.config.cluster), identity)
        self.resume_stats = []
        transport, staged_because = choose_transport(facts)
        self.storage.put_bytes(prefix + SET_INDEX, json.dumps(identity.document()).encode())
        try:
            if transport == TRANSPORT_PROTOCOL:
                stored, digests, kept = self._received(label, prefix, facts, options, parent)
            else:
                with tempfile.TemporaryDirectory(prefix="restorekeeper-backup-") as scratch:
                    argv = self._pg_basebackup_args(label, options, parent, scratch)
                    if transport == TRANSPORT_STAGED:
                        stored, digests, kept = self._staged(argv, prefix, facts, options)
                    else:
                        stored, digests, kept = self._streamed(argv, prefix, options)
        except Exception:
            # What the writers did not remove (an archive stored before a later one failed, its index).
            _delete_quietly(self.storage, [info.key for info in self.storage.list(prefix)])
            self.storage.prune_empty(prefix)
            if self.resume_source.damaged:
                self._remove_sets(self.resume_source.labels)
                raise BackupFailed("chunk %s, kept by an interrupted backup for this one to resume from, is damaged "
                                   "or missing" % self.resume_source.damaged,
                                   "run the backup again: the interrupted backups' sets (%s) were removed, so it "
                                   "starts afresh; check the repository's storage for errors"
                                   % ", ".join(self.resume_source.labels)) from None
            raise
        stopped = time.time()
        manifest_raw = kept.get(MANIFEST_NAME)
        if manifest_raw is None:
            raise BackupFailed("pg_basebackup sent no backup_manifest", "do not pass --no-manifest")
        manifest = parse_manifest(manifest_raw)
        problems = verify_against_manifest(manifest, digests)
        if problems:
            raise BackupFailed(
                "backup %s does not match its manifest (%d problems): %s"
                % (label, len(problems), "; ".join(problems[:5])),
                "the backup was not published; look for disk or memory errors and retry",
            )
        manifest_info = self.storage.put_bytes(prefix + MANIFEST_NAME, manifest_raw)
        wal_needed = self._confirm_wal(manifest, facts.wal_segment_size, options.wal_wait_seconds)
        record = self._record(label, backup_type, parent, facts, options, manifest, kept, stored,
                              manifest_info, wal_needed, started, stopped)
        # A restore into a new directory derives the copy's configuration from this (serverconfig.py).
        record["configuration"] = configuration
        record["transport"] = transport
        if staged_because:
            record["staged_because"] = staged_because
        if options.annotations:
            record["annotations"] = dict(sorted(options.annotations.items()))
        resumed = _resume_summary(self.resume_source, self.resume_stats)
        if resumed:
            record["resumed"] = resumed
        # The resume indexes go before the record: a complete set never carries them.
        _delete_quietly(self.storage, [info.key for info in self.storage.list(prefix + RESUME_FOLDER)])
        self.storage.prune_empty(prefix + RESUME_FOLDER)
        self.storage.put_bytes(prefix + BACKUP_RECORD_NAME, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        self._remove_sets(self.resume_source.labels)
        return record

    def _remove_sets(self, labels: List[str]) -> None:
        """Remove incomplete sets (interrupted runs this backup resumed from, or could not)."""
        for label in labels:
            prefix = backup_prefix(self.config.cluster, label)
            _delete_quietly(self.storage, [info.key for info in self.storage.list(prefix)])
            self.storage.prune_empty(prefix, interrupted=True)  # we hold the backup lock: nobody writes there

    def _expected_size(self) -> Optional[int]:
        """About the bytes a full backup streams (its databases); None when the server will not say."""
        try:
            return int(self.client.scalar("SELECT sum(pg_database_size(oid))::bigint FROM pg_database"))
        except (PostgresError, ValueError):
            return None

    def _pg_basebackup_args(self, label: str, options: BackupOptions, parent: Optional[BackupInfo],
                            scratch: str) -> List[str]:
        args = ["-Ft", "-X", "none", "--manifest-checksums=" + self.manifest_checksums.upper(),
                "-c", options.checkpoint,
                "-l", "restorekeeper %s" % label, "--no-password"]
        if options.max_rate:
            args += ["-r", options.max_rate]
        if parent is not None:
            parent_manifest = os.path.join(scratch, "parent_manifest")
            with open(parent_manifest, "wb") as handle:
                handle.write(self.storage.get_bytes(backup_prefix(self.config.cluster, parent.label) + MANIFEST_NAME))
            args.append("--incremental=" + parent_manifest)
        return args

    def _streamed(self, args: List[str], prefix: str, options: BackupOptions):
        """pg_basebackup -D - : one tar on stdout, the manifest injected at its end."""
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen([self.client.program("pg_basebackup"), "-D", "-"] + args,
                                       stdout=subprocess.PIPE, stderr=stderr, env=self.client.env())
            try:
                info, tar = self._store_tar(process.stdout, prefix + "base.tar" + _suffix(self.config),
                                            options, lambda: _finish(process, stderr),
                                            Meter(self.progress, "stream", self.expected_size))
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return [("base.tar", "", info, tar.bytes_read)], tar.digest.files, tar.digest.kept

    def _received(self, label: str, prefix: str, facts: ServerFacts, options: BackupOptions,
                  parent: Optional[BackupInfo]):
        """PostgreSQL 15+ with tablespaces: the replication protocol (pg/basebackupstream.py), each
        archive stored as it arrives, nothing staged; stored and recorded as _staged does."""
        parent_manifest = None
        if parent is not None:
            parent_manifest = self.storage.get_bytes(backup_prefix(self.config.cluster, parent.label) + MANIFEST_NAME)
        try:
            command = basebackupstream.base_backup_command(
                "restorekeeper %s" % label, options.checkpoint, self.manifest_checksums, options.max_rate,
                incremental=parent is not None)
        except basebackupstream.BaseBackupStreamError as exc:
            raise BackupFailed(exc.message, exc.hint) from None
        meter = Meter(self.progress, "stream", self.expected_size)
        written: List[ChunkedInfo] = []

        def store(start: basebackupstream.ArchiveStart, source) -> Tuple[ChunkedInfo, "_TarResult"]:
            _expected_archive(start, facts)
            info, tar = self._store_tar(source, prefix + start.name + _suffix(self.config), options, lambda: None,
                                        meter)
            written.append(info)
            return info, tar

        try:
            received = basebackupstream.receive_base_backup(self.client.env(), command, store, parent_manifest)
        except BaseException as exc:
            _remove_archives(self.storage, written)
            if isinstance(exc, basebackupstream.BaseBackupStreamError):
                raise BackupFailed(exc.message, exc.hint) from None
            raise
        stored, digests, kept = [], {}, {MANIFEST_NAME: received.manifest}
        by_name = {archive.start.name: archive.result for archive in received.archives}
        for name, path_prefix in _archive_order(facts):
            if name not in by_name:
                _remove_archives(self.storage, written)
                raise BackupFailed("the server sent no archive %s (tablespaces: %s)"
                                   % (name, ", ".join(sorted(by_name))),
                                   "a tablespace was dropped during the backup? run the backup again")
            info, tar = by_name[name]
            stored.append((name, path_prefix.split("/")[1] if path_prefix else "", info, tar.bytes_read))
            digests.update({path_prefix + member: digest for member, digest in tar.digest.files.items()})
            kept.update(tar.digest.kept)
        return stored, digests, kept

    def _staged(self, args: List[str], prefix: str, facts: ServerFacts, options: BackupOptions):
        """With tablespaces pg_basebackup writes one tar per tablespace into a
        directory; stage it on the repository's volume, then store each tar."""
        staging_root = self.storage.staging_directory() or tempfile.gettempdir()
        staging = tempfile.mkdtemp(prefix=".rk-tmp.staging-", dir=staging_root)
        try:
            with tempfile.TemporaryFile() as stderr:
                process = subprocess.Popen([self.client.program("pg_basebackup"), "-D", staging] + args,
                                           stdout=subprocess.DEVNULL, stderr=stderr, env=self.client.env())
                _watch_staging(process, staging, Meter(self.progress, "stage", self.expected_size))
                _finish(process, stderr)
            stored, digests, kept = [], {}, {}
            with open(os.path.join(staging, MANIFEST_NAME), "rb") as handle:
                kept[MANIFEST_NAME] = handle.read()
            archives = _archive_order(facts)
            meter = Meter(self.progress, "store", sum(os.path.getsize(os.path.join(staging, name)) for name, _p in archives))
            for name, path_prefix in archives:
                with open(os.path.join(staging, name), "rb") as source:
                    info, tar = self._store_tar(source, prefix + name + _suffix(self.config), options, lambda: None,
                                                meter)
                stored.append((name, path_prefix.split("/")[1] if path_prefix else "", info, tar.bytes_read))
                digests.update({path_prefix + member: digest for member, digest in tar.digest.files.items()})
                kept.update(tar.digest.kept)
            return stored, digests, kept
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _store_tar(self, source, key: str, options: BackupOptions, finish, meter: Optional[Meter] = None):
        """Store one tar stream as resumable chunks (repo/resumable.py), checksumming every file on the way."""
        backup = self.config.backup

        def new_compressor(sink: Callable[[bytes], None]) -> compression.StreamCompressor:
            return compression.StreamCompressor(sink, backup.compression, backup.compression_level,
                                                options.compression_threads)

        with ResumableArchiveWriter(self.storage, key, backup.chunk_size, new_compressor, backup.compression,
                                    self.resume_source) as writer:
            if meter is not None and meter.callback is not None:
                meter.set(meter.done)  # the phase starts before its first byte (pg_basebackup's checkpoint)
            tee = TeeReader(source, _metered(writer.write, meter))
            digest = digest_tar(tee, keep=(MANIFEST_NAME, "backup_label", "tablespace_map"),
                                algorithm=self.manifest_checksums.upper())
            tee.drain()
            finish()
            info = writer.commit()
        self.resume_stats.append(writer.stats())
        return info, _TarResult(digest, tee.bytes_read)

    def _confirm_wal(self, manifest: Manifest, segment_size: int, wait_seconds: int) -> List[str]:
        """Every segment from the backup's start to its end must be archived."""
        needed: List[str] = []
        for item in manifest.wal_ranges:
            needed += wal.segments_between(item.timeline, item.start_lsn, item.end_lsn, segment_size)
        archive = WalArchive(self.config, self.repository)
        missing: List[str] = []

        def all_archived() -> bool:
            nonlocal missing
            missing = [name for name in needed if not archive.exists(name)]
            return not missing

        if not wait_until(all_archived, wait_seconds, 1.0):
            raise BackupFailed(
                "WAL segment(s) %s needed by this backup did not reach the archive within %d s"
                % (", ".join(missing), wait_seconds),
                "check archive_command and pg_stat_archiver; the backup was not published",
            )
        return needed

    def _record(self, label, backup_type, parent, facts, options, manifest, kept, stored, manifest_info,
                wal_needed, started, stopped) -> Dict[str, Any]:
        backup_label = _parse_backup_label(kept.get("backup_label", b""))
        first, last = manifest.wal_ranges[0], manifest.wal_ranges[-1]
        return {
            "format": RECORD_FORMAT,
            "label": label,
            "type": backup_type,
            "parent": parent.label if parent else None,
            "system_identifier": str(facts.system_identifier),
            "server_version_num": facts.version_num,
            "timeline": first.timeline,
            "start_lsn": wal.format_lsn(first.start_lsn),
            "stop_lsn": wal.format_lsn(last.end_lsn),
            "stop_timeline": last.timeline,
            "start_time": utc_iso(started),
            "label_start_time": backup_label.get("START TIME"),
            "stop_time": utc_iso(stopped),
            "wal_start": wal_needed[0],
            "wal_stop": wal_needed[-1],
            "wal_segment_size": facts.wal_segment_size,
            "checkpoint": options.checkpoint,
            "max_rate": options.max_rate or None,
            "database_size": manifest.total_size,
            "stored_size": sum(info.size for _n, _t, info, _b in stored) + manifest_info.size,
            "duration_seconds": round(stopped - started, 3),
            "compression": self.config.backup.compression,
            "compression_level": self.config.backup.compression_level,
            "archives": [_archive_entry(name, oid, info, tar_bytes) for name, oid, info, tar_bytes in stored],
            "manifest": {"key": MANIFEST_NAME, "sha256": manifest_info.sha256, "files": len(manifest.files)},
            "tablespaces": [{"oid": oid, "name": name, "location": location} for oid, name, location in facts.tablespaces],
            "verification": {"method": "manifest checksums (%s), verified while streaming"
                                       % self.manifest_checksums, "files": len(manifest.files),
                             "verified_at": utc_iso(stopped)},
        }


def _archive_entry(name: str, oid: str, info: ChunkedInfo, tar_bytes: int) -> Dict[str, Any]:
    entry = {"name": name, "key": key_basename(info.key), "tablespace_oid": oid or None,
             "tar_size": tar_bytes, "stored_size": info.size, "sha256": info.sha256}
    chunks = info.record_chunks()
    if chunks:
        entry["chunks"] = chunks
    return entry


def _resume_summary(source: ResumeSource, stats: List[ResumeStats]) -> Optional[Dict[str, Any]]:
    """What the record says of the interrupted runs this backup resumed from; None when there were none."""
    if not source.labels and not source.ignored:
        return None
    return {"from": list(source.labels), "chunks": sum(item.chunks for item in stats),
            "chunks_reused": sum(item.reused for item in stats),
            "chunks_partly_reused": sum(item.partly_reused for item in stats),
            "tar_bytes_reused": sum(item.reused_tar_bytes for item in stats),
            "not_resumed_from": dict(source.ignored)}


def _delete_quietly(storage, keys: List[str]) -> None:
    for key in keys:
        try:
            storage.delete(key)
        except RestorekeeperError:
            pass  # an incomplete set is never restored; expire removes what is left


class _TarResult(NamedTuple):
    digest: Any
    bytes_read: int


def choose_transport(facts: ServerFacts) -> Tuple[str, str]:
    """How the backup's archives reach the repository, and why they are staged when they are."""
    if not facts.tablespaces:
        return TRANSPORT_STDOUT, ""
    if facts.version_num < basebackupstream.MIN_VERSION:
        return TRANSPORT_STAGED, ("PostgreSQL %d cannot send several tablespaces in one stream (15 and later can)"
                                  % (facts.version_num // 10000))
    if not basebackupstream.available():
        return TRANSPORT_STAGED, ("psycopg2 is not importable by %s (a host prerequisite; README, Host "
                                  "prerequisites)" % sys.executable)
    return TRANSPORT_PROTOCOL, ""


def _archive_order(facts: ServerFacts) -> List[Tuple[str, str]]:
    """(archive name, path prefix of its members in the manifest): base.tar first, then each tablespace."""
    return [("base.tar", "")] + [("%s.tar" % oid, "pg_tblspc/%s/" % oid) for oid, _n, _l in facts.tablespaces]


def _expected_archive(start, facts: ServerFacts) -> None:
    """An archive the server begins must be one the plan knows (its name becomes a key)."""
    if start.name not in dict(_archive_order(facts)):
        raise BackupFailed("the server sent an unexpected archive %r (tablespaces when the backup started: %s)"
                           % (start.name, ", ".join(oid for oid, _n, _l in facts.tablespaces)),
                           "a tablespace was created during the backup? run the backup again")


def _remove_archives(storage, written: List[ChunkedInfo]) -> None:
    """A failed backup removes the archives it had already stored (best effort: a set without a record is
    never restored, and expire removes what is left)."""
    for info in written:
        for chunk in info.chunks:
            try:
                storage.delete(chunk.key)
            except RestorekeeperError:
                pass


def _suffix(config: Config) -> str:
    return ".zst" if config.backup.compression == "zstd" else ""


def _finish(process: subprocess.Popen, stderr) -> None:
    """Wait for pg_basebackup and turn a failure into its own message."""
    code = process.wait()
    if code != 0:
        stderr.seek(0)
        text = stderr.read().decode("utf-8", "replace")
        raise BackupFailed("pg_basebackup exited with %d: %s" % (code, " ".join(text.split())[:800]))


def _metered(write: Callable[[bytes], None], meter: Optional[Meter]) -> Callable[[bytes], None]:
    """write, also counting its bytes on meter when someone listens."""
    if meter is None or meter.callback is None:
        return write

    def counted(data: bytes) -> None:
        write(data)
        meter.add(len(data))

    return counted


def _watch_staging(process: subprocess.Popen, staging: str, meter: Meter) -> None:
    """Report the bytes pg_basebackup has written into staging, every second, until it exits."""
    if meter.callback is None:
        return
    meter.set(0)
    while True:
        try:
            process.wait(timeout=1.0)
            return
        except subprocess.TimeoutExpired:
            meter.set(_tree_size(staging))


def _tree_size(path: str) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass  # pg_basebackup renames as it goes
    return total


def _parse_backup_label(raw: bytes) -> Dict[str, str]:
    values: Dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            values[key.strip()] = value.strip()
    return values


class VerifyResult(NamedTuple):
    label: str
    files: int
    problems: List[str]


def verify_backup(config: Config, label: str, progress: Optional[ProgressCallback] = None) -> VerifyResult:
    """Re-read a stored backup set and check it against its manifest and record:
    stored bytes' SHA-256, every file's size and checksum, nothing missing or
    extra; and what a restore would refuse (safetree.py): a manifest entry
    without a checksum, a member path that is not plain, a symlink anywhere
    but pg_tblspc/<oid>, a record whose tablespaces are not the backup's own
    tablespace_map. progress, when given, hears the stored bytes read (phase
    "backup LABEL") against the stored size of the archives."""
    repository = Repository.from_config(config)
    repository.require_initialised()
    backup = Catalog(repository, config.cluster).get(label)
    record = backup.record
    prefix = backup_prefix(config.cluster, label)
    storage = repository.storage
    problems: List[str] = ["backup.json: " + problem for problem in record_problems(record)]
    if problems:  # its archive keys and oids are not used to read anything
        return VerifyResult(label, 0, problems)
    undecodable = False
    manifest_raw = storage.get_bytes(prefix + MANIFEST_NAME)
    if hashlib.sha256(manifest_raw).hexdigest() != record["manifest"]["sha256"]:
        problems.append("%s: differs from the copy recorded at backup time" % MANIFEST_NAME)
    manifest = parse_manifest(manifest_raw)
    problems += manifest_problems(manifest)
    oids = frozenset(str(item["tablespace_oid"]) for item in record["archives"] if item["tablespace_oid"] is not None)
    digests: Dict[str, Any] = {}
    meter = Meter(progress, "backup %s" % label, sum(int(item.get("stored_size") or 0) for item in record["archives"]) or None)
    meter.set(0)
    for item in record["archives"]:
        hasher = hashlib.sha256()
        path_prefix = "pg_tblspc/%s/" % item["tablespace_oid"] if item["tablespace_oid"] else ""
        with open_archive(storage, prefix, item, "archive %s of backup %s" % (item["key"], label)) as raw:
            tee = TeeReader(raw, lambda data: (hasher.update(data), meter.add(len(data))))
            try:
                tar = digest_tar(compression.open_decompressed(tee, record["compression"]),
                                 keep=() if path_prefix else ("tablespace_map",), algorithm=manifest_algorithm(manifest))
                tee.drain()  # a chunk is checked as it ends, maybe after the tar's end
            except CorruptObject as exc:
                problems.append("%s: %s" % (item["key"], _stored_damage(tee) or exc))
                undecodable = True
                continue
        if hasher.hexdigest() != item["sha256"]:
            problems.append("%s: stored bytes' SHA-256 differs from the record" % item["key"])
        problems += _member_problems(item["key"], tar, path_prefix, oids)
        if not path_prefix:
            problems += tablespace_map_problems(tar.content("tablespace_map"), record)
        digests.update({path_prefix + name: digest for name, digest in tar.files.items()})
    if not undecodable:  # else every file of the damaged archive would also read as "missing"
        problems += verify_against_manifest(manifest, digests)
    return VerifyResult(label, len(manifest.files), problems)


def _stored_damage(stream: TeeReader) -> Optional[CorruptObject]:
    """After an archive failed to decode: the damaged or missing chunk that
    caused it, found by reading the stored bytes to their end (None when the
    chunks are intact or the archive is one plain object)."""
    try:
        stream.drain()
    except CorruptObject as exc:
        return exc
    return None


def _member_problems(key: str, tar: TarDigest, path_prefix: str, oids: FrozenSet[str]) -> List[str]:
    """What a restore would refuse among one archive's members, apart from the manifest comparison."""
    members = [TarMember(name, FILE, digest.size, "") for name, digest in tar.files.items()] + tar.others
    found = [member_problem(member, None, path_prefix, oids) for member in members]
    found += ["tar member %r appears more than once" % name for name in tar.duplicates]
    return ["%s: %s" % (key, problem) for problem in found if problem]
