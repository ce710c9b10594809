"""tools/prerequisites.py: one message for everything missing, bindep.txt in step, the venv's home."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bindep.depends import Depends

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "tools" / "prerequisites.py"


def _load():
    spec = importlib.util.spec_from_file_location("prerequisites_tool", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prerequisites = _load()


# What .ci/run needs before make runs at all; bindep.txt lists them under [test] too.
BOOTSTRAP = {"git", "make", "python3"}


def test_bindep_test_profile_is_every_package_make_test_needs():
    # bindep's own evaluation, as `bindep -l newline test` on Debian: the runtime
    # packages (no profile, the ssh client) and the [test] ones.
    depends = Depends((REPO_ROOT / "bindep.txt").read_text())
    listed = {rule[0] for rule in depends.active_rules(["platform:dpkg", "platform:debian", "test"])}
    assert listed - BOOTSTRAP == set(prerequisites.PACKAGES)


def test_one_message_names_every_missing_package_and_the_command():
    message = prerequisites.missing_message(["openssh-server", "sudo", "no-such-package"])
    assert message.count("\n") >= 3
    for name in ("openssh-server", "sudo", "no-such-package"):
        assert name in message
    assert "apt-get install -y --no-install-recommends openssh-server sudo no-such-package" in message


def test_not_root_is_named_with_the_packages():
    message = prerequisites.missing_message(["sudo"], need_root=True)
    assert "must run as root" in message and "sudo" in message.splitlines()[-2]


@pytest.mark.skipif(not os.path.exists("/usr/bin/dpkg-query"), reason="judges packages with dpkg")
def test_check_mode_lists_a_missing_package_and_installs_nothing():
    env = dict(os.environ, RESTOREKEEPER_PREREQUISITES_EXTRA="restorekeeper-no-such-package")
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 1
    assert "restorekeeper-no-such-package" in result.stderr and "installing" not in result.stdout


def test_private_ancestor_finds_the_closed_directory(tmp_path):
    closed = tmp_path / "home"
    checkout = closed / "clone"
    checkout.mkdir(parents=True)
    # tmp_path may itself sit under a closed directory (/tmp/pytest-of-root is 0700).
    outer = prerequisites.private_ancestor(tmp_path)
    os.chmod(closed, 0o700)
    try:
        assert prerequisites.private_ancestor(checkout) == (outer or closed)
        os.chmod(closed, 0o711)
        assert prerequisites.private_ancestor(checkout) == outer
    finally:
        os.chmod(closed, 0o755)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root moves the venv out of a private checkout")
def test_venv_of_a_private_checkout_lives_outside_it_keyed_by_path(tmp_path):
    closed = tmp_path / "private"
    (closed / "a").mkdir(parents=True)
    (closed / "b").mkdir()
    os.chmod(closed, 0o700)
    home_a = prerequisites.venv_home(closed / "a")
    home_b = prerequisites.venv_home(closed / "b")
    assert home_a.parent == prerequisites.PRIVATE_VENV_ROOT and home_a != home_b
    assert home_a == prerequisites.venv_home(closed / "a")  # stable: the same checkout finds its venv again
    os.chmod(closed, 0o755)
    opened = tmp_path / "open"
    opened.mkdir()
    if prerequisites.private_ancestor(opened) is None:
        assert prerequisites.venv_home(opened) == opened / ".venv"
