"""The large profile (`bench/run.py --profile large`, `make bench-large`): issue 16 item 8.

A pgbench database of at least 4 GiB (scale 250 by default, `--large-scale`),
at least 1 GiB of WAL replayed by the restores (`--large-wal-mib`), an S3
repository on moto's server behind HTTPS on loopback for both tools
(bench/lib/s3bench.py), and per path the peak RSS and the largest temporary
file (bench/lib/peak.py). Paths, each timed `repetitions` times (median):

- archive (local and S3): ours synchronous, asynchronous and with the
  resident pusher (`wal-pusher` running during the pass, archive_command
  `restorekeeper-archive`), pgBackRest asynchronous (and synchronous,
  local), the floor (cp + sync, local);
- full backup to S3: ours against pgBackRest (process-max 2);
- restore from S3 to a target time, promoted: ours ([restore] process_max 2)
  against pgBackRest (process-max 2);
- restore from the local repository: ours against the floor (tar -xf of the
  same base decompressed beforehand + cp restore_command);
- delta restore after about 1% of the pages changed, against a full restore
  of the same backup with the same options (ours when `restorekeeper restore
  --help` has --delta, else n/a; pgBackRest --delta);
- a backup to S3 with TMPDIR on a 64 MiB tmpfs (as root): success or not.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import itertools
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from harness import PgCluster, make_user_dir, server_os_user
from harness.runas import chown_to

from . import archiving, pgbackrest, restores, s3bench, segments as wal_source, stats
from .archived import ArchivedCluster, BenchFailed
from .parts import Context, _archivers, _brest_settings
from .peak import Peak, Watch

MIB = 1024 * 1024
GIB = 1024 * MIB
DEFAULT_SCALE = 250  # about 17 MiB per unit with fillfactor 90: about 4.2 GiB
DEFAULT_WAL_MIB = 1024
DEFAULT_SEGMENTS = 64
OURS_BUCKET = "restorekeeper-bench"
BREST_BUCKET = "pgbackrest-bench"
# About 1% of pgbench_accounts' pages: 5 rows on every 100th page (HOT, TID scan, see backups.CHANGE_SQL).
CHANGE_1PCT = (
    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE ctid = ANY (ARRAY("
    "SELECT format('(%%s,%%s)', page, line)::tid FROM generate_series(0, %(pages)s - 1, 100) AS page, "
    "generate_series(1, 5) AS line))"
)


# The file naming a local archiving path's processes (bench/lib/archiving.py's layout).
LOCAL_MARKERS: Dict[str, Callable[[Path], Path]] = {
    "ours": lambda work: work / "ours.conf", "ours-async": lambda work: work / "ours-async.conf",
    "ours-pusher": lambda work: work / "ours-pusher.conf",
    "pgbackrest": lambda work: work / "pgbackrest" / "pgbackrest.conf",
    "pgbackrest-async": lambda work: work / "pgbackrest-async" / "pgbackrest.conf",
    "floor": lambda work: work / "archive-floor",
}


@dataclass
class LargeRow:
    area: str  # archive-local, archive-s3, full-s3, restore-s3, restore-local, delta, tmpfs
    path: str  # ours, ours-async, pgbackrest, pgbackrest-async, floor, ours-full, pgbackrest-full, ...
    label: str
    runs: List[float]
    peaks: List[Peak] = field(default_factory=list)
    rate: str = ""
    note: str = ""

    @property
    def seconds(self) -> Optional[float]:
        return stats.median(self.runs)


#: The halves of the profile --only can pick: each archiving area, and the database (backup, restores, delta, tmpfs).
AREAS = ("archive-local", "archive-s3", "database")
#: Every archiving path, as --archive-paths names them.
ARCHIVE_PATHS = ("ours", "ours-async", "ours-pusher", "pgbackrest", "pgbackrest-async", "floor")


def areas_of(parts: Sequence[str]) -> Tuple[str, ...]:
    """The AREAS that bench/run.py's --only parts select: archive is both archiving areas, any database part
    (backup, incremental, restore, drill) the database half."""
    wanted = set()
    for part in parts:
        if part == "archive":
            wanted.update(("archive-local", "archive-s3"))
        elif part in AREAS:
            wanted.add(part)
        else:
            wanted.add("database")
    return tuple(area for area in AREAS if area in wanted)


@dataclass
class Options:
    scale: int
    wal_mib: int
    segments: int
    level: int
    areas: Tuple[str, ...] = AREAS
    archive_paths: Tuple[str, ...] = ()  # empty: every path

    def times(self, area: str, path: str) -> bool:
        """Whether this run times path in area."""
        return area in self.areas and (not self.archive_paths or path in self.archive_paths)


class Large:
    """Everything the large profile sets up, and its rows."""

    def __init__(self, ctx: Context, options: Options, s3: s3bench.HttpsS3, moto_pids: Sequence[int]) -> None:
        self.ctx = ctx
        self.options = options
        self.s3 = s3
        self.exclude = list(moto_pids)
        self.rows: List[LargeRow] = []
        self.notes: Dict[str, str] = {}
        self._tmp_numbers = itertools.count(1)
        self.user = server_os_user()

    # ------------------------------------------------------------ helpers
    def tmpdir(self) -> Path:
        """A private, empty TMPDIR for one timed run (its high-water size is recorded)."""
        return make_user_dir(self.ctx.work / "tmp" / ("run-%d" % next(self._tmp_numbers)), self.user, 0o700)

    def watched(self, markers: Sequence[str], tmp: Path, timed: Callable[[], float]) -> Tuple[float, Peak]:
        with Watch([str(m) for m in markers], [tmp], self.exclude) as peak:
            seconds = timed()
        shutil.rmtree(tmp, ignore_errors=True)
        return seconds, peak

    def add(self, row: LargeRow) -> None:
        self.rows.append(row)
        peak = max(row.peaks, key=lambda p: p.rss_bytes) if row.peaks else Peak()
        self.ctx.say("  %-14s %-18s %s  peak RSS %.0f MiB, largest temp file %.1f MiB %s" % (
            row.area, row.path, stats.fmt_seconds(row.seconds), peak.rss_bytes / MIB,
            peak.largest_tmp_file / MIB, row.rate or row.note))

    def ours_s3_config(self, base: Path, path: str, local_text: str, extra: str = "") -> Path:
        """ours' config with its [repository] section replaced by the S3 one (0600, the server user's)."""
        head, rest = local_text.split("[repository]\n", 1)
        rest = rest.split("\n\n", 1)[1] if "\n\n" in rest else ""
        text = head + "\n".join(s3bench.ours_repository_lines(self.s3, OURS_BUCKET, path)) + "\n\n" + rest + extra
        config = base / ("ours-s3-%s.conf" % path.replace("/", "-"))
        config.write_text(text, encoding="utf-8")
        config.chmod(0o600)
        chown_to(config, self.user)
        return config

    # ------------------------------------------------------------ archive
    def archive(self) -> None:
        ctx, opts = self.ctx, self.options
        work = make_user_dir(ctx.work / "archive", self.user, 0o755)
        cluster = PgCluster.create(ctx.version, work / "pg", conf=wal_source.cluster_settings(opts.segments))
        try:
            cluster.start()
            ctx.say("WAL source: pgbench until %d segments are complete" % opts.segments)
            names = wal_source.generate(cluster, opts.segments, 10, ctx.say, deadline_seconds=900)
            template = None
            brest_s3 = None
            if ctx.brest_version:
                brest = pgbackrest.PgBackRest.create(_brest_settings(cluster, work / "stanza"),
                                                     work / "stanza" / "pgbackrest.conf", self.user)
                brest.run("stanza-create")
                template = brest.settings.repo_path
                brest_s3 = self._brest_s3(cluster, work / "stanza-s3", "/archive-bench", push_async=True)
                brest_s3.run("stanza-create")
            wal = archiving.WalDir.in_data_dir(work / "pgdata", cluster.datadir, self.user)
            segs = wal.fill([cluster.pg_wal_dir / name for name in names[-opts.segments:]])
            cluster.stop()
            local = _archivers(ctx, work, cluster, template, opts.level, wal.root)
            pusher = self._pusher_supported()
            if pusher:
                after = 1 + max(i for i, p in enumerate(local) if p.name.startswith("ours"))
                local.insert(after, archiving.ours_path(ctx.tool, work, self.user, opts.level, True, wal.root))
            for path in local:  # what names a detached process of this path (see peak.py)
                path.marker = str(LOCAL_MARKERS[path.name](work))  # type: ignore[attr-defined]
            s3_paths = self._s3_archivers(work, wal.root, brest_s3, pusher)
            cluster.destroy()
            for area, every in (("archive-local", local), ("archive-s3", s3_paths)):
                paths = [path for path in every if opts.times(area, path.name)]
                if not paths:
                    continue
                ctx.say("Timing archiving of %d segments (%s) x %d: %s" % (
                    len(segs), area, ctx.repetitions, ", ".join(p.name for p in paths)))
                runs: Dict[str, List[Tuple[float, Peak]]] = {p.name: [] for p in paths}
                for _number in range(ctx.repetitions):
                    for path in paths:
                        path.reset()
                        wal.mark_ready(segs)
                        tmp = self.tmpdir()

                        def timed(path=path, tmp=tmp) -> float:
                            seconds = archiving.drive(wal, segs, path.commands, {"TMPDIR": str(tmp)},
                                                      path.resident, path.in_data_dir)
                            path.settle()
                            return seconds
                        runs[path.name].append(self.watched(self._markers(path), tmp, timed))
                        path.check(segs)
                for path in paths:
                    seconds = [s for s, _p in runs[path.name]]
                    rate = len(segs) * 16 / (stats.median(seconds) or 1.0)
                    ahead = "" if path.resident is None else pusher_detail(path.resident, len(seconds))
                    self.add(LargeRow(area, path.name, archiving_label(area, path.name), seconds,
                                      [p for _s, p in runs[path.name]],
                                      "%.0f MiB/s (%d segments%s)" % (rate, len(segs), ahead)))
        finally:
            cluster.destroy()

    def _pusher_supported(self) -> bool:
        reason = archiving.ours_pusher_supported(self.ctx.tool)
        if reason is not None:
            self.notes["ours-pusher"] = "n/a: %s" % reason
            self.ctx.say("  ours with the resident pusher: n/a, %s" % reason)
        return reason is None

    @staticmethod
    def _markers(path: archiving.Archiver) -> List[str]:
        return [getattr(path, "marker", "")]

    def _brest_s3(self, cluster: PgCluster, base: Path, repo_path: str, push_async: bool = False,
                  pg_path: Optional[Path] = None) -> pgbackrest.PgBackRest:
        make_user_dir(base, self.user, 0o750)
        settings = dataclasses.replace(_brest_settings(cluster, base), archive_push_async=push_async,
                                       extra=s3bench.pgbackrest_options(self.s3, BREST_BUCKET, repo_path))
        if pg_path is not None:
            settings = dataclasses.replace(settings, pg_path=pg_path)
        return pgbackrest.PgBackRest.create(settings, base / "pgbackrest.conf", self.user)

    def _s3_archivers(self, work: Path, pg_path: Path, brest_s3: Optional[pgbackrest.PgBackRest],
                      pusher: bool = False) -> List[archiving.Archiver]:
        paths = []
        make_user_dir(work / "s3", self.user, 0o755)
        for asynchronous, pgdata in ((False, None), (True, None)) + (((True, pg_path),) if pusher else ()):
            local = archiving.ours_path(self.ctx.tool, work / "s3", self.user, self.options.level, asynchronous,
                                        pgdata)
            paths.append(self._ours_s3_archiver(work, local, local.name))
        if brest_s3 is not None:
            source = dataclasses.replace(brest_s3.settings, pg_path=pg_path)
            tool = pgbackrest.PgBackRest.create(source, work / "stanza-s3" / "push.conf", self.user)

            def reset() -> None:
                s3bench.delete_prefix(self.s3, BREST_BUCKET, "archive-bench/archive/", keep=["archive.info"])
                # Its asynchronous queue too: the spool's .ok files of the last repetition would otherwise
                # acknowledge every segment again without uploading it.
                shutil.rmtree(source.spool_path, ignore_errors=True)
                make_user_dir(source.spool_path, self.user, 0o750)

            def check(segs: List[Path]) -> None:
                stored = s3bench.prefix_bytes(self.s3, BREST_BUCKET, "archive-bench/archive/")
                if stored < len(segs) * 1024:
                    raise BenchFailed("pgbackrest-async (S3) stored only %d bytes" % stored)

            brest_path = archiving.Archiver(
                "pgbackrest-async", reset, lambda seg: [tool.argv("archive-push", params=[str(seg)])],
                lambda: s3bench.prefix_bytes(self.s3, BREST_BUCKET, "archive-bench/archive/"), check,
                settle=lambda: archiving.wait_quiet(str(tool.config_path)))
            brest_path.marker = str(tool.config_path)  # type: ignore[attr-defined]
            paths.append(brest_path)
        return paths

    def _ours_s3_archiver(self, work: Path, local: archiving.Archiver, name: str) -> archiving.Archiver:
        """ours_path's archiver, its config pointed at a fresh S3 prefix on every reset."""
        counter = itertools.count(1)
        config = work / "s3" / (name + ".conf")
        spool = work / "s3" / ("spool-" + name)

        def reset() -> None:
            local.reset()  # writes config (local repo) and the spool; then point it at S3
            prefix = "%s-%d" % (name, next(counter))
            text = config.read_text(encoding="utf-8")
            s3_config = self.ours_s3_config(work / "s3", prefix, text)
            shutil.move(str(s3_config), str(config))
            result = subprocess.run([str(self.ctx.tool.launcher), "repo-create", "--config", str(config)],
                                    env=archiving.CHILD_ENV, capture_output=True, text=True, check=False,
                                    **archiving.identity(self.user))  # type: ignore[arg-type]
            if result.returncode != 0:
                raise BenchFailed("repo-create (%s, S3) failed: %s" % (name, result.stderr.strip()[-400:]))
            make_user_dir(spool, self.user, 0o700)

        def check(segs: List[Path]) -> None:
            listed = subprocess.run([str(self.ctx.tool.launcher), "wal-list", "--config", str(config)],
                                    env=archiving.CHILD_ENV, capture_output=True, text=True, check=False,
                                    **archiving.identity(self.user)).stdout.split()  # type: ignore[arg-type]
            missing = sorted({s.name for s in segs} - set(listed))
            if missing:
                raise BenchFailed("%s (S3) reported success but %d segments are not listed" % (name, len(missing)))

        made = dataclasses.replace(local, reset=reset, stored=lambda: 0, check=check)
        made.marker = str(config)  # type: ignore[attr-defined]
        return made

    # ----------------------------------------------------------- database
    def database(self) -> None:
        ctx, opts = self.ctx, self.options
        from restorekeeper_engine.archive.walarchive import archive_command

        archived = ArchivedCluster.create(ctx.tool, ctx.work, ctx.version, "pg-large")
        db = archived.cluster
        try:
            ours_s3 = ArchivedCluster(db, ctx.tool, self.ours_s3_config(
                archived.config.parent, "ours-db", archived.config.read_text(encoding="utf-8"),
                "\n[restore]\nprocess_max = 2\n"), archived.repository)
            ours_s3.rk("repo-create")
            brest = self._brest_s3(db, ctx.work / "pg-large-pgbackrest", "/db") if ctx.brest_version else None
            # The initial load is not archived (it precedes every backup): archive_command is `true` meanwhile.
            db.execute("alter system set archive_command = 'true'")
            db.execute("select pg_reload_conf()")
            started = time.monotonic()
            archived.pgbench("-i", "-q", "-s", str(opts.scale), "-F", "90")
            archived.archive_all()  # every segment of the load gone through `true` before the real command
            if brest is not None:
                brest.run("stanza-create")
            commands = [archive_command(str(ctx.tool.launcher), str(archived.config)),
                        archive_command(str(ctx.tool.launcher), str(ours_s3.config))]
            if brest is not None:
                commands.append(brest.archive_command())
            db.execute("alter system set archive_command = %s", (" && ".join(commands),))
            db.execute("select pg_reload_conf()")
            archived.archive_all()
            size = archived.database_bytes()
            self.notes["database"] = "pgbench -i -s %d -F 90: %.2f GiB (%.0fs to load)" % (
                opts.scale, size / GIB, time.monotonic() - started)
            ctx.say("Database: %s" % self.notes["database"])
            self._database_parts(archived, ours_s3, brest)
        finally:
            archived.destroy()

    def _database_parts(self, archived: ArchivedCluster, ours_s3: ArchivedCluster,
                        brest: Optional[pgbackrest.PgBackRest]) -> None:
        archived.quiesce()
        local_record = archived.rk_json("backup", "--type", "full")
        s3_records, brest_labels = self._full_backups(ours_s3, brest)
        setup_local, setup_s3 = self._replay_setup(archived, local_record, s3_records[-1],
                                                   brest_labels[-1] if brest_labels else None)
        self._restores(archived, ours_s3, brest, setup_local, setup_s3)
        self._delta(archived, brest, local_record["label"], brest_labels[-1] if brest_labels else None)
        self._tmpfs(ours_s3)

    def _full_backups(self, ours_s3: ArchivedCluster, brest: Optional[pgbackrest.PgBackRest]
                      ) -> Tuple[List[dict], List[str]]:
        ctx = self.ctx
        ctx.say("Timing full backups to S3 x %d: ours%s" % (ctx.repetitions, ", pgBackRest" if brest else ""))
        records, labels = [], []
        ours_runs: List[Tuple[float, Peak]] = []
        brest_runs: List[Tuple[float, Peak]] = []
        for _number in range(ctx.repetitions):
            ours_s3.quiesce()
            tmp = self.tmpdir()
            ours_s3.extra_env = {"TMPDIR": str(tmp)}

            def ours() -> float:
                started = time.perf_counter()
                records.append(ours_s3.rk_json("backup", "--type", "full"))
                return time.perf_counter() - started
            ours_runs.append(self.watched([str(ours_s3.config)], tmp, ours))
            ours_s3.extra_env = {}
            if brest is not None:
                ours_s3.quiesce()

                def theirs() -> float:
                    started = time.perf_counter()
                    brest.run("backup", "--type=full")
                    return time.perf_counter() - started
                brest_runs.append(self.watched([str(brest.config_path)], self.tmpdir(), theirs))
                labels.append(str(brest.backups()[-1]["label"]))
        size = records[-1]["database_size"]
        self.add(LargeRow("full-s3", "ours", "restorekeeper backup --type full (S3)", [s for s, _p in ours_runs],
                          [p for _s, p in ours_runs], _rate(size, ours_runs)))
        if brest_runs:
            self.add(LargeRow("full-s3", "pgbackrest", "pgbackrest backup --type=full, process-max 2 (S3)",
                              [s for s, _p in brest_runs], [p for _s, p in brest_runs], _rate(size, brest_runs)))
        return records, labels

    def _replay_setup(self, archived: ArchivedCluster, local_record: dict, s3_record: dict,
                      brest_label: Optional[str]) -> Tuple[restores.RestoreSetup, restores.RestoreSetup]:
        """At least wal_mib of WAL after the backups, a target time T, one transaction after T, all archived."""
        ctx, db = self.ctx, archived.cluster
        wanted = self.options.wal_mib * MIB
        lsn0 = db.scalar("select pg_current_wal_lsn()")
        ctx.say("Generating at least %d MiB of WAL after the backups (pgbench -c 2 rounds of 10 s)" % self.options.wal_mib)
        while float(db.scalar("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn0,))) < wanted:
            archived.pgbench("-n", "-c", "2", "-j", "2", "-T", "10", options="-c synchronous_commit=off")
        history_rows = int(db.scalar("select count(*) from pgbench_history"))
        target = restores._moment(db)  # pylint: disable=protected-access
        target_lsn = db.scalar("select pg_current_wal_lsn()")
        db.execute("create table after_target as select 1 as marker")
        ctx.say("  archiving it (three archive commands per segment) ...")
        archived.archive_all()
        replay = {name: float(db.scalar("select pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (target_lsn, rec["start_lsn"])))
                  for name, rec in (("local", local_record), ("s3", s3_record))}
        self.notes["replay"] = ("WAL replayed to the target (target LSN - backup start LSN): %.2f GiB from the S3 "
                                "backup, %.2f GiB from the local one; target %s" % (
                                    replay["s3"] / GIB, replay["local"] / GIB, target))
        ctx.say("  " + self.notes["replay"])
        names = [n for n in archived.archived_wal() if len(n) == 24 and n[:8] == local_record["wal_start"][:8]
                 and n >= local_record["wal_start"]]
        plain_wal = self.ctx.work / "floor-wal"
        archived.fetch_wal(names, plain_wal)
        plain_tar = restores._plain_tar(archived, local_record, self.ctx.work)  # pylint: disable=protected-access
        local = restores.RestoreSetup(local_record["label"], target, history_rows, len(names), plain_tar, plain_wal,
                                      local_record["database_size"], None)
        return local, dataclasses.replace(local, label=s3_record["label"], pgbackrest_label=brest_label)

    def _restores(self, archived: ArchivedCluster, ours_s3: ArchivedCluster, brest: Optional[pgbackrest.PgBackRest],
                  local: restores.RestoreSetup, remote: restores.RestoreSetup) -> None:
        work = self.ctx.work
        paths: List[Tuple[str, str, str, List[str], Callable[[int], restores.RestoreRun], Optional[ArchivedCluster]]] = [
            ("restore-s3", "ours", "restorekeeper restore, [restore] process_max 2 (S3)", [str(ours_s3.config)],
             lambda n: restores.time_ours(ours_s3, remote, work, n), ours_s3),
            ("restore-local", "ours", "restorekeeper restore, [restore] process_max 2 (local)", [str(archived.config)],
             lambda n: restores.time_ours(archived, local, work, n), archived),
            ("restore-local", "floor", "floor: tar -xf + cp restore_command", [str(local.plain_wal), str(local.plain_tar)],
             lambda n: restores.time_floor(archived, local, work, n), None),
        ]
        if brest is not None:
            paths.insert(1, ("restore-s3", "pgbackrest", "pgbackrest restore, process-max 2 (S3)", [str(brest.config_path)],
                             lambda n: restores.time_pgbackrest(archived, remote, work, n, brest), None))
        self.ctx.say("Timing restores to %s x %d" % (local.target_time, self.ctx.repetitions))
        for area, name, label, markers, timer, rk in paths:
            items = []
            for number in range(self.ctx.repetitions):
                tmp = self.tmpdir()
                if rk is not None:
                    rk.extra_env = {"TMPDIR": str(tmp)}
                holder: List[restores.RestoreRun] = []
                items.append(self.watched(markers, tmp, functools.partial(_seconds_of, timer, number, holder)))
                if rk is not None:
                    rk.extra_env = {}
            phases = ", ".join("%s %.1fs" % (k, v) for k, v in holder[-1].phases.items() if v >= 0.05)
            self.add(LargeRow(area, name, label, [s for s, _p in items], [p for _s, p in items], note=phases))

    # -------------------------------------------------------------- delta
    def _delta(self, archived: ArchivedCluster, brest: Optional[pgbackrest.PgBackRest], label: str,
               brest_label: Optional[str]) -> None:
        help_text = archived.cluster.run_as_owner([self.ctx.tool.launcher, "restore", "--help"]).stdout
        if "--delta" in help_text:
            self._delta_pair("ours", lambda slot, delta: self._ours_immediate(archived, slot, label, delta),
                             [str(archived.config)], archived)
        else:
            self.notes["delta"] = "ours: n/a (no --delta): `restorekeeper restore --help` has no --delta option"
            self.rows.append(LargeRow("delta", "ours", "n/a (no --delta)", [], note="restore --help lacks --delta"))
            self.rows.append(LargeRow("delta", "ours-full", "n/a (no --delta)", []))
        if brest is not None and brest_label:
            self._delta_pair("pgbackrest", lambda slot, delta: self._brest_immediate(brest, slot, brest_label, delta),
                             [str(brest.config_path)], None)

    def _delta_pair(self, who: str, restore: Callable[[PgCluster, bool], None], markers: List[str],
                    rk: Optional[ArchivedCluster]) -> None:
        """A full restore into a fresh directory (timed), then about 1% of its pages changed on it, stopped,
        and the same backup restored over it with --delta (timed). Both to the backup's consistent point, promoted."""
        version = self.ctx.version
        slot = PgCluster.create(version, self.ctx.work / ("delta-" + who), initdb=False)
        shutil.rmtree(slot.datadir, ignore_errors=True)
        try:
            results = {}
            for delta in (False, True):
                tmp = self.tmpdir()
                if rk is not None:
                    rk.extra_env = {"TMPDIR": str(tmp)}

                def timed(delta=delta) -> float:
                    started = time.perf_counter()
                    restore(slot, delta)
                    return time.perf_counter() - started
                results[delta] = self.watched(markers, tmp, timed)
                if rk is not None:
                    rk.extra_env = {}
                if not delta:
                    pages = int(slot.scalar("select pg_relation_size('pgbench_accounts') / 8192"))
                    slot.execute(CHANGE_1PCT % {"pages": pages})
                    slot.execute("checkpoint")
                    self.notes["delta-" + who] = "%d of %d pages of pgbench_accounts changed (about 1%%)" % (
                        len(range(0, pages, 100)), pages)
                slot.stop()
            label = {"ours": "restorekeeper restore --delta", "pgbackrest": "pgbackrest restore --delta"}[who]
            self.add(LargeRow("delta", who + "-full", label.replace(" --delta", "") + ", full, fresh directory",
                              [results[False][0]], [results[False][1]]))
            self.add(LargeRow("delta", who, label + " over it after ~1% of pages changed",
                              [results[True][0]], [results[True][1]]))
        finally:
            slot.destroy()

    def _ours_immediate(self, archived: ArchivedCluster, slot: PgCluster, label: str, delta: bool) -> None:
        result = archived.rk_json("restore", "--pgdata", str(slot.datadir), "--port", str(slot.port), "--socket-dir",
                                  str(slot.socket_dir), "--backup", label, "--target-immediate", "--target-action",
                                  "promote", "--start", *(["--delta"] if delta else []))
        if result.get("state") != "promoted":
            raise BenchFailed("restore%s ended in state %r" % (" --delta" if delta else "", result.get("state")))

    @staticmethod
    def _brest_immediate(brest: pgbackrest.PgBackRest, slot: PgCluster, label: str, delta: bool) -> None:
        started = time.perf_counter()
        make_user_dir(slot.datadir, slot.os_user, 0o700)
        brest.run("restore", "--pg1-path=%s" % slot.datadir, "--set=%s" % label, "--type=immediate",
                  "--target-action=promote", *(["--delta"] if delta else []))
        restores._append_server_settings(slot, {})  # pylint: disable=protected-access
        restores._start_until_promoted(slot, started, 3600, "pgbackrest")  # pylint: disable=protected-access

    # -------------------------------------------------------------- tmpfs
    def _tmpfs(self, ours_s3: ArchivedCluster) -> None:
        """A backup to S3 with TMPDIR on a 64 MiB tmpfs: success or failure, recorded."""
        mount = make_user_dir(self.ctx.work / "tmpfs64", self.user, 0o700)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mount)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            self.notes["tmpfs"] = "not measured: mount -t tmpfs failed (%s)" % done.stderr.strip()[-200:]
            self.rows.append(LargeRow("tmpfs", "ours", "backup to S3, TMPDIR on 64 MiB tmpfs", [], note="n/a"))
            return
        try:
            chown_to(mount, self.user)
            ours_s3.quiesce()
            ours_s3.extra_env = {"TMPDIR": str(mount)}
            outcome: Dict[str, str] = {}

            def timed() -> float:
                started = time.perf_counter()
                try:
                    ours_s3.rk_json("backup", "--type", "full")
                    outcome["result"] = "succeeded"
                except BenchFailed as exc:
                    outcome["result"] = "failed: %s" % str(exc)[-300:]
                return time.perf_counter() - started
            seconds, peak = self._watch_mount(ours_s3, mount, timed)
            self.add(LargeRow("tmpfs", "ours", "restorekeeper backup to S3, TMPDIR on a 64 MiB tmpfs", [seconds],
                              [peak], note=outcome["result"]))
        finally:
            ours_s3.extra_env = {}
            subprocess.run(["umount", str(mount)], capture_output=True, check=False)

    def _watch_mount(self, ours_s3: ArchivedCluster, mount: Path, timed: Callable[[], float]) -> Tuple[float, Peak]:
        with Watch([str(ours_s3.config)], [mount], self.exclude) as peak:
            seconds = timed()
        return seconds, peak


def archiving_label(area: str, name: str) -> str:
    where = "S3" if area == "archive-s3" else "local"
    return {"ours": "restorekeeper wal-push (%s)", "ours-async": "restorekeeper wal-push, async (%s)",
            "ours-pusher": "restorekeeper wal-pusher + restorekeeper-archive (%s)",
            "pgbackrest": "pgbackrest archive-push (%s)", "pgbackrest-async": "pgbackrest archive-push, async (%s)",
            "floor": "floor: cp + sync (%s)"}[name] % where


def pusher_detail(resident: archiving.Resident, runs: int) -> str:
    """How much the resident pusher did in the last `runs` passes: pushed ahead, and commands it answered."""
    def counts(values: List[int]) -> str:
        return " / ".join("?" if n < 0 else str(n) for n in values[-runs:])
    return "; pushed ahead by the pusher: %s; answered by its marker: %s" \
        % (counts(resident.pushed), counts(resident.quick))


def _rate(size: float, runs: List[Tuple[float, Peak]]) -> str:
    seconds = stats.median(s for s, _p in runs) or 1.0
    return "%.0f MiB/s of data" % (size / MIB / seconds)


# ------------------------------------------------------------------ targets
# (name, (area, path) of ours, (area, path) of the reference, limit): ours' time / reference's time <= limit.
TARGETS = (
    ("archiving to a local repository: at least pgBackRest's asynchronous throughput",
     ("archive-local", "best-ours-any"), ("archive-local", "pgbackrest-async"), 1.0),
    ("archiving to a local repository: within 1.5x of the floor (cp + sync)",
     ("archive-local", "best-ours"), ("archive-local", "floor"), 1.5),
    ("archiving to S3: at least pgBackRest's asynchronous throughput",
     ("archive-s3", "best-ours-any"), ("archive-s3", "pgbackrest-async"), 1.0),
    ("full backup to S3: no slower than pgBackRest process-max 2", ("full-s3", "ours"), ("full-s3", "pgbackrest"), 1.0),
    ("restore from S3: no slower than pgBackRest process-max 2", ("restore-s3", "ours"), ("restore-s3", "pgbackrest"), 1.0),
    ("restore (local, 2 workers): within 1.1x of the floor", ("restore-local", "ours"), ("restore-local", "floor"), 1.1),
    ("delta restore after ~1% of pages changed: at most 0.2x a full restore", ("delta", "ours"), ("delta", "ours-full"), 0.2),
)


# The archiving paths of ours a "best" figure picks from: best-ours (the floor target, as before the pusher: the
# per-segment command alone, synchronous or asynchronous) and best-ours-any (against pgBackRest asynchronous:
# every way ours archives, the resident pusher included).
BEST_OF = {"best-ours": ("ours", "ours-async"), "best-ours-any": ("ours", "ours-async", "ours-pusher")}


@dataclass(frozen=True)
class PathVerdict(stats.Verdict):
    """A verdict naming the path of ours it judged, when that was the best of several."""

    path: str = ""

    @property
    def text(self) -> str:
        plain = super().text
        return plain if not self.path or self.met is None else "%s (ours: %s)" % (plain, self.path)


def best_path(rows: List[LargeRow], area: str, best: str) -> str:
    """Which of BEST_OF[best] is fastest in area ("" when none was timed)."""
    timed = {r.path: r.seconds for r in rows if r.area == area and r.path in BEST_OF[best] and r.seconds is not None}
    return min(timed, key=lambda name: (timed[name], BEST_OF[best].index(name))) if timed else ""


def figures(rows: List[LargeRow]) -> Dict[Tuple[str, str], Optional[float]]:
    figs = {(r.area, r.path): r.seconds for r in rows}
    for area in ("archive-local", "archive-s3"):
        for best, names in BEST_OF.items():
            figs[(area, best)] = stats.fastest({k[1]: v for k, v in figs.items() if k[0] == area}, names)
    return figs


def verdicts(rows: List[LargeRow]) -> List[stats.Verdict]:
    figs = figures(rows)
    out: List[stats.Verdict] = []
    for name, ours, reference, limit in TARGETS:
        value = stats.ratio(figs.get(ours), figs.get(reference))
        path = best_path(rows, ours[0], ours[1]) if ours[1] in BEST_OF else ""
        out.append(PathVerdict(name, value, limit, None if value is None else value <= limit, path))
    tmpfs = [r for r in rows if r.area == "tmpfs" and r.runs]
    met = None if not tmpfs else tmpfs[0].note == "succeeded"
    out.append(stats.Verdict("backup to S3 with the temporary directory on a 64 MiB tmpfs succeeds", None, 0.0, met))
    return out


def markdown(rows: List[LargeRow], notes: Dict[str, str], info: Dict[str, str], argv: List[str]) -> str:
    lines = ["## Large profile", "",
             "Written by `%s` on %s. Issue 16 item 8. Every ratio compares paths timed in this run (medians; "
             "ratios of time, below 1 means ours is faster). Peak RSS: the path's processes (PostgreSQL's own "
             "excluded), polled every 0.2 s; largest temporary file: in the path's private TMPDIR." % (
                 " ".join(argv), datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
             "", "### Targets", ""]
    lines.append(stats.md_table(["target", "ours / reference (time)", "limit", "verdict"], [
        [v.name, stats.fmt_ratio(v.ratio) if v.limit else "-", "%.1fx" % v.limit if v.limit else "-", v.text]
        for v in verdicts(rows)]))
    lines += ["", "### Every path", ""]
    table = []
    for row in rows:
        peak = max(row.peaks, key=lambda p: p.rss_bytes) if row.peaks else None
        table.append([row.area, row.label, stats.fmt_seconds(row.seconds), " / ".join("%.2f" % s for s in row.runs) or "-",
                      row.rate or row.note or "-",
                      "n/a" if peak is None else "%.0f" % (peak.rss_bytes / MIB),
                      "n/a" if peak is None else "%.1f" % (max(p.largest_tmp_file for p in row.peaks) / MIB),
                      "n/a" if peak is None else "%.1f" % (max(p.tmp_total for p in row.peaks) / MIB)])
    lines.append(stats.md_table(["area", "path", "median s", "runs (s)", "rate / detail", "peak RSS MiB",
                                 "largest temp file MiB", "temp high-water MiB"], table))
    if notes:
        lines += ["", "Notes:", ""] + ["- %s: %s" % item for item in notes.items()]
    lines += ["", "Machine:", ""] + ["- %s: %s" % item for item in info.items()]
    return "\n".join(lines) + "\n"


def merge_results(existing: str, section: str) -> str:
    """existing results.md with its "## Large profile" section (to the end) replaced by `section`."""
    marker = "\n## Large profile\n"
    head = existing.split(marker, 1)[0] if marker in existing else existing
    if existing.startswith("## Large profile\n"):
        head = ""
    return (head.rstrip("\n") + "\n\n" if head.strip() else "") + section


def run(ctx: Context, options: Options, say: Callable[[str], None]) -> Tuple[List[LargeRow], Dict[str, str]]:
    """The whole large profile; moto on loopback for its duration."""
    moto_dir = make_user_dir(ctx.work / "s3", server_os_user(), 0o755)
    for s3 in s3bench.serve(moto_dir):
        s3bench.make_bucket(s3, OURS_BUCKET)
        s3bench.make_bucket(s3, BREST_BUCKET)
        say("S3: moto on %s behind TLS at %s (CA %s)" % (s3.plain_url, s3.url, s3.ca_file))
        large = Large(ctx, options, s3, moto_pids(s3.plain_url))
        large.notes["s3"] = ("moto_server (plain HTTP on loopback) behind the bench's TLS terminator at %s; both "
                             "tools verify its self-signed certificate (CA file). %s" % (s3.url, s3bench.WHY_TERMINATOR))
        if {"archive-local", "archive-s3"} & set(options.areas):
            large.archive()
        if "database" in options.areas:
            large.database()
        return large.rows, large.notes
    raise RuntimeError("moto_server did not start")


def moto_pids(plain_url: str) -> List[int]:
    port = plain_url.rsplit(":", 1)[1]
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(part.endswith(b"moto_server") for part in cmd) and port.encode() in cmd:
                found.append(int(entry.name))
    return found


def _seconds_of(timer: Callable[[int], Any], number: int, holder: List[Any]) -> float:
    """Run timer(number), keep its result in holder, return its seconds."""
    holder.append(timer(number))
    return holder[-1].seconds
