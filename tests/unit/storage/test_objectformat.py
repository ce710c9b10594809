from __future__ import annotations

import os

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import objectformat
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg import wal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import (
    CorruptObject,
    ObjectNotFound,
    RestorekeeperError,
    StorageError,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.factory import open_storage
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage

from walfiles import segment_bytes, segment_name


@pytest.fixture
def storage(tmp_path):
    store = PosixStorage(str(tmp_path / "repo"))
    store.ensure_root()
    return store


def test_put_get_stat_list_delete(storage):
    info = storage.put_bytes("c/wal/00/a", b"alpha")
    assert info.size == 5 and info.sha256 == objectformat.sha256_hex(b"alpha")
    storage.put_bytes("c/wal/00/b", b"beta")
    storage.put_bytes("c/other", b"x")
    assert [i.key for i in storage.list("c/wal/")] == ["c/wal/00/a", "c/wal/00/b"]
    assert [i.key for i in storage.list("c/wal/00/b")] == ["c/wal/00/b"]
    assert storage.stat("c/wal/00/a").size == 5
    assert storage.get_bytes("c/wal/00/b") == b"beta"
    storage.delete("c/wal/00/a")
    storage.delete("c/wal/00/a")  # deleting twice is not an error
    assert storage.stat("c/wal/00/a") is None
    with pytest.raises(ObjectNotFound):
        storage.get_bytes("c/wal/00/a")


def test_overwrite_when_asked(storage):
    storage.put_bytes("k", b"1")
    storage.put_bytes("k", b"2", overwrite=True)
    assert storage.get_bytes("k") == b"2"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_invalid_keys_are_refused(storage, key):
    with pytest.raises(StorageError, match="invalid object key"):
        storage.put_bytes(key, b"x")


def test_relative_root_and_unknown_backend_are_refused():
    with pytest.raises(StorageError, match="absolute"):
        PosixStorage("relative/repo")
    with pytest.raises(StorageError, match="unknown repository type"):
        open_storage("tape", "/x")


def test_envelope_round_trip_and_damage():
    data = b"hello" * 1000
    blob = objectformat.encode("00000002.history", data, "zstd", 3)
    header, decoded = objectformat.decode(blob)
    assert decoded == data and header.size == len(data) and header.name == "00000002.history"
    with pytest.raises(CorruptObject, match="magic"):
        objectformat.decode(b"XXXX" + blob[4:])
    with pytest.raises(CorruptObject, match="truncated"):
        objectformat.decode(blob[:6])
    newer = blob.replace(b'"format":1', b'"format":9')
    with pytest.raises(CorruptObject, match="newer"):
        objectformat.decode(newer)


def test_checksum_mismatch_is_reported_even_when_decompression_succeeds():
    blob = objectformat.encode("x", b"abc", "none", 0)
    with pytest.raises(CorruptObject, match="SHA-256 mismatch"):
        objectformat.decode(blob[:-1] + b"d")


@pytest.mark.parametrize(
    "name, kind",
    [
        ("000000010000000000000001", wal.SEGMENT),
        ("000000010000000000000001.partial", wal.PARTIAL),
        ("000000010000000000000001.00000028.backup", wal.BACKUP_HISTORY),
        ("0000000A.history", wal.TIMELINE_HISTORY),
    ],
)
def test_classify(name, kind):
    assert wal.classify(name) == kind


@pytest.mark.parametrize("name", ["RECOVERYXLOG", "00000001000000000000000g", "1.history", "archive_status"])
def test_classify_rejects(name):
    with pytest.raises(RestorekeeperError):
        wal.classify(name)


def test_segment_header_supports_other_segment_sizes():
    size = 64 * 1024 * 1024
    name = segment_name(3, 70, segment_size=size)
    header = wal.read_segment_header(name, segment_bytes(name, segment_size=size))
    assert header.segment_size == size and header.page_address == 70 * size


def test_zero_filled_file_is_not_a_segment():
    name = segment_name(1, 1)
    with pytest.raises(CorruptObject, match="valid segment header"):
        wal.read_segment_header(name, bytes(1024 * 1024))


def test_directory_is_fsynced_on_delete(storage, monkeypatch):
    storage.put_bytes("d/k", b"x")
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink("/proc/self/fd/%d" % fd)) or real(fd))
    storage.delete("d/k")
    assert synced == [storage.path_of("d")]
