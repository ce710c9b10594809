"""The resident WAL pusher, its markers' trust rules and the queue limit, on a real posix repository."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive import walpusher
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.pushmarker import (
    CLAIM_SUFFIX,
    Marker,
    parse_marker,
    quick_push,
    read_marker,
    spool_directory,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import WalArchive
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError, RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config, render_config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.configfiles import sources_identity
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.monitoring import monitoring
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository

from walfiles import segment_name, write_segment

NAMES = [segment_name(1, n) for n in range(1, 6)]
SEGMENT = 1 << 20  # walfiles' segments


def write_config(tmp_path, **archive) -> str:
    text = render_config("main", str(tmp_path / "repo"))
    extra = "".join("%s = %s\n" % (key, value) for key, value in archive.items())
    path = tmp_path / "pusher.conf"
    path.write_text(text.replace("[archive]\n", "[archive]\n" + extra))
    path.chmod(0o600)
    return str(path)


def make_archive(tmp_path, **archive) -> WalArchive:
    settings = {"async": "true", "spool_path": str(tmp_path / "spool"), "process_max": 2, "batch_max": 16}
    settings.update(archive)
    config = Config.load(write_config(tmp_path, **settings))
    Repository.from_config(config).create()
    return WalArchive(config)


def pg_wal(tmp_path, names) -> str:
    directory = tmp_path / "pg_wal"
    (directory / "archive_status").mkdir(parents=True, exist_ok=True)
    for name in names:
        write_segment(directory, name)
        (directory / "archive_status" / (name + ".ready")).touch()
    return str(directory)


def pusher(archive: WalArchive, wal_dir: str) -> walpusher.Pusher:
    return walpusher.Pusher(archive, wal_dir, sources_identity(archive.config.path))


def marker_file(archive: WalArchive, name: str) -> str:
    return os.path.join(spool_directory(archive.config.archive.spool_path, "main", "push"), name + ".ok")


def quick(archive: WalArchive, wal_dir: str, name: str) -> bool:
    return quick_push(["wal-push", "--config", archive.config.path, os.path.join(wal_dir, name), name])


def as_remote(archive: WalArchive) -> WalArchive:
    """The same repository seen as a remote one (S3, ssh): no local path of an object."""
    archive.storage.local_path = lambda key: ""
    return archive


# ------------------------------------------------------------------- the pusher


def test_one_pass_pushes_every_ready_segment_oldest_first_and_leaves_markers(tmp_path):
    archive = make_archive(tmp_path)
    wal_dir = pg_wal(tmp_path, NAMES)
    result = pusher(archive, wal_dir).run(once=True)
    assert result == {"pushed": len(NAMES), "stopped": "one pass"}
    assert archive.names() == NAMES
    for name in NAMES:
        marker = read_marker(marker_file(archive, name))
        assert marker.object_path and not marker.confirmed  # posix: the object's identity is the proof
        assert quick(archive, wal_dir, name) is True


def test_a_pass_skips_segments_that_already_have_a_marker(tmp_path):
    archive = make_archive(tmp_path)
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    pusher(archive, wal_dir).run(once=True)
    again = pusher(archive, wal_dir)
    assert again.pass_once() == (0, 0)


def test_remote_repository_markers_are_confirmed_and_trusted_by_the_quick_path(tmp_path):
    archive = as_remote(make_archive(tmp_path))
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    pusher(archive, wal_dir).run(once=True)
    marker = read_marker(marker_file(archive, NAMES[0]))
    assert marker.confirmed and not marker.object_path
    assert quick(archive, wal_dir, NAMES[0]) is True
    assert not os.path.exists(marker_file(archive, NAMES[0]))  # used once


def test_remote_marker_without_confirmation_is_not_trusted(tmp_path):
    """The asynchronous batch's markers for a remote repository say nothing
    about the object: the quick path steps aside, as before."""
    archive = as_remote(make_archive(tmp_path))
    wal_dir = pg_wal(tmp_path, NAMES[:1])
    pusher(archive, wal_dir).run(once=True)
    path = marker_file(archive, NAMES[0])
    marker = read_marker(path)
    marker.confirmed = False
    with open(path, "wb") as handle:
        handle.write(marker.render())
    assert quick(archive, wal_dir, NAMES[0]) is False
    assert os.path.exists(path)


def test_remote_marker_is_not_confirmed_when_the_object_does_not_read_back(tmp_path, monkeypatch):
    archive = as_remote(make_archive(tmp_path))
    wal_dir = pg_wal(tmp_path, NAMES[:1])
    monkeypatch.setattr("ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walasync._archived_as",
                        lambda *args: False)
    pusher(archive, wal_dir).run(once=True)
    assert read_marker(marker_file(archive, NAMES[0])).confirmed is False
    assert quick(archive, wal_dir, NAMES[0]) is False


def test_confirmed_marker_is_not_trusted_after_a_configuration_change(tmp_path):
    archive = as_remote(make_archive(tmp_path))
    wal_dir = pg_wal(tmp_path, NAMES[:1])
    pusher(archive, wal_dir).run(once=True)
    with open(archive.config.path, "a") as handle:
        handle.write("# another repository, perhaps\n")
    assert quick(archive, wal_dir, NAMES[0]) is False


def test_confirmed_marker_is_not_trusted_for_a_recreated_segment(tmp_path):
    archive = as_remote(make_archive(tmp_path))
    wal_dir = pg_wal(tmp_path, NAMES[:1])
    pusher(archive, wal_dir).run(once=True)
    os.unlink(os.path.join(wal_dir, NAMES[0]))
    write_segment(wal_dir, NAMES[0], seed=b"other")
    assert quick(archive, wal_dir, NAMES[0]) is False


def test_marker_confirmation_round_trips_and_unknown_words_do_not_confirm():
    marker = Marker(NAMES[0], 1, "a" * 64, "k", [1, 2, 3, 4, 5], [[1, 2, 3, 4, 5]], confirmed=True)
    assert parse_marker(marker.render()).confirmed is True
    tampered = marker.render().replace(b"confirmed stored", b"confirmed maybe")
    assert parse_marker(tampered).confirmed is False


def test_a_second_pusher_is_refused_by_the_lock(tmp_path):
    archive = make_archive(tmp_path)
    wal_dir = pg_wal(tmp_path, NAMES[:1])
    stop = threading.Event()
    first = threading.Thread(target=pusher(archive, wal_dir).run, kwargs={"stop": stop})
    first.start()
    try:
        lock = os.path.join(walpusher.cluster_spool(archive.config), walpusher.LOCK_FILE)
        for _attempt in range(200):
            if os.path.exists(lock) and archive.names():
                break
            stop.wait(0.02)
        with pytest.raises(RestorekeeperError, match="another wal-pusher runs for cluster main"):
            pusher(archive, wal_dir).run(once=True)
    finally:
        stop.set()
        first.join(10)
    assert not first.is_alive()  # stop (SIGTERM in the CLI) ends it
    assert pusher(archive, wal_dir).run(once=True)["stopped"] == "one pass"  # the lock went with it


def test_the_pusher_stops_when_the_configuration_changes(tmp_path):
    archive = make_archive(tmp_path)
    wal_dir = pg_wal(tmp_path, NAMES[:1])
    running = pusher(archive, wal_dir)
    with open(archive.config.path, "a") as handle:
        handle.write("# edited\n")
    assert running.run()["stopped"] == "configuration changed"


def test_the_pusher_refuses_a_directory_that_is_not_pg_wal(tmp_path):
    archive = make_archive(tmp_path)
    with pytest.raises(RestorekeeperError, match="not a pg_wal directory"):
        pusher(archive, str(tmp_path)).run(once=True)


# ------------------------------------------------- workers, pipeline and claims


def test_upload_max_is_validated_with_a_clear_message(tmp_path):
    assert Config.load(write_config(tmp_path)).archive.upload_max == 8
    assert Config.load(write_config(tmp_path, upload_max=16)).archive.upload_max == 16
    with pytest.raises(ConfigError, match=r"upload_max must be at least 1"):
        Config.load(write_config(tmp_path, upload_max=0))
    with pytest.raises(ConfigError, match=r"upload_max 65 is too large") as refused:
        Config.load(write_config(tmp_path, upload_max=65))
    assert "1 to 64" in str(refused.value.hint)
    with pytest.raises(ConfigError, match="upload_max 'many' is not an integer"):
        Config.load(write_config(tmp_path, upload_max="many"))


def test_uploads_to_a_remote_repository_are_not_bounded_by_process_max(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    local = make_archive(tmp_path / "a", process_max=2, upload_max=6)
    assert pusher(local, pg_wal(tmp_path / "a", NAMES[:1])).workers == 2  # posix: CPU-bound, process_max
    remote = as_remote(make_archive(tmp_path / "b", process_max=2, upload_max=6))
    assert pusher(remote, pg_wal(tmp_path / "b", NAMES[:1])).workers == 6


class SlowPushes:
    """Wraps WalArchive.push: each push of a name in `slow` takes `slow_seconds`, every other one
    `seconds`; records how many run at once and when each ended."""

    def __init__(self, archive, seconds: float, slow=(), slow_seconds: float = 0.0) -> None:
        self.push, self.seconds, self.slow, self.slow_seconds = archive.push, seconds, set(slow), slow_seconds
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.ended = {}
        archive.push = self

    def __call__(self, path, name, compress_threads=None):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            threading.Event().wait(self.slow_seconds if name in self.slow else self.seconds)
            return self.push(path, name, compress_threads)
        finally:
            with self.lock:
                self.running -= 1
                self.ended[name] = time.monotonic()


def test_the_pool_keeps_upload_max_pushes_in_flight(tmp_path):
    names = [segment_name(1, n) for n in range(1, 13)]
    archive = as_remote(make_archive(tmp_path, upload_max=4, batch_max=2))
    slow = SlowPushes(archive, 0.15)
    assert pusher(archive, pg_wal(tmp_path, names)).run(once=True) == {"pushed": 12, "stopped": "one pass"}
    assert slow.most == 4  # neither process_max (2) nor batch_max (2) bounds the uploads
    assert archive.names() == names
    assert all(read_marker(marker_file(archive, name)).confirmed for name in names)


def test_the_pool_is_fed_continuously_not_batch_then_wait(tmp_path):
    """One slow upload does not hold up the others: the free worker goes on
    with the next ready files (each marked as soon as it is durable) while it
    is under way."""
    names = [segment_name(1, n) for n in range(1, 9)]
    archive = as_remote(make_archive(tmp_path, upload_max=2))
    slow = SlowPushes(archive, 0.02, slow=[names[0]], slow_seconds=1.5)
    pusher(archive, pg_wal(tmp_path, names)).run(once=True)
    assert slow.most == 2
    assert all(slow.ended[name] < slow.ended[names[0]] for name in names[1:])
    assert archive.names() == names


def test_a_push_under_way_holds_a_claim_that_goes_with_its_push(tmp_path):
    archive = as_remote(make_archive(tmp_path, upload_max=1))
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    claim = marker_file(archive, NAMES[0])[:-len(".ok")] + CLAIM_SUFFIX
    seen = {}

    def push(path, name, compress_threads=None, original=archive.push):
        seen[name] = (os.path.exists(claim), os.path.exists(marker_file(archive, NAMES[0])))
        return original(path, name, compress_threads)
    archive.push = push
    os.makedirs(os.path.dirname(claim), exist_ok=True)
    stale = claim.replace(NAMES[0], NAMES[4])
    open(stale, "w").close()  # a killed pusher's claim
    pusher(archive, wal_dir).run(once=True)
    assert seen[NAMES[0]] == (True, False)  # claimed while pushed, before the marker
    assert seen[NAMES[1]] == (False, True)  # the claim went after the marker came
    assert not os.path.exists(stale)
    assert [e for e in os.listdir(os.path.dirname(claim)) if e.endswith(CLAIM_SUFFIX)] == []


@pytest.fixture
def other_process():
    """A live process other than this one (whose pid a claim can hold)."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_the_pusher_leaves_a_file_claimed_by_a_live_batch_alone(tmp_path, other_process):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walasync import take_claim

    archive = as_remote(make_archive(tmp_path))
    wal_dir = pg_wal(tmp_path, NAMES[:3])
    spool = os.path.dirname(marker_file(archive, NAMES[0]))
    os.makedirs(spool)
    claim = marker_file(archive, NAMES[0])[:-len(".ok")] + CLAIM_SUFFIX
    with open(claim, "w") as handle:
        handle.write("%d\n" % other_process.pid)  # a batch pushing it now
    assert take_claim(spool, NAMES[0]) is None
    assert pusher(archive, wal_dir).run(once=True)["pushed"] == 2
    assert archive.names() == NAMES[1:3] and os.path.exists(claim)
    other_process.kill()
    other_process.wait()
    assert pusher(archive, wal_dir).run(once=True)["pushed"] == 1  # a dead holder's claim holds nothing
    assert archive.names() == NAMES[:3] and not os.path.exists(claim)


def test_a_batch_leaves_a_file_claimed_by_the_live_pusher_alone(tmp_path, other_process):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walasync import _push_batch

    archive = make_archive(tmp_path)
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    spool = os.path.dirname(marker_file(archive, NAMES[0]))
    os.makedirs(spool)
    with open(os.path.join(spool, NAMES[1] + CLAIM_SUFFIX), "w") as handle:
        handle.write("%d\n" % other_process.pid)
    batch = [(os.path.join(wal_dir, name), name) for name in NAMES[:2]]
    assert _push_batch(archive, spool, batch, sources_identity(archive.config.path)) == [NAMES[0]]
    assert archive.names() == NAMES[:1]
    assert [e for e in os.listdir(spool) if e.endswith(CLAIM_SUFFIX)] == [NAMES[1] + CLAIM_SUFFIX]


def test_a_failed_push_leaves_no_marker_and_no_claim_and_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(walpusher, "POLL_SECONDS", 0.05)
    archive = as_remote(make_archive(tmp_path))
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    attempts = []

    def push(path, name, compress_threads=None, original=archive.push):
        attempts.append(name)
        if name == NAMES[0] and attempts.count(name) == 1:
            raise OSError("the store went away")
        return original(path, name, compress_threads)
    archive.push = push
    lines = []
    stop = threading.Event()
    running = walpusher.Pusher(archive, wal_dir, sources_identity(archive.config.path), log=lines.append)
    worker = threading.Thread(target=running.run, kwargs={"stop": stop})
    worker.start()
    try:
        for _attempt in range(200):
            if os.path.exists(marker_file(archive, NAMES[0])):
                break
            stop.wait(0.02)
    finally:
        stop.set()
        worker.join(10)
    assert attempts.count(NAMES[0]) == 2 and read_marker(marker_file(archive, NAMES[0])).confirmed
    assert any("the store went away" in line for line in lines)
    spool = os.path.dirname(marker_file(archive, NAMES[0]))
    assert [e for e in os.listdir(spool) if e.endswith(CLAIM_SUFFIX)] == []


def test_a_push_proven_by_the_store_is_confirmed_without_reading_it_back(tmp_path, monkeypatch):
    """What the PUT response proved (PushOutcome.confirmed) confirms the marker;
    only without it is the object read back."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive import walasync

    archive = as_remote(make_archive(tmp_path))
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    reads = []
    monkeypatch.setattr(walasync, "_archived_as", lambda *args: reads.append(args[2]) or True)

    def push(path, name, compress_threads=None, original=archive.push):
        return original(path, name, compress_threads)._replace(confirmed=name == NAMES[0])
    archive.push = push
    pusher(archive, wal_dir).run(once=True)
    assert reads == [NAMES[1]]
    assert read_marker(marker_file(archive, NAMES[0])).confirmed and read_marker(marker_file(archive, NAMES[1])).confirmed


def test_wal_push_waiting_for_the_pushers_marker_trusts_it_without_the_repository(tmp_path):
    """The marker that ends wal-push's wait for the pusher is proven as the
    quick path proves it: no request to a remote repository."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive import walasync

    archive = as_remote(make_archive(tmp_path))
    wal_dir = pg_wal(tmp_path, NAMES[:1])
    pusher(archive, wal_dir).run(once=True)

    def unreachable(*_args, **_kwargs):
        raise AssertionError("the repository was asked")
    archive.storage.read_prefix = archive.storage.exists = archive.storage.check_ready = unreachable
    spool = os.path.dirname(marker_file(archive, NAMES[0]))
    outcome = walasync._proven_marker(archive, spool, os.path.join(wal_dir, NAMES[0]), NAMES[0])
    assert outcome is not None and outcome.status == "already-archived"
    assert not os.path.exists(marker_file(archive, NAMES[0]))  # used once


# ----------------------------------------------------------------- queue limit


def test_queue_settings_are_validated(tmp_path):
    spool = str(tmp_path / "spool")
    with pytest.raises(ConfigError, match="queue_full 'sometimes'"):
        Config.load(write_config(tmp_path, spool_path=spool, queue_max="4GiB", queue_full="sometimes"))
    with pytest.raises(ConfigError, match="queue_full = drop needs queue_max"):
        Config.load(write_config(tmp_path, spool_path=spool, queue_full="drop"))
    with pytest.raises(ConfigError, match="queue_max needs spool_path"):
        Config.load(write_config(tmp_path, queue_max="4GiB"))
    with pytest.raises(ConfigError, match="below one WAL segment"):
        Config.load(write_config(tmp_path, spool_path=spool, queue_max="512k"))
    with pytest.raises(ConfigError, match="is not a size"):
        Config.load(write_config(tmp_path, spool_path=spool, queue_max="lots"))
    settings = Config.load(write_config(tmp_path, spool_path=spool, queue_max="4GiB")).archive
    assert (settings.queue_max, settings.queue_full) == (4 << 30, "wait")
    assert Config.load(write_config(tmp_path)).archive.queue_max == 0


def test_queue_accounts_the_ready_segments_oldest_first(tmp_path):
    wal_dir = pg_wal(tmp_path, list(reversed(NAMES[:3])))
    os.unlink(os.path.join(wal_dir, NAMES[2]))  # recycled meanwhile: not counted
    queue = walpusher.ready_queue(wal_dir)
    assert [name for name, _size in queue.files] == NAMES[:2]
    assert queue.bytes == 2 * SEGMENT and queue.oldest == NAMES[0]


def drop_archive(tmp_path, mode="drop") -> WalArchive:
    return make_archive(tmp_path, queue_max="2MiB", queue_full=mode)


def test_drop_journals_the_oldest_segment_only_when_over_the_limit(tmp_path, capsys):
    archive = drop_archive(tmp_path)
    wal_dir = pg_wal(tmp_path, NAMES[:2])  # 2 MiB: at the limit, not over it
    assert walpusher.drop_if_over_limit(archive.config, os.path.join(wal_dir, NAMES[0]), NAMES[0]) is False
    wal_dir = pg_wal(tmp_path, NAMES[:3])  # 3 MiB
    assert walpusher.drop_if_over_limit(archive.config, os.path.join(wal_dir, NAMES[1]), NAMES[1]) is False  # not the oldest
    assert walpusher.drop_if_over_limit(archive.config, os.path.join(wal_dir, NAMES[0]), NAMES[0], now=1000.0) is True
    assert "DROPPED WAL %s WITHOUT ARCHIVING IT" % NAMES[0] in capsys.readouterr().err
    spool = walpusher.cluster_spool(archive.config)
    journal = json.load(open(os.path.join(spool, walpusher.DROPPED_FILE)))
    assert [(e["name"], e["size"], e["dropped_epoch"]) for e in journal["dropped"]] == [(NAMES[0], SEGMENT, 1000.0)]
    state = json.load(open(os.path.join(spool, walpusher.QUEUE_FILE)))
    assert (state["bytes"], state["segments"], state["oldest"]) == (3 * SEGMENT, 3, NAMES[0])
    assert archive.names() == []  # nothing archived


def test_wait_mode_never_drops(tmp_path):
    archive = drop_archive(tmp_path, mode="wait")
    wal_dir = pg_wal(tmp_path, NAMES)
    assert walpusher.drop_if_over_limit(archive.config, os.path.join(wal_dir, NAMES[0]), NAMES[0]) is False
    assert not os.path.exists(os.path.join(walpusher.cluster_spool(archive.config), walpusher.DROPPED_FILE))
    assert walpusher.queue_status(archive.config, None)["bytes"] == 5 * SEGMENT  # recorded for metrics


def test_a_segment_with_a_marker_is_not_dropped(tmp_path):
    archive = drop_archive(tmp_path)
    wal_dir = pg_wal(tmp_path, NAMES[:3])
    pusher(archive, wal_dir).run(once=True)
    assert walpusher.drop_if_over_limit(archive.config, os.path.join(wal_dir, NAMES[0]), NAMES[0]) is False


def test_gap_stays_open_until_a_full_backup_started_after_the_last_drop(tmp_path):
    archive = drop_archive(tmp_path)
    wal_dir = pg_wal(tmp_path, NAMES[:3])
    walpusher.drop_if_over_limit(archive.config, os.path.join(wal_dir, NAMES[0]), NAMES[0], now=1000.0)
    status = walpusher.queue_status(archive.config, None, wal_dir)
    assert (status["dropped"], status["last_dropped"], status["gap_open"]) == (1, NAMES[0], True)
    assert walpusher.queue_status(archive.config, 999.0)["gap_open"] is True
    assert walpusher.queue_status(archive.config, 1001.0)["gap_open"] is False


def test_an_unreadable_journal_is_an_error_not_silence(tmp_path):
    archive = drop_archive(tmp_path)
    os.makedirs(walpusher.cluster_spool(archive.config))
    with open(os.path.join(walpusher.cluster_spool(archive.config), walpusher.DROPPED_FILE), "w") as handle:
        handle.write("{torn")
    with pytest.raises(RestorekeeperError, match="journal of dropped WAL .* is unreadable"):
        walpusher.queue_status(archive.config, None)


def test_check_and_metrics_report_an_open_gap(tmp_path):
    archive = drop_archive(tmp_path)
    wal_dir = pg_wal(tmp_path, NAMES[:3])
    walpusher.drop_if_over_limit(archive.config, os.path.join(wal_dir, NAMES[0]), NAMES[0], now=1000.0)
    queue = dict(walpusher.queue_status(archive.config, None, wal_dir), up=True, error="")
    findings: list = []
    perf: list = []
    monitoring._check_queue(queue, findings, perf)
    assert findings[0].state == monitoring.CRITICAL and "dropped unarchived" in findings[0].reason
    assert perf == ["queue_bytes=%dB;;%d" % (3 * SEGMENT, 2 << 20)]
    got: dict = {}
    monitoring._queue_samples(queue, lambda name, value, **labels: got.__setitem__(name, value))
    assert (got["restorekeeper_archive_dropped_segments"], got["restorekeeper_archive_dropped_gap_open"]) == (1, 1)
    assert got["restorekeeper_archive_queue_bytes"] == 3 * SEGMENT
    closed = dict(queue, gap_open=False)
    findings = []
    monitoring._check_queue(closed, findings, [])
    assert findings == []


def test_without_a_spool_there_is_no_queue_state_and_no_drop_gauge(tmp_path):
    config = Config.load(write_config(tmp_path))
    status = walpusher.queue_status(config, None)
    assert (status["bytes"], status["dropped"], status["gap_open"]) == (None, None, None)
    got: dict = {}
    monitoring._queue_samples(dict(status, up=True, error=""), lambda name, value, **labels: got.__setitem__(name, value))
    assert "restorekeeper_archive_dropped_gap_open" not in got


def test_cli_refuses_another_cluster_name_and_a_missing_data_directory(tmp_path, capsys):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends import cli

    archive = make_archive(tmp_path)
    assert cli.main(["wal-pusher", "--config", archive.config.path, "--cluster", "other", "--once"]) == 1
    assert "--cluster other does not match [cluster] name main" in capsys.readouterr().err
    assert cli.main(["wal-pusher", "--config", archive.config.path, "--once"]) == 1
    assert "wal-pusher needs the data directory" in capsys.readouterr().err
    wal_dir = pg_wal(tmp_path, NAMES[:2])
    assert cli.main(["wal-pusher", "--config", archive.config.path, "--pgdata", os.path.dirname(wal_dir), "--once"]) == 0
    assert "2 WAL files pushed; one pass" in capsys.readouterr().err
    assert archive.names() == NAMES[:2]
