"""Whether another OS user (for example the PostgreSQL server's) can read or run a path.

os.access answers for the calling user only; a module running as root must
know whether the server's OS user gets through every directory on the way
(the /root 0700 trap) and may read or execute the file. Mode bits only, not
ACLs: a clear refusal now beats WAL piling up later.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import List, Optional

READ = 4
EXECUTE = 1


def group_ids_of(uid: int) -> List[int]:
    """The user's primary and supplementary groups (empty for an unknown uid)."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return []
    gids = {entry.pw_gid}
    gids.update(group.gr_gid for group in grp.getgrall() if entry.pw_name in group.gr_mem)
    return sorted(gids)


def permits(st: os.stat_result, uid: int, gids: List[int], want: int) -> bool:
    """Whether the mode bits of st grant uid (with gids) every bit of want (READ, EXECUTE or both)."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in gids:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & want == want


def access_problem(path: str, uid: int, want: int) -> Optional[str]:
    """Why uid cannot read (READ) or execute (EXECUTE) path after following symbolic links, or None."""
    gids = group_ids_of(uid)
    real = os.path.realpath(path)
    walk = "/"
    for part in [p for p in os.path.dirname(real).split("/") if p]:
        walk = os.path.join(walk, part)
        if not permits(os.stat(walk), uid, gids, EXECUTE):
            return "directory %s is not searchable by uid %d" % (walk, uid)
    if not permits(os.stat(real), uid, gids, want):
        return "%s is not %s by uid %d" % (real, "executable" if want == EXECUTE else "readable", uid)
    return None
