"""One drill request: from the plain values a front end collects to the DrillOptions the drill takes.

Module restore_drill and the command ``restorekeeper drill`` both build their
options here, so both refuse the same bad input - an unknown or misplaced
recovery target, an unreadable time, a checksum table not written
DATABASE:SCHEMA.TABLE, a spot check without name, sql or expected, or two
spot checks of one name (the report keys its checks by name), an unknown
verification, a sample percent outside (0, 100], a size that is not one,
tables to count exactly where nothing is sampled - before anything is done. Messages name the option as the front end spells it
(``labels``), so each user reads their own option names.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from ..common.errors import ConfigError, Refusal, RestorekeeperError
from ..common.timefmt import parse_duration
from ..config.config import parse_size
from ..pg.recovery import build_target
from .drill import (DEFAULT_EXACT_COUNT_MAX_BYTES, DEFAULT_EXACT_VERIFY_MAX_BYTES, MODES, VERIFY_MODES, DrillOptions,
                    DrillQuery, query_from_dict)

TARGET_KEYS = ("target_time", "target_xid", "target_lsn", "target_name")


def _label(labels: Mapping[str, str], key: str) -> str:
    return labels.get(key, key)


def target_seconds(label: str, value: Any) -> Optional[float]:
    """An RTO or RPO target in seconds (a number, or a string with a unit; 500ms is 0.5), or None when not
    given."""
    if value is None or value == "":
        return None
    try:
        return float(parse_duration(value))
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


def size_bytes(label: str, value: Any, default: int) -> int:
    """A size option (bytes as a number, or text such as 10GiB, 512MiB); default when not given."""
    if value is None or value == "":
        return default
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    try:
        return parse_size(str(value))
    except ValueError as exc:
        raise Refusal("%s: %s" % (label, exc)) from None


def sample_percent(label: str, value: Any) -> float:
    """The TABLESAMPLE SYSTEM percent: a number above 0, at most 100."""
    try:
        percent = float(value)
    except (TypeError, ValueError):
        raise Refusal("%s: %r is not a number" % (label, value), "give a percent such as 1 or 0.1") from None
    if not 0 < percent <= 100:
        raise Refusal("%s: %s is outside (0, 100]" % (label, value), "give a percent such as 1 or 0.1")
    return percent


def verification(verify: str, count_table_names: Iterable[str], labels: Mapping[str, str]) -> Tuple[str, ...]:
    """Check the verification and return the tables to count exactly (only where tables are sampled)."""
    if verify not in VERIFY_MODES:
        raise Refusal("%s: %r is not one of %s" % (_label(labels, "verify"), verify, ", ".join(VERIFY_MODES)))
    tables = checksum_tables(count_table_names, _label(labels, "count_tables"))
    if tables and verify in ("exact", "catalog"):
        raise Refusal("%s: verify %s samples no table, so there is nothing to count exactly instead"
                      % (_label(labels, "count_tables"), verify),
                      "use them with verify sample or auto, or drop them")
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
        verify: str = "auto", sample_percent_value: Any = 1.0, count_table_names: Iterable[str] = (),
        exact_verify_max_size: Any = None, exact_count_max_size: Any = None,
        labels: Optional[Mapping[str, str]] = None) -> DrillOptions:
    """The drill's options from plain values, every one checked; a Refusal names the first bad one.

    targets maps TARGET_KEYS to their values (mode "target" needs exactly one); queries is the raw list of
    spot checks (None for none); labels maps a key (an option name above, or "mode: target") to the
    front end's spelling of it. verify chooses how the data is compared (see restore/drill.py):
    sample_percent_value, count_table_names and exact_count_max_size shape verify sample,
    exact_verify_max_size is where auto changes from exact to sample.
    """
    labels = labels or {}
    if mode not in MODES:
        raise Refusal("%s: %r is not one of %s" % (_label(labels, "mode"), mode, ", ".join(MODES)))
    count_tables = verification(verify, count_table_names, labels)
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
        verify=verify, sample_percent=sample_percent(_label(labels, "sample_percent"), sample_percent_value),
        count_tables=count_tables,
        exact_verify_max_bytes=size_bytes(_label(labels, "exact_verify_max_size"), exact_verify_max_size,
                                          DEFAULT_EXACT_VERIFY_MAX_BYTES),
        exact_count_max_bytes=size_bytes(_label(labels, "exact_count_max_size"), exact_count_max_size,
                                         DEFAULT_EXACT_COUNT_MAX_BYTES),
    )


def module_drill_options(params: Dict[str, Any]) -> DrillOptions:
    """The options of module restore_drill, its parameters named as the module names them."""
    return build_drill_options(
        tool_path=params["tool_path"], mode=params["mode"], targets={key: params[key] for key in TARGET_KEYS},
        backup_label=params["backup_label"] or "", scratch_dir=params["scratch_dir"] or "", keep=params["keep"],
        rto_target=params["rto_target"], rpo_target=params["rpo_target"],
        checksum_table_names=params["checksum_tables"], queries=params["queries"], amcheck=params["amcheck"],
        row_counts=params["row_counts"], wait_timeout=params["wait_timeout"],
        archive_wait_timeout=params["archive_wait_timeout"], verify=params.get("verify") or "auto",
        sample_percent_value=params.get("sample_percent", 1.0), count_table_names=params.get("count_tables") or (),
        exact_verify_max_size=params.get("exact_verify_max_size"),
        exact_count_max_size=params.get("exact_count_max_size"))
