"""The one drill-request builder (restore/drillrequest.py): module restore_drill and `restorekeeper drill`
refuse the same bad input, each naming its own option."""

from __future__ import annotations

import json

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError, Refusal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends import cli
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.recovery import TargetError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.drill import DrillQuery
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.drillrequest import (
    build_drill_options,
    checksum_tables,
    drill_queries,
    module_drill_options,
    read_queries_file,
    target_seconds,
)

QUERY = {"name": "rows", "database": "shop", "sql": "SELECT count(*) FROM t", "expected": 3}


def module_params(**changes):
    params = {"tool_path": "/opt/rk/bin/restorekeeper", "mode": "restore-point", "target_time": None,
              "target_xid": None, "target_lsn": None, "target_name": None, "backup_label": None,
              "scratch_dir": None, "keep": False, "rto_target": None, "rpo_target": None, "checksum_tables": [],
              "queries": [], "amcheck": True, "row_counts": True, "wait_timeout": 3600, "archive_wait_timeout": 120,
              "verify": "auto", "sample_percent": 1.0, "count_tables": [], "exact_verify_max_size": "10GiB",
              "exact_count_max_size": "16MiB"}
    params.update(changes)
    return params


def test_module_parameters_become_the_drill_options():
    options = module_drill_options(module_params(
        backup_label="20260614T0300", scratch_dir="/scratch", keep=True, rto_target="15min", rpo_target=60,
        checksum_tables=["shop:public.orders"], queries=[QUERY], amcheck=False, wait_timeout=10,
        archive_wait_timeout=5))
    assert options.tool_path == "/opt/rk/bin/restorekeeper" and options.mode == "restore-point"
    assert options.target is None and options.backup_label == "20260614T0300" and options.scratch_root == "/scratch"
    assert options.keep and options.rto_target == 900.0 and options.rpo_target == 60.0
    assert options.checksum_tables == ("shop:public.orders",)
    assert options.queries == (DrillQuery("rows", "shop", "SELECT count(*) FROM t", ("3",)),)
    assert not options.amcheck and options.row_counts
    assert (options.wait_timeout, options.archive_wait_seconds) == (10, 5)


def test_defaults_need_only_the_launcher():
    options = build_drill_options(tool_path="/t")
    assert (options.mode, options.target, options.queries, options.rto_target) == ("restore-point", None, (), None)
    assert (options.verify, options.sample_percent, options.count_tables) == ("auto", 1.0, ())
    assert (options.exact_verify_max_bytes, options.exact_count_max_bytes) == (10 * 1024 ** 3, 16 * 1024 ** 2)


def test_module_verification_options_become_the_drill_options():
    options = module_drill_options(module_params(verify="sample", sample_percent=0.5, count_tables=["shop:public.orders"],
                                                 exact_verify_max_size=1048576, exact_count_max_size="2MiB"))
    assert (options.verify, options.sample_percent, options.count_tables) == ("sample", 0.5, ("shop:public.orders",))
    assert (options.exact_verify_max_bytes, options.exact_count_max_bytes) == (1048576, 2 * 1024 ** 2)


@pytest.mark.parametrize("changes, message", [
    ({"verify": "some"}, "^verify: 'some' is not one of auto, exact, sample, catalog$"),
    ({"sample_percent": 0}, r"^sample_percent: 0 is outside \(0, 100\]"),
    ({"sample_percent": 101}, r"^sample_percent: 101 is outside"),
    ({"sample_percent": "lots"}, "^sample_percent: 'lots' is not a number"),
    ({"count_tables": ["orders"]}, "^count_tables: 'orders' is not DATABASE:SCHEMA.TABLE"),
    ({"verify": "exact", "count_tables": ["shop:public.orders"]}, "^count_tables: verify exact samples no table"),
    ({"verify": "catalog", "count_tables": ["shop:public.orders"]}, "^count_tables: verify catalog samples no table"),
    ({"exact_verify_max_size": "big"}, "^exact_verify_max_size: 'big' is not a size"),
    ({"exact_count_max_size": -1}, "^exact_count_max_size: '-1' is not a size"),
])
def test_bad_verification_options_are_refused_by_name(changes, message):
    with pytest.raises(Refusal, match=message):
        module_drill_options(module_params(**changes))


def test_mode_target_takes_exactly_one_target():
    options = module_drill_options(module_params(mode="target", target_name="before-cleanup"))
    assert (options.target.kind, options.target.value) == ("name", "before-cleanup")
    with pytest.raises(TargetError, match="exactly one recovery target"):
        module_drill_options(module_params(mode="target"))


def test_a_target_outside_mode_target_is_refused():
    with pytest.raises(Refusal, match="^target_time, target_xid, target_lsn and target_name need mode: target$"):
        module_drill_options(module_params(target_xid="42"))


def test_an_unknown_mode_is_refused():
    with pytest.raises(Refusal, match="mode: 'soon' is not one of restore-point, latest, target"):
        build_drill_options(tool_path="/t", mode="soon")


def test_unreadable_objectives_are_refused_by_name():
    assert target_seconds("rto_target", "") is None and target_seconds("rto_target", None) is None
    # Sub-second targets, as module and command take them: ms is a listed unit.
    assert target_seconds("rto_target", "500ms") == 0.5 and target_seconds("rpo_target", 0.25) == 0.25
    options = module_drill_options(module_params(rto_target="500ms", rpo_target="1500ms"))
    assert (options.rto_target, options.rpo_target) == (0.5, 1.5)
    with pytest.raises(Refusal, match="^rto_target: "):
        module_drill_options(module_params(rto_target="soon"))
    with pytest.raises(Refusal, match="^--rpo-target: "):
        build_drill_options(tool_path="/t", rpo_target="soon", labels={"rpo_target": "--rpo-target"})


@pytest.mark.parametrize("bad", ["public.orders", ":public.orders", "shop:orders", "shop"])
def test_checksum_tables_must_name_database_schema_and_table(bad):
    with pytest.raises(Refusal, match="checksum_tables: %r is not DATABASE:SCHEMA.TABLE" % bad):
        checksum_tables(["shop:public.ok", bad])


def test_query_names_must_be_unique():
    with pytest.raises(Refusal, match="^queries: names must be unique in the report; repeated: rows$"):
        drill_queries([QUERY, dict(QUERY, sql="SELECT 1"), dict(QUERY, name="other")])


def test_incomplete_or_nested_queries_are_refused():
    with pytest.raises(Refusal, match="^queries: a verification query needs name, sql and expected"):
        drill_queries([{"name": "rows", "sql": "SELECT 1"}])
    with pytest.raises(Refusal, match="nested value"):
        drill_queries([dict(QUERY, expected=[{"a": 1}])])
    with pytest.raises(Refusal, match="a list of spot checks is needed, not dict"):
        drill_queries({"name": "rows"}, "--queries q.json")


def test_a_query_file_must_be_readable_json(tmp_path):
    good = tmp_path / "q.json"
    good.write_text(json.dumps([QUERY]))
    assert read_queries_file(str(good)) == [QUERY]
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ConfigError, match="verification queries in %s are unreadable" % bad):
        read_queries_file(str(bad))
    with pytest.raises(ConfigError, match="unreadable"):
        read_queries_file(str(tmp_path / "absent.json"))


# ------------------------------------------------ the command validates the same


def drill_command(capsys, conf, *argv):
    code = cli.main(["drill", "--config", conf, *argv])
    return code, capsys.readouterr().err


def test_the_command_refuses_repeated_query_names(tmp_path, capsys, archive):
    queries = tmp_path / "q.json"
    queries.write_text(json.dumps([QUERY, QUERY]))
    code, err = drill_command(capsys, archive.config.path, "--queries", str(queries))
    assert code == 1
    assert err.strip() == ("restorekeeper drill: ERROR: --queries %s: names must be unique in the report; "
                           "repeated: rows" % queries)


def test_the_command_refuses_bad_verification_options_by_its_names(capsys, archive):
    code, err = drill_command(capsys, archive.config.path, "--sample-percent", "0")
    assert code == 1 and "ERROR: --sample-percent: 0 is outside (0, 100]" in err
    code, err = drill_command(capsys, archive.config.path, "--verify", "catalog", "--count-table", "shop:public.t")
    assert code == 1 and "ERROR: --count-table: verify catalog samples no table" in err
    code, err = drill_command(capsys, archive.config.path, "--exact-count-max-size", "huge")
    assert code == 1 and "ERROR: --exact-count-max-size: 'huge' is not a size" in err


def test_the_command_refuses_a_bad_checksum_table_and_objective(capsys, archive):
    code, err = drill_command(capsys, archive.config.path, "--checksum-table", "orders")
    assert code == 1 and "--checksum-table: 'orders' is not DATABASE:SCHEMA.TABLE" in err
    code, err = drill_command(capsys, archive.config.path, "--rto-target", "soon")
    assert code == 1 and "ERROR: --rto-target: " in err
