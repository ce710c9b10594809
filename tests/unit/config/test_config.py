from __future__ import annotations

import os

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config, render_config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError

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
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import render_copies

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
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import render_copies

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


def test_backup_chunk_size_is_a_bounded_size(tmp_path):
    assert load(tmp_path, VALID).backup.chunk_size == 1 << 30
    assert load(tmp_path, VALID + "[backup]\nchunk_size = 256MiB\n").backup.chunk_size == 256 << 20
    for text, message in (("1KiB", "out of range"), ("65GiB", "out of range"), ("lots", "is not a size")):
        with pytest.raises(ConfigError, match=r"\[backup\] chunk_size .*" + message):
            load(tmp_path, VALID + "[backup]\nchunk_size = %s\n" % text)
    rendered = load(tmp_path, render_config("main", "/srv/r", backup=load(tmp_path, VALID + "[backup]\nchunk_size = 2MiB\n")
                                            .backup))
    assert rendered.backup.chunk_size == 2 << 20


S3_COPY = "[copy off]\ntype = s3\nbucket = b\nallow_plaintext = true\n"


def test_inline_comments_are_stripped_only_after_whitespace(tmp_path):
    path = tmp_path / "rk.conf"
    path.touch(mode=0o600)  # it holds a secret
    config = load(tmp_path, VALID.replace("[repository]", "[repository]   # where backups go")
                  + "[archive]\ncompression_level = 5   # why: smaller\nasync = false\t# plain\n"
                  + S3_COPY + "endpoint_url = http://127.0.0.1:9000 # a local store\n"
                  + "secret_access_key = pa#ss;word#\n")
    assert config.compression_level == 5 and config.archive.asynchronous is False
    options = config.copy("off").repository.options
    assert options["endpoint_url"] == "http://127.0.0.1:9000"
    assert options["secret_access_key"] == "pa#ss;word#"  # no whitespace before '#': part of the value


@pytest.mark.parametrize(
    "endpoint, problem",
    [
        ("http://127.0.0.1:notaport", "has a port that is not a number"),
        ("http://127.0.0.1:70000", "has a port that is not a number"),
        ("not a url", "contains whitespace"),
        ("s3.example.net", "does not start with http:// or https://"),
        ("ftp://s3.example.net", "does not start with http:// or https://"),
        ("https://", "names no valid host"),
        ("http://under_score.example", "names no valid host"),
        ("http://[::1", "is not a URL"),
        ("https://key:secret@s3.example.net", "carries credentials"),
    ],
)
def test_invalid_endpoint_url_names_key_section_and_file(tmp_path, endpoint, problem):
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, VALID + S3_COPY + "endpoint_url = %s\n" % endpoint)
    text = str(raised.value)
    shown = endpoint.replace("key:secret@", "***@")  # a password in the URL never reaches a message
    assert "%s: [copy off] endpoint_url %r %s" % (tmp_path / "rk.conf", shown, problem) in text, text
    assert "HINT: write it as http(s)://HOST[:PORT]" in text and "key:secret" not in text


@pytest.mark.parametrize("endpoint", ["https://s3.eu-west-1.amazonaws.com", "http://127.0.0.1:9000",
                                      "http://[::1]:9000/", "https://minio.example.net./prefix"])
def test_valid_endpoint_urls_load(tmp_path, endpoint):
    config = load(tmp_path, VALID + S3_COPY + "endpoint_url = %s\n" % endpoint)
    assert config.copy("off").repository.options["endpoint_url"] == endpoint


def test_invalid_endpoint_url_of_the_repository_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"\[repository\] endpoint_url 'http://h:x'"):
        load(tmp_path, "[cluster]\nname = main\n[repository]\ntype = s3\nbucket = b\nendpoint_url = http://h:x\n")


def test_rendering_refuses_a_value_a_comment_would_cut():
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import render_copies

    with pytest.raises(ConfigError, match=r"\[copy o\] failure_domain 'rack #3' contains ' #'"):
        render_copies([{"name": "o", "type": "posix", "path": "/x", "failure_domain": "rack #3"}])
    assert "failure_domain = rack#3" in render_copies([{"name": "o", "type": "posix", "path": "/x",
                                                        "failure_domain": "rack#3"}])


def test_s3_client_construction_errors_are_storage_errors():
    """Settings that bypass the configuration (a module's options) still end in a clear error."""
    pytest.importorskip("boto3")
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import s3 as storage_s3
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import StorageError

    with pytest.raises(StorageError, match=r"endpoint_url 'http://h:x' has a port"):
        storage_s3.settings_from_options("p", {"bucket": "b", "endpoint_url": "http://h:x"})
    with pytest.raises(StorageError, match="cannot set up the S3 client for s3://b/: Invalid endpoint: not a url"):
        storage_s3.S3Storage(storage_s3.S3Settings(bucket="b", endpoint_url="not a url"))
    with pytest.raises(StorageError, match="cannot set up the S3 session .*could not be found"):
        storage_s3.S3Storage(storage_s3.S3Settings(bucket="b", profile="restorekeeper-no-such-profile"))


@pytest.mark.parametrize("command", [["info", "--source", "off"], ["ship", "--once"], ["wal-list", "--source", "off"]])
def test_cli_reports_a_bad_endpoint_url_in_one_line(tmp_path, capsys, command):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends import cli

    path = tmp_path / "rk.conf"
    path.write_text(VALID + S3_COPY + "endpoint_url = http://127.0.0.1:notaport\n")
    assert cli.main(command + ["--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected" not in err and len(err.splitlines()) == 1, err
    assert "[copy off] endpoint_url 'http://127.0.0.1:notaport' has a port that is not a number" in err
