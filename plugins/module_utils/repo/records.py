"""Sets stored under a prefix, each complete once its record object exists.

Backup sets (backup.json) and dump sets (dump.json) are written this way: the
record last, so a set without one was interrupted or is still being written.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from ..common.errors import CorruptObject
from ..storage.base import Storage


def load_record_sets(storage: Storage, prefix: str, record_name: str) -> Tuple[Dict[str, Dict[str, Any]], List[str]]:
    """Sets stored as <prefix><label>/..., each complete once <record_name>
    exists in it (it is written last). Returns ({label: record}, [incomplete labels])."""
    records: Dict[str, Dict[str, Any]] = {}
    labels = set()
    for info in storage.list(prefix):
        label, _sep, name = info.key[len(prefix):].partition("/")
        labels.add(label)
        if name == record_name:
            try:
                records[label] = json.loads(storage.get_bytes(info.key).decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise CorruptObject("%s is unreadable: %s" % (info.key, exc)) from None
    return records, sorted(labels - set(records))
