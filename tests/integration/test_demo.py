"""`make demo KEEP=1` (tools/demo.py --keep), run as a user runs it: every step passes, no figure
prints Python's None, the report lands under .build/demo, the printed commands work on the kept
servers, and the stop script leaves nothing behind (issue 17, item 6)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from harness.tool import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DEMO_BUILD = REPO_ROOT / ".build" / "demo"
STOP_SCRIPT = DEMO_BUILD / "stop-demo.sh"
NONE_WORD = re.compile(r"\bNone\b")


def printed_command(output: str, after: str) -> str:
    """The indented command line the demo prints under the line that starts with `after`."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith(after):
            return lines[index + 1].strip()
    raise AssertionError("the demo printed no %r line:\n%s" % (after, output))


def test_demo_keep_explore_and_stop(ansible_env) -> None:
    demo = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "demo.py"), "--keep"], env=dict(ansible_env),
                          capture_output=True, text=True, timeout=1200, check=False)
    output = demo.stdout + demo.stderr
    base = None
    try:
        assert demo.returncode == 0 and "every step passed" in demo.stdout, output
        assert not NONE_WORD.search(output), [line for line in output.splitlines() if NONE_WORD.search(line)]
        report = DEMO_BUILD / "reports" / "latest.html"
        assert report.exists(), output
        assert not NONE_WORD.search(report.read_text(encoding="utf-8"))
        assert STOP_SCRIPT.exists()

        # What the demo tells the user to type works on the servers it kept.
        for heading, expected in (("What can be restored", "restorable"),
                                  ("The demo's servers keep running", "count")):
            command = printed_command(demo.stdout, heading)
            ran = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120, check=False)
            assert ran.returncode == 0 and expected in ran.stdout, (command, ran.stdout, ran.stderr)
        match = re.search(r"The drill's report \(.*\): (\S+)", demo.stdout)
        assert match and Path(match.group(1)) == report, demo.stdout
        removed = [shlex.split(line)[2] for line in STOP_SCRIPT.read_text().splitlines() if line.startswith("rm -rf ")]
        assert len(removed) == 1, STOP_SCRIPT.read_text()
        base = Path(removed[0])
        assert base.is_dir() and list(base.glob("*/data/postmaster.pid")), STOP_SCRIPT.read_text()
    finally:
        if STOP_SCRIPT.exists():
            stopped = subprocess.run(["sh", str(STOP_SCRIPT)], capture_output=True, text=True, timeout=300,
                                     check=False)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not STOP_SCRIPT.exists() and base is not None and not base.exists()
