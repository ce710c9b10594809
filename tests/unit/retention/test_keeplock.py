"""S3 Object Lock for kept backups (issue 17 item 4): which objects a kept
backup needs, and what keep changes in their locks, on a posix storage that
records locks the way S3 applies them (extend only, legal hold on or off).
The S3 calls themselves are tested against moto's server (tests/integration/test_keep.py)."""

from __future__ import annotations

import datetime
import json
from typing import Dict

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import StorageError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.marks import Marks, write_marks
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention import expire
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention.keeplock import (
    lock_backup, needed_keys, plan_locks)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.base import LockState
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage

NOW = 2_000_000_000.0
UTC = datetime.timezone.utc


def at(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=UTC)


def seg(n: int, tl: int = 1) -> str:
    return "%08X%08X%08X" % (tl, n // 256, n % 256)


class LockingStorage(PosixStorage):
    """Posix objects with S3's Object Lock rules: a retention is only ever moved later."""

    def __init__(self, root: str, mode: str = "GOVERNANCE") -> None:
        super().__init__(root)
        self.mode = mode
        self.locks: Dict[str, LockState] = {}
        self.calls = 0

    def supports_object_lock(self) -> bool:
        return True

    def object_lock_mode(self) -> str:
        return self.mode

    def lock_state(self, key: str) -> LockState:
        return self.locks.get(key, LockState())

    def extend_retention(self, key: str, until: datetime.datetime) -> bool:
        current = self.lock_state(key)
        assert current.retained_until is None or current.retained_until < until, "asked to shorten %s" % key
        self.calls += 1
        self.locks[key] = current._replace(retained_until=until)
        return True

    def set_legal_hold(self, key: str, on: bool) -> bool:
        self.calls += 1
        self.locks[key] = self.lock_state(key)._replace(legal_hold=on)
        return True


def put_backup(storage, label: str, start: int, stop: int, parent=None, timeline: int = 1) -> None:
    prefix = "main/backup/%s/" % label
    storage.put_bytes(prefix + "base.tar.zst", b"x")
    storage.put_bytes(prefix + "backup_manifest", b"m")
    record = {"label": label, "type": "incremental" if parent else "full", "parent": parent,
              "wal_start": seg(start, timeline), "wal_stop": seg(stop, timeline),
              "stop_time": "2033-05-18T03:33:20.000000Z"}
    storage.put_bytes(prefix + "backup.json", json.dumps(record).encode())


def put_wal(storage, names) -> None:
    for name in names:
        directory = "history" if name.endswith(".history") else name[:16]
        storage.put_bytes("main/wal/%s/%s" % (directory, name), b"w")


@pytest.fixture
def storage(tmp_path):
    found = LockingStorage(str(tmp_path / "repo"))
    put_backup(found, "F1", 2, 3)
    put_backup(found, "I1", 0x1FF, 0x201, parent="F1")  # its WAL crosses a log boundary
    put_backup(found, "F2", 5, 5, timeline=2)
    put_wal(found, [seg(n) for n in range(1, 8)] + [seg(n) for n in range(0x1FE, 0x203)]
            + [seg(3) + ".00000028.backup", seg(3) + ".partial", seg(4, 2), seg(5, 2), seg(6, 2),
               "00000002.history"])
    return found


def test_a_backup_needs_its_chain_its_wal_range_and_its_timelines_history(storage):
    assert needed_keys(storage, "main", "F1") == sorted(
        ["main/backup/F1/%s" % name for name in ("backup.json", "backup_manifest", "base.tar.zst")]
        + ["main/wal/0000000100000000/%s" % seg(n) for n in (2, 3)])
    incremental = needed_keys(storage, "main", "I1")
    assert {key for key in incremental if "/backup/" in key} == {
        "main/backup/%s/%s" % (label, name) for label in ("F1", "I1")
        for name in ("backup.json", "backup_manifest", "base.tar.zst")}  # the parent's set too, not its WAL
    assert [key.rsplit("/", 1)[1] for key in incremental if "/wal/" in key] == [seg(0x1FF), seg(0x200), seg(0x201)]
    assert [key for key in needed_keys(storage, "main", "F2") if "/wal/" in key] == [
        "main/wal/0000000200000000/%s" % seg(5, 2), "main/wal/history/00000002.history"]
    assert needed_keys(storage, "main", "F9") is None


def test_plan_extends_only_shorter_retentions_and_never_shortens():
    keys = ["a", "b", "c"]
    states = {"a": LockState(), "b": LockState(at(NOW + 10)), "c": LockState(at(NOW + 1000))}
    plan = plan_locks(keys, states, "COMPLIANCE", Marks("F1", keep_until=NOW + 100), False, set(), NOW)
    assert plan.extend == ["a", "b"] and plan.until == at(NOW + 100) and plan.retained_until == at(NOW + 1000)
    assert plan.hold == [] and plan.lift == []
    past = plan_locks(keys, states, "COMPLIANCE", Marks("F1", keep_until=NOW - 1), False, set(), NOW)
    assert past.extend == [] and past.until is None  # a date in the past keeps nothing, locks nothing


def test_plan_holds_forever_and_lifts_only_the_pins_holds_sparing_other_backups():
    keys = ["a", "b", "c"]
    held = {key: LockState(legal_hold=key != "c") for key in keys}
    forever = plan_locks(keys, held, "GOVERNANCE", Marks("F1", keep_forever=True), False, set(), NOW)
    assert forever.hold == ["c"] and forever.lift == [] and forever.extend == []
    released = plan_locks(keys, held, "GOVERNANCE", Marks("F1"), True, {"b"}, NOW)
    assert released.lift == ["a"] and released.spared == 1
    unpinned = plan_locks(keys, held, "GOVERNANCE", Marks("F1"), False, set(), NOW)
    assert unpinned.lift == []  # holds this pin did not place are not ours to lift


def test_keep_until_forever_and_release_on_a_locking_storage(storage):
    until = lock_backup(storage, "main", Marks("I1", keep_until=NOW + 86400), False, NOW, check_mode=False)
    needed = needed_keys(storage, "main", "I1")
    assert until["retention_extended"] == len(needed) == until["objects"] and until["changed"]
    assert all(storage.lock_state(key).retained_until == at(NOW + 86400) for key in needed)
    assert "retention extended to 2033-05-19T03:33:20Z on %d of %d object(s)" % (len(needed), len(needed)) \
        in until["action"]
    calls = storage.calls
    again = lock_backup(storage, "main", Marks("I1", keep_until=NOW + 86400), False, NOW, check_mode=False)
    assert not again["changed"] and storage.calls == calls and "already locked as kept" in again["action"]

    # F1 kept forever too: releasing I1 later must leave F1's holds on
    write_marks(storage, "main", Marks("F1", keep_forever=True))
    lock_backup(storage, "main", Marks("F1", keep_forever=True), False, NOW, check_mode=False)
    f1_keys = set(needed_keys(storage, "main", "F1"))
    assert len(f1_keys) == 5 and storage.calls == calls + 5
    dry = lock_backup(storage, "main", Marks("I1", keep_forever=True), False, NOW, check_mode=True)
    assert dry["changed"] and "would be put on" in dry["action"] and storage.calls == calls + 5
    held = lock_backup(storage, "main", Marks("I1", keep_forever=True), False, NOW, check_mode=False)
    assert held["legal_hold_set"] == len(set(needed) - f1_keys) == 6  # F1's set was held already
    assert all(storage.lock_state(key).legal_hold for key in needed)

    released = lock_backup(storage, "main", Marks("I1"), True, NOW, check_mode=False)
    assert released["legal_hold_lifted"] == len(set(needed) - f1_keys) and \
        released["legal_hold_kept_for_other_backups"] == len(f1_keys & set(needed))
    assert all(storage.lock_state(key).legal_hold == (key in f1_keys) for key in needed)
    assert "retention dates cannot be shortened: locked until 2033-05-19T03:33:20Z" in released["action"]
    assert all(storage.lock_state(key).retained_until == at(NOW + 86400) for key in needed)


def test_a_storage_without_object_lock_is_untouched_and_refuses_to_lock(tmp_path):
    plain = PosixStorage(str(tmp_path / "plain"))
    put_backup(plain, "F1", 2, 2)
    assert lock_backup(plain, "main", Marks("F1", keep_forever=True), False, NOW, False) == {
        "object_lock": False, "changed": False, "action": "no Object Lock"}
    assert not plain.supports_object_lock() and not plain.lock_state("main/backup/F1/backup.json").locked()
    with pytest.raises(StorageError, match="has no S3 Object Lock"):
        plain.set_legal_hold("main/backup/F1/backup.json", True)
    with pytest.raises(StorageError, match="has no S3 Object Lock"):
        plain.extend_retention("main/backup/F1/backup.json", at(NOW))


def test_expire_treats_a_legal_hold_like_a_retention(storage):
    held = {key: LockState(legal_hold=True) for key in needed_keys(storage, "main", "F1")}
    storage.locks.update(held)
    reader = expire._lock_reader(storage)
    state = expire._strongest_lock(reader, sorted(held))
    assert state.legal_hold and state.retained_until is None
    reason = expire._lock_reason(state)
    assert reason.startswith(expire.LOCKED + "by a legal hold") and "--release" in reason
    assert LockState(at(NOW), True).describe() == "under a legal hold and locked until 2033-05-18T03:33:20+00:00"
    assert expire._lock_reader(PosixStorage(str(storage.root) + "-other")) is None
