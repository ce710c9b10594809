"""Offline stand-in for the get-pip.py bootstrap script that ansible-test downloads.

ansible-test (2.19) creates each sanity virtualenv without pip, then runs its
cached ``~/.ansible/test/cache/get_pip_<version>.py`` as ``__main__`` with pip
options and package specs in ``sys.argv``, e.g.::

    --disable-pip-version-check pip==24.2 --no-setuptools --no-wheel

That script normally comes from a host we cannot reach. This replacement does
the same job with what the interpreter already ships: the stdlib ``ensurepip``
puts a pip into the environment, and that pip installs the requested packages
(pip itself at the pinned version) from the package index.

``make sanity`` copies this file to the cache path; see tools/run_sanity.py.
"""

from __future__ import annotations

import ensurepip
import importlib.util
import subprocess
import sys

# get-pip.py understands these; pip itself does not, so they are consumed here.
GET_PIP_ONLY_FLAGS = frozenset({"--no-setuptools", "--no-wheel", "--no-pip"})


def split_arguments(argv: list[str]) -> tuple[list[str], list[str], set[str]]:
    """Split argv into (pip options, package specs, get-pip-only flags seen)."""
    options: list[str] = []
    packages: list[str] = []
    flags: set[str] = set()
    for argument in argv:
        if argument in GET_PIP_ONLY_FLAGS:
            flags.add(argument)
        elif argument.startswith("-"):
            options.append(argument)
        else:
            packages.append(argument)
    return options, packages, flags


def module_present(name: str) -> bool:
    """Tell whether a top-level module can be imported by this interpreter."""
    return importlib.util.find_spec(name) is not None


def bootstrap_pip() -> bool:
    """Install the interpreter's bundled pip if pip is missing.

    Returns True when setuptools was absent before, so a --no-setuptools
    request can remove what ensurepip (Python 3.11 bundles it) brought along.
    """
    setuptools_was_absent = not module_present("setuptools")
    if not module_present("pip"):
        ensurepip.bootstrap(upgrade=False, default_pip=True)
    return setuptools_was_absent


def run_pip(arguments: list[str]) -> int:
    """Run pip in a child process so the freshly installed pip is the one imported."""
    completed = subprocess.run([sys.executable, "-m", "pip", *arguments], check=False)
    return completed.returncode


def main(argv: list[str]) -> int:
    """Bootstrap pip, install the requested packages, honour get-pip flags."""
    options, packages, flags = split_arguments(argv)
    setuptools_was_absent = bootstrap_pip()
    if packages:
        status = run_pip(["install", *options, *packages])
        if status != 0:
            return status
    if "--no-setuptools" in flags and setuptools_was_absent:
        # pip only warns when setuptools is not installed, so no need to probe first.
        return run_pip(["uninstall", "--yes", *options, "setuptools"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
