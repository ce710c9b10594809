"""The storage contract, run against every backend: posix on disk, s3 over
real HTTP against moto's server through boto3, and ssh to a second host (a
network namespace running sshd, see test_storage_ssh.py)."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import s3 as storage_s3
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import (
    ConfigError,
    LockBusy,
    ObjectExists,
    ObjectNotFound,
    StorageError,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.objectformat import sha256_hex
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.factory import open_storage
from harness.s3 import make_bucket


def s3_options(endpoint, bucket: str, **extra: str) -> dict:
    options = {"bucket": bucket, "endpoint_url": endpoint.url, "region": "us-east-1", "path_style": "true",
               "access_key_id": endpoint.access_key_id, "secret_access_key": endpoint.secret_access_key}
    options.update(extra)
    return options


@pytest.fixture(params=["posix", "s3", "ssh"])
def storage(request, tmp_path):
    if request.param == "posix":
        store = open_storage("posix", str(tmp_path / "repo"))
    elif request.param == "ssh":
        host, tool = request.getfixturevalue("ssh_host"), request.getfixturevalue("tool")
        store = open_storage("ssh", str(host.new_root()), host.options(tool.bin))
        request.addfinalizer(store.close)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        store = open_storage("s3", "cluster-prefix", s3_options(endpoint, make_bucket(endpoint)))
    store.ensure_root()
    return store


def test_put_get_stat_list_delete(storage):
    info = storage.put_bytes("main/wal/0000000100000000/a", b"alpha")
    assert info.size == 5 and info.sha256 == sha256_hex(b"alpha")
    storage.put_bytes("main/wal/0000000100000000/b", b"beta")
    storage.put_bytes("main/backup/x/backup.json", b"{}")
    assert [i.key for i in storage.list("main/wal/")] == ["main/wal/0000000100000000/a", "main/wal/0000000100000000/b"]
    assert storage.stat("main/wal/0000000100000000/a").size == 5
    assert storage.get_bytes("main/wal/0000000100000000/b") == b"beta"
    assert storage.read_prefix("main/wal/0000000100000000/a", 3) == b"alp"
    storage.delete("main/wal/0000000100000000/a")
    storage.delete("main/wal/0000000100000000/a")
    assert storage.stat("main/wal/0000000100000000/a") is None and not storage.exists("main/wal/0000000100000000/a")
    with pytest.raises(ObjectNotFound):
        storage.get_bytes("main/wal/0000000100000000/a")


def test_never_overwrites_unless_asked(storage):
    storage.put_bytes("k", b"first")
    with pytest.raises(ObjectExists):
        storage.put_bytes("k", b"second")
    assert storage.get_bytes("k") == b"first"
    storage.put_bytes("k", b"third", overwrite=True)
    assert storage.get_bytes("k") == b"third"


def test_aborted_write_leaves_nothing(storage):
    with pytest.raises(RuntimeError):
        with storage.writer("half") as writer:
            writer.write(b"x" * 1000)
            raise RuntimeError("producer died")
    assert not storage.exists("half") and list(storage.list("")) == []


def test_lock_refuses_a_second_holder(storage):
    with storage.lock("main/backup.lock", "first holder"):
        with pytest.raises(LockBusy, match="held by first holder"):
            with storage.lock("main/backup.lock", "second holder"):
                pass
    with storage.lock("main/backup.lock", "third holder"):
        pass


def test_s3_multipart_upload_round_trips(s3_endpoint, monkeypatch):
    monkeypatch.setattr(storage_s3, "PART_SIZE", 5 * 1024 * 1024)  # S3's smallest part
    store = open_storage("s3", "", s3_options(s3_endpoint, make_bucket(s3_endpoint)))
    data = os.urandom(12 * 1024 * 1024 + 17)
    with store.writer("big") as writer:
        for offset in range(0, len(data), 1024 * 1024):
            writer.write(data[offset:offset + 1024 * 1024])
    assert store.get_bytes("big") == data
    assert store.stat("big").sha256 == sha256_hex(data)
    with pytest.raises(ObjectExists):
        store.put_bytes("big", b"small")


def test_s3_object_lock_refuses_deletion(s3_endpoint):
    store = open_storage("s3", "", s3_options(s3_endpoint, make_bucket(s3_endpoint, lock=True),
                                              object_lock_mode="compliance", object_lock_days="3"))
    store.put_bytes("main/wal/0000000100000000/000000010000000000000001", b"immutable")
    with pytest.raises(StorageError, match="under Object Lock until"):
        store.delete("main/wal/0000000100000000/000000010000000000000001")
    assert store.get_bytes("main/wal/0000000100000000/000000010000000000000001") == b"immutable"


def test_s3_retention_is_only_extended_and_a_legal_hold_refuses_deletion(s3_endpoint):
    import datetime

    store = open_storage("s3", "", s3_options(s3_endpoint, make_bucket(s3_endpoint, lock=True),
                                              object_lock_mode="governance", object_lock_days="1"))
    key = "main/backup/F1/backup.json"
    store.put_bytes(key, b"{}")
    written = store.lock_state(key)
    assert store.supports_object_lock() and store.object_lock_mode() == "GOVERNANCE"
    assert written.retained_until is not None and not written.legal_hold
    later = written.retained_until + datetime.timedelta(days=30)
    assert store.extend_retention(key, later) and store.lock_state(key).retained_until == later
    assert not store.extend_retention(key, written.retained_until)  # never shortened
    assert store.lock_state(key).retained_until == later
    assert store.set_legal_hold(key, True) and not store.set_legal_hold(key, True)
    with pytest.raises(StorageError, match="under an Object Lock legal hold"):
        store.delete(key)
    assert store.lock_state(key).legal_hold and store.set_legal_hold(key, False)
    assert not store.lock_state(key).legal_hold and store.get_bytes(key) == b"{}"
    with pytest.raises(ObjectNotFound):
        store.set_legal_hold("main/backup/F1/absent", True)


def test_s3_errors_are_named(s3_endpoint):
    store = open_storage("s3", "", s3_options(s3_endpoint, "no-such-bucket-here"))
    with pytest.raises(StorageError, match="bucket no-such-bucket-here does not exist") as caught:
        store.check_ready()
    assert "restorekeeper never creates buckets" in str(caught.value)
    unreachable = open_storage("s3", "", s3_options(s3_endpoint, "x", endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(StorageError, match="cannot reach") as caught:
        unreachable.check_ready()
    assert s3_endpoint.secret_access_key not in str(caught.value)


def test_config_with_a_secret_must_be_private(tmp_path, s3_endpoint):
    path = tmp_path / "s3.conf"
    path.write_text("[cluster]\nname = main\n[repository]\ntype = s3\nbucket = b\nendpoint_url = %s\n"
                    "access_key_id = k\nsecret_access_key = %s\n" % (s3_endpoint.url, s3_endpoint.secret_access_key))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="holds a secret but is readable by others") as caught:
        Config.load(str(path))
    assert s3_endpoint.secret_access_key not in str(caught.value)
    path.chmod(0o600)
    config = Config.load(str(path))
    assert config.repository.type == "s3" and config.repository.options["bucket"] == "b"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_s3_keys_are_refused_on_a_posix_repository(tmp_path):
    path = tmp_path / "p.conf"
    path.write_text("[cluster]\nname = main\n[repository]\npath = /srv/r\nbucket = b\n")
    with pytest.raises(ConfigError, match="only apply to type s3"):
        Config.load(str(path))


DISTRIBUTION_S3_PROBE = r"""
import io, json, sys
sys.path.insert(0, sys.argv[1])
import botocore
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ObjectExists
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.factory import open_storage
store = open_storage("s3", "distribution", json.loads(sys.argv[2]))
store.ensure_root()
store.put_bytes("wal/one", b"first")
try:
    store.put_bytes("wal/one", b"second")
    refused = False
except ObjectExists:
    refused = True
print(json.dumps({"botocore": botocore.__version__, "refused": refused, "kept": store.get_bytes("wal/one").decode()}))
"""


def test_s3_with_the_distributions_boto3(s3_endpoint, collection_root, tmp_path):
    """The system Python with Debian's older boto3 (what modules and the
    on-host command use on a host): writes work, and one that would overwrite
    is refused by the store (If-None-Match, sent as a header where botocore
    predates the parameter)."""
    import json
    import subprocess

    from harness.ansible import host_python

    options = s3_options(s3_endpoint, make_bucket(s3_endpoint))
    result = subprocess.run([host_python(), "-c", DISTRIBUTION_S3_PROBE, str(collection_root.parent),
                             json.dumps(options)], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["refused"] is True and outcome["kept"] == "first", outcome
