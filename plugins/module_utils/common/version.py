"""The collection's version: the one place the engine reads it.

It must equal ``version`` in galaxy.yml (tests/unit/common/test_version.py
compares them), so `restorekeeper --version` names the release installed.
"""

from __future__ import annotations

import sys

VERSION = "0.1.0"


def version_line(prog: str) -> str:
    """What `PROG --version` prints: the program, its version and the Python running it."""
    return "%s %s (Python %s)" % (prog, VERSION, sys.version.split()[0])
