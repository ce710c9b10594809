"""Client-side authenticated encryption of repository objects (AES-256-GCM).

Data is encrypted before it leaves the host, so a copy on another host or in
an object store holds only ciphertext. Keys live in a keyring file deployed
from Ansible Vault (mode 0600), one key per line:

    # <key id> <base64 of 32 random bytes>; the first key encrypts new objects
    2026-11 q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=
    2026-05 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=

Rolling a key in: put the new key first; objects written before keep their
key id and stay readable as long as their key stays in the file.

Format of an encrypted object:

    "RKE1" | key id length (1 byte) | key id | 8-byte random nonce prefix |
    chunks: ciphertext length (4 bytes, big-endian) | ciphertext (<= 1 MiB + 16-byte tag)

Chunk i uses nonce = prefix || i (4 bytes) and authenticates the header, its
index and whether it is the last chunk, so chunks cannot be reordered,
dropped or cut off at the end without the decryption failing.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import struct
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple

from .errors import ConfigError, CorruptObject
from .storage import ObjectInfo, ObjectWriter, Storage

MAGIC = b"RKE1"
CHUNK = 1024 * 1024
TAG = 16
_LENGTH = struct.Struct(">I")


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
            keys.append((parts[0], key))
        if not keys:
            raise ConfigError("encryption key file %s holds no key" % path, "add one: <id> $(openssl rand -base64 32)")
        return cls(path, keys)


def _aesgcm(key: bytes):
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        from .hostdeps import missing_error

        raise missing_error(["cryptography"], "encryption (encryption_key_file)") from None
    return AESGCM(key)


def _aad(header: bytes, index: int, last: bool) -> bytes:
    return header + struct.pack(">IB", index, 1 if last else 0)


class Encryptor:
    """Encrypts a stream chunk by chunk into a sink, with the keyring's current key."""

    def __init__(self, keyring: Keyring, sink: Callable[[bytes], None]) -> None:
        key_id = keyring.current_id.encode("utf-8")
        self._cipher = _aesgcm(keyring.keys[keyring.current_id])
        self._prefix = os.urandom(8)
        self._header = MAGIC + bytes([len(key_id)]) + key_id + self._prefix
        self._sink = sink
        self._buffer = bytearray()
        self._index = 0
        sink(self._header)

    def _emit(self, plain: bytes, last: bool) -> None:
        nonce = self._prefix + struct.pack(">I", self._index)
        sealed = self._cipher.encrypt(nonce, plain, _aad(self._header, self._index, last))
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
    """A readable stream of the plaintext of an encrypted object."""

    def __init__(self, keyring: Keyring, source: BinaryIO, name: str = "object") -> None:
        self._source = source
        self._name = name
        head = self._exact(len(MAGIC) + 1)
        if head[:4] != MAGIC:
            raise CorruptObject("%s is not encrypted by restorekeeper (no RKE1 header)" % name)
        key_id = self._exact(head[4]).decode("utf-8", "replace")
        if key_id not in keyring.keys:
            raise ConfigError("%s was encrypted with key id %r, which is not in %s" % (name, key_id, keyring.path),
                              "add that (older) key back to the key file; keys are never dropped while objects use them")
        self._prefix = self._exact(8)
        self._header = head + key_id.encode("utf-8") + self._prefix
        self._cipher = _aesgcm(keyring.keys[key_id])
        self._key_id = key_id
        self._index = 0
        self._pending = b""
        self._next = self._read_sealed()
        self._done = False

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
        nonce = self._prefix + struct.pack(">I", self._index)
        try:
            plain = self._cipher.decrypt(nonce, sealed, _aad(self._header, self._index, last))
        except InvalidTag:
            raise CorruptObject(
                "%s cannot be decrypted with key %r: the key is wrong or the object was altered" % (self._name, self._key_id),
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


def encrypt_bytes(keyring: Keyring, data: bytes) -> bytes:
    out: List[bytes] = []
    encryptor = Encryptor(keyring, out.append)
    encryptor.write(data)
    encryptor.finish()
    return b"".join(out)


def decrypt_bytes(keyring: Keyring, blob: bytes, name: str = "object") -> bytes:
    import io

    return DecryptingReader(keyring, io.BytesIO(blob), name).read()


class EncryptingWriter(ObjectWriter):
    """Plaintext in, ciphertext to the backend's writer. The info it returns
    describes the plaintext (size and SHA-256), like an unencrypted store's."""

    def __init__(self, inner: ObjectWriter, keyring: Keyring) -> None:
        super().__init__(inner.key)
        self._inner = inner
        self._encryptor = Encryptor(keyring, inner.write)

    def _write(self, data: bytes) -> None:
        self._encryptor.write(data)

    def _commit(self) -> float:
        self._encryptor.finish()
        return self._inner.commit().mtime

    def _abort(self) -> None:
        self._inner.abort()


class EncryptedStorage(Storage):
    """A backend whose objects are encrypted on write and decrypted on read.
    Sizes reported by stat and list are those of the stored ciphertext."""

    def __init__(self, inner: Storage, keyring: Keyring) -> None:
        self.inner = inner
        self.keyring = keyring
        self.location = inner.location

    def writer(self, key: str, overwrite: bool = False) -> ObjectWriter:
        return EncryptingWriter(self.inner.writer(key, overwrite), self.keyring)

    def open(self, key: str) -> BinaryIO:
        return DecryptingReader(self.keyring, self.inner.open(key), "%s%s" % (self.location, key))

    def stat(self, key: str) -> Optional[ObjectInfo]:
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def check_ready(self) -> None:
        self.inner.check_ready()

    def ensure_root(self) -> None:
        self.inner.ensure_root()

    def lock(self, key: str, holder: str):
        return self.inner.lock(key, holder)

    def staging_directory(self) -> Optional[str]:
        return None  # a staged file would be plaintext on the copy's volume
