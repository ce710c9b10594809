"""The source server's configuration, kept with each backup, and the working
configuration a restore into a new directory derives from it.

Distribution packages keep the configuration outside the data directory
(Debian's /etc/postgresql/<version>/<name>/, with conf.d includes), so a
backup of the data directory alone holds no postgresql.conf, pg_hba.conf or
pg_ident.conf: a copy of it cannot start. A backup therefore records the
server's effective settings (pg_file_settings, which follows every include)
and the text of its hba and ident files when they lie outside the data
directory. A restore into a new directory (and every drill) lays down a
flattened postgresql.conf from them, without the settings that name the
source's own paths (data_directory, hba_file, ident_file, external_pid_file),
so the copy never shares a pid file, socket or archive with the source.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Dict, List, Optional, Tuple

from ..common import sqlquote
from ..common.fsutil import replace_file_durably

CONFIG_NAMES = ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")
# Settings that name the source's own files: a copy must use its own (the
# defaults inside its data directory) or it would write the source's pid
# file or read configuration the restore does not control.
SOURCE_PATH_SETTINGS = frozenset({"data_directory", "config_file", "hba_file", "ident_file", "external_pid_file",
                                  "stats_temp_directory"})

_CAPTURE_SQL = (
    "SELECT current_setting('data_directory'), current_setting('config_file'), current_setting('hba_file'), "
    "current_setting('ident_file'), (SELECT system_identifier FROM pg_control_system())"
)
_SETTINGS_SQL = ("SELECT name, setting, sourcefile FROM pg_file_settings "
                 "WHERE error IS NULL AND name IS NOT NULL ORDER BY seqno")


def _inside(path: str, directory: str) -> bool:
    return os.path.normpath(path).startswith(os.path.normpath(directory).rstrip("/") + "/")


def _server_is_local(data_directory: str, system_identifier: int) -> bool:
    """Files named by the server are only read when the server runs on this
    host: the data directory it names is here and its control file holds the
    server's system identifier. A backup taken over the network from another
    host with the same paths (a fleet often has them) must not record this
    host's files as the source's."""
    try:
        with open(os.path.join(data_directory, "global", "pg_control"), "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    # pg_control starts with the system identifier, a uint64 in the server's byte order.
    return len(head) == 8 and struct.unpack("=Q", head)[0] == system_identifier


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except OSError:
        return None


def capture(client) -> Dict[str, Any]:
    """What a restore needs to give a copy of this server a working
    configuration. {"split": False} when every file lies inside the data
    directory (the backup itself carries them); otherwise the effective
    settings and the hba/ident text, or why they could not be recorded."""
    row = client.query(_CAPTURE_SQL)[0]
    data_directory, config_file, hba_file, ident_file, system_identifier = row[0], row[1], row[2], row[3], int(row[4])
    captured: Dict[str, Any] = {"data_directory": data_directory, "config_file": config_file,
                                "hba_file": hba_file, "ident_file": ident_file}
    outside = [path for path in (config_file, hba_file, ident_file) if not _inside(path, data_directory)]
    captured["split"] = bool(outside)
    if not outside:
        return captured
    if not _server_is_local(data_directory, system_identifier):
        captured["captured"] = False
        captured["reason"] = "the server does not run on the host that took the backup"
        return captured
    try:
        rows = client.query(_SETTINGS_SQL)
    except Exception as exc:  # noqa: BLE001  (permission denied on pg_file_settings for a non-superuser)
        captured["captured"] = False
        captured["reason"] = "pg_file_settings could not be read: %s" % exc
        return captured
    auto_conf = os.path.join(data_directory, "postgresql.auto.conf")
    captured["settings"] = [[name, setting, source] for name, setting, source in rows
                            if os.path.normpath(source) != os.path.normpath(auto_conf)]
    files = {}
    for key, path in (("hba", hba_file), ("ident", ident_file)):
        if not _inside(path, data_directory):
            text = _read_text(path)
            if text is None:
                captured["captured"] = False
                captured["reason"] = "%s cannot be read by the backup's OS user" % path
                return captured
            files[key] = text
    captured["files"] = files
    captured["captured"] = True
    return captured


def flattened_postgresql_conf(captured: Dict[str, Any]) -> str:
    """One postgresql.conf holding the source's effective file settings in
    their order (later lines win, as in the source), includes resolved,
    without the settings that name the source's own paths."""
    lines = [
        "# Derived by restorekeeper from the configuration of the backed-up server",
        "# (%s and the files it includes). Settings naming the source's own" % captured["config_file"],
        "# paths are left out: this copy uses the files of its own data directory.",
        "# Port, socket directory and archiving of the copy are set in postgresql.auto.conf.",
    ]
    source = None
    for name, setting, sourcefile in captured.get("settings", []):
        if name in SOURCE_PATH_SETTINGS:
            continue
        if sourcefile != source:
            lines.append("")
            lines.append("# from %s" % sourcefile)
            source = sourcefile
        lines.append("%s = %s" % (name, sqlquote.conf_value(setting)))
    return "\n".join(lines) + "\n"


def missing_in(pgdata: str) -> List[str]:
    """The configuration files a data directory lacks."""
    return [name for name in CONFIG_NAMES if not os.path.exists(os.path.join(pgdata, name))]


def describe_unusable(captured: Optional[Dict[str, Any]]) -> Optional[str]:
    """Why a backup's record cannot give a copy a configuration, or None when it can."""
    if not captured:
        return "the backup was taken before restorekeeper recorded server configurations"
    if not captured.get("split"):
        return None
    if not captured.get("captured"):
        return "its configuration was not recorded: %s" % captured.get("reason", "unknown reason")
    return None


def lay_down(pgdata: str, captured: Dict[str, Any], uid: int = -1, gid: int = -1) -> List[str]:
    """Write the configuration files pgdata lacks, derived from the record.
    Returns the names written. Files the backup carried are left alone."""
    written = []
    contents: Dict[str, Tuple[str, Optional[str]]] = {
        "postgresql.conf": ("settings", flattened_postgresql_conf(captured)),
        "pg_hba.conf": ("hba", captured.get("files", {}).get("hba")),
        "pg_ident.conf": ("ident", captured.get("files", {}).get("ident")),
    }
    for name in missing_in(pgdata):
        _key, text = contents[name]
        if text is None:
            continue
        replace_file_durably(os.path.join(pgdata, name), text.encode("utf-8", "surrogateescape"), 0o600, uid, gid)
        written.append(name)
    return written
