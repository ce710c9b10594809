"""Extracting a stored backup tar (restore.extract_archive): a damaged object
fails with an error that names it and the fix, wherever the damage lands."""

from __future__ import annotations

import io
import os
import random
import tarfile

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.compression import StreamCompressor
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import CorruptObject
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.restore import Timer, extract_archive
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage

KEY = "main/backups/20261122T000000F/base.tar.zst"


def stored_tar() -> bytes:
    """A compressed tar like a base backup's: several files with varied content."""
    generator = random.Random(7)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for index in range(40):
            # Half compressible, half not, so damage can land in either kind of zstd block.
            payload = (b"relation page %d " % index) * 400 + generator.randbytes(8192)
            member = tarfile.TarInfo("base/1/%d" % (16384 + index))
            member.size = len(payload)
            archive.addfile(member, io.BytesIO(payload))
    chunks = []
    compressor = StreamCompressor(chunks.append, "zstd", 3)
    compressor.write(buffer.getvalue())
    compressor.finish()
    return b"".join(chunks)


@pytest.fixture(scope="module")
def blob() -> bytes:
    return stored_tar()


def test_intact_archive_extracts_every_file(tmp_path, blob):
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.put_bytes(KEY, blob)
    digests = extract_archive(storage, KEY, "zstd", str(tmp_path / "data"), Timer())
    assert len(digests) == 40
    assert os.path.getsize(tmp_path / "data" / "base" / "1" / "16384") == digests["base/1/16384"].size


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.99])
def test_damage_anywhere_is_reported_with_the_object_and_the_fix(tmp_path, blob, fraction):
    storage = PosixStorage(str(tmp_path / "repo"))
    damaged = bytearray(blob)
    damaged[int(len(damaged) * fraction)] ^= 0x04
    storage.put_bytes(KEY, bytes(damaged))
    with pytest.raises(CorruptObject) as caught:
        extract_archive(storage, KEY, "zstd", str(tmp_path / "data"), Timer())
    assert caught.value.message.startswith("stored backup %s cannot be read: " % KEY)
    assert "another copy" in caught.value.hint
