from __future__ import annotations

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config, render_config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import WalArchive


@pytest.fixture
def make_config(tmp_path):
    """Write a configuration file and return its loaded Config."""

    def make(compression: str = "zstd", level: int = 3, cluster: str = "main", repo=None) -> Config:
        repo_path = str(repo or tmp_path / "repo")
        path = tmp_path / ("%s-%s.conf" % (cluster, compression))
        path.write_text(render_config(cluster, repo_path, compression_codec=compression, compression_level=level))
        path.chmod(0o600)
        return Config.load(str(path))

    return make


@pytest.fixture
def archive(make_config):
    """A WalArchive over a freshly created posix repository."""
    config = make_config()
    Repository.from_config(config).create()
    return WalArchive(config)
