"""The on-host `restorekeeper` command, installed once per session for tests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .paths import ensure_public_dir, test_root

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALLER = REPO_ROOT / "tools" / "install_tool.py"


@dataclass(frozen=True)
class InstalledTool:
    """An on-host install: `prefix`, `bin` (the launcher), `python` (the interpreter the launcher runs:
    the venv's with packages="pip", the host's own with packages="distribution")."""

    prefix: Path
    bin: Path
    python: Path


def default_prefix() -> Path:
    """A prefix under the world-readable test root, one per checkout.

    Keyed by the checkout path so parallel checkouts never share an engine copy,
    while repeated sessions of one checkout reuse the venv (no pip run).
    """
    key = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:10]
    return ensure_public_dir(test_root() / "tools") / ("tool-%s" % key)


def install_tool(prefix: Path | None = None, packages: str = "pip", python: str | None = None) -> InstalledTool:
    """Run tools/install_tool.py (idempotent) and describe the result.

    The session's tool stays in pip mode (a venv with the pins, reused across
    sessions): the tests then need no distribution packages of the machine.
    tests/integration/test_hostdeps.py installs the default, distribution mode.
    """
    prefix = prefix or default_prefix()
    argv = [sys.executable, str(INSTALLER), "--prefix", str(prefix), "--packages", packages]
    if python:
        argv += ["--python", python]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            "tools/install_tool.py failed (exit %d)\n%s\n%s" % (result.returncode, result.stdout, result.stderr)
        )
    launcher = prefix / "bin" / "restorekeeper"
    interpreter = prefix / "bin" / "python" if packages == "pip" else Path(python or "/usr/bin/python3")
    return InstalledTool(prefix=prefix, bin=launcher, python=interpreter)
