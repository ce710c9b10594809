"""The tar reader used for backups, verification and restores, against tarfile's own writer."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import CorruptObject
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.tarstream import (
    DIRECTORY,
    FILE,
    SYMLINK,
    TarReader,
    digest_tar,
)


def build_tar(fmt: int) -> tuple[bytes, dict]:
    files = {
        "PG_VERSION": b"18\n",
        "empty": b"",
        "base/1/16384": os.urandom(8192 * 3 + 17),
        "base/1/exactly-one-block": b"x" * 512,
        "global/" + "long-dir-" * 8 + "/" + "long-name-" * 6: os.urandom(1000),  # longer than 100 characters
        "backup_manifest": b'{"PostgreSQL-Backup-Manifest-Version": 1}\n',
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for directory in ("base", "base/1", "global"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pg_tblspc/16400")
        link.type = tarfile.SYMTYPE
        link.linkname = "/srv/ts"
        archive.addfile(link)
    return buffer.getvalue(), files


class Trickle(io.RawIOBase):
    """A stream returning few bytes per read, as a pipe may."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._step, self._pos = data, step, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._data[self._pos:self._pos + min(size, self._step)]
        self._pos += len(chunk)
        return chunk


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("step", [1 << 20, 700])
def test_reader_matches_tarfile(fmt, step):
    raw, files = build_tar(fmt)
    reader = TarReader(Trickle(raw, step), read_size=4096 if step < 4096 else 1 << 20)
    seen = {}
    kinds = {}
    for member in reader.members():
        kinds[member.name] = member.kind
        if member.kind == FILE:
            parts = []
            reader.payload(member, lambda view: parts.append(bytes(view)))
            seen[member.name] = b"".join(parts)
        elif member.kind == SYMLINK:
            assert member.linkname == "/srv/ts"
    assert seen == files
    assert kinds["base/1"] == DIRECTORY and kinds["pg_tblspc/16400"] == SYMLINK
    digest = digest_tar(io.BytesIO(raw), keep=("backup_manifest",))
    assert {name: d.sha256 for name, d in digest.files.items()} == {
        name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert digest.kept["backup_manifest"] == files["backup_manifest"]


def test_skipping_payload_still_finds_every_member():
    raw, files = build_tar(tarfile.GNU_FORMAT)
    names = [m.name for m in TarReader(io.BytesIO(raw)).members() if m.kind == FILE]
    assert sorted(names) == sorted(files)


def test_truncated_stream_is_damage():
    raw, _files = build_tar(tarfile.GNU_FORMAT)
    with pytest.raises(CorruptObject, match="damaged"):
        digest_tar(io.BytesIO(raw[:5000]))


def test_header_checksum_is_verified():
    raw, _files = build_tar(tarfile.GNU_FORMAT)
    damaged = bytearray(raw)
    damaged[3] ^= 0x01  # in the first member's name
    with pytest.raises(CorruptObject, match="checksum"):
        digest_tar(io.BytesIO(bytes(damaged)))


def test_crc32c_digests_match_postgresql_manifest_format():
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.manifest import CRC32C, new_hasher

    hasher = new_hasher(CRC32C)
    hasher.update(memoryview(b"1234"))
    hasher.update(b"56789")
    # The CRC-32C check value 0xE3069283, as PostgreSQL prints it: the bytes in memory order.
    assert hasher.hexdigest() == "839206e3"
    raw, files = build_tar(tarfile.GNU_FORMAT)
    digest = digest_tar(io.BytesIO(raw), algorithm=CRC32C)
    assert digest.files["PG_VERSION"].sha256 == "" and len(digest.files["PG_VERSION"].crc32c) == 8


def test_crc32c_without_a_c_implementation_says_how_to_fix(monkeypatch):
    import builtins

    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestorekeeperError
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.manifest import crc32c_function

    real_import = builtins.__import__

    def no_crc(name, *args, **kwargs):
        if name in ("crc32c", "google_crc32c"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_crc)
    with pytest.raises(RestorekeeperError, match="pip install crc32c"):
        crc32c_function()


def test_manifest_crc32c_entries_are_compared():
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.manifest import (
        FileDigest,
        Manifest,
        ManifestFile,
        verify_against_manifest,
    )

    manifest = Manifest(1, {"a": ManifestFile("a", 9, "CRC32C", "839206E3")}, [], b"")
    assert verify_against_manifest(manifest, {"a": FileDigest(9, "", "839206e3")}) == []
    assert verify_against_manifest(manifest, {"a": FileDigest(9, "", "00000000")}) == [
        "a: CRC-32C differs from the manifest"]
