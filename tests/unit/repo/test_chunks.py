"""Archives stored as chunks (repo/chunks.py): layout, reading back, damage named, nothing left by a failure."""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import CorruptObject, StorageError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.chunks import (
    ChunkedWriter, chunk_key, open_archive)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage

PREFIX = "main/backup/20261203-000000F/"


@pytest.fixture
def storage(tmp_path):
    return PosixStorage(str(tmp_path))


def store(storage, data: bytes, chunk_size: int, pieces: int = 7):
    """Write data in uneven pieces, the way a compressor hands bytes on."""
    with ChunkedWriter(storage, PREFIX + "base.tar.zst", chunk_size) as writer:
        step = max(len(data) // pieces, 1)
        for start in range(0, len(data), step):
            writer.write(data[start:start + step])
        info = writer.commit()
    entry = {"key": "base.tar.zst", "stored_size": info.size, "sha256": info.sha256}
    if info.record_chunks():
        entry["chunks"] = info.record_chunks()
    return info, entry


def read(storage, entry) -> bytes:
    with open_archive(storage, PREFIX, entry, "archive base.tar.zst of backup 20261203-000000F") as stream:
        return stream.read()


def test_chunk_keys():
    assert chunk_key("a/base.tar.zst", 1) == "a/base.tar.zst"
    assert chunk_key("a/base.tar.zst", 2) == "a/base.tar.zst.00002"
    assert chunk_key("a/base.tar.zst", 99999) == "a/base.tar.zst.99999"
    with pytest.raises(ValueError):
        chunk_key("a", 0)


def test_a_large_archive_is_split_into_bounded_chunks_and_reads_back_whole(storage):
    data = os.urandom(10 * 1000 + 123)
    info, entry = store(storage, data, chunk_size=1000)
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert [chunk.size for chunk in info.chunks] == [1000] * 10 + [123]
    keys = sorted(item.key for item in storage.list(PREFIX))
    assert keys == [PREFIX + "base.tar.zst"] + [PREFIX + "base.tar.zst.%05d" % n for n in range(2, 12)]
    assert entry["chunks"][0] == {"size": 1000, "sha256": hashlib.sha256(data[:1000]).hexdigest()}
    assert read(storage, entry) == data


def test_an_exact_multiple_leaves_no_empty_chunk(storage):
    info, entry = store(storage, b"x" * 3000, chunk_size=1000)
    assert [chunk.size for chunk in info.chunks] == [1000, 1000, 1000]
    assert read(storage, entry) == b"x" * 3000


def test_a_single_chunk_is_stored_as_before_chunks_existed(tmp_path):
    storage = PosixStorage(str(tmp_path))
    info, entry = store(storage, b"small archive", chunk_size=1000)
    assert "chunks" not in entry and info.record_chunks() is None
    assert storage.get_bytes(PREFIX + "base.tar.zst") == b"small archive"
    assert read(storage, entry) == b"small archive"  # how an older record is read too


def test_an_empty_archive_is_one_empty_object(tmp_path):
    storage = PosixStorage(str(tmp_path))
    info, entry = store(storage, b"", chunk_size=1000)
    assert info.size == 0 and len(info.chunks) == 1
    assert storage.get_bytes(PREFIX + "base.tar.zst") == b""
    assert read(storage, entry) == b""


def test_a_missing_chunk_is_named(storage):
    _info, entry = store(storage, os.urandom(3500), chunk_size=1000)
    storage.delete(PREFIX + "base.tar.zst.00003")
    with pytest.raises(CorruptObject, match=r"chunk 3 of 4 of archive base.tar.zst of backup 20261203-000000F "
                                            r"\(main/backup/20261203-000000F/base.tar.zst.00003\) is missing"):
        read(storage, entry)


def test_a_damaged_chunk_is_named_even_with_its_size_unchanged(storage):
    _info, entry = store(storage, os.urandom(3500), chunk_size=1000)
    storage.delete(PREFIX + "base.tar.zst.00002")
    storage.put_bytes(PREFIX + "base.tar.zst.00002", os.urandom(1000))
    with pytest.raises(CorruptObject, match=r"chunk 2 of 4 .* is damaged: 1000 bytes with SHA-256"):
        read(storage, entry)
    storage.delete(PREFIX + "base.tar.zst.00004")
    storage.put_bytes(PREFIX + "base.tar.zst.00004", b"short")
    entry["chunks"][1]["sha256"] = hashlib.sha256(storage.get_bytes(PREFIX + "base.tar.zst.00002")).hexdigest()
    with pytest.raises(CorruptObject, match=r"chunk 4 of 4 .* is damaged: 5 bytes"):
        read(storage, entry)


def test_a_failed_write_leaves_no_chunk(storage):
    with pytest.raises(RuntimeError):
        with ChunkedWriter(storage, PREFIX + "base.tar.zst", 1000) as writer:
            writer.write(os.urandom(2500))
            raise RuntimeError("pg_basebackup failed")
    assert list(storage.list(PREFIX)) == []


def test_a_record_listing_chunks_wrongly_is_refused(storage):
    with pytest.raises(CorruptObject, match="lists its chunks wrongly"):
        read(storage, {"key": "base.tar.zst", "chunks": {"size": 1}})


def test_a_failed_last_chunk_leaves_no_chunk(tmp_path):
    storage = PosixStorage(str(tmp_path))
    writer = ChunkedWriter(storage, PREFIX + "base.tar.zst", 1000)
    writer.write(os.urandom(2500))  # two chunks committed, the third open
    third = writer._current  # pylint: disable=protected-access

    class FullDisk:
        """The third chunk's file: its data cannot be flushed."""

        def __init__(self, real) -> None:
            self.real = real

        def flush(self) -> None:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            self.real.close()

    third._file = FullDisk(third._file)  # pylint: disable=protected-access
    with pytest.raises(StorageError, match="No space left"):
        writer.commit()
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]  # no chunk, no temporary file
