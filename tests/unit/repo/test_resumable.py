"""Archives written so that a killed backup resumes (repo/resumable.py): chunks cut at tar
headers and compressed on their own, an index per chunk, and a second run that reuses what
the first stored only where every block matches."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import compression
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo import resumable
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.chunks import chunk_key, open_archive
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.resumable import (
    SET_INDEX, ResumableArchiveWriter, ResumeIdentity, ResumeSourceDamaged, find_resumable)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage

SETS = "main/backup/"
FIRST, SECOND = "20261204-100000F", "20261204-110000F"
IDENTITY = ResumeIdentity("7412345678901234567", "full", None, "zstd")
CHUNK = 256 * 1024
BLOCK = 64 * 1024


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(resumable, "BLOCK_SIZE", BLOCK)


@pytest.fixture
def storage(tmp_path):
    return PosixStorage(str(tmp_path / "repo"))


def make_tar(files: dict) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1764800000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def database(seed: int = 1) -> dict:
    """Files like a data directory's: many small ones, and some larger than a chunk."""
    rng = random.Random(seed)
    files = {}
    for number in range(40):
        size = rng.choice([8192, 16384, 40000, 300 * 1024, 700 * 1024])
        files["base/5/%d" % (16000 + number)] = rng.randbytes(size // 2) + bytes(size - size // 2)
    return files


def new_compressor(sink):
    return compression.StreamCompressor(sink, "zstd", 3)


def write(storage, label: str, tar: bytes, source=None, stop_after: int = 0, piece: int = 100_003):
    """Write tar as a backup's archive; stop_after > 0 stops writing after that many bytes, as a kill would
    (nothing committed, nothing removed)."""
    storage.put_bytes(SETS + label + "/" + SET_INDEX, json.dumps(IDENTITY.document()).encode(), overwrite=True)
    writer = ResumableArchiveWriter(storage, SETS + label + "/base.tar.zst", CHUNK, new_compressor, "zstd", source)
    end = stop_after or len(tar)
    for start in range(0, end, piece):
        writer.write(tar[start:min(start + piece, end)])
    if stop_after:
        return None, writer
    return writer.commit(), writer


def read_back(storage, label: str, info) -> bytes:
    entry = {"key": "base.tar.zst", "chunks": info.record_chunks()}
    with open_archive(storage, SETS + label + "/", entry) as raw:
        return compression.open_decompressed(raw, "zstd").read()


def stored_chunks(storage, label: str, info) -> bytes:
    return b"".join(storage.get_bytes(chunk_key(SETS + label + "/base.tar.zst", n + 1)) for n in range(len(info.chunks)))


def test_chunks_end_at_tar_headers_and_read_back_as_one_stream(storage):
    tar = make_tar(database())
    info, writer = write(storage, FIRST, tar)
    assert read_back(storage, FIRST, info) == tar
    assert len(info.chunks) >= 4
    assert info.sha256 == hashlib.sha256(stored_chunks(storage, FIRST, info)).hexdigest()
    offset = 0
    for number in range(1, len(info.chunks) + 1):
        index = json.loads(storage.get_bytes(resumable.index_key(SETS + FIRST + "/", "base.tar.zst", number)))
        assert index["size"] == info.chunks[number - 1].size and index["sha256"] == info.chunks[number - 1].sha256
        assert len(index["blocks"]) == -(-index["tar_bytes"] // BLOCK)
        if number < len(info.chunks):
            assert CHUNK <= index["tar_bytes"] <= 2 * CHUNK
        offset += index["tar_bytes"]
        if number < len(info.chunks) and index["tar_bytes"] < 2 * CHUNK:  # else cut inside a large file
            header = tarfile.TarInfo.frombuf(tar[offset:offset + 512], "utf-8", "surrogateescape")
            assert header.name.startswith("base/5/")
    assert offset == len(tar)
    assert writer.stats().reused == 0


def test_a_killed_run_is_resumed_from_its_chunks(storage):
    tar = make_tar(database())
    _nothing, killed = write(storage, FIRST, tar, stop_after=len(tar) * 2 // 3)
    stored_first = killed.stats().chunks
    assert stored_first >= 2
    source = find_resumable(storage, SETS, IDENTITY)
    assert source.labels == [FIRST] and source.chunk_count == stored_first
    info, writer = write(storage, SECOND, tar, source)
    assert read_back(storage, SECOND, info) == tar
    stats = writer.stats()
    assert stats.reused == stored_first, stats
    assert info.sha256 == hashlib.sha256(stored_chunks(storage, SECOND, info)).hexdigest()
    # On a filesystem the reused chunk is a hard link to the stored one.
    first_chunk = os.stat(storage.path_of(chunk_key(SETS + FIRST + "/base.tar.zst", 1)))
    assert os.stat(storage.path_of(chunk_key(SETS + SECOND + "/base.tar.zst", 1))).st_ino == first_chunk.st_ino


def test_only_chunks_whose_every_block_matches_are_reused(storage):
    files = database()
    tar = make_tar(files)
    _nothing, killed = write(storage, FIRST, tar, stop_after=len(tar) - 1)
    changed = dict(files)
    victim = sorted(name for name, data in files.items() if len(data) >= 300 * 1024)[1]
    data = bytearray(changed[victim])
    data[len(data) // 2 + 5] ^= 0xFF  # one byte, in a later block of its chunk
    changed[victim] = bytes(data)
    new_tar = make_tar(changed)
    info, writer = write(storage, SECOND, new_tar, find_resumable(storage, SETS, IDENTITY))
    assert read_back(storage, SECOND, info) == new_tar
    stats = writer.stats()
    assert stats.reused == killed.stats().chunks - 1 and stats.partly_reused == 1, stats


def test_a_grown_file_shifts_the_cuts_only_until_a_large_file(storage):
    files = database()
    tar = make_tar(files)
    write(storage, FIRST, tar)
    grown = dict(files)
    first_small = sorted(files)[0]
    grown[first_small] = files[first_small] + b"x" * 9000
    new_tar = make_tar(grown)
    info, writer = write(storage, SECOND, new_tar, find_resumable(storage, SETS, IDENTITY))
    assert read_back(storage, SECOND, info) == new_tar
    stats = writer.stats()
    assert 0 < stats.reused < stats.chunks, stats


def test_a_damaged_stored_chunk_fails_the_resume_and_is_named(storage):
    tar = make_tar(database())
    write(storage, FIRST, tar, stop_after=len(tar) - 1)
    path = storage.path_of(chunk_key(SETS + FIRST + "/base.tar.zst", 2))
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(data)
    source = find_resumable(storage, SETS, IDENTITY)
    with pytest.raises(ResumeSourceDamaged, match=r"base.tar.zst.00002.*damaged"):
        write(storage, SECOND, tar, source)
    assert source.damaged.endswith("base.tar.zst.00002")


def test_a_missing_stored_chunk_is_written_from_the_stream(storage):
    tar = make_tar(database())
    _nothing, killed = write(storage, FIRST, tar, stop_after=len(tar) - 1)
    storage.delete(chunk_key(SETS + FIRST + "/base.tar.zst", 2))
    info, writer = write(storage, SECOND, tar, find_resumable(storage, SETS, IDENTITY))
    assert read_back(storage, SECOND, info) == tar
    assert writer.stats().reused == killed.stats().chunks - 1


def test_sets_of_another_cluster_type_or_compression_are_not_used(storage):
    tar = make_tar(database())
    write(storage, FIRST, tar, stop_after=len(tar) // 2)
    for other, words in [(IDENTITY._replace(system_identifier="1"), "another cluster"),
                         (IDENTITY._replace(backup_type="incremental", parent=FIRST), "full backup"),
                         (IDENTITY._replace(compression="none"), "compression is zstd")]:
        source = find_resumable(storage, SETS, other)
        assert source.labels == [] and words in source.ignored[FIRST], source.ignored
    # A complete set is never a source, whatever it holds.
    storage.put_bytes(SETS + FIRST + "/backup.json", b"{}")
    assert find_resumable(storage, SETS, IDENTITY).labels == []


def test_a_failed_write_removes_its_chunks_and_indexes(storage):
    tar = make_tar(database())
    _nothing, writer = write(storage, FIRST, tar, stop_after=len(tar) // 2)
    writer.abort()
    left = sorted(info.key for info in storage.list(SETS + FIRST + "/"))
    assert left == [SETS + FIRST + "/" + SET_INDEX]


def test_an_encrypted_repository_resumes_through_its_keys(tmp_path):
    """Ciphertext is bound to its object's name, so a reused chunk is decrypted, checked and encrypted
    again under its new name (never copied inside the store), and reads back."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.crypto import EncryptedStorage, Keyring

    keys = tmp_path / "keys"
    keys.write_text("2026-12 %s\n" % ("A" * 43 + "="))
    keys.chmod(0o600)
    inner = PosixStorage(str(tmp_path / "repo"))
    inner.ensure_root()
    storage = EncryptedStorage(inner, Keyring.load(str(keys)))
    Repository(storage).create()
    tar = make_tar(database())
    _nothing, killed = write(storage, FIRST, tar, stop_after=len(tar) - 1)
    info, writer = write(storage, SECOND, tar, find_resumable(storage, SETS, IDENTITY))
    assert writer.stats().reused == killed.stats().chunks
    assert read_back(storage, SECOND, info) == tar
    first = os.stat(inner.path_of(chunk_key(SETS + FIRST + "/base.tar.zst", 1)))
    assert os.stat(inner.path_of(chunk_key(SETS + SECOND + "/base.tar.zst", 1))).st_ino != first.st_ino
