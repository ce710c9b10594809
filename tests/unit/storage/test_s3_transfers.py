"""S3 streaming transfers without a store: part sizing, the bounded worker
pool, resume matching, and the writer's hand-over of parts (against a
recording stand-in for the boto3 client; the real store is exercised in
tests/integration/test_s3_transfers.py)."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import StorageError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import s3

MiB = 1024 * 1024


def test_part_size_doubles_every_thousand_parts_up_to_five_gib():
    assert s3.part_size_for(1, 5 * MiB) == 5 * MiB
    assert s3.part_size_for(1000, 5 * MiB) == 5 * MiB
    assert s3.part_size_for(1001, 5 * MiB) == 10 * MiB
    assert s3.part_size_for(10000, 5 * MiB) == 5 * MiB * 512
    assert s3.part_size_for(10000, 64 * MiB) == s3.MAX_PART_SIZE


def test_the_default_part_size_reaches_five_tib():
    assert s3.largest_streamed_object(s3.PART_SIZE) >= 5 * 1024 ** 4
    assert s3.largest_streamed_object(5 * MiB) > 4.8 * 1024 ** 4  # 5 MiB parts: 4.88 TiB
    assert 10000 * 5 * MiB < 50 * 1024 ** 3  # what fixed 5 MiB parts would allow


def test_transfer_settings_defaults_units_and_limits():
    assert s3.transfer_settings({}) == {"part_size": 0, "upload_concurrency": 4, "download_concurrency": 4}
    assert s3.transfer_settings({"part_size": "16MiB", "upload_concurrency": "8"})["part_size"] == 16 * MiB
    for bad in ({"part_size": "1MiB"}, {"part_size": "6GiB"}, {"part_size": "lots"}, {"upload_concurrency": "0"},
                {"download_concurrency": "33"}, {"upload_concurrency": "four"}):
        with pytest.raises(StorageError) as caught:
            s3.transfer_settings(bad)
        assert caught.value.hint


def test_settings_from_options_carry_the_transfer_settings():
    settings = s3.settings_from_options("p", {"bucket": "b", "part_size": "8MiB", "download_concurrency": "2"})
    assert (settings.part_size, settings.upload_concurrency, settings.download_concurrency) == (8 * MiB, 4, 2)


def _b64_sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_a_stored_part_is_reused_only_with_the_same_size_and_digest():
    data = b"x" * 1000
    sha = _b64_sha(data)
    assert s3.stored_part_matches({"Size": 1000, "ChecksumSHA256": sha, "ETag": '"z"'}, data, sha, True)
    assert not s3.stored_part_matches({"Size": 1000, "ChecksumSHA256": _b64_sha(b"y" * 1000)}, data, sha, True)
    assert not s3.stored_part_matches({"Size": 999, "ChecksumSHA256": sha}, data, sha, True)
    assert not s3.stored_part_matches(None, data, sha, True)
    md5 = '"%s"' % hashlib.md5(data).hexdigest()  # noqa: S324
    assert s3.stored_part_matches({"Size": 1000, "ETag": md5}, data, sha, True)  # a store that lists no checksum
    assert not s3.stored_part_matches({"Size": 1000, "ETag": md5}, data, sha, False)  # SSE-KMS: the ETag is no MD5
    assert not s3.stored_part_matches({"Size": 1000, "ETag": '"%s"' % ("0" * 32)}, data, sha, True)


def test_bounded_workers_hold_at_most_their_number_and_keep_order():
    release = threading.Event()
    running, peak, lock = [0], [0], threading.Lock()

    def job(item):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(5)
        with lock:
            running[0] -= 1
        return item * 2

    workers = s3.BoundedWorkers(2, job)
    workers.submit(1)
    workers.submit(2)
    blocked = threading.Thread(target=workers.submit, args=(3,))
    blocked.start()
    time.sleep(0.2)
    assert blocked.is_alive(), "a third item must wait while two are held"
    release.set()
    blocked.join(5)
    assert workers.results() == [2, 4, 6] and peak[0] <= 2
    workers.close()


def test_bounded_workers_raise_the_first_error_and_skip_the_rest():
    done = []

    def job(item):
        if item == 1:
            raise StorageError("part 1 failed")
        done.append(item)

    workers = s3.BoundedWorkers(1, job)
    workers.submit(1)
    with pytest.raises(StorageError, match="part 1 failed"):
        for item in range(2, 50):
            workers.submit(item)
    with pytest.raises(StorageError, match="part 1 failed"):
        workers.results()
    workers.close()
    assert len(done) < 48


class _Client:
    """Records the multipart calls a writer makes; fails the part numbers in `fail`."""

    def __init__(self, fail=(), stale=None):
        self.calls, self.parts, self.fail, self.stale = [], {}, set(fail), stale or {}
        self.lock = threading.Lock()

    def _log(self, *call):
        with self.lock:
            self.calls.append(call)

    def get_paginator(self, name):
        client = self

        class Pages:
            def paginate(self, **_args):
                if name == "list_multipart_uploads":
                    return [{"Uploads": [{"Key": "k", "UploadId": "old", "Initiated": 1}] if client.stale else []}]
                return [{"Parts": list(client.stale.values())}]
        return Pages()

    def create_multipart_upload(self, **args):
        self._log("create", args["Key"])
        return {"UploadId": "new"}

    def upload_part(self, **args):
        if args["PartNumber"] in self.fail:
            raise StorageError("part %d refused" % args["PartNumber"])
        self._log("part", args["UploadId"], args["PartNumber"], len(args["Body"]))
        return {"ETag": '"e%d"' % args["PartNumber"]}

    def complete_multipart_upload(self, **args):
        self._log("complete", args["UploadId"], [part["PartNumber"] for part in args["MultipartUpload"]["Parts"]],
                  args.get("IfNoneMatch"))

    def abort_multipart_upload(self, **args):
        self._log("abort", args["UploadId"])

    def put_object_tagging(self, **args):
        self._log("tag", args["Tagging"]["TagSet"][0]["Value"])

    def put_object(self, **args):
        self._log("put", len(args["Body"]), args["Metadata"])
        return {}


class _Storage(s3.S3Storage):
    # No boto3 session here: the stand-in client is given.
    def __init__(self, client, **settings):  # pylint: disable=super-init-not-called
        self.settings = s3.S3Settings(bucket="b", **settings)
        self.prefix, self.location, self.client = "", "s3://b/", client
        self.errors = (StorageError,)
        self.part_size = 5 * MiB


def _write(storage, data, piece=MiB):
    with storage.writer("k") as writer:
        for offset in range(0, len(data), piece):
            writer.write(data[offset:offset + piece])
    return writer


def test_writer_streams_parts_and_completes_conditionally():
    client = _Client()
    data = bytes(range(256)) * (12 * MiB // 256) + b"tail"
    writer = _write(_Storage(client, upload_concurrency=3), data)
    sizes = sorted(call[2:] for call in client.calls if call[0] == "part")
    assert sizes == [(1, 5 * MiB), (2, 5 * MiB), (3, 2 * MiB + 4)]
    assert ("complete", "new", [1, 2, 3], "*") in client.calls
    assert ("tag", hashlib.sha256(data).hexdigest()) == client.calls[-1] and writer.resumed_bytes == 0


def test_a_small_object_is_one_put_with_its_digest():
    client = _Client()
    _write(_Storage(client), b"a" * (5 * MiB))  # exactly one part: still one PUT
    assert client.calls == [("put", 5 * MiB, {"sha256": hashlib.sha256(b"a" * (5 * MiB)).hexdigest()})]


def test_a_failed_part_aborts_the_upload():
    client = _Client(fail={2})
    with pytest.raises(StorageError, match="part 2 refused"):
        _write(_Storage(client, upload_concurrency=1), b"z" * (30 * MiB))
    assert client.calls[-1] == ("abort", "new") and not any(call[0] == "complete" for call in client.calls)


def test_resume_skips_matching_parts_and_rewrites_changed_ones():
    data = b"".join(bytes([n]) * (5 * MiB) for n in range(3)) + b"end"
    stale = {1: {"PartNumber": 1, "Size": 5 * MiB, "ETag": '"s1"', "ChecksumSHA256": _b64_sha(data[:5 * MiB])},
             2: {"PartNumber": 2, "Size": 5 * MiB, "ETag": '"s2"', "ChecksumSHA256": _b64_sha(b"changed" * 10)}}
    client = _Client(stale=stale)
    writer = _write(_Storage(client), data)
    uploaded = sorted(call[2] for call in client.calls if call[0] == "part")
    assert uploaded == [2, 3, 4] and writer.resumed_bytes == 5 * MiB
    assert not any(call[0] == "create" for call in client.calls)
    assert ("complete", "old", [1, 2, 3, 4], "*") in client.calls


def test_no_resume_when_overwriting():
    stale = {1: {"PartNumber": 1, "Size": 5 * MiB, "ETag": '"s1"', "ChecksumSHA256": _b64_sha(b"q" * (5 * MiB))}}
    client = _Client(stale=stale)
    with _Storage(client).writer("k", overwrite=True) as writer:
        writer.write(b"q" * (11 * MiB))
    assert ("create", "k") in client.calls and writer.resumed_bytes == 0
