"""A real S3 endpoint for tests: moto's server on loopback, spoken to over HTTP by boto3."""

from __future__ import annotations

import itertools
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


_buckets = itertools.count(1)


def make_bucket(endpoint: S3Endpoint, lock: bool = False) -> str:
    """A new empty bucket (with S3 Object Lock enabled when `lock`); returns its name."""
    import boto3

    name = "restorekeeper-test-%d" % next(_buckets)
    client = boto3.client("s3", endpoint_url=endpoint.url, region_name="us-east-1",
                          aws_access_key_id=endpoint.access_key_id, aws_secret_access_key=endpoint.secret_access_key)
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    return name


class CuttableProxy:
    """A TCP forwarder on loopback that a test can cut (every connection is
    refused) and restore, to play a network outage in front of a server whose
    state must survive it."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.port = _free_port()
        self._cut = threading.Event()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(64)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def cut(self) -> None:
        self._cut.set()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _address = self._server.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                client.close()  # reset: the outage
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def point_repository_at_s3(config_path: Path, endpoint: S3Endpoint, endpoint_url: str = "", path: str = "wal") -> str:
    """Replace the [repository] section of a configuration file by a new bucket
    of endpoint (reached at endpoint_url, e.g. a proxy, when given); returns the bucket."""
    bucket = make_bucket(endpoint)
    text = config_path.read_text()
    start = text.index("[repository]\n")
    end = text.index("\n\n", start)
    section = "\n".join(["[repository]", "type = s3", "path = %s" % path, "bucket = %s" % bucket,
                         "endpoint_url = %s" % (endpoint_url or endpoint.url), "region = us-east-1", "path_style = true",
                         "access_key_id = %s" % endpoint.access_key_id,
                         "secret_access_key = %s" % endpoint.secret_access_key])
    config_path.write_text(text[:start] + section + text[end:])
    return bucket
