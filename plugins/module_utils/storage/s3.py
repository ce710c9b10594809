"""Repository storage in Amazon S3 or an S3-compatible object store, via boto3.

Imported only when a repository or copy of type s3 is used, so the archive
command's local path never loads boto3.

* Atomic visibility: S3 makes an object visible only when its PUT or its
  multipart upload completes; a killed uploader leaves at most an incomplete
  multipart upload, which no listing shows (and which is aborted on the next
  write of the same key).
* No silent overwrite: writes carry If-None-Match: * unless asked to replace.
* Integrity: every object carries the SHA-256 of its bytes in its metadata
  and S3 checks a SHA-256 of every part on receipt; the ETag is compared with
  our own MD5 where S3 defines it as one.
* Immutable copies: Object Lock retention (governance or compliance) on every
  object written; a delete of a retained object is refused, never attempted.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import os
import tempfile
from typing import Any, BinaryIO, Dict, Iterator, NamedTuple, Optional, Tuple

from ..common import deadline
from ..config.config import ENDPOINT_URL_HINT, endpoint_url_problem, redacted_url
from ..common.errors import LockBusy, ObjectExists, ObjectNotFound, StorageError
from ..common.fsutil import LockHeld, exclusive_flock, private_directory
from .base import ObjectInfo, ObjectWriter, Storage, validate_key

PART_SIZE = 64 * 1024 * 1024
SPOOL_IN_MEMORY = 8 * 1024 * 1024
SHA256_METADATA = "sha256"


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
    values = {key: options.get(key, "") for key in S3Settings._fields
              if key not in ("prefix", "path_style", "object_lock_days", "max_attempts")}
    values["object_lock_mode"] = mode
    return S3Settings(prefix=prefix or "", path_style=options.get("path_style", "").lower() in ("1", "true", "yes", "on"),
                      object_lock_days=days, max_attempts=max(1, attempts), **values)


_HINTS = {
    "NoSuchBucket": "create the bucket first (restorekeeper never creates buckets), or fix the bucket name",
    "AccessDenied": "grant the credentials s3:GetObject, s3:PutObject, s3:ListBucket and s3:DeleteObject on the bucket",
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


class S3ObjectWriter(ObjectWriter):
    """Spools the object locally, then uploads it in one PUT or in parts."""

    def __init__(self, storage: "S3Storage", key: str, overwrite: bool) -> None:
        super().__init__(storage.object_key(key))
        self._storage = storage
        self._relative_key = key
        self._overwrite = overwrite
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        self._md5 = hashlib.md5()  # noqa: S324 - S3's ETag is an MD5; compared, never trusted for security

    def _write(self, data: bytes) -> None:
        self._md5.update(data)
        self._spool.write(data)

    def _commit(self) -> float:
        try:
            self._spool.seek(0)
            self._storage.upload(self._relative_key, self._spool, self._size, self._hash.hexdigest(),
                                 self._md5.hexdigest(), self._overwrite)
        finally:
            self._spool.close()
        return datetime.datetime.now(datetime.timezone.utc).timestamp()

    def _abort(self) -> None:
        self._spool.close()


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
        self._errors = (BotoCoreError, ClientError)
        _send_if_none_match_as_header(self.client)

    def object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _code(self, exc: Exception) -> str:
        return (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")

    # -- the interface
    def check_ready(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.settings.bucket)
        except self._errors as exc:
            if self._code(exc) in ("404", "NoSuchBucket"):
                raise StorageError("bucket %s does not exist" % self.settings.bucket, _HINTS["NoSuchBucket"]) from None
            raise s3_error("reach", self.location, exc) from None

    def ensure_root(self) -> None:
        self.check_ready()

    def writer(self, key: str, overwrite: bool = False) -> ObjectWriter:
        return S3ObjectWriter(self, key, overwrite)

    def _put_args(self, sha256_hex: str) -> Dict[str, Any]:
        args: Dict[str, Any] = {"Metadata": {SHA256_METADATA: sha256_hex}}
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

    def upload(self, key: str, source: BinaryIO, size: int, sha256_hex: str, md5_hex: str, overwrite: bool) -> None:
        name = self.object_key(key)
        args = self._put_args(sha256_hex)
        if not overwrite:
            args["IfNoneMatch"] = "*"
        try:
            if size <= PART_SIZE:
                data = source.read()
                response = self.client.put_object(
                    Bucket=self.settings.bucket, Key=name, Body=data, ContentMD5=_b64(bytes.fromhex(md5_hex)),
                    ChecksumSHA256=_b64(bytes.fromhex(sha256_hex)), **args)
                self._check_etag(name, response, md5_hex)
            else:
                self._multipart(name, source, args)
        except self._errors as exc:
            if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise ObjectExists("object %s already exists in %s" % (key, self.location)) from None
            raise s3_error("write", "%s%s" % (self.location, key), exc) from None

    def _check_etag(self, name: str, response: Dict[str, Any], md5_hex: str) -> None:
        etag = response.get("ETag", "").strip('"')
        if etag and "-" not in etag and not self.settings.sse.startswith("aws:kms") and etag != md5_hex:
            raise StorageError("the store acknowledged %s with MD5 %s, but %s was sent: the transfer was damaged"
                               % (name, etag, md5_hex), "retry; if it persists, check proxies between host and store")

    def _multipart(self, name: str, source: BinaryIO, args: Dict[str, Any]) -> None:
        bucket = self.settings.bucket
        condition = args.pop("IfNoneMatch", None)
        upload = self.client.create_multipart_upload(Bucket=bucket, Key=name, ChecksumAlgorithm="SHA256", **args)
        parts = []
        try:
            number = 1
            while True:
                chunk = source.read(PART_SIZE)
                if not chunk:
                    break
                response = self.client.upload_part(
                    Bucket=bucket, Key=name, UploadId=upload["UploadId"], PartNumber=number, Body=chunk,
                    ChecksumSHA256=_b64(hashlib.sha256(chunk).digest()))
                parts.append({"PartNumber": number, "ETag": response["ETag"],
                              "ChecksumSHA256": _b64(hashlib.sha256(chunk).digest())})
                number += 1
            complete = {"Bucket": bucket, "Key": name, "UploadId": upload["UploadId"], "MultipartUpload": {"Parts": parts}}
            if condition:
                complete["IfNoneMatch"] = condition
            self.client.complete_multipart_upload(**complete)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload["UploadId"])
            raise

    def open(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.settings.bucket, Key=self.object_key(key))["Body"]
        except self._errors as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                raise ObjectNotFound("object %s not found in %s" % (key, self.location)) from None
            raise s3_error("read", "%s%s" % (self.location, key), exc) from None

    def _head(self, key: str) -> Optional[Dict[str, Any]]:
        """The object's HEAD response, or None when there is no such object."""
        try:
            return self.client.head_object(Bucket=self.settings.bucket, Key=self.object_key(key))
        except self._errors as exc:
            if self._code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise s3_error("read", "%s%s" % (self.location, key), exc) from None

    def stat(self, key: str) -> Optional[ObjectInfo]:
        head = self._head(key)
        if head is None:
            return None
        return ObjectInfo(key, head["ContentLength"], head["LastModified"].timestamp(),
                          head.get("Metadata", {}).get(SHA256_METADATA))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][len(self.prefix):], item["Size"], item["LastModified"].timestamp())
        except self._errors as exc:
            raise s3_error("list", self.location + prefix, exc) from None

    def retained_until(self, key: str) -> Optional[datetime.datetime]:
        """The Object Lock retention date of an object, or None."""
        head = self._head(key)
        if head is None:
            return None
        until = head.get("ObjectLockRetainUntilDate")
        return until if until and until > datetime.datetime.now(datetime.timezone.utc) else None

    def delete(self, key: str) -> None:
        until = self.retained_until(key)
        if until is not None:
            raise StorageError("object %s%s is under Object Lock until %s and cannot be deleted"
                               % (self.location, key, until.isoformat()),
                               "retention must keep it; it expires by itself after that date")
        try:
            self.client.delete_object(Bucket=self.settings.bucket, Key=self.object_key(key))
        except self._errors as exc:
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


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
