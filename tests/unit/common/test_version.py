"""The engine's version is galaxy.yml's: `restorekeeper --version` names the release installed."""

from __future__ import annotations

from pathlib import Path

import yaml

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.version import VERSION, version_line

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_the_version_is_galaxy_yml_s():
    galaxy = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    assert VERSION == str(galaxy["version"])


def test_the_version_line_names_the_program_the_version_and_the_python():
    line = version_line("restorekeeper")
    assert line.startswith("restorekeeper %s (Python 3." % VERSION) and line.endswith(")")
