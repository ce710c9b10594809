"""WAL archiving driven the way PostgreSQL's archiver drives it.

The segments sit in a `pg_wal` directory with one `archive_status/<SEG>.ready`
file each, as PostgreSQL leaves them. For each segment, in order, one archive
command runs as the server's OS user (no shell, for every path alike: the
`/bin/sh -c` PostgreSQL puts in front costs the same for all); when it exits 0
its `.ready` becomes `.done`, exactly what the archiver does. The clock runs
from the first command to the last exit: for an asynchronous mode that is
when the last segment is acknowledged (durable in the repository).

All segments are ready at once: a backlog, which is when throughput
matters (a server writing WAL faster than it is archived). The asynchronous
modes look at `archive_status` next to %p and push ahead, several per process.

Paths (each into a fresh target every repetition, order rotating):

- ours: `restorekeeper wal-push --config C %p %f` (zstd 3), and with
  `[archive] async = true` when this checkout's engine accepts it;
- ours with the resident pusher (`ours-pusher`, when the engine has
  `wal-pusher` and `restorekeeper-archive` is installed next to the
  launcher): the async configuration, `restorekeeper wal-pusher --config C
  --pgdata D` started at the timer's start (its start-up is timed) and
  stopped by SIGTERM after the last command, and as archive_command
  `restorekeeper-archive C %p %f <spool>/<cluster>/push`, run in the data
  directory with %p = `pg_wal/<name>` exactly as PostgreSQL runs it (the
  pusher's markers name the segment that way);
- pgBackRest: `pgbackrest archive-push %p`, synchronous and
  `archive-async=y` with `process-max=2` (zst 3);
- floor: `cp %p DIR/%f` then `sync DIR/%f DIR` (durable copy, no compression).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from harness import make_user_dir, run_as

from . import pgbackrest
from .measure import CHILD_ENV, Tool

ASYNC_KEYS = {"async": "true", "process_max": "2"}  # plus spool_path
CLUSTER = "bench"  # [cluster] name of ours' configurations
ARCHIVE_SCRIPT = "restorekeeper-archive"  # installed next to the launcher (tools/install_tool.py)


@dataclass
class ArchiveRun:
    """One timed pass of one path over every segment."""

    path: str
    repetition: int
    seconds: float
    segments: int
    stored_bytes: int


@dataclass
class Archiver:
    """A way of archiving: how to reset its target and the command for one segment."""

    name: str
    reset: Callable[[], None]
    commands: Callable[[Path], List[List[str]]]  # the processes for one segment, run in turn
    stored: Callable[[], int]
    check: Callable[[List[Path]], None]
    settle: Callable[[], None] = lambda: None
    resident: Optional["Resident"] = None  # a long-running process of the path, running during the timed pass
    in_data_dir: bool = False  # commands run in the data directory (%p relative), as PostgreSQL runs them


@dataclass
class Resident:
    """A path's long-running process (the resident pusher): started at the timer's
    start (its start-up is timed), ended by SIGTERM once the last command returned."""

    argv: List[str]
    log: Path
    markers: Optional[Path] = None  # the pusher's marker directory (<spool>/<cluster>/push)
    pushed: List[int] = field(default_factory=list)  # per timed pass: the files it pushed ahead
    quick: List[int] = field(default_factory=list)  # per timed pass: commands answered by a marker (used up: empty)

    def start(self, env: Dict[str, str], who: Dict[str, object]) -> "subprocess.Popen[bytes]":
        with open(self.log, "wb") as handle:
            return subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL, stdout=handle,  # pylint: disable=consider-using-with
                                    stderr=subprocess.STDOUT, cwd="/", **who)  # type: ignore[call-overload]

    def stop(self, process: "subprocess.Popen[bytes]", timeout: float = 120.0) -> None:
        """SIGTERM, wait; a pusher that failed or died early makes the pass fail (its figure would be wal-push's)."""
        early = process.poll()
        if early is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise RuntimeError("%s did not end within %.0fs of SIGTERM" % (self.argv[1], timeout)) from None
        text = self.log.read_text(encoding="utf-8", errors="replace")
        if early is not None or process.returncode != 0:
            how = "ended before SIGTERM" if early is not None else "failed"
            raise RuntimeError("%s %s (exit %s): %s" % (self.argv[1], how, process.returncode, text.strip()[-600:]))
        self.pushed.append(pushed_count(text))
        self.quick.append(used_markers(self.markers) if self.markers is not None else -1)

    @staticmethod
    def abandon(process: "subprocess.Popen[bytes]") -> None:
        if process.poll() is None:
            process.kill()
            process.wait()


def used_markers(directory: Path) -> int:
    """Markers restorekeeper-archive used up (it truncates the marker that proved a segment): its quick answers."""
    if not directory.is_dir():
        return 0
    return sum(1 for entry in directory.glob("*.ok") if entry.is_file() and entry.stat().st_size == 0)


def pushed_count(log: str) -> int:
    """The files a `wal-pusher --verbose` reported pushed ahead, from its last line (-1 when absent)."""
    found = re.findall(r"wal-pusher: INFO: (\d+) WAL files pushed", log)
    return int(found[-1]) if found else -1


def identity(os_user: str) -> Dict[str, object]:
    """subprocess arguments to run as the server's OS user (no extra process such as runuser)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(os_user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class WalDir:
    """`<root>/pg_wal` holding the segments and their archive_status.

    pgBackRest's asynchronous push wants %p inside its pg1-path, and reads
    the cluster's identity from pg1-path/global/pg_control: so `root` looks
    like a (stopped) data directory: PG_VERSION, global/pg_control, pg_wal/."""

    @classmethod
    def in_data_dir(cls, root: Path, source_datadir: Path, os_user: str) -> "WalDir":
        make_user_dir(root, os_user, 0o700)
        make_user_dir(root / "global", os_user, 0o700)
        for name in ("PG_VERSION", "global/pg_control"):
            shutil.copyfile(source_datadir / name, root / name)
            shutil.chown(root / name, os_user, os_user)
        return cls(root, os_user)

    def __init__(self, root: Path, os_user: str) -> None:
        self.root = root
        self.pg_wal = make_user_dir(root / "pg_wal", os_user, 0o700)
        self.status = make_user_dir(self.pg_wal / "archive_status", os_user, 0o700)
        self.os_user = os_user

    def fill(self, sources: List[Path]) -> List[Path]:
        segments = []
        for source in sources:
            dest = self.pg_wal / source.name
            shutil.copyfile(source, dest)
            shutil.chown(dest, self.os_user, self.os_user)
            segments.append(dest)
        return segments

    def mark_ready(self, segments: List[Path]) -> None:
        """Every segment waiting to be archived, as after a burst of WAL."""
        for entry in self.status.iterdir():
            entry.unlink()
        for segment in segments:
            ready = self.status / (segment.name + ".ready")
            ready.touch()
            shutil.chown(ready, self.os_user, self.os_user)

    def mark_done(self, segment: Path) -> None:
        os.rename(self.status / (segment.name + ".ready"), self.status / (segment.name + ".done"))


def drive(wal: WalDir, segments: List[Path], commands: Callable[[Path], List[List[str]]],
          extra_env: Optional[Dict[str, str]] = None, resident: Optional[Resident] = None,
          in_data_dir: bool = False) -> float:
    """The archiver's loop: one command per segment, in order; seconds from first start to last exit.

    A resident process starts at the timer's start and is stopped after the last exit (not timed).
    in_data_dir: the commands run in the data directory, as PostgreSQL runs archive_command."""
    who = identity(wal.os_user)
    env = {**CHILD_ENV, **(extra_env or {})}
    cwd = str(wal.root) if in_data_dir else "/"
    os.sync()
    started = time.perf_counter()
    process = resident.start(env, who) if resident is not None else None
    try:
        for segment in segments:
            for argv in commands(segment):
                result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, cwd=cwd,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
                                        **who)  # type: ignore[arg-type]
                if result.returncode != 0:
                    raise RuntimeError("archive command for %s failed (exit %d): %s"
                                       % (segment.name, result.returncode, result.stderr.strip()[-600:]))
            wal.mark_done(segment)
        seconds = time.perf_counter() - started
    except BaseException:
        if process is not None:
            Resident.abandon(process)
        raise
    if resident is not None and process is not None:
        resident.stop(process)
    return seconds


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def wait_quiet(marker: str, timeout: float = 60.0) -> None:
    """Wait until no process mentions `marker` (an asynchronous pusher finishing its queue)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    busy = True
                    break
            except OSError:
                continue
        if not busy:
            return
        time.sleep(0.1)


# ---------------------------------------------------------------- the floor
def floor_path(work: Path, os_user: str) -> Archiver:
    """`cp %p DIR/%f` then `sync DIR/%f DIR`: GNU `sync FILE...` fsyncs each
    argument, the directory too, so the copy and its name are durable (`dd
    conv=fsync` would skip the directory). Two processes, no shell."""
    target = work / "archive-floor"
    cp = shutil.which("cp", path=CHILD_ENV["PATH"]) or "/bin/cp"
    sync = shutil.which("sync", path=CHILD_ENV["PATH"]) or "/bin/sync"

    def reset() -> None:
        shutil.rmtree(target, ignore_errors=True)
        make_user_dir(target, os_user, 0o700)

    def commands(segment: Path) -> List[List[str]]:
        dest = str(target / segment.name)
        return [[cp, str(segment), dest], [sync, dest, str(target)]]

    def check(segments: List[Path]) -> None:
        missing = [s.name for s in segments if not (target / s.name).exists()]
        if missing:
            raise RuntimeError("floor: %d segments missing" % len(missing))

    return Archiver("floor", reset, commands, lambda: tree_bytes(target), check)


# -------------------------------------------------------------------- ours
def _ours_config_text(codec_level: int, repo: Path, spool: Optional[Path]) -> str:
    from restorekeeper_engine.config.config import render_config  # the installed engine's renderer

    text = render_config(CLUSTER, str(repo), compression_codec="zstd", compression_level=codec_level)
    if spool is None:
        return text
    extra = "".join("%s = %s\n" % item for item in {**ASYNC_KEYS, "spool_path": str(spool)}.items())
    return text.replace("[archive]\n", "[archive]\n" + extra, 1)


def ours_path(tool: Tool, work: Path, os_user: str, level: int, asynchronous: bool,
              pusher_pgdata: Optional[Path] = None) -> Archiver:
    """ours: wal-push per segment; asynchronous: [archive] async; pusher_pgdata: the resident pusher of the
    data directory holding the segments (async configuration) with restorekeeper-archive as the command."""
    pusher = pusher_pgdata is not None
    asynchronous = asynchronous or pusher
    name = "ours-pusher" if pusher else "ours-async" if asynchronous else "ours"
    repo = work / ("repo-" + name)
    spool = work / ("spool-" + name)
    config = work / (name + ".conf")

    def reset() -> None:
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(spool, ignore_errors=True)
        make_user_dir(spool, os_user, 0o700)
        config.write_text(_ours_config_text(level, repo, spool if asynchronous else None), encoding="utf-8")
        os.chmod(config, 0o600)
        shutil.chown(config, os_user, os_user)
        result = run_as(os_user, [str(tool.launcher), "repo-create", "--config", str(config)], env=CHILD_ENV)
        if result.returncode != 0:
            raise RuntimeError("repo-create (%s) failed: %s" % (name, result.stderr.strip()[-400:]))

    def commands(segment: Path) -> List[List[str]]:
        if pusher:  # %p as PostgreSQL passes it: relative to the data directory, the command's working directory
            return [[str(archive_script(tool)), str(config), "pg_wal/" + segment.name, segment.name,
                     str(spool / CLUSTER / "push")]]
        return [[str(tool.launcher), "wal-push", "--config", str(config), str(segment), segment.name]]

    def check(segments: List[Path]) -> None:
        listed = run_as(os_user, [str(tool.launcher), "wal-list", "--config", str(config)], env=CHILD_ENV).stdout.split()
        missing = sorted({s.name for s in segments} - set(listed))
        if missing:
            raise RuntimeError("%s reported success but %d segments are not listed" % (name, len(missing)))

    resident = None if pusher_pgdata is None else Resident(
        [str(tool.launcher), "wal-pusher", "--config", str(config), "--cluster", CLUSTER, "--pgdata", str(pusher_pgdata),
         "--verbose"], work / (name + ".log"), spool / CLUSTER / "push")
    return Archiver(name, reset, commands, lambda: tree_bytes(repo / CLUSTER / "wal"), check,
                    settle=lambda: wait_quiet(str(config)), resident=resident, in_data_dir=pusher)


def archive_script(tool: Tool) -> Path:
    return tool.launcher.parent / ARCHIVE_SCRIPT


def ours_pusher_supported(tool: Tool) -> Optional[str]:
    """None when this installation has `wal-pusher` and `restorekeeper-archive`; otherwise why not (n/a)."""
    if not os.access(archive_script(tool), os.X_OK):
        return "no executable %s next to the launcher" % archive_script(tool)
    result = subprocess.run([str(tool.launcher), "wal-pusher", "--help"], env=CHILD_ENV, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        return "this engine has no wal-pusher (%s)" % result.stderr.strip()[-160:]
    return None


def ours_async_supported(tool: Tool, work: Path, os_user: str, level: int) -> Optional[str]:
    """None when this engine accepts `[archive] async = true`; otherwise why not (shown as n/a)."""
    probe = ours_path(tool, work / "async-probe", os_user, level, asynchronous=True)
    make_user_dir(work / "async-probe", os_user, 0o755)
    try:
        probe.reset()
    except RuntimeError as exc:
        text = str(exc)
        return "this engine has no asynchronous wal-push (%s)" % text[text.find("unknown key"):][:120] \
            if "unknown key" in text else "the asynchronous configuration was refused: %s" % text[-200:]
    finally:
        shutil.rmtree(work / "async-probe", ignore_errors=True)
    return None


# -------------------------------------------------------------- pgBackRest
def pgbackrest_path(template: Path, work: Path, source: "pgbackrest.Settings", os_user: str,
                    asynchronous: bool) -> Archiver:
    """archive-push into a copy of a stanza-created repository (stanza-create needs the server up)."""
    name = "pgbackrest-async" if asynchronous else "pgbackrest"
    base = work / name
    settings = pgbackrest.Settings(
        repo_path=base / "repo", pg_path=source.pg_path, pg_port=source.pg_port,
        pg_socket_path=source.pg_socket_path, pg_user=source.pg_user, lock_path=base / "lock",
        spool_path=base / "spool", log_path=base / "log", archive_push_async=asynchronous)
    config = base / "pgbackrest.conf"
    tool = pgbackrest.PgBackRest(settings, config, os_user)

    def reset() -> None:
        shutil.rmtree(base, ignore_errors=True)
        make_user_dir(base, os_user, 0o750)
        pgbackrest.PgBackRest.create(settings, config, os_user)
        shutil.rmtree(settings.repo_path)
        shutil.copytree(template, settings.repo_path, symlinks=True)
        subprocess.run(["chown", "-R", "%s:%s" % (os_user, os_user), str(settings.repo_path)], check=True)

    def commands(segment: Path) -> List[List[str]]:
        return [tool.argv("archive-push", params=[str(segment)])]

    def check(segments: List[Path]) -> None:
        stored = {p.name.split("-", 1)[0] for p in (settings.repo_path / "archive").rglob("*.zst")}
        missing = sorted({s.name for s in segments} - stored)
        if missing:
            raise RuntimeError("%s reported success but %d segments are not in its repository" % (name, len(missing)))

    return Archiver(name, reset, commands, lambda: tree_bytes(settings.repo_path / "archive"), check,
                    settle=lambda: wait_quiet(str(config)))


# -------------------------------------------------------------- repetitions
def repetition(wal: WalDir, segments: List[Path], paths: List[Archiver], number: int,
               say: Callable[[str], None]) -> List[ArchiveRun]:
    """Every path once, each into a fresh target; the order rotates with `number`."""
    shift = number % len(paths)
    runs = []
    for path in paths[shift:] + paths[:shift]:
        path.reset()
        wal.mark_ready(segments)
        seconds = drive(wal, segments, path.commands, resident=path.resident, in_data_dir=path.in_data_dir)
        path.settle()
        path.check(segments)
        runs.append(ArchiveRun(path.name, number, seconds, len(segments), path.stored()))
        rate = len(segments) / seconds
        say("  repetition %d  %-17s %6.2fs  %6.1f segments/s" % (number + 1, path.name, seconds, rate))
    return runs
