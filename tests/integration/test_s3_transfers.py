"""Streamed, parallel and resumed S3 transfers against moto's S3 server."""

from __future__ import annotations

import hashlib
import os
import tempfile

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import s3 as storage_s3
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.factory import open_storage
from harness.s3 import make_bucket

MiB = 1024 * 1024


def _store(endpoint, **extra: str):
    options = {"bucket": make_bucket(endpoint), "endpoint_url": endpoint.url, "region": "us-east-1", "path_style": "true",
               "access_key_id": endpoint.access_key_id, "secret_access_key": endpoint.secret_access_key,
               "part_size": "5MiB", "upload_concurrency": "4", "download_concurrency": "4"}
    options.update(extra)
    return open_storage("s3", "transfers", options)


def _write(store, key: str, data: bytes, piece: int = MiB):
    with store.writer(key) as writer:
        for offset in range(0, len(data), piece):
            writer.write(data[offset:offset + piece])
    return writer


def _unfinished(store, key: str) -> list:
    uploads = store.client.list_multipart_uploads(Bucket=store.settings.bucket).get("Uploads", [])
    return [item for item in uploads if item["Key"] == store.object_key(key)]


def test_a_40_mib_object_round_trips_in_parallel_parts(s3_endpoint):
    store = _store(s3_endpoint)
    data = os.urandom(40 * MiB + 4321)
    writer = _write(store, "big", data)
    info = store.stat("big")
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert writer.resumed_bytes == 0 and not _unfinished(store, "big")
    head = store.client.head_object(Bucket=store.settings.bucket, Key=store.object_key("big"))
    assert head["ETag"].strip('"').endswith("-9")  # eight 5 MiB parts and the rest
    with store.open("big") as stream:
        assert isinstance(stream, storage_s3.RangedReader)
        assert stream.read() == data


def test_ranged_reads_in_small_pieces_are_byte_exact(s3_endpoint):
    store = _store(s3_endpoint, download_concurrency="2")
    data = os.urandom(17 * MiB + 1)
    _write(store, "ranged", data, piece=3 * MiB + 7)
    pieces = []
    with store.open("ranged") as stream:
        while True:
            piece = stream.read(999_983)
            if not piece:
                break
            pieces.append(piece)
    assert b"".join(pieces) == data
    assert store.read_prefix("ranged", 10) == data[:10]


def test_a_killed_upload_is_resumed(s3_endpoint):
    store = _store(s3_endpoint)
    data = os.urandom(23 * MiB)
    killed = store.writer("resumed")
    killed.write(data[:16 * MiB])  # three parts handed over, then the process "dies": no abort
    killed.wait_for_parts()
    del killed
    assert len(_unfinished(store, "resumed")) == 1
    writer = _write(store, "resumed", data)
    assert writer.resumed_bytes == 15 * MiB
    assert store.get_bytes("resumed") == data and store.stat("resumed").sha256 == hashlib.sha256(data).hexdigest()
    assert not _unfinished(store, "resumed")


def test_a_changed_source_over_a_stale_upload_stores_the_new_bytes(s3_endpoint):
    store = _store(s3_endpoint)
    stale = os.urandom(16 * MiB)
    killed = store.writer("changed")
    killed.write(stale)
    killed.wait_for_parts()
    del killed
    new = stale[:5 * MiB] + os.urandom(14 * MiB)  # the first part is unchanged, the rest differs
    writer = _write(store, "changed", new)
    assert writer.resumed_bytes == 5 * MiB
    assert store.get_bytes("changed") == new and store.stat("changed").sha256 == hashlib.sha256(new).hexdigest()


def test_an_existing_object_is_not_overwritten_by_a_streamed_one(s3_endpoint):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ObjectExists

    store = _store(s3_endpoint)
    store.put_bytes("taken", b"first")
    with pytest.raises(ObjectExists):
        _write(store, "taken", os.urandom(11 * MiB))
    assert store.get_bytes("taken") == b"first" and not _unfinished(store, "taken")


def test_no_temporary_file_is_needed(s3_endpoint, tmp_path, monkeypatch):
    nowhere = str(tmp_path / "no-such-directory")
    monkeypatch.setenv("TMPDIR", nowhere)
    monkeypatch.setattr(tempfile, "tempdir", nowhere)  # a spool to disk would fail here
    store = _store(s3_endpoint, part_size="16MiB")
    data = os.urandom(MiB) * 100
    _write(store, "large", data, piece=4 * MiB)
    assert store.stat("large").sha256 == hashlib.sha256(data).hexdigest()


def test_a_killed_backup_archive_is_resumed_by_server_side_copies(s3_endpoint, monkeypatch):
    """repo/resumable.py on S3: the chunks a killed run stored are checked (read back) and copied
    inside the bucket (CopyObject keeps the SHA-256 metadata); only the rest is uploaded."""
    import io
    import json
    import tarfile

    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import compression
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.chunks import open_archive
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.resumable import (
        SET_INDEX, ResumableArchiveWriter, ResumeIdentity, find_resumable)

    store = _store(s3_endpoint)
    identity = ResumeIdentity("7000000000000000001", "full", None, "zstd")
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for number in range(12):
            data = os.urandom(700 * 1024) + bytes(300 * 1024)
            info = tarfile.TarInfo("base/5/%d" % (16384 + number))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = tar_buffer.getvalue()

    def run(label: str, end: int, source=None):
        store.put_bytes("main/backup/%s/%s" % (label, SET_INDEX), json.dumps(identity.document()).encode())
        writer = ResumableArchiveWriter(store, "main/backup/%s/base.tar.zst" % label, 2 * MiB,
                                        lambda sink: compression.StreamCompressor(sink, "zstd", 3), "zstd", source)
        for offset in range(0, end, MiB):
            writer.write(tar_bytes[offset:min(offset + MiB, end)])
        return writer

    killed = run("20261204-100000F", len(tar_bytes) * 3 // 4)  # then the process "dies": nothing committed
    stored = killed.stats().chunks
    assert stored >= 3
    uploaded = []
    real_writer = store.writer
    monkeypatch.setattr(store, "writer", lambda key, overwrite=False: uploaded.append(key) or real_writer(key, overwrite))
    writer = run("20261204-110000F", len(tar_bytes), find_resumable(store, "main/backup/", identity))
    info = writer.commit()
    assert writer.stats().reused == stored
    chunk_uploads = [key for key in uploaded if "/resume/" not in key]
    assert len(chunk_uploads) == len(info.chunks) - stored, chunk_uploads
    copied = store.stat("main/backup/20261204-110000F/base.tar.zst")
    assert copied.sha256 == info.chunks[0].sha256
    entry = {"key": "base.tar.zst", "chunks": info.record_chunks()}
    with open_archive(store, "main/backup/20261204-110000F/", entry) as raw:
        assert compression.open_decompressed(raw, "zstd").read() == tar_bytes
