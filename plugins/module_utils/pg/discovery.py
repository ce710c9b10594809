"""Find out how a PostgreSQL cluster on this host is laid out, without connecting.

The engine must work on the clusters people actually run, not only on the
layout the test harness makes: Debian/Ubuntu postgresql-common (configuration
under /etc/postgresql/N/NAME, binaries under /usr/lib/postgresql/N/bin, one
unit postgresql@N-NAME per cluster), the PGDG RPM layout (/usr/pgsql-N/bin,
unit postgresql-N) and a plain initdb directory. The server may be down, so
everything comes from files and /proc: PG_VERSION, postgresql.conf (parsed
with PostgreSQL's own rules, includes followed), postmaster.pid, the running
postmaster's executable and its ancestors (a Patroni parent), pg_lsclusters.

Explicit settings (bindir, port) win over what is discovered.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import subprocess
from types import MappingProxyType
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ..common.errors import RestorekeeperError

PATRONI_DOC = "docs/patroni.md"
DEFAULT_PORT = 5432
# Where distributions put a major version's server binaries (N = major).
DEBIAN_BINDIR = "/usr/lib/postgresql/%d/bin"
PGDG_BINDIR = "/usr/pgsql-%d/bin"
# Settings that only take effect at a restart, for refuse_ha_managed's advice.
_RECOVERY_SETTINGS = ("restore_command", "recovery_target_time", "recovery_target_xid", "recovery_target_lsn",
                      "recovery_target_name", "recovery_target", "recovery_target_timeline",
                      "recovery_target_action", "recovery_target_inclusive")


_NO_SETTINGS: Mapping[str, str] = MappingProxyType({})


class DiscoveryError(RestorekeeperError):
    """The cluster cannot be identified, or what identifies it contradicts itself."""


class Places(NamedTuple):
    """Where discovery looks; the defaults are the real ones, tests point them at temporary directories."""

    debian_config_root: str = "/etc/postgresql"
    debian_data_root: str = "/var/lib/postgresql"
    debian_log_root: str = "/var/log/postgresql"
    debian_bindir: str = DEBIAN_BINDIR
    pgdg_bindir: str = PGDG_BINDIR
    systemd_dirs: Tuple[str, ...] = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
    socket_dirs: Tuple[str, ...] = ("/var/run/postgresql", "/run/postgresql", "/tmp")
    proc: str = "/proc"
    use_pg_lsclusters: bool = True


PLACES = Places()


class ClusterLayout(NamedTuple):
    layout: str
    major_version: int
    data_directory: str
    config_file: str
    hba_file: str
    ident_file: str
    config_directory: str
    includes: Tuple[str, ...]
    bindir: str
    port: int
    socket_directory: str
    log_file: str
    service: str
    debian_cluster: str
    owner: str
    running_pid: Optional[int]
    ha_manager: str
    ha_detail: str
    # Why bindir is empty (every place tried), so require_bindir can say it.
    bindir_problem: str = ""

    @property
    def split_config(self) -> bool:
        return not _inside(self.config_file, self.data_directory)

    def as_dict(self) -> Dict[str, Any]:
        values = self._asdict()
        values["includes"] = list(self.includes)
        values["split_config"] = self.split_config
        return values

    def require_bindir(self) -> str:
        """The server's bin directory, or a DiscoveryError naming the places tried and the fix."""
        if self.bindir:
            return self.bindir
        raise DiscoveryError("no PostgreSQL %d server binaries found for %s (%s)"
                             % (self.major_version, self.data_directory, self.bindir_problem or "none found"),
                             "install the server package of PostgreSQL %d or set [postgres] bindir"
                             % self.major_version)


# ---------------------------------------------------------------- config files
class ConfigFile(NamedTuple):
    """The effective settings of a postgresql.conf and the files it includes."""

    path: str
    settings: Dict[str, str]        # lower-case name -> value, the last one wins
    sources: Dict[str, str]         # lower-case name -> file that set it last
    includes: Tuple[str, ...]       # included files and include_dir directories, in order


_NAME = r"[A-Za-z_][A-Za-z0-9_$.\-]*"
_LINE = re.compile(r"^\s*(?P<name>%s)\s*(?:=\s*)?(?P<rest>.*)$" % _NAME)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_MAX_INCLUDE_DEPTH = 10  # PostgreSQL's CONF_FILE_MAX_DEPTH


def _parse_value(rest: str, where: str) -> str:
    """The value at the start of `rest`: a quoted string ('' and backslash
    escapes as PostgreSQL reads them) or an unquoted token; then only
    whitespace and a # comment may follow."""
    rest = rest.lstrip()
    if rest.startswith("'"):
        out: List[str] = []
        index = 1
        while True:
            if index >= len(rest):
                raise DiscoveryError("%s: unterminated quoted string" % where,
                                     "fix the quoting in that configuration line")
            char = rest[index]
            if char == "'" and rest[index + 1:index + 2] == "'":
                out.append("'")
                index += 2
            elif char == "'":
                index += 1
                break
            elif char == "\\" and index + 1 < len(rest):
                following = rest[index + 1]
                if following in "01234567":
                    digits = re.match(r"[0-7]{1,3}", rest[index + 1:]).group(0)  # type: ignore[union-attr]
                    out.append(chr(int(digits, 8)))
                    index += 1 + len(digits)
                else:
                    out.append(_ESCAPES.get(following, following))
                    index += 2
            else:
                out.append(char)
                index += 1
        value, tail = "".join(out), rest[index:]
    else:
        match = re.match(r"[^\s#'=]*", rest)
        value = match.group(0) if match else ""
        tail = rest[len(value):]
    tail = tail.strip()
    if tail and not tail.startswith("#"):
        raise DiscoveryError("%s: unexpected text %r after the value" % (where, tail),
                             "quote values that contain spaces")
    return value


def parse_config_lines(text: str, path: str) -> Iterator[Tuple[int, str, str]]:
    """(line number, lower-case name, value) of every setting line of one file."""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise DiscoveryError("%s:%d: cannot parse %r" % (path, number, stripped),
                                 "PostgreSQL itself would refuse this file; fix that line")
        yield number, match.group("name").lower(), _parse_value(match.group("rest"), "%s:%d" % (path, number))


def read_config(path: str) -> ConfigFile:
    """Read a postgresql.conf as the server would: include, include_if_exists
    and include_dir are followed (relative to the including file's directory),
    include_dir takes *.conf not starting with '.', in name order; later
    settings win."""
    result = ConfigFile(os.path.abspath(path), {}, {}, ())
    includes: List[str] = []
    _read_into(result, includes, os.path.abspath(path), 0, must_exist=True)
    return result._replace(includes=tuple(includes))


def _read_into(result: ConfigFile, includes: List[str], path: str, depth: int, must_exist: bool) -> None:
    if depth > _MAX_INCLUDE_DEPTH:
        raise DiscoveryError("%s: includes nested more than %d deep" % (path, _MAX_INCLUDE_DEPTH),
                             "look for a file that includes itself")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        if must_exist:
            raise DiscoveryError("configuration file %s does not exist" % path,
                                 "name the cluster's data directory or Debian cluster correctly") from None
        return
    except OSError as exc:
        raise DiscoveryError("cannot read configuration file %s: %s" % (path, exc.strerror),
                             "run as the cluster's OS user or root") from None
    base = os.path.dirname(path)
    for _number, name, value in parse_config_lines(text, path):
        if name in ("include", "include_if_exists"):
            target = os.path.normpath(os.path.join(base, value))
            includes.append(target)
            _read_into(result, includes, target, depth + 1, must_exist=name == "include")
        elif name == "include_dir":
            directory = os.path.normpath(os.path.join(base, value))
            includes.append(directory)
            try:
                names = sorted(n for n in os.listdir(directory) if n.endswith(".conf") and not n.startswith("."))
            except FileNotFoundError:
                raise DiscoveryError("%s: include_dir %s does not exist" % (path, directory),
                                     "create it or remove the include_dir line") from None
            except OSError as exc:
                raise DiscoveryError("cannot list %s: %s" % (directory, exc.strerror),
                                     "run as the cluster's OS user or root") from None
            for name_in_dir in names:
                target = os.path.join(directory, name_in_dir)
                if os.path.isfile(target):
                    _read_into(result, includes, target, depth + 1, must_exist=True)
        else:
            result.settings[name] = value
            result.sources[name] = path


# ------------------------------------------------------------------ processes
def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _cmdline(places: Places, pid: int) -> List[str]:
    try:
        with open(os.path.join(places.proc, str(pid), "cmdline"), "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _parent_pid(places: Places, pid: int) -> int:
    # The command name in field 2 may hold spaces and parentheses: split after the last ')'.
    stat = _read_text(os.path.join(places.proc, str(pid), "stat"))
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return 0


def _all_pids(places: Places) -> List[int]:
    try:
        return sorted(int(name) for name in os.listdir(places.proc) if name.isdigit())
    except OSError:
        return []


def postmaster_pid(data_directory: str, places: Places = PLACES) -> Optional[int]:
    """The pid of the live postmaster of this data directory, or None when none runs
    (no postmaster.pid, or a stale one whose pid is gone or now another program's)."""
    return _postmaster_pid(places, data_directory)[0]


def _postmaster_pid(places: Places, data_directory: str) -> Tuple[Optional[int], List[str]]:
    """(pid, postmaster.pid lines) of a live postmaster of this data directory."""
    lines = _read_text(os.path.join(data_directory, "postmaster.pid")).splitlines()
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None, []
    argv = _cmdline(places, pid)
    # A stale file's pid may belong to another process by now.
    if not argv or not re.search(r"postgres|postmaster", os.path.basename(argv[0])):
        return None, []
    return pid, lines


def _option_value(argv: Sequence[str], short: str, long_names: Sequence[str]) -> str:
    """The value of -D DIR / -c name=value style options in a postmaster's argv."""
    for index, arg in enumerate(argv):
        if arg == short and index + 1 < len(argv):
            return argv[index + 1]
        for name in long_names:
            if arg.startswith("--%s=" % name):
                return arg.split("=", 1)[1]
    return ""


def _setting_from_argv(argv: Sequence[str], setting: str) -> str:
    for index, arg in enumerate(argv):
        candidate = ""
        if arg == "-c" and index + 1 < len(argv):
            candidate = argv[index + 1]
        elif arg.startswith("--"):
            candidate = arg[2:]
        if "=" in candidate:
            name, value = candidate.split("=", 1)
            if name.replace("-", "_").lower() == setting:
                return value
    return ""


def _running_by_port(places: Places, port: int, extra_socket_dirs: Sequence[str]) -> str:
    """The data directory of a running server on `port`: its socket lock file
    names it (line 2); else a postmaster whose postmaster.pid says that port."""
    for directory in list(extra_socket_dirs) + list(places.socket_dirs):
        lines = _read_text(os.path.join(directory, ".s.PGSQL.%d.lock" % port)).splitlines()
        if len(lines) > 1 and os.path.isdir(lines[1]) and _postmaster_pid(places, lines[1])[0]:
            return lines[1]
    for pid in _all_pids(places):
        argv = _cmdline(places, pid)
        if not argv or not os.path.basename(argv[0]).startswith("postgres"):
            continue
        directory = _option_value(argv, "-D", ("pgdata",)) or os.environ.get("PGDATA", "")
        if not directory:
            continue
        lines = _read_text(os.path.join(directory, "postmaster.pid")).splitlines()
        if len(lines) > 3 and lines[0].strip() == str(pid) and lines[3].strip() == str(port):
            return lines[1] if len(lines) > 1 and lines[1] else directory
    return ""


# ------------------------------------------------------------------- binaries
def _server_major(bindir: str) -> Optional[int]:
    """The major version `postgres --version` of that directory reports."""
    try:
        out = subprocess.run([os.path.join(bindir, "postgres"), "--version"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(match.group(1)) if match else None


def _has_server(bindir: str) -> bool:
    return os.access(os.path.join(bindir, "postgres"), os.X_OK)


def _known_bindirs(major: int, places: Places) -> List[str]:
    return [places.debian_bindir % major, places.pgdg_bindir % major]


def bindir_for_version(major: int, places: Places = PLACES) -> str:
    """The server bin directory of a major version: Debian/Ubuntu's, PGDG's,
    then the directory of PATH's `postgres` if its version matches."""
    tried = []
    for candidate in _known_bindirs(major, places):
        if _has_server(candidate):
            return candidate
        tried.append(candidate)
    on_path = shutil.which("postgres")
    if on_path:
        directory = os.path.dirname(os.path.realpath(on_path))
        if _server_major(directory) == major:
            return directory
        tried.append("%s (PostgreSQL %s)" % (directory, _server_major(directory) or "unknown"))
    else:
        tried.append("postgres on PATH (none)")
    raise DiscoveryError("no PostgreSQL %d server binaries found; tried %s" % (major, ", ".join(tried)),
                         "install the PostgreSQL %d server package or set [postgres] bindir" % major)


def installed_majors(places: Places = PLACES) -> List[int]:
    """Major versions whose server binaries sit in a distribution's known place."""
    found = set()
    for pattern in (places.debian_bindir, places.pgdg_bindir):
        prefix, suffix = pattern.split("%d")
        for path in glob.glob(glob.escape(prefix) + "*" + glob.escape(suffix)):
            number = path[len(prefix):len(path) - len(suffix)]
            if number.isdigit() and _has_server(path):
                found.add(int(number))
    return sorted(found)


def _same_dir(first: str, second: str) -> bool:
    try:
        return os.path.realpath(first) == os.path.realpath(second)
    except OSError:
        return False


def _inside(path: str, directory: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(directory).rstrip("/") + "/")


# --------------------------------------------------------------------- Debian
class DebianCluster(NamedTuple):
    version: int
    name: str
    config: ConfigFile
    data_directory: str
    problem: str = ""  # why its configuration could not be read ("" when it could)


def _debian_clusters(places: Places) -> List[DebianCluster]:
    """Every postgresql-common cluster of the host, from /etc/postgresql/N/NAME/postgresql.conf.
    A cluster whose configuration cannot be read is kept with its problem, so
    it fails only a caller that asks for that cluster."""
    clusters = []
    for conf in sorted(glob.glob(os.path.join(glob.escape(places.debian_config_root), "*", "*", "postgresql.conf"))):
        directory = os.path.dirname(conf)
        version_text, name = directory.split(os.sep)[-2:]
        if not version_text.isdigit():
            continue
        try:
            config = read_config(conf)
        except DiscoveryError as exc:
            clusters.append(DebianCluster(int(version_text), name, ConfigFile(conf, {}, {}, ()), "", str(exc)))
            continue
        data = config.settings.get("data_directory", "")
        if not data and os.path.islink(os.path.join(directory, "pgdata")):
            data = os.readlink(os.path.join(directory, "pgdata"))
        data = os.path.normpath(os.path.join(directory, data or os.path.join(places.debian_data_root,
                                                                             version_text, name)))
        clusters.append(DebianCluster(int(version_text), name, config, data))
    return clusters


def _debian_log_file(places: Places, cluster: DebianCluster) -> str:
    """The log file pg_lsclusters reports (it knows postgresql-common's rules), else its default."""
    entry = _pg_lsclusters(places).get((cluster.version, cluster.name), {})
    if entry.get("logfile"):
        return str(entry["logfile"])
    link = os.path.join(os.path.dirname(cluster.config.path), "log")
    if os.path.islink(link):
        return os.readlink(link)
    return os.path.join(places.debian_log_root, "postgresql-%d-%s.log" % (cluster.version, cluster.name))


def _pg_lsclusters(places: Places) -> Dict[Tuple[int, str], Dict[str, Any]]:
    program = shutil.which("pg_lsclusters") if places.use_pg_lsclusters else None
    if not program:
        return {}
    try:
        result = subprocess.run([program, "--json"], capture_output=True, text=True, timeout=60, check=False)
        entries = json.loads(result.stdout) if result.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        entries = []
    if not entries:  # an old postgresql-common without --json: its columns
        return _pg_lsclusters_text(program)
    return {(int(e["version"]), str(e["cluster"])): e for e in entries if "version" in e and "cluster" in e}


def _pg_lsclusters_text(program: str) -> Dict[Tuple[int, str], Dict[str, Any]]:
    try:
        result = subprocess.run([program, "--no-header"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: Dict[Tuple[int, str], Dict[str, Any]] = {}
    for line in result.stdout.splitlines():
        # Ver Cluster Port Status Owner Data-directory Log-file
        fields = line.split()
        if len(fields) >= 7 and fields[0].isdigit():
            found[(int(fields[0]), fields[1])] = {"logfile": fields[6]}
    return found


def parse_debian_cluster(text: str) -> Tuple[int, str]:
    match = re.match(r"^(\d+)/([^/\s]+)$", text.strip())
    if not match:
        raise DiscoveryError("%r is not a Debian cluster name" % text, "write VERSION/NAME, e.g. 15/main "
                             "(see pg_lsclusters)")
    return int(match.group(1)), match.group(2)


# ---------------------------------------------------------------------- HA
def _patroni_config_of(argv: Sequence[str]) -> str:
    """The configuration file a patroni process was started with."""
    for arg in argv[1:]:
        if arg.startswith("-") or os.path.basename(arg) == "patroni":
            continue
        if arg.endswith((".yml", ".yaml")) or os.path.isfile(arg):
            return arg
    return ""


def _is_patroni(argv: Sequence[str]) -> bool:
    """patroni itself, or an interpreter running the patroni script/module."""
    if not argv:
        return False
    if os.path.basename(argv[0]) == "patroni":
        return True
    interpreter = os.path.basename(argv[0]).startswith("python")
    return interpreter and any(os.path.basename(arg) == "patroni" for arg in argv[1:3])


def _config_names_data_dir(path: str, data_directory: str) -> bool:
    """A text match of the YAML `data_dir:` line (no YAML parser on hosts)."""
    for line in _read_text(path).splitlines():
        match = re.match(r"^\s*data_dir\s*:\s*(.+?)\s*(?:#.*)?$", line)
        if match and _same_dir(match.group(1).strip("'\""), data_directory):
            return True
    return False


def _detect_patroni(places: Places, data_directory: str, running_pid: Optional[int]) -> Tuple[str, str]:
    pid = running_pid
    seen = 0
    while pid and pid > 1 and seen < 32:  # the postmaster's ancestors
        argv = _cmdline(places, pid)
        if pid != running_pid and _is_patroni(argv):
            config = _patroni_config_of(argv)
            return "patroni", "patroni process %d%s is the postmaster's parent" % (
                pid, " (%s)" % config if config else "")
        pid = _parent_pid(places, pid)
        seen += 1
    for pid in _all_pids(places):
        argv = _cmdline(places, pid)
        if _is_patroni(argv):
            config = _patroni_config_of(argv)
            if config and _config_names_data_dir(config, data_directory):
                return "patroni", "patroni process %d (%s) names this data directory" % (pid, config)
    return "", ""


def refuse_ha_managed(layout: ClusterLayout, action: str, settings: Mapping[str, str] = _NO_SETTINGS) -> None:
    """Refuse to change a server an HA manager controls: it would undo the
    change or fail over. The hint gives the exact settings to put into
    Patroni's configuration instead."""
    if not layout.ha_manager:
        return
    parameters = {k: v for k, v in settings.items() if k not in _RECOVERY_SETTINGS}
    recovery = {k: v for k, v in settings.items() if k in _RECOVERY_SETTINGS}
    parts = []
    if parameters:
        parts.append("parameters: {%s}" % ", ".join("%s: %s" % (k, json.dumps(str(v)))
                                                    for k, v in parameters.items()))
    if recovery:
        parts.append("recovery_conf: {%s}" % ", ".join("%s: %s" % (k, json.dumps(str(v)))
                                                       for k, v in recovery.items()))
    advice = ("put into Patroni's configuration instead (patronictl edit-config, or the postgresql section of "
              "patroni.yml): postgresql: {%s}" % ", ".join(parts)) if parts else (
        "do it through %s instead (patronictl restart/reinit, or a restore that bootstraps a new cluster)"
        % layout.ha_manager)
    raise DiscoveryError(
        "refusing to %s: the server of %s is managed by %s (%s)" % (action, layout.data_directory,
                                                                    layout.ha_manager, layout.ha_detail),
        "%s; Patroni then applies them and restarts where needed; see %s" % (advice, PATRONI_DOC))


# ------------------------------------------------------------------ discover
def _systemd_unit_pgdata(places: Places, unit: str) -> Optional[str]:
    """PGDATA a PGDG unit (and its drop-ins) sets; None when the unit does not exist."""
    found = None
    for directory in reversed(places.systemd_dirs):
        paths = [os.path.join(directory, unit + ".service")]
        paths += sorted(glob.glob(os.path.join(glob.escape(directory), unit + ".service.d", "*.conf")))
        for path in paths:
            text = _read_text(path)
            if not text:
                continue
            found = found or "/var/lib/pgsql/%s/data" % unit.split("-", 1)[1]
            for match in re.finditer(r"^\s*Environment\s*=\s*\"?PGDATA=([^\"\s]+)", text, re.MULTILINE):
                found = match.group(1)
    return found


def _major_of(data_directory: str) -> int:
    text = _read_text(os.path.join(data_directory, "PG_VERSION")).strip()
    if not os.path.isdir(data_directory):
        raise DiscoveryError("data directory %s does not exist" % data_directory,
                             "name an existing data directory ([postgres] pgdata), a Debian cluster "
                             "([postgres] debian_cluster, see pg_lsclusters) or the port of a running server")
    if not text.isdigit():
        raise DiscoveryError("%s is not a PostgreSQL data directory (no readable PG_VERSION)" % data_directory,
                             "name the directory initdb made (it holds PG_VERSION), and run as its OS user "
                             "or root")
    return int(text)


def _find_debian(clusters: List[DebianCluster], data_directory: str = "", version: int = 0, name: str = "",
                 port: int = 0) -> Optional[DebianCluster]:
    """The postgresql-common cluster named, or claiming that data directory or port;
    two configurations claiming the one data directory are refused."""
    if version:
        chosen = [c for c in clusters if c.version == version and c.name == name]
    elif data_directory:
        chosen = [c for c in clusters if not c.problem and _same_dir(c.data_directory, data_directory)]
    else:
        chosen = [c for c in clusters
                  if not c.problem and _int_setting(c.config.settings.get("port", ""), c.config.path) == port]
        if len(chosen) > 1:
            raise DiscoveryError("several Debian clusters use port %d: %s" % (
                port, ", ".join("%d/%s" % (c.version, c.name) for c in chosen)),
                "name the cluster ([postgres] debian_cluster) or its data directory ([postgres] pgdata)")
    if not chosen:
        return None
    if chosen[0].problem:
        raise DiscoveryError("cannot read the configuration of Debian cluster %d/%s: %s" % (
            chosen[0].version, chosen[0].name, chosen[0].problem), "fix that file, or run as root")
    claimants = [c for c in clusters if not c.problem and _same_dir(c.data_directory, chosen[0].data_directory)]
    if len(claimants) > 1:
        raise DiscoveryError(
            "two clusters claim data directory %s: %s" % (chosen[0].data_directory, ", ".join(
                "%d/%s (%s)" % (c.version, c.name, c.config.path) for c in claimants)),
            "a data directory belongs to one cluster: remove the stale configuration directory "
            "under %s or change its data_directory" % os.path.dirname(os.path.dirname(claimants[0].config.path)))
    return chosen[0]


def discover(pgdata: str = "", debian_cluster: str = "", bindir: str = "", port: int = 0,
             places: Places = PLACES, host: str = "") -> ClusterLayout:
    """The layout of one cluster, identified by its data directory, its Debian
    name ("15/main") or the port of a running server (or a Debian cluster's
    configured port). Explicit bindir and port override discovery. host, when
    a socket directory, is looked in first for a running server's lock file."""
    clusters = _debian_clusters(places) if os.path.isdir(places.debian_config_root) else []
    debian: Optional[DebianCluster] = None
    if debian_cluster:
        version, name = parse_debian_cluster(debian_cluster)
        debian = _find_debian(clusters, version=version, name=name)
        if debian is None:
            raise DiscoveryError("Debian cluster %s does not exist (no %s)" % (
                debian_cluster, os.path.join(places.debian_config_root, str(version), name, "postgresql.conf")),
                "list the clusters with pg_lsclusters")
        if pgdata and not _same_dir(pgdata, debian.data_directory):
            raise DiscoveryError("Debian cluster %s has data directory %s, not %s" % (
                debian_cluster, debian.data_directory, pgdata), "set only one of pgdata and debian_cluster")
        pgdata = debian.data_directory
    elif not pgdata and port:
        pgdata = _running_by_port(places, port, (host,) if host.startswith("/") else ())
        if not pgdata:
            debian = _find_debian(clusters, port=port)
            pgdata = debian.data_directory if debian else ""
        if not pgdata:
            raise DiscoveryError("no running server on port %d and no Debian cluster configured for it" % port,
                                 "start the server, or name its data directory ([postgres] pgdata) or Debian "
                                 "cluster ([postgres] debian_cluster)")
    elif not pgdata:
        raise DiscoveryError("nothing identifies the cluster to work on",
                             "set [postgres] pgdata (its data directory), debian_cluster (e.g. 15/main) or the "
                             "port of the running server")
    pgdata = os.path.abspath(pgdata)
    running_pid, pid_lines = _postmaster_pid(places, pgdata)
    argv = _cmdline(places, running_pid) if running_pid else []
    if debian is None and os.path.isdir(pgdata) and not os.path.exists(os.path.join(pgdata, "PG_VERSION")) \
            and os.path.isfile(os.path.join(pgdata, "postgresql.conf")):
        # -D may name a configuration directory whose postgresql.conf points at the data.
        config = read_config(os.path.join(pgdata, "postgresql.conf"))
        if config.settings.get("data_directory"):
            pgdata = os.path.normpath(os.path.join(pgdata, config.settings["data_directory"]))
            running_pid, pid_lines = _postmaster_pid(places, pgdata)
            argv = _cmdline(places, running_pid) if running_pid else []
    if debian is None and clusters:
        debian = _find_debian(clusters, data_directory=pgdata)
    major = _major_of(pgdata)
    if debian is not None:
        config = debian.config
    else:
        config_path = _setting_from_argv(argv, "config_file") or os.path.join(pgdata, "postgresql.conf")
        config = read_config(config_path)
    effective = dict(config.settings)
    auto = os.path.join(pgdata, "postgresql.auto.conf")
    if os.path.isfile(auto):  # ALTER SYSTEM's file, read last by the server
        try:
            effective.update(read_config(auto).settings)
        except DiscoveryError:
            pass  # the server reports its own file's problems; the layout stays usable
    for name in ("port", "unix_socket_directories", "hba_file", "ident_file"):
        from_argv = _setting_from_argv(argv, name)
        if from_argv:
            effective[name] = from_argv
    if debian is not None and debian.version != major:
        raise DiscoveryError("Debian cluster %d/%s holds a PostgreSQL %d data directory (%s)" % (
            debian.version, debian.name, major, pgdata), "fix the cluster's configuration or its PG_VERSION")

    server_bindir, layout, bindir_problem = _bindir(places, major, bindir, running_pid, debian is not None)
    if debian is not None:
        layout, service = "debian", "postgresql@%d-%s" % (debian.version, debian.name)
    else:
        unit = "postgresql-%d" % major
        unit_pgdata = _systemd_unit_pgdata(places, unit)
        service = unit if unit_pgdata and _same_dir(unit_pgdata, pgdata) else ""
        if service:
            layout = "pgdg"

    if port:
        effective_port = port
    elif running_pid and len(pid_lines) > 3 and pid_lines[3].strip().isdigit():
        effective_port = int(pid_lines[3])
    else:
        effective_port = _int_setting(effective.get("port", ""), config.path)
    socket = effective.get("unix_socket_directories", "").split(",")[0].strip()
    if running_pid and len(pid_lines) > 4:
        socket = pid_lines[4].strip()
    ha_manager, ha_detail = _detect_patroni(places, pgdata, running_pid)
    try:
        owner = pwd.getpwuid(os.stat(pgdata).st_uid).pw_name
    except (KeyError, OSError):
        owner = ""
    return ClusterLayout(
        layout=layout, major_version=major, data_directory=pgdata, config_file=config.path,
        hba_file=_path_setting(effective.get("hba_file", ""), pgdata, "pg_hba.conf"),
        ident_file=_path_setting(effective.get("ident_file", ""), pgdata, "pg_ident.conf"),
        config_directory=os.path.dirname(config.path), includes=config.includes, bindir=server_bindir,
        port=effective_port, socket_directory=socket,
        log_file=_debian_log_file(places, debian) if debian else _log_file(places, pgdata, running_pid, effective),
        service=service, debian_cluster="%d/%s" % (debian.version, debian.name) if debian else "",
        owner=owner, running_pid=running_pid, ha_manager=ha_manager, ha_detail=ha_detail,
        bindir_problem=bindir_problem)


def _int_setting(text: str, where: str) -> int:
    if not text:
        return DEFAULT_PORT
    try:
        return int(text)
    except ValueError:
        raise DiscoveryError("%s: port %r is not a number" % (where, text), "fix the port setting") from None


def _path_setting(value: str, data_directory: str, default_name: str) -> str:
    # The server resolves relative paths against its working directory, the data directory.
    return os.path.normpath(os.path.join(data_directory, value or default_name))


def _bindir(places: Places, major: int, explicit: str, running_pid: Optional[int],
            debian: bool) -> Tuple[str, str, str]:
    """(bindir, layout, problem): an explicit one (checked against PG_VERSION), the running
    postmaster's, the distribution's for that major version, then PATH's."""
    if explicit:
        found = _server_major(explicit)
        if found is None:
            raise DiscoveryError("%s holds no working PostgreSQL server (postgres --version failed)" % explicit,
                                 "set [postgres] bindir to the bin directory of PostgreSQL %d" % major)
        if found != major:
            raise DiscoveryError("bindir %s is PostgreSQL %d but the data directory is PostgreSQL %d" % (
                explicit, found, major), "set [postgres] bindir to the bin directory of PostgreSQL %d%s" % (
                major, _suggest(places, major)))
        return explicit, _layout_of(places, major, explicit, debian), ""
    if running_pid:
        try:
            executable = os.readlink(os.path.join(places.proc, str(running_pid), "exe"))
        except OSError:  # another user's process: its argv[0] is the path pg_ctl started
            argv = _cmdline(places, running_pid)
            executable = argv[0] if argv and os.path.isabs(argv[0]) else ""
        if executable:
            directory = os.path.dirname(executable)
            for known in _known_bindirs(major, places):  # the distribution's name for it
                if _same_dir(known, directory):
                    directory = known
            return directory, _layout_of(places, major, directory, debian), ""
    for candidate in _known_bindirs(major, places):
        if _has_server(candidate):
            return candidate, _layout_of(places, major, candidate, debian), ""
    try:
        found_dir = bindir_for_version(major, places)
    except DiscoveryError as exc:
        return "", "debian" if debian else "initdb", exc.message
    return found_dir, _layout_of(places, major, found_dir, debian), ""


def _suggest(places: Places, major: int) -> str:
    try:
        return ", e.g. %s" % bindir_for_version(major, places)
    except DiscoveryError:
        return ""


def _layout_of(places: Places, major: int, bindir: str, debian: bool) -> str:
    if debian:
        return "debian"
    if _same_dir(bindir, places.pgdg_bindir % major):
        return "pgdg"
    return "initdb"


def _log_file(places: Places, data_directory: str, running_pid: Optional[int], settings: Dict[str, str]) -> str:
    """current_logfiles (logging collector), else where the postmaster's stderr goes (pg_ctl -l)."""
    current = _read_text(os.path.join(data_directory, "current_logfiles")).splitlines()
    for line in current:
        kind, _sep, path = line.partition(" ")
        if kind == "stderr" and path:
            return os.path.normpath(os.path.join(data_directory, path))
    if running_pid:
        try:
            target = os.readlink(os.path.join(places.proc, str(running_pid), "fd", "2"))
        except OSError:
            target = ""
        if target.startswith("/") and not target.startswith("/dev/") and " (deleted)" not in target:
            return target
    return ""


def discover_from_config(postgres: Any, places: Places = PLACES) -> ClusterLayout:
    """The cluster the [postgres] section names (pgdata, debian_cluster, else port);
    its bindir and port, when set, override discovery."""
    return discover(pgdata=getattr(postgres, "pgdata", "") or "",
                    debian_cluster=getattr(postgres, "debian_cluster", "") or "",
                    bindir=postgres.bindir or "", port=int(postgres.port or 0), places=places,
                    host=postgres.host or "")


def layout_named(postgres: Any, pgdata: str = "",
                 debian_cluster: str = "") -> Tuple[Optional[Dict[str, Any]], Optional[DiscoveryError]]:
    """For reports (`restorekeeper info`, backup_info): the layout of the
    cluster that pgdata or debian_cluster names (DiscoveryError when it cannot
    be found), else of the one the [postgres] section names, as a dict, and
    why that one could not be discovered (not raised: the repository may be
    read on another host). (None, None) when nothing names a cluster."""
    explicit = bool(pgdata or debian_cluster)
    if explicit:
        postgres = postgres._replace(pgdata=pgdata, debian_cluster=debian_cluster)
    if not identifies_cluster(postgres):
        return None, None
    try:
        return discover_from_config(postgres).as_dict(), None
    except DiscoveryError as exc:
        if explicit:
            raise
        return None, exc


_LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


def identifies_cluster(postgres: Any) -> bool:
    """Whether the [postgres] section names a cluster of this host: pgdata,
    debian_cluster, or a port on a local socket or loopback address (a port of
    another host must not pick a local cluster that happens to share it)."""
    if getattr(postgres, "pgdata", "") or getattr(postgres, "debian_cluster", ""):
        return True
    host = postgres.host or ""
    return bool(postgres.port) and (host.startswith("/") or host in _LOCAL_HOSTS)


def describe_layout(layout: ClusterLayout) -> str:
    """One line for people: `restorekeeper info` prints it."""
    parts = ["%s layout" % layout.layout + (" %s" % layout.debian_cluster if layout.debian_cluster else ""),
             "PostgreSQL %d" % layout.major_version, "data %s" % layout.data_directory,
             "config %s" % layout.config_file + (" (+%d included)" % len(layout.includes) if layout.includes else ""),
             "bindir %s" % (layout.bindir or "NOT FOUND"), "port %d" % layout.port,
             "socket %s" % (layout.socket_directory or "libpq default"),
             "service %s" % (layout.service or "none"),
             "running, pid %d" % layout.running_pid if layout.running_pid else "stopped"]
    if layout.log_file:
        parts.append("log %s" % layout.log_file)
    if layout.ha_manager:
        parts.append("managed by %s: %s" % (layout.ha_manager, layout.ha_detail))
    return ", ".join(parts)
