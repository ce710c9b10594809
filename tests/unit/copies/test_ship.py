"""Incremental ship passes (issue 16 item 5): a pass does work proportional to
what is new, a full reconciliation repairs drift, and nothing is ever skipped."""

from __future__ import annotations

import json
import os
import time
from typing import Iterator, Optional

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.copies.ship import Shipper
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.layout import ship_state_key
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.base import ObjectInfo, Storage
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage

SEGMENT_SIZE = 16 * 1024 * 1024


def seg(n: int, tl: int = 1) -> str:
    return "%08X%08X%08X" % (tl, n // 256, n % 256)


def wal_key(name: str) -> str:
    return "main/wal/%s/%s" % ("history" if name.endswith(".history") else name[:16], name)


class Counting(Storage):
    """A storage that counts what a pass asks of it."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.location = inner.location
        self.lists = self.listed = self.stats = self.gets = 0

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self.lists += 1
        for info in self.inner.list(prefix):
            self.listed += 1
            yield info

    def stat(self, key: str) -> Optional[ObjectInfo]:
        self.stats += 1
        return self.inner.stat(key)

    def get_bytes(self, key: str) -> bytes:
        self.gets += 1
        return self.inner.get_bytes(key)

    def open(self, key: str):
        return self.inner.open(key)

    def writer(self, key: str, overwrite: bool = False):
        return self.inner.writer(key, overwrite)

    def ensure_root(self) -> None:
        self.inner.ensure_root()

    def check_ready(self) -> None:
        self.inner.check_ready()

    def examined(self) -> int:
        return self.listed + self.stats + self.gets


class CountingShipper(Shipper):
    def __init__(self, config: Config, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.repository.storage = self.source = Counting(self.repository.storage)
        self.targets = []

    def _targets(self, only: str = ""):
        self.targets = [(copy, Counting(target)) for copy, target in super()._targets(only)]
        return self.targets


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "rk.conf"
    path.write_text("[cluster]\nname = main\n[repository]\npath = %s\n[copy second]\npath = %s\n"
                    % (tmp_path / "repo", tmp_path / "copy"))
    config = Config.load(str(path))
    repository = Repository.from_config(config)
    repository.create()
    repository.claim_identity("main", 7, SEGMENT_SIZE, "test")
    return config, repository.storage, PosixStorage(str(tmp_path / "copy"))


def put_wal(storage: Storage, *names: str) -> None:
    for name in names:
        storage.put_bytes(wal_key(name), b"w")


def age(storage: PosixStorage, key: str, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(storage.path_of(key), (past, past))


def ship(config: Config, **kwargs):
    shipper = CountingShipper(config)
    result = shipper.ship_once(**kwargs)[0]
    return result, shipper


def ship_pass(config: Config, **kwargs):
    """The result of one pass, when the counts do not matter."""
    return ship(config, **kwargs)[0]


def test_a_pass_over_100000_shipped_objects_with_10_new_examines_about_10(repo):
    config, storage, copy = repo
    # 100,000 segments across 391 directories, already in the copy (hard links: cheap to make).
    for n in range(100_000):
        path = storage.path_of(wal_key(seg(n)))
        if n % 256 == 0:
            os.makedirs(os.path.dirname(path))
            os.makedirs(os.path.dirname(copy.path_of(wal_key(seg(n)))))
        with open(path, "wb") as stream:
            stream.write(b"w")
        os.link(path, copy.path_of(wal_key(seg(n))))
    first, shipper = ship(config)
    assert first.full and first.examined > 100_000 and first.shipped == ["restorekeeper.repo", "main/cluster.json"]
    assert shipper.source.listed > 100_000
    new = [seg(n) for n in range(100_000, 100_010)]
    put_wal(storage, *new)
    result, shipper = ship(config)
    assert not result.full and not result.failed and result.pending == 0
    assert result.shipped == [wal_key(name) for name in new]
    # Proportional to the 10: the block before the watermark's, its own, the new, two empty blocks ahead.
    assert result.examined <= 60, result.examined
    target = shipper.targets[0][1]
    for counted in (shipper.source, target):
        assert counted.listed <= 60 and counted.lists <= 25, (counted.listed, counted.lists)
    assert target.stats <= 15
    again, shipper = ship(config)  # nothing new: a handful of small listings
    assert not again.full and again.shipped == [] and again.examined <= 40
    assert copy.exists(wal_key(new[-1]))


def test_a_new_copy_starts_with_a_full_pass_and_then_goes_incremental(repo):
    config, storage, copy = repo
    put_wal(storage, *[seg(n) for n in range(1, 40)])
    first = ship_pass(config)
    assert first.full and len(first.shipped) == 41
    state = json.loads(storage.get_bytes(ship_state_key("main", "second")))
    assert state["wal"]["00000001"]["segment"] == seg(39) and state["location"] == copy.location
    assert not storage.exists("main/ship/second.json.lock") and not copy.exists(ship_state_key("main", "second"))
    put_wal(storage, seg(40))
    second = ship_pass(config)
    assert not second.full and second.shipped == [wal_key(seg(40))]


def test_out_of_order_segments_hold_the_watermark_until_the_gap_fills(repo):
    config, storage, copy = repo
    put_wal(storage, *[seg(n) for n in range(1, 20)])
    ship(config)
    put_wal(storage, seg(21), seg(22))  # 20 is still being pushed
    result = ship_pass(config)
    assert result.shipped == [wal_key(seg(21)), wal_key(seg(22))]
    put_wal(storage, *[seg(n) for n in range(23, 60)])
    ship(config)
    assert json.loads(storage.get_bytes(ship_state_key("main", "second")))["wal"]["00000001"]["segment"] == seg(19)
    put_wal(storage, seg(20))  # 40 segments below the newest: still found
    result = ship_pass(config)
    assert not result.full and result.shipped == [wal_key(seg(20))]
    assert json.loads(storage.get_bytes(ship_state_key("main", "second")))["wal"]["00000001"]["segment"] == seg(59)


def test_a_gap_settles_once_the_segment_after_it_is_old(repo):
    config, storage, _copy = repo
    put_wal(storage, seg(1), seg(2), seg(5))
    age(storage, wal_key(seg(5)), 7200)
    ship(config)
    assert json.loads(storage.get_bytes(ship_state_key("main", "second")))["wal"]["00000001"]["segment"] == seg(5)


def test_new_sets_timelines_and_late_backup_history_files_are_shipped_incrementally(repo):
    config, storage, copy = repo
    put_wal(storage, *[seg(n) for n in range(1, 200)])
    ship(config)
    label = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "F"
    storage.put_bytes("main/backup/%s/base.tar.zst" % label, b"x")
    storage.put_bytes("main/backup/%s/backup.json" % label, json.dumps({"wal_start": seg(3)}).encode())
    put_wal(storage, seg(3) + ".00000028.backup", "00000002.history", seg(199, tl=2), seg(200, tl=2))
    result = ship_pass(config)
    assert not result.full and not result.failed
    assert result.shipped == [wal_key(seg(3) + ".00000028.backup"), wal_key(seg(199, 2)), wal_key(seg(200, 2)),
                              wal_key("00000002.history"), "main/backup/%s/base.tar.zst" % label,
                              "main/backup/%s/backup.json" % label]
    assert result.examined < 50


def test_a_straggler_far_below_the_watermark_waits_for_the_full_reconciliation(repo):
    config, storage, copy = repo
    put_wal(storage, *[seg(n) for n in range(1, 200)])
    ship(config)
    copy.delete(wal_key(seg(10)))  # drift: the copy lost an object
    assert ship(config)[0].shipped == []
    result = ship_pass(config, full=True)
    assert result.full and result.shipped == [wal_key(seg(10))]
    state = json.loads(storage.get_bytes(ship_state_key("main", "second")))
    state["last_full"] = time.time() - 2 * 86400  # a day has passed: the next pass is full on its own
    storage.put_bytes(ship_state_key("main", "second"), json.dumps(state).encode(), overwrite=True)
    copy.delete(wal_key(seg(11)))
    result = ship_pass(config)
    assert result.full and result.shipped == [wal_key(seg(11))]


def test_a_failed_pass_keeps_the_state_and_a_lost_or_foreign_state_means_a_full_pass(repo, monkeypatch):
    config, storage, copy = repo
    put_wal(storage, *[seg(n) for n in range(1, 10)])
    ship(config)
    before = storage.get_bytes(ship_state_key("main", "second"))
    put_wal(storage, seg(10), seg(11))
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import StorageError
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.copies import ship as ship_module

    real_copy = ship_module.copy_object

    def flaky(source, target, key):
        if key == wal_key(seg(10)):
            raise StorageError("cannot write %s: the copy's disk is full" % key)
        return real_copy(source, target, key)

    monkeypatch.setattr(ship_module, "copy_object", flaky)
    result = ship_pass(config)
    assert list(result.failed) == [wal_key(seg(10))] and result.shipped == [wal_key(seg(11))]
    assert storage.get_bytes(ship_state_key("main", "second")) == before
    monkeypatch.setattr(ship_module, "copy_object", real_copy)
    result = ship_pass(config)
    assert not result.full and result.shipped == [wal_key(seg(10))]  # nothing skipped after the failure
    storage.put_bytes(ship_state_key("main", "second"), b"{not json", overwrite=True)
    assert ship(config)[0].full
    state = json.loads(storage.get_bytes(ship_state_key("main", "second")))
    state["location"] = "/elsewhere"
    storage.put_bytes(ship_state_key("main", "second"), json.dumps(state).encode(), overwrite=True)
    assert ship(config)[0].full


def test_cli_ship_reports_examined_and_checks_full_interval(repo, capsys):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.cli import main

    config, storage, _copy = repo
    put_wal(storage, seg(1))
    assert main(["ship", "--config", config.path, "--once", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)[0]
    assert first["full"] is True and first["examined"] >= 3
    assert main(["ship", "--config", config.path, "--once"]) == 0
    assert "0 shipped, 0 failed, 0 still pending (incremental pass, " in capsys.readouterr().out
    assert main(["ship", "--config", config.path, "--once", "--full", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["full"] is True
    assert main(["ship", "--config", config.path, "--once", "--full-interval", "soon"]) == 2
    err = capsys.readouterr().err
    assert "--full-interval" in err and "'soon' is not a duration" in err
