"""A synthetic local repository with a small retention policy, for the engine's unit tests."""

from __future__ import annotations

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository


def synthetic_repository(tmp_path, extra: str = ""):
    """(config, storage) of a new repository under tmp_path/repo for cluster main, [retention] full = 1
    plus the extra configuration lines given."""
    path = tmp_path / "rk.conf"
    path.write_text("[cluster]\nname = main\n[repository]\npath = %s\n[retention]\nfull = 1\n%s"
                    % (tmp_path / "repo", extra))
    config = Config.load(str(path))
    repository = Repository.from_config(config)
    repository.create()
    return config, repository.storage
