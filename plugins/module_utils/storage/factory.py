"""Which backend serves a repository type: the one place that knows every backend.

Apart from the interface (base.py), which no backend's import reaches back to.
Each backend is imported only when a repository of its type is opened, so the
archive command's per-segment start-up loads only what it uses. The imports
are written out, not computed, because Ansible packs a module's engine files
by reading its imports. A new backend is a module of this package implementing
base.Storage, plus one branch here and its name in BACKENDS.
"""

from __future__ import annotations

from typing import Dict, Optional

from ..common.errors import StorageError
from .base import Storage

BACKENDS = ("posix", "s3", "ssh")


def open_storage(backend: str, location: str, options: Optional[Dict[str, str]] = None) -> Storage:
    """Create the backend for a repository of type backend."""
    if backend == "posix":
        from .posix import PosixStorage

        return PosixStorage(location)
    if backend == "s3":
        from .s3 import S3Storage, settings_from_options

        return S3Storage(settings_from_options(location, options or {}))
    if backend == "ssh":
        from .ssh import SshStorage, settings_from_options as ssh_settings

        return SshStorage(ssh_settings(location, options or {}))
    raise StorageError(
        "unknown repository type %r" % backend,
        "set [repository] type to one of: %s" % ", ".join(BACKENDS),
    )
