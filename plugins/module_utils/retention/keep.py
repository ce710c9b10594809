"""`restorekeeper keep` and `restorekeeper annotate`: change a backup's marks
(repo/marks.py) in the repository and, at once, in every copy.

The repository is written first and must succeed. Each copy is then written
directly (the marks object re-encrypted for it by its own storage), so a
copy's retention honours a new pin even before the next ship; a copy that is
unreachable now is reported, and ship brings it the marks on its next pass
(ship compares marks objects by content, copies/ship.py).

`keep` on a repository or copy written under S3 Object Lock also locks the
backup's objects there (keeplock.py), before its marks are written.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Optional

from ..common.errors import Refusal, RestorekeeperError
from ..common.timefmt import parse_instant, utc_iso
from ..config.config import Config
from ..repo.catalog import Catalog
from ..repo.marks import Marks, check_annotations, read_marks, unreadable_error, write_marks
from ..repo.repository import Repository, open_repository_storage
from ..storage.base import Storage
from .keeplock import lock_backup

REPOSITORY = "repository"


def parse_keep_until(text: str) -> float:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise Refusal("--until: %s" % exc, "give the date the backup may go from, e.g. 2027-01-31 or "
                      "2027-01-31T12:00:00Z") from None


def _current(config: Config, label: str) -> Marks:
    repository = Repository.from_config(config)
    repository.require_initialised()
    backup = Catalog(repository, config.cluster).get(label)  # refuses an unknown or incomplete label
    marks = read_marks(repository.storage, config.cluster, label)
    if marks is None:
        record_annotations = backup.record.get("annotations") or {}
        return Marks(label, annotations={str(k): str(v) for k, v in record_annotations.items()})
    return marks


def keep(config: Config, label: str, until: Optional[float] = None, forever: bool = False, release: bool = False,
         check_mode: bool = False, now: Optional[float] = None) -> Dict[str, Any]:
    """Pin the backup until a date or forever, or release the pin. Idempotent."""
    if sum((until is not None, forever, release)) != 1:
        raise Refusal("keep takes exactly one of --until DATE, --forever and --release",
                      "e.g. `restorekeeper keep %s --until 2027-01-31`" % label)
    now = time.time() if now is None else now
    current = _current(config, label)
    repair = bool(current.unreadable)
    if repair and release:
        current = Marks(label)  # a release rewrites an unreadable object with no pin and no annotations
    elif repair:
        raise unreadable_error(current)
    stamp = utc_iso(now, digits=0)
    if release:
        wanted = current._replace(keep_until=None, keep_forever=False, keep_set_at=None)
    else:
        wanted = current._replace(keep_until=None if forever else float(int(until or 0)), keep_forever=forever,
                                  keep_set_at=stamp)
    same = (wanted.keep_until, wanted.keep_forever) == (current.keep_until, current.keep_forever) and not repair
    marks = current if same else wanted._replace(updated_at=stamp)
    # Locks before the marks: a lock placed for a pin not written yet (or a hold lifted while the
    # marks still pin) never lets a kept backup go. Unchanged marks still converge the locks.
    locks = lock_everywhere(config, marks, current.keep_forever, check_mode, now)
    result = _apply(config, marks, not same, check_mode, now)
    result["object_lock"] = locks
    result["changed"] = result["changed"] or any(entry.get("changed") for entry in locks)
    for entry in locks:
        if entry.get("error"):
            result["warnings"].append("the Object Lock of backup %s on %s was not changed (%s); run this keep again "
                                      "once it is reachable" % (label, entry["target"], entry["error"]))
    if until is not None and until <= now:
        result["warnings"].append("%s is in the past: the backup is not kept (retention treats it as released)"
                                  % utc_iso(until, digits=0))
    return result


def annotate(config: Config, label: str, values: Optional[Dict[str, Any]] = None, remove: Iterable[str] = (),
             check_mode: bool = False, now: Optional[float] = None) -> Dict[str, Any]:
    """Set (and remove) annotations of a backup. Idempotent."""
    now = time.time() if now is None else now
    values = check_annotations(values or {})
    removed = list(remove)
    both = sorted(set(values) & set(removed))
    if both:
        raise Refusal("annotation %s is both set and removed" % ", ".join(both), "give each key once")
    current = _current(config, label)
    if current.unreadable:
        raise unreadable_error(current)
    annotations = dict(current.annotations)
    annotations.update(values)
    for key in removed:
        annotations.pop(key, None)
    check_annotations(annotations)  # the total count
    changed = annotations != current.annotations
    marks = current._replace(annotations=annotations, updated_at=utc_iso(now, digits=0)) if changed else current
    return _apply(config, marks, changed, check_mode, now)


def _apply(config: Config, marks: Marks, changed: bool, check_mode: bool, now: float) -> Dict[str, Any]:
    result: Dict[str, Any] = {"label": marks.label, "changed": changed, "keep": marks.describe(now),
                              "annotations": dict(marks.annotations), "copies": [], "warnings": []}
    if not changed or check_mode:
        return result
    write_marks(Repository.from_config(config).storage, config.cluster, marks)
    result["copies"] = write_to_copies(config, marks)
    for entry in result["copies"]:
        if entry.get("error"):
            result["warnings"].append("copy %s was not updated now (%s); the next `restorekeeper ship` brings it "
                                      "the change" % (entry["name"], entry["error"]))
    return result


def write_to_copies(config: Config, marks: Marks) -> List[Dict[str, Any]]:
    """Write the marks to every copy now; a failure is reported, never raised."""
    written = []
    for copy in config.copies:
        try:
            storage = open_repository_storage(copy.repository)
            Repository(storage).require_initialised()
            write_marks(storage, config.cluster, marks)
            written.append({"name": copy.name, "written": True})
        except RestorekeeperError as exc:
            written.append({"name": copy.name, "written": False, "error": str(exc)})
    return written


def lock_everywhere(config: Config, marks: Marks, was_forever: bool, check_mode: bool,
                    now: float) -> List[Dict[str, Any]]:
    """The Object Lock of the kept backup on the repository and every copy (keeplock.py);
    a failure is reported, never raised. was_forever: the pin being replaced was --forever."""
    found = []
    chosen = [(REPOSITORY, config.repository)] + [(copy.name, copy.repository) for copy in config.copies]
    for name, repository in chosen:
        if not (repository.options or {}).get("object_lock_mode"):
            found.append({"target": name, "object_lock": False, "changed": False, "action": "no Object Lock"})
            continue  # not even opened: an unreachable copy without Object Lock is the marks' business
        try:
            storage = open_repository_storage(repository)
            Repository(storage).require_initialised()
            lift = was_forever or _kept_forever_there(storage, config.cluster, marks.label)
            entry = lock_backup(storage, config.cluster, marks, lift, now, check_mode)
        except RestorekeeperError as exc:
            entry = {"object_lock": None, "changed": False, "error": str(exc), "action": "FAILED: %s" % exc}
        found.append(dict(entry, target=name))
    return found


def _kept_forever_there(storage: Storage, cluster: str, label: str) -> bool:
    """Whether this storage's own marks keep the backup forever (a copy a release has not reached yet)."""
    if not storage.object_lock_mode():
        return False
    there = read_marks(storage, cluster, label)
    return there is not None and there.keep_forever


def summary_line(verb: str, result: Dict[str, Any]) -> str:
    keep_state = result["keep"]
    if keep_state["forever"]:
        state = "kept forever"
    elif keep_state["kept"]:
        state = "kept until %s" % keep_state["until"]
    else:
        state = "not kept (retention decides)"
    notes = ", ".join("%s=%s" % item for item in sorted(result["annotations"].items())) or "none"
    copies = ", ".join("%s %s" % (c["name"], "updated" if c["written"] else "NOT updated") for c in result["copies"])
    locks = ", ".join("%s: %s" % (entry["target"], entry["action"]) for entry in result.get("object_lock", [])
                      if entry.get("object_lock") is not False)
    return "backup %s %s: %s; annotations: %s%s%s" % (
        result["label"], verb if result["changed"] else "unchanged", state, notes,
        "; copies: " + copies if copies else "", "; Object Lock: " + locks if locks else "")
