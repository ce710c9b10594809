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


def test_compare_keeps_equal_files_and_rewrites_the_rest(tmp_path):
    manifest = parse_manifest(manifest_of(BACKUP))
    lay(tmp_path, dict(BACKUP, **{"base/1/1260": b"B" + b"b" * 8191,    # same size, other content
                                  "base/5/2600": b"c" * 8192}))        # other size
    os.unlink(tmp_path / "PG_VERSION")                                  # missing
    decision = delta.compare(str(tmp_path), manifest)
    assert decision.keep == ["base/1/1259", "postgresql.auto.conf"]
    assert decision.rewrite == ["PG_VERSION", "base/1/1260", "base/5/2600", "global/pg_control"]
    # Read: the equal-sized files only (the other size and the missing one are not read).
    assert decision.bytes_read == 8192 + 8192 + len(b"# empty\n")


def test_compare_never_reads_through_a_symlink(tmp_path):
    manifest = parse_manifest(manifest_of(BACKUP))
    elsewhere = tmp_path / "elsewhere"
    lay(elsewhere, {"1259": BACKUP["base/1/1259"]})
    lay(tmp_path / "data", {"PG_VERSION": BACKUP["PG_VERSION"]})
    os.makedirs(tmp_path / "data" / "base")
    os.symlink(str(elsewhere), str(tmp_path / "data" / "base" / "1"))
    decision = delta.compare(str(tmp_path / "data"), manifest)
    assert "base/1/1259" in decision.rewrite and decision.keep == ["PG_VERSION"]


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
    with pytest.raises(RestoreFailed, match="incremental"):
        delta.check_delta_target(data, record(), manifest, 2)
    with pytest.raises(RestoreFailed, match="tablespaces"):
        delta.check_delta_target(data, record(tablespaces=[{"oid": 16400}]), manifest, 1)
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
