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
  repository (S3, ssh), the marker says ``confirmed``: it was written only
  once the repository itself proved, during or after the push, that the
  object holds exactly what was archived under this name (see below). A
  marker without that line makes the quick path step aside, and the full
  engine reads the object's header.

What confirms a marker (walasync._write_marker, WalArchive.push):

* the store's answer to the PUT (S3Storage.put_small). The PUT carries the
  SHA-256 of the whole stored object (x-amz-checksum-sha256, with
  x-amz-sdk-checksum-algorithm) and its MD5 (Content-MD5). S3 computes the
  SHA-256 of the body it received and refuses the PUT (BadDigest) unless it
  equals the one sent, stores nothing then, and returns the checksum in the
  response only when the object was stored with it; the response's ETag is
  also compared with the MD5. The object starts with restorekeeper's header
  (name, size, SHA-256 of the WAL file), so a success that echoes our
  SHA-256 proves that the object under this key is, byte for byte, the one
  encoded from this file: strictly more than the read-back below, which
  reads only the header, and without its request. A store that answers
  without the checksum (some S3-compatible stores) proves nothing this way;
  one that answers another checksum fails the push.
* the object's header read before the upload (the file was already
  archived: its name, size and SHA-256 match), or, by the resident pusher
  only, read back after the upload.

Either proof is taken after the store acknowledged the write, which on S3
means durable (it answers a PUT only once the object is stored redundantly).

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

A marker that the quick path would believe also carries the same proof for
the shell script ``restorekeeper-archive`` (roles/archiving/files), which
runs no Python at all: after the line STAT_HEADER, the exact output GNU
``stat -L -c '%d %i %s %.9Y %.9Z %n'`` prints for the segment as PostgreSQL
names it (``pg_wal/<name>``: archive_command runs in the data directory),
the configuration's main file, drop-in directory and drop-ins (the files
sources_identity examined, by the path the pusher was given) and, for a
posix repository, the object; then the line ``end stat``. The script runs
that one stat and compares; it needs no parser of the configuration because
the configuration's identity is part of what it compares.
"""

from __future__ import annotations

import os

from ..config.configfiles import drop_in_paths, file_identity, sources_identity

MARKER_SUFFIX = ".ok"
#: The claim <name>.pushing of the process pushing that file ahead (the
#: resident pusher or an asynchronous batch; it holds the pid): present while
#: the push is under way, removed after its marker is in place. Another
#: pusher leaves a file claimed by a live process alone, and
#: restorekeeper-archive waits for the marker instead of racing the pusher
#: with a push of its own. Only a hint: it proves nothing.
CLAIM_SUFFIX = ".pushing"
_FORMAT = "restorekeeper push marker 3"
#: Earlier formats this version still reads (the shell section is new in 3).
_FORMATS = ("restorekeeper push marker 2", _FORMAT)
#: The stat command restorekeeper-archive runs, as the line opening the shell section.
STAT_HEADER = "stat -L -c '%d %i %s %.9Y %.9Z %n'"
STAT_END = "end stat"
#: How PostgreSQL names a WAL file to archive_command (%p, relative to the data directory).
ARCHIVE_COMMAND_DIRECTORY = "pg_wal"


def spool_directory(root: str, cluster: str, kind: str) -> str:
    """<spool>/<cluster>/push or /fetch: one cluster's spool of one kind."""
    return os.path.join(root, cluster, kind)


def marker_path(spool: str, name: str) -> str:
    return os.path.join(spool, name + MARKER_SUFFIX)


def claim_path(spool: str, name: str) -> str:
    return os.path.join(spool, name + CLAIM_SUFFIX)


class Marker:
    """What a marker records about one pushed WAL file."""

    def __init__(self, name: str, size: int, sha256: str, key: str, segment: list[int],
                 config: list[list[int]] | None = None, object_path: str = "",
                 object_identity: list[int] | None = None, confirmed: bool = False,
                 config_paths: list[str] | None = None) -> None:
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
        # The files the config identities are of, in their order (source_paths):
        # what lets render() add the shell section.
        self.config_paths = config_paths or []

    def render(self) -> bytes:
        lines = [_FORMAT, "name " + self.name, "size %d" % self.size, "sha256 " + self.sha256, "key " + self.key,
                 "segment " + _numbers(self.segment)]
        lines.extend("config " + _numbers(identity) for identity in self.config)
        if self.object_path and self.object_identity:
            lines.append("object " + _numbers(self.object_identity) + " " + self.object_path)
        if self.confirmed:
            lines.append("confirmed stored")
        lines.extend(self.stat_section())
        return ("\n".join(lines) + "\n").encode("utf-8")

    def stat_section(self) -> list[str]:
        """The shell section (module docstring): STAT_HEADER, the expected
        output of that stat, STAT_END. Empty unless the quick path itself
        could believe this marker, and unless every line can be written
        exactly (no newline in a path, no time before 1970)."""
        if not self.config or not (self.object_path or self.confirmed) or len(self.config_paths) != len(self.config):
            return []
        files = [(self.segment, os.path.join(ARCHIVE_COMMAND_DIRECTORY, self.name))]
        files.extend(zip(self.config, self.config_paths))
        if self.object_path:
            files.append((self.object_identity, self.object_path))
        lines = [_stat_line(identity, path) for identity, path in files]
        if any(line is None for line in lines):
            return []
        return [STAT_HEADER] + [line for line in lines if line is not None] + [STAT_END]

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
        if lines[0] not in _FORMATS or lines[-1] != "":
            return None
        if STAT_HEADER in lines:  # the shell section: for restorekeeper-archive only, complete or none
            if lines[-2] != STAT_END:
                return None
            lines = lines[:lines.index(STAT_HEADER)] + [""]
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


def source_paths(config_path: str, count: int) -> list[str]:
    """The files sources_identity(config_path) examines, in its order, when
    there are count of them now; else [] (a drop-in came or went since the
    identity was taken: the marker then carries no shell section)."""
    paths = [config_path]
    if count > 1:
        paths.append(config_path + ".d")
        paths.extend(drop_in_paths(config_path))
    return paths if len(paths) == count else []


def _stat_line(identity: list[int], path: str) -> str | None:
    """What ``stat -L -c '%d %i %s %.9Y %.9Z %n' -- path`` prints for a file
    of this identity; None when it cannot be written as one line."""
    if len(identity) != 5 or "\n" in path or min(identity) < 0:
        return None
    device, inode, size, mtime_ns, ctime_ns = identity
    return "%d %d %d %d.%09d %d.%09d %s" % ((device, inode, size) + divmod(mtime_ns, 10 ** 9)
                                            + divmod(ctime_ns, 10 ** 9) + (path,))


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
