"""A backup's marks: its keep (pin beyond the retention policy) and its annotations.

backup.json is written once and never replaced (it may be under Object Lock,
and encrypted objects are bound to their name), so what changes after a
backup lives in one small object per backup, <cluster>/marks/<label>.json,
replaced whole (the backends publish a replacement atomically: posix writes a
temporary file, fsyncs it, renames it and fsyncs the directory):

    {"format": 1, "label": "20260101-000000F",
     "keep": {"until": "2027-01-31T00:00:00Z" | null, "forever": false, "set_at": "..."} | null,
     "annotations": {"ticket": "CHG-1234"}, "updated_at": "..."}

A backup without a marks object is not kept, and its annotations are those of
its record (`annotations` in backup.json, set at backup time; older records
have none). Once a marks object exists, its annotations are the backup's.
An unreadable marks object keeps its backup: retention must not guess that
a pin was released.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from ..common.errors import CorruptObject, ObjectNotFound, Refusal, RestorekeeperError
from ..common.timefmt import utc_iso
from ..storage.base import Storage
from .layout import key_basename, marks_key, marks_prefix

MARKS_FORMAT = 1
ANNOTATION_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
MAX_ANNOTATION_VALUE = 1024   # characters
MAX_ANNOTATIONS = 64


class Marks(NamedTuple):
    label: str
    keep_until: Optional[float] = None    # seconds since the epoch
    keep_forever: bool = False
    keep_set_at: Optional[str] = None
    annotations: Dict[str, str] = {}
    updated_at: Optional[str] = None
    unreadable: str = ""                  # why the stored object could not be read (then the backup is kept)

    def kept(self, now: float) -> bool:
        return bool(self.unreadable) or self.keep_forever or (self.keep_until is not None and self.keep_until > now)

    def keep_reason(self, now: float) -> Optional[str]:
        """Why retention keeps the backup, or None when the marks do not keep it."""
        if self.unreadable:
            return "its marks object is unreadable (%s): kept until it is fixed" % self.unreadable
        if self.keep_forever:
            return "kept forever (restorekeeper keep, set %s)" % self.keep_set_at
        if self.keep_until is not None and self.keep_until > now:
            return "kept until %s (restorekeeper keep)" % utc_iso(self.keep_until, digits=0)
        return None

    def describe(self, now: float) -> Dict[str, Any]:
        """keep as info and backup_info report it."""
        return {"kept": self.kept(now), "forever": self.keep_forever,
                "until": utc_iso(self.keep_until, digits=0) if self.keep_until is not None else None,
                "expired": self.keep_until is not None and not self.keep_forever and self.keep_until <= now,
                "set_at": self.keep_set_at, "reason": self.keep_reason(now)}

    def to_json(self) -> bytes:
        keep = None
        if self.keep_forever or self.keep_until is not None:
            keep = {"forever": self.keep_forever, "set_at": self.keep_set_at,
                    "until": utc_iso(self.keep_until, digits=0) if self.keep_until is not None else None}
        data = {"format": MARKS_FORMAT, "label": self.label, "keep": keep,
                "annotations": dict(sorted(self.annotations.items())), "updated_at": self.updated_at}
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


# ------------------------------------------------------------ annotations
def parse_annotation(text: str) -> Tuple[str, str]:
    """KEY=VALUE, as the command line and the modules take it."""
    key, sep, value = str(text).partition("=")
    if not sep:
        raise Refusal("annotation %r has no '='" % text, "write annotations as KEY=VALUE, e.g. ticket=CHG-1234")
    return check_annotation(key.strip(), value)


def check_annotation(key: Any, value: Any) -> Tuple[str, str]:
    if not isinstance(key, str) or not ANNOTATION_KEY_RE.match(key):
        raise Refusal("annotation key %r is not a simple identifier" % (key,),
                      "use 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or '_'")
    if isinstance(value, (dict, list)) or value is None:
        raise Refusal("annotation %s has a %s value" % (key, type(value).__name__), "give a string, e.g. %s=value" % key)
    value = str(value)
    if len(value) > MAX_ANNOTATION_VALUE:
        raise Refusal("annotation %s is %d characters long, more than %d" % (key, len(value), MAX_ANNOTATION_VALUE),
                      "keep annotations short; put long text elsewhere and annotate its reference")
    if any(ord(char) < 32 for char in value):
        raise Refusal("annotation %s holds a control character (a newline or tab)" % key, "give one line of text")
    return key, value


def check_annotations(pairs: Dict[Any, Any]) -> Dict[str, str]:
    checked = dict(check_annotation(key, value) for key, value in pairs.items())
    if len(checked) > MAX_ANNOTATIONS:
        raise Refusal("%d annotations, more than %d" % (len(checked), MAX_ANNOTATIONS), "remove some annotations")
    return checked


def annotations_from_arguments(items: Iterable[str]) -> Dict[str, str]:
    """--annotate KEY=VALUE ... (a key given twice: the last one counts)."""
    return check_annotations(dict(parse_annotation(item) for item in items))


# ------------------------------------------------------------ the objects
def _parse(label: str, raw: bytes) -> Marks:
    from ..common.timefmt import parse_instant

    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict) or data.get("label") != label:
        raise ValueError("it names backup %r" % (data.get("label") if isinstance(data, dict) else data,))
    if int(data.get("format", 0)) > MARKS_FORMAT:
        raise ValueError("format %s is newer than this restorekeeper reads (%d)" % (data.get("format"), MARKS_FORMAT))
    keep = data.get("keep") or {}
    annotations = data.get("annotations") or {}
    if not isinstance(keep, dict) or not isinstance(annotations, dict):
        raise ValueError("keep or annotations is not an object")
    until = keep.get("until")
    return Marks(label, parse_instant(until) if until else None, bool(keep.get("forever")), keep.get("set_at"),
                 {str(k): str(v) for k, v in annotations.items()}, data.get("updated_at"))


def read_marks(storage: Storage, cluster: str, label: str) -> Optional[Marks]:
    """The backup's marks, or None when it has none (not kept, annotations from its record)."""
    try:
        raw = storage.get_bytes(marks_key(cluster, label))
    except ObjectNotFound:
        return None
    return _parsed_or_unreadable(label, raw, marks_key(cluster, label))


def _parsed_or_unreadable(label: str, raw: bytes, key: str) -> Marks:
    try:
        return _parse(label, raw)
    except (ValueError, TypeError, UnicodeDecodeError, AttributeError) as exc:
        return Marks(label, unreadable="%s: %s" % (key, exc))


def load_marks(storage: Storage, cluster: str) -> Dict[str, Marks]:
    """Every backup's marks, by label (labels of deleted backups included)."""
    prefix = marks_prefix(cluster)
    found: Dict[str, Marks] = {}
    for info in storage.list(prefix):
        name = key_basename(info.key)
        if "/" in info.key[len(prefix):] or not name.endswith(".json"):
            continue
        label = name[:-len(".json")]
        try:
            raw = storage.get_bytes(info.key)
        except ObjectNotFound:
            continue  # deleted since the listing
        except CorruptObject as exc:  # an encrypted object that fails authentication, moved from elsewhere
            found[label] = Marks(label, unreadable=str(exc))
            continue
        found[label] = _parsed_or_unreadable(label, raw, info.key)
    return found


def write_marks(storage: Storage, cluster: str, marks: Marks) -> None:
    """Replace the backup's marks atomically."""
    storage.put_bytes(marks_key(cluster, marks.label), marks.to_json(), overwrite=True)


def annotations_of(record: Dict[str, Any], marks: Optional[Marks]) -> Dict[str, str]:
    """A backup's annotations: its marks' once it has marks, else its record's."""
    if marks is not None and not marks.unreadable:
        return dict(marks.annotations)
    value = record.get("annotations") or {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def pins(marks: Dict[str, Marks], now: float) -> Dict[str, str]:
    """label -> why the marks keep it, for retention.plan's pinned."""
    found = {}
    for label, mark in marks.items():
        reason = mark.keep_reason(now)
        if reason:
            found[label] = reason
    return found


def marks_labels_without(marks: Dict[str, Marks], labels: Iterable[str]) -> List[str]:
    """Labels whose marks outlived their backup (an expire interrupted between the two)."""
    present = set(labels)
    return sorted(label for label in marks if label not in present)


def unreadable_error(marks: Marks) -> RestorekeeperError:
    return CorruptObject("the marks of backup %s are unreadable: %s" % (marks.label, marks.unreadable),
                         "set them again with `restorekeeper keep` / `restorekeeper annotate`, which replace the object")
