"""The base backup stream's messages, the bounded pipe and the per-archive consumers, without a server.

The messages are built as PostgreSQL 15+ sends them (n, d, p, m); a server is
exercised in tests/integration/test_backup_tablespace_stream.py.
"""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import StorageError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg import basebackupstream as bbs


def archive(name: str, path: str = "") -> bytes:
    return b"n" + name.encode() + b"\0" + path.encode() + b"\0"


def data(payload: bytes) -> bytes:
    return b"d" + payload


def progress(sent: int) -> bytes:
    return b"p" + struct.pack("!q", sent)


class Recorder(bbs.StreamHandler):
    def __init__(self) -> None:
        self.events = []

    def archive_start(self, start):
        self.events.append(("archive", start.name, start.tablespace_path))

    def archive_data(self, data):
        self.events.append(("data", data))

    def manifest_start(self):
        self.events.append(("manifest",))

    def manifest_data(self, data):
        self.events.append(("manifest data", data))

    def progress(self, sent):
        self.events.append(("progress", sent))


def test_messages_are_split_into_archives_progress_and_the_manifest():
    recorder = Recorder()
    splitter = bbs.MessageSplitter(recorder)
    messages = [archive("16384.tar", "/srv/ts1"), data(b"abc"), progress(3), archive("base.tar"),
                data(b"de"), data(b"f"), progress(6), b"m", data(b'{"x":'), data(b"1}")]
    assert [splitter.write(memoryview(message)) for message in messages] == [len(m) for m in messages]
    assert recorder.events == [
        ("archive", "16384.tar", "/srv/ts1"), ("data", b"abc"), ("progress", 3), ("archive", "base.tar", ""),
        ("data", b"de"), ("data", b"f"), ("progress", 6), ("manifest",), ("manifest data", b'{"x":'),
        ("manifest data", b"1}"),
    ]


@pytest.mark.parametrize("messages, says", [
    ([data(b"x")], "archive data before naming an archive"),
    ([archive("base.tar"), b"m", archive("16384.tar")], "began an archive after the manifest"),
    ([b"z123"], "unknown base backup message"),
    ([b"p\0\0"], "progress message of 3 bytes"),
    ([b"nbase.tar\0"], "malformed archive start"),
    ([b"n\0\0"], "malformed archive start"),
])
def test_a_message_out_of_place_is_a_clear_error(messages, says):
    splitter = bbs.MessageSplitter(Recorder())
    with pytest.raises(bbs.BaseBackupStreamError, match=says):
        for message in messages:
            splitter.write(message)


def test_the_command_is_what_pg_basebackup_sends():
    assert bbs.base_backup_command("restorekeeper 20250101-000000F", "fast", "crc32c") == (
        "BASE_BACKUP (LABEL 'restorekeeper 20250101-000000F', CHECKPOINT 'fast', MANIFEST 'yes', "
        "MANIFEST_CHECKSUMS 'CRC32C', TABLESPACE_MAP, PROGRESS)")
    command = bbs.base_backup_command("it's", "spread", "sha256", max_rate="1M", incremental=True)
    assert command == ("BASE_BACKUP (LABEL 'it''s', CHECKPOINT 'spread', MANIFEST 'yes', MANIFEST_CHECKSUMS "
                       "'SHA256', TABLESPACE_MAP, PROGRESS, MAX_RATE 1024, INCREMENTAL)")
    with pytest.raises(ValueError):
        bbs.base_backup_command("x", "now", "sha256")
    with pytest.raises(ValueError):
        bbs.base_backup_command("a\0b", "fast", "sha256")


@pytest.mark.parametrize("text, kilobytes", [
    ("32", 32), ("512k", 512), ("100M", 102400), (" 1.5M ", 1536), ("1024M", 1048576), ("40.9", 40),
])
def test_max_rate_is_read_as_pg_basebackup_reads_it(text, kilobytes):
    assert bbs.max_rate_kilobytes(text) == kilobytes


@pytest.mark.parametrize("text, says", [
    ("fast", "not a transfer rate"), ("10G", "not a transfer rate"), ("10 kB", "not a transfer rate"),
    ("0", "greater than zero"), ("31", "out of range"), ("1025M", "out of range"), ("", "not a transfer rate"),
])
def test_a_bad_max_rate_names_the_fix(text, says):
    with pytest.raises(bbs.BaseBackupStreamError, match=says) as caught:
        bbs.max_rate_kilobytes(text)
    assert caught.value.hint


def test_the_pipe_holds_at_most_its_limit_and_delivers_every_byte_in_order():
    pipe = bbs.ArchivePipe(limit=64 * 1024)
    payload = os.urandom(3 << 20)
    pieces = [payload[i:i + 32769] for i in range(0, len(payload), 32769)]
    received = bytearray()

    def slow_reader():
        while True:
            chunk = pipe.read(10000)
            if not chunk:
                return
            received.extend(chunk)
            time.sleep(0.0005)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    for piece in pieces:
        pipe.put(piece)
    pipe.end()
    reader.join(10)
    assert bytes(received) == payload
    assert 32769 <= pipe.peak <= 64 * 1024


def test_a_message_larger_than_the_limit_still_passes_an_empty_pipe():
    pipe = bbs.ArchivePipe(limit=10)
    pipe.put(b"x" * 100)
    pipe.end()
    assert pipe.read() == b"x" * 100 and pipe.read() == b""


def test_a_failed_writer_makes_the_reader_raise_and_a_failed_reader_the_writer():
    pipe = bbs.ArchivePipe(limit=10)
    pipe.put(b"0123456789")
    pipe.fail(RuntimeError("connection lost"))
    with pytest.raises(bbs.PipeFailed) as caught:
        pipe.read(5)
    assert str(caught.value.__cause__) == "connection lost"

    pipe = bbs.ArchivePipe(limit=10)
    pipe.put(b"0123456789")
    waiting = threading.Thread(target=lambda: pytest.raises(bbs.PipeFailed, pipe.put, b"more"))
    waiting.start()  # blocked: the pipe is full
    time.sleep(0.05)
    assert waiting.is_alive()
    pipe.reader_failed(StorageError("disk full"))
    waiting.join(5)
    assert not waiting.is_alive()


def stored_by_name(start, source):
    """A consumer as the backup's: reads the archive to its end, returns what it read."""
    return start.name, source.read()


def run(receiver, messages):
    splitter = bbs.MessageSplitter(receiver)
    for message in messages:
        splitter.write(message)
    return receiver.complete()


def test_each_archive_goes_to_its_own_consumer_and_the_manifest_is_kept():
    names_before = {thread.name for thread in threading.enumerate()}
    payload = os.urandom(200000)
    messages = [archive("16385.tar", "/ts"), data(payload[:100000]), data(payload[100000:]), progress(200000),
                archive("base.tar"), data(b"base"), b"m", data(b"{}")]
    seen = []
    received = run(bbs.Receiver(stored_by_name, limit=65536, on_progress=seen.append), messages)
    assert [(a.start, a.result) for a in received.archives] == [
        (bbs.ArchiveStart("16385.tar", "/ts"), ("16385.tar", payload)),
        (bbs.ArchiveStart("base.tar", ""), ("base.tar", b"base")),
    ]
    assert received.manifest == b"{}" and seen == [200000]
    assert {thread.name for thread in threading.enumerate()} == names_before


def test_a_consumer_error_stops_the_stream_with_that_error():
    def failing(start, source):
        source.read(10)
        raise StorageError("the bucket refused the part")

    receiver = bbs.Receiver(failing, limit=100)
    splitter = bbs.MessageSplitter(receiver)
    splitter.write(archive("base.tar"))
    with pytest.raises(StorageError, match="refused the part"):
        for _attempt in range(1000):  # the pipe fills up once the consumer stops reading
            splitter.write(data(b"x" * 50))
    assert not [t for t in threading.enumerate() if t.name.startswith("restorekeeper-archive-")]


def test_a_consumer_error_surfaces_when_its_archive_ends():
    def failing_at_end(start, source):
        source.read()
        raise StorageError("commit failed")

    with pytest.raises(StorageError, match="commit failed"):
        run(bbs.Receiver(failing_at_end), [archive("16384.tar", "/ts"), data(b"x"), archive("base.tar")])


def test_a_consumer_that_stops_reading_early_cannot_hang_the_stream():
    receiver = bbs.Receiver(lambda start, source: source.read(1), limit=10)
    splitter = bbs.MessageSplitter(receiver)
    splitter.write(archive("base.tar"))
    with pytest.raises(bbs.BaseBackupStreamError, match="stopped reading before the archive ended"):
        for _attempt in range(100):
            splitter.write(data(b"y" * 8))


def test_a_stream_failure_aborts_the_current_consumer_and_waits_for_it():
    cleaned = []

    def consumer(start, source):
        try:
            while source.read(4):
                pass
        except bbs.PipeFailed as exc:
            cleaned.append(str(exc.__cause__))
            raise
        return "complete"

    receiver = bbs.Receiver(consumer)
    splitter = bbs.MessageSplitter(receiver)
    splitter.write(archive("16384.tar", "/ts"))
    splitter.write(data(b"all of it"))
    splitter.write(archive("base.tar"))
    splitter.write(data(b"half"))
    receiver.abort(bbs.server_failure("FATAL: terminating connection due to administrator command"))
    assert [a.result for a in receiver.archives] == ["complete"]
    assert cleaned == ["the base backup stream from the server failed: FATAL: terminating connection due to "
                       "administrator command. HINT: the server ended the connection (an administrator or a "
                       "shutdown); run the backup again"]
    assert not [t for t in threading.enumerate() if t.name.startswith("restorekeeper-archive-")]


def test_a_stream_without_archives_is_an_error():
    with pytest.raises(bbs.BaseBackupStreamError, match="without sending an archive"):
        run(bbs.Receiver(stored_by_name), [b"m", data(b"{}")])


@pytest.mark.parametrize("text, hint", [
    ("FATAL:  number of requested standby connections exceeds max_wal_senders (currently 0)", "max_wal_senders"),
    ('FATAL:  no pg_hba.conf entry for replication connection from host "[local]"', "pg_hba.conf"),
    ("FATAL:  permission denied to start WAL sender", "REPLICATION attribute"),
    ("server closed the connection unexpectedly", "run the backup again"),
    ("ERROR:  something new", "server's log"),
])
def test_server_failures_name_the_fix(text, hint):
    failure = bbs.connection_failure(text)
    assert " ".join(text.split()) in failure.message and hint in failure.hint


def test_psycopg2_is_neither_needed_nor_imported_to_use_this_module():
    assert bbs.available() is False  # the unit suite blocks psycopg2 (tools/without_psycopg2)
    with pytest.raises(bbs.BaseBackupStreamError, match="psycopg2"):
        bbs.connect_replication({"PGHOST": "/nowhere"})
