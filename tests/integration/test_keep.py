"""Keeping and annotating backups against a real server (issue 17 item 4):
a kept backup and its WAL survive a retention that would remove them, on the
repository and on a copy, until released; annotations set at backup time and
later show in info and backup_info; expire --label and its refusals."""

from __future__ import annotations

import json
from functools import partial
from typing import Any, Dict

import pytest

from harness import make_user_dir
from harness.ansible import run_module as run_any_module

from harness.archived import Archived

pytestmark = pytest.mark.slow

backup_info = partial(run_any_module, module="restorekeeper.postgresql.backup_info")


def rk_json(arch: Archived, *args: str) -> Dict[str, Any]:
    return json.loads(arch.rk(*args, "--json").stdout)


def by_label(info: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {b["label"]: b for b in info["backups"]}


def test_keep_annotate_retention_copy_and_expire_label(archived, ansible_env, rk_session_dir):
    arch = archived(15)
    db = arch.cluster
    config = arch.setup.config_path
    offsite = make_user_dir(rk_session_dir / ("keep-copy-%d" % db.port), db.os_user, 0o700)
    config.write_text(config.read_text() + "\n[copy offsite]\ntype = posix\npath = %s\n" % offsite)
    f1 = arch.backup("--annotate", "ticket=CHG-1", "--annotate", "why=before the upgrade")
    db.execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS n")
    f2 = arch.backup()
    db.execute("INSERT INTO t SELECT generate_series(1, 10)")
    f3 = arch.backup()
    db.wait_archived(db.switch_wal())
    assert arch.rk("ship", "--once").returncode == 0
    refused = arch.rk("backup", "--annotate", "bad key=x", check=False)
    assert refused.returncode == 1 and "not a simple identifier" in refused.stderr

    # keep the oldest; annotate later; both show in info (JSON and text) and in backup_info
    kept = rk_json(arch, "keep", f1["label"], "--until", "2999-01-01T00:00:00+00:00")
    assert kept["changed"] and kept["copies"] == [{"name": "offsite", "written": True}]
    arch.rk("annotate", f2["label"], "owner=dba")
    arch.rk("annotate", f1["label"], "--remove", "why")
    info = by_label(arch.info())
    assert info[f1["label"]]["annotations"] == {"ticket": "CHG-1"} and info[f1["label"]]["keep"]["kept"]
    assert info[f2["label"]]["annotations"] == {"owner": "dba"} and not info[f2["label"]]["keep"]["kept"]
    assert info[f3["label"]]["annotations"] == {} and info[f3["label"]]["keep"]["until"] is None
    text = arch.rk("info").stdout
    assert "kept until 2999-01-01T00:00:00Z" in text and "annotations: owner=dba" in text
    module = backup_info(ansible_env, {"config_path": str(config)}, become_user=db.os_user)
    assert not module.failed, module.result
    listed = by_label(module.result)
    assert listed[f1["label"]]["keep"]["until"] == "2999-01-01T00:00:00Z"
    assert listed[f2["label"]]["annotations"] == {"owner": "dba"}

    # retention that would remove it keeps it, with its WAL, on the repository and on the copy
    done = rk_json(arch, "expire", "--all", "--full", "1")
    for target in done["targets"]:
        assert [b["label"] for b in target["backups"]["removed"]] == [f2["label"]], target
        assert target["wal"]["kept_from"] == f1["wal_start"]
    assert f1["wal_start"] in arch.rk("wal-list").stdout.split()
    assert f1["wal_start"] in arch.rk("wal-list", "--source", "offsite").stdout.split()
    copy_info = json.loads(arch.rk("info", "--source", "offsite", "--json").stdout)
    assert [b["label"] for b in copy_info["backups"]] == [f1["label"], f3["label"]]
    assert by_label(copy_info)[f1["label"]]["keep"]["kept"]

    # expire --label refuses a kept backup and the only backup; released, it goes
    refused = arch.rk("expire", "--label", f1["label"], check=False)
    assert refused.returncode == 1 and "release it first" in refused.stderr
    assert arch.backup_dir(f1["label"]).is_dir()
    arch.rk("keep", f1["label"], "--release")
    assert not by_label(arch.info())[f1["label"]]["keep"]["kept"]
    gone = rk_json(arch, "expire", "--label", f1["label"], "--all")
    assert gone["changed"] and all(t["held"] for t in gone["targets"])
    assert not arch.backup_dir(f1["label"]).exists()
    only = arch.rk("expire", "--label", f3["label"], check=False)
    assert only.returncode == 1 and "only backup" in only.stderr and arch.backup_dir(f3["label"]).is_dir()
    after = rk_json(arch, "expire", "--all", "--full", "1")
    assert all(t["wal"]["kept_from"] in (None, f3["wal_start"]) for t in after["targets"])
    assert min(n for n in arch.rk("wal-list").stdout.split() if len(n) == 24) == f3["wal_start"]
