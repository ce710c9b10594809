"""WAL push and fetch rules, on a real posix repository."""

from __future__ import annotations

import os

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import objectformat
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import (
    ArchiveConflict,
    ClusterMismatch,
    CorruptObject,
    RestorekeeperError,
    StorageError,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import (
    ALREADY_ARCHIVED,
    ARCHIVED,
    WalArchive,
    archive_command,
    restore_command,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import WalNotFound

from walfiles import segment_bytes, segment_name, write_segment

NAME = segment_name(1, 5)


def stored_path(archive: WalArchive, name: str) -> str:
    return archive.storage.path_of(archive.key_for(name))


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_push_then_fetch_round_trips_bytes(tmp_path, make_config, compression):
    config = make_config(compression=compression)
    Repository.from_config(config).create()
    archive = WalArchive(config)
    source = write_segment(tmp_path, NAME)
    outcome = archive.push(source, NAME)
    assert outcome.status == ARCHIVED
    assert outcome.sha256 == objectformat.sha256_hex(open(source, "rb").read())
    if compression == "zstd":
        assert outcome.stored_size < outcome.size  # zero-filled tail compresses
    archive.fetch(NAME, str(tmp_path / "RECOVERYXLOG"))
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == open(source, "rb").read()
    assert archive.names() == [NAME]


def test_identical_repush_succeeds_without_rewriting(tmp_path, archive):
    source = write_segment(tmp_path, NAME)
    archive.push(source, NAME)
    before = os.stat(stored_path(archive, NAME))
    outcome = archive.push(source, NAME)
    assert outcome.status == ALREADY_ARCHIVED
    after = os.stat(stored_path(archive, NAME))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_different_content_under_same_name_is_refused_and_kept(tmp_path, archive):
    source = write_segment(tmp_path, NAME)
    archive.push(source, NAME)
    original = open(stored_path(archive, NAME), "rb").read()
    other = tmp_path / "other"
    other.write_bytes(segment_bytes(NAME))
    with pytest.raises(ArchiveConflict, match="different content"):
        archive.push(str(other), NAME)
    assert open(stored_path(archive, NAME), "rb").read() == original


def test_unreadable_archived_copy_is_never_overwritten(tmp_path, archive):
    source = write_segment(tmp_path, NAME)
    archive.push(source, NAME)
    path = stored_path(archive, NAME)
    with open(path, "r+b") as handle:
        handle.write(b"JUNK")
    with pytest.raises(ArchiveConflict, match="unreadable"):
        archive.push(source, NAME)
    assert open(path, "rb").read(4) == b"JUNK"


@pytest.mark.parametrize(
    "name, content",
    [
        ("00000002.history", b"1\t0/3000000\tno recovery target specified\n"),
        ("000000010000000000000005.00000028.backup", b"START WAL LOCATION: 0/5000028\n"),
    ],
)
def test_history_and_backup_files_are_archived(tmp_path, archive, name, content):
    source = tmp_path / name
    source.write_bytes(content)
    assert archive.push(str(source), name).status == ARCHIVED
    archive.fetch(name, str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == content


def test_history_files_have_their_own_directory(archive):
    assert archive.key_for("00000002.history") == "main/wal/history/00000002.history"
    assert archive.key_for(NAME) == "main/wal/0000000100000000/%s" % NAME


def test_partial_segment_is_archived_beside_its_segment(tmp_path, archive):
    partial = NAME + ".partial"
    source = tmp_path / partial
    source.write_bytes(segment_bytes(NAME))
    assert archive.push(str(source), partial).status == ARCHIVED
    assert archive.key_for(partial) == "main/wal/0000000100000000/%s" % partial
    assert archive.names() == [partial]


def test_segment_whose_header_contradicts_its_name_is_refused(tmp_path, archive):
    source = tmp_path / "seg"
    source.write_bytes(segment_bytes(segment_name(1, 6)))
    with pytest.raises(CorruptObject, match="not at"):
        archive.push(str(source), NAME)
    assert archive.names() == []


def test_wrong_sized_segment_is_refused(tmp_path, archive):
    source = tmp_path / "seg"
    source.write_bytes(segment_bytes(NAME)[:-8192])
    with pytest.raises(CorruptObject, match="bytes but its header"):
        archive.push(str(source), NAME)


def test_wal_of_another_cluster_is_refused(tmp_path, archive):
    archive.push(write_segment(tmp_path, NAME), NAME)
    second = segment_name(1, 6)
    stranger = tmp_path / "stranger"
    stranger.write_bytes(segment_bytes(second, system_id=42))
    with pytest.raises(ClusterMismatch, match="database system 42"):
        archive.push(str(stranger), second)
    assert not archive.exists(second)


def test_not_a_wal_name_is_refused(tmp_path, archive):
    source = write_segment(tmp_path, NAME)
    with pytest.raises(RestorekeeperError, match="not a WAL file name"):
        archive.push(source, "pg_wal/" + NAME)


def test_uninitialised_repository_is_refused_and_untouched(tmp_path, make_config):
    repo = tmp_path / "mountpoint"
    repo.mkdir()
    config = make_config(repo=repo)
    with pytest.raises(StorageError, match="not an initialised"):
        WalArchive(config).push(write_segment(tmp_path, NAME), NAME)
    assert list(repo.iterdir()) == []


def test_nonexistent_repository_is_refused_and_not_created(tmp_path, make_config):
    config = make_config(repo=tmp_path / "missing")
    with pytest.raises(StorageError, match="does not exist"):
        WalArchive(config).push(write_segment(tmp_path, NAME), NAME)
    assert not (tmp_path / "missing").exists()


def test_missing_source_names_the_path(tmp_path, archive):
    with pytest.raises(StorageError, match="cannot read WAL file"):
        archive.push(str(tmp_path / "absent"), NAME)


def test_fetch_of_absent_file_raises_not_found(tmp_path, archive):
    with pytest.raises(WalNotFound):
        archive.fetch(NAME, str(tmp_path / "RECOVERYXLOG"))
    assert not (tmp_path / "RECOVERYXLOG").exists()


@pytest.mark.parametrize("damage", ["flip-payload", "truncate", "flip-header"])
def test_fetch_of_corrupt_object_fails_and_writes_nothing(tmp_path, archive, damage):
    archive.push(write_segment(tmp_path, NAME), NAME)
    path = stored_path(archive, NAME)
    blob = bytearray(open(path, "rb").read())
    if damage == "flip-payload":
        blob[len(blob) // 2] ^= 0x01
    elif damage == "truncate":
        del blob[len(blob) // 2:]
    else:
        blob[12] ^= 0x20
    with open(path, "wb") as handle:
        handle.write(blob)
    with pytest.raises(CorruptObject):
        archive.fetch(NAME, str(tmp_path / "RECOVERYXLOG"))
    assert not (tmp_path / "RECOVERYXLOG").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rk-tmp")] == []


def test_fetch_replaces_a_stale_destination(tmp_path, archive):
    source = write_segment(tmp_path, NAME)
    archive.push(source, NAME)
    dest = tmp_path / "RECOVERYXLOG"
    dest.write_bytes(b"stale")
    archive.fetch(NAME, str(dest))
    assert dest.read_bytes() == open(source, "rb").read()


def test_object_under_wrong_key_is_detected(tmp_path, archive):
    first, second = NAME, segment_name(1, 6)
    archive.push(write_segment(tmp_path, first), first)
    archive.push(write_segment(tmp_path, second), second)
    os.replace(stored_path(archive, first), stored_path(archive, second))
    with pytest.raises(CorruptObject, match="holds"):
        archive.fetch(second, str(tmp_path / "out"))


def test_commands_quote_paths_and_escape_percent():
    assert archive_command("/opt/rk/bin/restorekeeper", "/etc/rk/main.conf") == (
        "/opt/rk/bin/restorekeeper wal-push --config /etc/rk/main.conf %p %f"
    )
    assert restore_command("/opt/my tools/restorekeeper", "/etc/rk/100%.conf") == (
        "'/opt/my tools/restorekeeper' wal-fetch --config /etc/rk/100%%.conf %f %p"
    )
    assert archive_command("/opt/my tools/restorekeeper", "/etc/rk/100%.conf", "/var/spool/rk/main/push") == (
        "'/opt/my tools/restorekeeper-archive' /etc/rk/100%%.conf %p %f /var/spool/rk/main/push"
    )
