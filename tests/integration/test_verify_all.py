"""`verify --all` on a real repository of a real cluster: clean it passes; a damaged WAL object and a
missing segment a backup needs are each reported, with exit 3. And the JSON of the commands that
read a repository (issue 17, item 3)."""

from __future__ import annotations

import json
from typing import Any, Dict, Tuple

from harness.archived import Archived, archive_everything, corrupt_wal_segment


def verify_all(arch: Archived) -> Tuple[int, Dict[str, Any], str]:
    result = arch.rk("verify", "--all", "--json", "--progress", "none", check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def wal_path(arch: Archived, name: str):
    return arch.setup.repo_path / arch.setup.cluster_name / "wal" / name[:16] / name


def test_verify_all_passes_a_clean_repository_and_reports_damaged_and_missing_wal(archived):
    arch = archived(18)
    label = arch.backup()["label"]
    archive_everything(arch.cluster)
    record = next(b for b in arch.info()["backups"] if b["label"] == label)

    code, result, stderr = verify_all(arch)
    assert code == 0, stderr
    assert result["summary"]["sound"] is True and result["summary"]["backups_ok"] == 1
    backup = result["backups"][0]
    assert (backup["label"], backup["status"], backup["problems"]) == (label, "ok", [])
    assert (backup["wal"]["first"], backup["wal"]["last"]) == (record["wal_start"], record["wal_stop"])
    names = json.loads(arch.rk("wal-list", "--json").stdout)["files"]
    assert result["wal"]["checked"] == len(names) and result["wal"]["damaged"] == []
    text = arch.rk("verify", "--all", "--progress", "none").stdout
    assert "backup %s: ok" % label in text and text.splitlines()[-1].startswith("verify --all SOUND: 1 backups (1 ok")

    # A WAL object the backup does not need, damaged: the archive is not sound, the backup still is.
    later = next(name for name in names if len(name) == 24 and name > record["wal_stop"])
    pristine = wal_path(arch, later).read_bytes()
    corrupt_wal_segment(arch, later)
    code, result, _stderr = verify_all(arch)
    assert code == 3
    assert [item["name"] for item in result["wal"]["damaged"]] == [later]
    assert result["backups"][0]["status"] == "ok" and result["summary"]["wal_damaged"] == 1
    wal_path(arch, later).write_bytes(pristine)

    # A segment the backup needs to reach consistency, gone: the backup is missing WAL.
    needed = record["wal_start"]
    wal_path(arch, needed).unlink()
    code, result, _stderr = verify_all(arch)
    assert code == 3
    backup = result["backups"][0]
    assert backup["status"] == "missing-wal" and backup["restorable"] is False
    assert needed in backup["wal"]["missing"] and result["wal"]["missing"] == [needed]
    assert result["summary"]["backups_missing_wal"] == 1 and result["summary"]["sound"] is False
    text = arch.rk("verify", "--all", "--progress", "none", check=False)
    assert text.returncode == 3 and "backup %s: MISSING-WAL" % label in text.stdout
    assert "WAL %s, needed to reach consistency, is not archived" % needed in text.stdout
    assert text.stdout.splitlines()[-1].startswith("verify --all FAILED")


def test_json_of_the_commands_that_read_a_repository(archived):
    arch = archived(18)
    label = arch.backup()["label"]
    archive_everything(arch.cluster)
    verified = json.loads(arch.rk("verify", label, "--json", "--progress", "none").stdout)
    assert verified == {"label": label, "files": verified["files"], "problems": [], "verified": True}
    assert verified["files"] > 100  # a real cluster's files, each checked against the manifest
    created = json.loads(arch.rk("repo-create", "--json").stdout)
    assert created == {"created": False, "repository": str(arch.setup.repo_path)}
    listed = json.loads(arch.rk("wal-list", "--json").stdout)
    assert listed["cluster"] == "main" and any(name.endswith(".backup") for name in listed["files"])
    info = arch.rk("info").stdout
    assert "WAL timeline 1: " in info and " MiB)" in info and "spanning " in info
