"""Skips for a missing host prerequisite, which `make test` turns into failures.

A test that cannot run because the machine lacks something (sshd, root, a
PostgreSQL version's binaries...) skips with a reason made by missing(). By
hand that skip is listed with its reason and fix (pytest -ra, and a summary
line at the end); under `make test` and in CI (RESTOREKEEPER_REQUIRE_ALL=1)
tests/integration/conftest.py reports it as a failure, so nothing is left out silently.
"""

from __future__ import annotations

import os

PREFIX = "missing prerequisite: "
REQUIRE_ALL_VARIABLE = "RESTOREKEEPER_REQUIRE_ALL"


def missing(what: str) -> str:
    """A skip reason marking `what` (the problem and its fix) as a missing prerequisite."""
    return PREFIX + what


def is_missing_prerequisite(reason: str) -> bool:
    # pytest prefixes some reasons ("Skipped: ..."), so look inside.
    return PREFIX in reason


def required() -> bool:
    """True under make test and CI: a missing prerequisite must fail, not skip."""
    return os.environ.get(REQUIRE_ALL_VARIABLE, "") not in ("", "0")
