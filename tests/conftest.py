"""What every test needs: the engine importable as Ansible imports it, and `import harness`.

Import path: the repository root IS the collection restorekeeper.postgresql, so
we expose it as <repo>/.build/collections/ansible_collections/restorekeeper/postgresql
(a symlink) and put <repo>/.build/collections on sys.path. Tests then import
the engine exactly as Ansible would:

    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import WalArchive

Nothing here needs psycopg2 or a server (the unit tests run without both):
PostgreSQL clusters, the installed tool and the other integration fixtures are
in tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_COLLECTIONS = REPO_ROOT / ".build" / "collections"
COLLECTION_LINK = BUILD_COLLECTIONS / "ansible_collections" / "restorekeeper" / "postgresql"


def _link_collection() -> None:
    """Create the collection symlink (atomically: parallel sessions may race)."""
    COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
    if COLLECTION_LINK.is_symlink() and COLLECTION_LINK.resolve() == REPO_ROOT:
        return
    temp = COLLECTION_LINK.with_name(".postgresql.%d" % os.getpid())
    if temp.is_symlink():
        temp.unlink()
    # Relative, like `make collection`, so the checkout stays relocatable.
    os.symlink(os.path.relpath(REPO_ROOT, COLLECTION_LINK.parent), temp)
    os.replace(temp, COLLECTION_LINK)


_link_collection()
if str(BUILD_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(BUILD_COLLECTIONS))
# The harness lives in tests/; make `import harness` work from any test module.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def collection_root() -> Path:
    """The `ansible_collections` directory holding restorekeeper/postgresql (-> repo root)."""
    _link_collection()
    return COLLECTION_LINK.parent.parent
