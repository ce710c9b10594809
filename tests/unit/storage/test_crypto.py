"""Encrypted objects are bound to their name and repository (issue 14,
findings 6-8): an object moved, copied over another or brought in from
another repository sharing the key is refused; each object has its own
HKDF subkey from a salt in its header; objects written before (RKE1) stay
readable; a key file repeating an id is refused."""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import crypto, objectformat
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.crypto import (
    EncryptedStorage,
    Keyring,
    decrypt_bytes,
    encrypt_bytes,
    object_subkey,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import (
    ConfigError,
    CorruptObject,
    StorageError,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import MARKER_KEY, Repository
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.marker import repository_identifier
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.transfer import copy_object
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage

KEY = bytes(range(32))
# Written by the code before issue 14 (RKE1, key id 2026-05, KEY): a repository
# marker and a backup record. They must stay readable.
LEGACY_MARKER_PLAIN = b'{\n  "created": "2026-05-01T00:00:00Z",\n  "format": 1\n}\n'
LEGACY_MARKER = base64.b64decode(
    "UktFMQcyMDI2LTA1jZlA/SZh9yMAAABHHrb4PEY52252Hy4IxxhhEKH/d7VK0PVgRbQFcXxu7g7wY1gme/C/+ZaKECfeyrFE227nG3NQ+bmm3Ebd"
    "VsFbXvUF+i+Cvg8=")
LEGACY_RECORD_PLAIN = b'{"label": "20260501-000000F", "type": "full"}\n'
LEGACY_RECORD = base64.b64decode(
    "UktFMQcyMDI2LTA1NbyARcRfRHgAAAA+/eQrMBYuSY6aAs9ybZwIy6Fep2ABNqecIdcKGTOBga8wvR8UAHRL683r2AWlFNibVAEzYR6wnGEbkQs+"
    "lM4=")
OLDER = "main/backup/20260501-000000F/backup.json"
NEWER = "main/backup/20260502-000000F/backup.json"


def write_key_file(path: Path, *lines: str) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    path.chmod(0o600)
    return str(path)


def key_line(key_id: str, key: bytes = KEY) -> str:
    return "%s %s" % (key_id, base64.b64encode(key).decode())


@pytest.fixture
def keyring(tmp_path) -> Keyring:
    return Keyring.load(write_key_file(tmp_path / "keys", key_line("2026-05")))


def encrypted_repository(root: Path, keyring: Keyring, create: bool = True):
    """(plain backend, encrypted view) of a repository at root, initialised when asked."""
    inner = PosixStorage(str(root))
    inner.ensure_root()
    storage = EncryptedStorage(inner, keyring)
    if create:
        Repository(storage).create()
    return inner, storage


def legacy_encrypt(key_id: str, key: bytes, data: bytes, chunk: int = crypto.CHUNK) -> bytes:
    """The RKE1 writer as it was before issue 14 (random 8-byte nonce prefix, the key used directly)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher, prefix = AESGCM(key), os.urandom(8)
    header = b"RKE1" + bytes([len(key_id)]) + key_id.encode() + prefix
    out, pieces = [header], [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
    for index, piece in enumerate(pieces):
        aad = header + struct.pack(">IB", index, 1 if index == len(pieces) - 1 else 0)
        sealed = cipher.encrypt(prefix + struct.pack(">I", index), piece, aad)
        out.append(struct.pack(">I", len(sealed)) + sealed)
    return b"".join(out)


# -- finding 8: duplicate key ids


def test_a_key_file_repeating_a_key_id_is_refused_naming_the_id_and_the_fix(tmp_path):
    path = write_key_file(tmp_path / "keys", "# rotation gone wrong", key_line("2026-11", b"n" * 32),
                          key_line("2026-05"), key_line("2026-11", b"o" * 32))
    with pytest.raises(ConfigError) as caught:
        Keyring.load(path)
    message = str(caught.value)
    assert "line 4 repeats key id '2026-11' (first on line 2)" in message
    assert "NEW id" in caught.value.hint


# -- finding 6: names and repositories are bound


def test_an_older_record_copied_over_a_newer_one_is_refused(tmp_path, keyring):
    inner, storage = encrypted_repository(tmp_path / "repo", keyring)
    storage.put_bytes(OLDER, b'{"label": "20260501-000000F"}')
    storage.put_bytes(NEWER, b'{"label": "20260502-000000F"}')
    # Someone with write access to the storage replaces the newer record's ciphertext.
    inner.put_bytes(NEWER, inner.get_bytes(OLDER), overwrite=True)
    with pytest.raises(CorruptObject) as caught:
        storage.get_bytes(NEWER)
    assert "20260502-000000F/backup.json holds the encrypted object written as %r" % OLDER in str(caught.value)
    assert "moved or copied here" in str(caught.value)
    assert storage.get_bytes(OLDER) == b'{"label": "20260501-000000F"}'  # the original is untouched


def test_a_moved_object_with_its_header_name_forged_still_fails_authentication(tmp_path, keyring):
    inner, storage = encrypted_repository(tmp_path / "repo", keyring)
    storage.put_bytes(OLDER, b"older")
    blob = inner.get_bytes(OLDER)
    assert OLDER.encode() in blob and len(OLDER) == len(NEWER)
    inner.put_bytes(NEWER, blob.replace(OLDER.encode(), NEWER.encode()))  # the name in the header edited
    with pytest.raises(CorruptObject, match="cannot be decrypted with key '2026-05'"):
        storage.get_bytes(NEWER)


def test_a_renamed_wal_object_is_refused_by_the_encryption_itself(tmp_path, keyring):
    inner, storage = encrypted_repository(tmp_path / "repo", keyring)
    first, second = "main/wal/0000000100000000/000000010000000000000001", \
        "main/wal/0000000100000000/000000010000000000000002"
    storage.put_bytes(first, objectformat.encode(first.rsplit("/", 1)[1], b"wal" * 100, "none", 0))
    os.rename(inner.local_path(first), os.path.join(str(tmp_path / "repo"), second))
    with pytest.raises(CorruptObject, match="written as '%s'" % first):
        storage.read_prefix(second, objectformat.HEADER_READ_SIZE)
    partial = "main/wal-partial/000000010000000000000003.partial"
    storage.put_bytes(partial, b"partial segment")
    shutil.copyfile(inner.local_path(partial), os.path.join(str(tmp_path / "repo"), "main/wal-partial/x.partial"))
    with pytest.raises(CorruptObject, match="moved or copied here"):
        storage.get_bytes("main/wal-partial/x.partial")


def test_an_object_from_another_repository_sharing_the_key_is_refused(tmp_path, keyring):
    inner_a, storage_a = encrypted_repository(tmp_path / "a", keyring)
    inner_b, storage_b = encrypted_repository(tmp_path / "b", keyring)
    assert storage_a.repository_id() != storage_b.repository_id()
    storage_a.put_bytes(OLDER, b"from a")
    inner_b.put_bytes(OLDER, inner_a.get_bytes(OLDER))
    with pytest.raises(CorruptObject) as caught:
        storage_b.get_bytes(OLDER)
    assert "cannot be decrypted" in str(caught.value) and "another repository" in str(caught.value)


def test_copies_share_the_repository_id_whether_shipped_or_copied_raw(tmp_path, keyring):
    _inner, repo = encrypted_repository(tmp_path / "repo", keyring)
    repo.put_bytes("main/cluster.json", b'{"system_identifier": "1"}')
    repo.put_bytes(OLDER, b"record")
    # Shipped: decrypted and re-encrypted by restorekeeper ship, marker first.
    _copy_inner, copy = encrypted_repository(tmp_path / "copy", keyring, create=False)
    for key in (MARKER_KEY, "main/cluster.json", OLDER):
        copy_object(repo, copy, key)
    assert copy.repository_id() == repo.repository_id()
    assert copy.get_bytes(OLDER) == b"record"
    # Copied byte for byte (rsync, bucket replication): the ciphertext decrypts there too.
    shutil.copytree(tmp_path / "repo", tmp_path / "raw")
    raw = EncryptedStorage(PosixStorage(str(tmp_path / "raw")), keyring)
    assert raw.get_bytes(OLDER) == b"record" and raw.get_bytes("main/cluster.json") == b'{"system_identifier": "1"}'


def test_writing_to_an_encrypted_storage_without_its_marker_is_refused_and_leaves_nothing(tmp_path, keyring):
    inner, storage = encrypted_repository(tmp_path / "repo", keyring, create=False)
    with pytest.raises(StorageError, match="no restorekeeper.repo marker") as caught:
        storage.put_bytes("main/cluster.json", b"{}")
    assert "repo-create" in caught.value.hint
    assert list(inner.list("")) == []


def test_a_new_marker_holds_a_random_id_that_is_the_repository_id(tmp_path, keyring):
    inner, storage = encrypted_repository(tmp_path / "repo", keyring)
    marker = json.loads(storage.get_bytes(MARKER_KEY))
    assert len(marker["id"]) == 32 and storage.repository_id() == marker["id"]
    assert inner.get_bytes(MARKER_KEY).startswith(b"RKE2")
    Repository(storage).require_initialised()
    assert Repository(storage).create() is False  # the marker is read (format check) and never rewritten


# -- finding 7: a subkey per object from a salt in the header


def test_the_header_carries_a_salt_and_no_two_objects_share_a_subkey(keyring):
    first = encrypt_bytes(keyring, b"same", "k", "repo")
    second = encrypt_bytes(keyring, b"same", "k", "repo")
    header = 4 + 1 + len("2026-05")
    assert first[:header] == second[:header] == b"RKE2\x072026-05"
    salts = first[header:header + crypto.SALT], second[header:header + crypto.SALT]
    assert salts[0] != salts[1] and len(set(salts)) == 2
    assert first[header + crypto.SALT:header + crypto.SALT + 3] == b"\x00\x01k"  # then the object key
    assert first != second
    subkeys = {object_subkey(KEY, salt, "2026-05", "repo", "k") for salt in salts}
    assert len(subkeys) == 2 and KEY not in subkeys
    # The same salt under another name, repository or key id gives another subkey too.
    salt = salts[0]
    assert len({object_subkey(KEY, salt, "2026-05", "repo", "k"), object_subkey(KEY, salt, "2026-05", "repo", "l"),
                object_subkey(KEY, salt, "2026-05", "other", "k"), object_subkey(KEY, salt, "2026-06", "repo", "k")}) == 4
    assert decrypt_bytes(keyring, first, "k", "repo") == b"same"


def test_chunks_of_a_bound_object_still_cannot_be_dropped_or_reordered(keyring):
    data = os.urandom(crypto.CHUNK * 2 + 10)
    blob = encrypt_bytes(keyring, data, "big", "repo")
    assert decrypt_bytes(keyring, blob, "big", "repo") == data
    header = 4 + 1 + 7 + crypto.SALT + 2 + 3
    chunks, offset = [], header
    while offset < len(blob):
        size = struct.unpack(">I", blob[offset:offset + 4])[0]
        chunks.append(blob[offset:offset + 4 + size])
        offset += 4 + size
    assert len(chunks) == 3
    for tampered in (blob[:header] + b"".join(chunks[:2]), blob[:header] + chunks[1] + chunks[0] + chunks[2]):
        with pytest.raises(CorruptObject, match="cannot be decrypted"):
            decrypt_bytes(keyring, tampered, "big", "repo")


# -- existing objects stay readable


def test_objects_written_before_binding_still_decrypt(tmp_path, keyring):
    inner, storage = encrypted_repository(tmp_path / "repo", keyring, create=False)
    inner.put_bytes(MARKER_KEY, LEGACY_MARKER)
    inner.put_bytes(OLDER, LEGACY_RECORD)
    assert storage.get_bytes(OLDER) == LEGACY_RECORD_PLAIN
    assert storage.get_bytes(MARKER_KEY) == LEGACY_MARKER_PLAIN
    Repository(storage).require_initialised()
    # New objects in that repository are bound to the id derived from its old marker.
    assert storage.repository_id() == repository_identifier(LEGACY_MARKER_PLAIN)
    assert storage.repository_id().startswith("sha256:")
    storage.put_bytes(NEWER, b"new record")
    assert inner.get_bytes(NEWER).startswith(b"RKE2")
    assert EncryptedStorage(PosixStorage(str(tmp_path / "repo")), keyring).get_bytes(NEWER) == b"new record"


def test_a_multi_chunk_object_of_the_old_format_still_decrypts(keyring):
    data = os.urandom(crypto.CHUNK + 5)
    assert decrypt_bytes(keyring, legacy_encrypt("2026-05", KEY, data), "any/name", "any") == data
    assert decrypt_bytes(keyring, legacy_encrypt("2026-05", KEY, b""), "k", "r") == b""


def test_an_unknown_header_is_refused(keyring):
    with pytest.raises(CorruptObject, match="no RKE2 or RKE1 header"):
        decrypt_bytes(keyring, b"RKO1\x00\x00\x00\x02{}", "k", "r")


class PrefixedWriterKeys(PosixStorage):
    """A backend whose writers name objects with its own prefix, as s3's do (bucket path + key)."""

    def writer(self, key, overwrite=False):
        writer = super().writer(key, overwrite)
        writer.key = "db1/" + key
        return writer


def test_objects_are_bound_to_the_repository_key_not_the_backends_own_name(tmp_path, keyring):
    inner = PrefixedWriterKeys(str(tmp_path / "repo"))
    inner.ensure_root()
    storage = EncryptedStorage(inner, keyring)
    Repository(storage).create()
    storage.put_bytes(OLDER, b"record")
    assert storage.get_bytes(OLDER) == b"record" and storage.repository_id()
