"""Repository + configuration file setups for tests (format of notes/COMMON.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .cluster import PgCluster


@dataclass(frozen=True)
class RepoSetup:
    """A repository directory and the 0600 config file that points at it."""

    config_path: Path
    repo_path: Path
    cluster_name: str = "main"


def render_test_config(cluster_name: str, repo_path: Path, compression: str = "zstd", level: int = 3,
                       server: Optional["PgCluster"] = None) -> str:
    """Config text for tests, rendered by the engine itself (one format, one place).
    With server, the [postgres] section points restorekeeper's own tools at it."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import PostgresConfig, render_config

    postgres = PostgresConfig()
    if server is not None:
        postgres = PostgresConfig(bindir=str(server.bindir), host=str(server.socket_dir), port=server.port,
                                  user=server.superuser, database="postgres")
    return render_config(cluster_name, str(repo_path), compression_codec=compression, compression_level=level,
                         postgres=postgres)
