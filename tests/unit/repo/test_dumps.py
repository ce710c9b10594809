"""The catalog of dump sets (repo/dumps.py)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestoreFailed
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.dumps import DumpCatalog
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.layout import DUMP_RECORD_NAME, dump_prefix
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository


def _record(label: str, databases):
    return {"label": label, "start_time": "t0", "stop_time": "t1", "dump_format": "custom", "globals": None,
            "stored_size": 1, "databases": [{"name": name, "tables": []} for name in databases]}


def test_catalog_lists_complete_dumps_and_finds_the_newest_per_database(make_config):
    config = make_config()
    repository = Repository.from_config(config)
    repository.create()
    storage = repository.storage
    for label, databases in (("20260101-000000L", ["a", "b"]), ("20260102-000000L", ["a"])):
        storage.put_bytes(dump_prefix("main", label) + "a.dump.zst", b"x")
        storage.put_bytes(dump_prefix("main", label) + DUMP_RECORD_NAME, json.dumps(_record(label, databases)).encode())
    storage.put_bytes(dump_prefix("main", "20260103-000000L") + "a.dump.zst", b"x")  # interrupted
    catalog = DumpCatalog(repository, "main")
    assert [d.label for d in catalog.dumps()] == ["20260101-000000L", "20260102-000000L"]
    assert catalog.incomplete() == ["20260103-000000L"]
    assert catalog.latest("a").label == "20260102-000000L"
    assert catalog.latest("b").label == "20260101-000000L"
    assert catalog.latest("c") is None
    with pytest.raises(RestoreFailed, match="incomplete"):
        catalog.get("20260103-000000L")
    with pytest.raises(RestoreFailed, match="holds no database 'c'"):
        catalog.get("20260101-000000L").database("c")
    assert catalog.describe()[0]["databases"] == ["a", "b"]
