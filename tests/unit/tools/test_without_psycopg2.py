"""tools/without_psycopg2: the unit tests run as on a host without psycopg2 (make units).

The second test is the proof when the unit tests run by hand, with psycopg2
installed: every unit test module is collected in a child pytest that cannot
import psycopg2, so a unit test (or an engine file it imports) that needs it at
import time fails here. Tests that need psycopg2 belong in tests/integration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
STAND_IN_DIR = REPO_ROOT / "tools" / "without_psycopg2"


def _without_psycopg2_env() -> dict[str, str]:
    """This environment with the stand-in first on PYTHONPATH, as the Makefile's units target sets it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STAND_IN_DIR), env.get("PYTHONPATH")]))
    return env


def test_the_stand_in_makes_psycopg2_unimportable():
    for module in ("psycopg2", "psycopg2.extensions"):
        result = subprocess.run([sys.executable, "-c", "import %s" % module], env=_without_psycopg2_env(),
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 1, (module, result.stderr)
        assert "ImportError" in result.stderr and "tools/without_psycopg2" in result.stderr


def test_every_unit_test_module_is_collected_without_psycopg2():
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             str(REPO_ROOT / "tests" / "unit")],
                            cwd=REPO_ROOT, env=_without_psycopg2_env(), capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " collected" in result.stdout
