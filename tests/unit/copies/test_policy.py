"""The 3-2-1 rule (policy.evaluate) over layouts written as real configuration files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config, render_config, render_copies
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.copies.policy import (
    Facts,
    copy_names,
    evaluate,
    with_copies,
)

REPO = "/srv/restorekeeper/repository"


def second_disk(**extra: Any) -> Dict[str, Any]:
    copy = {"name": "second", "type": "posix", "path": "/mnt/backup2/restorekeeper", "medium": "disk",
            "failure_domain": "backup2-disk"}
    copy.update(extra)
    return copy


def offsite_s3(**extra: Any) -> Dict[str, Any]:
    copy = {"name": "offsite", "type": "s3", "bucket": "db-backups-eu", "path": "db1", "region": "eu-west-1",
            "offsite": True, "immutable": True, "object_lock_mode": "COMPLIANCE", "object_lock_days": 30,
            "encryption_key_file": "/etc/restorekeeper/main.keys"}
    copy.update(extra)
    return copy


def layout(tmp_path: Path, copies: List[Dict[str, Any]], repo: str = REPO) -> Config:
    """A main file plus the copies drop-in, loaded as the command would."""
    path = tmp_path / "main.conf"
    path.write_text(render_config("main", repo))
    path.chmod(0o600)
    if copies:
        drop_ins = tmp_path / "main.conf.d"
        drop_ins.mkdir()
        (drop_ins / "copies.conf").write_text(render_copies(copies))
        (drop_ins / "copies.conf").chmod(0o600)
    return Config.load(str(path))


def by_name(report: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {c["name"]: c for c in report["copies"]}


def test_repository_second_disk_and_immutable_offsite_bucket_comply(tmp_path):
    report = evaluate(layout(tmp_path, [second_disk(), offsite_s3()]), host="db1")
    assert report["compliant"], report["explanation"]
    assert report["counted"] == 3 and report["problems"] == []
    assert report["media"] == ["disk", "object-store"]
    assert report["offsite"] == ["offsite"] and report["immutable"] == ["offsite"]
    copies = by_name(report)
    assert list(copies) == ["repository", "offsite", "second"]
    assert copies["repository"]["failure_domain"] == "db1:%s" % REPO and copies["repository"]["medium"] == "disk"
    assert copies["offsite"]["failure_domain"] == "s3://db-backups-eu" and copies["offsite"]["encrypted"]
    assert report["failure_domains"] == {"db1:%s" % REPO: ["repository"], "s3://db-backups-eu": ["offsite"],
                                         "backup2-disk": ["second"]}
    assert "meets the rule" in report["explanation"] and "the live cluster not counted" in report["explanation"]
    assert not report["count_live_cluster"]


def test_repository_alone_misses_everything(tmp_path):
    report = evaluate(layout(tmp_path, []))
    assert not report["compliant"] and report["counted"] == 1
    assert len(report["problems"]) == 3
    copies, media, offsite = report["problems"]
    assert copies.startswith("1 independent copy (repository), 3 needed")
    assert "the live cluster is not counted" in copies
    assert media.startswith("1 medium (disk)") and "object-store" in media
    assert offsite.startswith("0 offsite copies, 1 needed")
    assert report["explanation"].count("\n- ") == 3 and "breaks the rule" in report["explanation"]


def test_two_copies_on_the_same_path_count_once(tmp_path):
    report = evaluate(layout(tmp_path, [second_disk(path=REPO + "/", failure_domain="other"), offsite_s3()]))
    assert not report["compliant"] and report["counted"] == 2
    second = by_name(report)["second"]
    assert not second["counted"] and second["same_failure_domain_as"] == "repository"
    assert second["why"] == "the same directory (%s)" % REPO
    assert "second shares a failure domain with repository: the same directory" in report["problems"][0]


def test_a_directory_inside_another_copy_counts_once(tmp_path):
    report = evaluate(layout(tmp_path, [second_disk(path=REPO + "/mirror", failure_domain="mirror"), offsite_s3()]))
    assert report["counted"] == 2
    assert by_name(report)["second"]["why"].startswith("one directory inside the other")


def test_two_copies_in_the_same_bucket_count_once_whatever_their_prefix(tmp_path):
    copies = [offsite_s3(), offsite_s3(name="offsite2", path="db1-again", failure_domain="elsewhere")]
    report = evaluate(layout(tmp_path, copies))
    assert report["counted"] == 2 and not report["compliant"]
    assert by_name(report)["offsite2"]["why"] == "the same bucket (aws/db-backups-eu)"


def test_a_bucket_of_the_same_name_on_another_endpoint_is_another_place(tmp_path):
    copies = [offsite_s3(), offsite_s3(name="minio", endpoint_url="https://minio.example:9000", offsite=False,
                                       immutable=False, failure_domain="minio-rack")]
    report = evaluate(layout(tmp_path, copies))
    assert report["compliant"], report["explanation"]
    assert report["failure_domains"]["minio-rack"] == ["minio"]


def test_the_same_declared_failure_domain_counts_once(tmp_path):
    copies = [second_disk(failure_domain="nas1"), second_disk(name="third", path="/mnt/nas-b", failure_domain="nas1"),
              offsite_s3()]
    report = evaluate(layout(tmp_path, copies))
    assert report["counted"] == 3 and report["compliant"]  # repository, offsite, one of the nas copies
    assert by_name(report)["third"]["why"] == "the same declared failure_domain (nas1)"
    assert report["failure_domains"]["nas1"] == ["second", "third"]


def test_no_offsite_copy_is_named_with_the_fix(tmp_path):
    report = evaluate(layout(tmp_path, [second_disk(), offsite_s3(offsite=False, encryption_key_file="")]))
    assert not report["compliant"] and report["counted"] == 3
    assert report["problems"] == [report["problems"][0]] and report["problems"][0].startswith("0 offsite copies")
    assert "offsite = true" in report["problems"][0] and "encryption_key_file" in report["problems"][0]


def test_one_medium_only(tmp_path):
    copies = [second_disk(), second_disk(name="remote", path="/mnt/dr-site", failure_domain="dr-site", offsite=True,
                                         encryption_key_file="/etc/restorekeeper/main.keys")]
    report = evaluate(layout(tmp_path, copies))
    assert report["counted"] == 3 and report["offsite"] == ["remote"]
    assert [p.split(" ", 2)[:2] for p in report["problems"]] == [["1", "medium"]]
    assert report["media"] == ["disk"]


def test_tape_counts_as_a_medium(tmp_path):
    copies = [second_disk(medium="tape"), second_disk(name="remote", path="/mnt/dr", failure_domain="dr",
                                                      offsite=True, allow_plaintext=True)]
    report = evaluate(layout(tmp_path, copies))
    assert report["compliant"], report["explanation"]
    assert report["media"] == ["disk", "tape"]
    assert any("remote is offsite but not encrypted" in w for w in report["warnings"])
    assert any("no copy is immutable" in w for w in report["warnings"])


def test_an_offsite_copy_sharing_a_domain_with_an_onsite_one_is_not_offsite(tmp_path):
    copies = [second_disk(), second_disk(name="fake", path=REPO + "/x", failure_domain="far-away", offsite=True,
                                         allow_plaintext=True)]
    report = evaluate(layout(tmp_path, copies))
    assert report["offsite"] == []
    assert "fake is declared offsite but shares a failure domain with repository" in report["problems"][-1]


def test_a_copy_not_required_is_listed_but_not_counted(tmp_path):
    report = evaluate(layout(tmp_path, [second_disk(required=False), offsite_s3()]))
    assert report["counted"] == 2 and not by_name(report)["second"]["counted"]
    assert "second is not counted: required = false" in report["problems"][0]


def test_the_live_cluster_counts_only_when_asked(tmp_path):
    config = layout(tmp_path, [offsite_s3()])
    assert not evaluate(config, host="db1")["compliant"]
    report = evaluate(config, count_live_cluster=True, host="db1")
    assert report["compliant"], report["explanation"]
    live = by_name(report)["live-cluster"]
    assert live["counted"] and live["kind"] == "live-cluster" and live["failure_domain"] == "db1:live cluster"
    assert "the live cluster counted" in report["explanation"]


def test_immutable_needs_object_lock_in_the_bucket(tmp_path):
    config = layout(tmp_path, [second_disk(), offsite_s3()])
    report = evaluate(config, facts=Facts(object_lock={"offsite": False}))
    assert not report["compliant"] and report["immutable"] == []
    assert report["problems"][0].startswith("offsite is declared immutable but its bucket does not have Object Lock")
    unknown = evaluate(config, facts=Facts(object_lock={"offsite": None}, errors={"offsite": "AccessDenied"}))
    assert unknown["compliant"]
    assert any("could not confirm" in w and "AccessDenied" in w for w in unknown["warnings"])


def test_immutable_needs_retention_days(tmp_path):
    report = evaluate(layout(tmp_path, [second_disk(), offsite_s3(object_lock_days=0)]))
    assert not report["compliant"]
    assert "object_lock_days '0' is not a number of days of at least 1" in report["problems"][0]


def test_governance_retention_is_warned_about(tmp_path):
    report = evaluate(layout(tmp_path, [second_disk(), offsite_s3(object_lock_mode="GOVERNANCE")]))
    assert report["compliant"]
    assert any("GOVERNANCE" in w and "BypassGovernanceRetention" in w for w in report["warnings"])


def test_the_config_refuses_immutable_without_object_lock(tmp_path):
    # The configuration itself refuses it, before any policy is asked.
    with pytest.raises(ConfigError, match="declared immutable but has no object_lock_mode"):
        layout(tmp_path, [second_disk(immutable=True)])


def test_copies_on_one_file_system_are_warned_about(tmp_path):
    config = layout(tmp_path, [second_disk(), offsite_s3()])
    report = evaluate(config, facts=Facts(devices={"repository": 2049, "second": 2049}))
    assert report["compliant"]
    assert any("repository and second are declared in different failure domains but are on the same file system"
               in w for w in report["warnings"])


def ssh_copy(name: str, host: str, path: str) -> Dict[str, Any]:
    return {"name": name, "type": "ssh", "host": host, "path": path, "failure_domain": "%s-domain" % name}


def test_ssh_copies_on_one_host_count_once(tmp_path):
    report = evaluate(layout(tmp_path, [offsite_s3(), ssh_copy("b1", "vault1", "/srv/a"),
                                        ssh_copy("b2", "VAULT1", "/srv/b")]))
    assert by_name(report)["b2"]["why"] == "the same host (vault1)"
    assert by_name(report)["b1"]["location"] == "ssh://vault1/srv/a"
    assert report["counted"] == 3 and report["compliant"]


def test_an_ssh_copy_on_the_database_host_itself_is_the_repository_s_host(tmp_path):
    config = layout(tmp_path, [offsite_s3(), ssh_copy("loop", "localhost", "/srv/x"), ssh_copy("me", "db1", "/srv/y")])
    report = evaluate(config, host="db1")
    assert by_name(report)["loop"]["same_failure_domain_as"] == "repository"
    assert by_name(report)["me"]["why"] == "the same host (db1)"
    assert report["counted"] == 2


def test_the_rule_can_be_raised_not_lowered(tmp_path):
    config = layout(tmp_path, [second_disk(), offsite_s3()])
    assert not evaluate(config, min_copies=4)["compliant"]
    with pytest.raises(ConfigError, match="cannot be weakened"):
        evaluate(config, min_copies=2)


def test_a_proposed_drop_in_is_judged_before_it_is_written(tmp_path):
    config = layout(tmp_path, [second_disk()])
    proposed = render_copies([second_disk(), offsite_s3()])
    judged = with_copies(config, proposed, copy_names(render_copies([second_disk()])))
    assert [c.name for c in judged.copies] == ["offsite", "second"]
    assert evaluate(judged)["compliant"]
    with pytest.raises(ConfigError, match="copy second is already declared"):
        with_copies(config, proposed, [])
    assert copy_names("not [ini") == []
