"""Markers of the asynchronous wal-push, and the quick path that trusts them.

The batch that pushes segments ahead (walasync.py) leaves a marker
``<spool>/<cluster>/push/<name>.ok`` for each segment once it is durable in
the repository. PostgreSQL then starts the archive command for that segment;
most of such a call used to be Python importing the engine and parsing the
configuration only to find the marker. quick_push() does the same proof with
nothing but os and a few system calls. A marker is believed only when:

* the file at %p is the very file that was pushed (same device, inode, size,
  mtime and ctime, recorded before and after its push);
* the configuration (main file, drop-in directory and drop-ins) is unchanged
  since the batch read it, so the repository it pushed to is still the one
  configured;
* the repository object is the very file the batch published (posix
  repositories; published objects are never rewritten); or, for any other
  repository (S3, ssh), the marker says ``confirmed``: the resident pusher
  (walpusher.py) wrote it only after the upload returned AND a read of the
  stored object's header, after the upload, found this name, size and
  SHA-256. A marker of the async batch without that line makes the quick
  path step aside, and the full engine reads the object's header.

Why a confirmed marker is as safe as the posix check: both prove, at the
time the marker is written, that the repository holds exactly these bytes
under this name; what the posix check adds is that the file was not
replaced or deleted between then and the archive_command call (usually
milliseconds to seconds). Nothing in restorekeeper replaces a WAL object
(wal-push refuses to overwrite one with different content); retention may
delete a pushed-ahead segment before its archive_command ran, but only one
older than the start of every kept base backup, which no restore from the
repository can use either way. The configuration identity proves the repository is
still the one the pusher wrote to. What remains is a hand deletion or an
outside actor removing a just-pushed object within that window: the same
exposure as a posix repository deleted right after the quick path answered,
which no archive_command check can close.

Anything else, including a marker it cannot parse, leaves the decision to
the full engine, which reports and deletes a marker that does not hold.
This module imports nothing beyond os and configfiles: each import would be
paid once per WAL segment.
"""

from __future__ import annotations

import os

from ..config.configfiles import drop_in_paths, file_identity, sources_identity

MARKER_SUFFIX = ".ok"
_FORMAT = "restorekeeper push marker 2"


def spool_directory(root: str, cluster: str, kind: str) -> str:
    """<spool>/<cluster>/push or /fetch: one cluster's spool of one kind."""
    return os.path.join(root, cluster, kind)


def marker_path(spool: str, name: str) -> str:
    return os.path.join(spool, name + MARKER_SUFFIX)


class Marker:
    """What a marker records about one pushed WAL file."""

    def __init__(self, name: str, size: int, sha256: str, key: str, segment: list[int],
                 config: list[list[int]] | None = None, object_path: str = "",
                 object_identity: list[int] | None = None, confirmed: bool = False) -> None:
        self.name = name
        self.size = size
        self.sha256 = sha256
        self.key = key
        self.segment = segment
        self.config = config or []
        self.object_path = object_path
        self.object_identity = object_identity or []
        # Set only by the resident pusher, after reading the stored object
        # back (see the module docstring): trusted for any repository type.
        self.confirmed = confirmed

    def render(self) -> bytes:
        lines = [_FORMAT, "name " + self.name, "size %d" % self.size, "sha256 " + self.sha256, "key " + self.key,
                 "segment " + _numbers(self.segment)]
        lines.extend("config " + _numbers(identity) for identity in self.config)
        if self.object_path and self.object_identity:
            lines.append("object " + _numbers(self.object_identity) + " " + self.object_path)
        if self.confirmed:
            lines.append("confirmed stored")
        return ("\n".join(lines) + "\n").encode("utf-8")

    def describes_segment(self, name: str, segment_path: str) -> bool:
        """True when this marker is about name and the file at segment_path is
        the very file that was pushed (raises OSError when it cannot be examined)."""
        if self.name != name:
            return False
        segment = file_identity(segment_path)
        return segment == self.segment and segment[2] == self.size

    def proves_quickly(self, name: str, segment_path: str, config_path: str) -> bool:
        """True when the checks in the module docstring all hold (raises
        OSError when a file cannot be examined)."""
        if not self.config or not (self.object_path or self.confirmed):
            return False
        return (self.describes_segment(name, segment_path)
                and sources_identity(config_path) == self.config
                and (not self.object_path or file_identity(self.object_path) == self.object_identity))


def parse_marker(data: bytes) -> Marker | None:
    """The marker in data, or None when it is not a complete marker (a crash
    may leave one empty: markers are not fsynced)."""
    try:
        lines = data.decode("utf-8").split("\n")
        if lines[0] != _FORMAT or lines[-1] != "":
            return None
        fields: dict[str, str] = {}
        config: list[list[int]] = []
        object_path, object_identity, confirmed = "", [], False
        for line in lines[1:-1]:
            word, _space, rest = line.partition(" ")
            if word == "config":
                config.append(_parse_numbers(rest))
            elif word == "confirmed":
                confirmed = rest == "stored"
            elif word == "object":
                parts = rest.split(" ", 5)
                object_identity, object_path = _parse_numbers(" ".join(parts[:5])), parts[5]
            else:
                fields[word] = rest
        return Marker(fields["name"], int(fields["size"]), fields["sha256"], fields["key"],
                      _parse_numbers(fields["segment"]), config, object_path, object_identity, confirmed)
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        return None


def read_marker(path: str) -> Marker | None:
    """The marker at path; None when absent or unreadable. Raises nothing."""
    try:
        with open(path, "rb") as handle:
            return parse_marker(handle.read())
    except OSError:
        return None


def _numbers(values: list[int]) -> str:
    return " ".join(str(value) for value in values)


def _parse_numbers(text: str) -> list[int]:
    values = [int(word) for word in text.split(" ")]
    if len(values) != 5:
        raise ValueError("an identity has five numbers")
    return values


# ---------------------------------------------------------------- the quick path


def quick_push(argv: list[str]) -> bool:
    """True when argv is a plain ``wal-push --config C PATH NAME`` whose
    segment a marker proves archived: the marker is used up and the caller
    exits 0 at once. False in every other case (without changing anything):
    the full engine then decides."""
    parsed = _plain_push(argv)
    if parsed is None:
        return False
    config_path, segment_path, name = parsed
    try:
        located = _spool_and_cluster(config_path)
        if located is None:
            return False
        path = marker_path(spool_directory(located[0], located[1], "push"), name)
        marker = read_marker(path)
        if marker is None or not marker.proves_quickly(name, segment_path, config_path):
            return False
        os.unlink(path)  # used once: PostgreSQL asks for a segment again only after a crash
    except OSError:
        return False
    return True


def _plain_push(argv: list[str]) -> tuple[str, str, str] | None:
    """(config, path, name) of exactly ``wal-push --config C PATH NAME``."""
    if len(argv) == 5 and argv[0] == "wal-push" and argv[1] in ("--config", "-c"):
        return argv[2], argv[3], argv[4]
    if len(argv) == 4 and argv[0] == "wal-push" and argv[1].startswith("--config="):
        return argv[1][len("--config="):], argv[2], argv[3]
    return None


def _spool_and_cluster(config_path: str) -> tuple[str, str] | None:
    """[archive] spool_path and [cluster] name as the files set them, read
    line by line. Only where to look for a marker: a marker is believed only
    if the configuration is the very one the full parser read when it wrote
    it, so a misreading here can only make the quick path step aside."""
    values: dict[tuple[str, str], str] = {}
    for path in [config_path] + drop_in_paths(config_path):
        section = ""
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                text = line.strip()
                if text.startswith("[") and text.endswith("]"):
                    section = text[1:-1].strip()
                elif text and text[0] not in "#;" and "=" in text:
                    key, _equals, value = text.partition("=")
                    values[(section, key.strip().lower())] = value.strip()
    spool, cluster = values.get(("archive", "spool_path"), ""), values.get(("cluster", "name"), "")
    if not spool or not cluster:
        return None
    return spool, cluster
