"""Asynchronous wal-push (markers) and prefetching wal-fetch, on a real posix repository."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends import cli
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import objectformat
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config, render_config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.configfiles import sources_identity
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ArchiveConflict, ConfigError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.fsutil import LockHeld, exclusive_flock
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.pushmarker import quick_push, read_marker
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import ALREADY_ARCHIVED, ARCHIVED, WalArchive
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import WalNotFound
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive import walasync
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walasync import (
    PUSHER_LOCK_FILE,
    fetch_prefetching,
    push_async,
    resident_pusher_alive,
    spool_directory,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walpusher import Pusher

from walfiles import segment_bytes, segment_name, write_segment


def write_config(tmp_path, **archive) -> str:
    text = render_config("main", str(tmp_path / "repo"))
    extra = "".join("%s = %s\n" % (key, value) for key, value in archive.items())
    path = tmp_path / "async.conf"
    path.write_text(text.replace("[archive]\n", "[archive]\n" + extra))
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def async_archive(tmp_path):
    config = Config.load(write_config(tmp_path, **{"async": "true", "spool_path": str(tmp_path / "spool"),
                                                   "process_max": 2, "batch_max": 4}))
    Repository.from_config(config).create()
    return WalArchive(config)


def pg_wal(tmp_path, names, ready=True) -> str:
    """A pg_wal directory holding names, each marked .ready as PostgreSQL does."""
    directory = tmp_path / "pg_wal"
    (directory / "archive_status").mkdir(parents=True, exist_ok=True)
    for name in names:
        write_segment(directory, name)
        if ready:
            (directory / "archive_status" / (name + ".ready")).touch()
    return str(directory)


def stored(archive: WalArchive, name: str) -> str:
    return archive.storage.path_of(archive.key_for(name))


def wait_batch_done(archive: WalArchive) -> None:
    """The background child of a batch holds the spool lock until it exits."""
    lock = os.path.join(spool_directory(archive.config.archive.spool_path, "main", "push"), "push.lock")
    deadline = time.monotonic() + 60
    while True:
        try:
            with exclusive_flock(lock, "test"):
                return
        except LockHeld:
            assert time.monotonic() < deadline, "the batch never ended"
            time.sleep(0.01)


def push(archive: WalArchive, wal_dir: str, name: str):
    outcome = push_async(archive, os.path.join(wal_dir, name), name)
    wait_batch_done(archive)
    return outcome


def marker_path(archive: WalArchive, name: str) -> str:
    return os.path.join(spool_directory(archive.config.archive.spool_path, "main", "push"), name + ".ok")


NAMES = [segment_name(1, n) for n in range(1, 7)]


def test_config_validates_async_keys(tmp_path):
    with pytest.raises(ConfigError, match="needs spool_path"):
        Config.load(write_config(tmp_path, **{"async": "true"}))
    with pytest.raises(ConfigError, match="not an absolute path"):
        Config.load(write_config(tmp_path, spool_path="spool"))
    with pytest.raises(ConfigError, match="process_max must be at least 1"):
        Config.load(write_config(tmp_path, process_max="0"))
    default = Config.load(write_config(tmp_path)).archive
    assert (default.asynchronous, default.prefetch) == (False, 0)


def test_async_push_archives_ready_neighbours_and_marks_them_only_when_durable(tmp_path, async_archive):
    wal_dir = pg_wal(tmp_path, NAMES)
    outcome = push(async_archive, wal_dir, NAMES[0])
    assert outcome.status == ALREADY_ARCHIVED and outcome.stored_size == 0  # pushed by the batch, proven by its marker
    assert os.path.exists(stored(async_archive, NAMES[0]))
    assert not os.path.exists(marker_path(async_archive, NAMES[0]))  # consumed by its own call
    ahead = NAMES[1:4]  # batch_max 4: the first plus three more, oldest first
    for name in ahead:
        marker = read_marker(marker_path(async_archive, name))
        with open(stored(async_archive, name), "rb") as handle:
            header, data = objectformat.decode(handle.read())
        assert data == open(os.path.join(wal_dir, name), "rb").read()
        assert (marker.sha256, marker.size) == (header.sha256, header.size)
    assert not os.path.exists(stored(async_archive, NAMES[4]))

    before = os.stat(stored(async_archive, NAMES[1]))
    outcome = push(async_archive, wal_dir, NAMES[1])
    assert outcome.status == ALREADY_ARCHIVED
    assert not os.path.exists(marker_path(async_archive, NAMES[1]))  # consumed
    assert os.stat(stored(async_archive, NAMES[1])).st_mtime_ns == before.st_mtime_ns


def test_stale_marker_for_other_content_is_not_trusted(tmp_path, async_archive):
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    push(async_archive, wal_dir, NAMES[0])
    assert os.path.exists(marker_path(async_archive, NAMES[1]))
    # The file under that name is now another segment (re-created: new inode and ctime).
    os.unlink(os.path.join(wal_dir, NAMES[1]))
    write_segment(wal_dir, NAMES[1])
    with pytest.raises(ArchiveConflict):
        push(async_archive, wal_dir, NAMES[1])
    assert not os.path.exists(marker_path(async_archive, NAMES[1]))


def test_marker_without_its_object_is_not_trusted(tmp_path, async_archive):
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    push(async_archive, wal_dir, NAMES[0])
    os.unlink(stored(async_archive, NAMES[1]))  # e.g. the repository was replaced
    outcome = push(async_archive, wal_dir, NAMES[1])
    assert outcome.status in (ARCHIVED, ALREADY_ARCHIVED)  # pushed again, by itself or a new batch
    with open(stored(async_archive, NAMES[1]), "rb") as handle:
        assert objectformat.decode(handle.read())[1] == open(os.path.join(wal_dir, NAMES[1]), "rb").read()


def test_marker_with_a_different_digest_is_not_trusted(tmp_path, async_archive):
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    push(async_archive, wal_dir, NAMES[0])
    path = marker_path(async_archive, NAMES[1])
    marker = read_marker(path)
    marker.sha256 = "0" * 64
    with open(path, "wb") as handle:
        handle.write(marker.render())
    outcome = push(async_archive, wal_dir, NAMES[1])
    assert outcome.status == ALREADY_ARCHIVED and outcome.stored_size == 0
    assert outcome.sha256 == objectformat.sha256_hex(open(os.path.join(wal_dir, NAMES[1]), "rb").read())


# ------------------------------------------------------------ the quick path (pushmarker.quick_push)


def config_path(archive: WalArchive) -> str:
    return str(os.path.join(os.path.dirname(archive.config.archive.spool_path), "async.conf"))


def batch_with_markers(tmp_path, archive: WalArchive):
    """A batch as wal-push runs it: the configuration's identity taken before
    it was read, so the markers carry it. Returns pg_wal."""
    wal_dir = pg_wal(tmp_path, NAMES[:3])
    outcome = push_async(archive, os.path.join(wal_dir, NAMES[0]), NAMES[0], sources_identity(config_path(archive)))
    wait_batch_done(archive)
    assert outcome.status == ALREADY_ARCHIVED
    return wal_dir


def quick(archive: WalArchive, wal_dir: str, name: str) -> bool:
    return quick_push(["wal-push", "--config", config_path(archive), os.path.join(wal_dir, name), name])


def test_a_batch_takes_further_rounds_while_more_segments_are_ready(tmp_path, async_archive):
    """batch_max 4: the first round takes four; the child then takes the two
    left in a second round instead of leaving them to start cold."""
    wal_dir = pg_wal(tmp_path, NAMES)
    push_async(async_archive, os.path.join(wal_dir, NAMES[0]), NAMES[0], sources_identity(config_path(async_archive)))
    wait_batch_done(async_archive)
    assert all(os.path.exists(stored(async_archive, name)) for name in NAMES)
    assert all(os.path.exists(marker_path(async_archive, name)) for name in NAMES[1:])


def test_quick_path_trusts_a_marker_of_an_unchanged_segment_config_and_object(tmp_path, async_archive):
    wal_dir = batch_with_markers(tmp_path, async_archive)
    assert quick(async_archive, wal_dir, NAMES[1]) is True
    assert not os.path.exists(marker_path(async_archive, NAMES[1]))  # used once
    assert quick(async_archive, wal_dir, NAMES[1]) is False  # and never again
    path = os.path.join(wal_dir, NAMES[2])
    assert quick_push(["wal-push", "--config=" + config_path(async_archive), path, NAMES[2]]) is True


def _touch_config(archive: WalArchive, wal_dir: str) -> None:
    with open(config_path(archive), "a") as handle:
        handle.write("# edited\n")


def _add_drop_in(archive: WalArchive, wal_dir: str) -> None:
    os.makedirs(config_path(archive) + ".d")
    with open(os.path.join(config_path(archive) + ".d", "copies.conf"), "w") as handle:
        handle.write("[archive]\n")


def _republish_object(archive: WalArchive, wal_dir: str) -> None:
    stored_path = stored(archive, NAMES[1])
    data = open(stored_path, "rb").read()
    os.unlink(stored_path)
    with open(stored_path, "wb") as handle:
        handle.write(data)


def _recreate_segment(archive: WalArchive, wal_dir: str) -> None:
    os.unlink(os.path.join(wal_dir, NAMES[1]))
    write_segment(wal_dir, NAMES[1], seed=b"other")


def _empty_marker(archive: WalArchive, wal_dir: str) -> None:
    open(marker_path(archive, NAMES[1]), "wb").close()


@pytest.mark.parametrize("change", [_touch_config, _add_drop_in, _republish_object, _recreate_segment, _empty_marker],
                         ids=["config-edited", "drop-in-added", "object-replaced", "segment-recreated", "marker-empty"])
def test_quick_path_steps_aside_when_anything_changed(tmp_path, async_archive, change):
    wal_dir = batch_with_markers(tmp_path, async_archive)
    change(async_archive, wal_dir)
    assert quick(async_archive, wal_dir, NAMES[1]) is False
    assert os.path.exists(marker_path(async_archive, NAMES[1]))  # changed nothing: the engine decides
    if change is _recreate_segment:
        return  # the engine refuses other content under an archived name (tested above)
    outcome = push_async(async_archive, os.path.join(wal_dir, NAMES[1]), NAMES[1])
    assert outcome.status == ALREADY_ARCHIVED
    assert not os.path.exists(marker_path(async_archive, NAMES[1]))


@pytest.mark.parametrize("argv", [
    ["wal-push", "--verbose", "--config", "C", "P", "N"],
    ["wal-push", "P", "N"],
    ["wal-fetch", "--config", "C", "N", "P"],
    ["wal-push", "--config", "C", "P"],
])
def test_quick_path_takes_only_the_plain_form(tmp_path, async_archive, argv):
    wal_dir = batch_with_markers(tmp_path, async_archive)
    substitute = {"C": config_path(async_archive), "P": os.path.join(wal_dir, NAMES[1]), "N": NAMES[1]}
    assert quick_push([substitute.get(arg, arg) for arg in argv]) is False
    assert os.path.exists(marker_path(async_archive, NAMES[1]))


def test_quick_path_skips_the_engine_imports(tmp_path, async_archive):
    """What the quick path is for: a proven call imports neither the
    configuration parser nor the archive, nor typing."""
    wal_dir = batch_with_markers(tmp_path, async_archive)
    engine = cli.__name__.rsplit(".", 2)[0]
    probe = (
        "import sys\n"
        "from %s.frontends.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "loaded = sorted(m[len(%r) + 1:] for m in sys.modules if m.startswith(%r + '.'))\n"
        "print(code, 'typing' in sys.modules, ' '.join(loaded))\n" % (engine, engine, engine)
    )
    argv = ["wal-push", "--config", config_path(async_archive), os.path.join(wal_dir, NAMES[1]), NAMES[1]]
    result = subprocess.run([sys.executable, "-S", "-c", probe, *argv], capture_output=True, text=True,
                            env={"PYTHONPATH": os.pathsep.join(sys.path)}, check=True)
    code, typing_loaded, loaded = result.stdout.split(" ", 2)
    assert code == "0" and typing_loaded == "False", result.stdout
    # The four modules, and the (empty) packages holding them.
    assert loaded.split() == ["archive", "archive.pushmarker", "common", "common.errors", "config",
                              "config.configfiles", "frontends", "frontends.cli"], result.stdout
    assert not os.path.exists(marker_path(async_archive, NAMES[1]))


def test_a_call_waits_for_a_running_batch_then_leads_its_own(tmp_path, async_archive):
    import threading

    wal_dir = pg_wal(tmp_path, NAMES[:3])
    spool = spool_directory(async_archive.config.archive.spool_path, "main", "push")
    os.makedirs(spool)
    held, release = threading.Event(), threading.Event()

    def other_batch():
        with exclusive_flock(os.path.join(spool, "push.lock"), "another batch"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_batch)
    thread.start()
    held.wait(10)
    threading.Timer(0.3, release.set).start()
    outcome = push(async_archive, wal_dir, NAMES[0])
    thread.join()
    assert outcome.status == ALREADY_ARCHIVED and os.path.exists(stored(async_archive, NAMES[0]))
    assert os.path.exists(marker_path(async_archive, NAMES[1]))


def test_a_failed_batch_push_reports_the_real_error(tmp_path, async_archive):
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    other = tmp_path / "other"
    other.mkdir()
    async_archive.push(write_segment(other, NAMES[0]), NAMES[0])  # different content under the same name
    with pytest.raises(ArchiveConflict):
        push(async_archive, wal_dir, NAMES[0])
    assert os.path.exists(marker_path(async_archive, NAMES[1]))  # the rest of the batch went on


def test_markers_of_recycled_segments_are_dropped(tmp_path, async_archive):
    wal_dir = pg_wal(tmp_path, NAMES[:3])
    push(async_archive, wal_dir, NAMES[0])
    os.unlink(os.path.join(wal_dir, NAMES[1]))  # recycled before its own call
    os.unlink(os.path.join(wal_dir, "archive_status", NAMES[1] + ".ready"))
    write_segment(wal_dir, NAMES[3])
    push(async_archive, wal_dir, NAMES[3])
    assert not os.path.exists(marker_path(async_archive, NAMES[1]))
    assert os.path.exists(marker_path(async_archive, NAMES[2]))


def test_kill_mid_batch_leaves_only_durable_objects_and_true_markers(tmp_path, async_archive):
    names = [segment_name(1, n) for n in range(1, 41)]
    wal_dir = pg_wal(tmp_path, names)
    config = write_config(tmp_path, **{"async": "true", "spool_path": str(tmp_path / "spool"), "batch_max": 40})
    code = "import sys; from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends import cli; " \
           "sys.exit(cli.main(sys.argv[1:]))"
    process = subprocess.Popen([sys.executable, "-c", code, "wal-push", "--config", config,
                                os.path.join(wal_dir, names[0]), names[0]],
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), start_new_session=True)
    spool = spool_directory(str(tmp_path / "spool"), "main", "push")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.isdir(spool) and any(n.endswith(".ok") for n in os.listdir(spool)):
            break
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the call and its batch child together
    process.wait()
    wait_batch_done(async_archive)
    for name in names:
        path = stored(async_archive, name)
        if os.path.exists(path):
            with open(path, "rb") as handle:
                assert objectformat.decode(handle.read())[1] == open(os.path.join(wal_dir, name), "rb").read()
        if os.path.exists(marker_path(async_archive, name)):
            assert os.path.exists(path), "a marker must never exist without its object"
    # PostgreSQL retries: every call now succeeds, and every segment is archived.
    for name in names:
        assert push(async_archive, wal_dir, name).status in (ARCHIVED, ALREADY_ARCHIVED)
        os.rename(os.path.join(wal_dir, "archive_status", name + ".ready"),
                  os.path.join(wal_dir, "archive_status", name + ".done"))
        assert os.path.exists(stored(async_archive, name))


# ------------------------------------------------------------------ prefetch


@pytest.fixture
def prefetch_archive(tmp_path):
    config = Config.load(write_config(tmp_path, prefetch=3, spool_path=str(tmp_path / "spool")))
    Repository.from_config(config).create()
    archive = WalArchive(config)
    source = tmp_path / "source"
    source.mkdir()
    for name in NAMES[:5]:
        archive.push(write_segment(source, name), name)
    return archive


def fetch_spool(archive: WalArchive) -> str:
    return spool_directory(archive.config.archive.spool_path, "main", "fetch")


def wait_for_spool(archive: WalArchive, names) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        present = os.listdir(fetch_spool(archive)) if os.path.isdir(fetch_spool(archive)) else []
        if all(any(entry.startswith(name + ".") for entry in present) for name in names):
            time.sleep(0.1)  # let the prefetcher exit
            return
        time.sleep(0.02)
    raise AssertionError("prefetch did not fill the spool: %s" % present)


def test_prefetch_serves_verified_files_and_never_a_corrupt_one(tmp_path, prefetch_archive):
    source = tmp_path / "source"
    dest = str(tmp_path / "RECOVERYXLOG")
    fetch_prefetching(prefetch_archive, NAMES[0], dest)
    assert open(dest, "rb").read() == (source / NAMES[0]).read_bytes()
    wait_for_spool(prefetch_archive, NAMES[1:4])

    # A flipped byte in a prefetched file: not served, fetched from the archive instead.
    spooled = [e for e in os.listdir(fetch_spool(prefetch_archive)) if e.startswith(NAMES[1] + ".")][0]
    path = os.path.join(fetch_spool(prefetch_archive), spooled)
    data = bytearray(open(path, "rb").read())
    data[5000] ^= 0xFF
    open(path, "wb").write(bytes(data))
    fetch_prefetching(prefetch_archive, NAMES[1], dest)
    assert open(dest, "rb").read() == (source / NAMES[1]).read_bytes()
    assert not os.path.exists(path)

    # An intact prefetched file is moved into place.
    spooled = [e for e in os.listdir(fetch_spool(prefetch_archive)) if e.startswith(NAMES[2] + ".")][0]
    fetch_prefetching(prefetch_archive, NAMES[2], dest)
    assert open(dest, "rb").read() == (source / NAMES[2]).read_bytes()
    assert not os.path.exists(os.path.join(fetch_spool(prefetch_archive), spooled))


def test_prefetch_never_serves_a_file_of_another_name(tmp_path, prefetch_archive):
    spool = fetch_spool(prefetch_archive)
    os.makedirs(spool)
    # A valid segment file, with a correct digest in its name, but for another position.
    other = segment_bytes(NAMES[4])
    open(os.path.join(spool, "%s.%s" % (NAMES[3], objectformat.sha256_hex(other))), "wb").write(other)
    dest = str(tmp_path / "RECOVERYXLOG")
    fetch_prefetching(prefetch_archive, NAMES[3], dest)
    assert open(dest, "rb").read() == (tmp_path / "source" / NAMES[3]).read_bytes()


def test_prefetch_missing_segment_still_exits_one(tmp_path, capsys, prefetch_archive):
    missing = segment_name(1, 40)
    with pytest.raises(WalNotFound):
        fetch_prefetching(prefetch_archive, missing, str(tmp_path / "RECOVERYXLOG"))
    code = cli.main(["wal-fetch", "--config", prefetch_archive.config.path, missing, str(tmp_path / "RECOVERYXLOG")])
    assert code == 1
    # The last archived segment: served, and nothing beyond the archive is invented.
    assert cli.main(["wal-fetch", "--config", prefetch_archive.config.path, NAMES[4],
                     str(tmp_path / "RECOVERYXLOG")]) == 0
    time.sleep(0.3)
    assert [e for e in os.listdir(fetch_spool(prefetch_archive)) if not e.endswith(".lock")] == []


@pytest.fixture
def resident_pusher(async_archive):
    """A live process whose command line says wal-pusher, named in the pusher's lock file as the pusher does."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "wal-pusher"])
    deadline = time.monotonic() + 10
    while b"wal-pusher" not in Path("/proc/%d/cmdline" % process.pid).read_bytes():  # its exec under way
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cluster_spool = os.path.join(async_archive.config.archive.spool_path, "main")
    os.makedirs(cluster_spool, exist_ok=True)
    Path(cluster_spool, PUSHER_LOCK_FILE).write_text("wal-pusher of main, pid %d\n" % process.pid)
    yield process
    process.kill()
    process.wait()


def test_the_resident_pusher_is_recognised_by_its_lock_and_process(async_archive, resident_pusher):
    cluster_spool = os.path.join(async_archive.config.archive.spool_path, "main")
    assert os.listdir(cluster_spool) == [PUSHER_LOCK_FILE], os.listdir(cluster_spool)
    assert resident_pusher_alive(cluster_spool)
    resident_pusher.kill()
    resident_pusher.wait()
    assert not resident_pusher_alive(cluster_spool)  # a dead holder
    Path(cluster_spool, PUSHER_LOCK_FILE).write_text("wal-pusher of main, pid %d\n" % os.getpid())  # not a pusher
    assert not resident_pusher_alive(cluster_spool)
    Path(cluster_spool, PUSHER_LOCK_FILE).write_text("garbage\n")
    assert not resident_pusher_alive(cluster_spool)
    assert not resident_pusher_alive(os.path.join(cluster_spool, "nowhere"))


def test_with_a_resident_pusher_a_call_forks_no_batch_and_pushes_itself_when_it_waited_enough(
        tmp_path, async_archive, resident_pusher, monkeypatch):
    monkeypatch.setattr(walasync, "PUSHER_WAIT", 0.3)
    wal_dir = pg_wal(tmp_path, NAMES[:3])
    started = time.monotonic()
    outcome = push_async(async_archive, os.path.join(wal_dir, NAMES[0]), NAMES[0])
    assert time.monotonic() - started >= 0.3
    assert outcome.status == ARCHIVED and os.path.exists(stored(async_archive, NAMES[0]))
    assert not os.path.exists(stored(async_archive, NAMES[1]))  # no batch pushed the neighbours
    assert not os.path.exists(marker_path(async_archive, NAMES[1]))


def test_with_a_resident_pusher_a_call_returns_on_the_pushers_marker(tmp_path, async_archive, resident_pusher):
    import threading

    wal_dir = pg_wal(tmp_path, NAMES[:3])
    # The pusher's pass a moment later: it pushes every ready file and leaves their markers.
    pusher = Pusher(async_archive, wal_dir, sources_identity(async_archive.config.path))
    later = threading.Timer(0.2, pusher.pass_once)
    later.start()
    outcome = push_async(async_archive, os.path.join(wal_dir, NAMES[0]), NAMES[0])
    later.join()
    assert outcome.status == ALREADY_ARCHIVED  # proven by the pusher's marker, not pushed here
    assert os.path.exists(stored(async_archive, NAMES[2]))
