"""The on-host configuration file of one PostgreSQL cluster.

An INI file, mode 0600, owned by the server's OS user, for example::

    [cluster]
    name = main

    [repository]
    type = posix
    path = /var/lib/restorekeeper/repository

    [archive]
    compression = zstd
    compression_level = 3

The archive_command names only this file, so nothing secret (later: S3 keys,
encryption keys) ever appears in pg_settings or in the process list.
"""

from __future__ import annotations

import configparser
import re
from typing import Dict, NamedTuple

from . import compression
from .errors import ConfigError

DEFAULT_PATH = "/etc/restorekeeper/restorekeeper.conf"
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_KNOWN = {
    "cluster": {"name"},
    "repository": {"type", "path"},
    "archive": {"compression", "compression_level"},
}


class RepositoryConfig(NamedTuple):
    type: str
    path: str


class Config(NamedTuple):
    path: str
    cluster: str
    repository: RepositoryConfig
    compression: str
    compression_level: int

    @classmethod
    def load(cls, path: str) -> "Config":
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except FileNotFoundError:
            raise ConfigError(
                "configuration file %s does not exist" % path,
                "deploy it with the restorekeeper.postgresql.archiving role or pass --config",
            ) from None
        except PermissionError:
            raise ConfigError(
                "configuration file %s is not readable by this OS user" % path,
                "it must be owned by the PostgreSQL server's OS user, mode 0600",
            ) from None
        except (OSError, UnicodeDecodeError, configparser.Error) as exc:
            raise ConfigError("configuration file %s cannot be parsed: %s" % (path, exc)) from None
        return cls.from_sections(path, {name: dict(parser[name]) for name in parser.sections()})

    @classmethod
    def from_sections(cls, path: str, sections: Dict[str, Dict[str, str]]) -> "Config":
        _reject_unknown(path, sections)

        def get(section: str, key: str, default: str = "") -> str:
            value = sections.get(section, {}).get(key, default).strip()
            if not value:
                raise ConfigError("%s: [%s] %s is required" % (path, section, key))
            return value

        name = get("cluster", "name")
        if not _CLUSTER_NAME.match(name):
            raise ConfigError(
                "%s: [cluster] name %r is not a valid cluster name" % (path, name),
                "use letters, digits, '.', '_' or '-' (at most 63 characters)",
            )
        codec = get("archive", "compression", compression.DEFAULT_CODEC)
        level_text = get("archive", "compression_level", str(compression.DEFAULT_LEVEL))
        try:
            level = int(level_text)
        except ValueError:
            raise ConfigError("%s: [archive] compression_level %r is not an integer" % (path, level_text)) from None
        compression.validate(codec, level)
        repository = RepositoryConfig(get("repository", "type", "posix"), get("repository", "path"))
        return cls(path, name, repository, codec, level)


def _reject_unknown(path: str, sections: Dict[str, Dict[str, str]]) -> None:
    """A misspelt key must not silently fall back to a default."""
    for section, values in sections.items():
        if section not in _KNOWN:
            raise ConfigError("%s: unknown section [%s]" % (path, section), "known sections: %s" % ", ".join(sorted(_KNOWN)))
        unknown = set(values) - _KNOWN[section]
        if unknown:
            raise ConfigError(
                "%s: unknown key(s) %s in [%s]" % (path, ", ".join(sorted(unknown)), section),
                "known keys: %s" % ", ".join(sorted(_KNOWN[section])),
            )


def render_config(cluster: str, repository_path: str, repository_type: str = "posix",
                  compression_codec: str = compression.DEFAULT_CODEC,
                  compression_level: int = compression.DEFAULT_LEVEL) -> str:
    """The text of a configuration file; validated by parsing it back."""
    text = (
        "# restorekeeper configuration (managed by restorekeeper.postgresql)\n"
        "[cluster]\nname = %s\n\n"
        "[repository]\ntype = %s\npath = %s\n\n"
        "[archive]\ncompression = %s\ncompression_level = %d\n"
    ) % (cluster, repository_type, repository_path, compression_codec, compression_level)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    Config.from_sections("<rendered>", {name: dict(parser[name]) for name in parser.sections()})
    return text
