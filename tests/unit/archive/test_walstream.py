"""Pure parts of walstream.py: spool names, received positions, the status
contract, the [stream] configuration and the wal-fetch fallback."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import objectformat
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive import walstream
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import (
    Config,
    StreamConfig,
    render_stream,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError, CorruptObject
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo import layout
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import WalArchive
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import WalNotFound

from walfiles import SEGMENT_SIZE, segment_bytes, segment_name

VALID = "[cluster]\nname = main\n[repository]\npath = %s\n[archive]\ncompression = zstd\n"


def config(tmp_path, stream: str = "") -> Config:
    path = tmp_path / "rk.conf"
    path.write_text(VALID % (tmp_path / "repo") + stream)
    return Config.load(str(path))


def test_stream_defaults_derive_from_the_cluster(tmp_path):
    stream = config(tmp_path).stream
    assert stream == StreamConfig("/var/lib/restorekeeper/stream/main", "restorekeeper_main", "restorekeeper_main",
                                  False, 10, 10, 30, True)


@pytest.mark.parametrize("text, message", [
    ("[stream]\nslot = Bad-Slot\n", "not a valid replication slot name"),
    ("[stream]\napplication_name = a b\n", "not usable"),
    ("[stream]\nsynchronous = maybe\n", "not true or false"),
    ("[stream]\nstatus_interval = 0\n", "at least 1"),
    ("[stream]\nspool_path = relative\n", "not absolute"),
    ("[stream]\nspool = /x\n", "unknown key"),
])
def test_bad_stream_settings_are_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, text)


def test_rendered_drop_in_round_trips(tmp_path):
    wanted = StreamConfig("/srv/spool", "s1", "app.1", True, 2, 3, 4, False)
    drop_in = tmp_path / "rk.conf.d"
    drop_in.mkdir()
    (drop_in / "stream.conf").write_text(render_stream(wanted))
    assert config(tmp_path).stream == wanted


def test_spool_names_and_received_position():
    first, second = segment_name(1, 4), segment_name(1, 5)
    names = sorted([first, second + ".partial", "00000002.history", ".restorekeeper-stream.lock", "junk"])
    assert walstream.completed_names(names) == ["00000002.history", first]
    assert walstream.current_partial(names) == second
    data = segment_bytes(second)[:100].ljust(SEGMENT_SIZE, b"\0")
    assert walstream.received_end_lsn(second, data, SEGMENT_SIZE) == 5 * SEGMENT_SIZE + len(data[:100].rstrip(b"\0"))
    # Still being pre-filled by pg_receivewal: shorter than a segment, same position.
    assert walstream.received_end_lsn(second, data[:8192], SEGMENT_SIZE) == 5 * SEGMENT_SIZE + len(data[:100].rstrip(b"\0"))
    assert walstream.synchronous_value("restorekeeper_main") == '"restorekeeper_main"'


def test_status_contract_round_trips(tmp_path):
    storage = PosixStorage(str(tmp_path))
    assert walstream.load_stream_status(storage, "main") is None
    status = {"updated_at": "2026-11-21T20:00:00.000000Z", "synchronous": True, "lag_bytes": 0, "lag_seconds": 0.0,
              "slot": "restorekeeper_main", "state": "streaming"}
    storage.put_bytes(layout.stream_status_key("main"), json.dumps(status).encode(), overwrite=True)
    assert walstream.load_stream_status(storage, "main") == status
    assert walstream.status_age_seconds(status, now=1795291210.0) == pytest.approx(10.0)
    assert "streaming, synchronous" in walstream.describe_status(status)
    storage.put_bytes(layout.stream_status_key("main"), b"[1]", overwrite=True)
    with pytest.raises(CorruptObject):
        walstream.load_stream_status(storage, "main")
    assert walstream.STATUS_FIELDS[:6] == ("updated_at", "synchronous", "lag_bytes", "lag_seconds", "slot", "state")


def archive_with_partial(tmp_path, stream: str = ""):
    cfg = config(tmp_path, stream)
    repository = Repository(PosixStorage(cfg.repository.path))
    repository.storage.ensure_root()
    repository.create()
    archive = WalArchive(cfg, repository)
    name = segment_name(1, 7)
    data = segment_bytes(name)
    blob = objectformat.encode(name + ".partial", data, "zstd", 3, objectformat.sha256_hex(data))
    repository.storage.put_bytes(layout.wal_partial_key("main", name), blob, overwrite=True)
    return archive, name, data


def test_wal_fetch_falls_back_to_the_streamed_partial_of_exactly_that_segment(tmp_path):
    archive, name, data = archive_with_partial(tmp_path)
    dest = tmp_path / "RECOVERYXLOG"
    with pytest.raises(WalNotFound):
        archive.fetch(name, str(dest))
    assert walstream.fetch_streamed_partial(archive, name, str(dest))
    assert dest.read_bytes() == data
    assert not walstream.fetch_streamed_partial(archive, segment_name(1, 8), str(tmp_path / "other"))
    assert not walstream.fetch_streamed_partial(archive, "00000002.history", str(tmp_path / "other"))
    assert not os.path.exists(tmp_path / "other")


def test_fallback_can_be_turned_off_and_refuses_a_mislabelled_partial(tmp_path):
    archive, name, _data = archive_with_partial(tmp_path, "[stream]\nserve_partial = false\n")
    assert not walstream.fetch_streamed_partial(archive, name, str(tmp_path / "x"))
    archive = WalArchive(archive.config._replace(stream=StreamConfig()), archive.repository)
    other = segment_name(1, 9)
    archive.storage.put_bytes(layout.wal_partial_key("main", other),
                              archive.storage.get_bytes(layout.wal_partial_key("main", name)), overwrite=True)
    with pytest.raises(CorruptObject, match="holds"):
        walstream.fetch_streamed_partial(archive, other, str(tmp_path / "y"))


def test_supervisor_pushes_the_spool_keeps_the_newest_and_never_overwrites(tmp_path):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import PgClient
    from walfiles import write_segment

    spool = tmp_path / "spool"
    spool.mkdir()
    archive, _name, _data = archive_with_partial(tmp_path, "[stream]\nspool_path = %s\n" % spool)
    first, second = segment_name(1, 7), segment_name(1, 8)
    for name in (first, second):
        write_segment(spool, name)
    supervisor = walstream.StreamSupervisor(archive.config, PgClient(archive.config.postgres))
    assert supervisor.push_completed() == 2
    assert archive.exists(first) and archive.exists(second)
    assert sorted(os.listdir(spool)) == [second]  # pg_receivewal resumes after the newest
    assert not archive.storage.exists(layout.wal_partial_key("main", first))  # its partial is obsolete
    stored = archive.storage.get_bytes(archive.key_for(second))
    write_segment(spool, second)  # different bytes under an archived name
    fresh = walstream.StreamSupervisor(archive.config, PgClient(archive.config.postgres))
    assert fresh.push_completed() == 0
    assert archive.storage.get_bytes(archive.key_for(second)) == stored
    assert "refusing to overwrite" in fresh.stats["last_error"] and (spool / second).exists()


def test_received_position_survives_the_partial_being_renamed_as_it_is_read(tmp_path, monkeypatch):
    """pg_receivewal renames X.partial to X when X is complete: a listing
    taken just before sees a .partial that is gone when it is opened. The
    status then reads the spool again instead of reporting no position."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import PgClient
    from walfiles import write_segment

    spool = tmp_path / "spool"
    spool.mkdir()
    archive, _name, _data = archive_with_partial(tmp_path, "[stream]\nspool_path = %s\n" % spool)
    segment = segment_name(1, 9)
    write_segment(spool, segment)  # already renamed: complete
    listings = [[segment + ".partial"]]  # what the first listing saw
    real_listing = walstream.spool_files
    monkeypatch.setattr(walstream, "spool_files", lambda path: listings.pop() if listings else real_listing(path))
    supervisor = walstream.StreamSupervisor(archive.config, PgClient(archive.config.postgres))
    assert supervisor.received_lsn() == "0/%X" % (10 * SEGMENT_SIZE)


@pytest.mark.parametrize("partial", [b"", bytes(8192)], ids=["just-created", "first-page-not-written"])
def test_received_position_of_a_partial_without_its_first_page_is_where_it_starts(tmp_path, partial):
    """pg_receivewal creates the next .partial, then pre-fills it and writes
    its first page. Meanwhile the status reports the end of the previous
    segment, and nothing raises (an empty file once stopped the stream)."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import PgClient
    from walfiles import write_segment

    spool = tmp_path / "spool"
    spool.mkdir()
    archive, _name, _data = archive_with_partial(tmp_path, "[stream]\nspool_path = %s\n" % spool)
    write_segment(spool, segment_name(1, 9))
    (spool / (segment_name(1, 10) + ".partial")).write_bytes(partial)
    supervisor = walstream.StreamSupervisor(archive.config, PgClient(archive.config.postgres))
    assert supervisor.received_lsn() == "0/%X" % (10 * SEGMENT_SIZE)
    assert supervisor.upload_partial() is False


def test_a_failing_step_never_stops_the_stream(tmp_path):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import PgClient

    archive, _name, _data = archive_with_partial(tmp_path, "[stream]\nspool_path = %s\n" % (tmp_path / "spool"))
    supervisor = walstream.StreamSupervisor(archive.config, PgClient(archive.config.postgres))
    supervisor._guarded("status", lambda: 1 // 0)  # pylint: disable=protected-access
    assert supervisor.stats["last_error"] == "status: unexpected ZeroDivisionError: integer division or modulo by zero"
