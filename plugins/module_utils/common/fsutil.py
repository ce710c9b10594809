"""Durable file-system primitives.

Every write that matters follows one order: write to a temporary name in the
target directory, fsync the file, make it visible under its final name, fsync
the directory. A crash at any point leaves either no file or a complete one
under the final name; at worst a temporary file remains, which every reader
ignores because of its prefix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from typing import Callable, Iterator, Optional, Tuple

from .errors import RestorekeeperError

TEMP_PREFIX = ".rk-tmp."


def is_temp_name(name: str) -> bool:
    """True for the names of in-progress writes, which readers must ignore."""
    return name.startswith(TEMP_PREFIX)


def temp_name_for(final_name: str) -> str:
    """A unique temporary name, in the same directory, for a file being written."""
    return "%s%s.%d.%s" % (TEMP_PREFIX, final_name, os.getpid(), os.urandom(4).hex())


def fsync_directory(path: str) -> None:
    """Make a directory's entries (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: str, mode: int = 0o750) -> None:
    """Create a directory and any missing parents, fsyncing each new entry's parent."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path.rstrip("/"))
    if parent and parent != path:
        makedirs_durable(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    fsync_directory(parent or ".")


def publish_without_overwrite(temp_path: str, final_path: str) -> None:
    """Give a fully written temp file its final name, refusing to replace any file.

    link(2) fails with EEXIST when the name is taken, so two writers racing for
    one name can never overwrite each other. Filesystems without hard links
    fall back to an existence check followed by rename(2).
    """
    try:
        os.link(temp_path, final_path)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "file exists", final_path) from None
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if os.path.lexists(final_path):
            raise FileExistsError(errno.EEXIST, "file exists", final_path) from None
        os.rename(temp_path, final_path)
        return
    os.unlink(temp_path)


def remove_quietly(path: str) -> None:
    """Remove a file if it exists; used to clean up after a failed write."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def replace_file_durably(path: str, data: bytes, mode: int = 0o600, uid: int = -1, gid: int = -1,
                         sync_directory: bool = True) -> None:
    """Write a whole file so that readers see the old or the new content, never
    a mix: temp name (created with mode and owner before any byte is written),
    fsync, rename over the old file, fsync the directory (skipped with
    sync_directory=False where a lost rename is harmless)."""
    directory = _replace_file(path, data, mode, uid, gid, sync_file=True)
    if sync_directory:
        fsync_directory(directory)


def replace_file_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """Like replace_file_durably without any fsync: readers still see the old
    or the new content, but a crash may leave the file missing or empty. Only
    for files that are checked before use and cheap to lose (a shortcut that
    the real state is verified against)."""
    _replace_file(path, data, mode, -1, -1, sync_file=False)


def _replace_file(path: str, data: bytes, mode: int, uid: int, gid: int, sync_file: bool) -> str:
    """Write data under a temp name and rename it to path; return the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(directory, temp_name_for(os.path.basename(path)))
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with open(fd, "wb") as handle:
            if uid != -1 or gid != -1:
                os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            if sync_file:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError:
        remove_quietly(temp)
        raise
    return directory


def owner_ids(owner: str, group: str) -> Tuple[int, int]:
    """The uid of an OS user and the gid of a group, or an error naming the missing one."""
    import grp
    import pwd

    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise RestorekeeperError("unknown OS user %s" % owner, "create the PostgreSQL OS user first, or set owner") from None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise RestorekeeperError("unknown OS group %s" % group, "create the PostgreSQL OS group first, or set group") from None
    return uid, gid


def read_private_file(path: str, uid: int, gid: int) -> Tuple[Optional[str], bool]:
    """A file holding secrets as it is now: its text (None when absent) and
    whether it is already mode 0600 and owned by uid:gid."""
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None, False
    return text, (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, 0o600)


class LockHeld(Exception):
    """Raised by exclusive_flock when another process holds the lock; carries its holder text."""


@contextlib.contextmanager
def exclusive_flock(path: str, holder: str, mode: int = 0o640) -> Iterator[None]:
    """Hold a non-blocking exclusive flock(2) on path while the block runs,
    writing holder into the file. The kernel releases it when the holder dies,
    so a killed process never leaves a stale lock behind.

    The file is opened without following a symlink, must be a regular file
    owned by this user, root or the directory's owner (never one another
    user planted), and is never truncated: the holder line is written over the
    start, and readers take the first line."""
    fd = _open_lock_file(path, mode)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            raise LockHeld(text.split("\n", 1)[0].strip() or "unknown") from None
        os.pwrite(fd, holder.replace("\n", " ").encode("utf-8") + b"\n", 0)
        yield
    finally:
        os.close(fd)


def flock_waiting(fd: int, timeout: float, interval: float = 1.0,
                  on_first_wait: Optional[Callable[[], None]] = None) -> bool:
    """Take an exclusive flock(2) on an open file, waiting up to timeout seconds for its holder to let go.

    True once held (the kernel releases it when fd is closed or the process dies), False when the time ran
    out; OSError for anything but "held by someone else". The one lock-with-wait of the engine: scheduled
    runs and drills use it, so they exclude each other as flock(1) would.
    """

    def attempt() -> Optional[bool]:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            return None
        return True

    from .waiting import poll_until  # not loaded by the archive command, which never waits for a lock

    return bool(poll_until(attempt, timeout, interval, on_first_wait))


def _open_lock_file(path: str, mode: int) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RestorekeeperError("lock file %s is a symbolic link: refusing to follow it" % path,
                                     "someone planted it; remove it (and find out who)") from None
        raise  # the caller names the failure in its own terms
    try:
        st = os.fstat(fd)
        directory_owner = os.stat(os.path.dirname(os.path.abspath(path))).st_uid
        if not stat.S_ISREG(st.st_mode):
            raise RestorekeeperError("lock file %s is not a regular file" % path, "remove it")
        if st.st_uid not in (0, os.geteuid(), directory_owner):
            raise RestorekeeperError("lock file %s belongs to uid %d, not to this user (%d) or the directory's owner"
                                     % (path, st.st_uid, os.geteuid()), "someone planted it; remove it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_log_file(path: str, mode: int = 0o640) -> int:
    """A descriptor appending to the log file path, created with mode when
    missing; a symbolic link or anything but a regular file is refused (a log
    written as root must not be redirected into another file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RestorekeeperError("log file %s is a symbolic link: refusing to follow it" % path,
                                     "name the real file with --log-file") from None
        raise RestorekeeperError("cannot open log file %s: %s" % (path, exc.strerror or exc),
                                 "create its directory, writable by this user, or name another --log-file") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RestorekeeperError("log file %s is not a regular file" % path, "name a regular file with --log-file")
    return fd


def private_directory() -> str:
    """A directory only this user can use, for its locks: $XDG_RUNTIME_DIR or
    /run/user/<uid> when they pass the checks, else <tmp>/restorekeeper-<uid>,
    created 0700. Checked each time: not a symlink, owned by this user,
    mode 0700, so no other local user can plant or read anything in it."""
    import tempfile

    uid = os.geteuid()
    for candidate in (os.environ.get("XDG_RUNTIME_DIR", ""), "/run/user/%d" % uid):
        if candidate and os.path.isabs(candidate) and _private_directory_problem(candidate, uid) is None:
            return candidate
    fallback = os.path.join(tempfile.gettempdir(), "restorekeeper-%d" % uid)
    with contextlib.suppress(FileExistsError):
        os.mkdir(fallback, 0o700)
    problem = _private_directory_problem(fallback, uid)
    if problem:
        raise RestorekeeperError("%s cannot hold this user's locks: it %s" % (fallback, problem),
                                 "remove it (another user may have planted it), or set XDG_RUNTIME_DIR to a "
                                 "directory of this user with mode 0700")
    return fallback


def _private_directory_problem(path: str, uid: int) -> Optional[str]:
    """None when path is a real directory owned by uid with mode 0700; else what is wrong."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return "cannot be inspected (%s)" % (exc.strerror or exc)
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != uid:
        return "belongs to uid %d" % st.st_uid
    if st.st_mode & 0o7777 != 0o700:
        return "has mode %04o, not 0700" % (st.st_mode & 0o7777)
    return None
