"""restorekeeper-archive (roles/archiving/files), run by /bin/sh against markers the real batch wrote.

A stand-in `restorekeeper` next to the script records its argv and exits 7:
exit status 7 and a record mean the script handed the call to wal-push;
exit status 0 without a record means one stat proved the marker.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.pushmarker import STAT_HEADER
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import WalArchive
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walasync import _push_batch
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config, render_config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.configfiles import sources_identity
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository

from walfiles import segment_name, write_segment

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "archiving" / "files" / "restorekeeper-archive"
NAME = segment_name(1, 1)
FALLBACK = 7
STAND_IN = '#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD"\nexit 7\n'


class Site:
    """A data directory (odd characters in every path) whose pg_wal/NAME the batch pushed ahead."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data dir $HOME 'q' *["
        (self.data / "pg_wal").mkdir(parents=True)
        write_segment(str(self.data / "pg_wal"), NAME)
        self.config = str(self.data / "main conf;.ini")
        spool = self.data / "spool"
        text = render_config("main", str(self.data / "repo"))
        with open(self.config, "w") as handle:
            handle.write(text.replace("[archive]\n", "[archive]\nasync = true\nspool_path = %s\n" % spool))
        os.mkdir(self.config + ".d")
        with open(self.config + ".d/a drop-in.conf", "w") as handle:
            handle.write("[archive]\nprocess_max = 1\n")
        identity = sources_identity(self.config)
        config = Config.load(self.config)
        Repository.from_config(config).create()
        self.archive = WalArchive(config)
        self.markers = str(spool / "main" / "push")
        os.makedirs(self.markers)
        assert _push_batch(self.archive, self.markers, [(str(self.data / "pg_wal" / NAME), NAME)], identity) == [NAME]
        self.marker = os.path.join(self.markers, NAME + ".ok")
        self.bin = root / "bin"
        self.bin.mkdir()
        shutil.copy(str(SCRIPT), str(self.bin / "restorekeeper-archive"))
        (self.bin / "restorekeeper").write_text(STAND_IN)
        (self.bin / "restorekeeper").chmod(0o755)
        self.record = root / "argv"
        self.path = os.environ.get("PATH", "/usr/bin:/bin")

    def run(self, *argv: str, name: str = NAME) -> subprocess.CompletedProcess:
        arguments = list(argv) or [self.config, "pg_wal/" + name, name, self.markers]
        return subprocess.run(["/bin/sh", str(self.bin / "restorekeeper-archive")] + arguments, cwd=str(self.data),
                              env={"PATH": self.path, "RECORD": str(self.record)}, capture_output=True, text=True,
                              check=False)

    def handed_over(self, result: subprocess.CompletedProcess, name: str = NAME) -> bool:
        """True when the script exec'd `restorekeeper wal-push --config CONFIG PATH NAME`."""
        if result.returncode != FALLBACK:
            assert result.returncode == 0 and not self.record.exists(), result
            return False
        assert self.record.read_text().split("\n")[:-1] == ["wal-push", "--config", self.config, "pg_wal/" + name, name]
        return True

    def object_path(self) -> str:
        return self.archive.storage.local_path(self.archive.key_for(NAME))


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


def test_a_valid_marker_answers_0_with_one_stat_and_is_used_up(site):
    assert STAT_HEADER in Path(site.marker).read_text()
    result = site.run()
    assert not site.handed_over(result)
    assert result.stdout == result.stderr == ""
    assert os.path.getsize(site.marker) == 0  # used up: nothing proves it twice
    assert site.handed_over(site.run())


def _segment_mtime(site: Site) -> None:
    segment = str(site.data / "pg_wal" / NAME)
    before = os.stat(segment)
    os.utime(segment, ns=(before.st_atime_ns, before.st_mtime_ns + 1))


def _segment_recreated(site: Site) -> None:
    """Same bytes and mtime, another inode."""
    segment = str(site.data / "pg_wal" / NAME)
    before = os.stat(segment)
    shutil.copyfile(segment, segment + ".new")
    os.utime(segment + ".new", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(segment + ".new", segment)


def _config_edited(site: Site) -> None:
    with open(site.config, "a") as handle:
        handle.write("# edited\n")


def _drop_in_added(site: Site) -> None:
    with open(site.config + ".d/b.conf", "w") as handle:
        handle.write("[archive]\n")


def _drop_in_removed(site: Site) -> None:
    os.unlink(site.config + ".d/a drop-in.conf")


def _object_removed(site: Site) -> None:
    os.unlink(site.object_path())


def _marker_missing(site: Site) -> None:
    os.unlink(site.marker)


def _marker_symlink(site: Site) -> None:
    os.rename(site.marker, site.marker + ".real")
    os.symlink(site.marker + ".real", site.marker)


def _marker_of_another_user(site: Site) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the marker away")
    os.chown(site.marker, 65534, 65534)


def _marker_without_object_nor_confirmation(site: Site) -> None:
    """A forged marker of a non-posix repository: never believed without "confirmed stored"."""
    object_path = site.object_path()
    lines = Path(site.marker).read_text().split("\n")
    Path(site.marker).write_text("\n".join(line for line in lines if not line.endswith(object_path)))


def _stat_of_another_format(site: Site) -> None:
    """A stat that prints whole seconds (as one without %.9Y would)."""
    fake = site.bin.parent / "fakebin"
    fake.mkdir()
    (fake / "stat").write_text('#!/bin/sh\necho "1 2 3 4 5 x"\n')
    (fake / "stat").chmod(0o755)
    site.path = "%s:%s" % (fake, site.path)


@pytest.mark.parametrize("change", [
    _segment_mtime, _segment_recreated, _config_edited, _drop_in_added, _drop_in_removed, _object_removed,
    _marker_missing, _marker_symlink, _marker_of_another_user, _marker_without_object_nor_confirmation,
    _stat_of_another_format,
], ids=lambda change: change.__name__.strip("_"))
def test_anything_else_hands_the_call_to_wal_push_and_changes_nothing(site, change):
    change(site)
    before = Path(site.marker).read_bytes() if os.path.exists(site.marker) else None
    assert site.handed_over(site.run())
    assert (Path(site.marker).read_bytes() if os.path.exists(site.marker) else None) == before


def test_a_confirmed_marker_needs_no_object(site):
    """What the resident pusher writes for S3 or ssh: "confirmed stored" stands for the object."""
    _marker_without_object_nor_confirmation(site)
    text = Path(site.marker).read_text().replace(STAT_HEADER, "confirmed stored\n" + STAT_HEADER)
    Path(site.marker).write_text(text)
    assert not site.handed_over(site.run())


def test_a_marker_is_bound_to_its_name(site):
    other = segment_name(1, 2)
    shutil.copy(site.marker, os.path.join(site.markers, other + ".ok"))
    write_segment(str(site.data / "pg_wal"), other)
    assert site.handed_over(site.run(name=other), name=other)


@pytest.mark.parametrize("name", ["../" + NAME, "", ".ok", NAME + " x"])
def test_a_name_that_is_not_a_wal_file_name_is_never_looked_up(site, name):
    result = site.run(site.config, "pg_wal/" + NAME, name, site.markers)
    assert result.returncode == FALLBACK
    assert os.path.getsize(site.marker) > 0


def test_without_markers_it_is_wal_push(site):
    assert site.handed_over(site.run(site.config, "pg_wal/" + NAME, NAME))
    assert os.path.getsize(site.marker) > 0


def test_it_refuses_a_relative_path_and_a_wrong_argument_count(site):
    relative = subprocess.run(["/bin/sh", "restorekeeper-archive", site.config, "pg_wal/" + NAME, NAME, site.markers],
                              cwd=str(site.bin), capture_output=True, text=True, check=False)
    assert relative.returncode == 2 and "absolute path" in relative.stderr
    assert site.run(site.config, "pg_wal/" + NAME).returncode == 2
    assert not site.record.exists()


def test_the_script_is_posix_sh_and_installed_executable(site):
    text = SCRIPT.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -u\n" in text
    assert SCRIPT.stat().st_mode & stat.S_IXUSR
    for bashism in ("[[", "local ", "function ", "$'", "${!", "<<<", "pipefail"):
        assert bashism not in text, bashism
    checked = subprocess.run(["/bin/sh", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


# ------------------------------------------- waiting for the resident pusher


@pytest.fixture
def live_pusher(site):
    """A live process whose command line says wal-pusher, named by the pusher's lock as the pusher names itself."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "wal-pusher"])
    deadline = time.monotonic() + 10
    while b"wal-pusher" not in Path("/proc/%d/cmdline" % process.pid).read_bytes():  # its exec under way
        assert time.monotonic() < deadline
        time.sleep(0.01)
    lock = Path(site.markers).parent / "pusher.lock"
    lock.write_text("wal-pusher of main, pid %d\n" % process.pid)
    yield process
    process.kill()
    process.wait()


def claim(site: Site) -> str:
    path = os.path.join(site.markers, NAME + ".pushing")
    Path(path).touch()
    return path


def test_it_waits_for_the_marker_of_a_push_under_way(site, live_pusher):
    aside = site.marker + ".aside"
    os.rename(site.marker, aside)
    claimed = claim(site)

    def pusher_finishes() -> None:  # as the pusher does: the marker in place, then the claim removed
        os.rename(aside, site.marker)
        os.unlink(claimed)
    later = threading.Timer(1.5, pusher_finishes)  # longer than the wait for an unclaimed segment
    later.start()
    started = time.monotonic()
    result = site.run()
    later.join()
    assert not site.handed_over(result)  # proven by the marker the pusher wrote meanwhile
    assert time.monotonic() - started >= 1.5
    assert os.path.getsize(site.marker) == 0


def test_it_waits_briefly_for_a_live_pusher_to_take_the_segment_up(site, live_pusher):
    aside = site.marker + ".aside"
    os.rename(site.marker, aside)
    later = threading.Timer(0.3, os.rename, (aside, site.marker))
    later.start()
    result = site.run()
    later.join()
    assert not site.handed_over(result)


def test_without_a_claim_it_hands_over_after_a_short_wait(site, live_pusher):
    os.unlink(site.marker)
    started = time.monotonic()
    assert site.handed_over(site.run())
    assert 0.9 <= time.monotonic() - started < 20


def test_a_claim_of_a_pusher_that_is_gone_holds_nothing_up(site, live_pusher):
    os.unlink(site.marker)
    claim(site)
    live_pusher.kill()
    live_pusher.wait()
    started = time.monotonic()
    assert site.handed_over(site.run())
    assert time.monotonic() - started < 0.9


def test_a_wait_does_not_make_a_wrong_marker_good(site, live_pusher):
    """The marker that ends the wait is proven as any other: here its segment changed."""
    aside = site.marker + ".aside"
    os.rename(site.marker, aside)
    claim(site)
    _segment_mtime(site)
    later = threading.Timer(0.3, os.rename, (aside, site.marker))
    later.start()
    result = site.run()
    later.join()
    assert site.handed_over(result)
