"""Lock files cannot be planted (issue 14, finding 4): the S3 backend's lock
lives in this user's private directory (0700, owned by it, not a symlink),
is opened without following a symlink, must be a regular file owned by this
user (or root, or the directory's owner), and is never truncated."""

from __future__ import annotations

import hashlib
import os
import tempfile

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import fsutil
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.fsutil import LockHeld, exclusive_flock

NOBODY = 65534


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A fresh temp dir and no usable runtime dir, so the fallback is used."""
    temp = tmp_path / "tmp"
    temp.mkdir(mode=0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "absent"))
    monkeypatch.setattr(fsutil, "_private_directory_problem",
                        _not_run_user(fsutil._private_directory_problem))
    return temp


def _not_run_user(check):
    def problem(path, uid):
        return "skipped by the test" if path.startswith("/run/user/") else check(path, uid)
    return problem


def test_fallback_private_directory_is_created_0700(private_tmp):
    path = fsutil.private_directory()
    assert path == str(private_tmp / ("restorekeeper-%d" % os.geteuid()))
    st = os.lstat(path)
    assert st.st_mode & 0o7777 == 0o700 and st.st_uid == os.geteuid()


def test_runtime_dir_is_used_only_when_private(tmp_path, private_tmp, monkeypatch):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o755)
    os.chmod(runtime, 0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert fsutil.private_directory() != str(runtime)  # readable by others: not private
    os.chmod(runtime, 0o700)
    assert fsutil.private_directory() == str(runtime)


def test_planted_fallback_directory_is_refused(tmp_path, private_tmp):
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir(mode=0o700)
    (private_tmp / ("restorekeeper-%d" % os.geteuid())).symlink_to(elsewhere)
    with pytest.raises(RestorekeeperError, match="is a symbolic link"):
        fsutil.private_directory()
    os.unlink(private_tmp / ("restorekeeper-%d" % os.geteuid()))
    planted = private_tmp / ("restorekeeper-%d" % os.geteuid())
    planted.mkdir(mode=0o777)
    os.chmod(planted, 0o777)
    with pytest.raises(RestorekeeperError, match="mode 0777"):
        fsutil.private_directory()
    if os.geteuid() == 0:
        os.chmod(planted, 0o700)
        os.chown(planted, NOBODY, NOBODY)
        with pytest.raises(RestorekeeperError, match="belongs to uid %d" % NOBODY):
            fsutil.private_directory()


def test_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    lock = tmp_path / "x.lock"
    lock.symlink_to(target)
    with pytest.raises(RestorekeeperError, match="symbolic link"):
        with exclusive_flock(str(lock), "me"):
            pass
    assert target.read_text() == "keep me\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a file owned by another user")
def test_lock_file_owned_by_another_user_is_refused(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text("")
    os.chown(lock, NOBODY, NOBODY)
    with pytest.raises(RestorekeeperError, match="belongs to uid %d" % NOBODY):
        with exclusive_flock(str(lock), "me"):
            pass


def test_lock_file_is_never_truncated_and_names_its_holder(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text("an older, much longer holder line\nand more\n")
    with exclusive_flock(str(lock), "short"):
        with pytest.raises(LockHeld, match="^short$"):
            with exclusive_flock(str(lock), "second"):
                pass
    assert lock.read_text().startswith("short\n")
    assert len(lock.read_text()) == len("an older, much longer holder line\nand more\n")


def _s3_storage():
    pytest.importorskip("boto3")
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.s3 import S3Settings, S3Storage

    return S3Storage(S3Settings(bucket="b", endpoint_url="http://127.0.0.1:9", region="us-east-1",
                                access_key_id="k", secret_access_key="s"))


def test_s3_lock_ignores_the_old_shared_name_and_refuses_a_planted_one(tmp_path, private_tmp):
    storage = _s3_storage()
    digest = hashlib.sha256((storage.location + "locks/x").encode()).hexdigest()[:16]
    target = tmp_path / "victim"
    target.write_text("server's file\n")
    # Where the lock lived before: a symlink there is not even looked at now.
    (private_tmp / ("restorekeeper-%s.lock" % digest)).symlink_to(target)
    with storage.lock("locks/x", "backup"):
        pass
    assert target.read_text() == "server's file\n"
    # And one planted in the private directory itself is refused.
    path = os.path.join(fsutil.private_directory(), "restorekeeper-s3-%s.lock" % digest)
    os.unlink(path)
    os.symlink(target, path)
    with pytest.raises(RestorekeeperError, match="symbolic link"):
        with storage.lock("locks/x", "backup"):
            pass
    assert target.read_text() == "server's file\n"


# ------------------------------------------------------------ flock_waiting
@pytest.fixture
def two_descriptions(tmp_path):
    """Two open file descriptions of one lock file: flock(2) makes them exclude
    each other even within one process, as two processes would."""
    path = str(tmp_path / "wait.lock")
    holder = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    waiter = os.open(path, os.O_RDWR)
    yield holder, waiter
    for fd in (holder, waiter):
        try:
            os.close(fd)
        except OSError:
            pass  # the test closed it already


def test_flock_waiting_gives_up_after_the_timeout_while_another_holds_it(two_descriptions):
    import fcntl
    import time

    holder, waiter = two_descriptions
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    told = []
    started = time.monotonic()
    assert fsutil.flock_waiting(waiter, 0.3, 0.05, lambda: told.append("waiting")) is False
    assert 0.3 <= time.monotonic() - started < 3
    assert told == ["waiting"]
    with pytest.raises(BlockingIOError):  # the holder still has it: nothing was taken from it
        fcntl.flock(waiter, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_flock_waiting_takes_the_lock_once_its_holder_lets_go(two_descriptions):
    import fcntl
    import threading
    import time

    holder, waiter = two_descriptions
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    release = threading.Timer(0.2, os.close, (holder,))
    release.start()
    started = time.monotonic()
    try:
        assert fsutil.flock_waiting(waiter, 10, 0.05) is True
    finally:
        release.join()
    assert time.monotonic() - started < 5
    # The waiter holds it now: a third description cannot take it.
    third = os.open("/proc/self/fd/%d" % waiter, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(third)


def test_flock_waiting_raises_at_once_for_any_other_failure(tmp_path):
    import errno
    import time

    fd = os.open(str(tmp_path / "closed.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)  # flock on a closed descriptor fails with EBADF, not "held"
    started = time.monotonic()
    with pytest.raises(OSError) as caught:
        fsutil.flock_waiting(fd, 10, 0.05)
    assert caught.value.errno == errno.EBADF
    assert time.monotonic() - started < 1
