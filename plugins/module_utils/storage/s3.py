"""Repository storage in Amazon S3 or an S3-compatible object store, via boto3.

Imported only when a repository or copy of type s3 is used, so the archive
command's local path never loads boto3.

* Atomic visibility: S3 makes an object visible only when its PUT or its
  multipart upload completes; a killed uploader leaves at most an incomplete
  multipart upload, which no listing shows (and which the next write of the
  same key resumes, see below).
* Streaming: a writer never touches the temporary directory. It buffers one
  part in memory; full parts go to `upload_concurrency` threads and the
  producer waits while that many are in flight, so a writer holds at most
  about (upload_concurrency + 1) x part size. The part size doubles every
  1000 parts (up to 5 GiB) so that 10,000 parts reach S3's 5 TiB limit.
  An object no larger than one part is a single PUT.
* Resume: a write that must not overwrite, finding an unfinished multipart
  upload of its key (a killed backup or copy), reuses it and skips each part
  the store already holds with the same number, size and SHA-256 (or MD5
  ETag where the store lists no checksum); other parts are uploaded again.
* Ranged reads: an object larger than one part is read with Range GETs of
  one part each, `download_concurrency` ahead of the reader, in order.
* No silent overwrite: writes carry If-None-Match: * unless asked to replace.
* Integrity: every object carries the SHA-256 of its bytes (in its metadata
  when written in one PUT; as the object tag sha256 when streamed in parts,
  since metadata is fixed before the first byte) and S3 checks a SHA-256 of
  every part on receipt; the ETag is compared with our own MD5 where S3
  defines it as one.
* Immutable copies: Object Lock retention (governance or compliance) on every
  object written; a delete of a retained or legally held object is refused,
  never attempted. `restorekeeper keep` extends retentions and sets legal holds
  (put_object_retention, put_object_legal_hold), never shortening a retention.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import io
import os
import threading
from typing import Any, BinaryIO, Callable, Deque, Dict, Iterator, List, NamedTuple, Optional, Tuple

from ..common import deadline
from ..config.config import ENDPOINT_URL_HINT, endpoint_url_problem, parse_size, redacted_url
from ..common.errors import LockBusy, ObjectExists, ObjectNotFound, StorageError
from ..common.fsutil import LockHeld, exclusive_flock, private_directory
from .base import LockState, ObjectInfo, ObjectWriter, Storage, validate_key

PART_SIZE = 64 * 1024 * 1024       # the default part_size
MIN_PART_SIZE = 5 * 1024 * 1024    # S3's limits
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10000
PARTS_PER_DOUBLING = 1000
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 32
SHA256_METADATA = "sha256"
SHA256_TAG = "sha256"


class S3Settings(NamedTuple):
    bucket: str
    prefix: str = ""
    endpoint_url: str = ""
    region: str = ""
    path_style: bool = False
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    profile: str = ""
    ca_bundle: str = ""
    sse: str = ""                 # "", "AES256" or "aws:kms"
    kms_key_id: str = ""
    storage_class: str = ""
    object_lock_mode: str = ""    # "", "GOVERNANCE" or "COMPLIANCE"
    object_lock_days: int = 0
    max_attempts: int = 10        # per request, with jittered exponential backoff
    part_size: int = 0            # bytes of the first parts; 0: PART_SIZE
    upload_concurrency: int = DEFAULT_CONCURRENCY
    download_concurrency: int = DEFAULT_CONCURRENCY


def settings_from_options(prefix: str, options: Dict[str, str]) -> S3Settings:
    """S3Settings from the text values of a configuration section."""
    try:
        days = int(options.get("object_lock_days") or 0)
        attempts = int(options.get("max_attempts") or 10)
    except ValueError:
        raise StorageError("object_lock_days and max_attempts must be whole numbers") from None
    mode = options.get("object_lock_mode", "").upper()
    if mode not in ("", "GOVERNANCE", "COMPLIANCE"):
        raise StorageError("object_lock_mode %r is not GOVERNANCE or COMPLIANCE" % mode)
    if mode and days <= 0:
        raise StorageError("object_lock_mode %s needs object_lock_days > 0" % mode)
    problem = endpoint_url_problem(options.get("endpoint_url", ""))
    if problem:
        raise StorageError("endpoint_url %r %s" % (redacted_url(options["endpoint_url"]), problem), ENDPOINT_URL_HINT)
    values: Dict[str, Any] = {key: options.get(key, "") for key in S3Settings._fields
                              if key not in ("prefix", "path_style", "object_lock_days", "max_attempts") + _TRANSFER_KEYS}
    values["object_lock_mode"] = mode
    values.update(transfer_settings(options))
    return S3Settings(prefix=prefix or "", path_style=options.get("path_style", "").lower() in ("1", "true", "yes", "on"),
                      object_lock_days=days, max_attempts=max(1, attempts), **values)


_TRANSFER_KEYS = ("part_size", "upload_concurrency", "download_concurrency")


def transfer_settings(options: Dict[str, str]) -> Dict[str, int]:
    """part_size, upload_concurrency and download_concurrency from text, checked against S3's limits."""
    text = (options.get("part_size") or "").strip()
    try:
        part_size = parse_size(text) if text else 0
    except ValueError as exc:
        raise StorageError("part_size %s" % exc, "for example part_size = 64MiB") from None
    if text and not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise StorageError("part_size %s is outside S3's limits" % text, "choose between 5MiB and 5GiB (default 64MiB)")
    values = {"part_size": part_size}
    for key in ("upload_concurrency", "download_concurrency"):
        text = (options.get(key) or "").strip()
        try:
            number = int(text) if text else DEFAULT_CONCURRENCY
        except ValueError:
            raise StorageError("%s %r is not a whole number" % (key, text), "choose between 1 and %d" % MAX_CONCURRENCY) from None
        if not 1 <= number <= MAX_CONCURRENCY:
            raise StorageError("%s %d is out of range" % (key, number),
                               "choose between 1 and %d (default %d); each one holds a part in memory"
                               % (MAX_CONCURRENCY, DEFAULT_CONCURRENCY))
        values[key] = number
    return values


def part_size_for(number: int, base: int) -> int:
    """The size of part `number` (from 1) of a stream whose first parts have `base` bytes:
    doubled every PARTS_PER_DOUBLING parts, at most MAX_PART_SIZE."""
    return min(MAX_PART_SIZE, base << ((number - 1) // PARTS_PER_DOUBLING))


def largest_streamed_object(base: int) -> int:
    """Bytes that MAX_PARTS parts sized by part_size_for hold."""
    return sum(part_size_for(number, base) for number in range(1, MAX_PARTS + 1, PARTS_PER_DOUBLING)) * PARTS_PER_DOUBLING


def stored_part_matches(stored: Optional[Dict[str, Any]], data: bytes, sha256_b64: str, etag_is_md5: bool) -> bool:
    """Whether a part left by an unfinished upload (a ListParts entry) holds exactly `data`:
    same size and SHA-256; when the store lists no checksum, an ETag equal to its MD5."""
    if not stored or stored.get("Size") != len(data):
        return False
    if stored.get("ChecksumSHA256"):
        return bool(stored["ChecksumSHA256"] == sha256_b64)
    etag = str(stored.get("ETag", "")).strip('"')
    return etag_is_md5 and bool(etag) and etag == hashlib.md5(data).hexdigest()  # noqa: S324 - compared with the store's


_HINTS = {
    "NoSuchBucket": "create the bucket first (restorekeeper never creates buckets), or fix the bucket name",
    "AccessDenied": ("grant the credentials s3:GetObject, s3:PutObject, s3:ListBucket and s3:DeleteObject on the bucket "
                     "(and s3:PutObjectRetention, s3:PutObjectLegalHold for `restorekeeper keep` under Object Lock)"),
    "InvalidAccessKeyId": "the access key id is unknown to the store: fix the credentials",
    "SignatureDoesNotMatch": "the secret access key is wrong: fix the credentials",
    "ExpiredToken": "the session token expired: refresh the credentials",
    "PermanentRedirect": "the bucket is in another region: set region",
}


def s3_error(action: str, where: str, exc: Exception) -> StorageError:
    """A botocore failure as a message naming the operation, the object and the fix."""
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    if code:
        return StorageError("cannot %s %s: %s (%s)" % (action, where, response["Error"].get("Message", code), code),
                            _HINTS.get(code))
    return StorageError("cannot %s %s: %s" % (action, where, exc),
                        "check endpoint_url, the network path to the store, and its TLS certificate (ca_bundle)")


class BoundedWorkers:
    """Runs job(item) on `workers` threads. submit() blocks while `workers`
    items are queued or running, so at most that many are held at once; the
    first error of a job is raised by the next submit() or by results(), and
    the jobs not yet started are then skipped."""

    def __init__(self, workers: int, job: Callable[[Any], Any], name: str = "rk-s3") -> None:
        from concurrent.futures import ThreadPoolExecutor  # only for transfers larger than a part

        self._job = job
        self._slots = threading.BoundedSemaphore(workers)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._futures: List[Any] = []
        self._failure: Optional[BaseException] = None
        self._lock = threading.Lock()

    def submit(self, item: Any) -> None:
        self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            raise self._failure
        try:
            self._futures.append(self._executor.submit(self._run, item))
        except BaseException:
            self._slots.release()
            raise

    def _run(self, item: Any) -> Any:
        try:
            if self._failure is not None:
                return None
            return self._job(item)
        except BaseException as exc:
            with self._lock:
                if self._failure is None:
                    self._failure = exc
            raise
        finally:
            self._slots.release()

    def results(self) -> List[Any]:
        """Wait for every job; their results in submission order, or the first error."""
        results = [future.result() if self._failure is None else None for future in self._futures]
        if self._failure is not None:
            raise self._failure
        return results

    def close(self) -> None:
        """Skip what has not started, wait for what runs."""
        with self._lock:
            if self._failure is None:
                self._failure = StorageError("the transfer was stopped")
        self._executor.shutdown(wait=True)


class MultipartUpload:
    """One multipart upload, new or resumed, fed part by part from a writer."""

    def __init__(self, storage: "S3Storage", key: str, upload_id: str, stale: Dict[int, Dict[str, Any]],
                 condition: Optional[str]) -> None:
        self._storage = storage
        self._key = key
        self._name = storage.object_key(key)
        self.upload_id = upload_id
        self._stale = stale
        self._condition = condition
        self.next_number = 1
        self.resumed_bytes = 0
        self._resumed_lock = threading.Lock()
        self._workers = BoundedWorkers(storage.settings.upload_concurrency, self._upload_part, "rk-s3-put")

    def submit(self, data: bytearray) -> None:
        """Hand a part to the workers; blocks while upload_concurrency parts are in flight."""
        if self.next_number > MAX_PARTS:
            raise StorageError("object %s%s needs more than %d parts" % (self._storage.location, self._key, MAX_PARTS),
                               "set a larger part_size (S3 allows 10,000 parts of at most 5 GiB)")
        number, self.next_number = self.next_number, self.next_number + 1
        self._workers.submit((number, data))

    def _upload_part(self, item: Tuple[int, bytearray]) -> Dict[str, Any]:
        number, data = item
        checksum = _b64(hashlib.sha256(data).digest())
        stored = self._stale.get(number)
        if stored_part_matches(stored, data, checksum, self._storage.etag_is_md5()):
            with self._resumed_lock:
                self.resumed_bytes += len(data)
            return {"PartNumber": number, "ETag": stored["ETag"], "ChecksumSHA256": checksum}
        try:
            response = self._storage.client.upload_part(
                Bucket=self._storage.settings.bucket, Key=self._name, UploadId=self.upload_id, PartNumber=number,
                Body=bytes(data), ChecksumSHA256=checksum)
        except self._storage.errors as exc:
            raise s3_error("write part %d of" % number, "%s%s" % (self._storage.location, self._key), exc) from None
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def wait(self) -> List[Dict[str, Any]]:
        """Wait until every part handed over is stored; their entries for CompleteMultipartUpload."""
        return self._workers.results()

    def complete(self, sha256_hex: str) -> None:
        """Make the object visible (aborting the upload if that fails), then tag it with its SHA-256."""
        storage, bucket = self._storage, self._storage.settings.bucket
        try:
            parts = self.wait()
            complete: Dict[str, Any] = {"Bucket": bucket, "Key": self._name, "UploadId": self.upload_id,
                                        "MultipartUpload": {"Parts": parts}}
            if self._condition:
                complete["IfNoneMatch"] = self._condition
            try:
                storage.client.complete_multipart_upload(**complete)
            except storage.errors as exc:
                raise storage.write_error(self._key, exc) from None
        except BaseException:
            self.abort()
            raise
        self._workers.close()
        with contextlib.suppress(*storage.errors):  # the tag is a convenience: the object is complete without it
            storage.client.put_object_tagging(Bucket=bucket, Key=self._name,
                                              Tagging={"TagSet": [{"Key": SHA256_TAG, "Value": sha256_hex}]})

    def abort(self) -> None:
        """Stop the workers and remove the upload: nothing becomes visible."""
        self._workers.close()
        with contextlib.suppress(Exception):
            self._storage.client.abort_multipart_upload(Bucket=self._storage.settings.bucket, Key=self._name,
                                                        UploadId=self.upload_id)


class S3ObjectWriter(ObjectWriter):
    """Streams the object from memory: one PUT when it fits in a part, else a
    multipart upload (resumed when one was left unfinished) fed by workers."""

    def __init__(self, storage: "S3Storage", key: str, overwrite: bool) -> None:
        super().__init__(storage.object_key(key))
        self._storage = storage
        self._relative_key = key
        self._overwrite = overwrite
        self._pending = bytearray()
        self._md5 = hashlib.md5()  # noqa: S324 - S3's ETag is an MD5; compared, never trusted for security
        self._upload: Optional[MultipartUpload] = None
        # After commit: whether the store's answer to the one PUT carried back
        # the SHA-256 checksum we sent (put_small); never for a multipart upload.
        self.checksum_confirmed = False

    @property
    def resumed_bytes(self) -> int:
        """Bytes of this object found already stored by an unfinished upload, and not sent again."""
        return self._upload.resumed_bytes if self._upload else 0

    def _write(self, data: bytes) -> None:
        if self._upload is None:
            self._md5.update(data)
        self._pending += data
        while len(self._pending) > self._part_size():
            self._hand_over(self._part_size())

    def _part_size(self) -> int:
        return part_size_for(self._upload.next_number if self._upload else 1, self._storage.part_size)

    def _hand_over(self, size: int) -> None:
        try:
            if self._upload is None:
                self._upload = self._storage.start_multipart(self._relative_key, self._overwrite)
            part, self._pending = self._pending, bytearray(self._pending[size:])
            del part[size:]
            self._upload.submit(part)
        except self._storage.errors as exc:
            raise s3_error("write", "%s%s" % (self._storage.location, self._relative_key), exc) from None

    def wait_for_parts(self) -> None:
        """Wait until every full part written so far is stored (progress reports, tests)."""
        if self._upload is not None:
            self._upload.wait()

    def _commit(self) -> float:
        data, self._pending = self._pending, bytearray()
        if self._upload is None:
            self.checksum_confirmed = self._storage.put_small(self._relative_key, bytes(data), self._hash.hexdigest(),
                                                              self._md5.hexdigest(), self._overwrite)
        else:
            try:
                self._upload.submit(data)
            except BaseException:
                self._upload.abort()
                raise
            self._upload.complete(self._hash.hexdigest())
        return datetime.datetime.now(datetime.timezone.utc).timestamp()

    def _abort(self) -> None:
        self._pending = bytearray()
        if self._upload is not None:
            self._upload.abort()


class RangedReader(io.RawIOBase):
    """An object read with Range GETs of one part each, `workers` ranges
    ahead of the reader, delivered in order: at most about
    (workers + 1) x part size in memory."""

    def __init__(self, storage: "S3Storage", key: str, first: Any, size: int, etag: str) -> None:
        super().__init__()
        from collections import deque

        self._storage = storage
        self._key = key
        self._size = size
        self._etag = etag
        self._part = storage.part_size
        self._next_range = 1
        self._ranges = (size + self._part - 1) // self._part
        from concurrent.futures import ThreadPoolExecutor  # only for objects larger than a part

        self._pool = ThreadPoolExecutor(max_workers=storage.settings.download_concurrency, thread_name_prefix="rk-s3-get")
        self._ahead: Deque[Any] = deque([self._pool.submit(self._first, first)])
        self._buffer = memoryview(b"")
        self._released = False
        self._fill()

    def _first(self, body: Any) -> bytes:
        try:
            with contextlib.closing(body):
                return self._checked(0, body.read())
        except self._storage.errors as exc:
            raise s3_error("read", "%s%s" % (self._storage.location, self._key), exc) from None

    def _fill(self) -> None:
        while self._next_range < self._ranges and len(self._ahead) < self._storage.settings.download_concurrency:
            self._ahead.append(self._pool.submit(self._fetch, self._next_range))
            self._next_range += 1

    def _fetch(self, index: int) -> bytes:
        start = index * self._part
        end = min(self._size, start + self._part) - 1
        try:
            response = self._storage.client.get_object(Bucket=self._storage.settings.bucket,
                                                       Key=self._storage.object_key(self._key),
                                                       Range="bytes=%d-%d" % (start, end), IfMatch=self._etag)
            with contextlib.closing(response["Body"]) as body:
                return self._checked(index, body.read())
        except self._storage.errors as exc:
            if self._storage.code_of(exc) == "PreconditionFailed":
                raise StorageError("object %s%s changed while it was read" % (self._storage.location, self._key),
                                   "read it again") from None
            raise s3_error("read", "%s%s" % (self._storage.location, self._key), exc) from None

    def _checked(self, index: int, data: bytes) -> bytes:
        expected = min(self._size, (index + 1) * self._part) - index * self._part
        if len(data) != expected:
            raise StorageError("object %s%s: range %d of %d returned %d bytes instead of %d"
                               % (self._storage.location, self._key, index + 1, self._ranges, len(data), expected),
                               "retry; if it persists, check proxies between host and store")
        return data

    def readable(self) -> bool:
        return True

    def _advance(self) -> bool:
        if not self._ahead:
            return False
        self._buffer = memoryview(self._ahead.popleft().result())
        self._fill()
        return True

    def read(self, size: Optional[int] = -1) -> bytes:
        if self._released:
            raise ValueError("read of a closed object stream")
        if size is None or size < 0:
            chunks = [bytes(self._buffer)]
            while self._advance():
                chunks.append(bytes(self._buffer))
            self._buffer = memoryview(b"")
            return b"".join(chunks)
        while not self._buffer and self._advance():
            pass
        data, self._buffer = bytes(self._buffer[:size]), self._buffer[size:]
        return data

    def readinto(self, target: Any) -> int:
        data = self.read(len(target))
        target[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self._released:
            self._released = True
            for future in self._ahead:
                future.cancel()
            self._ahead.clear()
            self._pool.shutdown(wait=True)
        super().close()


class S3Storage(Storage):
    def __init__(self, settings: S3Settings) -> None:
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError:
            from ..common.hostdeps import missing_error

            raise missing_error(["boto3"], "an s3 repository or copy", StorageError) from None
        if not settings.bucket:
            raise StorageError("an s3 repository needs a bucket", "set bucket in the repository or copy section")
        self.settings = settings
        self.prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""
        self.location = "s3://%s/%s" % (settings.bucket, self.prefix)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            session = boto3.session.Session(
                profile_name=settings.profile or None, region_name=settings.region or None,
                aws_access_key_id=settings.access_key_id or None,
                aws_secret_access_key=settings.secret_access_key or None,
                aws_session_token=settings.session_token or None,
            )
        except BotoCoreError as exc:  # e.g. a profile that does not exist
            raise StorageError("cannot set up the S3 session for %s: %s" % (self.location, exc),
                               "check profile (and the AWS configuration files of this OS user)") from None
        # Checksums only when an operation requires them (we send our own SHA-256): options of botocore
        # 1.36 and later; older ones (Debian 12 ships 1.29) behave that way without them.
        checksums = {name: "when_required" for name in ("request_checksum_calculation", "response_checksum_validation")
                     if name in BotoConfig.OPTION_DEFAULTS}
        attempts, connect_timeout, read_timeout = _request_limits(settings.max_attempts)
        config = BotoConfig(
            retries={"max_attempts": attempts, "mode": "adaptive"},  # jittered exponential backoff
            s3={"addressing_style": "path" if settings.path_style else "auto"},
            connect_timeout=connect_timeout, read_timeout=read_timeout, **checksums,
        )
        try:
            self.client = session.client("s3", endpoint_url=settings.endpoint_url or None, config=config,
                                         verify=settings.ca_bundle or None)
        except (ValueError, BotoCoreError) as exc:  # botocore refuses some settings with a bare ValueError
            raise StorageError("cannot set up the S3 client for %s: %s" % (self.location, exc),
                               "check endpoint_url, region and ca_bundle in the repository or copy section") from None
        self.errors: Tuple[type, ...] = (BotoCoreError, ClientError)
        self.part_size = settings.part_size or PART_SIZE
        _send_if_none_match_as_header(self.client)

    def object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def code_of(self, exc: Exception) -> str:
        return (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")

    def etag_is_md5(self) -> bool:
        """Whether the store's ETag of a PUT or a part is the MD5 of its bytes (not with SSE-KMS)."""
        return not self.settings.sse.startswith("aws:kms")

    def write_error(self, key: str, exc: Exception) -> StorageError:
        if self.code_of(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
            return ObjectExists("object %s already exists in %s" % (key, self.location))
        return s3_error("write", "%s%s" % (self.location, key), exc)

    # -- the interface
    def check_ready(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.settings.bucket)
        except self.errors as exc:
            if self.code_of(exc) in ("404", "NoSuchBucket"):
                raise StorageError("bucket %s does not exist" % self.settings.bucket, _HINTS["NoSuchBucket"]) from None
            raise s3_error("reach", self.location, exc) from None

    def ensure_root(self) -> None:
        self.check_ready()

    def writer(self, key: str, overwrite: bool = False) -> ObjectWriter:
        return S3ObjectWriter(self, key, overwrite)

    def _put_args(self, sha256_hex: Optional[str]) -> Dict[str, Any]:
        args: Dict[str, Any] = {"Metadata": {SHA256_METADATA: sha256_hex} if sha256_hex else {}}
        if self.settings.sse:
            args["ServerSideEncryption"] = self.settings.sse
            if self.settings.kms_key_id:
                args["SSEKMSKeyId"] = self.settings.kms_key_id
        if self.settings.storage_class:
            args["StorageClass"] = self.settings.storage_class
        if self.settings.object_lock_mode:
            args["ObjectLockMode"] = self.settings.object_lock_mode
            args["ObjectLockRetainUntilDate"] = (datetime.datetime.now(datetime.timezone.utc)
                                                 + datetime.timedelta(days=self.settings.object_lock_days))
        return args

    def put_small(self, key: str, data: bytes, sha256_hex: str, md5_hex: str, overwrite: bool) -> bool:
        """Store an object of at most one part in one PUT, with Content-MD5 and SHA-256.

        True when the store's answer carries back the SHA-256 checksum sent
        (x-amz-checksum-sha256, with x-amz-sdk-checksum-algorithm SHA256): S3
        checks the body against that checksum before it stores it, refuses the
        PUT (BadDigest) when they differ, and returns it only on success, so
        the object is then proven to hold exactly these bytes. False when the store returned no checksum (some
        S3-compatible stores): the write succeeded, but only a read proves
        its content. A checksum that differs from the one sent fails the write."""
        name = self.object_key(key)
        args = self._put_args(sha256_hex)
        if not overwrite:
            args["IfNoneMatch"] = "*"
        sent = _b64(bytes.fromhex(sha256_hex))
        try:
            response = self.client.put_object(
                Bucket=self.settings.bucket, Key=name, Body=data, ContentMD5=_b64(bytes.fromhex(md5_hex)),
                ChecksumAlgorithm="SHA256", ChecksumSHA256=sent, **args)
        except self.errors as exc:
            raise self.write_error(key, exc) from None
        self._check_etag(name, response, md5_hex)
        returned = response.get("ChecksumSHA256")
        if returned and returned != sent:
            raise StorageError("the store acknowledged %s with SHA-256 %s, but %s was sent: the transfer was damaged"
                               % (name, returned, sent), "retry; if it persists, check proxies between host and store")
        return returned == sent

    def _check_etag(self, name: str, response: Dict[str, Any], md5_hex: str) -> None:
        etag = response.get("ETag", "").strip('"')
        if etag and "-" not in etag and self.etag_is_md5() and etag != md5_hex:
            raise StorageError("the store acknowledged %s with MD5 %s, but %s was sent: the transfer was damaged"
                               % (name, etag, md5_hex), "retry; if it persists, check proxies between host and store")

    def start_multipart(self, key: str, overwrite: bool) -> MultipartUpload:
        """A multipart upload for key: the unfinished one a killed writer left, when it can be
        resumed (a write that must not overwrite, without Object Lock), else a new one."""
        name = self.object_key(key)
        condition = None if overwrite else "*"
        if not overwrite and not self.settings.object_lock_mode:  # a resumed upload would keep its old retention
            try:
                found = self._unfinished_upload(name)
                stale = self._stored_parts(name, found) if found else {}
            except self.errors:  # no s3:ListBucketMultipartUploads or s3:ListMultipartUploadParts: start afresh
                found = None
            if found:
                return MultipartUpload(self, key, found, stale, condition)
        args = self._put_args(None)
        upload = self.client.create_multipart_upload(Bucket=self.settings.bucket, Key=name, ChecksumAlgorithm="SHA256",
                                                     **args)
        return MultipartUpload(self, key, upload["UploadId"], {}, condition)

    def _unfinished_upload(self, name: str) -> Optional[str]:
        """The id of the latest unfinished multipart upload of exactly this key in our storage class, or None."""
        uploads = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=name):
            uploads.extend(item for item in page.get("Uploads", []) if item.get("Key") == name
                           and item.get("StorageClass", "STANDARD") == (self.settings.storage_class or "STANDARD"))
        if not uploads:
            return None
        return str(max(uploads, key=lambda item: item["Initiated"])["UploadId"])

    def _stored_parts(self, name: str, upload_id: str) -> Dict[int, Dict[str, Any]]:
        parts: Dict[int, Dict[str, Any]] = {}
        paginator = self.client.get_paginator("list_parts")
        for page in paginator.paginate(Bucket=self.settings.bucket, Key=name, UploadId=upload_id):
            parts.update((item["PartNumber"], item) for item in page.get("Parts", []))
        return parts

    def open(self, key: str) -> BinaryIO:
        """The object's bytes: its first part in one GET, the rest (if any) in parallel ranged GETs."""
        name = self.object_key(key)
        try:
            try:
                response = self.client.get_object(Bucket=self.settings.bucket, Key=name,
                                                  Range="bytes=0-%d" % (self.part_size - 1))
            except self.errors as exc:
                if self.code_of(exc) != "InvalidRange":
                    raise
                return self.client.get_object(Bucket=self.settings.bucket, Key=name)["Body"]  # an empty object
        except self.errors as exc:
            if self.code_of(exc) in ("NoSuchKey", "404"):
                raise ObjectNotFound("object %s not found in %s" % (key, self.location)) from None
            raise s3_error("read", "%s%s" % (self.location, key), exc) from None
        size = _total_size(response)
        if size is None or size <= self.part_size:
            return response["Body"]
        return RangedReader(self, key, response["Body"], size, response.get("ETag", ""))  # type: ignore[return-value]

    def read_prefix(self, key: str, length: int) -> bytes:
        """At most length bytes from the start of the object, in one ranged GET
        of only those bytes (open() asks for a whole part: reading a header
        would transfer the object and drop the connection unread)."""
        if length < 1:
            return b""
        try:
            response = self.client.get_object(Bucket=self.settings.bucket, Key=self.object_key(key),
                                              Range="bytes=0-%d" % (length - 1))
            with contextlib.closing(response["Body"]) as body:
                return bytes(body.read())[:length]
        except self.errors as exc:
            code = self.code_of(exc)
            if code in ("NoSuchKey", "404"):
                raise ObjectNotFound("object %s not found in %s" % (key, self.location)) from None
            if code == "InvalidRange":  # an empty object
                return b""
            raise s3_error("read", "%s%s" % (self.location, key), exc) from None

    def _head(self, key: str) -> Optional[Dict[str, Any]]:
        """The object's HEAD response, or None when there is no such object."""
        try:
            return self.client.head_object(Bucket=self.settings.bucket, Key=self.object_key(key))
        except self.errors as exc:
            if self.code_of(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise s3_error("read", "%s%s" % (self.location, key), exc) from None

    def stat(self, key: str) -> Optional[ObjectInfo]:
        head = self._head(key)
        if head is None:
            return None
        sha256 = head.get("Metadata", {}).get(SHA256_METADATA)
        if not sha256 and "-" in head.get("ETag", ""):  # streamed in parts: the digest is a tag
            sha256 = self._sha256_tag(key)
        return ObjectInfo(key, head["ContentLength"], head["LastModified"].timestamp(), sha256)

    def _sha256_tag(self, key: str) -> Optional[str]:
        try:
            tags = self.client.get_object_tagging(Bucket=self.settings.bucket, Key=self.object_key(key))
        except self.errors:
            return None  # no permission to read tags: the digest is unknown, as for other backends
        return next((tag["Value"] for tag in tags.get("TagSet", []) if tag.get("Key") == SHA256_TAG), None)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][len(self.prefix):], item["Size"], item["LastModified"].timestamp())
        except self.errors as exc:
            raise s3_error("list", self.location + prefix, exc) from None

    # -- Object Lock
    def supports_object_lock(self) -> bool:
        return True  # the bucket may have Object Lock whatever this repository writes: head_object tells

    def object_lock_mode(self) -> str:
        return self.settings.object_lock_mode

    def lock_state(self, key: str) -> LockState:
        """The object's retention date still in force and its legal hold (head_object)."""
        head = self._head(key)
        return _lock_state(head) if head is not None else LockState()

    def extend_retention(self, key: str, until: datetime.datetime) -> bool:
        """Retain the object until `until` unless it is retained as long already, in the
        object's own mode (a COMPLIANCE object stays COMPLIANCE), else object_lock_mode."""
        head = self._head(key)
        if head is None:
            raise ObjectNotFound("object %s not found in %s" % (key, self.location))
        current = head.get("ObjectLockRetainUntilDate")
        if current is not None and current >= until:
            return False
        mode = head.get("ObjectLockMode") or self.settings.object_lock_mode
        if not mode:
            raise StorageError("%s writes no Object Lock: cannot retain %s" % (self.location, key),
                               "set object_lock_mode (GOVERNANCE or COMPLIANCE) and object_lock_days")
        try:
            self.client.put_object_retention(Bucket=self.settings.bucket, Key=self.object_key(key),
                                             Retention={"Mode": mode, "RetainUntilDate": until})
        except self.errors as exc:
            raise s3_error("extend the retention of", "%s%s" % (self.location, key), exc) from None
        return True

    def set_legal_hold(self, key: str, on: bool) -> bool:
        head = self._head(key)
        if head is None:
            raise ObjectNotFound("object %s not found in %s" % (key, self.location))
        if _lock_state(head).legal_hold == on:
            return False
        try:
            self.client.put_object_legal_hold(Bucket=self.settings.bucket, Key=self.object_key(key),
                                              LegalHold={"Status": "ON" if on else "OFF"})
        except self.errors as exc:
            raise s3_error("put a legal hold on" if on else "lift the legal hold of",
                           "%s%s" % (self.location, key), exc) from None
        return True

    def can_copy_within(self, key: str) -> bool:
        info = self.stat(key)
        return info is not None and info.size <= MAX_PART_SIZE  # one CopyObject copies at most 5 GiB

    def copy_within(self, source: str, dest: str) -> Optional[ObjectInfo]:
        """A server-side CopyObject: the metadata and tags (the SHA-256) go
        with it; encryption, storage class and Object Lock are this store's."""
        args = self._put_args(None)
        del args["Metadata"]
        try:
            self.client.copy_object(Bucket=self.settings.bucket, Key=self.object_key(dest),
                                    CopySource={"Bucket": self.settings.bucket, "Key": self.object_key(source)},
                                    MetadataDirective="COPY", TaggingDirective="COPY", **args)
        except self.errors as exc:
            if self.code_of(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound("object %s not found in %s" % (source, self.location)) from None
            raise self.write_error(dest, exc) from None
        return self.stat(dest)

    def delete(self, key: str) -> None:
        state = self.lock_state(key)
        if state.locked():
            why = (["under Object Lock until %s" % state.retained_until.isoformat()] if state.retained_until else []) \
                + (["under an Object Lock legal hold"] if state.legal_hold else [])
            raise StorageError("object %s%s is %s and cannot be deleted" % (self.location, key, " and ".join(why)),
                               "retention must keep it; a retention expires by itself after its date, a legal hold "
                               "is lifted by `restorekeeper keep LABEL --release`")
        try:
            self.client.delete_object(Bucket=self.settings.bucket, Key=self.object_key(key))
        except self.errors as exc:
            raise s3_error("delete", "%s%s" % (self.location, key), exc) from None

    @contextlib.contextmanager
    def lock(self, key: str, holder: str) -> Iterator[None]:
        # S3 has no lock primitive: serialise on this host with a lock file,
        # in this user's private directory (a shared /tmp name could be planted).
        digest = hashlib.sha256((self.location + key).encode()).hexdigest()[:16]
        path = os.path.join(private_directory(), "restorekeeper-s3-%s.lock" % digest)
        try:
            with exclusive_flock(path, holder, 0o600):
                yield
        except LockHeld as held:
            raise LockBusy("lock %s is held by %s" % (key, held)) from None
        except OSError as exc:
            raise StorageError("cannot take the lock file %s: %s" % (path, exc.strerror or exc)) from None


#: Attempts per request under a deadline (wal-push, wal-fetch): with each
#: attempt's timeouts, attempts x timeout stays within the deadline.
DEADLINE_ATTEMPTS = 3


def _request_limits(max_attempts: int) -> Tuple[int, float, float]:
    """Attempts, connect and read timeout of one request. Under a deadline
    (deadline.py) they share it; the watchdog also bounds the whole call,
    since a store sending a byte now and then never trips a read timeout."""
    timeout = deadline.operation_timeout()
    if timeout is None:
        return max_attempts, 10.0, 120.0
    attempts = max(1, min(max_attempts, DEADLINE_ATTEMPTS))
    per_attempt = max(1.0, timeout / attempts)
    return attempts, min(10.0, per_attempt), per_attempt


_NO_OVERWRITE = "restorekeeper_if_none_match"
_CONDITIONAL_WRITES = ("PutObject", "CompleteMultipartUpload")


def _send_if_none_match_as_header(client: Any) -> None:
    """Writes that must not overwrite carry If-None-Match: * (the store refuses
    them when the key exists). botocore before 1.35 does not know the
    IfNoneMatch parameter: there it is taken out of the call before
    validation and sent as the header itself, before signing."""
    operation = client.meta.service_model.operation_model("PutObject")
    if "IfNoneMatch" in operation.input_shape.members:
        return

    def take_parameter(params: Dict[str, Any], context: Dict[str, Any], **_kwargs: Any) -> None:
        if params.pop("IfNoneMatch", None) == "*":
            context[_NO_OVERWRITE] = True

    def add_header(request: Any, **_kwargs: Any) -> None:
        if request.context.get(_NO_OVERWRITE):
            request.headers["If-None-Match"] = "*"

    for name in _CONDITIONAL_WRITES:
        client.meta.events.register("before-parameter-build.s3.%s" % name, take_parameter)
        client.meta.events.register("before-sign.s3.%s" % name, add_header)


def _total_size(response: Dict[str, Any]) -> Optional[int]:
    """The object's size from a ranged GET's Content-Range (bytes 0-9/1234), or None."""
    total = str(response.get("ContentRange", "")).rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _lock_state(head: Dict[str, Any]) -> LockState:
    """The Object Lock of a head_object response: a retention date only while in force."""
    until = head.get("ObjectLockRetainUntilDate")
    if until is not None and until <= datetime.datetime.now(datetime.timezone.utc):
        until = None
    return LockState(until, head.get("ObjectLockLegalHoldStatus") == "ON")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
