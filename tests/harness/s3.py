"""A real S3 endpoint for tests: moto's server on loopback, spoken to over HTTP by boto3."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator, NamedTuple

from .wait import wait_until


class S3Endpoint(NamedTuple):
    url: str
    access_key_id: str
    secret_access_key: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=1):
            return True
    except OSError:
        return False


def run_moto_server(log_path: Path) -> Iterator[S3Endpoint]:
    """Start moto_server on a free loopback port for the duration of a with/yield."""
    port = _free_port()
    executable = Path(sys.executable).parent / "moto_server"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = "http://127.0.0.1:%d" % port
    try:
        wait_until(lambda: _answers(url), timeout=30, message="moto_server on %s" % url)
        yield S3Endpoint(url, "restorekeeper-test-key", "restorekeeper-test-secret-do-not-log")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
