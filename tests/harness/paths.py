"""Where test artefacts live, and which OS user runs PostgreSQL.

PostgreSQL refuses to run as root, and /root is mode 0700 on our machines, so
everything a cluster (or an archive_command it spawns) touches must sit under a
world-traversable directory. /var/tmp is sticky and world-writable, and unlike
/tmp it is not cleaned while a long test session runs.
"""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

# The OS account that owns throwaway clusters when tests run as root.
SERVER_OS_USER = "postgres"


def running_as_root() -> bool:
    return os.geteuid() == 0


def server_os_user() -> str:
    """The account clusters run as: `postgres` under root, else whoever we are."""
    if running_as_root():
        return SERVER_OS_USER
    return pwd.getpwuid(os.geteuid()).pw_name


def test_root() -> Path:
    """World-traversable root for every throwaway directory (clusters, tool, cache).

    RESTOREKEEPER_TEST_ROOT overrides it; non-root users get a per-uid directory
    so they never collide with a root-owned one.
    """
    override = os.environ.get("RESTOREKEEPER_TEST_ROOT")
    if override:
        root = Path(override)
    elif running_as_root():
        root = Path("/var/tmp/restorekeeper-test")
    else:
        root = Path(tempfile.gettempdir()) / ("restorekeeper-test-%d" % os.geteuid())
    ensure_public_dir(root)
    return root


def ensure_public_dir(path: Path) -> Path:
    """Create `path` (and parents) readable and traversable by every user."""
    path.mkdir(parents=True, exist_ok=True)
    # mkdir honours the umask; the server user must be able to traverse it.
    os.chmod(path, 0o755)
    return path


def session_dir() -> Path:
    """Per-process directory for this pytest run's clusters and scratch files."""
    return ensure_public_dir(test_root() / ("run-%d" % os.getpid()))
