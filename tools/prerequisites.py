"""Host prerequisites of `make test`: check them, and install them as root on Debian.

    python3 tools/prerequisites.py            check; as root with apt-get, install what is missing
                                              (make test needs root: not root is reported too)
    python3 tools/prerequisites.py --check    check only: list what is missing, never install
    python3 tools/prerequisites.py PACKAGE... the same for these packages only (root not required)
    python3 tools/prerequisites.py --venv-home CHECKOUT
                                              print where the checkout's virtualenv must live

Exit 0 when everything is present (then it costs one dpkg-query, no apt-get
update), 1 with ONE message naming every missing prerequisite and the command
that installs it. Installing never starts a system service: a temporary
/usr/sbin/policy-rc.d refuses every start while apt-get runs.

RESTOREKEEPER_PREREQUISITES_EXTRA="pkg ..." adds Debian packages to the list
(to see the message on a machine that has everything).

Standard library only: it runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# Debian package -> why make test needs it (the message says so). bindep.txt's
# [test] profile lists the same on Debian (`bindep -l newline test`), besides
# git, make and python3, which come before make does.
PACKAGES: Dict[str, str] = {
    "openssh-server": "sshd of the ssh storage tests' and molecule fleet's hosts",
    "openssh-client": "ssh and ssh-keygen for the same",
    "iproute2": "ip: network namespaces of those hosts",
    "sudo": "Ansible becomes the server's user with sudo (molecule)",
    "postgresql-15": "PostgreSQL 15 server, the oldest version the tests cover",
    "postgresql-common": "pg_createcluster/pg_ctlcluster: tests on Debian's cluster layout",
    "python3-venv": "python3 -m venv for .venv and the on-host tool",
    # The system /usr/bin/python3 is the managed host's interpreter in tests:
    # it needs the packages the modules import there.
    "python3-psycopg2": "modules on a managed host talk to PostgreSQL",
    "python3-zstandard": "modules on a managed host compress (zstd)",
    "python3-crc32c": "modules on a managed host verify backup manifests",
    "python3-cryptography": "modules on a managed host encrypt copies",
    "python3-boto3": "modules on a managed host use S3 copies",
}
EXTRA_VARIABLE = "RESTOREKEEPER_PREREQUISITES_EXTRA"

# Without dpkg (another distribution) each package is judged by what it provides.
_PROGRAMS: Dict[str, Tuple[str, ...]] = {
    "openssh-server": ("/usr/sbin/sshd",),
    "openssh-client": ("ssh", "ssh-keygen"),
    "iproute2": ("ip",),
    "sudo": ("sudo",),
    "postgresql-15": ("/usr/lib/postgresql/15/bin/postgres",),
    "postgresql-common": ("pg_createcluster", "pg_ctlcluster"),
}
_MODULES: Dict[str, str] = {
    "python3-venv": "ensurepip",
    "python3-psycopg2": "psycopg2",
    "python3-zstandard": "zstandard",
    "python3-crc32c": "crc32c",
    "python3-cryptography": "cryptography",
    "python3-boto3": "boto3",
}
HOST_PYTHON = "/usr/bin/python3"
POLICY_RC = Path("/usr/sbin/policy-rc.d")
# World-readable, root-only-writable home of the virtualenvs of private checkouts.
PRIVATE_VENV_ROOT = Path("/var/cache/restorekeeper")


def required_packages() -> List[str]:
    return list(PACKAGES) + os.environ.get(EXTRA_VARIABLE, "").split()


def _dpkg_missing(packages: Sequence[str]) -> List[str]:
    """Packages dpkg does not list as installed (one dpkg-query for all)."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *packages],
        capture_output=True, text=True, check=False,
    )
    installed = {line.split()[0] for line in result.stdout.splitlines() if line.split()[1:2] == ["ii"]}
    return [name for name in packages if name not in installed]


def _provided(package: str) -> bool:
    """Without dpkg: does the machine have what the package would provide?"""
    if package in _PROGRAMS:
        return all(os.access(p, os.X_OK) if p.startswith("/") else shutil.which(p) for p in _PROGRAMS[package])
    if package in _MODULES:
        python = HOST_PYTHON if os.access(HOST_PYTHON, os.X_OK) else sys.executable
        probe = subprocess.run([python, "-c", "import " + _MODULES[package]], capture_output=True, check=False)
        return probe.returncode == 0
    return False


def missing_packages(packages: Sequence[str]) -> List[str]:
    if shutil.which("dpkg-query"):
        return _dpkg_missing(packages)
    return [name for name in packages if not _provided(name)]


def _can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _package_lists_present() -> bool:
    return bool(glob.glob("/var/lib/apt/lists/*_Packages*"))


def _apt_install(packages: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, capture_output=True, text=True, check=False,
    )


def _apt_update() -> None:
    print("prerequisites: apt-get update", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)


def install(packages: Sequence[str]) -> Optional[str]:
    """apt-get install, with one apt-get update when the lists are empty or the
    install fails; no service starts meanwhile. Returns apt's error, or None."""
    print("prerequisites: installing %s" % " ".join(packages), flush=True)
    made_policy = False
    if not POLICY_RC.exists():
        # Exit 101 = "action forbidden": package scripts start no service.
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC.chmod(0o755)
        made_policy = True
    try:
        if not _package_lists_present():
            _apt_update()
        result = _apt_install(packages)
        if result.returncode != 0:
            _apt_update()
            result = _apt_install(packages)
    finally:
        if made_policy:
            POLICY_RC.unlink()
    if result.returncode != 0:
        return (result.stderr or result.stdout).strip()[-2000:]
    return None


def missing_message(missing: Sequence[str], error: Optional[str] = None, need_root: bool = False) -> str:
    """The one message naming every missing prerequisite and what to run."""
    lines = []
    if need_root:
        lines.append("prerequisites: make test must run as root: the ssh tests and molecule make network namespaces "
                     "with their own sshd and run clusters as the `postgres` user (as this user, `make lint sanity "
                     "units` need no root).")
    if missing:
        width = max(len(name) for name in missing)
        lines.append("prerequisites: %d package%s missing:" % (len(missing), " is" if len(missing) == 1 else "s are"))
        lines += ["  %-*s  %s" % (width, name, PACKAGES.get(name, "(from %s)" % EXTRA_VARIABLE)) for name in missing]
    command = "apt-get install -y --no-install-recommends " + " ".join(missing)
    if error:
        lines += ["apt-get failed:", "  " + error.replace("\n", "\n  "), "HINT: fix the above, then run: " + command]
    elif missing and not shutil.which("apt-get"):
        lines.append("HINT: this is not a Debian-family system: install your distribution's equivalents of the "
                     "packages above (PostgreSQL 15 binaries in /usr/lib/postgresql/15/bin or "
                     "RESTOREKEEPER_PG15_BINDIR), then run make test again.")
    elif missing:
        sudo = "" if os.geteuid() == 0 else "sudo "
        lines.append("HINT: `%smake test` installs them itself (never starting a system service); or install them "
                     "first: %s%s" % (sudo, sudo, command))
    else:
        lines.append("HINT: sudo make test")
    return "\n".join(lines)


def ensure(check_only: bool, packages: Sequence[str] = ()) -> int:
    """Check (and install) `packages`, or everything make test needs, root included."""
    missing = missing_packages(packages or required_packages())
    need_root = not packages and os.geteuid() != 0
    if not missing and not need_root:
        return 0
    if check_only or not _can_install():
        print(missing_message(missing, need_root=need_root), file=sys.stderr)
        return 1
    error = install(missing)
    still = missing_packages(missing)
    if error or still:
        print(missing_message(still or missing, error or "installed, yet dpkg still lacks them"), file=sys.stderr)
        return 1
    print("prerequisites: installed %s" % " ".join(missing))
    return 0


# ----------------------------------------------------------------- venv home
def private_ancestor(path: Path) -> Optional[Path]:
    """The first directory on the way to `path` (itself included) that other
    users cannot traverse, or None when every one lets them through."""
    for directory in [*reversed(path.parents), path]:
        try:
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                return directory
        except OSError:
            return directory
    return None


def venv_home(checkout: Path) -> Path:
    """Where the checkout's virtualenv must live.

    As root, tests run servers, archive commands and modules as `postgres`
    with the venv's python. In a checkout `postgres` cannot reach (a root or
    user home of mode 0700) the venv therefore lives outside it, in a
    world-readable directory keyed by the checkout path (.venv links there);
    otherwise it is .venv itself.
    """
    checkout = checkout.resolve()
    if os.geteuid() != 0 or private_ancestor(checkout) is None:
        return checkout / ".venv"
    key = hashlib.sha256(str(checkout).encode()).hexdigest()[:10]
    return PRIVATE_VENV_ROOT / ("venv-%s-%s" % (checkout.name, key))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Check (and as root on Debian install) make test's prerequisites.")
    parser.add_argument("--check", action="store_true", help="only check and list what is missing")
    parser.add_argument("packages", nargs="*", metavar="PACKAGE",
                        help="only these Debian packages (e.g. python3-venv for make venv), not make test's list")
    parser.add_argument("--venv-home", metavar="CHECKOUT", type=Path,
                        help="print where CHECKOUT's virtualenv must live, and exit")
    args = parser.parse_args(argv)
    if args.venv_home is not None:
        print(venv_home(args.venv_home))
        return 0
    return ensure(args.check, args.packages)


if __name__ == "__main__":
    sys.exit(main())
