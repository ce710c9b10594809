"""Every repository key is built in repo/layout.py; docs/repository-format.md describes the same layout."""

from __future__ import annotations

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo import layout

SEGMENT = "000000010000000A000000FE"


def test_cluster_keys():
    assert layout.identity_key("main") == "main/cluster.json"
    assert layout.backup_lock_key("main") == "main/backup.lock"
    assert layout.dump_lock_key("main") == "main/dump.lock"
    assert layout.stream_status_key("main") == "main/stream/status.json"


def test_wal_keys_group_segments_by_timeline_and_log():
    assert layout.wal_prefix("main") == "main/wal/"
    assert layout.wal_key("main", SEGMENT) == "main/wal/000000010000000A/" + SEGMENT
    assert layout.wal_key("main", SEGMENT + ".partial") == "main/wal/000000010000000A/%s.partial" % SEGMENT
    assert layout.wal_key("main", "00000002.history") == "main/wal/history/00000002.history"
    assert layout.wal_partial_prefix("main") == "main/wal-partial/"
    assert layout.wal_partial_key("main", SEGMENT) == "main/wal-partial/%s.partial" % SEGMENT


def test_set_keys():
    assert layout.backup_prefix("main") == "main/backup/"
    assert layout.backup_prefix("main", "20240101-000000F") == "main/backup/20240101-000000F/"
    assert layout.dump_prefix("main") == "main/dump/"
    assert layout.dump_prefix("main", "20240101-000000L") == "main/dump/20240101-000000L/"
    assert layout.backup_record_key("main", "20240101-000000F") == "main/backup/20240101-000000F/backup.json"
    assert layout.RECORD_NAMES == ("backup.json", "dump.json")


def test_drill_keys():
    assert layout.drills_prefix("main") == "main/drills/"
    assert layout.drill_record_key("main", "20240101T000000Z") == "main/drills/20240101T000000Z.json"


def test_reading_keys_back():
    key = layout.wal_key("main", SEGMENT)
    assert layout.key_basename(key) == SEGMENT
    assert layout.key_basename("plain") == "plain"
    assert layout.set_label(layout.backup_record_key("main", "L1")) == "L1"
    assert layout.set_label(layout.dump_prefix("main", "L2") + "db.dump") == "L2"


@pytest.mark.parametrize("key, identity, wal, record", [
    ("main/cluster.json", True, False, False),
    ("main/wal/000000010000000A/" + SEGMENT, False, True, False),
    ("main/wal/history/00000002.history", False, True, False),
    ("main/backup/L1/backup.json", False, False, True),
    ("main/dump/L2/dump.json", False, False, True),
    ("main/backup/L1/base.tar", False, False, False),
    ("main/wal-partial/%s.partial" % SEGMENT, False, False, False),
])
def test_kinds_of_keys(key, identity, wal, record):
    assert (layout.is_identity_key(key), layout.is_wal_key(key), layout.is_record_key(key)) == (identity, wal, record)
