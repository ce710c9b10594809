"""Run `ansible-test sanity` on a real copy of the collection, offline-safe.

Why a copy: ansible-test locates the collection from os.getcwd(), which
resolves symlinks, so running it through the .build/collections symlink would
see the repository path instead of .../ansible_collections/restorekeeper/postgresql.
We copy the git-tracked plus untracked-but-not-ignored files (what a commit
would contain) into .build/sanity/ansible_collections/restorekeeper/postgresql.

Why a pip bootstrap: each sanity virtualenv is created without pip and
ansible-test fetches get-pip.py from a host we cannot reach; we place our own
tools/get_pip_offline.py at the cache path it looks at first.

Usage: .venv/bin/python tools/run_sanity.py [extra ansible-test sanity args]
Must run with the project's venv interpreter (it imports ansible_test).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

PYTHON_VERSION = "3.11"
NAMESPACE = "restorekeeper"
COLLECTION = "postgresql"
REPO_ROOT = Path(__file__).resolve().parent.parent
SANITY_ROOT = REPO_ROOT / ".build" / "sanity"
# Directories never copied even when git is unavailable to tell us what is ignored.
FALLBACK_EXCLUDES = frozenset({".git", ".venv", ".build", "__pycache__", ".pytest_cache", "output"})


def fail(message: str, hint: str) -> None:
    """Stop with a message that says what broke and how to fix it."""
    print(f"run_sanity: ERROR: {message}. HINT: {hint}", file=sys.stderr)
    sys.exit(2)


def pip_bootstrap_version() -> str:
    """Ask ansible-test which pip version its get-pip cache file is named after."""
    from ansible_test._internal.python_requirements import get_venv_packages  # pylint: disable=import-outside-toplevel

    # get_venv_packages only reads `.version` from its PythonConfig argument.
    return get_venv_packages(SimpleNamespace(version=PYTHON_VERSION))["pip"]


def install_pip_bootstrap() -> Path:
    """Place tools/get_pip_offline.py where ansible-test expects its cached get-pip.py."""
    version = pip_bootstrap_version()
    cache_path = Path.home() / ".ansible" / "test" / "cache" / f"get_pip_{version.replace('.', '_')}.py"
    source = REPO_ROOT / "tools" / "get_pip_offline.py"
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    if not cache_path.exists() or not filecmp.cmp(source, cache_path, shallow=False):
        shutil.copyfile(source, cache_path)
    return cache_path


def git_listed_files() -> list[str] | None:
    """Tracked + untracked-not-ignored files, or None when this is not a git checkout."""
    if not (REPO_ROOT / ".git").exists() or shutil.which("git") is None:
        return None
    completed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    )
    names = {name for name in completed.stdout.decode().split("\0") if name}
    return sorted(names)


def walked_files() -> list[str]:
    """Every file below the repository minus build and VCS directories."""
    names: list[str] = []
    for directory, subdirs, files in os.walk(REPO_ROOT):
        subdirs[:] = [name for name in subdirs if name not in FALLBACK_EXCLUDES]
        for name in files:
            names.append(str(Path(directory, name).relative_to(REPO_ROOT)))
    return sorted(names)


def copy_tree(names: list[str], destination: Path) -> None:
    """Recreate destination holding exactly the listed files (symlinks stay symlinks)."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for name in names:
        source = REPO_ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # tracked but deleted in the work tree: a commit would not have it
        if source.is_dir() and not source.is_symlink():
            continue  # a nested repository or submodule entry; nothing to copy
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def make_own_git_root(destination: Path) -> None:
    """Give the copy its own (empty) git repository.

    ansible-test walks up from the collection to the nearest .git and asks git
    for the file list; without this it would find the work tree's repository,
    where .build/ is ignored, and skip every target. With an empty repository
    git lists the copied files as untracked, filtered by the copied .gitignore.
    """
    if shutil.which("git") is None:
        return  # no git anywhere: ansible-test falls back to walking the directory
    subprocess.run(["git", "init", "--quiet", str(destination)], check=True)


def refuse_ignore_files(names: list[str]) -> None:
    """Sanity must pass on its merits: ignore files are not allowed in this project."""
    ignores = [name for name in names if name.startswith("tests/sanity/ignore-")]
    if ignores:
        fail(f"sanity ignore files present: {', '.join(ignores)}", "fix the findings instead of ignoring them")


def main(argv: list[str]) -> int:
    """Copy the collection, install the pip bootstrap, run ansible-test sanity."""
    names = git_listed_files()
    if names is None:
        names = walked_files()
    refuse_ignore_files(names)
    destination = SANITY_ROOT / "ansible_collections" / NAMESPACE / COLLECTION
    copy_tree(names, destination)
    make_own_git_root(destination)
    cache_path = install_pip_bootstrap()
    print(f"run_sanity: {len(names)} files copied to {destination}; pip bootstrap at {cache_path}", flush=True)

    ansible_test = Path(sys.executable).parent / "ansible-test"
    if not ansible_test.exists():
        fail(f"{ansible_test} not found", "run `make venv` first")
    command = [str(ansible_test), "sanity", "--venv", "--python", PYTHON_VERSION, "--requirements", "--color", "no", *argv]
    print("run_sanity: " + " ".join(command), flush=True)
    return subprocess.run(command, cwd=destination, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
