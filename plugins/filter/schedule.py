# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of role restorekeeper.postgresql.backups: thin wrappers around the engine's schedule module.

The logic (and its unit tests) lives in plugins/module_utils/schedule.py, so
the controller and the on-host tool share one implementation. Documentation:
backup_schedule.yml and oncalendar_to_cron.yml next to this file.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.schedule import (
    calendar_to_cron,
    plan_schedule,
)

_PLAN_KEYS = frozenset((
    "rpo_target", "rto_target", "tier", "database_size_bytes", "wal_rate_mb_per_hour", "replay_rate_mb_s",
    "restore_rate_mb_s", "rto_safety", "server_version_num", "incremental", "full_schedule", "incremental_schedule",
))


def backup_schedule(inputs: Mapping[str, Any]) -> Dict[str, Any]:
    """The schedule plan (with its reasoning) for a dictionary of plan_schedule() arguments."""
    if not isinstance(inputs, Mapping):
        raise AnsibleFilterError("backup_schedule expects a dictionary, not %s" % type(inputs).__name__)
    unknown = sorted(set(inputs) - _PLAN_KEYS)
    if unknown:
        raise AnsibleFilterError("backup_schedule: unknown keys %s; known are %s"
                                 % (", ".join(unknown), ", ".join(sorted(_PLAN_KEYS))))
    try:
        return plan_schedule(**dict(inputs))
    except ValueError as exc:
        raise AnsibleFilterError("backup_schedule: %s" % exc) from None


def oncalendar_to_cron(spec: str) -> str:
    """The five cron time fields of a systemd OnCalendar expression (the subset cron can express)."""
    try:
        return calendar_to_cron(str(spec))
    except ValueError as exc:
        raise AnsibleFilterError("oncalendar_to_cron: %s" % exc) from None


class FilterModule:
    """restorekeeper.postgresql.backup_schedule and restorekeeper.postgresql.oncalendar_to_cron."""

    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"backup_schedule": backup_schedule, "oncalendar_to_cron": oncalendar_to_cron}
