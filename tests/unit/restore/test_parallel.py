"""The writer pool of a parallel extraction (restore/parallel.py): every
file's bytes in order, digests in hand-over order, the first writer failure
stops the pool and reaches the reading thread, the queues stay bounded, and a
process_max above the host's CPUs is refused with both numbers and the fix."""

from __future__ import annotations

import errno
import hashlib
import os
import threading

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestoreFailed
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.manifest import SHA256
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore import parallel
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.parallel import WriterPool, check_workers


def chunks_of(data: bytes, size: int):
    def payload(consume):
        for start in range(0, len(data), size):
            consume(memoryview(data)[start:start + size])
    return payload


def new_file(path) -> int:
    return os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def test_files_are_written_whole_in_order_with_their_digests(tmp_path):
    contents = {"f%02d" % index: os.urandom(1000 + 997 * index) for index in range(30)}
    with WriterPool(3, SHA256) as pool:
        for name, data in contents.items():
            pool.write(name, new_file(tmp_path / name), len(data), chunks_of(data, 333))
        digests = pool.finish()
    assert list(digests) == list(contents)  # the order files were handed over
    for name, data in contents.items():
        assert (tmp_path / name).read_bytes() == data
        assert digests[name].size == len(data)
        assert digests[name].sha256 == hashlib.sha256(data).hexdigest()


def test_an_empty_file_is_written_and_digested(tmp_path):
    with WriterPool(2, SHA256) as pool:
        pool.write("empty", new_file(tmp_path / "empty"), 0, chunks_of(b"", 1))
        digests = pool.finish()
    assert (tmp_path / "empty").read_bytes() == b""
    assert digests["empty"].sha256 == hashlib.sha256(b"").hexdigest()


def test_a_writer_failure_stops_the_pool_and_reaches_the_reader(tmp_path, monkeypatch):
    real_write = os.write
    written = []

    def failing_write(fd, data):
        written.append(len(data))
        if len(written) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(parallel.os, "write", failing_write)
    data = os.urandom(64 * 1024)
    with pytest.raises(OSError) as caught:
        with WriterPool(2, SHA256, depth=2) as pool:
            for index in range(50):
                pool.write("f%d" % index, new_file(tmp_path / ("f%d" % index)), len(data), chunks_of(data, 4096))
            pool.finish()
    assert caught.value.errno == errno.ENOSPC
    assert len(written) < 50 * 16  # the reader stopped handing over instead of finishing the archive
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("restorekeeper-writer")]


def test_a_reader_failure_stops_the_writers_and_closes_what_was_handed_over(tmp_path):
    opened = []

    def broken(consume):
        consume(memoryview(b"partial"))
        raise ValueError("decompression failed")

    with pytest.raises(ValueError):
        with WriterPool(2, SHA256) as pool:
            fd = new_file(tmp_path / "f")
            opened.append(fd)
            pool.write("f", fd, 100, broken)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("restorekeeper-writer")]
    with pytest.raises(OSError):
        os.fstat(opened[0])  # closed by the pool


def test_queues_are_bounded(tmp_path):
    """A writer that cannot write holds back the reader after depth chunks."""
    release = threading.Event()
    real_write = os.write
    handed = []

    def slow_write(fd, data):
        release.wait(10)
        return real_write(fd, data)

    pool = WriterPool(1, SHA256, depth=3)
    original = parallel.os.write
    parallel.os.write = slow_write
    try:
        def payload(consume):
            for _index in range(20):
                consume(memoryview(b"x" * 10))
                handed.append(1)

        reader = threading.Thread(target=pool.write, args=("f", new_file(tmp_path / "f"), 200, payload))
        reader.start()
        reader.join(0.5)
        # One chunk in the writer's hands, depth in the queue (the open took a place and was taken).
        assert reader.is_alive() and len(handed) <= 3 + 1
        release.set()
        reader.join(10)
        digests = pool.finish()
    finally:
        parallel.os.write = original
        pool.__exit__(None, None, None)
    assert len(handed) == 20 and digests["f"].size == 200
    assert (tmp_path / "f").read_bytes() == b"x" * 200


def test_process_max_above_the_cpus_is_refused_with_both_numbers_and_the_fix():
    with pytest.raises(RestoreFailed) as caught:
        check_workers(8, "/etc/restorekeeper/main.conf", cpus=2)
    assert "process_max is 8" in caught.value.message and "2 CPUs" in caught.value.message
    assert "2 or less in /etc/restorekeeper/main.conf" in caught.value.hint


def test_process_max_up_to_the_cpus_is_accepted():
    check_workers(2, cpus=2)
    check_workers(1, cpus=1)
    check_workers(1)
