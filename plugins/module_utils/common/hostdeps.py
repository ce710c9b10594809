"""The engine's third-party Python packages, in one table.

The modules (run by the managed host's Python, ansible_python_interpreter)
and the on-host `restorekeeper` command (by default the same interpreter, see
tools/install_tool.py --packages distribution) import these packages lazily,
only for the work that needs them. This module names what is missing, with
the distribution package that provides it, before any work starts: a host
that lacks a package learns it from a preflight, never halfway through a
restore from an error blaming a damaged file.

The collection's dependency files list the same packages: requirements.txt
(pip names, ranges, for execution environments and controllers) and the
`host` profile of bindep.txt (the distribution packages below);
tests/unit/packaging/test_requirements_files.py keeps them in step.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Iterable, List, NamedTuple, Optional, Set, Tuple, Type

from .errors import RestorekeeperError


class Dependency(NamedTuple):
    """One third-party module: how it is imported, why, and where it comes from."""

    import_name: str
    needed_for: str
    pip: str
    debian: Optional[str]  # Debian/Ubuntu package; None: not packaged there
    rhel: Optional[str]  # RHEL family (dnf) package; None: not packaged there
    alternatives: Tuple[str, ...] = ()  # other import names that serve as well
    without: str = ""  # what to do instead where no package provides it


DEPENDENCIES: Tuple[Dependency, ...] = (
    Dependency("psycopg2", "the modules that change server settings, such as wal_archiving, and backups of "
               "clusters with tablespaces without staging", "psycopg2-binary",
               "python3-psycopg2", "python3-psycopg2"),
    Dependency("zstandard", "zstd compression of WAL and backups, the default", "zstandard", "python3-zstandard",
               "python3-zstandard", without="set compression = none"),
    Dependency("crc32c", "CRC-32C backup manifests, manifest_checksums = crc32c or auto", "crc32c",
               "python3-crc32c", None, alternatives=("google_crc32c",),
               without="set [backup] manifest_checksums = sha256"),
    Dependency("cryptography", "encrypted repositories and copies, encryption_key_file", "cryptography",
               "python3-cryptography", "python3-cryptography"),
    Dependency("boto3", "s3 repositories and copies", "boto3", "python3-boto3", "python3-boto3"),
)

_BY_NAME = {dependency.import_name: dependency for dependency in DEPENDENCIES}


def dependency(import_name: str) -> Dependency:
    """The table's entry; a name outside the table gets a plain entry (pip name = import name)."""
    known = _BY_NAME.get(import_name)
    if known is not None:
        return known
    return Dependency(import_name, "", import_name, None, None)


def importable(import_name: str) -> bool:
    """Whether the module can be imported, found without importing it (cheap, no side effects)."""
    try:
        return importlib.util.find_spec(import_name) is not None
    except (ImportError, ValueError):  # a parent package missing, or sys.modules[name] is None
        return False


def missing(import_names: Iterable[str]) -> List[str]:
    """The names among import_names this interpreter cannot import, in table order then the rest."""
    wanted = set(import_names)
    order = [d.import_name for d in DEPENDENCIES if d.import_name in wanted] + sorted(wanted - set(_BY_NAME))
    result = []
    for name in order:
        entry = dependency(name)
        if not any(importable(candidate) for candidate in (entry.import_name,) + entry.alternatives):
            result.append(name)
    return result


def install_hint(import_names: Iterable[str], python: Optional[str] = None) -> str:
    """How to install import_names: the distribution packages, else pip into `python`."""
    entries = [dependency(name) for name in import_names]
    debian = [e.debian for e in entries if e.debian]
    rhel = [e.rhel for e in entries if e.rhel]
    parts = []
    if debian:
        parts.append("on Debian/Ubuntu: apt-get install %s" % " ".join(debian))
    if rhel:
        parts.append("on the RHEL family: dnf install %s" % " ".join(rhel))
    parts.extend("%s is not packaged for the RHEL family" % e.import_name for e in entries if e.debian and not e.rhel)
    parts.extend("%s is not a distribution package" % e.import_name for e in entries if not (e.debian or e.rhel))
    parts.append("in a virtualenv: %s -m pip install %s" % (python or sys.executable, " ".join(e.pip for e in entries)))
    parts.extend("instead of %s: %s" % (e.import_name, e.without) for e in entries if e.without)
    return "; ".join(parts) + " (README, Host prerequisites: the modules and the restorekeeper command use the " \
        "same packages)"


def missing_error(import_names: Iterable[str], purpose: str,
                  error: Type[RestorekeeperError] = RestorekeeperError) -> RestorekeeperError:
    """The error naming every package of import_names, what needs it and the interpreter that lacks it."""
    names = list(import_names)
    described = []
    for name in names:
        entry = dependency(name)
        described.append("%s (for %s)" % (name, entry.needed_for) if entry.needed_for else name)
    message = "%s needs the Python module%s %s, which the Python at %s cannot import" % (
        purpose, "s" if len(names) > 1 else "", ", ".join(described), sys.executable)
    return error(message, install_hint(names))


def require(import_names: Iterable[str], purpose: str,
            error: Type[RestorekeeperError] = RestorekeeperError) -> None:
    """Raise `error` naming every missing package at once; return when all are importable."""
    absent = missing(import_names)
    if absent:
        raise missing_error(absent, purpose, error)


# ------------------------------------------------------ what a configuration needs
def needs_for_compression(codec: str) -> Set[str]:
    return {"zstandard"} if codec == "zstd" else set()


def needs_for_repository(repository_type: str, encryption_key_file: str = "") -> Set[str]:
    """A repository or copy: its backend's client and, when encrypted, the cipher."""
    needs = set()
    if repository_type == "s3":
        needs.add("boto3")
    if encryption_key_file:
        needs.add("cryptography")
    return needs


def needs_for_manifest_checksums(setting: str) -> Set[str]:
    """crc32c is required only when asked for by name: auto falls back to SHA-256 without it."""
    return {"crc32c"} if setting == "crc32c" else set()


def needs_for_config(config: Any) -> Set[str]:
    """What a loaded config.Config needs: compression, repository, copies and manifest checksums."""
    needs = needs_for_compression(config.compression) | needs_for_compression(config.backup.compression)
    needs |= needs_for_manifest_checksums(config.backup.manifest_checksums)
    repositories = [config.repository, config.home()] + [copy.repository for copy in config.copies]
    for repository in repositories:
        needs |= needs_for_repository(repository.type, repository.encryption_key_file)
    return needs
