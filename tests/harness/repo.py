"""Repository + configuration file setups for tests (format of notes/COMMON.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RepoSetup:
    """A repository directory and the 0600 config file that points at it."""

    config_path: Path
    repo_path: Path
    cluster_name: str = "main"


def render_test_config(cluster_name: str, repo_path: Path, compression: str = "zstd", level: int = 3) -> str:
    """Config text for tests, rendered by the engine itself (one format, one place)."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config import render_config

    return render_config(cluster_name, str(repo_path), compression_codec=compression, compression_level=level)
