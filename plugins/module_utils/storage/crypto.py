"""Client-side authenticated encryption of repository objects (AES-256-GCM).

Data is encrypted before it leaves the host, so a copy on another host or in
an object store holds only ciphertext. Keys live in a keyring file deployed
from Ansible Vault (mode 0600), one key per line:

    # <key id> <base64 of 32 random bytes>; the first key encrypts new objects
    2026-11 q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=
    2026-05 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=

Rolling a key in: put the new key first under a new id; objects written
before keep their key id and stay readable as long as their key stays in the
file. An id may appear only once (a repeated id is refused).

Format of an encrypted object (RKE2, written since issue 14):

    "RKE2" | key id length (1 byte) | key id | salt (32 random bytes) |
    object key length (2 bytes, big-endian) | object key (UTF-8) |
    chunks: ciphertext length (4 bytes, big-endian) | ciphertext (<= 1 MiB + 16-byte tag)

Each object is sealed with its own subkey:

    subkey = HKDF-SHA256(key, salt, info = "restorekeeper RKE2" | key id |
                         repository id | object key)   (each length-prefixed)

where the object key is the name the object is READ under (so an object
moved or copied to another name, or into another repository sharing the key,
fails to decrypt) and the repository id comes from the repository marker
(repository.repository_identifier; the marker itself is bound with an empty
id). The object key in the header only lets the reader name a moved object;
the binding is the subkey. With a fresh subkey per object the chunk nonce is
simply the chunk index, so no nonce is ever reused under one subkey and the
birthday limit of random nonces under one long-lived key does not apply.

Chunk i uses nonce = 8 zero bytes || i (4 bytes) and authenticates the
header, its index and whether it is the last chunk, so chunks cannot be
reordered, dropped or cut off at the end without the decryption failing.

The older RKE1 format ("RKE1" | key id length | key id | 8-byte random nonce
prefix | chunks, nonce = prefix || i, the key itself used directly) is still
read, never written: it binds no name.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import os
import stat
import struct
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple

from ..common.errors import ConfigError, CorruptObject, ObjectNotFound, StorageError
from .marker import MARKER_KEY, repository_identifier
from .base import LockState, ObjectInfo, ObjectWriter, Storage

MAGIC = b"RKE2"
LEGACY_MAGIC = b"RKE1"
CHUNK = 1024 * 1024
TAG = 16
SALT = 32
_LENGTH = struct.Struct(">I")
_NAME_LENGTH = struct.Struct(">H")
_INFO_LABEL = b"restorekeeper RKE2"


class Keyring:
    def __init__(self, path: str, keys: List[Tuple[str, bytes]]) -> None:
        self.path = path
        self.keys: Dict[str, bytes] = dict(keys)
        self.current_id = keys[0][0]

    @classmethod
    def load(cls, path: str) -> "Keyring":
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            with open(path, encoding="ascii") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            raise ConfigError("encryption key file %s does not exist" % path,
                              "deploy it (from Ansible Vault) or fix encryption_key_file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("encryption key file %s cannot be read: %s" % (path, exc)) from None
        if mode & 0o077:
            raise ConfigError("encryption key file %s is readable by others (mode %o)" % (path, mode),
                              "chmod 600 %s" % path)
        keys = []
        first_line: Dict[str, int] = {}
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split()
            try:
                key = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
            except (binascii.Error, ValueError):
                key = b""
            if len(parts) != 2 or len(key) != 32 or len(parts[0].encode()) > 255:
                raise ConfigError("%s line %d is not '<key id> <base64 of 32 bytes>'" % (path, number),
                                  "make a key with: openssl rand -base64 32")
            if parts[0] in first_line:
                # The last one would win silently: a botched rotation would keep the old key.
                raise ConfigError(
                    "%s line %d repeats key id %r (first on line %d)" % (path, number, parts[0], first_line[parts[0]]),
                    "give every key its own id: put a new key first under a NEW id and keep each older key "
                    "once, under the id its objects were written with",
                )
            first_line[parts[0]] = number
            keys.append((parts[0], key))
        if not keys:
            raise ConfigError("encryption key file %s holds no key" % path, "add one: <id> $(openssl rand -base64 32)")
        return cls(path, keys)


def _aesgcm(key: bytes):
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        from ..common.hostdeps import missing_error

        raise missing_error(["cryptography"], "encryption (encryption_key_file)") from None
    return AESGCM(key)


def _length_prefixed(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _NAME_LENGTH.pack(len(raw)) + raw


def object_subkey(key: bytes, salt: bytes, key_id: str, repository_id: str, object_key: str) -> bytes:
    """The per-object AES key: HKDF-SHA256 of the keyring key, bound to the
    format, key id, repository and the object's name (see the module doc)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = _INFO_LABEL + b"".join(_length_prefixed(part) for part in (key_id, repository_id, object_key))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def _aad(header: bytes, index: int, last: bool) -> bytes:
    return header + struct.pack(">IB", index, 1 if last else 0)


class Encryptor:
    """Encrypts a stream chunk by chunk into a sink, with the keyring's current
    key, bound to the object's key and the repository's identifier."""

    def __init__(self, keyring: Keyring, sink: Callable[[bytes], None], object_key: str, repository_id: str) -> None:
        key_id = keyring.current_id
        salt = os.urandom(SALT)
        name = object_key.encode("utf-8")
        if len(name) > 0xFFFF:
            raise StorageError("object key %r is too long to encrypt (%d bytes)" % (object_key[:80], len(name)))
        self._cipher = _aesgcm(object_subkey(keyring.keys[key_id], salt, key_id, repository_id, object_key))
        self._prefix = bytes(8)  # the subkey is fresh per object: a counter nonce never repeats under it
        raw_id = key_id.encode("utf-8")
        self._header = MAGIC + bytes([len(raw_id)]) + raw_id + salt + _NAME_LENGTH.pack(len(name)) + name
        self._sink = sink
        self._buffer = bytearray()
        self._index = 0
        sink(self._header)

    def _emit(self, plain: bytes, last: bool) -> None:
        sealed = self._cipher.encrypt(_nonce(self._prefix, self._index), plain, _aad(self._header, self._index, last))
        self._sink(_LENGTH.pack(len(sealed)) + sealed)
        self._index += 1

    def write(self, data: bytes) -> None:
        self._buffer += data
        # Keep at least one byte back: the last chunk must be marked as last.
        while len(self._buffer) > CHUNK:
            self._emit(bytes(self._buffer[:CHUNK]), False)
            del self._buffer[:CHUNK]

    def finish(self) -> None:
        self._emit(bytes(self._buffer), True)
        self._buffer.clear()


class DecryptingReader:
    """A readable stream of the plaintext of an encrypted object read under
    object_key. repository_id is called only for RKE2 objects (RKE1 objects
    bind no name), so reading old objects never needs the marker."""

    def __init__(self, keyring: Keyring, source: BinaryIO, name: str, object_key: str,
                 repository_id: Callable[[], str]) -> None:
        self._source = source
        self._name = name
        self._header = self._prefix = b""
        self._bound = False
        self._key_id = ""
        self._cipher = None
        self._index = 0
        self._pending = b""
        self._next: Optional[bytes] = None
        self._done = False
        try:
            self._open_header(keyring, object_key, repository_id)
        except BaseException:
            self.close()  # a refused object leaves no open stream (an ssh agent session stays usable)
            raise

    def _open_header(self, keyring: Keyring, object_key: str, repository_id: Callable[[], str]) -> None:
        name = self._name
        head = self._exact(len(MAGIC) + 1)
        if head[:4] not in (MAGIC, LEGACY_MAGIC):
            raise CorruptObject("%s is not encrypted by restorekeeper (no RKE2 or RKE1 header)" % name)
        raw_id = self._exact(head[4])
        key_id = raw_id.decode("utf-8", "replace")
        salt = b""
        if head[:4] == LEGACY_MAGIC:
            self._prefix = self._exact(8)
            self._header = head + raw_id + self._prefix
            self._bound = False
        else:
            salt = self._exact(SALT)
            name_length = self._exact(_NAME_LENGTH.size)
            written_as = self._exact(_NAME_LENGTH.unpack(name_length)[0])
            self._header = head + raw_id + salt + name_length + written_as
            self._refuse_moved(written_as.decode("utf-8", "replace"), object_key)
            self._prefix = bytes(8)
            self._bound = True
        if key_id not in keyring.keys:
            raise ConfigError("%s was encrypted with key id %r, which is not in %s" % (name, key_id, keyring.path),
                              "add that (older) key back to the key file; keys are never dropped while objects use them")
        key = keyring.keys[key_id]
        if self._bound:
            key = object_subkey(key, salt, key_id, repository_id(), object_key)
        self._cipher = _aesgcm(key)
        self._key_id = key_id
        self._next = self._read_sealed()

    def _refuse_moved(self, written_as: str, object_key: str) -> None:
        if written_as != object_key:
            raise CorruptObject(
                "%s holds the encrypted object written as %r: it was moved or copied here from another name, "
                "refusing it" % (self._name, written_as),
                "restore this object from another copy, and check who can write to this storage",
            )

    def _exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            more = self._source.read(size - len(data))
            if not more:
                raise CorruptObject("%s is truncated" % self._name)
            data += more
        return data

    def _read_sealed(self) -> Optional[bytes]:
        length = self._source.read(_LENGTH.size)
        if not length:
            return None
        if len(length) < _LENGTH.size:
            length += self._exact(_LENGTH.size - len(length))
        size = _LENGTH.unpack(length)[0]
        if size > CHUNK + TAG:
            raise CorruptObject("%s has a damaged chunk header" % self._name)
        return self._exact(size)

    def _open_next(self) -> bytes:
        from cryptography.exceptions import InvalidTag

        sealed = self._next
        if sealed is None:
            raise CorruptObject("%s is truncated: its last chunk is missing" % self._name)
        self._next = self._read_sealed()
        last = self._next is None
        try:
            plain = self._cipher.decrypt(_nonce(self._prefix, self._index), sealed,
                                         _aad(self._header, self._index, last))
        except InvalidTag:
            raise CorruptObject(
                "%s cannot be decrypted with key %r: the key is wrong or the object was altered%s"
                % (self._name, self._key_id,
                   ", or it was copied here from another repository" if self._bound else ""),
                "check the key file; if the key is right, restore this object from another copy",
            ) from None
        self._index += 1
        if last:
            self._done = True
        return plain

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._pending) < size):
            self._pending += self._open_next()
        if size < 0:
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close:
            close()

    def __enter__(self) -> "DecryptingReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def encrypt_bytes(keyring: Keyring, data: bytes, object_key: str, repository_id: str) -> bytes:
    out: List[bytes] = []
    encryptor = Encryptor(keyring, out.append, object_key, repository_id)
    encryptor.write(data)
    encryptor.finish()
    return b"".join(out)


def decrypt_bytes(keyring: Keyring, blob: bytes, object_key: str, repository_id: str, name: str = "") -> bytes:
    import io

    return DecryptingReader(keyring, io.BytesIO(blob), name or object_key, object_key, lambda: repository_id).read()


class EncryptingWriter(ObjectWriter):
    """Plaintext in, ciphertext to the backend's writer. The info it returns
    describes the plaintext (size and SHA-256), like an unencrypted store's."""

    def __init__(self, inner: ObjectWriter, keyring: Keyring, object_key: str, repository_id: str) -> None:
        super().__init__(inner.key)
        self._inner = inner
        # Bound to the repository-relative key: inner.key may carry the backend's prefix (s3).
        self._encryptor = Encryptor(keyring, inner.write, object_key, repository_id)

    def _write(self, data: bytes) -> None:
        self._encryptor.write(data)

    def _commit(self) -> float:
        self._encryptor.finish()
        return self._inner.commit().mtime

    def _abort(self) -> None:
        self._inner.abort()


class EncryptedStorage(Storage):
    """A backend whose objects are encrypted on write and decrypted on read,
    each bound to its key and to this repository's identifier (read once from
    the marker, when first needed). Sizes reported by stat and list are those
    of the stored ciphertext."""

    def __init__(self, inner: Storage, keyring: Keyring) -> None:
        self.inner = inner
        self.keyring = keyring
        self.location = inner.location
        self._repository_id: Optional[str] = None

    def repository_id(self) -> str:
        """The identifier every object but the marker is bound to."""
        if self._repository_id is None:
            try:
                stream = self.inner.open(MARKER_KEY)
            except ObjectNotFound:
                raise StorageError(
                    "%s has no %s marker, and encrypted objects are bound to the repository identifier it holds"
                    % (self.location, MARKER_KEY),
                    "initialise the repository (restorekeeper repo-create); a copy receives the marker "
                    "first from restorekeeper ship",
                ) from None
            with DecryptingReader(self.keyring, stream, "%s%s" % (self.location, MARKER_KEY), MARKER_KEY,
                                  self._marker_binding) as reader:
                self._repository_id = repository_identifier(reader.read())
        return self._repository_id

    @staticmethod
    def _marker_binding() -> str:
        return ""  # the marker defines the identifier, so it cannot be bound to it

    def _binding_for(self, key: str) -> Callable[[], str]:
        return self._marker_binding if key == MARKER_KEY else self.repository_id

    def writer(self, key: str, overwrite: bool = False) -> ObjectWriter:
        repository_id = self._binding_for(key)()  # before the write starts: a missing marker leaves nothing
        return EncryptingWriter(self.inner.writer(key, overwrite), self.keyring, key, repository_id)

    def open(self, key: str) -> BinaryIO:
        return DecryptingReader(self.keyring, self.inner.open(key), "%s%s" % (self.location, key), key,
                                self._binding_for(key))

    def stat(self, key: str) -> Optional[ObjectInfo]:
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def prune_empty(self, prefix: str, interrupted: bool = False) -> None:
        self.inner.prune_empty(prefix, interrupted)

    def check_ready(self) -> None:
        self.inner.check_ready()

    def ensure_root(self) -> None:
        self.inner.ensure_root()

    def lock(self, key: str, holder: str):
        return self.inner.lock(key, holder)

    # Object Lock is the backend's: the same keys, whatever the encryption.
    def supports_object_lock(self) -> bool:
        return self.inner.supports_object_lock()

    def object_lock_mode(self) -> str:
        return self.inner.object_lock_mode()

    def lock_state(self, key: str) -> LockState:
        return self.inner.lock_state(key)

    def extend_retention(self, key: str, until: datetime.datetime) -> bool:
        return self.inner.extend_retention(key, until)

    def set_legal_hold(self, key: str, on: bool) -> bool:
        return self.inner.set_legal_hold(key, on)

    def staging_directory(self) -> Optional[str]:
        return None  # a staged file would be plaintext on the copy's volume
