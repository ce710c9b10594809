"""One drill request: from the plain values a front end collects to the DrillOptions the drill takes.

Module restore_drill and the command ``restorekeeper drill`` both build their
options here, so both refuse the same bad input - an unknown or misplaced
recovery target, an unreadable time, a checksum table not written
DATABASE:SCHEMA.TABLE, a spot check without name, sql or expected, or two
spot checks of one name (the report keys its checks by name) - before
anything is done. Messages name the option as the front end spells it
(``labels``), so each user reads their own option names.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from ..common.errors import ConfigError, Refusal, RestorekeeperError
from ..common.timefmt import parse_seconds
from ..pg.recovery import build_target
from .drill import MODES, DrillOptions, DrillQuery, query_from_dict

TARGET_KEYS = ("target_time", "target_xid", "target_lsn", "target_name")


def _label(labels: Mapping[str, str], key: str) -> str:
    return labels.get(key, key)


def target_seconds(label: str, value: Any) -> Optional[float]:
    """An RTO or RPO target in seconds (a number, or a string with a unit), or None when not given."""
    if value is None or value == "":
        return None
    try:
        return float(parse_seconds(value))
    except ValueError as exc:
        raise Refusal("%s: %s" % (label, exc)) from None


def drill_queries(raw: Any, label: str = "queries") -> Tuple[DrillQuery, ...]:
    """Spot checks from a list of {name, database, sql, expected}; names must be unique in the report."""
    if not isinstance(raw, list):
        raise Refusal("%s: a list of spot checks is needed, not %s" % (label, type(raw).__name__),
                      'give a list of {"name", "database", "sql", "expected"}')
    try:
        queries = tuple(query_from_dict(item) for item in raw)
    except RestorekeeperError as exc:
        raise Refusal("%s: %s" % (label, exc)) from None
    names = [query.name for query in queries]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise Refusal("%s: names must be unique in the report; repeated: %s" % (label, ", ".join(repeated)))
    return queries


def checksum_tables(items: Iterable[str], label: str = "checksum_tables") -> Tuple[str, ...]:
    """Tables to compare by content, each DATABASE:SCHEMA.TABLE."""
    tables = tuple(items)
    for item in tables:
        database, sep, table = item.partition(":")
        if not sep or not database or "." not in table:
            raise Refusal("%s: %r is not DATABASE:SCHEMA.TABLE, e.g. postgres:public.accounts" % (label, item))
    return tables


def read_queries_file(path: str) -> Any:
    """The JSON a spot-check file holds (checked by drill_queries)."""
    import json  # only a drill with a query file needs it

    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigError("verification queries in %s are unreadable: %s" % (path, exc),
                          'write a JSON list of {"name", "database", "sql", "expected"}') from None


def recovery_target(mode: str, targets: Mapping[str, Optional[str]], labels: Mapping[str, str]) -> Any:
    """The RecoveryTarget of mode "target" (exactly one of TARGET_KEYS); None in the other modes."""
    if mode == "target":
        return build_target(time=targets.get("target_time") or "", xid=targets.get("target_xid") or "",
                            lsn=targets.get("target_lsn") or "", name=targets.get("target_name") or "")
    if any(targets.get(key) for key in TARGET_KEYS):
        raise Refusal("%s need %s" % (_and_list([_label(labels, key) for key in TARGET_KEYS]),
                                      _label(labels, "mode: target")))
    return None


def _and_list(names: Sequence[str]) -> str:
    return "%s and %s" % (", ".join(names[:-1]), names[-1])


def build_drill_options(  # pylint: disable=too-many-arguments,too-many-locals
        *, tool_path: str, mode: str = "restore-point", targets: Optional[Mapping[str, Optional[str]]] = None,
        backup_label: str = "", scratch_dir: str = "", keep: bool = False, rto_target: Any = None,
        rpo_target: Any = None, checksum_table_names: Iterable[str] = (), queries: Any = None,
        amcheck: bool = True, row_counts: bool = True, wait_timeout: int = 3600, archive_wait_timeout: int = 120,
        labels: Optional[Mapping[str, str]] = None) -> DrillOptions:
    """The drill's options from plain values, every one checked; a Refusal names the first bad one.

    targets maps TARGET_KEYS to their values (mode "target" needs exactly one); queries is the raw list of
    spot checks (None for none); labels maps a key (an option name above, or "mode: target") to the
    front end's spelling of it.
    """
    labels = labels or {}
    if mode not in MODES:
        raise Refusal("%s: %r is not one of %s" % (_label(labels, "mode"), mode, ", ".join(MODES)))
    return DrillOptions(
        tool_path=tool_path, mode=mode, backup_label=backup_label or "",
        target=recovery_target(mode, targets or {}, labels),
        scratch_root=scratch_dir or "", keep=keep,
        rto_target=target_seconds(_label(labels, "rto_target"), rto_target),
        rpo_target=target_seconds(_label(labels, "rpo_target"), rpo_target),
        checksum_tables=checksum_tables(checksum_table_names, _label(labels, "checksum_tables")),
        queries=drill_queries(queries, _label(labels, "queries")) if queries is not None else (),
        amcheck=amcheck, row_counts=row_counts, wait_timeout=wait_timeout,
        archive_wait_seconds=archive_wait_timeout,
    )


def module_drill_options(params: Dict[str, Any]) -> DrillOptions:
    """The options of module restore_drill, its parameters named as the module names them."""
    return build_drill_options(
        tool_path=params["tool_path"], mode=params["mode"], targets={key: params[key] for key in TARGET_KEYS},
        backup_label=params["backup_label"] or "", scratch_dir=params["scratch_dir"] or "", keep=params["keep"],
        rto_target=params["rto_target"], rpo_target=params["rpo_target"],
        checksum_table_names=params["checksum_tables"], queries=params["queries"], amcheck=params["amcheck"],
        row_counts=params["row_counts"], wait_timeout=params["wait_timeout"],
        archive_wait_timeout=params["archive_wait_timeout"])
