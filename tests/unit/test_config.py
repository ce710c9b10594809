from __future__ import annotations

import os

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config import Config, render_config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.errors import ConfigError

VALID = "[cluster]\nname = main\n[repository]\npath = /srv/repo\n"


def load(tmp_path, text: str) -> Config:
    path = tmp_path / "rk.conf"
    path.write_text(text)
    return Config.load(str(path))


def test_defaults_apply(tmp_path):
    config = load(tmp_path, VALID)
    assert (config.cluster, config.repository.type, config.repository.path) == ("main", "posix", "/srv/repo")
    assert (config.compression, config.compression_level) == ("zstd", 3)


def test_render_round_trips(tmp_path):
    config = load(tmp_path, render_config("db1", "/srv/r", compression_codec="none", compression_level=0))
    assert (config.cluster, config.repository.path, config.compression) == ("db1", "/srv/r", "none")


@pytest.mark.parametrize(
    "text, message",
    [
        (VALID + "[archive]\ncompresion = zstd\n", "unknown key"),
        (VALID + "[archiv]\n", "unknown section"),
        ("[cluster]\nname = main\n", r"\[repository\] path is required"),
        (VALID + "[archive]\ncompression = lz5\n", "unknown compression"),
        (VALID + "[archive]\ncompression_level = 99\n", "out of range"),
        (VALID + "[archive]\ncompression_level = fast\n", "not an integer"),
        (VALID.replace("main", "../etc"), "not a valid cluster name"),
        ("not an ini file", "cannot be parsed"),
    ],
)
def test_invalid_configuration_is_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Config.load(str(tmp_path / "absent.conf"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "rk.conf"
    path.write_text(VALID)
    path.chmod(0)
    with pytest.raises(ConfigError, match="not readable"):
        Config.load(str(path))


def test_render_refuses_invalid_values():
    with pytest.raises(ConfigError):
        render_config("main", "/srv/r", compression_codec="brotli")


def test_drop_ins_add_copies_and_render_copies_round_trips(tmp_path):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config import render_copies

    main = tmp_path / "main.conf"
    main.write_text(VALID)
    (tmp_path / "main.conf.d").mkdir()
    copies = render_copies([
        {"name": "second", "type": "posix", "path": "/mnt/second", "medium": "disk", "failure_domain": "nas1"},
        {"name": "offsite", "type": "s3", "bucket": "b", "path": "db1", "offsite": True,
         "encryption_key_file": "/etc/restorekeeper/keys"},
    ])
    drop_in = tmp_path / "main.conf.d" / "copies.conf"
    drop_in.write_text(copies)
    config = Config.load(str(main))
    assert [(c.name, c.medium, c.offsite, c.failure_domain) for c in config.copies] == [
        ("offsite", "object-store", True, "s3://b"), ("second", "disk", False, "nas1")]
    assert config.for_source("offsite").repository.options["bucket"] == "b"
    with pytest.raises(ConfigError, match="declares no copy named 'tape'"):
        config.for_source("tape")
    (tmp_path / "main.conf.d" / "more.conf").write_text("[copy second]\ntype = posix\npath = /x\n")
    with pytest.raises(ConfigError, match="declared twice"):
        Config.load(str(main))


@pytest.mark.parametrize(
    "copy, message",
    [
        ({"name": "o", "type": "s3", "bucket": "b", "offsite": True}, "offsite but not encrypted"),
        ({"name": "o", "type": "s3", "bucket": "b", "immutable": True, "encryption_key_file": "/k"}, "no object_lock_mode"),
        ({"name": "o", "type": "posix", "path": "/x", "medium": "floppy"}, "medium 'floppy'"),
        ({"name": "o", "type": "posix", "path": "/x", "colour": "red"}, "unknown key"),
    ],
)
def test_weak_or_wrong_copies_are_refused(copy, message):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config import render_copies

    with pytest.raises(ConfigError, match=message):
        render_copies([copy])


def test_backup_manifest_checksums_is_validated(tmp_path):
    text = render_config("main", str(tmp_path / "repo"))
    assert "manifest_checksums = auto" in text
    path = tmp_path / "c.conf"
    path.write_text(text.replace("manifest_checksums = auto", "manifest_checksums = CRC32C"))
    assert Config.load(str(path)).backup.manifest_checksums == "crc32c"
    path.write_text(text.replace("manifest_checksums = auto", "manifest_checksums = md5"))
    with pytest.raises(ConfigError, match="manifest_checksums 'md5' is not one of auto, sha256, crc32c"):
        Config.load(str(path))
