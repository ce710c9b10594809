"""An S3 endpoint over HTTPS on loopback for the large profile: moto's server
behind a small TLS terminator, and the buckets of both tools.

moto_server can serve HTTPS itself (`-c CERT -k KEY`), but pgBackRest 2.45
fails every PUT against it with "TLS error [1:167772454] unexpected eof
while reading" (the object is stored; the error comes when pgBackRest reads
the end of the connection its server closed after `Connection: close`; a
Python client reading the same answer sees a clean end, so the exact
difference was not pinned down). Through this module's TLS terminator, which
ends each connection with an explicit TLS shutdown (`unwrap`), pgBackRest
works. So moto serves plain HTTP on one loopback port and the terminator
serves HTTPS on another. Both tools speak HTTPS to the terminator and
verify its certificate (a self-signed one made here with `openssl req`, CN
and SAN `localhost`: pgBackRest 2.45 does not match an IP address SAN, so
its endpoint is the host name `localhost`).
"""

from __future__ import annotations

import select
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

from harness.s3 import _free_port, run_moto_server

ACCESS_KEY = "restorekeeper-bench-key"
SECRET_KEY = "restorekeeper-bench-secret"
REGION = "us-east-1"
HOST = "localhost"
WHY_TERMINATOR = ("moto_server's own HTTPS (-c/-k) does not do for pgBackRest 2.45: every PUT fails with "
                  "\"TLS error [1:167772454] unexpected eof while reading\" when it reads the end of the connection "
                  "moto closes after `Connection: close` (the object is stored); through the terminator, which ends "
                  "each connection with an explicit TLS shutdown, it works. Its certificate names `localhost` "
                  "(pgBackRest 2.45 does not match an IP address SAN).")


@dataclass
class HttpsS3:
    """The endpoint both tools use: https://localhost:PORT, its CA file and credentials."""

    port: int
    ca_file: Path
    plain_url: str  # moto itself, for the bench's own boto3 calls

    @property
    def url(self) -> str:
        return "https://%s:%d" % (HOST, self.port)


def make_certificate(directory: Path) -> tuple:
    """A self-signed certificate for localhost and 127.0.0.1: (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed: cannot make the certificate of the HTTPS S3 endpoint")
    cert, key = directory / "s3-cert.pem", directory / "s3-key.pem"
    result = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                             "-out", str(cert), "-days", "2", "-subj", "/CN=%s" % HOST,
                             "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % HOST],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError("openssl req failed: %s" % result.stderr.strip()[-400:])
    cert.chmod(0o644)
    return cert, key


class TlsTerminator:
    """Accept TLS on a loopback port, forward the plain bytes to `target_port`."""

    def __init__(self, cert: Path, key: Path, target_port: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.target_port = target_port
        self.port = _free_port()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(128)
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        """One connection, one thread: an SSL object must never be read and written by two threads at once."""
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        client_open = True
        try:
            while True:
                readable = [upstream] + ([tls] if client_open else [])
                ready = [tls] if client_open and tls.pending() else select.select(readable, [], [], 300)[0]
                if not ready:
                    break
                if tls in ready:
                    data = tls.recv(1 << 16)
                    if data:
                        upstream.sendall(data)
                    else:
                        client_open = False
                        upstream.shutdown(socket.SHUT_WR)
                if upstream in ready:
                    data = upstream.recv(1 << 16)
                    if not data:
                        tls.unwrap()  # an explicit TLS shutdown before the end of the connection
                        break
                    tls.sendall(data)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            for end in (tls, upstream):
                try:
                    end.close()
                except OSError:
                    pass


def serve(work: Path) -> Iterator[HttpsS3]:
    """moto on plain HTTP plus the TLS terminator, for the duration of a with/yield."""
    cert, key = make_certificate(work)
    for endpoint in run_moto_server(work / "moto.log"):
        terminator = TlsTerminator(cert, key, int(endpoint.url.rsplit(":", 1)[1]))
        try:
            yield HttpsS3(terminator.port, cert, endpoint.url)
        finally:
            terminator.close()


def client(s3: HttpsS3):
    import boto3

    return boto3.client("s3", endpoint_url=s3.plain_url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY)


def make_bucket(s3: HttpsS3, name: str) -> str:
    client(s3).create_bucket(Bucket=name)
    return name


def delete_prefix(s3: HttpsS3, bucket: str, prefix: str, keep: Optional[List[str]] = None) -> None:
    """Delete every object under `prefix` except names containing one of `keep`."""
    s3client = client(s3)
    for page in s3client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        doomed = [{"Key": item["Key"]} for item in page.get("Contents", [])
                  if not any(word in item["Key"] for word in (keep or []))]
        if doomed:
            s3client.delete_objects(Bucket=bucket, Delete={"Objects": doomed})


def prefix_bytes(s3: HttpsS3, bucket: str, prefix: str) -> int:
    total = 0
    for page in client(s3).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += sum(int(item["Size"]) for item in page.get("Contents", []))
    return total


def pgbackrest_options(s3: HttpsS3, bucket: str, path: str) -> dict:
    """repo1-* options of pgBackRest 2.45 for this endpoint (the key lives in its 0600 config file)."""
    return {"repo1-type": "s3", "repo1-path": path, "repo1-s3-bucket": bucket, "repo1-s3-endpoint": HOST,
            "repo1-storage-port": str(s3.port), "repo1-s3-region": REGION, "repo1-s3-uri-style": "path",
            "repo1-s3-key": ACCESS_KEY, "repo1-s3-key-secret": SECRET_KEY,
            "repo1-storage-ca-file": str(s3.ca_file)}


def ours_repository_lines(s3: HttpsS3, bucket: str, path: str) -> List[str]:
    """The [repository] section of ours for this endpoint (the config file is 0600)."""
    return ["[repository]", "type = s3", "path = %s" % path, "bucket = %s" % bucket, "endpoint_url = %s" % s3.url,
            "region = %s" % REGION, "path_style = true", "access_key_id = %s" % ACCESS_KEY,
            "secret_access_key = %s" % SECRET_KEY, "ca_bundle = %s" % s3.ca_file]
