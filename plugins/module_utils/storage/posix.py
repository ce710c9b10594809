"""Repository storage on a local or mounted POSIX file system."""

from __future__ import annotations

import contextlib
import errno
import os
from typing import BinaryIO, Iterator, Optional

from ..common.errors import LockBusy, ObjectExists, ObjectNotFound, StorageError
from ..common.fsutil import (
    LockHeld,
    exclusive_flock,
    fsync_directory,
    is_temp_name,
    makedirs_durable,
    publish_without_overwrite,
    remove_quietly,
    temp_name_for,
)
from .base import ObjectInfo, ObjectWriter, Storage, validate_key

FILE_MODE = 0o640
DIR_MODE = 0o750


def _storage_error(action: str, path: str, exc: OSError) -> StorageError:
    """Turn an OSError into a message that names the path and the likely fix."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        need = "readable" if action in ("read", "open", "list", "stat") else "writable"
        hint = "make %s %s by OS user uid %d" % (path, need, os.geteuid())
    elif exc.errno == errno.ENOSPC:
        hint = "free space on the repository volume"
    elif exc.errno == errno.EROFS:
        hint = "the repository volume is mounted read-only"
    else:
        hint = None
    return StorageError("cannot %s %s: %s" % (action, path, reason), hint)


class PosixObjectWriter(ObjectWriter):
    def __init__(self, storage: "PosixStorage", key: str, overwrite: bool) -> None:
        super().__init__(key)
        self._final = storage.path_of(key)
        self._directory = os.path.dirname(self._final)
        self._overwrite = overwrite
        try:
            makedirs_durable(self._directory, DIR_MODE)
            self._temp = os.path.join(self._directory, temp_name_for(os.path.basename(self._final)))
            self._file = open(os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb")
        except OSError as exc:
            raise _storage_error("write", self._directory, exc) from None

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise _storage_error("write", self._final, exc) from None

    def _commit(self) -> float:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if self._overwrite:
                os.replace(self._temp, self._final)
            else:
                publish_without_overwrite(self._temp, self._final)
            fsync_directory(self._directory)
            return os.stat(self._final).st_mtime
        except FileExistsError:
            self._abort()
            raise ObjectExists("object %s already exists" % self.key) from None
        except OSError as exc:
            self._abort()
            raise _storage_error("write", self._final, exc) from None

    def _abort(self) -> None:
        try:
            self._file.close()
        finally:
            remove_quietly(self._temp)


class PosixStorage(Storage):
    def __init__(self, root: str) -> None:
        if not root or not os.path.isabs(root):
            raise StorageError(
                "repository path %r is not an absolute path" % root,
                "set [repository] path to an absolute directory",
            )
        self.root = os.path.normpath(root)
        self.location = self.root

    def path_of(self, key: str) -> str:
        return os.path.join(self.root, *validate_key(key).split("/"))

    def local_path(self, key: str) -> Optional[str]:
        return self.path_of(key)

    def check_ready(self) -> None:
        if not os.path.isdir(self.root):
            raise StorageError(
                "repository path %s does not exist" % self.root,
                "create it (restorekeeper repo-create) or mount the backup volume",
            )
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(
                "repository path %s is not writable by uid %d" % (self.root, os.geteuid()),
                "give the PostgreSQL OS user write access to it",
            )

    def ensure_root(self) -> None:
        try:
            makedirs_durable(self.root, DIR_MODE)
        except OSError as exc:
            raise _storage_error("create", self.root, exc) from None
        self.check_ready()

    def writer(self, key: str, overwrite: bool = False) -> ObjectWriter:
        return PosixObjectWriter(self, key, overwrite)

    def open(self, key: str) -> BinaryIO:
        path = self.path_of(key)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound("object %s not found in %s" % (key, self.root)) from None
        except OSError as exc:
            raise _storage_error("read", path, exc) from None

    def stat(self, key: str) -> Optional[ObjectInfo]:
        path = self.path_of(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error("read", path, exc) from None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory that can hold the prefix, then filter by name.
        directory_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.path_of(directory_key) if directory_key else self.root
        yield from self._walk(start, directory_key, prefix)

    def _walk(self, path: str, key_base: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = sorted(os.scandir(path), key=lambda entry: entry.name)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _storage_error("list", path, exc) from None
        for entry in entries:
            if is_temp_name(entry.name):
                continue
            key = key_base + "/" + entry.name if key_base else entry.name
            if entry.is_dir(follow_symlinks=False):
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(entry.path, key, prefix)
            elif key.startswith(prefix):
                st = entry.stat(follow_symlinks=False)
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        path = self.path_of(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _storage_error("delete", path, exc) from None
        fsync_directory(os.path.dirname(path))

    def prune_empty(self, prefix: str, interrupted: bool = False) -> None:
        top = self.path_of(prefix.rstrip("/"))
        for directory, _dirs, files in sorted(os.walk(top), key=lambda item: -len(item[0])):  # deepest first
            for name in files if interrupted else ():
                if is_temp_name(name):
                    remove_quietly(os.path.join(directory, name))
            try:
                os.rmdir(directory)  # refused, and kept, when anything is left in it
            except OSError:
                pass

    def can_copy_within(self, key: str) -> bool:
        return True

    def copy_within(self, source: str, dest: str) -> Optional[ObjectInfo]:
        """A hard link: objects are never changed once written, so two names may share one file."""
        source_path, dest_path = self.path_of(source), self.path_of(dest)
        directory = os.path.dirname(dest_path)
        try:
            makedirs_durable(directory, DIR_MODE)
            os.link(source_path, dest_path)
        except FileNotFoundError:
            raise ObjectNotFound("object %s not found in %s" % (source, self.root)) from None
        except FileExistsError:
            raise ObjectExists("object %s already exists" % dest) from None
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                return None
            raise _storage_error("write", dest_path, exc) from None
        fsync_directory(directory)
        status = os.stat(dest_path)
        return ObjectInfo(dest, status.st_size, status.st_mtime)

    @contextlib.contextmanager
    def lock(self, key: str, holder: str) -> Iterator[None]:
        path = self.path_of(key)
        try:
            makedirs_durable(os.path.dirname(path), DIR_MODE)
            with exclusive_flock(path, holder, FILE_MODE):
                yield
        except LockHeld as held:
            raise LockBusy("lock %s is held by %s" % (key, held)) from None
        except OSError as exc:
            raise _storage_error("lock", path, exc) from None

    def staging_directory(self) -> Optional[str]:
        return self.root
