"""Extracting a stored backup tar (restore.extract_archive): a damaged object
fails with an error that names it and the fix, wherever the damage lands, on one
thread or several; how an incremental chain is combined (pg_combinebackup --link)."""

from __future__ import annotations

import errno
import io
import os
import random
import subprocess
import tarfile
import time

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.compression import StreamCompressor
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import CorruptObject
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.progress import Meter
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore import restore as restore_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.restore import Timer, extract_archive
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage

KEY = "main/backups/20261122T000000F/base.tar.zst"


def stored_tar() -> bytes:
    """A compressed tar like a base backup's: several files with varied content."""
    generator = random.Random(7)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for index in range(40):
            # Half compressible, half not, so damage can land in either kind of zstd block.
            payload = (b"relation page %d " % index) * 400 + generator.randbytes(8192)
            member = tarfile.TarInfo("base/1/%d" % (16384 + index))
            member.size = len(payload)
            archive.addfile(member, io.BytesIO(payload))
    chunks = []
    compressor = StreamCompressor(chunks.append, "zstd", 3)
    compressor.write(buffer.getvalue())
    compressor.finish()
    return b"".join(chunks)


@pytest.fixture(scope="module")
def blob() -> bytes:
    return stored_tar()


@pytest.mark.parametrize("workers", [1, 2])
def test_intact_archive_extracts_every_file(tmp_path, blob, workers):
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.put_bytes(KEY, blob)
    digests = extract_archive(storage, KEY, "zstd", str(tmp_path / "data"), Timer(), workers=workers)
    assert len(digests) == 40
    assert os.path.getsize(tmp_path / "data" / "base" / "1" / "16384") == digests["base/1/16384"].size


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.99])
def test_damage_anywhere_is_reported_with_the_object_and_the_fix(tmp_path, blob, fraction, workers):
    storage = PosixStorage(str(tmp_path / "repo"))
    damaged = bytearray(blob)
    damaged[int(len(damaged) * fraction)] ^= 0x04
    storage.put_bytes(KEY, bytes(damaged))
    with pytest.raises(CorruptObject) as caught:
        extract_archive(storage, KEY, "zstd", str(tmp_path / "data"), Timer(), workers=workers)
    assert caught.value.message.startswith("stored backup %s cannot be read: " % KEY)
    assert "another copy" in caught.value.hint


def test_a_full_disk_under_parallel_writers_is_a_clear_restore_failure(tmp_path, blob, monkeypatch):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestoreFailed
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore import parallel

    def full(_fd, _data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(parallel.os, "write", full)
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.put_bytes(KEY, blob)
    with pytest.raises(RestoreFailed) as caught:
        extract_archive(storage, KEY, "zstd", str(tmp_path / "data"), Timer(), workers=2)
    assert caught.value.message.startswith("cannot write the restored files to %s" % (tmp_path / "data"))


class FakeCombine:
    """pg_combinebackup --help of a given version (the only call _combine_mode makes)."""

    def __init__(self, help_text: str) -> None:
        self.help_text = help_text

    def run(self, name, args, **_kwargs):
        assert (name, args) == ("pg_combinebackup", ["--help"])
        return subprocess.CompletedProcess([name] + args, 0, self.help_text, "")


def test_combine_links_when_pg_combinebackup_can_and_everything_is_on_one_filesystem(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    mode, _why = restore_module._combine_mode(FakeCombine("  -k, --link  link files instead of copying\n"),
                                              str(scratch), [str(tmp_path / "pgdata"), str(tmp_path / "t" / "ts")])
    assert mode == "link"


def test_combine_copies_with_a_pg_combinebackup_without_link(tmp_path):
    mode, why = restore_module._combine_mode(FakeCombine("  --clone  clone (reflink) files instead of copying\n"),
                                             str(tmp_path), [str(tmp_path / "pgdata")])
    assert mode == "copy" and "PostgreSQL 18" in why


def test_combine_copies_when_an_output_is_on_another_filesystem(tmp_path):
    if os.stat("/proc").st_dev == os.stat(str(tmp_path)).st_dev:
        pytest.skip("no second filesystem")
    mode, why = restore_module._combine_mode(FakeCombine("--link"), str(tmp_path), [str(tmp_path / "pgdata"), "/proc/x"])
    assert mode == "copy" and "/proc/x is not on the filesystem" in why


def test_the_combine_reports_the_bytes_in_its_outputs_while_it_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(restore_module, "COMBINE_SAMPLE", 0.05)
    heard = []
    output = tmp_path / "out"

    def combine():
        output.mkdir()
        for index in range(4):
            (output / str(index)).write_bytes(b"x" * 1000)
            time.sleep(0.1)
        return "done"

    meter = Meter(lambda phase, done, total: heard.append((phase, done, total)), "combine", 4000)
    assert restore_module._run_sampling(combine, [str(output)], meter) == "done"
    assert heard[0] == ("combine", 0, 4000) and heard[-1] == ("combine", 4000, 4000)
    assert any(0 < done < 4000 for _phase, done, _total in heard)


def test_a_failing_combine_raises_its_error(tmp_path):
    def combine():
        raise OSError(errno.EIO, "gone")

    with pytest.raises(OSError):
        restore_module._run_sampling(combine, [str(tmp_path)], Meter(None, "combine"))
