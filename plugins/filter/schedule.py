# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of role restorekeeper.postgresql.backups: thin wrappers around the engine's schedule module.

The logic (and its unit tests) lives in plugins/module_utils/objectives/schedule.py, so
the controller and the on-host tool share one implementation. Documentation:
backup_schedule.yml and oncalendar_to_cron.yml next to this file.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.schedule import (
    calendar_to_cron,
    plan_schedule,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.targets import derive_archiving, derive_drill

_PLAN_KEYS = frozenset((
    "rpo_target", "rto_target", "tier", "database_size_bytes", "wal_rate_mb_per_hour", "replay_rate_mb_s",
    "restore_rate_mb_s", "rto_safety", "server_version_num", "incremental", "full_schedule", "incremental_schedule",
    "measured_replay_rate_mb_s", "measured_restore_rate_mb_s", "measured_wal_rate_mb_per_hour", "measured_drills",
))
_ARCHIVING_KEYS = frozenset(("tier", "rpo_target", "archive_timeout"))
_DRILL_KEYS = frozenset(("tier", "rpo_target", "rto_target"))


def _call(name: str, function: Callable[..., Dict[str, Any]], keys: frozenset, inputs: Mapping[str, Any]) -> Dict[str, Any]:
    """Check the dictionary's keys, call the engine, turn its ValueError into a filter error."""
    if not isinstance(inputs, Mapping):
        raise AnsibleFilterError("%s expects a dictionary, not %s" % (name, type(inputs).__name__))
    unknown = sorted(set(inputs) - keys)
    if unknown:
        raise AnsibleFilterError("%s: unknown keys %s; known are %s" % (name, ", ".join(unknown), ", ".join(sorted(keys))))
    try:
        return function(**dict(inputs))
    except ValueError as exc:
        raise AnsibleFilterError("%s: %s" % (name, exc)) from None


def backup_schedule(inputs: Mapping[str, Any]) -> Dict[str, Any]:
    """The schedule plan (with its reasoning) for a dictionary of plan_schedule() arguments."""
    return _call("backup_schedule", plan_schedule, _PLAN_KEYS, inputs)


def archiving_plan(inputs: Mapping[str, Any]) -> Dict[str, Any]:
    """archive_timeout from the RPO target or tier (an explicit one wins when it meets the RPO), with the reasoning."""
    return _call("archiving_plan", derive_archiving, _ARCHIVING_KEYS, inputs)


def drill_plan(inputs: Mapping[str, Any]) -> Dict[str, Any]:
    """Drill targets and the drill schedule from the tier or RTO, with the reasoning."""
    return _call("drill_plan", derive_drill, _DRILL_KEYS, inputs)


def oncalendar_to_cron(spec: str) -> str:
    """The five cron time fields of a systemd OnCalendar expression (the subset cron can express)."""
    try:
        return calendar_to_cron(str(spec))
    except ValueError as exc:
        raise AnsibleFilterError("oncalendar_to_cron: %s" % exc) from None


class FilterModule:
    """restorekeeper.postgresql.backup_schedule, archiving_plan, drill_plan and oncalendar_to_cron."""

    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"backup_schedule": backup_schedule, "archiving_plan": archiving_plan, "drill_plan": drill_plan,
                "oncalendar_to_cron": oncalendar_to_cron}
