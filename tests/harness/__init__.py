"""Real-PostgreSQL test harness: throwaway clusters, the on-host tool, helpers."""

from .binaries import available_versions, bindir
from .cluster import PgCluster, allocate_port
from .paths import server_os_user, session_dir, test_root
from .repo import RepoSetup, render_test_config
from .runas import make_user_dir, popen_as, run_as
from .tool import InstalledTool, install_tool
from .wait import WaitTimeout, wait_until

__all__ = [
    "InstalledTool",
    "PgCluster",
    "RepoSetup",
    "WaitTimeout",
    "allocate_port",
    "available_versions",
    "bindir",
    "install_tool",
    "make_user_dir",
    "popen_as",
    "render_test_config",
    "run_as",
    "server_os_user",
    "session_dir",
    "test_root",
    "wait_until",
]
