"""Delta restore (restore/delta.py): which files are kept, rewritten and
removed, which directories are refused, and the whole lay-down from a
stored tar over a fabricated data directory, pg_control written last."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
from typing import Dict

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestoreFailed
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.manifest import parse_manifest
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.safetree import UnsafeBackup
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.catalog import BackupInfo
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore import delta
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage

SYSID = 7412345678901234567
CONTROL = struct.pack("=Q", SYSID) + b"\x01" * 92


def manifest_of(files: Dict[str, bytes]) -> bytes:
    entries = [json.dumps({"Path": path, "Size": len(data), "Last-Modified": "2026-12-01 00:00:00 GMT",
                           "Checksum-Algorithm": "SHA256", "Checksum": hashlib.sha256(data).hexdigest()})
               for path, data in files.items()]
    body = ('{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n' + ",\n".join(entries) + '\n],\n'
            '"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }\n],\n').encode()
    return body + ('"Manifest-Checksum": "%s"}\n' % hashlib.sha256(body).hexdigest()).encode()


BACKUP = {
    "PG_VERSION": b"18\n",
    "global/pg_control": CONTROL,
    "base/1/1259": b"a" * 8192,
    "base/1/1260": b"b" * 8192,
    "base/5/2600": b"c" * 16384,
    "postgresql.auto.conf": b"# empty\n",
}


def lay(root, files: Dict[str, bytes]) -> None:
    for path, data in files.items():
        full = os.path.join(str(root), path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as handle:
            handle.write(data)


@pytest.mark.parametrize("workers", [1, 2], ids=["one-thread", "two-workers"])
def test_every_file_is_compared_as_it_streams_and_only_what_differs_is_written(tmp_path, workers):
    """Equal files are kept (read, nothing written), whatever their size and time; a same-sized file with
    other bytes, a file of another size and a missing one are brought to the backup's bytes."""
    storage = PosixStorage(str(tmp_path / "repo"))
    backup = stored(storage, BACKUP)
    data = tmp_path / "data"
    lay(data, dict(BACKUP, **{"base/1/1260": b"B" + b"b" * 8191,    # same size, other content
                              "base/5/2600": b"c" * 8192}))        # other size (shorter)
    os.unlink(data / "PG_VERSION")                                  # missing
    os.utime(data / "base" / "1" / "1259", (0, 0))                  # an old time proves nothing either way
    laid = delta.lay_down_delta(storage, "main", backup, str(data), lambda *_: None, workers=workers)
    laid.complete()
    for path, content in BACKUP.items():
        assert (data / path).read_bytes() == content, path
    assert laid.report.kept == 2 and laid.report.rewritten == 4  # 1259, postgresql.auto.conf kept
    # Read to compare: everything in place (the shorter file as far as it goes); written: the differing
    # page of 1260, the missing half of 2600, PG_VERSION whole and pg_control.
    assert laid.report.bytes_read == 8192 + 8192 + 8192 + len(b"# empty\n")
    assert laid.report.bytes_written == 8192 + 8192 + len(b"18\n") + len(CONTROL)


def test_a_symlinked_directory_is_never_followed(tmp_path):
    storage = PosixStorage(str(tmp_path / "repo"))
    backup = stored(storage, BACKUP)
    elsewhere = tmp_path / "elsewhere"
    lay(elsewhere, {"1259": b"outside the data directory"})
    data = tmp_path / "data"
    lay(data, {"PG_VERSION": BACKUP["PG_VERSION"], "global/pg_control": CONTROL})
    os.makedirs(data / "base")
    os.symlink(str(elsewhere), str(data / "base" / "1"))
    delta.lay_down_delta(storage, "main", backup, str(data), lambda *_: None).complete()
    assert (elsewhere / "1259").read_bytes() == b"outside the data directory"
    assert not os.path.islink(data / "base" / "1") and (data / "base" / "1" / "1259").read_bytes() == BACKUP["base/1/1259"]


def test_extras_lists_what_the_backup_does_not_have(tmp_path):
    manifest = parse_manifest(manifest_of(BACKUP))
    lay(tmp_path, dict(BACKUP, **{"postmaster.pid": b"1\n", "pg_wal/000000010000000000000007": b"w",
                                  "base/1/99999": b"new relation", "global/pg_control.restorekeeper-delta": CONTROL,
                                  "backup_manifest": b"{}"}))
    os.unlink(tmp_path / "base" / "1" / "1260")
    os.makedirs(tmp_path / "base" / "1" / "1260")  # a directory where the backup has a file
    os.symlink("/etc", str(tmp_path / "base" / "link"))
    found = delta.extras(str(tmp_path), manifest)
    assert found == ["base/1/1260", "base/1/99999", "base/link", "pg_wal/000000010000000000000007", "postmaster.pid"]


def test_stray_directories_are_the_outermost_unwanted(tmp_path):
    for directory in ("base/1", "base/77/x", "pg_wal/archive_status", "pg_old/a/b"):
        os.makedirs(tmp_path / directory)
    assert delta.stray_directories(str(tmp_path), {"base", "base/1", "pg_wal", "pg_wal/archive_status"}) == \
        ["base/77", "pg_old"]


def test_system_identifier_is_read_from_pg_control_or_its_aside_copy(tmp_path):
    assert delta.system_identifier_of(str(tmp_path)) is None
    lay(tmp_path, {delta.PG_CONTROL_ASIDE: CONTROL})
    assert delta.system_identifier_of(str(tmp_path)) == SYSID
    lay(tmp_path, {delta.PG_CONTROL: struct.pack("=Q", 42) + b"\0" * 8})
    assert delta.system_identifier_of(str(tmp_path)) == 42


def record(**extra):
    return dict({"label": "20261201T000000F", "system_identifier": str(SYSID), "tablespaces": [],
                 "compression": "none", "archives": [{"key": "base.tar", "tablespace_oid": None}]}, **extra)


def test_check_delta_target(tmp_path):
    manifest = parse_manifest(manifest_of(BACKUP))
    data = str(tmp_path / "data")
    assert delta.check_delta_target(data, record(), manifest, 1) is False  # absent: a normal restore
    lay(data, {"PG_VERSION": b"18\n", "global/pg_control": CONTROL})
    assert delta.check_delta_target(data, record(), manifest, 1) is True
    with pytest.raises(RestoreFailed, match="another cluster: its database system identifier is %d, backup "
                                            "20261201T000000F is of 42" % SYSID) as caught:
        delta.check_delta_target(data, record(system_identifier="42"), manifest, 1)
    assert "empty directory" in caught.value.hint
    with pytest.raises(RestoreFailed, match="incremental .* combined first"):
        delta.check_delta_target(data, record(), manifest, 2)
    assert delta.check_delta_target(data, record(tablespaces=[{"oid": 16400}]), manifest, 1) is True  # plan_tablespaces
    os.unlink(os.path.join(data, "global", "pg_control"))
    with pytest.raises(RestoreFailed, match="no global/pg_control"):
        delta.check_delta_target(data, record(), manifest, 1)


def stored(storage: PosixStorage, files: Dict[str, bytes]) -> BackupInfo:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for directory in ("base", "base/1", "base/5", "global", "pg_wal", "pg_wal/archive_status", "pg_notify"):
            member = tarfile.TarInfo(directory)
            member.type = tarfile.DIRTYPE
            archive.addfile(member)
        for path, data in files.items():
            member = tarfile.TarInfo(path)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    info = BackupInfo("20261201T000000F", "full", None, record())
    storage.put_bytes("main/backup/%s/base.tar" % info.label, buffer.getvalue())
    storage.put_bytes("main/backup/%s/backup_manifest" % info.label, manifest_of(files))
    return info


def test_lay_down_delta_brings_the_directory_to_the_backup(tmp_path):
    storage = PosixStorage(str(tmp_path / "repo"))
    backup = stored(storage, BACKUP)
    data = str(tmp_path / "data")
    old_control = struct.pack("=Q", SYSID) + b"\x02" * 92
    lay(data, dict(BACKUP, **{"global/pg_control": old_control, "base/1/1260": b"X" * 8192,
                              "base/1/50000": b"dropped table", "pg_wal/000000010000000000000009": b"old wal",
                              "postmaster.pid": b"12345\n"}))
    os.makedirs(os.path.join(data, "base", "999", "sub"))
    times = {}
    laid = delta.lay_down_delta(storage, "main", backup, data, lambda name, seconds: times.update({name: seconds}))
    # Until complete(), the directory cannot start: no pg_control, only the aside copy.
    assert not os.path.exists(os.path.join(data, "global", "pg_control"))
    assert os.path.exists(os.path.join(data, delta.PG_CONTROL_ASIDE))
    laid.complete()
    assert not os.path.exists(os.path.join(data, delta.PG_CONTROL_ASIDE))
    for path, content in BACKUP.items():
        with open(os.path.join(data, path), "rb") as handle:
            assert handle.read() == content, path
    for gone in ("base/1/50000", "pg_wal/000000010000000000000009", "postmaster.pid", "base/999"):
        assert not os.path.exists(os.path.join(data, gone)), gone
    assert os.path.isdir(os.path.join(data, "pg_notify")) and os.path.isdir(os.path.join(data, "pg_wal", "archive_status"))
    assert os.path.exists(os.path.join(data, "backup_manifest"))
    assert laid.report.kept == 4 and laid.report.rewritten == 2  # base/1/1260 and pg_control
    assert laid.report.removed == 4
    assert laid.report.bytes_written == 8192 + len(CONTROL)
    assert set(times) == {"compare", "extract"}


def test_a_rerun_after_a_crash_completes_the_delta(tmp_path):
    storage = PosixStorage(str(tmp_path / "repo"))
    backup = stored(storage, BACKUP)
    data = str(tmp_path / "data")
    lay(data, dict(BACKUP, **{"base/1/1260": b"X" * 8192}))
    manifest = parse_manifest(manifest_of(BACKUP))
    delta.lay_down_delta(storage, "main", backup, data, lambda *_: None)  # "crash" before complete()
    assert delta.check_delta_target(data, record(), manifest, 1) is True  # still known as this cluster's
    laid = delta.lay_down_delta(storage, "main", backup, data, lambda *_: None)
    laid.complete()
    assert laid.report.rewritten == 1 and laid.report.bytes_written == len(CONTROL)
    with open(os.path.join(data, "global", "pg_control"), "rb") as handle:
        assert handle.read() == CONTROL


# --------------------------------------------------------------- tablespaces
OID = "16400"
OURS = "PG_18_202506291"  # the backup's (and the directory's) PG_<major>_<catversion>
TS_CONTROL = struct.pack("=QII", SYSID, 1800, 202506291) + b"\x01" * 84
TS_FILES = {OURS + "/5/16401": b"t" * 8192, OURS + "/5/16402": b"u" * 8192}


def ts_backup_files(location: str) -> Dict[str, bytes]:
    files = dict(BACKUP, **{"global/pg_control": TS_CONTROL, "tablespace_map": ("%s %s\n" % (OID, location)).encode()})
    files.update({"pg_tblspc/%s/%s" % (OID, path): data for path, data in TS_FILES.items()})
    return files


def tar_of(directories, files: Dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for directory in directories:
            member = tarfile.TarInfo(directory)
            member.type = tarfile.DIRTYPE
            archive.addfile(member)
        for path, data in files.items():
            member = tarfile.TarInfo(path)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def ts_record(location: str, **extra):
    return record(tablespaces=[{"oid": int(OID), "name": "far", "location": location}],
                  archives=[{"key": "base.tar", "tablespace_oid": None}, {"key": "%s.tar" % OID, "tablespace_oid": OID}],
                  **extra)


def stored_with_tablespace(storage: PosixStorage, location: str, map_location: str = "") -> BackupInfo:
    files = ts_backup_files(location)
    base = {path: data for path, data in files.items() if not path.startswith("pg_tblspc/")}
    if map_location:
        base["tablespace_map"] = files["tablespace_map"] = ("%s %s\n" % (OID, map_location)).encode()
    info = BackupInfo("20261201T000000F", "full", None, ts_record(location))
    prefix = "main/backup/%s/" % info.label
    storage.put_bytes(prefix + "base.tar", tar_of(("base", "base/1", "base/5", "global", "pg_wal", "pg_tblspc"), base))
    storage.put_bytes(prefix + "%s.tar" % OID, tar_of((OURS, OURS + "/5"), TS_FILES))
    storage.put_bytes(prefix + "backup_manifest", manifest_of(files))
    return info


def ts_cluster(tmp_path, location: str) -> str:
    """A stopped directory of the cluster with its tablespace at location, linked from pg_tblspc."""
    data = str(tmp_path / "data")
    lay(data, dict(BACKUP, **{"global/pg_control": TS_CONTROL}))
    os.makedirs(os.path.join(data, "pg_tblspc"))
    os.symlink(location, os.path.join(data, "pg_tblspc", OID))
    lay(location, TS_FILES)
    return data


def snapshot(root) -> Dict[str, bytes]:
    found = {}
    for directory, _dirs, files in os.walk(str(root)):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, str(root))] = handle.read()
    links = os.path.join(str(root), "data", "pg_tblspc")
    if os.path.isdir(links):
        found.update({"link " + name: os.readlink(os.path.join(links, name)).encode() for name in os.listdir(links)})
    return found


def test_plan_keeps_a_tablespace_where_its_link_points_and_refuses_another_location(tmp_path):
    location = str(tmp_path / "ts")
    data = ts_cluster(tmp_path, location)
    manifest = parse_manifest(manifest_of(ts_backup_files(location)))
    backup = BackupInfo("20261201T000000F", "full", None, ts_record(location))
    plan = delta.plan_tablespaces(data, backup, manifest, {OID: location})
    assert [(t.oid, t.location, t.subdirectories) for t in plan.keep] == [(OID, location, frozenset([OURS]))]
    assert plan.keep[0].files == {path: manifest.files["pg_tblspc/%s/%s" % (OID, path)] for path in TS_FILES}
    assert plan.drop == [] and plan.links == frozenset(["pg_tblspc/" + OID])
    before = snapshot(tmp_path)
    with pytest.raises(RestoreFailed, match="tablespace far \\(oid 16400\\) of %s is at %s \\(where pg_tblspc/16400 "
                                            "points\\), but this restore would put it at /elsewhere" % (data, location)) as caught:
        delta.plan_tablespaces(data, backup, manifest, {OID: "/elsewhere"})
    assert "--tablespace-map far=%s" % location in caught.value.hint and "nothing was changed" in caught.value.hint
    os.unlink(os.path.join(data, "pg_tblspc", OID))
    os.makedirs(os.path.join(data, "pg_tblspc", OID))  # an in-place tablespace directory, not a link
    with pytest.raises(RestoreFailed, match="is not a symlink"):
        delta.plan_tablespaces(data, backup, manifest, {OID: location})
    os.rmdir(os.path.join(data, "pg_tblspc", OID))
    # No link vouches for the files in the location's PG_18 directory: another cluster's, perhaps.
    with pytest.raises(RestoreFailed, match="holds files but no link of"):
        delta.plan_tablespaces(data, backup, manifest, {OID: location})
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("link")} == \
        {k: v for k, v in before.items() if not k.startswith("link")}


def test_plan_takes_a_location_shared_with_another_major_version(tmp_path):
    """PostgreSQL lets clusters of different major versions share a location, each in its own PG_* directory."""
    location = str(tmp_path / "ts")
    lay(location, {"PG_17_202406281/5/16401": b"the PostgreSQL 17 cluster's"})
    data = str(tmp_path / "data")
    lay(data, dict(BACKUP, **{"global/pg_control": TS_CONTROL}))  # its link is gone (dropped after the backup)
    manifest = parse_manifest(manifest_of(ts_backup_files(location)))
    backup = BackupInfo("20261201T000000F", "full", None, ts_record(location))
    plan = delta.plan_tablespaces(data, backup, manifest, {OID: location})
    assert [t.location for t in plan.keep] == [location]


def test_plan_drops_only_this_clusters_directory_of_a_tablespace_the_backup_lacks(tmp_path):
    location, newer = str(tmp_path / "ts"), str(tmp_path / "newer")
    data = ts_cluster(tmp_path, location)
    os.symlink(newer, os.path.join(data, "pg_tblspc", "16500"))
    manifest = parse_manifest(manifest_of(ts_backup_files(location)))
    backup = BackupInfo("20261201T000000F", "full", None, ts_record(location))
    plan = delta.plan_tablespaces(data, backup, manifest, {OID: location})
    assert plan.drop == [delta.Dropped("16500", newer, OURS)]
    assert delta.version_directory(data) == OURS
    # Pointing into a location the backup restores: its PG_18 directory is the kept tablespace's, never removed.
    os.unlink(os.path.join(data, "pg_tblspc", "16500"))
    os.symlink(location, os.path.join(data, "pg_tblspc", "16500"))
    with pytest.raises(RestoreFailed, match="overlaps the data directory or a location the backup restores"):
        delta.plan_tablespaces(data, backup, manifest, {OID: location})
    os.unlink(os.path.join(data, "pg_tblspc", "16500"))
    os.symlink(os.path.dirname(data), os.path.join(data, "pg_tblspc", "16500"))  # PG_18_... there would hold pgdata
    os.rename(data, os.path.join(os.path.dirname(data), OURS))
    data = os.path.join(os.path.dirname(data), OURS)
    with pytest.raises(RestoreFailed, match="overlaps the data directory"):
        delta.plan_tablespaces(data, backup, manifest, {OID: location})
    # Which directory is this cluster's cannot be told: refused, not guessed.
    os.unlink(os.path.join(data, "PG_VERSION"))
    with pytest.raises(RestoreFailed, match="cannot be told"):
        delta.plan_tablespaces(data, backup, manifest, {OID: location})


def test_plan_refuses_a_manifest_entry_outside_the_version_directory(tmp_path):
    location = str(tmp_path / "ts")
    data = ts_cluster(tmp_path, location)
    files = dict(ts_backup_files(location), **{"pg_tblspc/%s/elsewhere/x" % OID: b"x"})
    backup = BackupInfo("20261201T000000F", "full", None, ts_record(location))
    with pytest.raises(UnsafeBackup, match="outside PostgreSQL's PG_<version>_<catalog>"):
        delta.plan_tablespaces(data, backup, parse_manifest(manifest_of(files)), {OID: location})


def test_lay_down_delta_with_tablespaces(tmp_path):
    storage = PosixStorage(str(tmp_path / "repo"))
    location, newer = str(tmp_path / "ts"), str(tmp_path / "newer")
    backup = stored_with_tablespace(storage, location)
    data = ts_cluster(tmp_path, location)
    lay(location, {OURS + "/5/16402": b"U" * 8192,                    # changed in the tablespace
                   OURS + "/5/16999": b"created after the backup",     # not in the backup
                   "PG_17_202406281/5/1": b"another major version's"})  # left alone
    os.makedirs(os.path.join(location, OURS, "77"))                      # a database dropped later
    lay(newer, {OURS + "/5/1": b"tablespace created after the backup", "PG_17_202406281/1": b"not ours"})
    os.symlink(newer, os.path.join(data, "pg_tblspc", "16500"))
    laid = delta.lay_down_delta(storage, "main", backup, data, lambda *_: None, locations={OID: location})
    laid.complete()
    for path, content in TS_FILES.items():
        with open(os.path.join(location, path), "rb") as handle:
            assert handle.read() == content, path
    assert not os.path.exists(os.path.join(location, OURS, "5", "16999"))
    assert not os.path.exists(os.path.join(location, OURS, "77"))
    assert os.path.exists(os.path.join(location, "PG_17_202406281", "5", "1"))
    assert os.readlink(os.path.join(data, "pg_tblspc", OID)) == location
    assert not os.path.lexists(os.path.join(data, "pg_tblspc", "16500"))
    assert not os.path.exists(os.path.join(newer, OURS)) and os.path.exists(os.path.join(newer, "PG_17_202406281", "1"))
    assert not os.path.exists(os.path.join(data, "tablespace_map"))  # the links are made: no map to recreate them
    # Kept: the 5 base files but pg_control, and 16401; rewritten: pg_control, the absent tablespace_map and 16402.
    assert laid.report.kept == 6 and laid.report.rewritten == 3, laid.report
    assert laid.report.removed == 4  # 16999, the directory 77, the link 16500 and the dropped tablespace's PG_18...
    assert laid.report.bytes_written == 8192 + len(TS_CONTROL) + len(("%s %s\n" % (OID, location)).encode())


def test_lay_down_delta_relinks_a_tablespace_dropped_after_the_backup(tmp_path):
    storage = PosixStorage(str(tmp_path / "repo"))
    location = str(tmp_path / "ts")
    backup = stored_with_tablespace(storage, location)
    data = str(tmp_path / "data")
    lay(data, dict(BACKUP, **{"global/pg_control": TS_CONTROL}))
    os.makedirs(location)  # DROP TABLESPACE leaves the location, empty
    delta.lay_down_delta(storage, "main", backup, data, lambda *_: None, locations={OID: location})  # "crash"
    # The rerun finds the link made before the files it vouches for, and completes the delta.
    laid = delta.lay_down_delta(storage, "main", backup, data, lambda *_: None, locations={OID: location})
    laid.complete()
    assert laid.report.rewritten == 2 and laid.report.bytes_written == len(TS_CONTROL) + len(("%s %s\n" % (OID, location)))
    assert os.readlink(os.path.join(data, "pg_tblspc", OID)) == location
    with open(os.path.join(location, OURS, "5", "16401"), "rb") as handle:
        assert handle.read() == TS_FILES[OURS + "/5/16401"]


def test_a_tablespace_map_unlike_the_record_is_refused_before_the_location_is_touched(tmp_path):
    storage = PosixStorage(str(tmp_path / "repo"))
    location = str(tmp_path / "ts")
    backup = stored_with_tablespace(storage, location, map_location="/somewhere/else")
    data = ts_cluster(tmp_path, location)
    lay(location, {OURS + "/5/16999": b"would be removed"})
    before = snapshot(tmp_path / "ts")
    with pytest.raises(UnsafeBackup, match="tablespace_map in the backup lists 16400 at /somewhere/else"):
        delta.lay_down_delta(storage, "main", backup, data, lambda *_: None, locations={OID: location})
    assert snapshot(tmp_path / "ts") == before


@pytest.mark.parametrize("workers", [1, 2], ids=["one-thread", "two-workers"])
def test_a_file_in_place_is_patched_page_by_page_and_a_linked_one_written_whole(tmp_path, workers):
    """Only the 8 KiB pages that differ are written into a file in place (same inode), which is then cut to
    the backup's size; a file with other names (pg_upgrade --link) is written whole under a new inode."""
    table = bytes(range(256)) * 32 * 40  # 40 pages
    linked = b"L" * 8192 * 3
    files = dict(BACKUP, **{"base/5/16384": table, "base/5/16385": linked})
    storage = PosixStorage(str(tmp_path / "repo"))
    backup = stored(storage, files)
    data = str(tmp_path / "data")
    changed = bytearray(table)
    changed[8192 * 7 + 100] ^= 0xFF
    changed[8192 * 31 + 8191] ^= 0xFF
    lay(data, dict(files, **{"base/5/16384": bytes(changed) + b"grown" * 5000, "base/5/16385": b"M" * 8192 * 3}))
    other_name = os.path.join(str(tmp_path), "old-cluster-16385")
    os.link(os.path.join(data, "base/5/16385"), other_name)
    before = os.stat(os.path.join(data, "base/5/16384")).st_ino
    laid = delta.lay_down_delta(storage, "main", backup, data, lambda name, seconds: None, workers=workers)
    laid.complete()
    with open(os.path.join(data, "base/5/16384"), "rb") as handle:
        assert handle.read() == table
    assert os.stat(os.path.join(data, "base/5/16384")).st_ino == before
    with open(os.path.join(data, "base/5/16385"), "rb") as handle:
        assert handle.read() == linked
    with open(other_name, "rb") as handle:
        assert handle.read() == b"M" * 8192 * 3  # the other name kept its own bytes
    assert laid.report.rewritten == 3  # the two files and pg_control
    assert laid.report.bytes_written == 2 * 8192 + len(linked) + len(CONTROL)
