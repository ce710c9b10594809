"""The shared connection options through ansible-playbook, against a real throwaway cluster:
module_defaults of the action group restorekeeper.postgresql.postgresql with community.postgresql's
aliases (port, unix_socket), connect_params reaching libpq by both routes (psycopg2 keywords in
wal_archiving, the client programs' service file in backup_info), and TLS files refused clearly.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from harness.ansible import run_module

pytestmark = [pytest.mark.slow, pytest.mark.integration]

GROUP = "group/restorekeeper.postgresql.postgresql"
wal_archiving = partial(run_module, module="restorekeeper.postgresql.wal_archiving")


def backup_info(ansible_env, args, **kwargs):
    # As the repository's owner, as in the field (the configuration file is 0600).
    return run_module(ansible_env, args, module="restorekeeper.postgresql.backup_info", become_user="postgres",
                      **kwargs)


@pytest.fixture
def served(cluster_factory, repo_config, tool):
    """(cluster, args): a running cluster and wal_archiving's args naming the tool and a repository
    configuration (whose [postgres] section wal_archiving does not read: only its options reach a server)."""
    cluster = cluster_factory(version=18)
    setup = repo_config(cluster)
    return cluster, {"config_path": str(setup.config_path), "tool_path": str(tool.bin)}


def group_defaults(cluster, **extra: Any) -> dict[str, Any]:
    defaults = {"port": cluster.port, "unix_socket": str(cluster.socket_dir), "login_user": "postgres"}
    defaults.update(extra)
    return {GROUP: defaults}


def test_group_module_defaults_with_aliases_reach_a_module(served, ansible_env):
    cluster, args = served
    # Without the defaults, the module looks at libpq's default socket and port 5432: nothing there.
    alone = wal_archiving(ansible_env, args, check=True)
    assert alone.failed and "not reachable" in alone["msg"], alone.result
    assert str(cluster.port) not in alone["msg"]

    run = wal_archiving(ansible_env, args, check=True, module_defaults=group_defaults(cluster))
    assert not run.failed, run.result
    # Read from the live server: the cluster was reached through port/unix_socket of the group.
    assert run["settings"]["archive_mode"]["pending_restart"] is False
    assert run["changed"] and "ALTER SYSTEM SET archive_mode = 'on'" in run["queries"]

    # A task's own option wins over the group's when both use the same name.
    wrong = wal_archiving(ansible_env, dict(args, port=1), check=True, module_defaults=group_defaults(cluster))
    assert wrong.failed and "port 1" in wrong["msg"], wrong.result
    # Under the other name both reach the module: Ansible takes the alias's value and says so.
    mixed = wal_archiving(ansible_env, dict(args, login_port=1), check=True, module_defaults=group_defaults(cluster))
    assert not mixed.failed, mixed.result
    assert any("login_port" in warning and "port" in warning for warning in mixed.get("warnings", [])), mixed.result


def test_connect_params_reach_libpq_by_both_routes(served, ansible_env):
    cluster, args = served
    info_args = {"config_path": args["config_path"]}
    for read_write_ok, attrs in ((True, "read-write"), (False, "read-only")):
        defaults = group_defaults(cluster, connect_params={"target_session_attrs": attrs,
                                                           "application_name": "rk-test"})
        archiving = wal_archiving(ansible_env, args, check=True, module_defaults=defaults)
        info = backup_info(ansible_env, info_args, module_defaults=defaults)
        if read_write_ok:
            assert not archiving.failed, archiving.result
            assert not info.failed, info.result
            assert info["archive"] is not None
        else:
            # libpq itself refuses the primary for a read-only session: the keyword arrived.
            assert archiving.failed and "not read-only" in archiving["msg"], archiving.result
            assert info.failed and "not read-only" in info["msg"], info.result


def test_connect_params_conflicting_with_an_option_and_missing_tls_files_are_refused(served, ansible_env,
                                                                                     tmp_path):
    cluster, args = served
    clash = wal_archiving(ansible_env, args, check=True,
                          module_defaults=group_defaults(cluster, connect_params={"port": 1, "password": "s3cret"}))
    assert clash.failed and "which a connection option covers" in clash["msg"], clash.result
    assert "s3cret" not in clash.output

    missing = str(tmp_path / "client.crt")
    for run in (wal_archiving, backup_info):
        result = run(ansible_env, dict(args) if run is wal_archiving else {"config_path": args["config_path"]},
                     check=True, module_defaults=group_defaults(cluster, ssl_cert=missing, ssl_mode="require"))
        assert result.failed and "ssl_cert %s is not a file on the managed host" % missing in result["msg"], \
            result.result
