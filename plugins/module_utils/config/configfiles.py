"""Which files make up a configuration, and what proves they did not change.

Kept apart from config.py, and free of imports beyond os, because the
archive command's quick path (pushmarker.py) needs both at the cost of a few
system calls, without the parser.
"""

from __future__ import annotations

import os


def drop_in_paths(path: str) -> list[str]:
    """The drop-ins <path>.d/*.conf in the order they are read (name order).
    Raises OSError when the directory exists but cannot be listed."""
    directory = path + ".d"
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(".conf") and not name.startswith("."))
    except FileNotFoundError:
        return []
    return [os.path.join(directory, name) for name in names]


def file_identity(path: str) -> list[int]:
    """What proves a file unchanged without reading it: the same inode on the
    same device, with the same size, mtime and ctime. Any write changes mtime
    and ctime (ctime cannot be set from user space), and a replaced file has
    another inode or ctime. Raises OSError when the file cannot be examined."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def sources_identity(path: str) -> list[list[int]]:
    """The identity of a configuration as read: the main file, the drop-in
    directory (a drop-in added or removed changes it) and every drop-in. Take
    it before parsing, so a change made meanwhile shows as a difference."""
    identity = [file_identity(path)]
    try:
        identity.append(file_identity(path + ".d"))
    except FileNotFoundError:
        return identity
    identity.extend(file_identity(drop_in) for drop_in in drop_in_paths(path))
    return identity
