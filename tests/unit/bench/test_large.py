"""The large profile's pure parts and helpers: targets, the results file, peak polling and the TLS terminator."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root: bench.lib

import pytest  # noqa: E402

from bench.lib import large, peak, s3bench  # noqa: E402
from bench.lib.large import LargeRow  # noqa: E402


def _rows(**seconds):
    """LargeRow per "area__path" keyword (dashes written as underscores in the area)."""
    rows = []
    for key, value in seconds.items():
        area, path = key.split("__")
        rows.append(LargeRow(area.replace("_", "-"), path.replace("_", "-"), key, [] if value is None else [value]))
    return rows


def _verdicts(rows):
    return {v.name: v for v in large.verdicts(rows)}


def test_archiving_targets_use_ours_best_mode_against_pgbackrest_async_and_the_floor():
    rows = _rows(archive_local__ours=4.0, archive_local__ours_async=2.0, archive_local__pgbackrest_async=2.5,
                 archive_local__floor=1.0)
    got = _verdicts(rows)
    against_brest = got["archiving to a local repository: at least pgBackRest's asynchronous throughput"]
    assert against_brest.ratio == pytest.approx(0.8) and against_brest.text == "met (ours: ours-async)"
    against_floor = got["archiving to a local repository: within 1.5x of the floor (cp + sync)"]
    assert against_floor.ratio == pytest.approx(2.0) and against_floor.text == "not met (ours: ours-async)"
    assert got["archiving to S3: at least pgBackRest's asynchronous throughput"].text == "n/a"


def test_the_pusher_counts_against_pgbackrest_async_but_the_floor_target_keeps_the_per_segment_paths():
    rows = _rows(archive_local__ours=4.0, archive_local__ours_async=2.0, archive_local__ours_pusher=1.5,
                 archive_local__pgbackrest_async=2.5, archive_local__floor=1.0,
                 archive_s3__ours=90.0, archive_s3__ours_async=80.0, archive_s3__ours_pusher=10.0,
                 archive_s3__pgbackrest_async=12.5)
    got = _verdicts(rows)
    local = got["archiving to a local repository: at least pgBackRest's asynchronous throughput"]
    assert local.ratio == pytest.approx(0.6) and local.text == "met (ours: ours-pusher)"
    floor = got["archiving to a local repository: within 1.5x of the floor (cp + sync)"]
    assert floor.ratio == pytest.approx(2.0) and floor.text == "not met (ours: ours-async)"
    s3 = got["archiving to S3: at least pgBackRest's asynchronous throughput"]
    assert s3.ratio == pytest.approx(0.8) and s3.text == "met (ours: ours-pusher)"
    slower = _rows(archive_s3__ours=9.0, archive_s3__ours_pusher=10.0, archive_s3__pgbackrest_async=5.0)
    assert _verdicts(slower)["archiving to S3: at least pgBackRest's asynchronous throughput"].text == "not met (ours: ours)"
    assert "| not met (ours: ours) |" in large.markdown(slower, {}, {}, ["bench/run.py"])


def test_the_pusher_path_has_its_label():
    assert large.archiving_label("archive-s3", "ours-pusher") == "restorekeeper wal-pusher + restorekeeper-archive (S3)"
    assert large.archiving_label("archive-local", "ours-pusher") == \
        "restorekeeper wal-pusher + restorekeeper-archive (local)"
    assert large.LOCAL_MARKERS["ours-pusher"](Path("/w")) == Path("/w/ours-pusher.conf")


def test_the_pusher_row_says_what_the_pusher_did():
    resident = large.archiving.Resident(["x"], Path("/nonexistent"), pushed=[9, 8, -1], quick=[1, 5, 6])
    assert large.pusher_detail(resident, 2) == "; pushed ahead by the pusher: 8 / ?; answered by its marker: 5 / 6"


def test_delta_target_is_na_without_ours_delta_and_judged_with_it():
    without = _rows(delta__ours=None, delta__ours_full=None)
    name = "delta restore after ~1% of pages changed: at most 0.2x a full restore"
    assert _verdicts(without)[name].text == "n/a"
    assert _verdicts(_rows(delta__ours=3.0, delta__ours_full=20.0))[name].text == "met"
    assert _verdicts(_rows(delta__ours=5.0, delta__ours_full=20.0))[name].text == "not met"


def test_tmpfs_target_follows_the_recorded_outcome():
    name = "backup to S3 with the temporary directory on a 64 MiB tmpfs succeeds"
    ok = LargeRow("tmpfs", "ours", "x", [3.0], note="succeeded")
    failed = LargeRow("tmpfs", "ours", "x", [3.0], note="failed: No space left on device")
    unmeasured = LargeRow("tmpfs", "ours", "x", [], note="n/a")
    assert _verdicts([ok])[name].text == "met"
    assert _verdicts([failed])[name].text == "not met"
    assert _verdicts([unmeasured])[name].text == "n/a"


def test_markdown_lists_every_target_and_the_peaks():
    row = LargeRow("full-s3", "ours", "restorekeeper backup (S3)", [10.0, 12.0],
                   [peak.Peak(100 * large.MIB, 5 * large.MIB, 6 * large.MIB)], rate="400 MiB/s of data")
    text = large.markdown([row], {"database": "4.2 GiB"}, {"cores": "2"}, ["bench/run.py", "--profile", "large"])
    assert text.startswith("## Large profile\n")
    assert text.count("| ") > 10 and "| full-s3 | restorekeeper backup (S3) | 11.00 | 10.00 / 12.00 |" in text
    assert "| 100 | 5.0 | 6.0 |" in text
    for name, _ours, _reference, _limit in large.TARGETS:
        assert name in text
    assert "64 MiB tmpfs" in text


def test_merge_keeps_the_small_profile_and_replaces_an_older_large_section():
    small = "# Benchmark results\n\n## Targets\n\nsmall figures\n"
    first = large.merge_results(small, "## Large profile\n\nold\n")
    assert first == small + "\n## Large profile\n\nold\n"
    second = large.merge_results(first, "## Large profile\n\nnew\n")
    assert second == small + "\n## Large profile\n\nnew\n"
    assert large.merge_results("", "## Large profile\n\nx\n") == "## Large profile\n\nx\n"


def test_dir_usage_reports_largest_file_and_total(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 30)
    assert peak.dir_usage(tmp_path) == (30, 40)


def test_tree_rss_counts_a_child_and_not_an_excluded_one():
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(40 << 20); time.sleep(30)"])
    try:

        deadline = time.monotonic() + 10
        while peak.tree_rss(os.getpid(), [], []) < 40 << 20:
            assert time.monotonic() < deadline, "the child's 40 MiB never showed"
            time.sleep(0.1)

        assert peak.tree_rss(os.getpid(), [], [child.pid]) < 40 << 20
    finally:
        child.kill()
        child.wait()


def test_terminator_serves_verified_tls_and_forwards_both_ways(tmp_path):
    """A client verifying the generated certificate for `localhost` gets the plain server's answer to its request
    and a clean end of the connection (no SSLEOFError even with suppress_ragged_eofs=False)."""
    cert, key = s3bench.make_certificate(tmp_path)
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen(1)

    def answer() -> None:
        conn, _address = backend.accept()
        request = conn.recv(1024)
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (
            len(request.split(b"\r\n")[0]), request.split(b"\r\n")[0]))
        conn.close()
    threading.Thread(target=answer, daemon=True).start()
    terminator = s3bench.TlsTerminator(cert, key, backend.getsockname()[1])
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", terminator.port)) as raw:
            with context.wrap_socket(raw, server_hostname=s3bench.HOST, suppress_ragged_eofs=False) as tls:
                tls.sendall(b"GET /echo-me HTTP/1.1\r\nHost: localhost\r\n\r\n")
                received = b""
                while True:
                    data = tls.recv(1024)  # raises SSLEOFError on an EOF without close_notify
                    if not data:
                        break
                    received += data
        assert received.endswith(b"\r\n\r\nGET /echo-me HTTP/1.1")
    finally:
        terminator.close()
        backend.close()


def test_pgbackrest_and_ours_point_at_the_https_endpoint(tmp_path):
    endpoint = s3bench.HttpsS3(port=4443, ca_file=tmp_path / "ca.pem", plain_url="http://127.0.0.1:5000")
    options = s3bench.pgbackrest_options(endpoint, "b-bench", "/db")
    assert options["repo1-s3-endpoint"] == "localhost" and options["repo1-storage-port"] == "4443"
    assert options["repo1-storage-ca-file"] == str(tmp_path / "ca.pem") and options["repo1-s3-uri-style"] == "path"
    lines = s3bench.ours_repository_lines(endpoint, "b-bench", "ours")
    assert "endpoint_url = https://localhost:4443" in lines and "ca_bundle = %s" % (tmp_path / "ca.pem") in lines


def test_only_selects_areas_of_the_large_profile():
    assert large.areas_of(["archive", "backup", "incremental", "restore", "drill"]) == large.AREAS
    assert large.areas_of(["archive"]) == ("archive-local", "archive-s3")
    assert large.areas_of(["archive-s3"]) == ("archive-s3",)
    assert large.areas_of(["restore"]) == ("database",)
    options = large.Options(20, 200, 8, 3, ("archive-s3",), ("ours-pusher",))
    assert options.times("archive-s3", "ours-pusher")
    assert not options.times("archive-s3", "pgbackrest-async") and not options.times("archive-local", "ours-pusher")
    assert large.Options(20, 200, 8, 3).times("archive-local", "floor")


def test_run_refuses_large_only_selectors_without_the_large_profile(capsys):
    from bench import run

    args = run.parse_args(["--profile", "large", "--only", "archive-s3", "--archive-paths", "ours-pusher"])
    assert args.only == ["archive-s3"] and args.archive_paths == ["ours-pusher"]
    assert args.output.name == "large-archive-s3.md" and args.output.parent.name == "results"
    assert run.parse_args(["--profile", "large"]).output.name == "results.md"
    for argv in (["--only", "archive-s3"], ["--archive-paths", "floor"],
                 ["--profile", "large", "--archive-paths", "nothing"]):
        with pytest.raises(SystemExit):
            run.parse_args(argv)
    assert "needs --profile large" in capsys.readouterr().err
