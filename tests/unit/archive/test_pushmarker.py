"""The push marker's shell section: what restorekeeper-archive compares with one stat."""

from __future__ import annotations

import os
import subprocess

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.pushmarker import (
    STAT_END,
    STAT_HEADER,
    Marker,
    parse_marker,
    source_paths,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.configfiles import file_identity, sources_identity

NAME = "000000010000000000000001"


def files(tmp_path, drop_ins=("b x.conf", "a.conf")):
    """A data directory with pg_wal/NAME, a configuration with drop-ins, an object."""
    (tmp_path / "pg_wal").mkdir()
    (tmp_path / "pg_wal" / NAME).write_bytes(b"w" * 64)
    config = tmp_path / "main $conf.ini"
    config.write_text("[cluster]\nname = main\n")
    if drop_ins is not None:
        (tmp_path / "main $conf.ini.d").mkdir()
        for name in drop_ins:
            (tmp_path / "main $conf.ini.d" / name).write_text("[archive]\n")
        (tmp_path / "main $conf.ini.d" / "ignored.txt").write_text("")
    stored = tmp_path / "repo object"
    stored.write_bytes(b"o" * 10)
    return str(config), str(stored)


def marker_for(tmp_path, config: str, stored: str = "", confirmed: bool = False) -> Marker:
    identity = sources_identity(config)
    marker = Marker(NAME, 64, "0" * 64, "main/wal/" + NAME, file_identity(str(tmp_path / "pg_wal" / NAME)), identity,
                    confirmed=confirmed, config_paths=source_paths(config, len(identity)))
    if stored:
        marker.object_path, marker.object_identity = stored, file_identity(stored)
    return marker


def stat_output(tmp_path, config: str, stored: str = "") -> list:
    """What GNU stat prints, run as restorekeeper-archive runs it (in the data directory)."""
    arguments = ["pg_wal/" + NAME] + source_paths(config, len(sources_identity(config))) + ([stored] if stored else [])
    result = subprocess.run(["stat", "-L", "-c", "%d %i %s %.9Y %.9Z %n", "--"] + arguments, cwd=str(tmp_path),
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def section(marker: Marker) -> list:
    lines = marker.render().decode("utf-8").split("\n")
    if STAT_HEADER not in lines:
        return []
    return lines[lines.index(STAT_HEADER) + 1:lines.index(STAT_END)]


def test_the_section_is_exactly_what_gnu_stat_prints(tmp_path):
    config, stored = files(tmp_path)
    marker = marker_for(tmp_path, config, stored)
    assert section(marker) == stat_output(tmp_path, config, stored)
    assert marker.config_paths[2:] == [config + ".d/a.conf", config + ".d/b x.conf"]  # sources_identity's order


def test_a_confirmed_remote_marker_carries_the_section_without_an_object(tmp_path):
    config, _stored = files(tmp_path, drop_ins=None)
    marker = marker_for(tmp_path, config, confirmed=True)
    assert section(marker) == stat_output(tmp_path, config)
    assert len(section(marker)) == 2  # the segment and the main file: no drop-in directory


def test_no_section_where_the_quick_path_would_not_believe_the_marker(tmp_path):
    config, stored = files(tmp_path)
    assert section(marker_for(tmp_path, config)) == []  # remote, not confirmed
    no_config = marker_for(tmp_path, config, stored)
    no_config.config = []
    assert section(no_config) == []
    newline = marker_for(tmp_path, config, stored)
    newline.object_path = stored + "\nforged"
    assert section(newline) == []
    old = marker_for(tmp_path, config, stored)
    old.segment = old.segment[:3] + [-1, old.segment[4]]
    assert section(old) == []


def test_a_drop_in_that_came_since_the_identity_leaves_no_section(tmp_path):
    config, stored = files(tmp_path)
    identity = sources_identity(config)
    with open(config + ".d/c.conf", "w") as handle:
        handle.write("[archive]\n")
    assert source_paths(config, len(identity)) == []
    marker = marker_for(tmp_path, config, stored)
    marker.config = identity
    assert section(marker) == []


def test_the_section_is_invisible_to_the_parser_and_format_2_still_reads(tmp_path):
    config, stored = files(tmp_path)
    marker = marker_for(tmp_path, config, stored)
    parsed = parse_marker(marker.render())
    assert parsed is not None
    assert (parsed.name, parsed.segment, parsed.config, parsed.object_path) == (NAME, marker.segment, marker.config, stored)
    assert parsed.proves_quickly(NAME, str(tmp_path / "pg_wal" / NAME), config)
    marker.config_paths = []
    old = marker.render().replace(b"push marker 3", b"push marker 2")
    assert parse_marker(old) is not None
    assert parse_marker(old.replace(b"push marker 2", b"push marker 1")) is None
    truncated = marker_for(tmp_path, config, stored).render()
    assert parse_marker(truncated[:truncated.index(b"end stat")]) is None  # no final newline: incomplete
    assert os.path.exists(stored)
