"""Run commands as the server OS user (argument lists only, never a shell)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .paths import running_as_root

StrPath = Union[str, Path]

# Passed to every child so locale and user environment of the test runner
# (pyenv shims under /root, PYTHON* variables) never leak into the server.
_BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


def user_env(os_user: str, extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """A minimal, predictable environment for commands run as `os_user`."""
    entry = pwd.getpwnam(os_user)
    env = {
        "PATH": _BASE_PATH,
        "HOME": entry.pw_dir,
        "USER": os_user,
        "LOGNAME": os_user,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }
    if extra:
        env.update(extra)
    return env


def _identity_kwargs(os_user: str) -> dict[str, Any]:
    """subprocess arguments that drop root privileges to `os_user`."""
    if not running_as_root() or os_user == "root":
        return {}
    entry = pwd.getpwnam(os_user)
    groups = [g.gr_gid for g in grp.getgrall() if os_user in g.gr_mem]
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups}


def _prepare(
    os_user: str, argv: Sequence[StrPath], kwargs: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    args = [os.fspath(a) for a in argv]
    kwargs = dict(kwargs)
    env = kwargs.pop("env", None)
    extra_env = kwargs.pop("extra_env", None)
    if env is None:
        env = user_env(os_user, extra_env)
    elif extra_env:
        env = {**env, **extra_env}
    kwargs["env"] = env
    # A cwd the user cannot enter makes some tools warn or fail; default to /.
    kwargs.setdefault("cwd", "/")
    kwargs.update(_identity_kwargs(os_user))
    return args, kwargs


def run_as(os_user: str, argv: Sequence[StrPath], **kwargs: Any) -> subprocess.CompletedProcess:
    """subprocess.run as `os_user`; captures text output unless told otherwise.

    Extra keyword `extra_env` adds variables to the minimal default environment.
    """
    args, kwargs = _prepare(os_user, argv, kwargs)
    if "stdout" not in kwargs and "stderr" not in kwargs:
        kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    check = kwargs.pop("check", False)
    return subprocess.run(args, check=check, **kwargs)


def popen_as(os_user: str, argv: Sequence[StrPath], **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen as `os_user` (for tests that signal the child)."""
    args, kwargs = _prepare(os_user, argv, kwargs)
    return subprocess.Popen(args, **kwargs)


def can_execute(os_user: str, path: StrPath) -> bool:
    """Whether `os_user` can really execute `path` (checks every parent directory)."""
    test_bin = shutil.which("test", path=_BASE_PATH) or "/usr/bin/test"
    return run_as(os_user, [test_bin, "-x", os.fspath(path)]).returncode == 0


def chown_to(path: StrPath, os_user: str) -> None:
    """Give `path` to `os_user` (no-op when we are not root)."""
    if not running_as_root():
        return
    entry = pwd.getpwnam(os_user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def make_user_dir(path: Path, os_user: str, mode: int = 0o700) -> Path:
    """Create a directory owned by `os_user` with exactly `mode`."""
    path.mkdir(parents=True, exist_ok=True)
    chown_to(path, os_user)
    os.chmod(path, mode)
    return path
