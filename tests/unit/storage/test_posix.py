"""The order of durable writes, and what a crash at each step leaves behind.

These tests record the file-system calls the posix backend makes. They do not
fake PostgreSQL; they pin down the contract the archive command relies on:
data fsynced before it gets its final name, directory fsynced after.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import fsutil
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import posix as storage_posix
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ObjectExists, StorageError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage

from walfiles import segment_name, write_segment

NAME = segment_name(1, 9)


@pytest.fixture
def calls(monkeypatch):
    """Record fsync (with what it syncs), link, rename and unlink calls."""
    log = []
    real_fsync, real_link, real_unlink, real_replace = os.fsync, os.link, os.unlink, os.replace

    def fsync(fd):
        target = os.readlink("/proc/self/fd/%d" % fd)
        log.append(("fsync-dir" if os.path.isdir(target) else "fsync-file", os.path.basename(target)))
        return real_fsync(fd)

    def link(src, dst):
        log.append(("link", os.path.basename(dst)))
        return real_link(src, dst)

    def unlink(path):
        log.append(("unlink", os.path.basename(path)))
        return real_unlink(path)

    def replace(src, dst):
        log.append(("replace", os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "replace", replace)
    return log


@pytest.mark.parametrize("compress_threads", [None, 0], ids=["alone", "in-a-batch"])
def test_push_fsyncs_data_before_publishing_and_directory_after(tmp_path, archive, calls, compress_threads):
    archive.push(write_segment(tmp_path, NAME), NAME, compress_threads)
    segment_calls = [call for call in calls if NAME in call[1] or call[0] == "fsync-dir"]
    kinds = [kind for kind, _target in segment_calls]
    first_file_sync = kinds.index("fsync-file")
    publish = kinds.index("link")
    assert first_file_sync < publish, calls
    assert segment_calls[first_file_sync][1].startswith(fsutil.TEMP_PREFIX)
    assert segment_calls[publish][1] == NAME
    assert "fsync-dir" in kinds[publish:], "directory must be fsynced after the new name appears"


def test_crash_before_publish_leaves_no_visible_object(tmp_path, monkeypatch):
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.ensure_root()

    def crash(src, dst):
        raise OSError(5, "simulated I/O error at publish")

    monkeypatch.setattr(os, "link", crash)
    with pytest.raises(StorageError, match="simulated"):
        storage.put_bytes("main/wal/x/" + NAME, b"data")
    assert not storage.exists("main/wal/x/" + NAME)
    assert list(storage.list("main/")) == []
    assert os.listdir(tmp_path / "repo" / "main" / "wal" / "x") == []


def test_writer_abort_leaves_nothing(tmp_path):
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.ensure_root()
    with pytest.raises(RuntimeError):
        with storage.writer("a/b") as writer:
            writer.write(b"half")
            raise RuntimeError("producer died")
    assert os.listdir(tmp_path / "repo" / "a") == []


def test_leftover_temp_file_from_a_killed_writer_is_invisible(tmp_path):
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.ensure_root()
    (tmp_path / "repo" / "a").mkdir()
    (tmp_path / "repo" / "a" / fsutil.temp_name_for("b")).write_bytes(b"partial")
    assert not storage.exists("a/b")
    assert list(storage.list("")) == []


def test_publish_never_replaces_an_existing_object(tmp_path):
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.ensure_root()
    storage.put_bytes("k", b"first")
    with pytest.raises(ObjectExists):
        storage.put_bytes("k", b"second")
    assert storage.get_bytes("k") == b"first"
    assert os.listdir(tmp_path / "repo") == ["k"]


def test_publish_falls_back_to_rename_where_links_are_unsupported(tmp_path, monkeypatch):
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.ensure_root()

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    storage.put_bytes("k", b"first")
    assert storage.get_bytes("k") == b"first"
    with pytest.raises(ObjectExists):
        storage.put_bytes("k", b"second")
    assert storage.get_bytes("k") == b"first"


def test_file_mode_is_not_world_readable(tmp_path):
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.ensure_root()
    storage.put_bytes("a/k", b"x")
    assert os.stat(storage.path_of("a/k")).st_mode & 0o777 == storage_posix.FILE_MODE


def test_atomic_replace_shows_old_or_new_content_and_leaves_no_temp(tmp_path, calls):
    """The shortcut files (async push markers, prefetched WAL) are renamed into
    place complete, without fsync: readers never see half a file."""
    path = tmp_path / "000000010000000000000009.ok"
    fsutil.replace_file_atomically(str(path), b"old")
    fsutil.replace_file_atomically(str(path), b"new content", mode=0o600)
    assert path.read_bytes() == b"new content"
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == [path.name]
    assert [kind for kind, _target in calls] == ["replace", "replace"]
