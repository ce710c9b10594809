"""pgBackRest as the bench's competitor: installed from the distribution,
run as the server's OS user with its own configuration file, repository,
lock, spool and log directories under the bench's work directory (never
/etc/pgbackrest.conf, never the system's paths).

Equal footing with ours: zstd level 3 (`compress-type=zst`,
`compress-level=3`) and `process-max=2` (this machine's cores).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from harness import make_user_dir, run_as

STANZA = "bench"
COMPRESS_TYPE = "zst"
COMPRESS_LEVEL = 3
PROCESS_MAX = 2
# pgBackRest 2.45 (Debian 12) knows PostgreSQL up to 15; newer releases know more.
SUPPORTED_MAJOR = {"2.45": 15, "2.46": 15, "2.47": 16, "2.48": 16, "2.49": 16, "2.50": 16, "2.51": 16,
                   "2.52": 16, "2.53": 16, "2.54": 17, "2.55": 17}
NEWEST_MAJOR = 18  # releases after the ones above


class PgBackRestUnavailable(RuntimeError):
    """pgBackRest is absent and cannot be installed: its columns are skipped."""


@dataclass
class Settings:
    """Everything one pgBackRest configuration file holds."""

    repo_path: Path
    pg_path: Path
    pg_port: int
    pg_socket_path: Path
    pg_user: str
    lock_path: Path
    spool_path: Path
    log_path: Path
    archive_push_async: bool = False
    archive_get_async: bool = True  # restore prefetches WAL, its best mode
    process_max: int = PROCESS_MAX
    extra: Dict[str, str] = field(default_factory=dict)


def render_config(settings: Settings) -> str:
    """The text of the bench's pgbackrest.conf (pure: unit-tested)."""
    yes_no = {True: "y", False: "n"}
    global_options = {
        "repo1-path": str(settings.repo_path),
        # Nothing is expired during the bench; set so pgBackRest does not warn.
        "repo1-retention-full": "9999",
        "compress-type": COMPRESS_TYPE,
        "compress-level": str(COMPRESS_LEVEL),
        "process-max": str(settings.process_max),
        "lock-path": str(settings.lock_path),
        "spool-path": str(settings.spool_path),
        "log-path": str(settings.log_path),
        "log-level-console": "warn",
        "log-level-file": "off",
        "start-fast": "y",
        **settings.extra,
    }
    lines = ["# pgBackRest configuration of the bench (bench/lib/pgbackrest.py)", "[global]"]
    lines += ["%s=%s" % item for item in global_options.items()]
    lines += ["", "[global:archive-push]", "archive-async=%s" % yes_no[settings.archive_push_async]]
    lines += ["", "[global:archive-get]", "archive-async=%s" % yes_no[settings.archive_get_async]]
    lines += ["", "[%s]" % STANZA,
              "pg1-path=%s" % settings.pg_path,
              "pg1-port=%d" % settings.pg_port,
              "pg1-socket-path=%s" % settings.pg_socket_path,
              "pg1-user=%s" % settings.pg_user]
    return "\n".join(lines) + "\n"


def parse_version(text: str) -> Optional[str]:
    """'pgBackRest 2.45' -> '2.45'."""
    match = re.search(r"pgBackRest (\d+\.\d+)", text)
    return match.group(1) if match else None


def supports(version: str, pg_major: int) -> bool:
    """Whether this pgBackRest release knows that PostgreSQL major version."""
    if version in SUPPORTED_MAJOR:
        return pg_major <= SUPPORTED_MAJOR[version]
    return pg_major <= NEWEST_MAJOR and tuple(map(int, version.split("."))) > (2, 55)


def binary() -> Optional[str]:
    return shutil.which("pgbackrest", path="/usr/bin:/bin:/usr/local/bin")


def ensure_installed(say) -> str:
    """The installed version; installs the distribution's package as root when absent."""
    if binary() is None:
        if os.geteuid() != 0:
            raise PgBackRestUnavailable("pgbackrest is not installed and the bench is not root "
                                        "(install it with: apt-get install pgbackrest)")
        say("pgBackRest absent: apt-get install -y pgbackrest")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        result = subprocess.run(["apt-get", "install", "-y", "-q", "pgbackrest"], env=env, capture_output=True,
                                text=True, check=False)
        if result.returncode != 0 or binary() is None:
            raise PgBackRestUnavailable("apt-get install -y pgbackrest failed: %s" % result.stderr.strip()[-400:])
    out = subprocess.run([str(binary()), "version"], capture_output=True, text=True, check=False).stdout
    version = parse_version(out)
    if version is None:
        raise PgBackRestUnavailable("cannot read the version of pgbackrest: %r" % out)
    return version


class PgBackRest:
    """One configuration file and its repository, run as `os_user`."""

    def __init__(self, settings: Settings, config_path: Path, os_user: str) -> None:
        self.settings = settings
        self.config_path = config_path
        self.os_user = os_user
        self.executable = binary() or "pgbackrest"

    @classmethod
    def create(cls, settings: Settings, config_path: Path, os_user: str) -> "PgBackRest":
        """Write the config (0600, the user's) and make its directories."""
        for path in (settings.repo_path, settings.lock_path, settings.spool_path, settings.log_path):
            make_user_dir(path, os_user, 0o750)
        config_path.write_text(render_config(settings), encoding="utf-8")
        os.chmod(config_path, 0o600)
        shutil.chown(config_path, os_user, os_user)
        return cls(settings, config_path, os_user)

    def argv(self, command: str, *options: str, params: Sequence[str] = ()) -> List[str]:
        """pgbackrest OPTIONS COMMAND PARAMS (options must come before the command)."""
        return [self.executable, "--config=%s" % self.config_path, "--stanza=%s" % STANZA, *options, command, *params]

    def archive_command(self) -> str:
        """For archive_command: synchronous push (the config's [global:archive-push])."""
        return "%s --config=%s --stanza=%s archive-push %%p" % (self.executable, self.config_path, STANZA)

    def run(self, command: str, *options: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        result = run_as(self.os_user, self.argv(command, *options), timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError("pgbackrest %s failed (exit %d): %s" % (
                command, result.returncode, (result.stderr or result.stdout).strip()[-800:]))
        return result

    def info(self) -> List[Dict[str, object]]:
        import json

        return json.loads(self.run("info", "--output=json").stdout)

    def backups(self) -> List[Dict[str, object]]:
        """The stanza's backups, oldest first (label, type, repo size, timestamps)."""
        stanzas = self.info()
        return list(stanzas[0].get("backup", [])) if stanzas else []


def repo_bytes(root: Union[str, Path], under: Sequence[str] = ("backup",)) -> int:
    """Bytes under the repository's given top directories."""
    total = 0
    for top in under:
        base = Path(root) / top
        if base.exists():
            total += sum(p.stat().st_size for p in base.rglob("*") if p.is_file())
    return total
